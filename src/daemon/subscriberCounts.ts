/**
 * max_subscribers across instances: this instance reports its subscriber
 * counts of the channels that have one (realtime.report_subscribers), every
 * --stats-interval when they changed and every 10 s regardless, so a report
 * lost to an outage is put right. Each subscribe adds the others' reports.
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';
import type { Hub } from './hub.js';
import type { Subscription } from './socket/subscription.js';

const RESEND_MS = 10_000;

export interface SubscriberCounts {
  start(): void;
  stop(): void;
}

export function createSubscriberCounts(
  deps: { db: Pick<Db, 'reportSubscribers'>; hub: Hub<Subscription>; instance: string; logger: Logger },
  intervalMs: number,
): SubscriberCounts {
  const { db, hub, logger } = deps;
  let timer: NodeJS.Timeout | undefined;
  let last = '';
  let lastAt = 0;

  const report = async (): Promise<void> => {
    const counts = new Map<string, number>();
    for (const name of hub.channelNames()) {
      const subscribers = hub.subscribers(name);
      if (!subscribers) continue;
      for (const s of subscribers) {
        if ((s.limits?.maxSubscribers ?? null) !== null) {
          counts.set(name, subscribers.size);
          break;
        }
      }
    }
    const text = JSON.stringify([...counts]);
    if (text === last && Date.now() - lastAt < RESEND_MS) return;
    await db.reportSubscribers(deps.instance, counts);
    last = text;
    lastAt = Date.now();
  };

  return {
    start() {
      timer = setInterval(() => {
        report().catch((err: unknown) => logger.warn({ err: errorText(err) }, 'could not report subscriber counts'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
