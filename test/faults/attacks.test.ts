/**
 * Bad input from clients: forged tokens, channel names built to attack SQL,
 * a policy that throws, and a fuzzer. The daemon (a child process, so a crash
 * or an unhandled rejection would end it) keeps serving a healthy client
 * throughout, and its memory stays bounded.
 */
import { randomBytes } from 'node:crypto';

import t from 'tap';
import WebSocket from 'ws';

import { createDatabase, createLoginRole, urlFor, type TestDatabase } from '../helpers/db.js';
import { loadExamples } from '../helpers/daemon.js';
import { ALICE, sign, unsignedToken, userToken } from '../helpers/jwt.js';
import { deafSocket, TestClient, type Frame } from '../helpers/ws.js';
import { record } from './helpers.js';
import { metric, spawnDaemon, type Daemon } from '../helpers/spawn.js';
import { settle, until } from '../helpers/wait.js';

async function setup(t: Tap): Promise<{ db: TestDatabase; daemon: Daemon; healthy: TestClient }> {
  const db = await createDatabase(t);
  await loadExamples(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const daemon = await spawnDaemon(t, urlFor(db.name, undefined, role), { args: ['--publish-rate', '100000'] });
  const healthy = await TestClient.connect(t, daemon.wsUrl);
  await healthy.subscribe('orders');
  return { db, daemon, healthy };
}
type Tap = { teardown(fn: () => unknown): void };

/** The healthy client still gets a fresh event from SQL. */
async function stillServes(db: TestDatabase, healthy: TestClient): Promise<boolean> {
  const marker = randomBytes(4).toString('hex');
  await db.pool.query(`select realtime.publish('orders', 'check', jsonb_build_object('marker', $1::text))`, [marker]);
  const got = await healthy.next((f) => f.type === 'event' && (f['payload'] as { marker?: string }).marker === marker, 5000).then(
    () => true,
    () => false,
  );
  return got && (await healthy.request({ type: 'ping' })).type === 'pong';
}

/** Connects with a token, sends a subscribe at once; what came back and how it closed. */
function tryToken(url: string, token: string): Promise<{ frames: Frame[]; code: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`);
    const frames: Frame[] = [];
    ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', channel: 'orders', ref: 's' })));
    ws.on('message', (d) => frames.push(JSON.parse(d.toString()) as Frame));
    ws.on('close', (code) => resolve({ frames, code }));
    ws.on('error', () => {});
    setTimeout(() => ws.terminate(), 10_000).unref();
  });
}

t.test('1,000 forged tokens: all refused with an error frame and 4003/4001, none subscribed', async (t) => {
  const { db, daemon, healthy } = await setup(t);
  const now = Math.floor(Date.now() / 1000);
  const kinds: [string, () => Promise<string> | string][] = [
    ['wrong key', () => sign({ sub: ALICE, role: 'authenticated' }, { secret: randomBytes(32).toString('hex') })],
    ['alg none', () => unsignedToken({ sub: ALICE, role: 'authenticated' })],
    ['expired', () => sign({ sub: ALICE, role: 'authenticated' }, { expiresIn: -60 })],
    ['not yet valid', () => sign({ sub: ALICE, role: 'authenticated' }, { notBefore: 3600 })],
    ['wrong role', () => sign({ sub: ALICE, role: 'service_role' })],
    ['tampered payload', async () => {
      const [h, , s] = (await userToken(ALICE)).split('.');
      const body = Buffer.from(JSON.stringify({ sub: ALICE, role: 'authenticated', admin: true, exp: now + 3600 })).toString('base64url');
      return `${h}.${body}.${s}`;
    }],
    ['garbage', () => randomBytes(40).toString('base64url')],
  ];
  const started = Date.now();
  const outcomes: { kind: string; code: number; subscribed: boolean; error: string | undefined }[] = [];
  for (let i = 0; i < 1000; i += 20) {
    await Promise.all(
      Array.from({ length: 20 }, async (_, j) => {
        const [kind, make] = kinds[(i + j) % kinds.length] as [string, () => Promise<string> | string];
        const r = await tryToken(daemon.wsUrl, await make());
        outcomes.push({ kind, code: r.code, subscribed: r.frames.some((f) => f.type === 'subscribed'), error: r.frames.find((f) => f.type === 'error')?.['code'] as string | undefined });
      }),
    );
  }
  const seconds = (Date.now() - started) / 1000;
  const subscribed = outcomes.filter((o) => o.subscribed).length;
  const badClose = outcomes.filter((o) => o.code !== (o.kind === 'expired' ? 4001 : 4003));
  const noFrame = outcomes.filter((o) => o.error !== (o.kind === 'expired' ? 'TOKEN_EXPIRED' : 'UNAUTHORIZED'));
  const serves = await stillServes(db, healthy);
  const ok =
    t.equal(outcomes.length, 1000) &&
    t.equal(subscribed, 0, 'none ever subscribed') &&
    t.same(badClose.slice(0, 3), [], 'each closed with 4003 (4001 when expired)') &&
    t.same(noFrame.slice(0, 3), [], 'each told why in an error frame first') &&
    t.ok(serves, 'the healthy client was served throughout');
  record('1,000 forged tokens (wrong key, alg none, expired, future nbf, wrong role, tampered, garbage)', `all refused (error frame, then 4003 or 4001 for expired), none subscribed; ${Math.round(1000 / seconds)} refusals/s`, ok);
});

t.test('channel names built to attack SQL, and a policy that throws: clean errors, no crash', async (t) => {
  const { db, daemon, healthy } = await setup(t);
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('boom:%');
    create policy "boom: a broken policy" on realtime.channels for select to anon
      using (pattern = 'boom:%' and (1 / (length(realtime.channel_name()) - length(realtime.channel_name()))) = 1);`);
  const before = (await db.pool.query<{ n: number }>('select count(*)::int as n from realtime.messages')).rows[0]?.n;
  const alice = await TestClient.connect(t, daemon.wsUrl, { token: await userToken(ALICE) });
  const names = [
    "'", "''", "orders'--", "orders'; drop table realtime.messages; --", '%', 'order:%', '_', 'order_1', '\\', 'chat:7\\',
    'x'.repeat(10 * 1024), 'chat:7\u0000', 'chat:\u202e7', 'chat:7 or 1=1', '$$', 'chat:7"); select pg_sleep(10); --',
  ];
  const codes: Record<string, number> = {};
  let leaked = 0;
  for (const channel of names) {
    for (const frame of [{ type: 'subscribe', channel }, { type: 'publish', channel, event: 'e', payload: {} }]) {
      const reply = await alice.request(frame, 15_000);
      if (reply.type === 'subscribed' || reply.type === 'published') leaked++;
      const code = String(reply['code'] ?? reply.type);
      codes[code] = (codes[code] ?? 0) + 1;
    }
  }
  const boom = await healthy.request({ type: 'subscribe', channel: 'boom:1' });
  const after = (await db.pool.query<{ n: number }>('select count(*)::int as n from realtime.messages')).rows[0]?.n;
  const serves = await stillServes(db, healthy);
  const ok =
    t.equal(leaked, 0, 'no hostile name was subscribed or published') &&
    t.same(Object.keys(codes).filter((c) => !['INVALID_MESSAGE', 'UNAUTHORIZED', 'NOT_SUBSCRIBED'].includes(c)), [], `only clean error codes: ${JSON.stringify(codes)}`) &&
    t.match(boom, { type: 'error', code: 'UNAUTHORIZED' }, 'a policy that throws denies') &&
    t.equal(after, before, 'the messages table is intact') &&
    t.ok(serves, 'the healthy client was served throughout') &&
    t.notMatch(daemon.output(), /syntax error/i, 'no SQL was ever built from a name');
  record('channel names built to attack SQL (quotes, %, _, \\, 10 KB, NUL, bidi) and a policy that throws', `${names.length * 2} frames: ${JSON.stringify(codes)}; the throwing policy denied with UNAUTHORIZED; nothing leaked, nothing crashed`, ok);
});

