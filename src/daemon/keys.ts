/**
 * The keys instances share, derived from realtime.notify_key (service_role
 * only): one seals ephemeral notifications, one signs replay cursors. Read at
 * start, after every LISTEN (re)connection, and on a NOTIFY realtime_keys
 * (realtime.rotate_notify_key; a hint, as any role may send one).
 *
 * After a rotation the previous key is still accepted (never used to seal or
 * sign) for the grace period the database gives, measured from this read on
 * this instance's clock, so what other instances sealed before they re-read
 * is still opened.
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
  /** Reads realtime.notify_key; calls while a read is running share it, and one more read follows. */
  load(): Promise<void>;
  /** Null until realtime.notify_key has been read. What this instance seals and signs with. */
  readonly current: SharedKeys | null;
  /** The keys to open or verify with: current, then the previous one while its grace lasts. */
  accepted(): SharedKeys[];
  /** The read in progress, if any. */
  readonly loading: Promise<void> | null;
}

export function createKeys(deps: { db: Pick<Db, 'notifyKey'>; logger: Logger; now: () => number }): Keys {
  let current: SharedKeys | null = null;
  let currentText: string | null = null;
  let previous: { keys: SharedKeys; until: number } | null = null;
  let loading: Promise<void> | null = null;
  let again = false;

  const read = async (): Promise<void> => {
    try {
      const k = await deps.db.notifyKey();
      if (k.key !== currentText) {
        current = deriveKeys(k.key);
        currentText = k.key;
        deps.logger.info({ previousAcceptedMs: k.previous === null ? 0 : k.previousMs }, 'read realtime.notify_key');
      }
      previous = k.previous !== null && k.previousMs > 0
        ? { keys: deriveKeys(k.previous), until: deps.now() + k.previousMs }
        : null;
    } catch (err) {
      deps.logger.warn({ err: errorText(err) }, 'could not read realtime.notify_key: ephemeral messages and replay cursors wait for the database');
    }
  };

  const load = (): Promise<void> => {
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      do {
        again = false;
        await read();
      } while (again);
    })().finally(() => {
      loading = null;
    });
    return loading;
  };

  return {
    load,
    get current() {
      return current;
    },
    get loading() {
      return loading;
    },
    accepted() {
      if (current === null) return [];
      if (previous === null) return [current];
      if (deps.now() >= previous.until) {
        previous = null;
        return [current];
      }
      return [current, previous.keys];
    },
  };
}
