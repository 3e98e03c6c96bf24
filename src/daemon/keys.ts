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
  /** Reads realtime.notify_key: resolves after a read that started after this call (reads at most one a second). */
  load(): Promise<void>;
  /** Null until realtime.notify_key has been read. What this instance seals and signs with. */
  readonly current: SharedKeys | null;
  /** The keys to open or verify with: current, then the previous one while its grace lasts. */
  accepted(): SharedKeys[];
  /** The read asked for or in progress, if any: the key after it is at least as new as any hint so far. */
  readonly loading: Promise<void> | null;
}

/** Reads of realtime.notify_key start at most this often (floods of hints included). */
const MIN_READ_INTERVAL_MS = 1000;

export function createKeys(deps: { db: Pick<Db, 'notifyKey'>; logger: Logger; now: () => number }): Keys {
  let current: SharedKeys | null = null;
  let currentText: string | null = null;
  let previous: { keys: SharedKeys; until: number } | null = null;
  /** A read asked for and not started yet: whoever asked waits for it. */
  let waiting: { promise: Promise<void>; resolve: () => void } | null = null;
  /** The read running now. */
  let inFlight: Promise<void> | null = null;
  let running: Promise<void> | null = null;
  let lastStart = Number.NEGATIVE_INFINITY;

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

  // One read at a time, at most one a second: a NOTIFY realtime_keys is a
  // hint any role can send, and a flood of them costs one read a second and
  // one read waiting, never a read per hint. A caller waits only for the
  // next read that starts after its call, not for the flood to end.
  const loop = async (): Promise<void> => {
    while (waiting) {
      const asked = waiting;
      const wait = lastStart + MIN_READ_INTERVAL_MS - deps.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
      waiting = null;
      lastStart = deps.now();
      inFlight = read();
      await inFlight;
      inFlight = null;
      asked.resolve();
    }
    running = null;
  };

  const load = (): Promise<void> => {
    if (!waiting) {
      let resolve = (): void => {};
      const promise = new Promise<void>((r) => (resolve = r));
      waiting = { promise, resolve };
    }
    const asked = waiting.promise;
    running ??= loop();
    return asked;
  };

  return {
    load,
    get current() {
      return current;
    },
    get loading() {
      return waiting?.promise ?? inFlight;
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
