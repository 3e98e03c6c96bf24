/**
 * The daemon against real PostgreSQL, real `ws` clients and jose-signed
 * tokens: RLS-checked subscribe and publish, relay, every error and close
 * code of docs/protocol.md.
 */
import t from 'tap';

import { createDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, sign, unsignedToken, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';
import { settle, until } from '../helpers/wait.js';


t.test('subscribe: the example policies decide, for anon, alice and bob', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const anon = await TestClient.connect(t, wsUrl);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { headers: { authorization: `Bearer ${await userToken(BOB)}` } });

  const expect: [TestClient, string, string, string][] = [
    [anon, 'anon', 'orders', 'subscribed'],
    [anon, 'anon', 'order:1', 'error'],
    [anon, 'anon', 'chat:7', 'error'],
    [alice, 'alice', 'orders', 'subscribed'],
    [alice, 'alice', 'order:1', 'subscribed'],
    [alice, 'alice', 'order:2', 'error'],
    [alice, 'alice', 'chat:7', 'subscribed'],
    [bob, 'bob', 'order:2', 'subscribed'],
    [bob, 'bob', 'order:1', 'error'],
    [bob, 'bob', 'chat:7', 'error'],
    [bob, 'bob', 'nowhere:1', 'error'],
  ];
  for (const [client, who, channel, type] of expect) {
    const reply = await client.subscribe(channel);
    t.equal(reply.type, type, `${who} → ${channel}: ${type}`);
    if (type === 'subscribed') {
      t.same(Object.keys(reply), ['type', 'channel', 'ref', 'epoch', 'seq', 'cursor'], 'subscribed: channel, ref, epoch, seq and a cursor');
      t.match(reply['cursor'], /^\d+\.[A-Za-z0-9_-]{32}$/);
    }
    else t.match(reply, { code: 'UNAUTHORIZED', channel }, `${who} → ${channel}: UNAUTHORIZED`);
  }
  const again = await alice.subscribe('orders');
  t.equal(again.type, 'subscribed', 'subscribing twice is harmless');
});

t.test("a trigger's publish reaches exactly the subscribed sockets", async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const alice2 = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  const idle = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('order:1');
  await alice2.subscribe('order:1');
  await bob.subscribe('order:2');

  await db.pool.query(`update app.orders set status = 'paid' where id = 1`);
  const event = await alice.next((f) => f.type === 'event');
  const stored = await db.pool.query<{ id: string; seq: string }>(`select id, seq from realtime.messages`);
  t.same(event, {
    type: 'event',
    channel: 'order:1',
    event: 'status_changed',
    payload: { status: 'paid' },
    meta: {
      messageId: stored.rows[0]?.id,
      seq: Number(stored.rows[0]?.seq),
      senderType: 'system',
      senderId: null,
      timestamp: (event['meta'] as Record<string, unknown>)['timestamp'],
    },
  });
  t.match((event['meta'] as Record<string, string>)['timestamp'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.same((await alice2.next((f) => f.type === 'event'))['channel'], 'order:1', 'every subscriber gets it');
  await settle();
  t.same(bob.events(), [], 'a subscriber of another channel gets nothing');
  t.same(idle.events(), [], 'a socket with no subscription gets nothing');

  await alice.request({ type: 'unsubscribe', channel: 'order:1' });
  await db.pool.query(`update app.orders set status = 'shipped' where id = 1`);
  await alice2.next((f) => f.type === 'event');
  await settle();
  t.same(alice.events(), [], 'nothing after unsubscribe');
});

t.test('client publish: INSERT policies decide; the database says who sent it', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('chat:7');
  await alice.subscribe('orders');
  await bob.subscribe('orders');

  const ack = await alice.request({
    type: 'publish',
    channel: 'chat:7',
    event: 'message',
    payload: { text: 'hi', senderType: 'system', meta: { senderId: BOB } },
  });
  t.match(ack, { type: 'published', channel: 'chat:7', messageId: /^[0-9a-f-]{36}$/, seq: Number });
  const own = await alice.next((f) => f.type === 'event');
  t.same(own['meta'], {
    messageId: ack['messageId'],
    seq: ack['seq'],
    senderType: 'user',
    senderId: ALICE,
    timestamp: (own['meta'] as Record<string, unknown>)['timestamp'],
  }, 'the publisher receives its own message; meta comes from the database, not the payload');
  t.same(own['payload'], { text: 'hi', senderType: 'system', meta: { senderId: BOB } }, 'the payload is untouched');

  const denied = await alice.request({ type: 'publish', channel: 'orders', event: 'spam', payload: {} });
  t.match(denied, { type: 'error', code: 'UNAUTHORIZED', channel: 'orders' }, 'no INSERT policy for orders: denied');
  const notSubscribed = await bob.request({ type: 'publish', channel: 'chat:7', event: 'message', payload: {} });
  t.match(notSubscribed, { type: 'error', code: 'NOT_SUBSCRIBED', channel: 'chat:7' });
  const count = await db.pool.query<{ n: number }>('select count(*)::int as n from realtime.messages');
  t.equal(count.rows[0]?.n, 1, 'only the allowed message was written');

  const first = await alice.request({ type: 'publish', channel: 'chat:7', event: 'message', payload: { n: 1 }, dedupeKey: 'k' });
  const retry = await alice.request({ type: 'publish', channel: 'chat:7', event: 'message', payload: { n: 1 }, dedupeKey: 'k' });
  t.equal(retry['messageId'], first['messageId'], 'a retried publish with the same dedupeKey gets the first ack');
  t.equal(retry['duplicate'], true);
});

