/**
 * Presence across two `realtimed start` processes on one database: members
 * keyed by user, presence_state and presence_diff, GET
 * /api/channels/:name/presence, a crashed instance's members leaving within
 * the documented bound, throttling under churn, and every refusal.
 */
import t from 'tap';

import { createDatabase, createLoginRole, urlFor, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient, type Frame } from '../helpers/ws.js';
import { spawnDaemon } from '../helpers/spawn.js';
import { settle } from '../helpers/wait.js';

const CAROL = 'ca201000-0000-4000-8000-000000000003';

async function rooms(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('room:%'), ('lobby:%');
    create policy rooms_subscribe on realtime.channels for select to anon, authenticated using (true);
    -- Presence is authorized like a publish: rooms yes, the lobby is read-only.
    create policy rooms_publish on realtime.messages for insert to anon, authenticated
      with check (realtime.channel_name() like 'room:%');`);
}

async function join(client: TestClient, channel: string): Promise<Frame> {
  const reply = await client.request({ type: 'subscribe', channel, presence: true });
  if (reply.type !== 'subscribed') throw new Error(JSON.stringify(reply));
  return client.next((f) => f.type === 'presence_state' && f['channel'] === channel);
}

const diffs = (client: TestClient): Frame[] => client.frames.filter((f) => f.type === 'presence_diff');

t.test('two instances: one user with two tabs is one member; joins, state and leaves reach the other instance', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const url = urlFor(db.name, undefined, role);
  const args = ['--presence-throttle', '50'];
  const a = await spawnDaemon(t, url, { args });
  const b = await spawnDaemon(t, url, { args });

  const bob = await TestClient.connect(t, b.wsUrl, { token: await userToken(BOB) });
  t.same((await join(bob, 'room:1'))['members'], {}, 'presence_state: nobody yet');

  const tab1 = await TestClient.connect(t, a.wsUrl, { token: await userToken(ALICE) });
  await join(tab1, 'room:1');
  t.match(await tab1.request({ type: 'presence', channel: 'room:1', state: { status: 'online' } }),
    { type: 'presence_updated', channel: 'room:1', key: ALICE }, 'alice sets her state on instance A');
  const joined = await bob.next((f) => f.type === 'presence_diff');
  t.same(joined, { type: 'presence_diff', channel: 'room:1', joins: { [ALICE]: { status: 'online' } }, leaves: {} },
    'bob, on instance B, sees her join');

  const tab2 = await TestClient.connect(t, b.wsUrl, { token: await userToken(ALICE) });
  const state = await join(tab2, 'room:1');
  t.same(state['members'], { [ALICE]: { status: 'online' } }, 'a late joiner gets the members in presence_state');
  await tab2.request({ type: 'presence', channel: 'room:1', state: { status: 'online' } });

  const res = await fetch(`${b.httpUrl}/api/channels/room:1/presence`, { headers: { authorization: `Bearer ${await userToken(BOB)}` } });
  t.same(await res.json(), { channel: 'room:1', members: { [ALICE]: { state: { status: 'online' }, connections: 2 } } },
    'GET /api/channels/:name/presence: one member, two sockets');

  tab1.ws.close();
  await settle(400);
  t.same(diffs(bob), [], 'closing one tab is no leave: her other tab holds the same state');
  tab2.ws.close();
  const left = await bob.next((f) => f.type === 'presence_diff');
  t.same(left, { type: 'presence_diff', channel: 'room:1', joins: {}, leaves: { [ALICE]: { status: 'online' } } },
    'the last tab closed: she leaves');
});

t.test('a crashed instance\'s members leave within the presence timeout plus one heartbeat', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const url = urlFor(db.name, undefined, role);
  const args = ['--presence-heartbeat', '250', '--presence-timeout', '1000', '--presence-throttle', '50'];
  const a = await spawnDaemon(t, url, { args });
  const b = await spawnDaemon(t, url, { args });
  const bob = await TestClient.connect(t, b.wsUrl, { token: await userToken(BOB) });
  await join(bob, 'room:2');
  const carol = await TestClient.connect(t, a.wsUrl, { token: await userToken(CAROL) });
  await join(carol, 'room:2');
  await carol.request({ type: 'presence', channel: 'room:2', state: { here: true } });
  await bob.next((f) => f.type === 'presence_diff');

  const killed = Date.now();
  a.child.kill('SIGKILL');
  const left = await bob.next((f) => f.type === 'presence_diff', 10_000);
  const ms = Date.now() - killed;
  t.same(left['leaves'], { [CAROL]: { here: true } }, 'carol left when her instance died');
  t.ok(ms <= 1000 + 250 + 50 + 1000, `within the bound (timeout 1,000 + heartbeat 250 + throttle 50 ms, plus 1 s slack): ${ms} ms`);
  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.instances`);
  t.equal(rows[0]?.n, 1, 'the dead instance was removed; the live one stays');
});

