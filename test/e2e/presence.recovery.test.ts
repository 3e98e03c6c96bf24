/**
 * Presence when PostgreSQL loses it or cannot hold it: realtime.presence is
 * unlogged, so a crash (an immediate-mode stop: no checkpoint, crash recovery
 * at the next start) empties it while every socket stays up; and a hot
 * standby can neither read nor write it. A cluster of this file's own, so the
 * machine's server and the other suites are never disturbed.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import t from 'tap';

import { startEmbedded, type EmbeddedServer } from '../../src/cli/embedded.js';
import { migrate } from '../../src/cli/migrate.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { metric, spawnDaemon, type Daemon } from '../helpers/spawn.js';
import { settle, until } from '../helpers/wait.js';
import { TestClient, type Frame } from '../helpers/ws.js';

t.setTimeout(180_000);

const CAROL = 'ca201000-0000-4000-8000-000000000003';
const HEARTBEAT_MS = 1000;
const ARGS = ['--presence-heartbeat', String(HEARTBEAT_MS), '--presence-timeout', '10000', '--presence-throttle', '50'];

const dir = await mkdtemp(join(tmpdir(), 'realtimed-presence-'));
await chmod(dir, 0o755);
const dataDir = join(dir, 'pg');
let server: EmbeddedServer = await startEmbedded({ dataDir, password: 'x', auth: 'trust' });
const port = server.port;
t.teardown(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});
const admin = server.url.replace(/\/postgres$/, '/app');
const daemonUrl = admin.replace('postgres@', 'daemon@');

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text);
  } finally {
    await c.end();
  }
}
await sql(server.url, 'create database app');
await migrate({ databaseUrl: admin });
await sql(admin, `
  create role daemon login; grant anon, authenticated, service_role to daemon;
  insert into realtime.channels (pattern) values ('room:%');
  create policy rooms_subscribe on realtime.channels for select to authenticated using (true);
  create policy rooms_publish on realtime.messages for insert to authenticated with check (true);`);

const start = async (): Promise<void> => {
  server = await startEmbedded({ dataDir, password: 'x', auth: 'trust', port });
};

/** Subscribes with presence; the presence_state stays in `frames` for view(). */
async function watch(client: TestClient, channel: string): Promise<void> {
  const reply = await client.request({ type: 'subscribe', channel, presence: true });
  if (reply.type !== 'subscribed') throw new Error(JSON.stringify(reply));
}

/** The members a client believes in: its last presence_state with every later presence_diff applied. */
function view(client: TestClient, channel: string): Record<string, unknown> {
  let members: Record<string, unknown> = {};
  for (const f of client.frames) {
    if (f['channel'] !== channel) continue;
    if (f.type === 'presence_state') members = { ...(f['members'] as Record<string, unknown>) };
    if (f.type === 'presence_diff') {
      for (const key of Object.keys(f['leaves'] as object)) delete members[key];
      Object.assign(members, f['joins']);
    }
  }
  return members;
}

const leaves = (client: TestClient, from: number): Frame[] =>
  client.frames.slice(from).filter((f) => f.type === 'presence_diff' && Object.keys(f['leaves'] as object).length > 0);

const count = (daemon: Daemon, text: string): number => daemon.output().split(text).length - 1;

const same = (a: unknown, b: unknown): true | undefined => (JSON.stringify(a) === JSON.stringify(b) ? true : undefined);