t.test('publishes from many sockets at once are committed together, each acked or refused as alone', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  // A pool of 3: one publish batch at a time, so the rest of a burst waits and goes together.
  const { wsUrl, daemon } = await startDaemon(t, db, { poolSize: 3 }, { poolSize: 3 });
  // Both may subscribe to chat:7; a restrictive policy keeps bob from publishing there.
  await db.pool.query(`insert into app.chat_members values (7, 'b0b00000-0000-4000-8000-000000000002')`);
  await db.pool.query(`create policy bob_out on realtime.messages as restrictive for insert to authenticated
                       with check (realtime.uid() is distinct from 'b0b00000-0000-4000-8000-000000000002')`);
  const clients = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const client = await TestClient.connect(t, wsUrl, { token: await userToken(i % 4 === 3 ? BOB : ALICE) });
    await client.subscribe('chat:7');
    return { client, alice: i % 4 !== 3 };
  }));
  const replies = await Promise.all(clients.map(({ client }, i) =>
    client.request({ type: 'publish', channel: 'chat:7', event: 'm', payload: { i } }, 10_000)));
  replies.forEach((reply, i) => {
    if (clients[i]?.alice) t.match(reply, { type: 'published', messageId: /^[0-9a-f-]{36}$/, seq: Number });
    else t.match(reply, { type: 'error', code: 'UNAUTHORIZED', channel: 'chat:7' });
  });
  const stored = await db.pool.query(`select (payload ->> 'i')::int as i, sender_id::text as sender from realtime.messages order by 1`);
  t.same(stored.rows, clients.flatMap(({ alice }, i) => (alice ? [{ i, sender: ALICE }] : [])), 'each allowed one stored once, as its sender; no refused one');
  const batches = await daemon.metrics.registry.getSingleMetricAsString('realtimed_publish_batch_items');
  const count = Number(/realtimed_publish_batch_items_count (\d+)/.exec(batches)?.[1]);
  t.equal(Number(/realtimed_publish_batch_items_sum (\d+)/.exec(batches)?.[1]), 40);
  t.ok(count < 40, `40 publishes in ${count} statements`);
});

