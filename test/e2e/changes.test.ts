/**
 * Table change streams end to end: realtime.enable_changes() on a real table
 * with its own row-level security, the daemon's batched row check
 * (realtime.change_audience), column lists, the three operations, per-row
 * channels, public streams, replay, filters, and a statement burst.
 */
import t from 'tap';

import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient, type Frame } from '../helpers/ws.js';
import { settle, until } from '../helpers/wait.js';


/** shop.orders: each user sees only their own rows; `card` must never leave the table. */
async function shop(db: TestDatabase, options = `columns => array['status', 'owner']`): Promise<void> {
  await db.pool.query(`
    create schema shop;
    create table shop.orders (id integer primary key, owner uuid not null, status text not null, card text);
    alter table shop.orders enable row level security;
    grant usage on schema shop to authenticated;
    grant select on shop.orders to authenticated;
    create policy own_orders on shop.orders for select to authenticated using (owner = realtime.uid());
    select realtime.enable_changes('shop.orders', ${options});
    -- Who may subscribe: any signed-in user, to the stream and to row channels.
    create policy orders_streams on realtime.channels for select to authenticated
      using (pattern in ('orders:changes', 'orders:%'));`);
}

const changes = (client: TestClient): Frame[] => client.events().filter((f) => f['channel'] === 'orders:changes');
const payloadOf = (f: Frame): Record<string, unknown> => f['payload'] as Record<string, unknown>;

t.test('INSERT, UPDATE, DELETE reach only subscribers whose RLS shows the row, with only the listed columns', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  const anon = await TestClient.connect(t, wsUrl);
  t.equal((await alice.subscribe('orders:changes')).type, 'subscribed');
  t.equal((await bob.subscribe('orders:changes')).type, 'subscribed');
  t.match(await anon.subscribe('orders:changes'), { type: 'error', code: 'UNAUTHORIZED' }, 'the channel policy still decides');

  // One step at a time: the row check reads the row as it is when the event is relayed.
  await db.pool.query(`insert into shop.orders values (1, $1, 'new', '4242 4242 4242 4242')`, [ALICE]);
  await alice.next((f) => f.type === 'event' && f['event'] === 'insert', 3000).then((f) => alice.frames.unshift(f));
  await db.pool.query(`update shop.orders set status = 'paid' where id = 1`);
  await alice.next((f) => f.type === 'event' && f['event'] === 'update', 3000).then((f) => alice.frames.push(f));
  await db.pool.query(`insert into shop.orders values (2, $1, 'new', '5555 5555 5555 4444')`, [BOB]);
  await bob.next((f) => f.type === 'event' && f['event'] === 'insert', 3000).then((f) => bob.frames.push(f));
  await db.pool.query(`delete from shop.orders where id = 1`);
  await alice.next((f) => f.type === 'event' && f['event'] === 'delete');
  await bob.next((f) => f.type === 'event' && f['event'] === 'delete');
  await settle(300);

  const a = changes(alice);
  t.same(a.map((f) => f['event']), ['insert', 'update'], 'alice: her own insert and update (the delete was taken above)');
  t.same(payloadOf(a[0] as Frame), {
    op: 'INSERT', schema: 'shop', table: 'orders', old: null, new: { id: 1, owner: ALICE, status: 'new' },
  }, 'INSERT: {op, schema, table, new, old}, no card');
  t.same(payloadOf(a[1] as Frame)['old'], { id: 1 }, 'UPDATE carries only the old row\'s key (no one can be asked about the old version)');
  t.same(payloadOf(a[1] as Frame)['new'], { id: 1, owner: ALICE, status: 'paid' }, 'and the new ones');
  const b = changes(bob);
  t.same(b.map((f) => (payloadOf(f)['new'] as { id: number }).id), [2], 'bob: only his own row, never alice\'s');
  t.notOk(JSON.stringify([...alice.frames, ...bob.frames]).includes('4242'), 'the card number never left the table');
});

