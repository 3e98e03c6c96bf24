/**
 * The daemon's statements, one module per area of the SQL package, each
 * function named like the SQL it calls. Each is one statement, one round
 * trip, and the SQL package decides (docs/sql.md); a statement that
 * impersonates a client ends its role with its own implicit transaction, so
 * the pooled connection comes back clean. The CLI's statements are in
 * install.ts, doctor.ts, dev.ts and stats.ts.
 */
import type pg from 'pg';

import { changeQueries } from './changes.js';
import { channelQueries } from './channels.js';
import { ephemeralQueries } from './ephemeral.js';
import { instanceQueries } from './instances.js';
import { messageQueries } from './messages.js';
import { presenceQueries } from './presence.js';
import { statsQueries } from './stats.js';
import { subscriptionQueries } from './subscriptions.js';
import { webhookQueries } from './webhooks.js';

export function createDb(pool: pg.Pool) {
  return {
    ...subscriptionQueries(pool),
    ...messageQueries(pool),
    ...presenceQueries(pool),
    ...ephemeralQueries(pool),
    ...webhookQueries(pool),
    ...channelQueries(pool),
    ...changeQueries(pool),
    ...statsQueries(pool),
    ...instanceQueries(pool),
    async ping(): Promise<void> {
      await pool.query('select 1');
    },
  };
}

export type Db = ReturnType<typeof createDb>;
export type { MessageKey } from './messages.js';
