/**
 * realtimed/client against real daemons (in this process and as a child
 * process killed with SIGKILL), real PostgreSQL and real sockets.
 */
import { spawn, type ChildProcess } from 'node:child_process';

import t from 'tap';

import {
  backoffDelay, createClient, RealtimeError, type ClientState, type EventMeta, type PresenceMembers, type StorageAdapter,
} from '../../src/client/index.js';
import { freePort } from '../../src/cli/embedded.js';
import { BIN } from '../helpers/cli.js';
import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { createTicks, loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, SECRET, sign, userToken } from '../helpers/jwt.js';
import { settle, until } from '../helpers/wait.js';


function memoryStorage(): StorageAdapter & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, get: (k) => data.get(k) ?? null, set: (k, v) => void data.set(k, v) };
}

t.test('backoff: 1 s doubling to 30 s, with jitter between half and all of it', async (t) => {
  const nominal = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  nominal.forEach((n, i) => {
    t.equal(backoffDelay(i + 1, 1000, 30_000, () => 0), n / 2, `attempt ${i + 1}: at least ${n / 2} ms`);
    t.equal(backoffDelay(i + 1, 1000, 30_000, () => 1), n, `attempt ${i + 1}: at most ${n} ms`);
  });
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(3);
    if (d < 2000 || d > 4000) t.fail(`attempt 3 gave ${d}`);
  }
});

t.test('the typed API: connect, subscribe, on, publish, errors, state, off, disconnect', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const states: ClientState[] = [];
  const rt = createClient(wsUrl, { token: await userToken(ALICE) });
  t.teardown(() => rt.disconnect());
  rt.onState((s) => states.push(s));
  t.equal(rt.state, 'idle');
  await rt.connect();
  t.equal(rt.state, 'open');

  const got: [Record<string, unknown>, EventMeta][] = [];
  const all: string[] = [];
  const onMessage = (payload: Record<string, unknown>, meta: EventMeta): void => void got.push([payload, meta]);
  rt.on('message', onMessage);
  rt.on('*', (_p, meta) => void all.push(meta.event));

  t.same(await rt.subscribe('chat:7'), { ok: true, channel: 'chat:7' });
  const denied = await rt.subscribe('order:2');
  t.equal(denied.ok, false);
  t.type(denied.error, RealtimeError);
  t.equal(denied.error?.code, 'UNAUTHORIZED');
  t.same(rt.subscriptions, ['chat:7'], 'a denied channel is not kept');

  const ack = await rt.publish('chat:7', 'message', { text: 'hi' });
  t.match(ack, { channel: 'chat:7', messageId: /^[0-9a-f-]{36}$/, seq: Number, duplicate: false });
  await until('own event', () => got.length === 1);
  t.same(got[0]?.[0], { text: 'hi' });
  t.match(got[0]?.[1], { channel: 'chat:7', event: 'message', messageId: ack.messageId, seq: ack.seq, senderType: 'user', senderId: ALICE });

  await db.pool.query(`select realtime.publish('chat:7', 'notice', '{}')`);
  await until('notice', () => all.includes('notice'));
  t.equal(got.length, 1, 'a handler for "message" does not see "notice"; "*" sees both');

  await t.rejects(rt.publish('order:2', 'message', {}), { name: 'RealtimeError', code: 'NOT_SUBSCRIBED' }, 'typed errors carry the protocol code');
  const again = await rt.publish('chat:7', 'message', { n: 1 }, { dedupeKey: 'k1' });
  t.equal((await rt.publish('chat:7', 'message', { n: 1 }, { dedupeKey: 'k1' })).duplicate, true);
  t.equal(again.duplicate, false);

  rt.off('message', onMessage);
  await rt.unsubscribe('chat:7');
  t.same(rt.subscriptions, []);
  rt.disconnect();
  t.same(states, ['connecting', 'open', 'closed']);
  await t.rejects(rt.publish('chat:7', 'message', {}), { code: 'DISCONNECTED' });
});

t.test('the token travels in the first frame, never in the URL (finding 8h)', async (t) => {
  const { WebSocketServer } = await import('ws');
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close());
  await new Promise((resolve) => server.once('listening', resolve));
  const seen: { url: string | undefined; first: string | undefined } = { url: undefined, first: undefined };
  server.on('connection', (ws, req) => {
    seen.url = req.url;
    ws.once('message', (data) => {
      seen.first = data.toString();
      const ref = (JSON.parse(seen.first) as { ref?: string }).ref;
      ws.send(JSON.stringify({ type: 'authed', ref }));
    });
  });
  const token = await userToken(ALICE);
  const rt = createClient(`ws://127.0.0.1:${(server.address() as { port: number }).port}/`, { token });
  t.teardown(() => rt.disconnect());
  await rt.connect();
  await until('the first frame', () => seen.first !== undefined);
  t.equal(seen.url, '/', 'the URL carries no token');
  t.match(JSON.parse(seen.first ?? '{}'), { type: 'auth', token }, 'the first frame is the auth frame');
});