t.test('the row is judged when the event is relayed: changed out of view first, the event is withheld', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await alice.subscribe('orders:changes');
  // Inserted and handed to bob in one transaction: by the time it is relayed, alice cannot see it.
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query(`insert into shop.orders values (9, $1, 'new', null)`, [ALICE]);
    await client.query(`update shop.orders set owner = $1 where id = 9`, [BOB]);
    await client.query('commit');
  } finally {
    client.release();
  }
  await db.pool.query(`insert into shop.orders values (10, $1, 'new', null)`, [ALICE]);
  const event = await alice.next((f) => f.type === 'event');
  t.equal((payloadOf(event)['new'] as { id: number }).id, 10, 'row 9 (now bob\'s) never reached alice; row 10 did');
  await settle(300);
  t.equal(changes(alice).length, 0, 'nothing else');
});

t.test('a row handed from one owner to another: nobody receives a version they could not see (finding 4)', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  const { wsUrl } = await startDaemon(t, db);
  const CAROL = 'ca201000-0000-4000-8000-000000000003';
  const clients = {
    alice: await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) }),
    bob: await TestClient.connect(t, wsUrl, { token: await userToken(BOB) }),
    carol: await TestClient.connect(t, wsUrl, { token: await userToken(CAROL) }),
  };
  for (const c of Object.values(clients)) await c.subscribe('orders:changes');
  await db.pool.query(`insert into shop.orders values (20, $1, 'alices-secret-status', null)`, [ALICE]);
  await clients.alice.next((f) => f.type === 'event' && f['event'] === 'insert');
  await db.pool.query(`update shop.orders set owner = $1, status = 'bobs-now' where id = 20`, [BOB]);
  const moved = await clients.bob.next((f) => f.type === 'event' && f['event'] === 'update');
  t.same(payloadOf(moved)['old'], { id: 20 }, "bob's update event carries nothing of alice's version");
  // Inserted for bob and handed to carol in one transaction.
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query(`insert into shop.orders values (21, $1, 'bobs-secret-status', null)`, [BOB]);
    await client.query(`update shop.orders set owner = $1, status = 'carols' where id = 21`, [CAROL]);
    await client.query('commit');
  } finally {
    client.release();
  }
  const handed = await clients.carol.next((f) => f.type === 'event' && (payloadOf(f)['new'] as { id: number }).id === 21);
  t.equal(handed['event'], 'update', 'carol gets the event of her own version ...');
  await settle(300);
  t.notOk(JSON.stringify([...clients.carol.frames, handed]).includes('bobs-secret-status'), "... and never bob's version of row 21");
  t.notOk(JSON.stringify([...clients.bob.frames, moved]).includes('alices-secret-status'), "bob never saw alice's status");
});

t.test('DELETE of a non-public stream: every subscriber, only the key', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  await db.pool.query(`insert into shop.orders values (7, $1, 'new', 'x')`, [ALICE]);
  const { wsUrl } = await startDaemon(t, db);
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await bob.subscribe('orders:changes');
  await db.pool.query(`delete from shop.orders where id = 7`);
  const event = await bob.next((f) => f.type === 'event');
  t.same(payloadOf(event), { op: 'DELETE', schema: 'shop', table: 'orders', new: null, old: { id: 7 } },
    'a deleted row cannot be checked against RLS: its key only');
});

t.test('per-row channels and a public stream', async (t) => {
  const db = await createDatabase(t);
  await shop(db, `public => true`);
  await db.pool.query(`create policy orders_anon on realtime.channels for select to anon using (pattern = 'orders:changes')`);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const anon = await TestClient.connect(t, wsUrl);
  t.equal((await alice.subscribe('orders:3')).type, 'subscribed', 'a row channel');
  t.equal((await anon.subscribe('orders:changes')).type, 'subscribed');
  await db.pool.query(`insert into shop.orders values (3, $1, 'new', 'c3'), (4, $1, 'new', 'c4')`, [BOB]);
  const row = await alice.next((f) => f.type === 'event');
  t.equal(row['channel'], 'orders:3', 'orders:3 gets its own row only');
  t.same((payloadOf(row)['new'] as Record<string, unknown>)['card'], 'c3', 'a public stream without a column list sends every column');
  const seen = [await anon.next((f) => f.type === 'event'), await anon.next((f) => f.type === 'event')];
  t.same(seen.map((f) => (payloadOf(f)['new'] as { id: number }).id), [3, 4], 'public: anon (admitted by the channel policy) sees every row');
  await settle(300);
  t.equal(alice.events().length, 0, 'nothing about row 4 on orders:3');
});

