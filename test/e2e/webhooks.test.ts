/**
 * Webhooks against real HTTP receivers on 127.0.0.1 and real PostgreSQL:
 * headers and signature, retries, Retry-After, failures, timeouts, restarts,
 * two daemons, statistics and retention.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';

import t from 'tap';

import { BIN, cli } from '../helpers/cli.js';
import { createDatabase, createLoginRole, expireClosedPartitions, rollPartition, urlFor, type TestDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, userToken } from '../helpers/jwt.js';
import { Receiver } from '../helpers/receiver.js';
import { TestClient } from '../helpers/ws.js';
import { settle, until } from '../helpers/wait.js';

const WEBHOOK_SECRET = 'whsec-0123456789abcdef';
const FAST = { webhookSweepMs: 50, statsIntervalMs: 100 };

async function hookChannel(db: TestDatabase, pattern: string, urls: string[]): Promise<void> {
  await db.pool.query(`insert into realtime.channels (pattern, webhook_urls) values ($1, $2)`, [pattern, urls]);
}

async function delivery(db: TestDatabase, state: string): Promise<Record<string, unknown> | undefined> {
  const { rows } = await db.pool.query(`select * from realtime.webhook_deliveries where state = $1 order by id`, [state]);
  return rows[0];
}

/** The receiver side of docs/webhooks.md, v2: verify origin, freshness and that it was meant for this URL. */
function verifyV2(secret: string, url: string, headers: Record<string, unknown>, body: string): boolean {
  const timestamp = String(headers['x-realtime-timestamp']);
  const expected = `v2=${createHmac('sha256', secret).update(`${timestamp}.${url}.${body}`).digest('hex')}`;
  const given = String(headers['x-realtime-signature-v2'] ?? '');
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
  return fresh && given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

/** The receiver side of docs/webhooks.md: verify origin and freshness. */
function verify(secret: string, headers: Record<string, unknown>, body: string): boolean {
  const timestamp = String(headers['x-realtime-timestamp']);
  const expected = `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
  const given = String(headers['x-realtime-signature'] ?? '');
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
  return fresh && given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

t.test('headers, body and signature; user messages are never webhooked', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const receiver = await Receiver.start(t);
  await db.pool.query(`update realtime.channels set webhook_urls = $1 where pattern = 'chat:%'`, [[receiver.url]]);
  const { wsUrl } = await startDaemon(t, db, { ...FAST, webhookSecret: WEBHOOK_SECRET });

  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('chat:7');
  t.equal((await alice.request({ type: 'publish', channel: 'chat:7', event: 'message', payload: { text: 'from a client' } })).type, 'published');
  const { rows } = await db.pool.query<{ id: string }>(`select realtime.publish('chat:7', 'notice', '{"text": "from SQL"}') as id`);
  const [got] = await receiver.waitFor(1);
  await settle(300);
  t.equal(receiver.received.length, 1, 'only the system message was POSTed; the client message was not');

  const body = JSON.parse(got?.body ?? '{}') as Record<string, unknown>;
  t.same(Object.keys(body), ['id', 'channel', 'event', 'payload', 'createdAt']);
  t.match(body, { id: rows[0]?.id, channel: 'chat:7', event: 'notice', payload: { text: 'from SQL' } });
  t.match(got?.headers, {
    'content-type': 'application/json',
    'x-realtime-event': 'notice',
    'x-realtime-channel': 'chat:7',
    'x-realtime-message-id': rows[0]?.id,
    'x-realtime-timestamp': /^\d{10}$/,
    'x-realtime-signature': /^v1=[0-9a-f]{64}$/,
  });
  t.ok(verify(WEBHOOK_SECRET, got?.headers ?? {}, got?.body ?? ''), 'the signature verifies with the secret');
  t.notOk(verify('another-secret-0000', got?.headers ?? {}, got?.body ?? ''), 'and not with another');
  t.notOk(verify(WEBHOOK_SECRET, got?.headers ?? {}, (got?.body ?? '').replace('from SQL', 'from Eve')), 'nor for a changed body');
  t.ok(verifyV2(WEBHOOK_SECRET, receiver.url, got?.headers ?? {}, got?.body ?? ''), 'v2 verifies with the secret and this URL (finding 8f)');
  t.notOk(verifyV2(WEBHOOK_SECRET, 'http://127.0.0.1:1/other', got?.headers ?? {}, got?.body ?? ''),
    'and not at another receiver: a captured request cannot be replayed there');
  await until('delivered count', async () => ((await delivery(db, 'delivered')) ? true : undefined));
  t.same((await db.pool.query(`select wh_audience_count, wh_delivered_count from realtime.message_stats where id = $1`, [rows[0]?.id])).rows[0],
    { wh_audience_count: 1, wh_delivered_count: 1 }, 'statistics: one URL, one delivery');
});

t.test('500, 500, 200: delivered once, three attempts recorded', async (t) => {
  const db = await createDatabase(t);
  const receiver = await Receiver.start(t, (_r, i) => ({ status: i < 2 ? 500 : 200 }));
  await hookChannel(db, 'orders', [receiver.url]);
  await db.pool.query(`update realtime.config set webhook_backoff_ms = 50`);
  await startDaemon(t, db, FAST);
  await db.pool.query(`select realtime.publish('orders', 'created', '{}')`);
  const row = await until('delivered', () => delivery(db, 'delivered'));
  await settle(300);
  t.equal(receiver.received.length, 3, 'three requests');
  t.equal(new Set(receiver.received.map((r) => r.headers['x-realtime-message-id'])).size, 1, 'all for the one message');
  t.equal(row['attempts'], 3);
  const attempts = await db.pool.query<{ attempt: number; status: number }>(
    `select attempt, status from realtime.webhook_attempts order by attempt`);
  t.same(attempts.rows, [{ attempt: 1, status: 500 }, { attempt: 2, status: 500 }, { attempt: 3, status: 200 }]);
});

t.test('429 with Retry-After is honoured', async (t) => {
  const db = await createDatabase(t);
  const receiver = await Receiver.start(t, (_r, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
  await hookChannel(db, 'orders', [receiver.url]);
  await db.pool.query(`update realtime.config set webhook_backoff_ms = 10`);
  await startDaemon(t, db, FAST);
  await db.pool.query(`select realtime.publish('orders', 'created', '{}')`);
  const [first, second] = await receiver.waitFor(2, 5000);
  const gap = (second?.at ?? 0) - (first?.at ?? 0);
  t.ok(gap >= 950, `the retry came ${gap} ms later (Retry-After: 1), not after the 10 ms backoff`);
});

t.test('404 fails at once; no retry', async (t) => {
  const db = await createDatabase(t);
  const receiver = await Receiver.start(t, () => ({ status: 404 }));
  await hookChannel(db, 'orders', [receiver.url]);
  await db.pool.query(`update realtime.config set webhook_backoff_ms = 10`);
  await startDaemon(t, db, FAST);
  await db.pool.query(`select realtime.publish('orders', 'created', '{}')`);
  const row = await until('failed', () => delivery(db, 'failed'));
  await settle(400);
  t.equal(receiver.received.length, 1, 'one request');
  t.match(row, { attempts: 1, last_status: 404, last_error: 'HTTP 404' });
  const failures = await db.pool.query(`select url, state, last_status from realtime.webhook_failures`);
  t.same(failures.rows, [{ url: receiver.url, state: 'failed', last_status: 404 }], 'listed in realtime.webhook_failures');
});

t.test('a receiver that hangs: the attempt times out', async (t) => {
  const db = await createDatabase(t);
  const receiver = await Receiver.start(t, () => ({ status: 200, hang: true }));
  await hookChannel(db, 'orders', [receiver.url]);
  await db.pool.query(`update realtime.config set webhook_max_attempts = 1`);
  await startDaemon(t, db, { ...FAST, webhookTimeoutMs: 300 });
  await db.pool.query(`select realtime.publish('orders', 'created', '{}')`);
  const row = await until('failed', () => delivery(db, 'failed'));
  t.match(row, { attempts: 1, last_status: null, last_error: 'timeout after 300 ms' });
});

async function spawnDaemon(t: Tap, url: string, extra: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'start', '--port', '0', '--log-level', 'warn', '--webhook-sweep-interval', '50', '--webhook-allow-local'], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: url, ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  return child;
}
type Tap = { teardown(fn: () => unknown): void };

t.test('receiver down, daemon killed, receiver up, daemon restarted: delivered once', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const url = urlFor(db.name, undefined, role);
  const receiver = new Receiver();
  await receiver.listen();
  const port = receiver.port;
  await receiver.close(); // down: connections are refused
  await hookChannel(db, 'orders', [`http://127.0.0.1:${port}/hook`]);
  await db.pool.query(`update realtime.config set webhook_backoff_ms = 200, webhook_max_attempts = 20`);

  const first = await spawnDaemon(t, url);
  const { rows } = await db.pool.query<{ id: string }>(`select realtime.publish('orders', 'created', '{"n": 1}') as id`);
  // Two failed attempts, then park the retry (only while it is pending, not
  // claimed: a claim mid-attempt would hold its lease, --webhook-timeout + 30 s,
  // which pgtap/webhooks.sql covers) so the kill lands between attempts.
  await until('two failed attempts', async () => {
    const r = await db.pool.query(`update realtime.webhook_deliveries set next_attempt_at = now() + interval '1 hour'
      where state = 'pending' and attempts >= 2 returning 1`);
    return r.rowCount ? true : undefined;
  });
  first.kill('SIGKILL');
  await new Promise((resolve) => first.once('exit', resolve));

  await receiver.listen(port);
  t.teardown(() => receiver.close());
  await db.pool.query(`update realtime.webhook_deliveries set next_attempt_at = now()`);
  await spawnDaemon(t, url);
  await receiver.waitFor(1, 10_000);
  await until('delivered', () => delivery(db, 'delivered'));
  await settle(500);
  t.equal(receiver.received.length, 1, 'received exactly once');
  t.equal(receiver.received[0]?.headers['x-realtime-message-id'], rows[0]?.id);
});

