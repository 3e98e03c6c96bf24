/**
 * Retention, when this instance is asked to run it (--prune-interval):
 * realtime.prune() in batches until it has no full batch left. Most
 * installations schedule it with pg_cron instead (README).
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';

const BATCH = 100_000;

export interface Retention {
  start(): void;
  stop(): void;
}

export function createRetention(deps: { db: Pick<Db, 'prune'>; logger: Logger }, intervalMs: number): Retention {
  const { db, logger } = deps;
  let timer: NodeJS.Timeout | undefined;

  const prune = async (): Promise<void> => {
    let deleted = 0;
    for (;;) {
      const n = await db.prune(BATCH);
      deleted += n;
      if (n < BATCH) break;
    }
    if (deleted > 0) logger.info({ deleted }, 'pruned old messages');
  };

  return {
    start() {
      if (intervalMs <= 0) return;
      timer = setInterval(() => {
        prune().catch((err: unknown) => logger.error({ err: errorText(err) }, 'prune failed'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
