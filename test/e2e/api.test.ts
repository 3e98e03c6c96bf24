/**
 * The HTTP API (docs/http.md) against real PostgreSQL: every route, as anon,
 * as a signed-in user, as the admin role, and with forged and expired
 * tokens. The database decides; the codes and statuses are the contract.
 */
import t from 'tap';

import { createDatabase, type Teardown, type TestDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, sign, unsignedToken, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';
import { until } from '../helpers/wait.js';

type Json = Record<string, unknown>;

async function call(
  base: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; raw?: string } = {},
): Promise<{ status: number; body: Json }> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
  if (options.body !== undefined || options.raw !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    ...(options.raw !== undefined ? { body: options.raw } : options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? {} : (JSON.parse(text) as Json) };
}

const admin = (): Promise<string> => sign({ sub: 'ops', role: 'service_role' });

async function setup(t: Teardown): Promise<{ db: TestDatabase; httpUrl: string; wsUrl: string }> {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { httpUrl, wsUrl } = await startDaemon(t, db, { roles: ['anon', 'authenticated', 'service_role'] });
  return { db, httpUrl, wsUrl };
}

t.test('POST /api/broadcast: publishes under the caller\'s INSERT policies', async (t) => {
  const { db, httpUrl, wsUrl } = await setup(t);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('chat:7');
  const ok = await call(httpUrl, 'POST', '/api/broadcast', {
    token: await userToken(ALICE), body: { channel: 'chat:7', event: 'message', payload: { text: 'over HTTP' } },
  });
  t.equal(ok.status, 201);
  t.match(ok.body, { channel: 'chat:7', messageId: /^[0-9a-f-]{36}$/, seq: Number });
  t.match(await alice.next((f) => f.type === 'event'), { channel: 'chat:7', payload: { text: 'over HTTP' }, meta: { senderId: ALICE } },
    'subscribers get it like any message');
  const { rows } = await db.pool.query(`select sender_type, sender_id from realtime.messages where id = $1`, [ok.body['messageId']]);
  t.same(rows[0], { sender_type: 'user', sender_id: ALICE }, 'stored as the user\'s message, not a system one');

  const again = await call(httpUrl, 'POST', '/api/broadcast', {
    token: await userToken(ALICE), body: { channel: 'chat:7', event: 'message', payload: {}, dedupeKey: 'k1' },
  });
  const repeat = await call(httpUrl, 'POST', '/api/broadcast', {
    token: await userToken(ALICE), body: { channel: 'chat:7', event: 'message', payload: {}, dedupeKey: 'k1' },
  });
  t.same([again.status, repeat.status, repeat.body['duplicate']], [201, 200, true], 'a repeated dedupe key: 200, duplicate');

  const eph = await call(httpUrl, 'POST', '/api/broadcast', {
    token: await userToken(ALICE), body: { channel: 'chat:7', event: 'typing', payload: {}, ephemeral: true },
  });
  t.same([eph.status, eph.body], [202, { channel: 'chat:7', ephemeral: true }], 'ephemeral: 202, nothing stored');
  t.match(await alice.next((f) => f.type === 'event' && f['event'] === 'typing'), { meta: { ephemeral: true } });

  const cases: [string, Promise<{ status: number; body: Json }>, number, string][] = [
    ['bob may not post to chat:7', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(BOB), body: { channel: 'chat:7', event: 'm' } }), 403, 'UNAUTHORIZED'],
    ['anon may not either', call(httpUrl, 'POST', '/api/broadcast', { body: { channel: 'chat:7', event: 'm' } }), 403, 'UNAUTHORIZED'],
    ['no channel matches', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(ALICE), body: { channel: 'nowhere:1', event: 'm' } }), 403, 'UNAUTHORIZED'],
    ['not JSON', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(ALICE), raw: '{nope' }), 400, 'INVALID_MESSAGE'],
    ['no channel', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(ALICE), body: { event: 'm' } }), 400, 'INVALID_MESSAGE'],
    ['payload not an object', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(ALICE), body: { channel: 'chat:7', event: 'm', payload: [1] } }), 400, 'INVALID_MESSAGE'],
    ['a body over --max-frame-bytes', call(httpUrl, 'POST', '/api/broadcast', { token: await userToken(ALICE), body: { channel: 'chat:7', event: 'm', payload: { x: 'y'.repeat(200_000) } } }), 413, 'PAYLOAD_TOO_LARGE'],
    ['a forged token', call(httpUrl, 'POST', '/api/broadcast', { token: unsignedToken({ sub: ALICE, role: 'authenticated' }), body: { channel: 'chat:7', event: 'm' } }), 401, 'UNAUTHORIZED'],
    ['an expired token', call(httpUrl, 'POST', '/api/broadcast', { token: await sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: -10 }), body: { channel: 'chat:7', event: 'm' } }), 401, 'TOKEN_EXPIRED'],
    ['GET is not allowed', call(httpUrl, 'GET', '/api/broadcast', { token: await userToken(ALICE) }), 405, 'METHOD_NOT_ALLOWED'],
    ['an unknown route', call(httpUrl, 'GET', '/api/nope'), 404, 'NOT_FOUND'],
  ];
  for (const [why, request, status, code] of cases) {
    const res = await request;
    t.same([res.status, res.body['error']], [status, code], `${why}: ${status} ${code}`);
    t.type(res.body['message'], 'string');
  }
});