t.test('every error frame: code, ref, channel; none closes the connection', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`update realtime.config set max_payload_bytes = 100`);
  const { wsUrl } = await startDaemon(t, db, { publishRate: 3, maxSubscriptions: 2 });
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });

  const invalid: [string, unknown][] = [
    ['not JSON', '{"type":'],
    ['not an object', '[1,2]'],
    ['no type', { channel: 'x' }],
    ['unknown type', { type: 'shout' }],
    ['channel not a string', { type: 'subscribe', channel: 42 }],
    ['empty channel', { type: 'subscribe', channel: '' }],
    ['channel over 255 bytes', { type: 'subscribe', channel: 'c'.repeat(256) }],
    ['payload an array', { type: 'publish', channel: 'chat:7', event: 'e', payload: [1] }],
    ['event missing', { type: 'publish', channel: 'chat:7', payload: {} }],
    ['ref not a string', { type: 'ping', ref: 5 }],
    ['token missing', { type: 'auth' }],
  ];
  for (const [name, frame] of invalid) {
    alice.send(frame);
    const reply = await alice.next((f) => f.type === 'error');
    t.equal(reply['code'], 'INVALID_MESSAGE', `${name}: INVALID_MESSAGE`);
  }
  alice.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  t.equal((await alice.next((f) => f.type === 'error'))['code'], 'INVALID_MESSAGE', 'a binary frame: INVALID_MESSAGE');
  const badName = await alice.request({ type: 'subscribe', channel: 'chat 7' });
  t.match(badName, { code: 'INVALID_MESSAGE', channel: 'chat 7' }, 'a name the SQL package refuses (RT400): INVALID_MESSAGE');

  await alice.subscribe('chat:7');
  await alice.subscribe('orders');
  const third = await alice.request({ type: 'subscribe', channel: 'order:1' });
  t.match(third, { code: 'LIMIT_EXCEEDED', channel: 'order:1' }, 'over --max-subscriptions: LIMIT_EXCEEDED');

  const big = await alice.request({ type: 'publish', channel: 'chat:7', event: 'e', payload: { text: 'x'.repeat(200) } });
  t.match(big, { code: 'PAYLOAD_TOO_LARGE', channel: 'chat:7' }, 'over realtime.config.max_payload_bytes: PAYLOAD_TOO_LARGE');

  // The bucket holds 3; one was taken by the publish above.
  const results = await Promise.all([1, 2, 3].map(() => alice.request({ type: 'publish', channel: 'chat:7', event: 'e', payload: {} })));
  t.same(results.map((r) => r.type).sort(), ['error', 'published', 'published']);
  const limited = results.find((r) => r.type === 'error');
  t.match(limited, { code: 'RATE_LIMITED', retryAfter: Number }, 'over --publish-rate: RATE_LIMITED with retryAfter (ms)');
  t.ok((limited?.['retryAfter'] as number) > 0 && (limited?.['retryAfter'] as number) <= 1000);

  t.same(await alice.request({ type: 'ping' }), { type: 'pong', ref: 'r' + String(Number(String(limited?.['ref']).slice(1)) + 1) });
  t.equal(alice.ws.readyState, alice.ws.OPEN, 'after all those errors the connection is still open');
});

t.test('INTERNAL_ERROR when the database cannot be reached (and the request is denied)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db, {}, { databaseUrl: 'postgres://nobody@127.0.0.1:1/none' });
  const anon = await TestClient.connect(t, wsUrl);
  const reply = await anon.request({ type: 'subscribe', channel: 'orders' }, 10_000);
  t.match(reply, { type: 'error', code: 'INTERNAL_ERROR', channel: 'orders' });
});

t.test('tokens: forged, alg none, expired, not yet valid, wrong role: error frame and close', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, daemon } = await startDaemon(t, db);
  const cases: [string, string, string, number][] = [
    ['wrong key', await sign({ sub: ALICE, role: 'authenticated' }, { secret: 'another-secret-0123456789abcdef-0123456789' }), 'UNAUTHORIZED', 4003],
    ['alg none', unsignedToken({ sub: ALICE, role: 'authenticated' }), 'UNAUTHORIZED', 4003],
    ['expired', await sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: -10 }), 'TOKEN_EXPIRED', 4001],
    ['not yet valid', await sign({ sub: ALICE, role: 'authenticated' }, { notBefore: 600 }), 'UNAUTHORIZED', 4003],
    ['role not in --roles', await sign({ sub: ALICE, role: 'service_role' }), 'UNAUTHORIZED', 4003],
    ['role a superuser', await sign({ sub: ALICE, role: 'postgres' }), 'UNAUTHORIZED', 4003],
    ['tampered payload', (await userToken(ALICE)).replace(/\.([^.]+)\./, (_, p: string) => `.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: BOB })).toString('base64url')}.`), 'UNAUTHORIZED', 4003],
    ['garbage', 'not.a.jwt', 'UNAUTHORIZED', 4003],
  ];
  for (const [name, token, code, close] of cases) {
    for (const how of ['query', 'header', 'auth frame'] as const) {
      const client =
        how === 'query'
          ? await TestClient.connect(t, wsUrl, { token })
          : how === 'header'
            ? await TestClient.connect(t, wsUrl, { headers: { authorization: `Bearer ${token}` } })
            : await TestClient.connect(t, wsUrl);
      if (how === 'auth frame') client.send({ type: 'auth', token, ref: 'a' });
      const error = await client.next((f) => f.type === 'error');
      t.equal(error['code'], code, `${name} (${how}): ${code}`);
      t.equal((await client.closed).code, close, `${name} (${how}): closed with ${close}`);
    }
  }
  const metrics = await daemon.metrics.registry.getSingleMetricAsString('realtimed_auth_failures_total');
  t.match(metrics, /realtimed_auth_failures_total\{code="UNAUTHORIZED"\} 21/);
  t.match(metrics, /realtimed_auth_failures_total\{code="TOKEN_EXPIRED"\} 3/);
});

