/**
 * realtime.config.delivery end to end, in each mode (notify, wal, poll), on a
 * cluster this file starts with wal_level = logical and
 * max_prepared_transactions > 0: relay order and content, no NOTIFY from a
 * business transaction in wal and poll, webhooks, change-stream row checks,
 * client publishes, forged notifications, the source's connection killed
 * under concurrent publishers, PREPARE TRANSACTION, a commit stuck on a
 * synchronous standby, a mode switched under a running daemon, PostgreSQL
 * restarted under load, and the one-line errors of a 'wal' that cannot work.
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import WebSocket from 'ws';

import { START_DEFAULTS } from '../../src/cli/options.js';
import { createDaemon, MIN_SCHEMA_VERSION } from '../../src/daemon/index.js';
import { frameOfRow, isoTimestamp } from '../../src/daemon/replication.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { ALICE, BOB, SECRET, userToken } from '../helpers/jwt.js';
import { startLogicalCluster, type LogicalCluster } from '../helpers/logical.js';
import { Receiver } from '../helpers/receiver.js';
import { TestClient, type Frame } from '../helpers/ws.js';
import { settle, until } from '../helpers/wait.js';
import { checkStream, publishConcurrently } from '../helpers/streams.js';
import { pino } from 'pino';

const MODES = ['notify', 'wal', 'poll'] as const;
type Mode = (typeof MODES)[number];

let cluster: LogicalCluster;

t.before(async () => {
  cluster = await startLogicalCluster(t);
  await cluster.query(`create role daemon login replication; grant anon, authenticated, service_role to daemon`);
});

/** A migrated database on the logical cluster, in `mode`, with a daemon (role daemon) and channel 'orders'. */
async function setup(t: Test, mode: Mode, overrides: Parameters<typeof startDaemon>[2] = {}): Promise<{ db: TestDatabase; d: TestDaemon }> {
  const db = await cluster.createDatabase(t);
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('orders'), ('load'), ('hooked');
    create policy everyone on realtime.channels for select to anon, authenticated using (true);
    create policy anyone_publishes on realtime.messages for insert to authenticated with check (true);
    update realtime.config set delivery = '${mode}';`);
  const url = cluster.urlFor(db.name, 'daemon');
  const d = await startDaemon(t, db, { recoveryIntervalMs: 200, pollIntervalMs: 20, databaseUrl: url, listenUrl: url, ...overrides },
    { databaseUrl: url, existingRole: 'daemon', delivery: mode });
  return { db, d };
}

async function collect(client: TestClient, count: number, timeoutMs = 20_000): Promise<Frame[]> {
  await until(`${count} events`, () => client.events().length >= count, timeoutMs).catch(() => {});
  return client.events();
}

/** Counts notifications on realtime_messages and realtime_webhooks in a database. */
async function countNotifications(t: Test, url: string): Promise<{ messages: number; webhooks: number }> {
  const counts = { messages: 0, webhooks: 0 };
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  client.on('notification', (n) => {
    if (n.channel === 'realtime_messages') counts.messages++;
    if (n.channel === 'realtime_webhooks') counts.webhooks++;
  });
  await client.query('listen realtime_messages; listen realtime_webhooks');
  t.teardown(() => client.end());
  return counts;
}

t.test('frames built from replicated rows are byte for byte realtime.event_frame', async (t) => {
  const db = await cluster.createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('c:%')`);
  const payloads = [{ a: 1 }, { s: 'ä€𝄞 "quoted" \\ back\nline\u0001', n: [1.5, null, true], deep: { x: {} } }, {}];
  for (const p of payloads) await db.pool.query(`select realtime.publish('c:é"x', 'ev\\ent "q"', $1::jsonb)`, [JSON.stringify(p)]);
  const client = new pg.Client({ connectionString: db.url, options: '-c TimeZone=UTC -c DateStyle=ISO' });
  await client.connect();
  t.teardown(() => client.end());
  const { rows } = await client.query<Record<string, string | null> & { expected: string }>(`
    select m.id::text, m.seq::text, m.channel_name, m.event_name, m.payload::text as payload, m.sender_type,
           m.sender_id::text, m.created_at::text as created_at, realtime.event_frame(m) as expected
    from realtime.messages m order by seq`);
  t.equal(rows.length, 3);
  for (const row of rows) t.equal(frameOfRow(row), row.expected, `seq ${row['seq']}`);
  t.equal(isoTimestamp('2026-12-02 11:30:11.123999+00'), '2026-12-02T11:30:11.123Z', 'milliseconds truncated, as to_char MS');
  t.equal(isoTimestamp('2026-12-02 11:30:11+00'), '2026-12-02T11:30:11.000Z');
  t.equal(isoTimestamp('2026-12-02 13:30:11.5+02'), '2026-12-02T11:30:11.500Z', 'an offset is applied');
  t.equal(isoTimestamp('2026-12-02 06:00:11.5-05:30'), '2026-12-02T11:30:11.500Z');
});