t.test('PostgreSQL crashes (immediate stop): each instance puts its members back; every view ends right', async (t) => {
  const a = await spawnDaemon(t, daemonUrl, { args: ARGS });
  const b = await spawnDaemon(t, daemonUrl, { args: ARGS });
  const alice = await TestClient.connect(t, a.wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, b.wsUrl, { token: await userToken(BOB) });
  await watch(alice, 'room:1');
  await watch(bob, 'room:1');
  t.match(await alice.request({ type: 'presence', channel: 'room:1', state: { on: 'a' } }), { type: 'presence_updated', key: ALICE });
  t.match(await bob.request({ type: 'presence', channel: 'room:1', state: { on: 'b' } }), { type: 'presence_updated', key: BOB });
  const both = { [ALICE]: { on: 'a' }, [BOB]: { on: 'b' } };
  await until('both see both', () => (same(view(alice, 'room:1'), both) && same(view(bob, 'room:1'), both)) || undefined);
  const marks = { alice: alice.frames.length, bob: bob.frames.length };

  // A change just before the crash: the re-reads it causes meet the outage.
  t.match(await alice.request({ type: 'presence', channel: 'room:1', state: { on: 'a2' } }), { type: 'presence_updated' });
  await server.stop('immediate');
  const after = { [ALICE]: { on: 'a2' }, [BOB]: { on: 'b' } };
  await start();
  // Crash recovery emptied the unlogged table; the daemons find out and write back.
  const lost = "the database lost this instance's presence";
  await until('both daemons restored their members', () => (count(a, lost) >= 1 && count(b, lost) >= 1) || undefined, 30_000);
  const restored = async () => ({
    a: await metric(a.httpUrl, 'realtimed_presence_restored_total'),
    b: await metric(b.httpUrl, 'realtimed_presence_restored_total'),
  });
  await until('both rows written back', async () => { const r = await restored(); return (r.a >= 1 && r.b >= 1) || undefined; });
  t.same(await restored(), { a: 1, b: 1 }, 'each instance wrote back its one row (realtimed_presence_restored_total)');

  const carol = await TestClient.connect(t, a.wsUrl, { token: await userToken(CAROL) });
  await watch(carol, 'room:1');
  await until('carol, subscribing after the crash, sees both', () => same(view(carol, 'room:1'), after) || undefined, 10_000);
  t.same(view(carol, 'room:1'), after, 'a third client sees both members');
  const carolB = await TestClient.connect(t, b.wsUrl, { token: await userToken(CAROL) });
  await watch(carolB, 'room:1');
  await until('on the other instance too', () => same(view(carolB, 'room:1'), after) || undefined, 10_000);
  t.same(view(carolB, 'room:1'), after, 'and so does one on the other instance');

  // alice's new state reaches the watchers in the read after the reconnect
  // (1.5 heartbeat periods); then a little longer for any flap to show.
  await until('alice and bob see the state alice set before the crash', () =>
    (same(view(alice, 'room:1'), after) && same(view(bob, 'room:1'), after)) || undefined, 10_000);
  await settle(HEARTBEAT_MS);
  t.same(view(alice, 'room:1'), after, 'alice ends with both, her state the one she set before the crash');
  t.same(view(bob, 'room:1'), after, 'so does bob');
  t.same([...leaves(alice, marks.alice), ...leaves(bob, marks.bob)], [], 'no member was shown leaving and joining again around the crash');
  const { rows } = await sql(admin, 'select member_key from realtime.presence order by member_key');
  t.same(rows.map((r: { member_key: string }) => r.member_key), [ALICE, BOB].sort(), 'the database holds exactly the two members again');

  // Still live afterwards: a leave goes through.
  bob.ws.close();
  await until('bob leaves for alice', () => same(view(alice, 'room:1'), { [ALICE]: { on: 'a2' } }) || undefined);
  t.pass('a leave after the crash reaches the other instance');
});

