/**
 * Limits: connections per instance and per user, new connections per second
 * per address, and the per-channel settings on realtime.channels
 * (max_subscribers, max_message_bytes, publish_rate, metadata). Each has its
 * error code and its /metrics counter.
 */
import t from 'tap';
import WebSocket from 'ws';

import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';
import { metric } from '../helpers/spawn.js';
import { settle } from '../helpers/wait.js';

async function rooms(db: TestDatabase, settings = ''): Promise<void> {
  await db.pool.query(`
    insert into realtime.channels (pattern${settings ? ', ' + settings.split('=')[0] : ''})
      values ('room:%'${settings ? ', ' + settings.split('=')[1] : ''});
    create policy rooms_subscribe on realtime.channels for select to anon, authenticated using (true);
    create policy rooms_publish on realtime.messages for insert to anon, authenticated
      with check (realtime.channel_name() like 'room:%');`);
}

const rejections = (httpUrl: string, limit: string): Promise<number> =>
  metric(httpUrl, `realtimed_limit_rejections_total\\{limit="${limit}"\\}`);

t.test('--max-connections: the socket past it gets LIMIT_EXCEEDED and 4029', async (t) => {
  const db = await createDatabase(t);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { maxConnections: 2 });
  const one = await TestClient.connect(t, wsUrl);
  await TestClient.connect(t, wsUrl);
  const third = await TestClient.connect(t, wsUrl);
  t.match(await third.next(), { type: 'error', code: 'LIMIT_EXCEEDED', limit: 'connections' });
  t.equal((await third.closed).code, 4029);
  t.equal(await rejections(httpUrl, 'connections'), 1);
  one.ws.close();
  await one.closed;
  await settle(100);
  const again = await TestClient.connect(t, wsUrl);
  t.equal((await again.request({ type: 'ping' })).type, 'pong', 'a freed slot takes a new socket');
});

t.test('--max-connections-per-user: counted per token sub, freed on close', async (t) => {
  const db = await createDatabase(t);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { maxConnectionsPerUser: 2 });
  const token = await userToken(ALICE);
  const first = await TestClient.connect(t, wsUrl, { token });
  await TestClient.connect(t, wsUrl, { token });
  const third = await TestClient.connect(t, wsUrl, { token });
  t.match(await third.next(), { type: 'error', code: 'LIMIT_EXCEEDED' });
  t.equal((await third.closed).code, 4029, 'the third tab of alice is closed with 4029');
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  t.equal((await bob.request({ type: 'ping' })).type, 'pong', 'bob is not affected');
  const anons = await Promise.all([1, 2, 3].map(() => TestClient.connect(t, wsUrl)));
  t.equal((await anons[2]?.request({ type: 'ping' }))?.type, 'pong', 'connections without a sub are not counted per user');
  first.ws.close();
  await first.closed;
  await settle(100);
  const later = await TestClient.connect(t, wsUrl, { token });
  t.equal((await later.request({ type: 'ping' })).type, 'pong', 'after one closes, alice may connect again');
  t.equal(await rejections(httpUrl, 'user_connections'), 1);
});

t.test('--connect-rate: past the burst, the upgrade is refused with 429 and RATE_LIMITED', async (t) => {
  const db = await createDatabase(t);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { connectRate: 2 });
  for (let i = 0; i < 4; i++) await TestClient.connect(t, wsUrl);
  const refused = await new Promise<{ status: number; body: string; retry: string | undefined }>((resolve) => {
    const ws = new WebSocket(wsUrl);
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, retry: res.headers['retry-after'] as string | undefined }));
    });
    ws.on('error', () => {});
  });
  t.equal(refused.status, 429, 'the fifth connection within a second (burst 2 x rate)');
  t.match(JSON.parse(refused.body), { error: 'RATE_LIMITED' });
  t.match(refused.retry, /^\d+$/, 'with Retry-After');
  t.equal(await rejections(httpUrl, 'connect_rate'), 1);
});