for (const mode of MODES) {
  t.test(`${mode}: trigger and client publishes arrive in order, with the stored frame; NOTIFY only in notify`, async (t) => {
    const { db, d } = await setup(t, mode);
    const heard = await countNotifications(t, db.url);
    const client = await TestClient.connect(t, d.wsUrl, { token: await userToken(ALICE) });
    await client.subscribe('orders');
    const raw: string[] = [];
    const rawSocket = new WebSocket(d.wsUrl);
    t.teardown(() => rawSocket.terminate());
    await new Promise((resolve) => rawSocket.once('open', resolve));
    rawSocket.on('message', (data) => raw.push(data.toString()));
    rawSocket.send(JSON.stringify({ type: 'subscribe', channel: 'orders', ref: 's' }));
    await until('subscribed', () => raw.some((f) => f.includes('"subscribed"')));

    for (let i = 0; i < 20; i++) await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
    const ack = await client.request({ type: 'publish', channel: 'orders', event: 'from-client', payload: { i: 20 } });
    t.equal(ack.type, 'published', 'a client publish is acknowledged');
    const events = await collect(client, 21);
    t.same(events.map((e) => (e['payload'] as { i: number }).i), Array.from({ length: 21 }, (_, i) => i), 'all 21, in order');
    await until('21 raw events', () => raw.filter((f) => f.includes('"type":"event"')).length >= 21);
    const { rows } = await db.pool.query<{ frame: string }>(`select realtime.event_frame(m) as frame from realtime.messages m order by seq`);
    t.same(raw.filter((f) => f.includes('"type":"event"')), rows.map((r) => r.frame), 'each frame is the stored frame, byte for byte');
    t.equal(d.daemon.delivery.mode(), mode, `the daemon follows delivery = ${mode}`);
    if (mode === 'notify') t.ok(heard.messages >= 21, 'notify: a notification per message');
    else t.equal(heard.messages, 0, `${mode}: no business transaction NOTIFYed`);
  });

  t.test(`${mode}: webhooks are delivered, and no webhook NOTIFY outside notify`, async (t) => {
    const receiver = await Receiver.start(t);
    const { db } = await setup(t, mode);
    const heard = await countNotifications(t, db.url);
    await db.pool.query(`update realtime.channels set webhook_urls = array[$1] where pattern = 'hooked'`, [receiver.url]);
    for (let i = 0; i < 5; i++) await db.pool.query(`select realtime.publish('hooked', 'h', jsonb_build_object('i', $1::int))`, [i]);
    const got = await receiver.waitFor(5);
    t.same(got.map((r) => (JSON.parse(r.body) as { payload: { i: number } }).payload.i).sort(), [0, 1, 2, 3, 4], 'five webhooks');
    if (mode === 'notify') t.ok(heard.webhooks >= 1, 'notify: the outbox woke the daemon');
    else t.equal(heard.webhooks, 0, `${mode}: the daemon woke itself`);
  });

  t.test(`${mode}: a change stream's row check still decides who sees a row`, async (t) => {
    const { db, d } = await setup(t, mode);
    await db.pool.query(`
      create schema shop;
      create table shop.orders (id integer primary key, owner uuid not null, status text not null);
      alter table shop.orders enable row level security;
      grant usage on schema shop to authenticated;
      grant select on shop.orders to authenticated;
      create policy own_orders on shop.orders for select to authenticated using (owner = realtime.uid());
      select realtime.enable_changes('shop.orders');`);
    const alice = await TestClient.connect(t, d.wsUrl, { token: await userToken(ALICE) });
    const bob = await TestClient.connect(t, d.wsUrl, { token: await userToken(BOB) });
    await alice.subscribe('orders:changes');
    await bob.subscribe('orders:changes');
    await db.pool.query(`insert into shop.orders values (1, $1, 'new')`, [ALICE]);
    await db.pool.query(`insert into shop.orders values (2, $1, 'new')`, [BOB]);
    // Markers each may see, committed after: events go out in commit order,
    // so once a marker is here, what came before it was decided.
    await db.pool.query(`insert into shop.orders values (3, $1, 'new')`, [ALICE]);
    await db.pool.query(`insert into shop.orders values (4, $1, 'new')`, [BOB]);
    const idOf = (f: Frame): number => (f['payload'] as { new: { id: number } }).new.id;
    await until('alice\'s marker', () => alice.events().some((f) => idOf(f) === 3));
    await until('bob\'s marker', () => bob.events().some((f) => idOf(f) === 4));
    t.same(alice.events().map(idOf), [1, 3], 'alice saw her rows, never bob\'s');
    t.same(bob.events().map(idOf), [2, 4], 'bob saw his, never alice\'s');
  });

  t.test(`${mode}: forged notifications deliver nothing`, async (t) => {
    const { db, d } = await setup(t, mode);
    const client = await TestClient.connect(t, d.wsUrl);
    await client.subscribe('orders');
    await db.pool.query(`select pg_notify('realtime_messages', '{"v":1,"id":"00000000-0000-4000-8000-000000000000","seq":1,"channel":"orders"}')`);
    await db.pool.query(`select pg_notify('realtime_messages', 'not json')`);
    await db.pool.query(`select realtime.publish('orders', 'real', '{}')`);
    const e = await client.next((f) => f.type === 'event');
    t.equal(e['event'], 'real', 'the first event is the real one');
    await settle(300);
    t.equal(client.events().length, 0, 'and nothing else came');
  });

  t.test(`${mode}: the source's connection killed while 4 publishers commit 800 messages out of order`, async (t) => {
    const { db, d } = await setup(t, mode);
    const client = await TestClient.connect(t, d.wsUrl);
    await client.subscribe('load');
    const app = mode === 'wal' ? 'realtimed-wal' : mode === 'notify' ? 'realtimed-listen' : '';
    let kills = 0;
    const killer = (async () => {
      for (let k = 0; k < 3; k++) {
        await settle(150);
        const r = await db.pool.query(
          `select pg_terminate_backend(pid) from pg_stat_activity
           where usename = 'daemon' and datname = current_database() and ($1 = '' or application_name = $1)`,
          [app],
        );
        kills += r.rowCount ?? 0;
      }
    })();
    await publishConcurrently(db.url, 4, 200, 'load');
    await killer;
    t.ok(kills >= 1, `the daemon's connections were killed ${kills} times while publishing`);
    await collect(client, 800, 30_000);
    await settle(300);
    checkStream(t, client.events(), 4, 200, 'the subscriber');
  });
}

