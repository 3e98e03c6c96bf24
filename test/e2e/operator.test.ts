/**
 * The operator's switches on a real daemon and real sockets: --idle-timeout
 * closes a socket that has no subscription (4010) and leaves subscribed ones
 * alone; --no-presence, --no-ephemeral and --no-client-publish refuse the
 * frames (and the HTTP publishes) they name with FEATURE_DISABLED, and only those.
 */
import t from 'tap';

import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { sign, userToken, ALICE } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';
import { settle, until } from '../helpers/wait.js';

async function rooms(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('room:%');
    create policy rooms_subscribe on realtime.channels for select to anon, authenticated, service_role using (true);
    create policy rooms_publish on realtime.messages for insert to anon, authenticated, service_role
      with check (realtime.channel_name() like 'room:%');`);
}

const post = async (httpUrl: string, token: string | undefined, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
  const res = await fetch(`${httpUrl}/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

t.test('--idle-timeout: a socket without a subscription is closed with 4010; a subscribed one is not', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { idleTimeoutMs: 400 });

  const started = Date.now();
  const idle = await TestClient.connect(t, wsUrl);
  const busy = await TestClient.connect(t, wsUrl);
  t.equal((await busy.subscribe('room:1')).type, 'subscribed');
  const closed = await idle.closed;
  t.equal(closed.code, 4010, 'the idle socket: close 4010');
  t.ok(Date.now() - started >= 380, `not before the timeout (${Date.now() - started} ms)`);

  // Something that must not happen: the subscribed socket outlives the timeout.
  await settle(700);
  t.equal(busy.ws.readyState, busy.ws.OPEN, 'a subscribed socket stays open past --idle-timeout');
  t.equal((await busy.request({ type: 'ping' })).type, 'pong');

  // Its last unsubscribe starts the timer again.
  const left = Date.now();
  await busy.request({ type: 'unsubscribe', channel: 'room:1' });
  t.equal((await busy.closed).code, 4010, 'after its last unsubscribe it is idle again: 4010');
  t.ok(Date.now() - left >= 380, 'counted from the unsubscribe');

  // A subscribe that is refused leaves the socket idle.
  const refused = await TestClient.connect(t, wsUrl);
  t.match(await refused.subscribe('nowhere:1'), { type: 'error', code: 'UNAUTHORIZED' });
  t.equal((await refused.closed).code, 4010, 'a refused subscribe does not keep a socket');

  // Refused subscribes, one after another, do not start the idle time again.
  // (Before the fix each refusal started it again, and a socket refused every 100 ms stayed forever.)
  const prober = await TestClient.connect(t, wsUrl);
  const since = Date.now();
  let refusals = 0;
  while (prober.ws.readyState === prober.ws.OPEN && Date.now() - since < 20_000) {
    const reply = await prober.subscribe('nowhere:1').catch(() => null);
    if (reply?.type === 'error') refusals++;
  }
  t.equal(prober.ws.readyState === prober.ws.OPEN, false, `closed while it kept subscribing (${refusals} refusals)`);
  t.equal((await prober.closed).code, 4010, 'with 4010');

  const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
  t.match(metrics, /realtimed_idle_closes_total 4/, 'counted in realtimed_idle_closes_total');
});

t.test('--idle-timeout 0 (the default): an idle socket stays', async (t) => {
  const db = await createDatabase(t);
  const { wsUrl } = await startDaemon(t, db, { idleTimeoutMs: 0 });
  const client = await TestClient.connect(t, wsUrl);
  await settle(500);
  t.equal(client.ws.readyState, client.ws.OPEN);
  t.equal((await client.request({ type: 'ping' })).type, 'pong');
});

t.test('--no-presence, --no-ephemeral, --no-client-publish: a read-only relay', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db, {
    roles: ['anon', 'authenticated', 'service_role'],
    allowPresence: false,
    allowEphemeral: false,
    allowClientPublish: false,
  });
  const client = await TestClient.connect(t, wsUrl);
  t.equal((await client.subscribe('room:1')).type, 'subscribed', 'subscribing still works');

  const presence = await client.request({ type: 'presence', channel: 'room:1', state: { online: true } });
  t.match(presence, { type: 'error', code: 'FEATURE_DISABLED', channel: 'room:1', feature: 'presence', ref: String });
  const ephemeral = await client.request({ type: 'publish', channel: 'room:1', event: 'typing', payload: {}, ephemeral: true });
  t.match(ephemeral, { type: 'error', code: 'FEATURE_DISABLED', channel: 'room:1', feature: 'ephemeral', ref: String });
  const stored = await client.request({ type: 'publish', channel: 'room:1', event: 'm', payload: {} });
  t.match(stored, { type: 'error', code: 'FEATURE_DISABLED', channel: 'room:1', feature: 'client_publish', ref: String });
  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.messages`);
  t.equal(rows[0]?.n, 0, 'nothing was stored');
  const { rows: members } = await db.pool.query(`select count(*)::int as n from realtime.presence`);
  t.equal(members[0]?.n, 0, 'no presence member');

  const alice = await userToken(ALICE);
  for (const [who, token] of [['anon', undefined], ['authenticated', alice]] as const) {
    const res = await post(httpUrl, token, { channel: 'room:1', event: 'm', payload: {} });
    t.match([res.status, res.body], [403, { error: 'FEATURE_DISABLED', channel: 'room:1', feature: 'client_publish' }], `${who}: POST /api/broadcast 403`);
    const eph = await post(httpUrl, token, { channel: 'room:1', event: 'm', payload: {}, ephemeral: true });
    t.match([eph.status, eph.body], [403, { error: 'FEATURE_DISABLED', feature: 'ephemeral' }], `${who}: ephemeral POST 403`);
  }
  // The admin role is a server, not a client: its publishes are relayed.
  const admin = await sign({ sub: 'ops', role: 'service_role' });
  const served = await post(httpUrl, admin, { channel: 'room:1', event: 'notice', payload: { n: 1 } });
  t.equal(served.status, 201, 'the admin role may still publish over HTTP');
  t.match(await client.next((f) => f.type === 'event'), { channel: 'room:1', event: 'notice', payload: { n: 1 } }, 'and subscribers get it');
  t.equal(client.ws.readyState, client.ws.OPEN, 'a refused frame never closes the socket');
});

t.test('one switch refuses only its own frames', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl } = await startDaemon(t, db, { allowClientPublish: false });
  const client = await TestClient.connect(t, wsUrl);
  await client.subscribe('room:1');
  t.match(await client.request({ type: 'publish', channel: 'room:1', event: 'm', payload: {} }), { code: 'FEATURE_DISABLED' });
  t.match(await client.request({ type: 'publish', channel: 'room:1', event: 't', payload: {}, ephemeral: true }), { type: 'published', ephemeral: true });
  t.match(await client.request({ type: 'presence', channel: 'room:1', state: { here: true } }), { type: 'presence_updated' });
  await until('the presence row', async () => (await db.pool.query(`select 1 from realtime.presence`)).rowCount === 1);
});