t.test('/api/channels: the admin role only, and the database checks each row', async (t) => {
  const { httpUrl } = await setup(t);
  for (const [who, token] of [['anon', undefined], ['alice', await userToken(ALICE)]] as const) {
    const res = await call(httpUrl, 'GET', '/api/channels', token === undefined ? {} : { token });
    t.same([res.status, res.body['error']], [403, 'UNAUTHORIZED'], `${who}: 403`);
  }
  const token = await admin();
  const created = await call(httpUrl, 'POST', '/api/channels', {
    token, body: { pattern: 'game:%', description: 'games', max_subscribers: 50, publish_rate: 5, metadata: { tier: 'pro' }, webhook_urls: [] },
  });
  t.equal(created.status, 201);
  t.match(created.body, { id: /^[0-9a-f-]{36}$/, pattern: 'game:%', max_subscribers: 50, publish_rate: 5, metadata: { tier: 'pro' }, enabled: true });
  const id = created.body['id'] as string;
  t.same([(await call(httpUrl, 'POST', '/api/channels', { token, body: { pattern: 'game:%' } })).status], [409], 'the same pattern again: 409 CONFLICT');
  const bad = await call(httpUrl, 'POST', '/api/channels', { token, body: { pattern: 'has space' } });
  t.same([bad.status, bad.body['error']], [400, 'INVALID_MESSAGE'], 'an invalid pattern: the CHECK constraint, 400');
  const unknown = await call(httpUrl, 'POST', '/api/channels', { token, body: { pattern: 'x:%', owner: 'me' } });
  t.same([unknown.status, unknown.body['error']], [400, 'INVALID_MESSAGE'], 'an unknown field: 400');

  const list = await call(httpUrl, 'GET', '/api/channels', { token });
  t.ok((list.body['channels'] as Json[]).some((c) => c['pattern'] === 'game:%'), 'GET lists it');
  t.match((await call(httpUrl, 'GET', `/api/channels/${id}`, { token })).body, { pattern: 'game:%' }, 'GET one by id');
  const patched = await call(httpUrl, 'PATCH', `/api/channels/${id}`, { token, body: { enabled: false, max_subscribers: null } });
  t.match([patched.status, patched.body], [200, { enabled: false, max_subscribers: null }], 'PATCH');
  t.equal((await call(httpUrl, 'PATCH', '/api/channels/00000000-0000-4000-8000-000000000000', { token, body: { enabled: true } })).status, 404);
  t.equal((await call(httpUrl, 'DELETE', `/api/channels/${id}`, { token })).status, 204, 'DELETE');
  t.equal((await call(httpUrl, 'DELETE', `/api/channels/${id}`, { token })).status, 404, 'gone');
});

