/**
 * From notification to sockets. A notification is a hint: the message is
 * read from realtime.messages (as its prebuilt frame) and relayed only if the
 * row agrees with the hint. Batches are fetched one at a time, so frames go
 * out in the order the notifications arrived (commit order).
 */
import type { Logger } from 'pino';

import type { Db } from './db.js';
import type { Hub } from './hub.js';
import type { Envelope } from './listener.js';
import type { Metrics } from './metrics.js';
import type { Stats } from './stats.js';

const BATCH = 500;

/** The ids of recently relayed messages, so a repeated notification is not relayed twice. */
class RecentIds {
  private readonly set = new Set<string>();
  private readonly ring: (string | undefined)[];
  private next = 0;

  constructor(capacity: number) {
    this.ring = new Array<string | undefined>(capacity);
  }

  has(id: string): boolean {
    return this.set.has(id);
  }

  add(id: string): void {
    const old = this.ring[this.next];
    if (old !== undefined) this.set.delete(old);
    this.ring[this.next] = id;
    this.set.add(id);
    this.next = (this.next + 1) % this.ring.length;
  }
}

export interface Relay {
  enqueue(envelope: Envelope): void;
  /** Resolves when everything enqueued so far was relayed (for shutdown and tests). */
  idle(): Promise<void>;
}

export function createRelay(deps: { db: Db; hub: Hub; metrics: Metrics; logger: Logger; stats: Stats }): Relay {
  const { db, hub, metrics, logger, stats } = deps;
  const pending: Envelope[] = [];
  const recent = new RecentIds(16_384);
  let draining: Promise<void> | null = null;

  const deliver = async (batch: Envelope[]): Promise<void> => {
    const wanted = new Map<string, Envelope>();
    for (const envelope of batch) {
      if (recent.has(envelope.id) || wanted.has(envelope.id)) metrics.notificationsDropped.inc({ reason: 'repeated' });
      else wanted.set(envelope.id, envelope);
    }
    if (wanted.size === 0) return;
    let frames;
    try {
      frames = await db.eventFrames([...wanted.keys()]);
    } catch (err) {
      logger.error({ err: (err as Error).message, messages: wanted.size }, 'could not read messages to relay');
      return;
    }
    for (const row of frames) {
      const envelope = wanted.get(row.id);
      wanted.delete(row.id);
      if (!envelope || envelope.channel !== row.channel || String(envelope.seq) !== row.seq) {
        metrics.notificationsDropped.inc({ reason: 'mismatched' });
        continue;
      }
      recent.add(row.id);
      const subscribers = hub.subscribers(row.channel);
      if (!subscribers || subscribers.size === 0) continue;
      const frame = Buffer.from(row.frame);
      let written = 0;
      for (const subscriber of subscribers) if (subscriber.sendEvent(frame)) written++;
      stats.add(row.id, written);
      metrics.messagesRelayed.inc();
      metrics.framesSent.inc(written);
      metrics.fanoutSeconds.observe(Number(process.hrtime.bigint() - envelope.receivedAt) / 1e9);
    }
    if (wanted.size > 0) metrics.notificationsDropped.inc({ reason: 'unknown' }, wanted.size);
  };

  const drain = async (): Promise<void> => {
    while (pending.length > 0) await deliver(pending.splice(0, BATCH));
    draining = null;
  };

  return {
    enqueue(envelope) {
      // Nobody here listens to that channel: nothing to read.
      if (!hub.has(envelope.channel)) return;
      pending.push(envelope);
      draining ??= drain();
    },
    async idle() {
      while (draining) await draining;
    },
  };
}