t.test('--jwt-audience and --jwt-issuer: only tokens for this audience, from this issuer (finding 8a)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db, { jwtAudience: 'realtimed', jwtIssuer: 'https://id.example' });
  const cases: [string, Record<string, unknown>, string][] = [
    ['aud and iss right', { aud: 'realtimed', iss: 'https://id.example' }, 'subscribed'],
    ['aud a list naming it', { aud: ['api', 'realtimed'], iss: 'https://id.example' }, 'subscribed'],
    ['another audience', { aud: 'api', iss: 'https://id.example' }, 'error'],
    ['no audience', { iss: 'https://id.example' }, 'error'],
    ['another issuer', { aud: 'realtimed', iss: 'https://evil.example' }, 'error'],
  ];
  for (const [name, claims, outcome] of cases) {
    const client = await TestClient.connect(t, wsUrl);
    client.send({ type: 'auth', token: await userToken(ALICE, claims), ref: 'a' });
    const reply = await client.request({ type: 'subscribe', channel: 'order:1' }).catch(() => ({ type: 'error' }));
    if (outcome === 'error') {
      t.equal((await client.closed).code, 4003, `${name}: closed with 4003`);
    } else {
      t.equal(reply.type, outcome, `${name}: ${outcome}`);
    }
  }
});

