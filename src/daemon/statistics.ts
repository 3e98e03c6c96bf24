/**
 * Delivery statistics: the sockets each message was written to, written in
 * batches (one statement a second) as one row of realtime.message_audience,
 * never an UPDATE of the message.
 */
import type { Logger } from 'pino';

import type { Db, MessageKey } from '../db/index.js';
import { errorText } from './boundary.js';

export interface Stats {
  add(message: MessageKey, sockets: number): void;
  start(): void;
  /** Writes what is pending; called on stop and by tests. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

/** Counts kept while the database is away; past this the oldest are dropped. */
const MAX_PENDING = 100_000;

interface Pending {
  channel: string;
  seq: string;
  sockets: number;
}

export function createStats(deps: { db: Pick<Db, 'recordWsAudience'>; logger: Logger }, intervalMs: number): Stats {
  const { db, logger } = deps;
  /** By seq, which is unique across channels. */
  let pending = new Map<string, Pending>();
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | null = null;

  const add = (into: Map<string, Pending>, channel: string, seq: string, sockets: number): void => {
    const entry = into.get(seq);
    if (entry) entry.sockets += sockets;
    else into.set(seq, { channel, seq, sockets });
  };

  const write = async (): Promise<void> => {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    try {
      await db.recordWsAudience([...batch.values()]);
    } catch (err) {
      logger.warn({ err: errorText(err), messages: batch.size }, 'could not write delivery statistics; will retry');
      for (const entry of batch.values()) add(pending, entry.channel, entry.seq, entry.sockets);
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
    add(message, sockets) {
      if (sockets > 0) add(pending, message.channel, message.seq, sockets);
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