t.test('library events cannot clash with application event names', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const rt = createClient(wsUrl);
  t.teardown(() => rt.disconnect());
  const seen: string[] = [];
  for (const name of ['state', 'open', 'error', 'resync', 'close']) rt.on(name, (_p, meta) => void seen.push(meta.event));
  let states = 0;
  rt.onState(() => states++);
  await rt.connect();
  await rt.subscribe('orders');
  await db.pool.query(`select realtime.publish('orders', e, '{}') from unnest(array['state', 'error', 'close']) e`);
  await until('three events', () => seen.length === 3);
  t.same(seen, ['state', 'error', 'close'], 'events named like library events reach on() handlers, and only them');
  t.equal(states, 2, 'state handlers saw only connecting and open');
});

t.test('storage keeps the last seq across restarts; the next client replays what it missed', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const storage = memoryStorage();
  const first = createClient(wsUrl, { storage });
  const a: number[] = [];
  first.on('n', (p) => void a.push(p['i'] as number));
  await first.connect();
  await first.subscribe('orders');
  for (let i = 1; i <= 3; i++) await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
  await until('three', () => a.length === 3);
  first.disconnect();
  t.equal([...storage.data.keys()].length, 1, 'one key per channel');

  for (let i = 4; i <= 6; i++) await db.pool.query(`select realtime.publish('orders', 'n', jsonb_build_object('i', $1::int))`, [i]);
  const second = createClient(wsUrl, { storage });
  t.teardown(() => second.disconnect());
  const b: number[] = [];
  second.on('n', (p) => void b.push(p['i'] as number));
  await second.connect();
  await second.subscribe('orders');
  await db.pool.query(`select realtime.publish('orders', 'n', '{"i": 7}')`);
  await until('four', () => b.length === 4);
  await settle(200);
  t.same(b, [4, 5, 6, 7], 'the messages published while the app was closed, then live ones');
});

t.test('onResync: REPLAY_UNAVAILABLE (another epoch) and a channel closed by the server', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl } = await startDaemon(t, db);
  const storage = memoryStorage();
  storage.data.set(`realtimed:${wsUrl}:orders`, JSON.stringify({ seq: 0, epoch: 'ffffffffffffffff' }));
  const rt = createClient(wsUrl, { storage, token: await userToken(ALICE) });
  t.teardown(() => rt.disconnect());
  const resyncs: string[] = [];
  rt.onResync((channel, reason) => void resyncs.push(`${channel} ${reason}`));
  await rt.connect();
  t.same(await rt.subscribe('orders'), { ok: true, channel: 'orders' }, 'still subscribed (live)');
  t.same(resyncs, ['orders REPLAY_UNAVAILABLE']);
  await rt.subscribe('chat:7');
  await db.pool.query(`update realtime.channels set enabled = false where pattern = 'chat:%'`);
  await until('closed', () => resyncs.length === 2);
  t.same(resyncs[1], 'chat:7 CHANNEL_CLOSED');
  t.same(rt.subscriptions, ['orders']);
});

t.test('getToken: called for each connection, and before the token expires (auth frame)', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, daemon } = await startDaemon(t, db);
  let calls = 0;
  const rt = createClient(wsUrl, {
    getToken: () => {
      calls++;
      return sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: 3 });
    },
    backoff: { initialMs: 50, maxMs: 100 },
  });
  t.teardown(() => rt.disconnect());
  await rt.connect();
  t.equal(calls, 1);
  await rt.subscribe('chat:7');
  await until('a refresh before exp', () => calls >= 2, 5000);
  await settle(2500);
  t.equal(rt.state, 'open', 'still open after the first token’s exp: it was refreshed in time');
  for (const c of daemon.server.connections) c.ws.terminate();
  await until('reconnected', () => rt.state === 'open' && calls >= 3, 5000);
  t.pass('a reconnection asked for a token again');
  t.same(rt.subscriptions, ['chat:7']);
});