t.test('a hot standby: presence refused with PRESENCE_UNAVAILABLE, logged once; back after promotion', async (t) => {
  const d = await spawnDaemon(t, daemonUrl, { args: ARGS });
  const alice = await TestClient.connect(t, d.wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, d.wsUrl, { token: await userToken(BOB) });
  await watch(alice, 'room:2');
  await alice.request({ type: 'presence', channel: 'room:2', state: { on: 'a' } });
  await watch(bob, 'room:2');
  await until('bob sees alice', () => same(view(bob, 'room:2'), { [ALICE]: { on: 'a' } }) || undefined);

  // The same data directory comes back as a standby (no primary to follow: it
  // stays in recovery, read-only, until promoted).
  await server.stop();
  await writeFile(join(dataDir, 'standby.signal'), '');
  await start();
  t.equal((await sql(admin, 'select pg_is_in_recovery() as r')).rows[0].r, true, 'the server is in recovery');

  // The first frames may still meet a connection the restart cut (INTERNAL_ERROR).
  const refused = await until('a presence frame refused as on a standby', async () => {
    const reply = await bob.request({ type: 'presence', channel: 'room:2', state: { on: 'b' } }, 10_000);
    return reply['code'] === 'INTERNAL_ERROR' ? undefined : reply;
  });
  t.match(refused, { type: 'error', code: 'PRESENCE_UNAVAILABLE', channel: 'room:2' }, 'setting presence: PRESENCE_UNAVAILABLE');
  for (let i = 0; i < 5; i++) {
    t.match(await bob.request({ type: 'presence', channel: 'room:2', state: { on: String(i) } }), { code: 'PRESENCE_UNAVAILABLE' });
  }
  const carol = await TestClient.connect(t, d.wsUrl, { token: await userToken(CAROL) });
  carol.send({ type: 'subscribe', channel: 'room:2', presence: true, ref: 'c' });
  t.match(await carol.next((f) => f['ref'] === 'c'), { type: 'subscribed', channel: 'room:2' }, 'subscribing with presence: subscribed');
  t.match(await carol.next((f) => f['ref'] === 'c'), { type: 'error', code: 'PRESENCE_UNAVAILABLE', channel: 'room:2' },
    'then PRESENCE_UNAVAILABLE for its presence');
  const res = await fetch(`${d.httpUrl}/api/channels/room:2/presence`, { headers: { authorization: `Bearer ${await userToken(BOB)}` } });
  t.equal(res.status, 503, 'GET .../presence: 503');
  t.match(await res.json(), { error: 'PRESENCE_UNAVAILABLE' }, 'its body names the code');
  t.equal(await metric(d.httpUrl, 'realtimed_presence_unavailable'), 1, 'realtimed_presence_unavailable 1');
  const warnings = count(d, 'presence heartbeat failed');
  await settle(3 * HEARTBEAT_MS); // heartbeats fail meanwhile: none may log it again
  t.equal(count(d, 'the database is a hot standby'), 1, 'logged once, not per frame or per heartbeat');
  t.equal(count(d, 'presence heartbeat failed'), warnings, 'no heartbeat warning per beat while it lasts');

  await sql(admin, 'select pg_promote()');
  await until('promoted', async () => (await sql(admin, 'select pg_is_in_recovery() as r')).rows[0].r === false || undefined);
  await until('presence available again', () => count(d, 'the database accepts writes again') === 1 || undefined, 20_000);
  t.equal(await metric(d.httpUrl, 'realtimed_presence_unavailable'), 0, 'realtimed_presence_unavailable 0');
  t.match(await bob.request({ type: 'presence', channel: 'room:2', state: { on: 'b' } }), { type: 'presence_updated', key: BOB },
    'bob sets his state on the promoted server');
  // Its LISTEN failed on the standby (pg-listen gives up then): the daemon
  // connects again until LISTEN is in place, and /health says so.
  await until('LISTEN re-established after the promotion (/health 200)', async () =>
    (await fetch(`${d.httpUrl}/health`)).status === 200 || undefined, 20_000);
  t.pass('LISTEN is back after the promotion');
  // The members, read from the database.
  const got = await until('alice was put back on the promoted server', async () => {
    const r = await fetch(`${d.httpUrl}/api/channels/room:2/presence`, { headers: { authorization: `Bearer ${await userToken(BOB)}` } });
    const body = (await r.json()) as { members?: Record<string, unknown> };
    return Object.keys(body.members ?? {}).length === 2 ? body : undefined;
  }, 10_000);
  t.same(got, { channel: 'room:2', members: { [ALICE]: { state: { on: 'a' }, connections: 1 }, [BOB]: { state: { on: 'b' }, connections: 1 } } },
    'GET .../presence: alice (written back by the heartbeat) and bob');
  t.match(await carol.request({ type: 'publish', channel: 'room:2', event: 'hi', payload: {} }), { type: 'published' },
    'carol\'s subscription stood through the presence refusal: she publishes on it');
  // Asking for presence again on the same subscription gets it (the
  // members this daemon holds for its watchers: bob's join reaches them only
  // through a hint, so he is not asserted here).
  t.match(await carol.request({ type: 'subscribe', channel: 'room:2', presence: true }), { type: 'subscribed' });
  const state = await carol.next((f) => f.type === 'presence_state');
  t.match(state['members'], { [ALICE]: { on: 'a' } }, 'carol subscribes with presence again: presence_state');
});