t.test('two daemons, 500 system messages, two URLs: every (message, url) exactly once', async (t) => {
  const db = await createDatabase(t);
  const a = await Receiver.start(t);
  const b = await Receiver.start(t);
  await hookChannel(db, 'orders', [a.url, b.url]);
  await startDaemon(t, db, FAST);
  await startDaemon(t, db, FAST);
  await db.pool.query(`select realtime.publish('orders', 'created', jsonb_build_object('n', i)) from generate_series(1, 500) i`);
  await a.waitFor(500, 30_000);
  await b.waitFor(500, 30_000);
  // A receiver has the request before the daemon records the response, and
  // on a loaded machine that write can trail by more than a moment: wait for
  // the records, then a little longer for any duplicate to show.
  await until('all recorded', async () => {
    const r = await db.pool.query<{ n: number }>(`select count(*)::int as n from realtime.webhook_deliveries where state <> 'delivered'`);
    return r.rows[0]?.n === 0 ? true : undefined;
  }, 30_000);
  await settle(500);
  for (const [name, receiver] of [['first URL', a], ['second URL', b]] as const) {
    const ids = receiver.received.map((r) => r.headers['x-realtime-message-id']);
    t.equal(ids.length, 500, `${name}: 500 requests`);
    t.equal(new Set(ids).size, 500, `${name}: 500 distinct messages, no duplicate`);
  }
  const states = await db.pool.query(`select state, count(*)::int as n from realtime.webhook_deliveries group by state`);
  t.same(states.rows, [{ state: 'delivered', n: 1000 }]);
  const counts = await db.pool.query(`select sum(wh_delivered_count)::int as delivered, sum(wh_audience_count)::int as audience from realtime.message_stats`);
  t.same(counts.rows[0], { delivered: 1000, audience: 1000 }, 'statistics add up across both daemons');
});