/** A frame worth sending: valid ones, and every way of getting them wrong. */
function fuzzFrame(rand: () => number): string | Buffer {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const channels = ['orders', 'chat:7', 'order:1', 'ünïcødé:☃', '🎉', 'a'.repeat(300), '', ' ', 'chat:%', '\u0000'];
  const valid: Record<string, unknown>[] = [
    { type: 'subscribe', channel: pick(channels), ref: 'f' },
    { type: 'unsubscribe', channel: pick(channels) },
    { type: 'publish', channel: pick(channels), event: pick(['e', '', 'x'.repeat(300)]), payload: { n: rand() } },
    { type: 'ping', ref: 1 },
    { type: 'auth', token: pick(['', 'x', 'a.b.c']) },
    { type: 'subscribe', channel: 'orders', since: pick([-1, 0, 1e20, 'x', null, 1.5]) },
  ];
  const base = JSON.stringify(pick(valid));
  switch (Math.floor(rand() * 10)) {
    case 0:
      return base;
    case 1:
      return base.slice(0, Math.floor(rand() * base.length)); // truncated
    case 2: {
      const i = Math.floor(rand() * base.length);
      return base.slice(0, i) + String.fromCharCode(Math.floor(rand() * 0xffff)) + base.slice(i + 1); // mutated
    }
    case 3:
      return JSON.stringify({ ...JSON.parse(base), type: pick([1, null, [], {}, 'SUBSCRIBE', 'event', '__proto__']) });
    case 4:
      return JSON.stringify({ ...JSON.parse(base), channel: pick([1, null, [], { a: 1 }, true]), ref: pick([{}, [], 2]) });
    case 5:
      return '['.repeat(20_000) + ']'.repeat(20_000); // deep nesting
    case 6:
      return JSON.stringify({ type: 'publish', channel: 'chat:7', event: 'e', payload: { s: 'x'.repeat(Math.floor(rand() * 120_000)) } });
    case 7:
      return randomBytes(Math.floor(rand() * 512)); // binary
    case 8:
      return pick(['null', '1', '"x"', '[]', '{}', 'true', '{"__proto__":{"type":"ping"}}', '{"constructor":{"prototype":{}}}']);
    default:
      return JSON.stringify({ type: 'subscribe', channel: 'x'.repeat(Math.floor(rand() * 200_000)) }); // may exceed the frame limit: 1009
  }
}