t.test('GET /api/channels/:name/messages: the SELECT policies on realtime.messages decide', async (t) => {
  const { db, httpUrl } = await setup(t);
  for (let i = 1; i <= 5; i++) await db.pool.query(`select realtime.publish('chat:7', 'notice', jsonb_build_object('n', $1::int))`, [i]);
  await db.pool.query(`select realtime.publish('order:1', 'status_changed', '{}')`);

  const all = await call(httpUrl, 'GET', '/api/channels/chat:7/messages', { token: await admin() });
  t.equal(all.status, 200);
  t.same((all.body['messages'] as Json[]).map((m) => (m['payload'] as Json)['n']), [1, 2, 3, 4, 5], 'the admin role\'s policy shows all, in seq order');
  const page = await call(httpUrl, 'GET', `/api/channels/chat%3A7/messages?since=${(all.body['messages'] as Json[])[1]?.['meta'] ? ((all.body['messages'] as Json[])[1]?.['meta'] as Json)['seq'] : 0}&limit=2`, { token: await admin() });
  t.same((page.body['messages'] as Json[]).map((m) => (m['payload'] as Json)['n']), [3, 4], 'since and limit page through');
  t.equal(page.body['next'], ((page.body['messages'] as Json[])[1]?.['meta'] as Json)['seq'], 'next is the last seq');

  const alice = await call(httpUrl, 'GET', '/api/channels/chat:7/messages', { token: await userToken(ALICE) });
  t.same([alice.status, alice.body['error']], [403, 'UNAUTHORIZED'], 'without a SELECT grant on realtime.messages: 403');
  await db.pool.query(`
    grant select on realtime.messages to authenticated;
    create policy members_read_chat on realtime.messages for select to authenticated
      using (split_part(channel_name, ':', 1) = 'chat' and app.is_chat_member(split_part(channel_name, ':', 2)));`);
  const member = await call(httpUrl, 'GET', '/api/channels/chat:7/messages', { token: await userToken(ALICE) });
  t.equal((member.body['messages'] as Json[]).length, 5, 'with a grant and a policy: the member reads the history');
  const stranger = await call(httpUrl, 'GET', '/api/channels/chat:7/messages', { token: await userToken(BOB) });
  t.same([stranger.status, stranger.body['messages']], [200, []], 'a non-member: no rows');
  const orders = await call(httpUrl, 'GET', '/api/channels/order:1/messages', { token: await userToken(ALICE) });
  t.same(orders.body['messages'], [], 'another channel: no rows');
  const badSince = await call(httpUrl, 'GET', '/api/channels/chat:7/messages?since=-1', { token: await admin() });
  t.same([badSince.status, badSince.body['error']], [400, 'INVALID_MESSAGE']);
  const badLimit = await call(httpUrl, 'GET', '/api/channels/chat:7/messages?limit=5000', { token: await admin() });
  t.same([badLimit.status, badLimit.body['error']], [400, 'INVALID_MESSAGE']);
});

t.test('GET /api/stats: the channels the caller may see; this instance to the admin role only', async (t) => {
  const { db, httpUrl, wsUrl } = await setup(t);
  await db.pool.query(`select realtime.publish('orders', 'tick', '{}')`);
  await TestClient.connect(t, wsUrl);
  const anon = await call(httpUrl, 'GET', '/api/stats');
  t.equal(anon.status, 200);
  t.same((anon.body['channels'] as Json[]).map((c) => c['pattern']), ['orders'], 'anon sees the rows its SELECT policies show');
  t.equal(anon.body['instance'], undefined, 'anon is not told about the instance');
  t.equal((anon.body['perMinute'] as Json[]).length, 30, 'messages per minute, last 30 minutes');
  const ops = await call(httpUrl, 'GET', '/api/stats', { token: await admin() });
  t.ok((ops.body['channels'] as Json[]).length >= 3, 'the admin role sees every channel');
  t.match(ops.body['instance'], { id: /^[0-9a-f-]{36}$/, connections: 1, subscriptions: 0 }, 'and this instance');
  t.equal((await call(httpUrl, 'GET', '/api/stats', { token: 'x.y.z' })).status, 401, 'a bad token: 401');
  const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
  t.match(metrics, /realtimed_http_api_requests_total\{route="stats",status="200"\} 2/, 'requests are counted by route and status');
});

