/**
 * What pgTAP cannot see of realtime.publish(): the WARNING a DBA's client
 * receives when a message is dropped, with the caller's transaction going on;
 * and the ways a publish used to abort the business write, each with two
 * sessions: no grants of the writer's own, a channel deleted meanwhile, dedupe
 * keys in opposite orders, REPEATABLE READ (issue 14).
 */
import t from 'tap';
import pg from 'pg';

import { createDatabase, urlFor, type Teardown } from '../helpers/db.js';

t.test('a dropped publish warns, returns NULL and leaves the transaction usable', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  t.teardown(() => client.end());
  const notices: { severity?: string; message?: string; hint?: string }[] = [];
  client.on('notice', (n) => notices.push(n));

  await client.query('begin');
  const dropped = await client.query<{ id: string | null }>(`select realtime.publish('nowhere:1', 'created', '{}') as id`);
  await client.query(`update realtime.config set max_payload_bytes = 10`);
  const big = await client.query<{ id: string | null }>(`select realtime.publish('order:1', 'created', '{"text": "0123456789"}') as id`);
  const ok = await client.query<{ id: string | null }>(`select realtime.publish('order:1', 'created', '{}') as id`);
  await client.query('commit');

  t.equal(dropped.rows[0]?.id, null, 'no channel: NULL');
  t.equal(big.rows[0]?.id, null, 'over the cap: NULL');
  t.type(ok.rows[0]?.id, 'string', 'the transaction went on and published');
  t.same(
    notices.map((n) => [n.severity, n.message]),
    [
      ['WARNING', 'realtime.publish: message to channel "nowhere:1" dropped: no_channel'],
      ['WARNING', 'realtime.publish: message to channel "order:1" dropped: payload_too_large'],
    ],
    'each drop raised a WARNING naming channel and reason',
  );
  t.match(notices[0]?.hint, 'realtime.dropped_messages');
  const log = await db.pool.query<{ reason: string }>('select reason from realtime.dropped_messages order by id');
  t.same(log.rows.map((r) => r.reason), ['no_channel', 'payload_too_large'], 'and was recorded');
});

/** A client of its own for one session of the story. */
async function session(t: Teardown, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, statement_timeout: 10_000 });
  client.on('error', () => {});
  await client.connect();
  t.teardown(() => client.end().catch(() => {}));
  return client;
}

t.test('an application role with no realtime grants of its own: its trigger publishes, its write commits', async (t) => {
  const db = await createDatabase(t);
  const role = `rt_test_app_${process.pid}`;
  await db.pool.query(`
    drop role if exists ${role};
    create role ${role} login;
    insert into realtime.channels (pattern) values ('order:%');
    create schema app authorization ${role};`);
  t.teardown(() => db.pool.query(`drop schema app cascade; drop owned by ${role}; drop role ${role}`).catch(() => {}));
  const app = await session(t, urlFor(db.name, undefined, role));
  await app.query(`
    create table app.orders (id int primary key, status text not null);
    create function app.orders_publish() returns trigger language plpgsql as $$
    begin
      perform realtime.publish('order:' || new.id, 'status', jsonb_build_object('status', new.status));
      return new;
    end $$;
    create trigger orders_publish after insert or update on app.orders for each row execute function app.orders_publish();
    insert into app.orders values (1, 'new');
    update app.orders set status = 'paid' where id = 1;`);
  const { rows } = await db.pool.query(`select payload->>'status' as s from realtime.messages order by seq`);
  t.same(rows.map((r) => r.s), ['new', 'paid'], 'both writes committed, both published');
});

t.test('a channel deleted while a publish to it is under way: the publish neither waits nor fails', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const admin = await session(t, db.url);
  const writer = await session(t, db.url);
  await admin.query(`begin; delete from realtime.channels where pattern = 'order:%'`);
  // Before 000013 the message's foreign key waited for the delete, then failed the writer.
  await writer.query(`begin; select realtime.publish('order:1', 'created', '{}'); commit`);
  await admin.query('commit');
  const { rows } = await db.pool.query(`select channel_name, channel_id is not null as has_channel from realtime.messages`);
  t.same(rows, [{ channel_name: 'order:1', has_channel: true }], 'the message is written, its channel_id kept');
});

t.test('dedupe keys taken in opposite orders by two transactions: no deadlock, each key written once', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const a = await session(t, db.url);
  const b = await session(t, db.url);
  const notices: string[] = [];
  for (const c of [a, b]) c.on('notice', (n) => notices.push(n.message ?? ''));
  await a.query(`begin; select realtime.publish('order:1', 'e', '{"by": "a"}', 'k1')`);
  await b.query(`begin; select realtime.publish('order:1', 'e', '{"by": "b"}', 'k2')`);
  // Each now asks for the key the other holds: before 000013 both waited, and one was killed.
  const aSecond = await a.query<{ id: string | null }>(`select realtime.publish('order:1', 'e', '{"by": "a"}', 'k2') as id`);
  const bSecond = await b.query<{ id: string | null }>(`select realtime.publish('order:1', 'e', '{"by": "b"}', 'k1') as id`);
  await a.query('commit');
  await b.query('commit');
  t.equal(aSecond.rows[0]?.id, null, 'a key held by a transaction in progress is a repeat: NULL, at once');
  t.equal(bSecond.rows[0]?.id, null, 'both ways');
  t.equal(notices.filter((n) => /in use by a transaction in progress/.test(n)).length, 2, 'each with a NOTICE');
  const { rows } = await db.pool.query(`select dedupe_key, payload->>'by' as by from realtime.messages order by dedupe_key`);
  t.same(rows, [{ dedupe_key: 'k1', by: 'a' }, { dedupe_key: 'k2', by: 'b' }], 'each key written once, by the first');
});

t.test('REPEATABLE READ meets a dedupe key committed after its snapshot: a repeat, not a serialization failure', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const reader = await session(t, db.url);
  await reader.query(`begin isolation level repeatable read; select count(*) from realtime.channels`);
  await db.pool.query(`select realtime.publish('order:1', 'e', '{"by": "first"}', 'k')`);
  const again = await reader.query<{ id: string | null }>(`select realtime.publish('order:1', 'e', '{"by": "second"}', 'k') as id`);
  await reader.query('commit');
  t.equal(again.rows[0]?.id, null, 'NULL: the first is not visible to this snapshot');
  const { rows } = await db.pool.query(`select payload->>'by' as by from realtime.messages`);
  t.same(rows, [{ by: 'first' }], 'written once');
});
