/**
 * Nothing lost, nothing twice: large payloads, the LISTEN connection killed
 * under concurrent publishers (whose seqs commit out of order), PostgreSQL
 * restarted under load, and replay for clients (seam, retention, epoch).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import t, { type Test } from 'tap';
import pg from 'pg';

import { startEmbedded } from '../../src/cli/embedded.js';
import { migrate } from '../../src/cli/migrate.js';
import { createDatabase, expireClosedPartitions, rollPartition, type TestDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient, type Frame } from '../helpers/ws.js';
import { settle } from '../helpers/wait.js';
import { checkStream, publishConcurrently } from '../helpers/streams.js';


async function collect(client: TestClient, count: number, timeoutMs: number): Promise<Frame[]> {
  const deadline = Date.now() + timeoutMs;
  while (client.events().length < count && Date.now() < deadline) await settle(50);
  return client.events();
}

t.test('payloads of 7,900 bytes and 60 KiB arrive intact (NOTIFY carries only the id)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const client = await TestClient.connect(t, wsUrl);
  await client.subscribe('orders');
  const unicode = 'ä€𝄞';
  const payloads = [
    { blob: 'x'.repeat(7900 - 12) },
    { blob: `${unicode}${'y'.repeat(60 * 1024 - 20)}`, nested: { a: [1, 2, { b: null }] } },
  ];
  for (const payload of payloads) {
    await db.pool.query(`select realtime.publish('orders', 'big', $1::jsonb)`, [JSON.stringify(payload)]);
  }
  const events = await collect(client, 2, 5000);
  t.same(events.map((e) => e['payload']), payloads, 'byte for byte');
  t.ok(Buffer.byteLength(JSON.stringify(payloads[1])) > 60 * 1024 - 100, 'the second is about 60 KiB');
});

t.test('LISTEN connection killed while 4 concurrent publishers insert 2,000 messages', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, role, daemon } = await startDaemon(t, db, { recoveryIntervalMs: 200 });
  const a = await TestClient.connect(t, wsUrl);
  const b = await TestClient.connect(t, wsUrl);
  await a.subscribe('orders');
  await b.subscribe('orders');

  let kills = 0;
  const killer = (async () => {
    for (let k = 0; k < 3; k++) {
      await settle(250);
      const r = await db.pool.query(
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'realtimed-listen' and usename = $1`,
        [role],
      );
      kills += r.rowCount ?? 0;
    }
  })();
  await publishConcurrently(db.url, 4, 500, 'orders');
  await killer;
  t.ok(kills >= 2, `the LISTEN connection was killed ${kills} times while publishing`);

  const ea = await collect(a, 2000, 20_000);
  const eb = await collect(b, 2000, 20_000);
  await settle(500);
  checkStream(t, a.events(), 4, 500, 'subscriber A');
  checkStream(t, b.events(), 4, 500, 'subscriber B');
  t.same(
    ea.map((e) => (e['meta'] as Record<string, unknown>)['seq']),
    eb.map((e) => (e['meta'] as Record<string, unknown>)['seq']),
    'both subscribers saw the same order',
  );
  const recovered = await daemon.metrics.registry.getSingleMetricAsString('realtimed_messages_recovered_total');
  t.match(recovered, /realtimed_messages_recovered_total \d+/, `recovery pass counted: ${recovered.split('\n').pop()}`);
});

t.test('PostgreSQL restarted under load: every message once, in order per publisher', async (t) => {
  // realtimed's own embedded start (src/cli/embedded.ts): as root it runs from wherever the postgres user can reach.
  const dir = await mkdtemp(join(tmpdir(), 'realtimed-restart-'));
  await chmod(dir, 0o755);
  const dataDir = join(dir, 'pg');
  let server = await startEmbedded({ dataDir, password: 'postgres' });
  const port = server.port;
  t.teardown(async () => {
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  const admin = new pg.Client({ connectionString: `postgres://postgres:postgres@127.0.0.1:${port}/postgres` });
  await admin.connect();
  await admin.query('create database app');
  await admin.end();
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/app`;
  await migrate({ databaseUrl: url });
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  await setup.query(`
    insert into realtime.channels (pattern) values ('load');
    create policy everyone on realtime.channels for select to anon using (pattern = 'load');
    create role daemon login password 'daemon'; grant anon, authenticated, service_role to daemon;`);
  await setup.end();
  const db = { name: 'app', url, pool: new pg.Pool({ connectionString: url }) } as TestDatabase;
  db.pool.on('error', () => {});
  t.teardown(() => db.pool.end());
  const daemonUrl = `postgres://daemon:daemon@127.0.0.1:${port}/app`;
  const { wsUrl } = await startDaemon(t, db, { recoveryIntervalMs: 200, databaseUrl: daemonUrl, listenUrl: daemonUrl },
    { databaseUrl: daemonUrl, existingRole: 'daemon' });
  const client = await TestClient.connect(t, wsUrl);
  await client.subscribe('load');

  const publishing = publishConcurrently(url, 4, 150, 'load', true);
  await settle(400);
  await server.stop();
  await settle(300);
  server = await startEmbedded({ dataDir, password: 'postgres', port });
  await publishing;
  await collect(client, 600, 30_000);
  await settle(1000);
  checkStream(t, client.events(), 4, 150, 'the subscriber');
  t.equal(client.ws.readyState, client.ws.OPEN, 'the client stayed connected throughout');
});

t.test('replay: since gives the events after a seq, then live, with no gap and no duplicate at the seam', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const client = await TestClient.connect(t, wsUrl);
  const { cursor } = await client.position('orders');
  for (let i = 1; i <= 40; i++) await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
  const { rows } = await db.pool.query<{ seq: string }>(`select seq from realtime.messages where payload->>'i' = '20'`);
  const since = Number(rows[0]?.seq);

  const publishing = (async () => {
    for (let i = 41; i <= 100; i++) await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
  })();
  await settle(20);
  const reply = await client.request({ type: 'subscribe', channel: 'orders', since, cursor });
  t.match(reply, { type: 'subscribed', channel: 'orders', epoch: /^[0-9a-f]{16}$/ });
  await publishing;
  const events = await collect(client, 80, 5000);
  await settle(300);
  t.same(
    client.events().map((e) => (e['payload'] as { i: number }).i),
    Array.from({ length: 80 }, (_, k) => k + 21),
    'messages 21..100, each once, in order',
  );
  t.equal(events.length, 80);
});

t.test('REPLAY_UNAVAILABLE: beyond retention, beyond --max-replay, another epoch, a seq from the future', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db, { maxReplay: 5 });
  // Anonymous clients share one identity, so one cursor (from before any message) serves them all.
  const probe = await TestClient.connect(t, wsUrl);
  const { epoch, cursor } = await probe.position('orders');
  // Messages 1..4 in a partition of their own (a day, as it were), 5..10 in the next.
  for (let i = 1; i <= 10; i++) {
    if (i === 5) await rollPartition(db.pool);
    await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
  }
  const seqs = (await db.pool.query<{ seq: string }>(`select seq from realtime.messages order by seq`)).rows.map((r) => Number(r.seq));

  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['more than --max-replay (5) to send', { since: seqs[2], cursor }, /more than 5 messages/],
    ['another epoch', { since: seqs[8], epoch: 'ffffffffffffffff', cursor }, /another epoch/],
    ['a seq ahead of the stream', { since: (seqs[9] ?? 0) + 1000, cursor }, /ahead of this stream/],
  ];
  for (const [name, extra, why] of cases) {
    const client = await TestClient.connect(t, wsUrl);
    client.send({ type: 'subscribe', channel: 'orders', ref: 's', ...extra });
    const error = await client.next((f) => f.type === 'error');
    t.match(error, { code: 'REPLAY_UNAVAILABLE', channel: 'orders', ref: 's', epoch, message: why }, `${name}: REPLAY_UNAVAILABLE`);
    t.match(await client.next((f) => f.type === 'subscribed'), { ref: 's' }, `${name}: still subscribed, live`);
    await settle(100);
    t.same(client.events(), [], `${name}: no wrong messages replayed`);
  }

  const fine = await TestClient.connect(t, wsUrl);
  await fine.request({ type: 'subscribe', channel: 'orders', since: seqs[6], epoch, cursor });
  t.same((await collect(fine, 3, 2000)).map((e) => (e['payload'] as { i: number }).i), [8, 9, 10], 'within bounds: replayed');

  // Retention drops the partition of 1..4 whole.
  await expireClosedPartitions(db.pool);
  await db.pool.query(`select realtime.prune()`);
  const pruned = await TestClient.connect(t, wsUrl);
  pruned.send({ type: 'subscribe', channel: 'orders', ref: 'p', since: seqs[1], epoch, cursor });
  t.match(await pruned.next((f) => f.type === 'error'), { code: 'REPLAY_UNAVAILABLE', message: /pruned/ },
    'messages after since were pruned: REPLAY_UNAVAILABLE');
  await settle(100);
  t.same(pruned.events(), [], 'and nothing partial is replayed');
});

t.test('a replay needs a cursor this token was given: a new owner does not replay the previous owner\'s messages', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db); // order:1 is alice's: only its owner may subscribe
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const alicePosition = await alice.position('order:1');
  await db.pool.query(`update app.orders set status = 'secret-of-alice' where id = 1`);
  await db.pool.query(`update app.orders set owner_id = $1 where id = 1`, [BOB]); // handed over to bob

  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  bob.send({ type: 'subscribe', channel: 'order:1', ref: 'b', since: 0 });
  t.match(await bob.next((f) => f.type === 'error'), { code: 'REPLAY_UNAVAILABLE', message: /needs the cursor/ }, 'since without a cursor: refused');
  t.match(await bob.next((f) => f.type === 'subscribed'), { ref: 'b', cursor: /^\d+\./ }, 'subscribed live, with a cursor of his own');
  await bob.request({ type: 'unsubscribe', channel: 'order:1' });
  bob.send({ type: 'subscribe', channel: 'order:1', ref: 'c', since: 0, cursor: alicePosition.cursor });
  t.match(await bob.next((f) => f.type === 'error'), { code: 'REPLAY_UNAVAILABLE', ref: 'c' }, "alice's cursor does not work for bob");
  await bob.next((f) => f.type === 'subscribed' && f['ref'] === 'c');
  await settle(200);
  t.same(bob.events(), [], "nothing of alice's time was replayed to bob");

  const mine = await bob.position('order:1');
  await db.pool.query(`update app.orders set status = 'bobs' where id = 1`);
  bob.send({ type: 'subscribe', channel: 'order:1', ref: 'd', ...mine, since: mine.since - 1 });
  t.match(await bob.next((f) => f.type === 'error'), { code: 'REPLAY_UNAVAILABLE', message: /before this token was allowed in/ },
    'a seq before his own cursor: refused');
  await bob.request({ type: 'unsubscribe', channel: 'order:1' });
  await bob.request({ type: 'subscribe', channel: 'order:1', ...mine });
  const event = await bob.next((f) => f.type === 'event');
  t.match(event, { payload: { status: 'bobs' } }, 'from his own cursor: what came after it is replayed');
});