t.test('channel max_subscribers: counted per channel name; an unsubscribe frees a place', async (t) => {
  const db = await createDatabase(t);
  await rooms(db, 'max_subscribers=2');
  const { wsUrl, httpUrl } = await startDaemon(t, db);
  const a = await TestClient.connect(t, wsUrl);
  const b = await TestClient.connect(t, wsUrl);
  const c = await TestClient.connect(t, wsUrl);
  t.equal((await a.subscribe('room:1')).type, 'subscribed');
  t.equal((await b.subscribe('room:1')).type, 'subscribed');
  t.match(await c.subscribe('room:1'), { type: 'error', code: 'LIMIT_EXCEEDED', limit: 'channel_subscribers', channel: 'room:1' });
  t.equal((await c.subscribe('room:2')).type, 'subscribed', 'another name of the same pattern has its own count');
  await a.request({ type: 'unsubscribe', channel: 'room:1' });
  t.equal((await c.subscribe('room:1')).type, 'subscribed', 'after an unsubscribe there is room');
  await db.pool.query(`select realtime.publish('room:1', 'e', '{}')`);
  await b.next((f) => f.type === 'event');
  await c.next((f) => f.type === 'event');
  t.pass('the refused subscriber never joined the hub; the admitted ones get events');
  t.equal(await rejections(httpUrl, 'channel_subscribers'), 1);
});

t.test('channel max_subscribers holds across two instances', async (t) => {
  const db = await createDatabase(t);
  await rooms(db, 'max_subscribers=2');
  const one = await startDaemon(t, db, { statsIntervalMs: 100 });
  const two = await startDaemon(t, db, { statsIntervalMs: 100 });
  const a = await TestClient.connect(t, one.wsUrl);
  const b = await TestClient.connect(t, two.wsUrl);
  const c = await TestClient.connect(t, one.wsUrl);
  t.equal((await a.subscribe('room:1')).type, 'subscribed', 'one on the first instance');
  t.equal((await b.subscribe('room:1')).type, 'subscribed', 'one on the second');
  await settle(400); // a report interval or more
  t.match(await c.subscribe('room:1'), { type: 'error', code: 'LIMIT_EXCEEDED', limit: 'channel_subscribers' },
    'a third on the first instance: the second one\'s subscriber counts');
  await b.request({ type: 'unsubscribe', channel: 'room:1' });
  await settle(400);
  t.equal((await c.subscribe('room:1')).type, 'subscribed', 'after the other instance\'s unsubscribe is reported, there is room');
  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.channel_subscribers where channel_name = 'room:1'`);
  t.equal(rows[0]?.n, 1, 'only the instance with subscribers reports the channel');
});

t.test('channel max_message_bytes and publish_rate; an UPDATE of the row applies at once', async (t) => {
  const db = await createDatabase(t);
  await rooms(db, 'max_message_bytes=32');
  await db.pool.query(`update realtime.channels set publish_rate = 2, metadata = '{"plan": "free"}' where pattern = 'room:%'`);
  const { wsUrl, httpUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('room:1');
  t.match(await alice.request({ type: 'publish', channel: 'room:1', event: 'e', payload: { text: 'x'.repeat(40) } }),
    { type: 'error', code: 'PAYLOAD_TOO_LARGE', channel: 'room:1' }, 'over the channel\'s 32 bytes (enforced in SQL)');
  t.match(await alice.request({ type: 'publish', channel: 'room:1', event: 'e', payload: { text: 'x'.repeat(40) }, ephemeral: true }),
    { type: 'error', code: 'PAYLOAD_TOO_LARGE' }, 'ephemeral messages too');
  const types = [];
  for (let i = 0; i < 3; i++) types.push((await alice.request({ type: 'publish', channel: 'room:1', event: 'e', payload: {} })).type);
  t.same(types, ['published', 'error', 'error'], 'publish_rate 2: the burst is 2 (one was taken above)');
  t.match(alice.frames, [], 'no stray frames');
  t.equal(await rejections(httpUrl, 'message_bytes'), 2, 'both oversized payloads counted');
  t.ok(await rejections(httpUrl, 'channel_publish_rate') >= 1);

  await db.pool.query(`update realtime.channels set publish_rate = 1000, max_message_bytes = null where pattern = 'room:%'`);
  await settle(400);
  const after = [];
  for (let i = 0; i < 5; i++) after.push((await alice.request({ type: 'publish', channel: 'room:1', event: 'e', payload: { text: 'x'.repeat(40) } })).type);
  t.same(after, ['published', 'published', 'published', 'published', 'published'], 'the new settings apply to the open subscription');
  const { rows } = await db.pool.query(`select metadata from realtime.channels where pattern = 'room:%'`);
  t.same(rows[0]?.metadata, { plan: 'free' }, 'metadata is kept for the DBA');
});