t.test('a fuzzer: 50,000 random and mutated frames, no crash, memory bounded', async (t) => {
  const { db, daemon, healthy } = await setup(t);
  let seed = 42;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const token = await userToken(ALICE);
  await settle(500);
  const rssBefore = daemon.rss();
  const total = 50_000;
  let sent = 0;
  let closes = 0;
  /** Sends frames from 10 sockets until `sent` reaches `until`. */
  const fuzz = (until: number) =>
    Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        while (sent < until) {
          const ws = new WebSocket(w % 2 ? `${daemon.wsUrl}?token=${token}` : daemon.wsUrl);
          ws.on('error', () => {});
          ws.on('message', () => {});
          const open = await new Promise<boolean>((resolve) => {
            ws.once('open', () => resolve(true));
            ws.once('close', () => resolve(false));
          });
          if (!open) continue;
          while (sent < until && ws.readyState === WebSocket.OPEN) {
            ws.send(fuzzFrame(rand));
            sent++;
            if (sent % 50 === 0) await new Promise((r) => setImmediate(r));
            if (ws.bufferedAmount > 1 << 20) await settle(5);
          }
          if (ws.readyState !== WebSocket.OPEN) closes++;
          ws.terminate();
        }
      }),
    );
  const started = Date.now();
  // Two halves: the first warms the heap up; a leak would keep growing in the second.
  await fuzz(total / 2);
  await settle(2000);
  const rssHalf = daemon.rss();
  await fuzz(total);
  const seconds = (Date.now() - started - 2000) / 1000;
  await settle(2000);
  const rssAfter = daemon.rss();
  const serves = await stillServes(db, healthy);
  const mib = (n: number): string => (n / 2 ** 20).toFixed(0);
  const secondHalf = (rssAfter - rssHalf) / 2 ** 20;
  const ok =
    t.equal(daemon.child.exitCode, null, 'the daemon is alive') &&
    t.notMatch(daemon.output(), /unhandled|uncaught/i, 'no unhandled rejection or exception') &&
    t.ok(secondHalf < 32, `RSS ${mib(rssBefore)} -> ${mib(rssHalf)} -> ${mib(rssAfter)} MiB: the second 25,000 frames added ${secondHalf.toFixed(1)} MiB (bound: 32 MiB)`) &&
    t.ok(rssAfter < 512 * 2 ** 20, 'and it stays under 512 MiB') &&
    t.ok(serves, 'the healthy client was served throughout');
  record('a fuzzer: 50,000 random and mutated frames (truncated, mutated, wrong types, huge strings, 20,000-deep nesting, binary, unicode names)', `${sent} frames in ${seconds.toFixed(1)} s over 10 sockets (${closes} closed by the server, e.g. 1009 too large); RSS ${mib(rssBefore)} -> ${mib(rssHalf)} MiB after the first half -> ${mib(rssAfter)} MiB after the second (a plateau, not a leak); no crash`, ok);
});

t.test('a socket that never reads and sends 8 MiB of "{}" frames: closed with 4008, memory bounded (finding 2)', async (t) => {
  const { db, daemon, healthy } = await setup(t);
  await settle(500);
  const rssBefore = daemon.rss();
  const deaf = await deafSocket(t, daemon.wsUrl);
  const started = Date.now();
  let sent = 0;
  for (; sent < 1_048_576 && !deaf.socket.destroyed; sent++) {
    deaf.send('{}'); // 8 bytes a frame on the wire; each is answered with an error frame
    if (sent % 10_000 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  await until('the daemon closed it', async () => (await metric(daemon.httpUrl, 'realtimed_slow_consumer_closes_total')) >= 1, 60_000);
  const seconds = (Date.now() - started) / 1000;
  await settle(1000);
  const grew = (daemon.rss() - rssBefore) / 2 ** 20;
  const serves = await stillServes(db, healthy);
  const ok =
    t.ok(grew < 64, `RSS grew ${grew.toFixed(1)} MiB (bound: 64 MiB; before the fix, +340 MiB)`) &&
    t.ok(serves, 'the healthy client was served throughout');
  record('a socket that never reads sends 8 MiB of "{}" frames (finding 2 of the attack review)', `closed with 4008 after ${seconds.toFixed(1)} s (${sent} frames written); RSS grew ${grew.toFixed(1)} MiB (before the fix: +340 MiB and a 40 s stall)`, ok);
});