t.test('dedupe keys are per sender: any sub claim is its own namespace, anonymous senders have none (finding 7d)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`create policy "anyone publishes to orders" on realtime.messages for insert to anon, authenticated
    with check (realtime.channel_name() = 'orders')`);
  const { wsUrl } = await startDaemon(t, db);
  const victim = await TestClient.connect(t, wsUrl, { token: await sign({ sub: 'auth0|victim', role: 'authenticated' }) });
  const mallory = await TestClient.connect(t, wsUrl, { token: await sign({ sub: 'auth0|mallory', role: 'authenticated' }) });
  const other = await TestClient.connect(t, wsUrl);
  for (const client of [victim, mallory, other]) await client.subscribe('orders');
  t.match(await other.request({ type: 'publish', channel: 'orders', event: 'e', payload: {}, dedupeKey: 'k' }),
    { type: 'error', code: 'INVALID_MESSAGE', message: /sub claim/ }, 'anon: INVALID_MESSAGE (no sender to tell apart)');
  const first = await mallory.request({ type: 'publish', channel: 'orders', event: 'e', payload: {}, dedupeKey: 'k' });
  t.match(first, { type: 'published', messageId: /^[0-9a-f-]{36}$/ }, 'a non-UUID sub publishes with a dedupe key');
  const victims = await victim.request({ type: 'publish', channel: 'orders', event: 'e', payload: {}, dedupeKey: 'k' });
  t.match(victims, { type: 'published', messageId: /^[0-9a-f-]{36}$/ }, 'the same key from another sender is its own message');
  t.notOk(victims['duplicate'], 'not duplicate: true');
  t.not(victims['messageId'], first['messageId'], 'never someone else\'s message id');
  t.match(await victim.request({ type: 'publish', channel: 'orders', event: 'e', payload: {}, dedupeKey: 'k' }),
    { type: 'published', messageId: victims['messageId'], duplicate: true }, 'its own repeat is a duplicate');
});

t.test('a token expiring while connected closes with 4001 at exp; a refresh keeps the socket', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  // exp is whole seconds: expiresIn 2 is 1 to 2 s away (1 could be a millisecond away, expired before the test acts).
  const short = await TestClient.connect(t, wsUrl, { token: await sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: 2 }) });
  await short.subscribe('orders');
  const started = Date.now();
  t.match(await short.next((f) => f.type === 'error', 4000), { code: 'TOKEN_EXPIRED' });
  t.equal((await short.closed).code, 4001);
  t.ok(Date.now() - started < 3000, 'closed at exp');

  const refreshed = await TestClient.connect(t, wsUrl, { token: await sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: 2 }) });
  await refreshed.subscribe('orders');
  t.same(await refreshed.request({ type: 'auth', token: await userToken(ALICE) }), { type: 'authed', ref: 'r2' });
  await settle(2300);
  t.equal(refreshed.ws.readyState, refreshed.ws.OPEN, 'still open after the first token’s exp');
});

t.test('token refresh: subscriptions are authorized again under the new claims', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const client = await TestClient.connect(t, wsUrl);
  t.match(await client.subscribe('chat:7'), { code: 'UNAUTHORIZED' }, 'anon may not join chat:7');
  t.equal((await client.subscribe('orders')).type, 'subscribed');
  t.equal((await client.request({ type: 'auth', token: await userToken(ALICE) })).type, 'authed', 'anon signs in later');
  t.equal((await client.subscribe('chat:7')).type, 'subscribed', 'as alice it may');

  const authed = await client.request({ type: 'auth', token: await userToken(BOB) });
  t.equal(authed.type, 'authed');
  const dropped = client.frames.find((f) => f.type === 'unsubscribed');
  t.same(dropped, { type: 'unsubscribed', channel: 'chat:7', reason: 'UNAUTHORIZED' }, 'as bob, chat:7 ends');
  await db.pool.query(`select realtime.publish('orders', 'created', '{}'), realtime.publish('chat:7', 'notice', '{}')`);
  const event = await client.next((f) => f.type === 'event');
  t.equal(event['channel'], 'orders', 'orders is kept');
  await settle();
  t.same(client.events(), [], 'nothing from chat:7');
});

t.test('--no-anon: no token means auth first, then close 4003 after the timeout', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db, { allowAnon: false, authTimeoutMs: 400 });
  const late = await TestClient.connect(t, wsUrl);
  t.match(await late.subscribe('orders'), { code: 'UNAUTHORIZED' });
  t.match(await late.next((f) => f.type === 'error', 2000), { code: 'UNAUTHORIZED' });
  t.equal((await late.closed).code, 4003);
  const prompt = await TestClient.connect(t, wsUrl);
  t.equal((await prompt.request({ type: 'auth', token: await userToken(ALICE) })).type, 'authed');
  t.equal((await prompt.subscribe('orders')).type, 'subscribed');
  await settle(600);
  t.equal(prompt.ws.readyState, prompt.ws.OPEN, 'an authenticated socket stays');
});

t.test('a frame over --max-frame-bytes closes with 1009; others are unaffected', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const big = await TestClient.connect(t, wsUrl);
  const other = await TestClient.connect(t, wsUrl);
  big.send({ type: 'publish', channel: 'orders', event: 'e', payload: { blob: 'x'.repeat(1024 * 1024) } });
  t.equal((await big.closed).code, 1009);
  t.equal((await other.request({ type: 'ping' })).type, 'pong');
});

t.test('the pool comes back clean after a denied request', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, pool, role } = await startDaemon(t, db, {}, { poolSize: 1 });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB, { org: 'acme' }) });
  t.match(await bob.subscribe('chat:7'), { code: 'UNAUTHORIZED' });
  t.match(await bob.request({ type: 'publish', channel: 'orders', event: 'e', payload: {} }), { code: 'NOT_SUBSCRIBED' });
  await bob.subscribe('orders');
  t.match(await bob.request({ type: 'publish', channel: 'orders', event: 'e', payload: {} }), { code: 'UNAUTHORIZED' });
  const { rows } = await pool.query<Record<string, string | null>>(`
    select current_user as role, coalesce(current_setting('request.jwt.claims', true), '') as claims,
           coalesce(current_setting('request.jwt.claim.sub', true), '') as sub,
           coalesce(current_setting('realtime.channel_name', true), '') as channel`);
  t.same(rows[0], { role, claims: '', sub: '', channel: '' }, 'the one pooled connection is the daemon again, with no claims');
});

t.test('a slow consumer is closed with 4008 while the others keep receiving', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, daemon } = await startDaemon(t, db, { maxBufferedBytes: 64 * 1024 });
  const fast = await TestClient.connect(t, wsUrl);
  const slow = await TestClient.connect(t, wsUrl);
  await fast.subscribe('orders');
  await slow.subscribe('orders');
  // The slow client stops reading: the kernel buffers fill, then the server's.
  (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  const blob = 'x'.repeat(60 * 1024);
  for (let i = 0; i < 120; i++) {
    await db.pool.query(`select realtime.publish('orders', 'bulk', jsonb_build_object('i', $1::int, 'blob', $2::text))`, [i, blob]);
  }
  for (let i = 0; i < 120; i++) await fast.next((f) => f.type === 'event', 10_000);
  t.pass('the fast client received all 120');
  t.match(await daemon.metrics.registry.getSingleMetricAsString('realtimed_slow_consumer_closes_total'), / 1$/);
  (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
  t.equal((await slow.closed).code, 4008, 'the slow one was closed with 4008');
});

t.test('channel disabled or deleted: subscribers get unsubscribed with CHANNEL_CLOSED', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('chat:7');
  await alice.subscribe('orders');
  await db.pool.query(`update realtime.channels set enabled = false where pattern = 'chat:%'`);
  t.same(await alice.next((f) => f.type === 'unsubscribed'), { type: 'unsubscribed', channel: 'chat:7', reason: 'CHANNEL_CLOSED' });
  await db.pool.query(`delete from realtime.channels where pattern = 'orders'`);
  t.same(await alice.next((f) => f.type === 'unsubscribed'), { type: 'unsubscribed', channel: 'orders', reason: 'CHANNEL_CLOSED' });
});

t.test('a forged notification never reaches a client', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  // Counts what the notification path dropped: delivery notify (every mode: test/e2e/delivery.test.ts).
  const { wsUrl, daemon } = await startDaemon(t, db, {}, { delivery: 'notify' });
  const anon = await TestClient.connect(t, wsUrl);
  await anon.subscribe('orders');
  await db.pool.query(`select realtime.publish('order:1', 'secret', '{"owner": "alice"}')`);
  const real = await db.pool.query<{ id: string; seq: string }>(`select id, seq from realtime.messages`);
  const forged = [
    'not json',
    JSON.stringify({ v: 1, id: '00000000-0000-4000-8000-000000000000', seq: 1, channel: 'orders', payload: { fake: true } }),
    // A real message of another channel, claimed to be on "orders".
    JSON.stringify({ v: 1, id: real.rows[0]?.id, seq: Number(real.rows[0]?.seq), channel: 'orders' }),
  ];
  for (const payload of forged) await db.pool.query(`select pg_notify('realtime_messages', $1)`, [payload]);
  await settle(400);
  t.same(anon.events(), [], 'nothing was relayed');
  const dropped = await daemon.metrics.registry.getSingleMetricAsString('realtimed_notifications_dropped_total');
  t.match(dropped, /reason="malformed"\} 1/);
  t.match(dropped, /reason="unknown"\} 1/);
  t.match(dropped, /reason="(mismatched|repeated)"\} 1/, 'the real id under another channel: dropped (already handled, or the row disagrees)');
});

t.test('LISTEN connection killed: the daemon reconnects and keeps relaying; /health follows', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, httpUrl, role } = await startDaemon(t, db);
  const anon = await TestClient.connect(t, wsUrl);
  await anon.subscribe('orders');
  t.equal((await fetch(`${httpUrl}/health`)).status, 200, 'healthy');

  // No new connections for the daemon's role: the LISTEN connection cannot come back yet.
  await db.pool.query(`alter role ${role} connection limit 0`);
  const killed = await db.pool.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'realtimed-listen' and usename = $1`,
    [role],
  );
  t.equal(killed.rowCount, 1, 'terminated the LISTEN backend');
  let health = await fetch(`${httpUrl}/health`);
  for (let i = 0; i < 50 && health.status === 200; i++) {
    await settle(100);
    health = await fetch(`${httpUrl}/health`);
  }
  t.equal(health.status, 503, '/health says 503 while LISTEN is down');
  t.match(await health.json(), { status: 'unavailable', listener: 'down' });

  await db.pool.query(`alter role ${role} connection limit -1`);
  for (let i = 0; i < 100 && health.status !== 200; i++) {
    await settle(100);
    health = await fetch(`${httpUrl}/health`);
  }
  t.equal(health.status, 200, '/health is 200 again after the reconnect');
  await db.pool.query(`select realtime.publish('orders', 'after', '{}')`);
  t.equal((await anon.next((f) => f.type === 'event', 5000))['event'], 'after', 'relaying continues');
});