t.test('replay (since) applies the row check too', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  const { wsUrl } = await startDaemon(t, db);
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  const position = await bob.position('orders:changes');
  await db.pool.query(`insert into shop.orders values (1, $1, 'new', null), (2, $2, 'new', null), (3, $1, 'new', null)`, [ALICE, BOB]);
  const reply = await bob.request({ type: 'subscribe', channel: 'orders:changes', ...position });
  t.equal(reply.type, 'subscribed');
  await settle(300);
  t.same(changes(bob).map((f) => (payloadOf(f)['new'] as { id: number }).id), [2], 'bob replays only his own row');
});

t.test('filters: only matching events; grammar errors are INVALID_FILTER', async (t) => {
  const db = await createDatabase(t);
  await shop(db);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const reply = await alice.request({ type: 'subscribe', channel: 'orders:changes', filter: 'status=eq.paid' });
  t.match(reply, { type: 'subscribed', filter: 'status=eq.paid' }, 'the filter is echoed');
  const wide = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  await wide.request({ type: 'subscribe', channel: 'orders:changes', filter: 'id=in.(1,3)&status=neq.cancelled' });

  // One step at a time: an event reaches a subscriber only while its version is the row's current one.
  await db.pool.query(`insert into shop.orders values (1, $1, 'new', null), (2, $1, 'new', null), (3, $1, 'new', null)`, [ALICE]);
  await until('the inserts reached wide', () => changes(wide).length >= 2);
  await db.pool.query(`update shop.orders set status = 'paid' where id in (1, 2)`);
  await until('the updates reached alice', () => changes(alice).length >= 2);
  await db.pool.query(`update shop.orders set status = 'cancelled' where id = 3`);
  await settle(600);
  t.same(changes(alice).map((f) => [f['event'], (payloadOf(f)['new'] as { id: number }).id]), [['update', 1], ['update', 2]],
    'status=eq.paid: the two updates to paid');
  t.same(changes(wide).map((f) => [f['event'], (payloadOf(f)['new'] as { id: number }).id]),
    [['insert', 1], ['insert', 3], ['update', 1]], 'id=in.(1,3)&status=neq.cancelled');

  for (const [filter, why] of [
    ['status', 'no operator'],
    ['status=like.paid', 'an unknown operator'],
    ['status=eq', 'no value'],
    ['id=in.1,2', 'an in without a list'],
    ['bad-column=eq.1', 'a column that is not a name'],
    ['x'.repeat(2000), 'too long'],
    [42, 'not a string'],
  ] as const) {
    const r = await alice.request({ type: 'subscribe', channel: 'orders:1', filter });
    t.match(r, { type: 'error', code: typeof filter === 'string' ? 'INVALID_FILTER' : 'INVALID_MESSAGE' }, why);
  }
});

t.test('a 2,000-row UPDATE in one statement: every owner gets each of its rows; the relay goes on', async (t) => {
  const db = await createDatabase(t);
  await shop(db, `columns => array['status', 'owner'], row_channels => false`);
  await db.pool.query(`create policy news on realtime.channels for select to authenticated using (pattern = 'news')`);
  await db.pool.query(`insert into realtime.channels (pattern) values ('news')`);
  await db.pool.query(`insert into shop.orders select i, case when i % 2 = 0 then $1::uuid else $2::uuid end, 'new', null
                       from generate_series(1, 2000) i`, [ALICE, BOB]);
  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  await alice.subscribe('orders:changes');
  await bob.subscribe('orders:changes');
  await alice.subscribe('news');
  await db.pool.query(`update shop.orders set status = 'shipped'`);
  await db.pool.query(`select realtime.publish('news', 'after', '{}')`);
  await alice.next((f) => f['channel'] === 'news', 30_000);
  t.pass('a message committed after the burst arrives');
  const deadline = Date.now() + 30_000;
  while ((changes(alice).length < 1000 || changes(bob).length < 1000) && Date.now() < deadline) await settle(100);
  await settle(300);
  const ids = (c: TestClient): number[] => changes(c).map((f) => (payloadOf(f)['new'] as { id: number }).id);
  t.equal(ids(alice).length, 1000, 'alice: 1,000 events');
  t.ok(ids(alice).every((id) => id % 2 === 0), 'all of them her rows');
  t.equal(ids(bob).length, 1000, 'bob: 1,000 events');
  t.ok(ids(bob).every((id) => id % 2 === 1), 'all of them his rows');
});
