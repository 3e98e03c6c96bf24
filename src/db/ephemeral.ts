/** Ephemeral messages: realtime.send_ephemeral and the key they are signed with (realtime.notify_key). */
import type pg from 'pg';

import { identityParams, type Identity } from './identity.js';

export function ephemeralQueries(pool: pg.Pool) {
  return {
    /** Checks the INSERT policies as the identity and NOTIFYs realtime_ephemeral; nothing is stored. */
    async sendEphemeral(identity: Identity, channel: string, event: string, notification: string): Promise<void> {
      await pool.query({
        name: 'realtimed_send_ephemeral',
        text: 'select realtime.send_ephemeral($1, $2, $3, $4, $5)',
        values: [...identityParams(identity), channel, event, notification],
      });
    },

    /** realtime.notify_key: what ephemeral notifications are signed with. */
    async notifyKey(): Promise<string> {
      const { rows } = await pool.query<{ key: string }>('select key from realtime.notify_key');
      const key = rows[0]?.key;
      if (!key) throw new Error('realtime.notify_key is empty');
      return key;
    },
  };
}
