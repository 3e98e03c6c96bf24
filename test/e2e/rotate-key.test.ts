/**
 * realtime.rotate_notify_key() (migration 18) while daemons run: they re-read
 * the key at commit (NOTIFY realtime_keys), keep relaying ephemeral messages
 * across the rotation without a drop, accept the previous key (ephemeral
 * seals, replay cursors) for the grace period, and refuse it after.
 */
import pg from 'pg';
import t from 'tap';

import { seal } from '../../src/daemon/ephemeral.js';
import { deriveKeys } from '../../src/daemon/keys.js';
import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { metric } from '../helpers/spawn.js';
import { until } from '../helpers/wait.js';
import { TestClient } from '../helpers/ws.js';

async function rooms(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('room:%');
    create policy rooms_subscribe on realtime.channels for select to anon, authenticated using (true);
    create policy rooms_publish on realtime.messages for insert to anon, authenticated
      with check (realtime.channel_name() like 'room:%');`);
}

const oldKey = async (pool: pg.Pool): Promise<string> =>
  (await pool.query<{ key: string }>('select key from realtime.notify_key')).rows[0]?.key ?? '';

/** An ephemeral notification sealed with a notify key, as a holder of a dump of the database could make one. */
function forged(notifyKey: string, seq: number, text: string): string {
  const frame = JSON.stringify({ type: 'event', channel: 'room:1', event: 'forged', payload: { text }, meta: { ephemeral: true } });
  return seal(deriveKeys(notifyKey).sealing, { instance: 'dump-holder', seq, at: Date.now(), channel: 'room:1', frame });
}

t.test('daemons relay across a rotation; the old key works for the grace, then is refused', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const one = await startDaemon(t, db);
  const two = await startDaemon(t, db);
  const alice = await TestClient.connect(t, one.wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, two.wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('room:1');
  await bob.subscribe('room:1');
  const before = await oldKey(db.pool);
  const position = await bob.position('room:2');

  // Ephemeral messages from one instance to the other, with a rotation in the middle.
  const sent = 40;
  for (let i = 1; i <= sent; i++) {
    if (i === 20) await db.pool.query(`select realtime.rotate_notify_key('3 seconds')`);
    t.match(await alice.request({ type: 'publish', channel: 'room:1', event: 'tick', payload: { i }, ephemeral: true }),
      { type: 'published' });
  }
  await until(`${sent} ephemeral events on the other instance`, () => bob.events().filter((f) => f['event'] === 'tick').length === sent);
  t.equal(await metric(two.httpUrl, 'realtimed_notifications_dropped_total\\{reason="forged"\\}'), 0, 'none dropped');
  t.not(await oldKey(db.pool), before, 'the key changed');

  // Within the grace: what the old key sealed or signed still works.
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  t.teardown(() => client.end());
  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [forged(before, 1, 'in grace')]);
  await bob.next((f) => f['event'] === 'forged', 5000);
  t.pass('a notification sealed with the previous key is relayed during the grace');
  await db.pool.query(`select realtime.publish('room:2', 'stored', '{}')`);
  bob.send({ type: 'subscribe', channel: 'room:2', ref: 'replay', ...position });
  t.match(await bob.next((f) => f['ref'] === 'replay'), { type: 'subscribed' }, 'a cursor signed with the previous key replays');
  t.match(await bob.next((f) => f['event'] === 'stored'), { channel: 'room:2' });

  // After it: refused.
  await until('the grace is over', async () =>
    (await db.pool.query<{ over: boolean }>(`select now() > previous_valid_until + interval '500 ms' as over from realtime.notify_key`)).rows[0]?.over);
  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [forged(before, 2, 'after grace')]);
  await until('the late one counted as forged', async () =>
    (await metric(two.httpUrl, 'realtimed_notifications_dropped_total\\{reason="forged"\\}')) === 1);
  t.equal(bob.events().filter((f) => f['event'] === 'forged').length, 0, 'and not relayed');
  await bob.request({ type: 'unsubscribe', channel: 'room:2' });
  bob.send({ type: 'subscribe', channel: 'room:2', ref: 'late', ...position });
  t.match(await bob.next((f) => f['ref'] === 'late'), { type: 'error', code: 'REPLAY_UNAVAILABLE' },
    'a cursor signed with the previous key no longer replays: the client resyncs');

  // Still relaying with the new key.
  await alice.request({ type: 'publish', channel: 'room:1', event: 'after', payload: {}, ephemeral: true });
  await bob.next((f) => f['event'] === 'after');
  t.pass('ephemeral messages flow after the grace');
});

t.test('a flood of NOTIFY realtime_keys: reads stay bounded, ephemeral messages keep flowing, a rotation in it is picked up', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const one = await startDaemon(t, db);
  const two = await startDaemon(t, db);
  const alice = await TestClient.connect(t, one.wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, two.wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('room:1');
  await bob.subscribe('room:1');
  // The reads of realtime.notify_key by daemon two, counted from its own pool.
  let reads = 0;
  const counted = new WeakSet<object>();
  two.pool.on('acquire', (client) => {
    if (counted.has(client)) return;
    counted.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].includes('notify_key')) reads++;
      return query(...args);
    };
  });
  // Any role may send the hint: a loop of them for 3 s, a rotation in the middle.
  const flooder = new pg.Client({ connectionString: db.url });
  await flooder.connect();
  t.teardown(() => flooder.end());
  const started = Date.now();
  let hints = 0;
  let rotated = false;
  const flood = (async () => {
    while (Date.now() - started < 3000) {
      await flooder.query(`select pg_notify('realtime_keys', 'x')`);
      hints++;
      if (!rotated && Date.now() - started > 1000) {
        rotated = true;
        await flooder.query(`select realtime.rotate_notify_key('0 seconds')`);
      }
    }
  })();
  let i = 0;
  while (Date.now() - started < 3000) {
    const reply = await alice.request({ type: 'publish', channel: 'room:1', event: 'tick', payload: { n: i + 1 }, ephemeral: true });
    if (reply.type === 'published') i++;
    await new Promise((resolve) => setTimeout(resolve, 20)); // pacing: about 50 a second, under the publish rate limit
  }
  await flood;
  await until(`all ${i} ephemeral events on the other instance`, () => bob.events().filter((f) => f['event'] === 'tick').length === i, 15_000);
  t.ok(hints > 100, `${hints} hints sent`);
  t.ok(reads <= 8, `daemon two read the key ${reads} times for ${hints} hints (at most one a second)`);
  t.equal(await metric(two.httpUrl, 'realtimed_notifications_dropped_total\\{reason="forged"\\}'), 0, 'nothing it should open was dropped');
});