t.test('notify: PREPARE TRANSACTION refuses a transaction that published (why wal and poll exist)', async (t) => {
  const { db } = await setup(t, 'notify');
  const c = await db.pool.connect();
  try {
    await c.query('begin');
    await c.query(`select realtime.publish('orders', 'two-phase', '{}')`);
    await t.rejects(c.query(`prepare transaction 'rt-notify'`), { message: /cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY/ });
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
});

for (const mode of ['wal', 'poll'] as const) {
  t.test(`${mode}: a publish inside PREPARE TRANSACTION is delivered after COMMIT PREPARED`, async (t) => {
    const { db, d } = await setup(t, mode);
    const client = await TestClient.connect(t, d.wsUrl);
    await client.subscribe('orders');
    const c = await db.pool.connect();
    const gid = `rt-${mode}-${Date.now()}`;
    try {
      await c.query('begin');
      await c.query(`select realtime.publish('orders', 'two-phase', '{"ok": true}')`);
      await c.query(`prepare transaction '${gid}'`);
    } finally {
      c.release();
    }
    t.equal(client.events().length, 0, 'nothing before the commit');
    await db.pool.query(`commit prepared '${gid}'`);
    const e = await client.next((f) => f.type === 'event', 10_000);
    t.equal(e['event'], 'two-phase', 'delivered once committed');
  });

  t.test(`${mode}: a publishing commit stuck on a synchronous standby does not hold publishing in another database`, async (t) => {
    const { db: stuck } = await setup(t, mode);
    const { db: other, d } = await setup(t, mode);
    const client = await TestClient.connect(t, d.wsUrl);
    await client.subscribe('orders');
    await cluster.query(`alter system set synchronous_standby_names = 'nobody'`);
    await cluster.query('select pg_reload_conf()');
    t.teardown(async () => {
      await cluster.query(`alter system reset synchronous_standby_names`);
      await cluster.query('select pg_reload_conf()');
    });
    const waiting = new pg.Client({ connectionString: stuck.url });
    await waiting.connect();
    t.teardown(() => waiting.end().catch(() => {}));
    await waiting.query('begin');
    await waiting.query(`select realtime.publish('orders', 'stuck', '{}')`);
    let stuckDone = false;
    const commit = waiting.query('commit').then(() => (stuckDone = true));
    await until('a commit waiting for the standby', async () => (await cluster.query(`select 1 from pg_stat_activity where wait_event = 'SyncRep'`)).rowCount === 1);
    const p = new pg.Client({ connectionString: other.url });
    await p.connect();
    t.teardown(() => p.end());
    await p.query(`set synchronous_commit = local`);
    await p.query(`select realtime.publish('orders', 'free', '{}')`);
    t.notOk(stuckDone, 'the other database published and committed while the first commit still waits');
    const e = await client.next((f) => f.type === 'event', 10_000);
    t.equal(e['event'], 'free', 'and its message was delivered');
    await cluster.query(`alter system reset synchronous_standby_names`);
    await cluster.query('select pg_reload_conf()');
    await commit;
  });
}

t.test('a running daemon follows a change of mode: notify, wal, poll, notify; nothing lost or repeated', async (t) => {
  const { db, d } = await setup(t, 'notify');
  const client = await TestClient.connect(t, d.wsUrl);
  await client.subscribe('load');
  let n = 0;
  const publishing = (async () => {
    for (const next of ['wal', 'poll', 'notify'] as const) {
      for (let i = 0; i < 50; i++, n++) await db.pool.query(`select realtime.publish('load', 'n', jsonb_build_object('p', 0, 'i', $1::int))`, [n]);
      await db.pool.query(`update realtime.config set delivery = $1`, [next]);
      await until(`mode ${next}`, () => d.daemon.delivery.mode() === next, 15_000);
    }
    for (let i = 0; i < 50; i++, n++) await db.pool.query(`select realtime.publish('load', 'n', jsonb_build_object('p', 0, 'i', $1::int))`, [n]);
  })();
  await publishing;
  await collect(client, 200);
  await settle(300);
  checkStream(t, client.events(), 1, 200, 'across three switches');
});

t.test('wal: PostgreSQL restarted under load: every message once, in order per publisher', async (t) => {
  const { db, d } = await setup(t, 'wal');
  const client = await TestClient.connect(t, d.wsUrl);
  await client.subscribe('load');
  const publishing = publishConcurrently(db.url, 4, 100, 'load', true);
  await settle(300);
  await cluster.restart();
  await publishing;
  await collect(client, 400, 30_000);
  await settle(300);
  checkStream(t, client.events(), 4, 100, 'the subscriber');
  t.equal(client.ws.readyState, client.ws.OPEN, 'the client stayed connected');
  await until('wal again', () => d.daemon.delivery.mode() === 'wal');
});

t.test("delivery 'wal' that cannot work is one line naming the fix, and the daemon does not start", async (t) => {
  const start = async (url: string): Promise<unknown> => {
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    const daemon = createDaemon({
      config: { ...START_DEFAULTS, roles: [...START_DEFAULTS.roles], databaseUrl: url, listenUrl: url, port: 0, jwtSecret: SECRET, logLevel: 'silent' },
      pool,
      logger: pino({ level: 'silent' }),
    });
    try {
      await daemon.start();
      await daemon.stop();
      return null;
    } catch (err) {
      return err;
    } finally {
      await pool.end();
    }
  };
  // The main test server runs with wal_level = replica.
  const main = await createDatabase(t);
  await main.pool.query(`update realtime.config set delivery = 'wal'`);
  const walLevel = (await main.pool.query<{ w: string }>(`select current_setting('wal_level') as w`)).rows[0]?.w;
  if (walLevel !== 'logical') {
    t.match(await start(main.url), { code: 'RT_ERR_DELIVERY', exitCode: 2, message: /wal_level is \w+: set wal_level = logical/ }, 'wal_level');
  }
  const db = await cluster.createDatabase(t);
  await db.pool.query(`update realtime.config set delivery = 'wal'`);
  await cluster.query(`create role nonrepl login; grant anon, authenticated, service_role to nonrepl`).catch(() => {});
  t.match(await start(cluster.urlFor(db.name, 'nonrepl')), { code: 'RT_ERR_DELIVERY', message: /alter role "?nonrepl"? replication/ }, 'no REPLICATION');
  await db.pool.query(`drop publication realtime_messages`);
  t.match(await start(cluster.urlFor(db.name, 'daemon')),
    { code: 'RT_ERR_DELIVERY', message: /create publication realtime_messages for table realtime.messages/ }, 'no publication');
});

t.test('a daemon refuses a schema older than the one it reads (migrate first, then upgrade the daemons)', async (t) => {
  const db = await cluster.createDatabase(t);
  await db.pool.query(`delete from realtime.schema_versions where version >= $1`, [MIN_SCHEMA_VERSION]);
  const url = cluster.urlFor(db.name, 'daemon');
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  t.teardown(() => pool.end());
  const daemon = createDaemon({
    config: { ...START_DEFAULTS, roles: [...START_DEFAULTS.roles], databaseUrl: url, listenUrl: url, port: 0, jwtSecret: SECRET, logLevel: 'silent' },
    pool,
    logger: pino({ level: 'silent' }),
  });
  await t.rejects(daemon.start(), { code: 'RT_ERR_VERSION', exitCode: 2, message: new RegExp(`realtime schema version ${MIN_SCHEMA_VERSION - 1}, this realtimed needs ${MIN_SCHEMA_VERSION} or newer: run realtimed migrate first`) });
});

t.test('doctor: wal ok with the slots of running daemons; a realtimed slot left inactive is a FAIL', async (t) => {
  const { doctor } = await import('../../src/cli/doctor.js');
  const { db } = await setup(t, 'wal');
  const url = cluster.urlFor(db.name, 'daemon');
  const before = await doctor({ databaseUrl: url, roles: ['anon', 'authenticated'] });
  t.match(before.findings.find((f) => f.check === 'delivery'), { level: 'ok', message: /^wal: / });
  t.match(before.findings.find((f) => f.check === 'slots'), { level: 'ok', message: /\(temporary\): active/ }, 'the running daemon\'s temporary slot');
  await db.pool.query(`select pg_create_logical_replication_slot('realtimed_left_behind', 'pgoutput')`);
  t.teardown(() => cluster.query(`select pg_drop_replication_slot('realtimed_left_behind')`).catch(() => {}));
  const after = await doctor({ databaseUrl: url, roles: ['anon', 'authenticated'] });
  t.match(after.findings.find((f) => f.check === 'slots' && f.level === 'fail'),
    { message: /realtimed_left_behind is inactive and keeps [\d.]+ MB of WAL until it is dropped: select pg_drop_replication_slot\('realtimed_left_behind'\)/ });
});
