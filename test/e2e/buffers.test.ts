/**
 * Every byte out is bounded (attack review, finding 2): replies, errors and
 * replayed frames count toward --max-buffered-bytes like events do, a socket
 * that sends faster than it reads is closed with 4008, and a replay reads
 * from the database no more than it can send. The clients here are raw
 * sockets that write frames and never read.
 */
import type pg from 'pg';
import t from 'tap';

import { createDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { until } from '../helpers/wait.js';
import { deafSocket, TestClient } from '../helpers/ws.js';

// The replay case below can wait long beside the other files (see there).
t.setTimeout(240_000);

/** Counts the rows each named statement of the daemon returned. */
function watchQueries(pool: pg.Pool): Map<string, number> {
  const rows = new Map<string, number>();
  const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<pg.QueryResult>;
  (pool as unknown as { query: (...args: unknown[]) => Promise<pg.QueryResult> }).query = async (...args: unknown[]) => {
    const result = await query(...args);
    const name = (args[0] as { name?: string }).name;
    if (name) rows.set(name, (rows.get(name) ?? 0) + result.rowCount!);
    return result;
  };
  return rows;
}

t.test('error replies to a socket that never reads: closed with 4008, not buffered without end', async (t) => {
  const db = await createDatabase(t);
  const { daemon, wsUrl } = await startDaemon(t, db, { maxBufferedBytes: 64 * 1024 });
  const deaf = await deafSocket(t, wsUrl);
  // 200,000 frames of "{}" (1.6 MB in): each is answered with an INVALID_MESSAGE error frame.
  for (let i = 0; i < 200_000 && !deaf.socket.destroyed; i++) {
    deaf.send('{}');
    if (i % 5000 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  await until('the slow consumer is closed', async () =>
    / 1$/.test(await daemon.metrics.registry.getSingleMetricAsString('realtimed_slow_consumer_closes_total')));
  await until('its connection is gone', () => daemon.server.connections.size === 0);
  t.pass('the socket was closed as a slow consumer (4008) once its unread replies passed --max-buffered-bytes');
});

t.test('a replay to a socket that never reads: read a page at a time, then closed with 4008', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { daemon, pool, wsUrl } = await startDaemon(t, db, { maxBufferedBytes: 256 * 1024, pingIntervalMs: 500 });
  const rows = watchQueries(pool);
  // Anonymous sockets share one identity: this cursor serves the deaf one too.
  const { cursor } = await (await TestClient.connect(t, wsUrl)).position('orders');
  await db.pool.query(`select realtime.publish('orders', 'big', jsonb_build_object('i', i, 'blob', repeat('x', 30000)))
                       from generate_series(1, 800) i`); // 24 MB: more than loopback's socket buffers take (they grow to ~10 MB)
  const deaf = await deafSocket(t, wsUrl);
  deaf.send(JSON.stringify({ type: 'subscribe', channel: 'orders', since: 0, cursor }));
  // Closed either when the next page waited a --ping-interval for the socket to read,
  // or when the socket missed a ping with bytes unread (both are 4008).
  await until('the slow consumer is closed', async () =>
    / 1$/.test(await daemon.metrics.registry.getSingleMetricAsString('realtimed_slow_consumer_closes_total')), 30_000);
  const read = rows.get('realtimed_replay_relay_frames') ?? 0;
  t.ok(read < 800, `the replay stopped reading when the socket stopped reading (${read} of 800 frames read)`);
});

t.test('a socket that misses a ping with bytes unread is a slow consumer (4008), not a dead peer', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  // A cap no replay here reaches: only the missed ping can close it.
  const { daemon, wsUrl } = await startDaemon(t, db, { maxBufferedBytes: 256 * 1024 * 1024, pingIntervalMs: 300 });
  const { cursor } = await (await TestClient.connect(t, wsUrl)).position('orders');
  await db.pool.query(`select realtime.publish('orders', 'big', jsonb_build_object('i', i, 'blob', repeat('x', 30000)))
                       from generate_series(1, 800) i`);
  const deaf = await deafSocket(t, wsUrl);
  deaf.send(JSON.stringify({ type: 'subscribe', channel: 'orders', since: 0, cursor }));
  await until('the slow consumer is closed', async () =>
    / 1$/.test(await daemon.metrics.registry.getSingleMetricAsString('realtimed_slow_consumer_closes_total')), 30_000);
  // It does not read the close frame either: terminated at the next ping.
  await until('its connection is gone', () => daemon.server.connections.size === 1);
  t.pass('closed as a slow consumer, then dropped');
});

t.test('a replay over --max-replay reads no frame at all', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { pool, wsUrl } = await startDaemon(t, db, { maxReplay: 5 });
  const rows = watchQueries(pool);
  const client = await TestClient.connect(t, wsUrl);
  const position = await client.position('orders');
  await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', i)) from generate_series(1, 10) i`);
  client.send({ type: 'subscribe', channel: 'orders', ref: 'r', ...position });
  t.match(await client.next((f) => f.type === 'error'), { code: 'REPLAY_UNAVAILABLE', message: /more than 5/ });
  t.equal(rows.get('realtimed_replay_relay_frames') ?? 0, 0, 'counted (at most 6 index entries), no frame read');
  t.equal(rows.get('realtimed_replay_count'), 1, 'one count');
});
