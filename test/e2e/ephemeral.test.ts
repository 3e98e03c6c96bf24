/**
 * Ephemeral messages: authorized by the INSERT policies, delivered to the
 * subscribers of every instance, never stored or replayed, with their own
 * rate; a notification forged by another database role is dropped, and one
 * it captured can neither be read nor sent again.
 */
import pg from 'pg';
import t from 'tap';

import { createDatabase, createLoginRole, urlFor, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';
import { metric } from '../helpers/spawn.js';
import { settle, until } from '../helpers/wait.js';

async function rooms(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('room:%'), ('lobby:%');
    create policy rooms_subscribe on realtime.channels for select to anon, authenticated using (true);
    create policy rooms_publish on realtime.messages for insert to anon, authenticated
      with check (realtime.channel_name() like 'room:%');`);
}

t.test('delivered on every instance, never stored, never replayed', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const one = await startDaemon(t, db);
  const two = await startDaemon(t, db);
  const alice = await TestClient.connect(t, one.wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, two.wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('room:1');
  await bob.subscribe('room:1');
  const reply = await alice.request({ type: 'publish', channel: 'room:1', event: 'typing', payload: { on: true }, ephemeral: true });
  t.same(reply, { type: 'published', channel: 'room:1', ref: reply['ref'], ephemeral: true }, 'published: no messageId, no seq');
  const event = await bob.next((f) => f.type === 'event');
  t.match(event, {
    type: 'event', channel: 'room:1', event: 'typing', payload: { on: true },
    meta: { ephemeral: true, senderType: 'user', senderId: ALICE, timestamp: /^\d{4}-/ },
  }, 'bob, on the other instance, gets it with meta.ephemeral');
  t.notOk('seq' in (event['meta'] as object), 'an ephemeral event has no seq');
  await alice.next((f) => f.type === 'event');
  t.pass('the sender, subscribed, gets it too');

  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.messages`);
  t.equal(rows[0]?.n, 0, 'nothing was stored');
  const late = await TestClient.connect(t, two.wsUrl, { token: await userToken(BOB) });
  await late.request({ type: 'subscribe', channel: 'room:1', since: 0 });
  await settle(300);
  t.same(late.events(), [], 'a replay has nothing to send');
});

t.test('the INSERT policies decide; bad frames are refused', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  t.match(await alice.request({ type: 'publish', channel: 'room:2', event: 'e', payload: {}, ephemeral: true }),
    { type: 'error', code: 'NOT_SUBSCRIBED' });
  await alice.subscribe('lobby:1');
  t.match(await alice.request({ type: 'publish', channel: 'lobby:1', event: 'e', payload: {}, ephemeral: true }),
    { type: 'error', code: 'UNAUTHORIZED', channel: 'lobby:1' }, 'denied by the INSERT policies, as a stored publish would be');
  await alice.subscribe('room:2');
  t.match(await alice.request({ type: 'publish', channel: 'room:2', event: 'e', payload: {}, ephemeral: true, dedupeKey: 'k' }),
    { type: 'error', code: 'INVALID_MESSAGE' }, 'an ephemeral message takes no dedupe key');
  t.match(await alice.request({ type: 'publish', channel: 'room:2', event: 'e', payload: {}, ephemeral: 'yes' }),
    { type: 'error', code: 'INVALID_MESSAGE' });
  t.match(await alice.request({ type: 'publish', channel: 'room:2', event: 'e', payload: { x: 'y'.repeat(8000) }, ephemeral: true }),
    { type: 'error', code: 'PAYLOAD_TOO_LARGE' }, 'it must fit in one notification');
});

t.test('ephemeral messages have their own rate, not the stored-message rate', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl } = await startDaemon(t, db, { publishRate: 2, ephemeralRate: 50 });
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('room:3');
  const stored = [];
  for (let i = 0; i < 4; i++) stored.push((await alice.request({ type: 'publish', channel: 'room:3', event: 'e', payload: {} })).type);
  t.same(stored, ['published', 'published', 'error', 'error'], 'stored: 2 per second');
  const ephemeral = [];
  for (let i = 0; i < 20; i++) {
    ephemeral.push((await alice.request({ type: 'publish', channel: 'room:3', event: 'e', payload: {}, ephemeral: true })).type);
  }
  t.ok(ephemeral.every((type) => type === 'published'), 'ephemeral: 20 in a row, all published');
});

t.test('a notification forged by another database role is dropped', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db);
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await bob.subscribe('room:4');
  // Any role that can connect can NOTIFY: an application role tries.
  const intruder = await createLoginRole(t, []);
  const client = new pg.Client({ connectionString: urlFor(db.name, undefined, intruder) });
  await client.connect();
  t.teardown(() => client.end());
  const frame = JSON.stringify({ type: 'event', channel: 'room:4', event: 'e', payload: { forged: true }, meta: { ephemeral: true } });
  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [JSON.stringify({ v: 1, channel: 'room:4', frame, sig: 'x'.repeat(43) })]);
  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [JSON.stringify({ v: 1, channel: 'room:4', frame })]);
  await client.query(`select pg_notify('realtime_ephemeral', 'not json')`);
  // Counted once the daemon has judged them (an unopened one waits for a key read in progress, at most a second).
  await until('three counted as forged', async () => (await metric(httpUrl, 'realtimed_notifications_dropped_total\\{reason="forged"\\}')) === 3);
  t.same(bob.events(), [], 'nothing reached the subscriber');
});

t.test('another database role can neither read an ephemeral message nor send it again (finding 6)', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('room:5');
  await bob.subscribe('room:5');
  // An application role LISTENs where the instances talk.
  const eavesdropper = await createLoginRole(t, []);
  const client = new pg.Client({ connectionString: urlFor(db.name, undefined, eavesdropper) });
  await client.connect();
  t.teardown(() => client.end());
  const heard: string[] = [];
  client.on('notification', (n) => heard.push(n.payload ?? ''));
  await client.query('listen realtime_ephemeral');
  await alice.request({ type: 'publish', channel: 'room:5', event: 'whisper', payload: { text: 'the secret words' }, ephemeral: true });
  await bob.next((f) => f.type === 'event' && f['event'] === 'whisper');
  await client.query('select 1');
  const captured = heard[0];
  t.ok(captured, 'the role heard the notification');
  t.notMatch(captured ?? '', /secret|whisper|room:5/, 'but it reads none of it: channel, event and payload are sealed');

  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [captured]);
  await client.query(`select pg_notify('realtime_ephemeral', $1)`, [captured]);
  await settle(400);
  t.same(bob.events(), [], 'sent again, it reaches nobody');
  t.equal(await metric(httpUrl, 'realtimed_notifications_dropped_total\\{reason="replayed"\\}'), 2, 'both counted as replayed');
});
