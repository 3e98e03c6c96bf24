-- realtime.publish(): system messages for triggers and server code. Never
-- aborts the caller; drops are recorded; dedupe; who may call it (by
-- privilege: realtime.may_publish, never trigger depth).
-- (The WARNING itself and the NOTIFY are checked in test/publish.test.ts and
-- test/notify.test.ts: pgTAP cannot see either.)
begin;
select plan(46);
set local client_min_messages = error; -- the drops below each raise a WARNING

select has_function('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'publish(channel, event, payload, dedupe_key) exists');
select function_returns('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'uuid', 'publish returns the message id');
select isnt_definer('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'publish runs as its caller (SECURITY INVOKER)');
select is((select proconfig from pg_proc where oid = 'realtime.publish(text,text,jsonb,text)'::regprocedure),
  array['search_path=""'], 'publish runs with search_path = ''''');
select volatility_is('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'volatile', 'publish is VOLATILE');
select function_privs_are('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'service_role', array['EXECUTE'],
  'service_role may publish');
select function_privs_are('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'public', array['EXECUTE'],
  'any role may call it (and the body decides)');

insert into realtime.channels (pattern) values ('order:%'), ('closed');
update realtime.channels set enabled = false where pattern = 'closed';

-- Success: the id of a system message on the matched channel.
create temporary table ids (label text, id uuid) on commit drop;
insert into ids select 'first', realtime.publish('order:42', 'status_changed', '{"status": "paid"}');
select isnt((select id from ids where label = 'first'), null, 'publish returns an id');
select results_eq(
  $$select m.channel_name, m.event_name, m.payload, m.sender_type, m.sender_id, c.pattern
    from realtime.messages m join realtime.channels c on c.id = m.channel_id
    where m.id = (select id from ids where label = 'first')$$,
  $$values ('order:42'::text, 'status_changed'::text, '{"status": "paid"}'::jsonb, 'system'::text, null::uuid, 'order:%'::text)$$,
  'the row is a system message with no sender id, on the matched channel');
select is(realtime.publish('order:43', 'created', null) is not null, true, 'a NULL payload is published as {}');
select is((select payload from realtime.messages where channel_name = 'order:43'), '{}'::jsonb, '... stored as {}');

-- Drops: NULL, nothing written, a row in realtime.dropped_messages, the caller's transaction goes on.
select is(realtime.publish('nowhere:1', 'e', '{}'), null, 'no matching channel: NULL');
select is(realtime.publish('closed', 'e', '{}'), null, 'disabled channel: NULL');
select is(realtime.publish('order: 1', 'e', '{}'), null, 'invalid channel name: NULL');
select is(realtime.publish(null, 'e', '{}'), null, 'NULL channel name: NULL');
select is(realtime.publish('order:1', '', '{}'), null, 'empty event name: NULL');
select is(realtime.publish('order:1', 'e', '[1, 2]'), null, 'payload not an object: NULL');
select is(realtime.publish('order:1', 'e', '{}', ''), null, 'empty dedupe key: NULL');
update realtime.config set max_payload_bytes = 64;
select is(realtime.publish('order:1', 'e', jsonb_build_object('text', repeat('x', 64))), null, 'payload over the cap: NULL');
update realtime.config set max_payload_bytes = 65536;
select results_eq(
  'select channel_name, reason, payload_bytes from realtime.dropped_messages order by id',
  $$values ('nowhere:1'::text, 'no_channel'::text, null::int), ('closed', 'no_channel', null), ('order: 1', 'invalid_channel_name', null),
           ('', 'invalid_channel_name', null), ('order:1', 'invalid_event_name', null), ('order:1', 'invalid_payload', null),
           ('order:1', 'invalid_dedupe_key', null), ('order:1', 'payload_too_large', 76)$$,
  'every drop is recorded with its reason (and size when measured)');
select is((select count(*)::int from realtime.messages), 2, 'no dropped message was written');
select lives_ok($$select realtime.publish(repeat('n', 10000), repeat('e', 10000), '{}')$$,
  'absurd inputs are dropped, not raised');
select is((select octet_length(channel_name) from realtime.dropped_messages order by id desc limit 1), 255,
  'the drop log keeps 255 characters of a long name');

-- Dedupe: the same key on the same channel returns the first id and writes nothing.
insert into ids select 'd1', realtime.publish('order:42', 'shipped', '{"n": 1}', 'ship-42');
insert into ids select 'd2', realtime.publish('order:42', 'shipped', '{"n": 2}', 'ship-42');
select is((select id from ids where label = 'd2'), (select id from ids where label = 'd1'), 'a repeated dedupe key returns the first id');
select is((select count(*)::int from realtime.messages where dedupe_key = 'ship-42'), 1, 'and writes one message');
select is((select payload from realtime.messages where dedupe_key = 'ship-42'), '{"n": 1}'::jsonb, 'the first payload stands');
insert into ids select 'd3', realtime.publish('order:43', 'shipped', '{}', 'ship-42');
select isnt((select id from ids where label = 'd3'), (select id from ids where label = 'd1'), 'the same key on another channel is another message');

-- Who may call it: not a client role directly ...
select realtime.impersonate('anon');
select throws_ok($$select realtime.publish('order:42', 'e', '{}')$$, '42501', null, 'anon calling publish() directly: insufficient_privilege');
reset role;
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select throws_ok($$select realtime.publish('order:42', 'e', '{}')$$, '42501', null, 'authenticated calling publish() directly: insufficient_privilege');
reset role;
create role rt_test_customer nologin in role authenticated;
set local role rt_test_customer;
select throws_ok($$select realtime.publish('order:42', 'e', '{}')$$, '42501', null, 'nor a role that is a member of authenticated');
reset role;
select realtime.impersonate('service_role');
select lives_ok($$select realtime.publish('order:42', 'from-server', '{}')$$, 'service_role calls it directly');
reset role;
create role rt_test_app nologin;
set local role rt_test_app;
select isnt(realtime.publish('order:42', 'from-app', '{}'), null, 'an application role with no realtime grants publishes');
reset role;
select is((select sender_type from realtime.messages where event_name = 'from-app'), 'system', 'a system message');

-- ... nor through a trigger of its own: a temporary table's, as anon and as authenticated.
select realtime.impersonate('anon');
create temporary table rt_test_anon_t (x int);
create function pg_temp.rt_test_forge() returns trigger language plpgsql as $fn$
begin perform realtime.publish('order:42', 'forged', '{}'); return new; end $fn$;
create trigger rt_test_forge after insert on rt_test_anon_t for each row execute function pg_temp.rt_test_forge();
select lives_ok($$insert into rt_test_anon_t values (1)$$, 'anon''s own insert goes on ...');
reset role;
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
create temporary table rt_test_auth_t (x int);
create trigger rt_test_forge after insert on rt_test_auth_t for each row execute function pg_temp.rt_test_forge();
select lives_ok($$insert into rt_test_auth_t values (1)$$, 'and so does authenticated''s ...');
reset role;
select is((select count(*)::int from realtime.messages where event_name = 'forged'), 0, '... but no system message is written');
select is((select count(*)::int from realtime.dropped_messages where reason = 'not_allowed'), 2, 'each is recorded as not_allowed');

-- An ordinary (SECURITY INVOKER) trigger fired by a client's write runs as the
-- client: its message is dropped, the business write commits.
create schema app;
create table app.orders (id int primary key, status text not null);
grant usage on schema app to authenticated;
grant select, insert, update on app.orders to authenticated;
create function app.orders_publish() returns trigger language plpgsql as $fn$
begin
  perform realtime.publish('order:' || new.id, 'status_changed', jsonb_build_object('status', new.status));
  return new;
end
$fn$;
create trigger orders_publish after insert or update on app.orders for each row execute function app.orders_publish();
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select lives_ok($$insert into app.orders values (7, 'new')$$, 'authenticated inserts a row whose invoker trigger publishes');
reset role;
select is((select count(*)::int from realtime.messages where channel_name = 'order:7'), 0, 'its message is not written');

-- A SECURITY DEFINER trigger function, owned by a role that may publish, publishes for client writes.
alter function app.orders_publish() security definer set search_path = '';
revoke execute on function app.orders_publish() from public;
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select lives_ok($$update app.orders set status = 'paid' where id = 7$$, 'authenticated updates the row');
reset role;
select results_eq($$select sender_type, payload from realtime.messages where channel_name = 'order:7'$$,
  $$values ('system'::text, '{"status": "paid"}'::jsonb)$$, 'the definer trigger published a system message');

-- A publish never aborts the business write, even when the channel is missing.
delete from realtime.channels where pattern = 'order:%';
select lives_ok($$insert into app.orders values (8, 'new')$$, 'the business write succeeds when the channel is gone');
select is((select count(*)::int from app.orders), 2, 'both orders are written');

-- Without a dedupe key: a plain INSERT (no arbiter index to check), one message, one id.
insert into realtime.channels (pattern) values ('fast:%');
select isnt(realtime.publish('fast:1', 'e', '{"n": 1}'), null, 'publish without a dedupe key returns an id');
select is((select count(*)::int from realtime.messages where channel_name = 'fast:1' and dedupe_key is null), 1,
          'and writes one system message');

-- A channel's max_message_bytes is for clients; system messages keep the global cap only.
insert into realtime.channels (pattern, max_message_bytes) values ('small:%', 20);
select isnt(realtime.publish('small:1', 'e', '{"a": "0123456789012345678"}'), null,
  'system messages (realtime.publish) keep the global cap only');

select * from finish();
rollback;
