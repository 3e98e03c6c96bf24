/**
 * The two statements clients drive, grouped: client publishes share a round
 * trip and a commit (realtime.send_batch), concurrent subscribe checks share a
 * round trip (realtime.authorize_subscriptions). Each item is answered as it
 * would be alone: its own role, claims and policies; a denied or failing item
 * fails alone; a publish is acked only after its batch committed.
 *
 * Batches form while earlier ones run (Batcher): an item that finds a slot
 * free goes at once, alone, through the single-item statement, so an idle
 * daemon adds no wait and no subtransaction. When a whole batch statement
 * fails with an error from the server, it rolled back, and each item is
 * tried again alone; when the connection is lost the outcome is unknown and
 * every item gets the error (as a lone publish would).
 */
import type { Db } from '../db/index.js';
import { pgFields } from '../db/errors.js';
import type { Identity } from '../db/identity.js';
import type { Sent } from '../db/messages.js';
import type { Authorization } from '../db/subscriptions.js';
import { Batcher } from './batcher.js';
import type { Metrics } from './metrics.js';

/** Publishes in one batch: half of the 64 subtransaction ids a backend caches (docs/sql.md). */
export const PUBLISH_BATCH_ITEMS = 32;
const PUBLISH_BATCH_BYTES = 1024 * 1024;
const CHECK_BATCH_ITEMS = 250;

type PublishItem = { identity: Identity; channel: string; event: string; payload: unknown; dedupeKey?: string };
type CheckItem = { identity: Identity; channel: string; instance: string };

/** A statement the server answered with an error was rolled back: its items can be tried again alone. */
function rolledBack(err: unknown): boolean {
  return /^[0-9A-Z]{5}$/.test(pgFields(err).code);
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

async function eachAlone<I, R>(items: I[], alone: (item: I) => Promise<R>): Promise<(R | Error)[]> {
  return Promise.all(items.map((item) => alone(item).catch(asError)));
}

/**
 * `db` with send and authorizeSubscription grouped. `concurrency` batches of
 * each may run at once (each holds one pooled connection while it runs).
 */
export function groupedDb(db: Db, deps: { metrics: Metrics }, options: { concurrency: number }): Db {
  const sendAlone = (item: PublishItem): Promise<Sent> => db.send(item.identity, item);
  const publishes = new Batcher<PublishItem, Sent>(
    async (items) => {
      if (items.length === 1) return eachAlone(items, sendAlone);
      try {
        return await db.sendBatch(items);
      } catch (err) {
        if (rolledBack(err)) return eachAlone(items, sendAlone);
        throw err;
      }
    },
    {
      concurrency: options.concurrency,
      maxItems: PUBLISH_BATCH_ITEMS,
      maxBytes: PUBLISH_BATCH_BYTES,
      bytes: (item) => item.channel.length + item.event.length + JSON.stringify(item.payload ?? null).length,
      onBatch: (size) => deps.metrics.publishBatchItems.observe(size),
    },
  );

  const checkAlone = (item: CheckItem): Promise<Authorization> => db.authorizeSubscription(item.identity, item.channel, item.instance);
  const checks = new Batcher<CheckItem, Authorization>(
    async (items) => {
      const instance = items[0]?.instance ?? '';
      if (items.length === 1 || items.some((i) => i.instance !== instance)) return eachAlone(items, checkAlone);
      try {
        return await db.authorizeSubscriptions(items, instance);
      } catch (err) {
        if (rolledBack(err)) return eachAlone(items, checkAlone);
        throw err;
      }
    },
    {
      concurrency: options.concurrency,
      maxItems: CHECK_BATCH_ITEMS,
      maxBytes: Number.MAX_SAFE_INTEGER,
      bytes: () => 1,
      onBatch: (size) => deps.metrics.subscribeBatchItems.observe(size),
    },
  );

  return {
    ...db,
    send: (identity, message) => publishes.submit({ identity, ...message }),
    authorizeSubscription: (identity, channel, instance) => checks.submit({ identity, channel, instance }),
  };
}