t.test('docs/openapi.yaml describes the routes the server serves, with its error codes', async (t) => {
  const { parse } = await import('yaml');
  const { readFile } = await import('node:fs/promises');
  const spec = parse(await readFile(new URL('../../docs/openapi.yaml', import.meta.url), 'utf8')) as {
    openapi: string;
    paths: Record<string, Record<string, unknown>>;
    components: { schemas: { Error: { properties: { error: { enum: string[] } } } } };
  };
  t.match(spec.openapi, /^3\./);
  const { httpUrl } = await setup(t);
  const token = await admin();
  const methods = ['get', 'post', 'patch', 'delete'];
  for (const [path, item] of Object.entries(spec.paths)) {
    const concrete = path
      .replace('{id}', '00000000-0000-4000-8000-000000000000')
      .replace('{name}', 'chat:7')
      .replace('{table}', 'public.nope');
    for (const method of methods.filter((m) => m in item)) {
      const res = await call(httpUrl, method.toUpperCase(), concrete, { token, ...(method === 'get' || method === 'delete' ? {} : { body: {} }) });
      const unrouted = res.status === 404 && String(res.body['message']).startsWith(`no ${method.toUpperCase()} `);
      t.notOk(unrouted || res.status === 405, `${method.toUpperCase()} ${path} is served (${res.status})`);
      const documented = Object.keys((item[method] as { responses: Record<string, unknown> }).responses);
      t.ok(documented.includes(String(res.status)), `${method.toUpperCase()} ${path}: ${res.status} is documented`);
    }
  }
  const codes = spec.components.schemas.Error.properties.error.enum;
  const doc = await readFile(new URL('../../docs/http.md', import.meta.url), 'utf8');
  for (const code of codes) t.ok(doc.includes(`\`${code}\``), `${code} is in docs/http.md`);
});

t.test('POST /api/broadcast has the rates a socket has, per token identity: 429 with Retry-After (finding 5)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { httpUrl } = await startDaemon(t, db, { publishRate: 5, ephemeralRate: 3 });
  await db.pool.query(`update realtime.channels set publish_rate = 1 where pattern = 'chat:%'`);
  const post = async (token: string, body: Json): Promise<Response> =>
    fetch(`${httpUrl}/api/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const alice = await userToken(ALICE);
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) statuses.push((await post(alice, { channel: 'chat:7', event: 'm', payload: { i } })).status);
  t.equal(statuses.filter((s) => s === 201).length, 1, 'the channel\'s publish_rate of 1/s: one of 20 is written');
  const limited = await post(alice, { channel: 'chat:7', event: 'm', payload: {} });
  t.equal(limited.status, 429);
  t.match(await limited.json(), { error: 'RATE_LIMITED', retryAfter: Number });
  t.match(limited.headers.get('retry-after'), /^\d+$/, 'with Retry-After');
  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.messages where event_name = 'm'`);
  t.equal(rows[0]?.n, 1, 'nothing else was written');

  await db.pool.query(`insert into realtime.channels (pattern) values ('open:%');
    create policy "open: anyone signed in" on realtime.messages for insert to authenticated with check (realtime.channel_name() like 'open:%')`);
  const bob = await userToken(BOB);
  const many: number[] = [];
  for (let i = 0; i < 12; i++) many.push((await post(bob, { channel: 'open:1', event: 'm', payload: {} })).status);
  t.ok(many.filter((s) => s === 201).length <= 6 && many.includes(429), `--publish-rate 5 per identity: ${many.join(',')}`);
  const carol = await userToken('c0c00000-0000-4000-8000-000000000003');
  t.equal((await post(carol, { channel: 'open:1', event: 'm', payload: {} })).status, 201, 'another identity has its own budget');
  const ephemeral: number[] = [];
  for (let i = 0; i < 8; i++) ephemeral.push((await post(alice, { channel: 'open:1', event: 'e', payload: {}, ephemeral: true })).status);
  t.ok(ephemeral.filter((s) => s === 202).length <= 4 && ephemeral.includes(429), `--ephemeral-rate 3: ${ephemeral.join(',')}`);
});

t.test('bodies: nested deeper than 64 levels is 400; over the limit is 413 and the rest is not read (findings 8c, 8d)', async (t) => {
  const { httpUrl } = await setup(t);
  const token = await userToken(ALICE);
  let deep: unknown = {};
  for (let i = 0; i < 70; i++) deep = { d: deep };
  const nested = await call(httpUrl, 'POST', '/api/broadcast', { token, body: { channel: 'chat:7', event: 'm', payload: deep } });
  t.same([nested.status, nested.body['error']], [400, 'INVALID_MESSAGE'], 'deep JSON: 400, not 503');
  const bad = await call(httpUrl, 'GET', '/api/channels/%E0%A4%A/messages', { token });
  t.same([bad.status, bad.body['error']], [400, 'INVALID_MESSAGE'], 'a path that is not valid percent-encoding: 400, not 503');

  // 100 MB announced: the answer comes at once and the connection closes; the body is never read to its end.
  const { connect } = await import('node:net');
  const url = new URL(httpUrl);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  t.teardown(() => socket.destroy());
  let reply = '';
  let written = 0;
  const closed = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => (reply += d.toString()));
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  socket.write(`POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const writing = (async () => {
    while (!socket.destroyed && written < 100_000_000) {
      if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve).once('close', resolve));
      written += chunk.length;
    }
  })();
  await closed;
  await writing;
  t.match(reply, /^HTTP\/1\.1 413 /, 'the client read the 413');
  t.ok(written < 20_000_000, `the server closed the connection after ${(written / 1e6).toFixed(1)} MB of the 100 MB announced`);
});

t.test('GET /metrics with --metrics-token: that bearer only (finding 8b)', async (t) => {
  const db = await createDatabase(t);
  const { httpUrl } = await startDaemon(t, db, { metricsToken: 'metrics-token-0123456789' });
  t.equal((await fetch(`${httpUrl}/metrics`)).status, 401, 'no token: 401');
  t.equal((await fetch(`${httpUrl}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401, 'another: 401');
  const ok = await fetch(`${httpUrl}/metrics`, { headers: { authorization: 'Bearer metrics-token-0123456789' } });
  t.equal(ok.status, 200);
  t.match(await ok.text(), /realtimed_connections/);
});