t.test('ws_audience_count: sockets summed over two daemons, reported in batches, the message never rewritten', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  // Only the explicit flushes below write, so each daemon's two counts land
  // in one report (with the 100 ms timer a report could fall between them).
  const QUIET = { ...FAST, statsIntervalMs: 3_600_000 };
  const one = await startDaemon(t, db, QUIET);
  const two = await startDaemon(t, db, QUIET);
  const clients = [
    ...(await Promise.all([1, 2, 3].map(() => TestClient.connect(t, one.wsUrl)))),
    ...(await Promise.all([1, 2].map(() => TestClient.connect(t, two.wsUrl)))),
  ];
  for (const c of clients) await c.subscribe('orders');
  await db.pool.query(`select realtime.publish('orders', 'created', '{}'), realtime.publish('orders', 'updated', '{}')`);
  for (const c of clients) {
    await c.next((f) => f.type === 'event');
    await c.next((f) => f.type === 'event');
  }
  await one.daemon.stats.flush();
  await two.daemon.stats.flush();
  const { rows } = await db.pool.query(`select event_name, ws_audience_count from realtime.message_stats order by seq`);
  t.same(rows, [{ event_name: 'created', ws_audience_count: 5 }, { event_name: 'updated', ws_audience_count: 5 }]);
  const updates = await db.pool.query(`select coalesce(sum(n_tup_upd), 0)::int as n from pg_stat_xact_user_tables where relname like 'messages%'`);
  t.equal(updates.rows[0]?.n, 0, 'no UPDATE of a message row');
  const reports = await db.pool.query(`select cardinality(seqs) as n, counts from realtime.message_audience order by counts`);
  t.same(reports.rows, [{ n: 2, counts: [2, 2] }, { n: 2, counts: [3, 3] }], 'one row per daemon report, holding both messages');
  const stats = await db.pool.query(`select avg_ws_audience from realtime.channel_stats where pattern = 'orders'`);
  t.equal(Number(stats.rows[0]?.avg_ws_audience), 5);
});