t.test('under churn, diffs are throttled: fewer frames than joins, every member accounted for', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl } = await startDaemon(t, db, { presenceThrottleMs: 200 });
  const watcher = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await join(watcher, 'room:3');
  const members = await Promise.all(
    Array.from({ length: 30 }, async (_, i) => {
      const c = await TestClient.connect(t, wsUrl);
      await c.subscribe('room:3');
      await c.request({ type: 'presence', channel: 'room:3', state: { n: i } });
      return c;
    }),
  );
  const seen = new Set<string>();
  while (seen.size < 30) {
    const diff = await watcher.next((f) => f.type === 'presence_diff', 5000);
    for (const key of Object.keys(diff['joins'] as object)) seen.add(key);
    watcher.frames.push({ ...diff, type: 'counted_diff' });
  }
  const frames = watcher.frames.filter((f) => f.type === 'counted_diff').length;
  t.equal(seen.size, 30, 'all 30 joins arrived');
  t.ok(frames < 30, `in ${frames} presence_diff frames, not 30`);
  t.equal(members.length, 30);
});

t.test('refusals: not subscribed, denied, too big, too many members, bad state', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl, httpUrl } = await startDaemon(t, db, { maxPresenceMembers: 2, maxPresenceBytes: 64 });
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  t.match(await alice.request({ type: 'presence', channel: 'room:4', state: {} }), { type: 'error', code: 'NOT_SUBSCRIBED' });
  await alice.subscribe('lobby:1');
  t.match(await alice.request({ type: 'presence', channel: 'lobby:1', state: {} }), { type: 'error', code: 'UNAUTHORIZED', channel: 'lobby:1' },
    'the INSERT policies deny presence on the lobby');
  await alice.subscribe('room:4');
  t.match(await alice.request({ type: 'presence', channel: 'room:4', state: { x: 'y'.repeat(100) } }), { type: 'error', code: 'PAYLOAD_TOO_LARGE' });
  t.match(await alice.request({ type: 'presence', channel: 'room:4', state: [1] }), { type: 'error', code: 'INVALID_MESSAGE' });
  t.match(await alice.request({ type: 'presence', channel: 'room:4', state: { ok: 1 } }), { type: 'presence_updated' });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await bob.subscribe('room:4');
  t.match(await bob.request({ type: 'presence', channel: 'room:4', state: {} }), { type: 'presence_updated' });
  const carol = await TestClient.connect(t, wsUrl, { token: await userToken(CAROL) });
  await carol.subscribe('room:4');
  t.match(await carol.request({ type: 'presence', channel: 'room:4', state: {} }), { type: 'error', code: 'LIMIT_EXCEEDED' },
    'a third member over --max-presence-members 2');
  t.match(await bob.request({ type: 'presence', channel: 'room:4', state: null }), { type: 'presence_left' }, 'state null leaves');
  t.match(await carol.request({ type: 'presence', channel: 'room:4', state: {} }), { type: 'presence_updated' }, 'then there is room');

  const denied = await fetch(`${httpUrl}/api/channels/nowhere:1/presence`);
  t.equal(denied.status, 403, 'GET presence of a channel the caller may not subscribe to: 403');
  t.match(await denied.json(), { error: 'UNAUTHORIZED' });
  const rejections = await (await fetch(`${httpUrl}/metrics`)).text();
  t.match(rejections, /realtimed_limit_rejections_total\{limit="presence_members"\} 1/, 'counted in /metrics');
});

t.test('a lock another role holds does not stall presence: its key cannot be computed (finding 7a)', async (t) => {
  const db = await createDatabase(t);
  await rooms(db);
  const { wsUrl } = await startDaemon(t, db, { poolSize: 2 });
  // Any role may take advisory locks: one takes the key presence_track used to serialize on.
  const intruder = await createLoginRole(t, []);
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: urlFor(db.name, undefined, intruder) });
  await client.connect();
  t.teardown(() => client.end());
  await client.query(`select pg_advisory_lock(hashtext('realtime.presence:' || 'room:7'))`);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await join(alice, 'room:7');
  const started = Date.now();
  t.match(await alice.request({ type: 'presence', channel: 'room:7', state: { here: true } }, 10_000),
    { type: 'presence_updated', key: ALICE }, 'presence is set all the same');
  t.ok(Date.now() - started < 2000, `without waiting on that lock (${Date.now() - started} ms)`);
  const health = await fetch(`${wsUrl.replace('ws://', 'http://')}health`);
  t.equal(health.status, 200, 'and the pool is free');
});
