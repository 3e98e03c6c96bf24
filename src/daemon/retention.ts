/**
 * Retention and partitions. Every instance keeps realtime.messages'
 * partitions (realtime.maintain_partitions: empty ones ahead, the open one
 * rolled after partition_span, old ones dropped whole) at start and every
 * ten minutes; with --prune-interval it also runs realtime.prune(), in
 * batches until it has no full batch left. Most installations schedule
 * realtime.prune() with pg_cron instead (README).
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';

const BATCH = 100_000;
const PARTITIONS_EVERY_MS = 10 * 60_000;

export interface Retention {
  /** Partitions now (awaited: a daemon starts with somewhere to write), then on timers. */
  start(): Promise<void>;
  stop(): void;
}

export function createRetention(
  deps: { db: Pick<Db, 'prune' | 'maintainPartitions'>; logger: Logger },
  intervalMs: number,
): Retention {
  const { db, logger } = deps;
  const timers: NodeJS.Timeout[] = [];

  const prune = async (): Promise<void> => {
    let deleted = 0;
    for (;;) {
      const n = await db.prune(BATCH);
      deleted += n;
      if (n < BATCH) break;
    }
    if (deleted > 0) logger.info({ deleted }, 'pruned old messages');
  };
  const partitions = async (): Promise<void> => {
    const done = await db.maintainPartitions();
    if (done) logger.info({ done }, 'message partitions');
  };
  const every = (ms: number, job: () => Promise<void>, what: string): void => {
    const timer = setInterval(() => {
      job().catch((err: unknown) => logger.error({ err: errorText(err) }, `${what} failed`));
    }, ms);
    timer.unref();
    timers.push(timer);
  };

  return {
    async start() {
      await partitions().catch((err: unknown) => logger.error({ err: errorText(err) }, 'message partitions failed'));
      every(PARTITIONS_EVERY_MS, partitions, 'message partitions');
      if (intervalMs > 0) every(intervalMs, prune, 'prune');
    },
    stop() {
      for (const timer of timers) clearInterval(timer);
    },
  };
}