t.test('--prune-interval drops old partitions, but not while a webhook of theirs is due', async (t) => {
  const db = await createDatabase(t);
  await hookChannel(db, 'old', []);
  await hookChannel(db, 'hooked', ['http://127.0.0.1:9/never']);
  await db.pool.query(`select realtime.publish('old', 'e', '{}'), realtime.publish('hooked', 'e', '{}')`);
  await rollPartition(db.pool);
  await expireClosedPartitions(db.pool);
  const count = async (): Promise<number> => (await db.pool.query(`select count(*)::int as n from realtime.messages`)).rows[0]?.n as number;
  await db.pool.query(`select realtime.prune()`);
  t.equal(await count(), 2, 'a partition with a webhook still due is kept, whole');
  await startDaemon(t, db, { pruneIntervalMs: 100, webhooks: false });
  await db.pool.query(`update realtime.webhook_deliveries set state = 'failed'`);
  await until('dropped', async () => ((await count()) === 0 ? true : undefined));
  t.equal(await count(), 0, 'once it finished, the partition is dropped');
  const partitions = await db.pool.query(`select count(*)::int as n from realtime.message_partitions where closed_at is not null`);
  t.equal(partitions.rows[0]?.n, 0, 'and forgotten');
});

t.test('realtimed stats prints realtime.channel_stats', async (t) => {
  const db = await createDatabase(t);
  await hookChannel(db, 'orders', []);
  await db.pool.query(`select realtime.publish('orders', 'e', '{}')`);
  const r = await cli(['stats', '--database-url', db.url]);
  t.equal(r.code, 0, r.stderr);
  const [header, rule, row] = r.stdout.split('\n');
  t.match(header, /^pattern\s+enabled\s+last_hour\s+last_day\s+total\s+avg_sockets\s+webhooks_ok\s+pending\s+last_message_utc$/);
  t.match(rule, /^-+ +-+/);
  t.match(row, /^orders\s+yes\s+1\s+1\s+1\s+0\.00\s+-\s+0\s+\d{4}-/);
  const unreachable = await cli(['stats', '--database-url', 'postgres://x@127.0.0.1:1/db']);
  t.equal(unreachable.code, 2);
  t.match(unreachable.stderr, 'RT_ERR_DB_UNREACHABLE');
});

t.test('webhooks to loopback and link-local addresses are refused unless --webhook-allow-local (finding 8e)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const receiver = await Receiver.start(t);
  const urls = [receiver.url, `http://localhost:${receiver.port}/by-name`, 'http://169.254.169.254/latest/meta-data/', 'http://[::1]:1/'];
  await db.pool.query(`update realtime.channels set webhook_urls = $1 where pattern = 'chat:%'`, [urls]);
  await db.pool.query(`update realtime.config set webhook_max_attempts = 1`);
  await startDaemon(t, db, { ...FAST, webhookAllowLocal: false });
  await db.pool.query(`select realtime.publish('chat:7', 'notice', '{}')`);
  const failed = await until('every delivery failed', async () => {
    const { rows } = await db.pool.query<{ url: string; last_error: string }>(
      `select url, last_error from realtime.webhook_deliveries where state = 'failed' order by url`);
    return rows.length === urls.length ? rows : undefined;
  });
  t.ok(failed.every((r) => /^blocked address/.test(r.last_error)), `each refused as a blocked address: ${JSON.stringify(failed.map((r) => r.last_error))}`);
  await settle(200);
  t.equal(receiver.received.length, 0, 'the local receiver got nothing, by IP or by name');
});