t.test('HTTP: origins, paths, /metrics', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { allowedOrigins: ['https://app.example'] });
  await t.rejects(TestClient.connect(t, wsUrl, { headers: { origin: 'https://evil.example' } }), /HTTP 403/, 'a foreign origin is refused at upgrade');
  const ok = await TestClient.connect(t, wsUrl, { headers: { origin: 'https://app.example' } });
  t.equal((await ok.request({ type: 'ping' })).type, 'pong', 'an allowed origin connects');
  const noOrigin = await TestClient.connect(t, wsUrl);
  t.equal((await noOrigin.request({ type: 'ping' })).type, 'pong', 'a non-browser client (no Origin) connects');
  await t.rejects(TestClient.connect(t, `${wsUrl}elsewhere`), /HTTP 404/, 'another path is 404');
  const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
  for (const name of [
    'realtimed_connections',
    'realtimed_subscriptions',
    'realtimed_messages_relayed_total',
    'realtimed_frames_sent_total',
    'realtimed_fanout_seconds',
    'realtimed_slow_consumer_closes_total',
    'realtimed_listen_reconnects_total',
    'realtimed_auth_failures_total',
  ]) {
    t.match(metrics, `# TYPE ${name} `, `/metrics has ${name}`);
  }
  t.match(metrics, 'realtimed_connections 2');
  t.equal((await fetch(`${httpUrl}/nope`)).status, 404);
});

