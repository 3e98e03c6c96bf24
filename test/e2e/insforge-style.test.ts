/**
 * SQL written the way the InsForge realtime documentation writes it runs
 * unchanged, as one script, and then behaves: channel inserts with the full
 * column list and an explicit NULL for "no webhooks", SELECT policies on
 * realtime.channels using realtime.channel_name() and an auth.uid() the
 * application defines, an INSERT policy on realtime.messages using
 * `channel_name LIKE 'chat:%'`, and a SECURITY DEFINER trigger function that
 * publishes `TG_OP || '_order'` events. Real PostgreSQL, a real daemon, real
 * WebSocket clients.
 */
import t from 'tap';

import { createDatabase } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';

/** A DBA's script, in that style, run as one multi-statement query. */
const SCRIPT = `
create schema if not exists auth;
create or replace function auth.uid() returns uuid
language sql stable
as $$ select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
grant usage on schema auth to anon, authenticated;
grant execute on function auth.uid() to anon, authenticated;

create table public.shop_orders (
  id bigint generated always as identity primary key,
  user_id uuid not null,
  status text not null default 'pending',
  total numeric(10, 2) not null
);
grant select on public.shop_orders to authenticated;

insert into realtime.channels (pattern, description, webhook_urls, enabled)
values ('orders', 'Global order events', NULL, true);
insert into realtime.channels (pattern, description, webhook_urls, enabled)
values ('order:%', 'Order updates for one order', NULL, true);
insert into realtime.channels (pattern, description, webhook_urls, enabled)
values ('chat:%', 'Chat rooms', NULL, true);

create policy "users_subscribe_own_orders" on realtime.channels
  for select to authenticated
  using (
    pattern = 'order:%'
    and exists (
      select 1 from public.shop_orders o
      where o.id::text = split_part(realtime.channel_name(), ':', 2)
        and o.user_id = auth.uid()
    )
  );
create policy "authenticated_subscribe_chat" on realtime.channels
  for select to authenticated
  using (pattern = 'chat:%');
create policy "authenticated_publish_chat" on realtime.messages
  for insert to authenticated
  with check (channel_name like 'chat:%');

create or replace function public.notify_order_changes()
returns trigger
language plpgsql
security definer
set search_path = public
as $$
begin
  perform realtime.publish(
    'order:' || NEW.id::text,
    TG_OP || '_order',
    jsonb_build_object('id', NEW.id, 'status', NEW.status, 'total', NEW.total)
  );
  return NEW;
end;
$$;
create trigger order_realtime
  after insert or update on public.shop_orders
  for each row execute function public.notify_order_changes();
`;

t.test('the InsForge-style script runs as one, and its channels, policies and trigger behave', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(SCRIPT);
  const channels = await db.pool.query<{ pattern: string; webhook_urls: string[]; metadata: object; enabled: boolean }>(
    'select pattern, webhook_urls, metadata, enabled from realtime.channels order by pattern',
  );
  t.same(channels.rows, [
    { pattern: 'chat:%', webhook_urls: [], metadata: {}, enabled: true },
    { pattern: 'order:%', webhook_urls: [], metadata: {}, enabled: true },
    { pattern: 'orders', webhook_urls: [], metadata: {}, enabled: true },
  ], 'NULL webhook_urls stored as none');

  const order = (await db.pool.query<{ id: string }>(
    `insert into public.shop_orders (user_id, total) values ($1, 42.50) returning id`, [ALICE],
  )).rows[0]?.id;
  const inserted = await db.pool.query<{ event_name: string; channel_name: string; payload: object }>(
    'select event_name, channel_name, payload from realtime.messages order by seq',
  );
  t.same(inserted.rows, [{ event_name: 'INSERT_order', channel_name: `order:${order}`, payload: { id: Number(order), status: 'pending', total: 42.5 } }],
    'the trigger published INSERT_order');

  const { wsUrl } = await startDaemon(t, db);
  const alice = await TestClient.connect(t, wsUrl, { token: await userToken(ALICE) });
  const bob = await TestClient.connect(t, wsUrl, { token: await userToken(BOB) });
  const anon = await TestClient.connect(t, wsUrl);
  t.equal((await alice.subscribe(`order:${order}`)).type, 'subscribed', "alice subscribes to her order (auth.uid() in the policy)");
  t.match(await bob.subscribe(`order:${order}`), { type: 'error', code: 'UNAUTHORIZED' }, "bob may not subscribe to alice's order");
  t.match(await anon.subscribe(`order:${order}`), { type: 'error', code: 'UNAUTHORIZED' }, 'nor may anon');
  t.match(await anon.subscribe('chat:lobby'), { type: 'error', code: 'UNAUTHORIZED' }, 'chat is for authenticated users');

  await db.pool.query(`update public.shop_orders set status = 'paid' where id = $1`, [order]);
  const event = await alice.next((f) => f.type === 'event');
  t.match(event, { channel: `order:${order}`, event: 'UPDATE_order', payload: { id: Number(order), status: 'paid' } }, 'alice receives UPDATE_order');

  t.equal((await alice.subscribe('chat:lobby')).type, 'subscribed');
  t.equal((await bob.subscribe('chat:lobby')).type, 'subscribed');
  const ack = await alice.request({ type: 'publish', channel: 'chat:lobby', event: 'message', payload: { text: 'hi' } });
  t.match(ack, { type: 'published', channel: 'chat:lobby' }, "the LIKE 'chat:%' INSERT policy lets alice publish to chat");
  t.match(await bob.next((f) => f.type === 'event' && f['channel'] === 'chat:lobby'), { event: 'message', payload: { text: 'hi' }, meta: { senderId: ALICE } });
  const denied = await alice.request({ type: 'publish', channel: `order:${order}`, event: 'forged', payload: {} });
  t.match(denied, { type: 'error', code: 'UNAUTHORIZED' }, 'and nowhere else');
});

t.test('NULL means none on update too; other NOT NULL columns still refuse NULL', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern, webhook_urls) values ('hooks', array['https://example.com/hook'])`);
  await db.pool.query(`update realtime.channels set webhook_urls = NULL, metadata = NULL where pattern = 'hooks'`);
  const row = await db.pool.query('select webhook_urls, metadata from realtime.channels');
  t.same(row.rows, [{ webhook_urls: [], metadata: {} }], 'set to NULL: no webhooks, no metadata');
  await t.rejects(
    db.pool.query(`insert into realtime.channels (pattern, description, webhook_urls, enabled) values ('x', NULL, NULL, NULL)`),
    { code: '23502', column: 'enabled' },
    'enabled NULL is not guessed: a not-null violation naming the column',
  );
});
