/**
 * The notification envelope the daemon LISTENs for: one per committed
 * message, on channel realtime_messages, small whatever the payload.
 * (pgTAP cannot see notifications: they are sent at commit.)
 */
import t, { type Test } from 'tap';
import pg from 'pg';

import { createDatabase } from '../helpers/db.js';

interface Envelope {
  v: number;
  id: string;
  seq: number;
  channel: string;
}

async function listener(t: Test, url: string): Promise<{ received: pg.Notification[]; flushNotifications: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  const received: pg.Notification[] = [];
  client.on('notification', (n) => received.push(n));
  await client.query('listen realtime_messages');
  // A round trip on a second connection after the commit makes sure any
  // notification has been sent; then one on the listener delivers it.
  const flushNotifications = async (): Promise<void> => {
    await client.query('select 1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await client.query('select 1');
  };
  return { received, flushNotifications };
}

t.test('each committed message is notified with {v, id, seq, channel}; rollback sends nothing', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const { received, flushNotifications } = await listener(t, db.url);

  const big = { blob: 'x'.repeat(60 * 1024) };
  const { rows } = await db.pool.query<{ small: string; large: string }>(
    `select realtime.publish('order:1', 'created', '{"n":1}') as small,
            realtime.publish('order:2', 'created', $1::jsonb) as large`,
    [JSON.stringify(big)],
  );
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query(`select realtime.publish('order:3', 'created', '{}')`);
    await client.query('rollback');
  } finally {
    client.release();
  }
  await flushNotifications();

  t.equal(received.length, 2, 'two committed messages, two notifications; the rolled-back one is never sent');
  const envelopes = received.map((n) => {
    t.equal(n.channel, 'realtime_messages');
    t.ok(Buffer.byteLength(n.payload ?? '') < 600, `envelope is small (${Buffer.byteLength(n.payload ?? '')} bytes)`);
    return JSON.parse(n.payload ?? '') as Envelope;
  });
  const stored = await db.pool.query<{ id: string; seq: string; channel_name: string }>(
    'select id, seq, channel_name from realtime.messages order by seq',
  );
  t.same(
    envelopes.map((e) => [e.v, e.id, String(e.seq), e.channel]),
    stored.rows.map((r) => [1, r.id, r.seq, r.channel_name]),
    'the envelope names the stored row, never its payload',
  );
  t.equal(envelopes[1]?.id, rows[0]?.large);
});

t.test('client inserts are notified the same way; a dedupe repeat is not notified', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`
    insert into realtime.channels (pattern) values ('chat:%');
    create policy anyone_signed_in on realtime.messages for insert to authenticated with check (true);`);
  const { received, flushNotifications } = await listener(t, db.url);

  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query(`select realtime.impersonate('authenticated', '{"sub":"7b0e3f5c-2d1a-4e8b-9c6d-5a4f3e2d1c0b"}')`);
    await client.query(`insert into realtime.messages (channel_name, event_name, payload) values ('chat:7', 'message', '{"text":"hi"}')`);
    await client.query('commit');
  } finally {
    client.release();
  }
  await db.pool.query(`select realtime.publish('chat:7', 'notice', '{}', 'once')`);
  await db.pool.query(`select realtime.publish('chat:7', 'notice', '{}', 'once')`);
  await flushNotifications();

  t.same(
    received.map((n) => (JSON.parse(n.payload ?? '') as Envelope).channel),
    ['chat:7', 'chat:7'],
    'the client message and the first dedupe publish; the repeat is silent',
  );
  const count = await db.pool.query<{ n: number }>('select count(*)::int as n from realtime.messages');
  t.equal(count.rows[0]?.n, 2);
});
