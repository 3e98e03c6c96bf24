/**
 * Delivery statistics: the sockets each message was written to, added to
 * realtime.messages.ws_audience_count in batches (one statement a second),
 * never one UPDATE per message.
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';

export interface Stats {
  add(messageId: string, sockets: number): void;
  start(): void;
  /** Writes what is pending; called on stop and by tests. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

/** Counts kept while the database is away; past this the oldest are dropped. */
const MAX_PENDING = 100_000;

export function createStats(deps: { db: Pick<Db, 'addWsAudience'>; logger: Logger }, intervalMs: number): Stats {
  const { db, logger } = deps;
  let pending = new Map<string, number>();
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | null = null;

  const write = async (): Promise<void> => {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    try {
      await db.addWsAudience(batch);
    } catch (err) {
      logger.warn({ err: errorText(err), messages: batch.size }, 'could not write delivery statistics; will retry');
      for (const [id, n] of batch) pending.set(id, (pending.get(id) ?? 0) + n);
      while (pending.size > MAX_PENDING) {
        const oldest = pending.keys().next().value;
        if (oldest === undefined) break;
        pending.delete(oldest);
      }
    }
  };
  const flush = async (): Promise<void> => {
    while (flushing) await flushing;
    flushing = write().finally(() => {
      flushing = null;
    });
    await flushing;
  };

  return {
    add(messageId, sockets) {
      pending.set(messageId, (pending.get(messageId) ?? 0) + sockets);
    },
    start() {
      timer = setInterval(() => void flush(), intervalMs);
      timer.unref();
    },
    flush,
    async stop() {
      clearInterval(timer);
      await flush();
    },
  };
}