t.test('GET /api/connections and /api/subscriptions: the admin role; this instance live, every instance from the database', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`update realtime.channels set max_subscribers = 100 where pattern = 'orders'`);
  const roles = ['anon', 'authenticated', 'service_role'];
  const a = await startDaemon(t, db, { roles, statsIntervalMs: 50 });
  const b = await startDaemon(t, db, { roles, statsIntervalMs: 50 });
  const token = await admin();

  for (const path of ['/api/connections', '/api/subscriptions']) {
    for (const [who, auth] of [['anon', undefined], ['authenticated', await userToken(ALICE)]] as const) {
      const res = await call(a.httpUrl, 'GET', path, auth === undefined ? {} : { token: auth });
      t.same([res.status, res.body['error']], [403, 'UNAUTHORIZED'], `${path} as ${who}: 403`);
    }
    t.same((await call(a.httpUrl, 'GET', path, { token: 'x.y.z' })).status, 401, `${path} with a bad token: 401`);
    t.same((await call(a.httpUrl, 'POST', path, { token, body: {} })).status, 405, `POST ${path}: 405`);
    for (const query of ['limit=0', 'limit=1001', 'limit=abc', 'limit=-1', 'limit=1.5', 'cursor=', 'cursor=zzz', `cursor=${'x'.repeat(2000)}`]) {
      const res = await call(a.httpUrl, 'GET', `${path}?${query}`, { token });
      t.same([res.status, res.body['error']], [400, 'INVALID_MESSAGE'], `${path}?${query.slice(0, 20)}: 400`);
    }
  }

  const alice = await TestClient.connect(t, a.wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('chat:7');
  const reader = await TestClient.connect(t, a.wsUrl);
  await reader.subscribe('orders');
  await TestClient.connect(t, a.wsUrl); // connected, no subscription
  const elsewhere = await TestClient.connect(t, b.wsUrl);
  await elsewhere.subscribe('orders');
  await db.pool.query(`select realtime.publish('orders', 'tick', '{}')`);
  await reader.next((f) => f.type === 'event');

  const subs = await call(a.httpUrl, 'GET', '/api/subscriptions', { token });
  t.equal(subs.status, 200);
  const list = subs.body['subscriptions'] as Json[];
  t.equal(list.length, 2, 'this instance\'s two subscriptions, not the other instance\'s');
  const self = subs.body['instance'];
  t.match(list.find((s) => s['channel'] === 'orders'), { instance: self, role: 'anon', sub: null, since: String, lastEventAt: String, eventsDelivered: 1 },
    'the reader: one event delivered, and when');
  t.match(list.find((s) => s['channel'] === 'chat:7'), { role: 'authenticated', sub: ALICE, lastEventAt: null, eventsDelivered: 0 });
  t.equal(subs.body['next'], null, 'one page');

  // The other instance's report reaches the database within its --stats-interval.
  const instances = await until('the other instance\'s report', async () => {
    const res = await call(a.httpUrl, 'GET', '/api/subscriptions', { token });
    const rows = res.body['instances'] as Json[];
    return rows.length === 2 && rows.some((i) => i['self'] === false && i['countedSubscribers'] === 1) ? rows : undefined;
  });
  t.match(instances.find((i) => i['self'] === true), { id: self, pid: process.pid, startedAt: String, heartbeatAt: String });

  const first = await call(a.httpUrl, 'GET', '/api/subscriptions?limit=1', { token });
  t.equal((first.body['subscriptions'] as Json[]).length, 1);
  t.type(first.body['next'], 'string', 'limit 1 of 2: a next cursor');
  const second = await call(a.httpUrl, 'GET', `/api/subscriptions?limit=1&cursor=${encodeURIComponent(first.body['next'] as string)}`, { token });
  t.equal(second.body['next'], null, 'the last page');
  t.same(
    [...(first.body['subscriptions'] as Json[]), ...(second.body['subscriptions'] as Json[])].map((s) => s['channel']).sort(),
    ['chat:7', 'orders'],
    'the pages cover each subscription once',
  );

  const conns = await call(a.httpUrl, 'GET', '/api/connections?limit=2', { token });
  t.equal(conns.status, 200);
  t.equal((conns.body['connections'] as Json[]).length, 2);
  t.match(conns.body['next'], /^[0-9a-f-]{36}$/);
  const rest = await call(a.httpUrl, 'GET', `/api/connections?limit=2&cursor=${conns.body['next'] as string}`, { token });
  t.equal(rest.body['next'], null);
  const all = [...(conns.body['connections'] as Json[]), ...(rest.body['connections'] as Json[])];
  t.equal(all.length, 3, 'this instance\'s three sockets over two pages');
  t.same(all.map((c) => c['subscriptions']).sort(), [0, 1, 1], 'with their subscription counts');
  t.match(all.find((c) => c['sub'] === ALICE), { role: 'authenticated', instance: self, connectedAt: String, lastFrameAt: String, bufferedBytes: 0 });
  t.equal((rest.body['instances'] as Json[]).length, 2, 'and every instance in the database');
});

