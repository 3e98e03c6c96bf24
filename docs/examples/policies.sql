-- Example policies for docs/sql.md, tested verbatim by pgtap/policies.sql.
-- An application with orders (each has an owner) and chat rooms (with members).
create schema app;
create table app.orders (id bigint primary key, owner_id uuid not null, status text not null default 'new');
create table app.chat_members (chat_id bigint, user_id uuid, primary key (chat_id, user_id));
grant usage on schema app to authenticated;
grant select on app.orders to authenticated;

-- The channels clients may use.
insert into realtime.channels (pattern, description) values
  ('orders', 'Public feed of new orders'),
  ('order:%', 'One order, for its owner'),
  ('chat:%', 'One chat room, for its members');

-- orders: a public feed; anyone may subscribe, with or without a token.
create policy "orders: everyone subscribes" on realtime.channels
  for select to anon, authenticated
  using (pattern = 'orders');

-- order:<id>: only the order's owner may subscribe. The subquery runs as the
-- client's role, so authenticated needs SELECT on app.orders (and any RLS
-- policy on app.orders applies inside this one too).
create policy "order:<id>: the owner subscribes" on realtime.channels
  for select to authenticated
  using (pattern = 'order:%' and exists (
    select from app.orders o
    where o.id::text = split_part(realtime.channel_name(), ':', 2)
      and o.owner_id = realtime.uid()));

-- chat:<id>: members subscribe and publish. A SECURITY DEFINER helper reads
-- the membership table, so clients need no privilege on it.
create function app.is_chat_member(chat text) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (select from app.chat_members m
                 where m.chat_id::text = chat and m.user_id = realtime.uid())
$$;
revoke execute on function app.is_chat_member(text) from public;
grant execute on function app.is_chat_member(text) to authenticated;

create policy "chat:<id>: members subscribe" on realtime.channels
  for select to authenticated
  using (pattern = 'chat:%' and app.is_chat_member(split_part(realtime.channel_name(), ':', 2)));

-- Publishing is an INSERT into realtime.messages: the new row's channel_name
-- is the concrete channel ('chat:7').
create policy "chat:<id>: members publish" on realtime.messages
  for insert to authenticated
  with check (split_part(channel_name, ':', 1) = 'chat'
              and app.is_chat_member(split_part(channel_name, ':', 2)));
