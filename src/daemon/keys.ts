/**
 * The keys instances share, derived from realtime.notify_key (service_role
 * only): one seals ephemeral notifications, one signs replay cursors. Read at
 * start, and again after LISTEN comes back while it was unreadable.
 */
import { hkdfSync } from 'node:crypto';

import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';

export interface SharedKeys {
  /** AES-256-GCM key of ephemeral notifications. */
  sealing: Buffer;
  /** HMAC-SHA256 key of replay cursors. */
  cursor: Buffer;
}

export function deriveKeys(notifyKey: string): SharedKeys {
  const derive = (info: string): Buffer => Buffer.from(hkdfSync('sha256', notifyKey, '', info, 32));
  return { sealing: derive('realtimed ephemeral v2'), cursor: derive('realtimed cursor v1') };
}

export interface Keys {
  load(): Promise<void>;
  /** Null until realtime.notify_key has been read. */
  readonly current: SharedKeys | null;
}

export function createKeys(deps: { db: Pick<Db, 'notifyKey'>; logger: Logger }): Keys {
  let current: SharedKeys | null = null;
  return {
    async load() {
      try {
        current = deriveKeys(await deps.db.notifyKey());
      } catch (err) {
        deps.logger.warn({ err: errorText(err) }, 'could not read realtime.notify_key: ephemeral messages and replay cursors wait for the database');
      }
    },
    get current() {
      return current;
    },
  };
}