t.test('--jwks-url: RS256 and ES256 tokens from a JWKS endpoint; HS256 is then refused', async (t) => {
  const { createServer } = await import('node:http');
  const { SignJWT, exportJWK, generateKeyPair } = await import('jose');
  const rsa = await generateKeyPair('RS256');
  const ec = await generateKeyPair('ES256');
  const keys = [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.publicKey)), kid: 'ec', alg: 'ES256', use: 'sig' },
  ];
  const jwks = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => jwks.close(() => resolve())));
  const address = jwks.address() as { port: number };

  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db, { jwtSecret: undefined, jwksUrl: `http://127.0.0.1:${address.port}/jwks.json` });
  const token = (alg: 'RS256' | 'ES256', kid: string, key: typeof rsa.privateKey): Promise<string> =>
    new SignJWT({ sub: ALICE, role: 'authenticated' }).setProtectedHeader({ alg, kid }).setExpirationTime('1h').sign(key);

  const viaRsa = await TestClient.connect(t, wsUrl, { token: await token('RS256', 'rsa', rsa.privateKey) });
  t.equal((await viaRsa.subscribe('chat:7')).type, 'subscribed', 'an RS256 token from the JWKS works');
  const viaEc = await TestClient.connect(t, wsUrl, { token: await token('ES256', 'ec', ec.privateKey) });
  t.equal((await viaEc.subscribe('chat:7')).type, 'subscribed', 'an ES256 token from the JWKS works');
  const hs = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  t.match(await hs.next((f) => f.type === 'error'), { code: 'UNAUTHORIZED' }, 'an HS256 token is refused');
  t.equal((await hs.closed).code, 4003);
});

t.test('a peer that stops answering WebSocket pings is dropped', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, daemon } = await startDaemon(t, db, { pingIntervalMs: 150 });
  const dead = await TestClient.connect(t, wsUrl);
  const alive = await TestClient.connect(t, wsUrl);
  await dead.subscribe('orders');
  // Stop reading: the pings are never seen, so never answered.
  (dead.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  await until('the silent peer is terminated', () => daemon.server.connections.size === 1);
  t.match(await daemon.metrics.registry.getSingleMetricAsString('realtimed_slow_consumer_closes_total'), / 0$/,
    'with nothing unread it is a dead peer, not a slow consumer');
  t.equal((await alive.request({ type: 'ping' })).type, 'pong');
});