t.test('the daemon killed with SIGKILL and restarted while triggers publish: the application sees every message once', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await createTicks(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const port = await freePort();
  const start = (): ChildProcess => {
    const child = spawn(process.execPath, [BIN, 'start', '--port', String(port), '--log-level', 'warn'], {
      env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: urlFor(db.name, undefined, role), REALTIMED_JWT_SECRET: SECRET },
      stdio: 'ignore',
    });
    t.teardown(() => void child.kill('SIGKILL'));
    return child;
  };
  let daemon = start();
  const rt = createClient(`ws://127.0.0.1:${port}/`, { backoff: { initialMs: 100, maxMs: 400 } });
  t.teardown(() => rt.disconnect());
  for (let i = 0; i < 50; i++) {
    try {
      await rt.connect();
      break;
    } catch {
      await settle(100);
    }
  }
  const seen: number[] = [];
  rt.on('tick', (p) => void seen.push(p['n'] as number));
  t.same(await rt.subscribe('orders'), { ok: true, channel: 'orders' });

  const total = 300;
  const publishing = (async () => {
    for (let n = 1; n <= total; n++) {
      await db.pool.query('insert into app.ticks values ($1)', [n]);
      await settle(3);
    }
  })();
  await until('a third', () => seen.length >= 100, 10_000);
  daemon.kill('SIGKILL');
  await new Promise((resolve) => daemon.once('exit', resolve));
  await settle(300);
  daemon = start();
  await publishing;
  await until('all', () => seen.length >= total, 20_000);
  await settle(500);
  t.equal(seen.length, total, `${total} messages`);
  t.same(seen, Array.from({ length: total }, (_, i) => i + 1), 'every message once, in order');
  t.not(BOB, ALICE);
});

t.test('filters, ephemeral messages and presence through the client, kept across a reconnect', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`insert into app.chat_members values (7, $1)`, [BOB]);
  const { wsUrl, daemon } = await startDaemon(t, db, { presenceThrottleMs: 20 });
  const alice = createClient(wsUrl, { token: await userToken(ALICE), backoff: { initialMs: 50, maxMs: 100 } });
  const bob = createClient(wsUrl, { token: await userToken(BOB) });
  t.teardown(() => {
    alice.disconnect();
    bob.disconnect();
  });
  await alice.connect();
  await bob.connect();

  const seen: PresenceMembers[] = [];
  bob.onPresence((channel, members) => {
    if (channel === 'chat:7') seen.push(members);
  });
  t.ok((await bob.subscribe('chat:7', { presence: true, filter: 'kind=eq.important' })).ok);
  t.ok((await alice.subscribe('chat:7', { presence: true })).ok);
  await alice.setPresence('chat:7', { typing: false });
  await until('bob sees alice', () => seen.some((m) => ALICE in m));
  t.same(seen[seen.length - 1], { [ALICE]: { typing: false } }, 'onPresence: the members');

  const bobGot: EventMeta[] = [];
  bob.on('*', (_p, meta) => void bobGot.push(meta));
  await alice.publish('chat:7', 'message', { kind: 'chatter' });
  await alice.publish('chat:7', 'message', { kind: 'important' });
  await alice.publishEphemeral('chat:7', 'typing', { kind: 'important' });
  await alice.publishEphemeral('chat:7', 'typing', { kind: 'important' });
  await until('bob gets three', () => bobGot.length >= 3);
  await settle(200);
  // Ephemeral events are not ordered against stored ones (docs/protocol.md), so compare as a set.
  t.same(bobGot.map((m) => `${m.event}/${m.ephemeral}`).sort(), ['message/false', 'typing/true', 'typing/true'],
    'the filter let one stored message and both ephemeral ones through (two ephemeral events are not taken for repeats)');

  // The server drops alice's socket: her client reconnects and sets her presence again.
  for (const c of daemon.server.connections) if (c.identity?.claims['sub'] === ALICE) c.ws.terminate();
  await until('alice left', () => seen.length > 0 && !(ALICE in (seen[seen.length - 1] as PresenceMembers)));
  await until('alice is back', () => ALICE in (seen[seen.length - 1] as PresenceMembers), 5000);
  t.pass('after the reconnect, her presence is restored');
});

t.test('--idle-timeout: after 4010 the client waits in idle, and its next subscribe connects again', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { idleTimeoutMs: 300 });
  const states: ClientState[] = [];
  const rt = createClient(wsUrl, { backoff: { initialMs: 50, maxMs: 100 } });
  t.teardown(() => rt.disconnect());
  rt.onState((s) => states.push(s));
  await rt.connect();
  await until('the idle close', () => rt.state === 'idle');
  // Something that must not happen: a reconnect (it would be closed again, and again).
  await settle(500);
  t.equal(rt.state, 'idle', 'still idle');
  t.same(states, ['connecting', 'open', 'idle'], 'no reconnect after 4010 without subscriptions');
  const metrics = async (): Promise<string> => (await fetch(`${httpUrl}/metrics`)).text();
  t.match(await metrics(), /realtimed_connections 0/, 'no socket on the server');

  t.same(await rt.subscribe('orders'), { ok: true, channel: 'orders' }, 'subscribe connects again');
  t.equal(rt.state, 'open');
  await db.pool.query(`select realtime.publish('orders', 'tick', '{}')`);
  const got = await new Promise<string>((resolve) => rt.on('tick', (_p, meta) => resolve(meta.event)));
  t.equal(got, 'tick', 'and receives');
  await settle(500);
  t.equal(rt.state, 'open', 'a subscribed client is not closed');
});