t.test('POST /api/changes and DELETE /api/changes/{table}: realtime.enable_changes and disable_changes as the admin role', async (t) => {
  const { db, httpUrl } = await setup(t);
  await db.pool.query(`
    create table app.things (id int primary key, name text, secret text);
    alter table app.things owner to service_role;
    create table app.keyless (n int);
    alter table app.keyless owner to service_role;
    create view app.things_view as select id from app.things;
    alter view app.things_view owner to service_role;
    grant usage on schema app to service_role;`);
  const token = await admin();

  for (const [who, auth] of [['anon', undefined], ['authenticated', await userToken(ALICE)]] as const) {
    const post = await call(httpUrl, 'POST', '/api/changes', { ...(auth === undefined ? {} : { token: auth }), body: { table: 'app.things' } });
    t.same([post.status, post.body['error']], [403, 'UNAUTHORIZED'], `POST as ${who}: 403`);
    const del = await call(httpUrl, 'DELETE', '/api/changes/app.things', auth === undefined ? {} : { token: auth });
    t.same([del.status, del.body['error']], [403, 'UNAUTHORIZED'], `DELETE as ${who}: 403`);
  }
  const { rows: none } = await db.pool.query(`select count(*)::int as n from realtime.change_streams`);
  t.equal(none[0]?.n, 0, 'nothing was enabled by them');

  const enabled = await call(httpUrl, 'POST', '/api/changes', {
    token, body: { table: 'app.things', columns: ['name'], operations: ['insert', 'update'], changed_only: true },
  });
  t.equal(enabled.status, 200);
  t.match(enabled.body, {
    table: 'app.things', channel: 'things:changes', row_channels: true, primary_key: ['id'], operations: ['insert', 'update'],
    changed_only: true, public: false, created_at: String,
  }, 'the stream as realtime.change_streams holds it');
  t.same([...(enabled.body['columns'] as string[])].sort(), ['id', 'name'], 'the listed columns and the primary key');
  const trigger = await db.pool.query(`select 1 from pg_trigger where tgrelid = 'app.things'::regclass and tgname = 'realtime_changes'`);
  t.equal(trigger.rowCount, 1, 'the trigger is installed');

  const changed = await call(httpUrl, 'POST', '/api/changes', { token, body: { table: 'app.things', channel: 'things:feed', operations: ['delete'], public: true, row_channels: false, columns: null } });
  t.match([changed.status, changed.body], [200, { channel: 'things:feed', operations: ['delete'], public: true, row_channels: false, columns: null }], 'again: the options change');

  const cases: [string, unknown, number, string][] = [
    ['no table', {}, 400, 'INVALID_MESSAGE'],
    ['an unknown field', { table: 'app.things', owner: 'me' }, 400, 'INVALID_MESSAGE'],
    ['columns not an array', { table: 'app.things', columns: 'name' }, 400, 'INVALID_MESSAGE'],
    ['a flag not a boolean', { table: 'app.things', public: 'yes' }, 400, 'INVALID_MESSAGE'],
    ['an unknown table', { table: 'app.nope' }, 404, 'NOT_FOUND'],
    ['an unknown schema', { table: 'nope.things' }, 404, 'NOT_FOUND'],
    ['not a name', { table: 'a.b.c.d' }, 400, 'INVALID_MESSAGE'],
    ['an unknown column', { table: 'app.things', columns: ['nope'] }, 400, 'INVALID_MESSAGE'],
    ['an unknown operation', { table: 'app.things', operations: ['truncate'] }, 400, 'INVALID_MESSAGE'],
    ['a bad channel name', { table: 'app.things', channel: 'has space' }, 400, 'INVALID_MESSAGE'],
    ['a view', { table: 'app.things_view' }, 400, 'INVALID_MESSAGE'],
    ['no primary key', { table: 'app.keyless' }, 400, 'INVALID_MESSAGE'],
    ['a table the admin role does not own', { table: 'app.orders' }, 403, 'UNAUTHORIZED'],
  ];
  for (const [why, body, status, code] of cases) {
    const res = await call(httpUrl, 'POST', '/api/changes', { token, body });
    t.same([res.status, res.body['error']], [status, code], `${why}: ${status} ${code}`);
    t.type(res.body['message'], 'string');
  }
  const notJson = await call(httpUrl, 'POST', '/api/changes', { token, raw: '{nope' });
  t.same([notJson.status, notJson.body['error']], [400, 'INVALID_MESSAGE'], 'not JSON: 400');
  t.equal((await call(httpUrl, 'GET', '/api/changes', { token })).status, 405, 'GET: 405');
  t.equal((await call(httpUrl, 'PATCH', '/api/changes/app.things', { token, body: {} })).status, 405, 'PATCH one: 405');
  const { rows: still } = await db.pool.query(`select channel from realtime.change_streams`);
  t.same(still, [{ channel: 'things:feed' }], 'no refused request changed the stream');

  t.same((await call(httpUrl, 'DELETE', '/api/changes/app.orders', { token })).status, 403, 'DELETE a table it does not own: 403');
  t.same((await call(httpUrl, 'DELETE', '/api/changes/app.nope', { token })).status, 404, 'DELETE an unknown table: 404');
  t.same((await call(httpUrl, 'DELETE', '/api/changes/a.b.c.d', { token })).status, 400, 'DELETE a bad name: 400');
  t.equal((await call(httpUrl, 'DELETE', '/api/changes/app.things', { token })).status, 204, 'DELETE: 204');
  t.equal((await db.pool.query(`select 1 from pg_trigger where tgrelid = 'app.things'::regclass and tgname = 'realtime_changes'`)).rowCount, 0, 'the trigger is gone');
  const again = await call(httpUrl, 'DELETE', '/api/changes/app.things', { token });
  t.same([again.status, again.body['error']], [404, 'NOT_FOUND'], 'no stream any more: 404');
});

t.test('POST /api/changes on a table a long transaction holds: 409 after 3 s, not a wait that writes queue behind', async (t) => {
  const { db, httpUrl } = await setup(t);
  await db.pool.query(`create table app.busy (id int primary key, n int); alter table app.busy owner to service_role;
    grant usage on schema app to service_role;
    insert into app.busy values (1, 0)`);
  // A business transaction that has written the table and stays open.
  const business = await db.pool.connect();
  t.teardown(() => business.release());
  await business.query('begin; update app.busy set n = n + 1 where id = 1');
  const started = Date.now();
  const refused = await call(httpUrl, 'POST', '/api/changes', { token: await admin(), body: { table: 'app.busy' } });
  t.equal(refused.status, 409, `refused after ${Date.now() - started} ms`);
  t.match(refused.body, { error: 'CONFLICT' });
  await business.query('commit');
  const other = await db.pool.query('update app.busy set n = n + 1 where id = 1');
  t.equal(other.rowCount, 1, 'writes go on');
  const enabled = await call(httpUrl, 'POST', '/api/changes', { token: await admin(), body: { table: 'app.busy' } });
  t.equal(enabled.status, 200, 'once the transaction ended, enabled');
});
