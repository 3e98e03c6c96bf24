/**
 * The relay's watermark and seen-set (daemon/relay.ts) against a real
 * database: a committed message reaches each subscriber once, whether its
 * notification arrives, arrives twice, is forged, or never comes (the
 * recovery pass finds it between two snapshots).
 */
import pg from 'pg';
import { pino } from 'pino';
import t from 'tap';

import { createDb } from '../../src/db/index.js';
import type { Identity } from '../../src/db/identity.js';
import { Hub, type Subscriber } from '../../src/daemon/hub.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { createRelay, type Relay } from '../../src/daemon/relay.js';
import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { settle, until } from '../helpers/wait.js';

class Collector implements Subscriber {
  readonly ids: string[] = [];
  readonly filter = undefined;
  readonly identity: Identity | null = null;
  /** Reads of realtime.relay_frames in flight at each frame written (set by setup). */
  readsInFlight: () => number = () => 0;
  readonly overlapped: number[] = [];
  constructor(readonly channel: string) {}
  sendEvent(_frame: Buffer, id: string): boolean {
    this.ids.push(id);
    this.overlapped.push(this.readsInFlight());
    return true;
  }
}

async function setup(t: Tap, recoveryIntervalMs = 60_000): Promise<{ db: TestDatabase; relay: Relay; sub: Collector; dropped: () => Promise<string> }> {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('orders')`);
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on('error', () => {});
  const hub = new Hub();
  const sub = new Collector('orders');
  hub.add(sub);
  const metrics = createMetrics({ connections: () => 0, subscriptions: () => hub.size });
  // The real queries, with the reads of frames counted while they run.
  const real = createDb(pool);
  let reading = 0;
  sub.readsInFlight = () => reading;
  const counted = {
    ...real,
    async relayFrames(...args: Parameters<typeof real.relayFrames>) {
      reading++;
      try {
        return await real.relayFrames(...args);
      } finally {
        reading--;
      }
    },
  };
  const relay = createRelay(
    { db: counted, hub, metrics, logger: pino({ level: 'silent' }), stats: { add: () => {} } },
    { recoveryIntervalMs },
  );
  await relay.start();
  t.teardown(async () => {
    await relay.stop();
    await pool.end();
  });
  return { db, relay, sub, dropped: () => metrics.registry.getSingleMetricAsString('realtimed_notifications_dropped_total') };
}
type Tap = { teardown(fn: () => unknown): void };

async function publish(db: TestDatabase, n: number): Promise<{ id: string; seq: number }> {
  const id = (await db.pool.query<{ id: string }>(`select realtime.publish('orders', 'e', jsonb_build_object('n', $1::int)) as id`, [n])).rows[0]?.id;
  const row = (await db.pool.query<{ id: string; seq: string }>('select id, seq from realtime.messages where id = $1', [id])).rows[0];
  if (!row) throw new Error('not published');
  return { id: row.id, seq: Number(row.seq) };
}

const envelope = (m: { id: string; seq: number }, channel = 'orders') => ({ ...m, channel, receivedAt: process.hrtime.bigint() });

t.test('a notified message is relayed once; the same notification again changes nothing', async (t) => {
  const { db, relay, sub, dropped } = await setup(t);
  const m = await publish(db, 1);
  relay.enqueue(envelope(m));
  relay.enqueue(envelope(m));
  await relay.idle();
  relay.enqueue(envelope(m));
  await relay.idle();
  t.same(sub.ids, [m.id], 'relayed once');
  t.match(await dropped(), /reason="repeated"} 2/, 'the repeats were counted');
});

t.test('a notification the row does not agree with, or of no message, relays nothing', async (t) => {
  const { db, relay, sub, dropped } = await setup(t);
  const m = await publish(db, 1);
  // Found by channel and seq: the row there has another id.
  relay.enqueue(envelope({ ...m, id: '0b3f7a52-8c1e-4b8e-9f0a-2a6c1d4e5f60' }));
  // No message at that seq.
  relay.enqueue(envelope({ id: '1c4f8b63-9d2f-4c9f-8a1b-3b7d2e5f6a71', seq: m.seq + 1 }));
  await relay.idle();
  t.same(sub.ids, [], 'nothing relayed');
  const text = await dropped();
  t.match(text, /reason="mismatched"} 1/, 'another id at that channel and seq is mismatched');
  t.match(text, /reason="unknown"} 1/, 'a seq with no message is unknown');
});

t.test('a message committed without a notification is relayed by the recovery pass, once', async (t) => {
  const { db, sub } = await setup(t, 100);
  const m = await publish(db, 1);
  await until('the recovery pass relays it', () => sub.ids.length > 0);
  await settle(500); // several more passes: none may relay it again
  t.same(sub.ids, [m.id]);
});

t.test('once the watermark has passed a message, a late notification of it relays nothing', async (t) => {
  const { db, relay, sub } = await setup(t, 100);
  const m = await publish(db, 1);
  await until('recovered', () => sub.ids.length > 0);
  await settle(400); // the watermark moves past it and the seen-set forgets it
  relay.enqueue(envelope(m));
  await relay.idle();
  t.same(sub.ids, [m.id], 'still once');
});

t.test('LISTEN lost: what committed meanwhile is relayed at resync, then the held notifications, each once', async (t) => {
  const { db, relay, sub } = await setup(t);
  relay.pause();
  const during = [await publish(db, 1), await publish(db, 2)];
  relay.enqueue(envelope(during[1] as { id: string; seq: number })); // a late notification, held until the gap is out
  relay.resync();
  await until('both relayed', () => sub.ids.length >= 2);
  await relay.idle();
  const after = await publish(db, 3);
  relay.enqueue(envelope(after));
  await relay.idle();
  t.same(sub.ids, [...during.map((m) => m.id), after.id], 'in seq order, each once');
});

t.test('notified batches back to back: the next is read while one is sent, in notified order, repeats across batches once', async (t) => {
  const { db, relay, sub, dropped } = await setup(t);
  // 1,200 messages in one transaction; their notifications queue as batches of 500, 500 and 200.
  await db.pool.query(`select realtime.publish('orders', 'e', jsonb_build_object('n', g)) from generate_series(1, 1200) g`);
  const { rows } = await db.pool.query<{ id: string; seq: string }>(
    `select id, seq from realtime.messages where channel_name = 'orders' order by seq`,
  );
  const messages = rows.map((r) => ({ id: r.id, seq: Number(r.seq) }));
  t.equal(messages.length, 1200);
  for (const m of messages) relay.enqueue(envelope(m));
  // Repeats of messages in the first and second batches, queued behind them.
  for (const m of messages.slice(450, 650)) relay.enqueue(envelope(m));
  await relay.idle();
  t.same(sub.ids, messages.map((m) => m.id), 'each message once, in the order notified');
  t.match(await dropped(), /reason="repeated"} 200/, 'the 200 repeats were counted, not read again');
  const sentWhileReading = sub.overlapped.filter((n) => n > 0).length;
  t.ok(sentWhileReading >= 500, `frames written while the next batch was being read: ${sentWhileReading}`);
  t.ok(sub.overlapped.every((n) => n <= 1), 'at most one read ahead');
});
