-- realtime.send_batch and realtime.authorize_subscriptions (000015): client
-- publishes in one statement and one commit, subscribe checks in one round
-- trip. Each item is answered as it is alone; a failing item fails alone.
begin;
select plan(25);

select has_function('realtime', 'send_batch', array['text[]', 'jsonb[]', 'text[]', 'text[]', 'jsonb[]', 'text[]'], 'send_batch exists');
select isnt_definer('realtime', 'send_batch', array['text[]', 'jsonb[]', 'text[]', 'text[]', 'jsonb[]', 'text[]'], 'send_batch runs as the daemon, each item as its client');
select function_privs_are('realtime', 'send_batch', array['text[]', 'jsonb[]', 'text[]', 'text[]', 'jsonb[]', 'text[]'], 'service_role', array['EXECUTE'], 'the daemon may call send_batch');
select function_privs_are('realtime', 'send_batch', array['text[]', 'jsonb[]', 'text[]', 'text[]', 'jsonb[]', 'text[]'], 'authenticated', array[]::text[], 'clients may not');
select function_privs_are('realtime', 'send_batch', array['text[]', 'jsonb[]', 'text[]', 'text[]', 'jsonb[]', 'text[]'], 'public', array[]::text[], 'nor may PUBLIC');
select has_function('realtime', 'authorize_subscriptions', array['text[]', 'jsonb[]', 'text[]', 'uuid'], 'authorize_subscriptions exists');
select isnt_definer('realtime', 'authorize_subscriptions', array['text[]', 'jsonb[]', 'text[]', 'uuid'], 'authorize_subscriptions runs as the daemon');
select function_privs_are('realtime', 'authorize_subscriptions', array['text[]', 'jsonb[]', 'text[]', 'uuid'], 'service_role', array['EXECUTE'], 'the daemon may call authorize_subscriptions');
select function_privs_are('realtime', 'authorize_subscriptions', array['text[]', 'jsonb[]', 'text[]', 'uuid'], 'anon', array[]::text[], 'clients may not');

\ir ../docs/examples/policies.sql
insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');
insert into app.orders values (42, 'a11ce000-0000-4000-8000-000000000001');
-- A second policy, for anon: anyone may publish to lobby:%.
insert into realtime.channels (pattern) values ('lobby:%');
create policy rt_test_lobby on realtime.messages for insert to anon with check (realtime.channel_name() like 'lobby:%');

create role rt_test_daemon login;
grant anon, authenticated, service_role to rt_test_daemon;

-- A mixed batch: allowed (two roles, two policies), denied, unknown channel,
-- an anonymous dedupe key, and one key used twice by one sender.
create temporary table batch as select * from realtime.send_batch(null, null, null, null, null, null) limit 0;
grant all on batch to public;
set local role rt_test_daemon;
insert into batch select * from realtime.send_batch(
  array['authenticated', 'authenticated', 'anon', 'authenticated', 'anon', 'authenticated', 'authenticated'],
  array['{"sub": "a11ce000-0000-4000-8000-000000000001"}', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', '{}',
        '{"sub": "a11ce000-0000-4000-8000-000000000001"}', '{}',
        '{"sub": "a11ce000-0000-4000-8000-000000000001"}', '{"sub": "a11ce000-0000-4000-8000-000000000001"}']::jsonb[],
  array['chat:7', 'chat:7', 'lobby:1', 'nowhere:1', 'lobby:1', 'chat:7', 'chat:7'],
  array['m', 'm', 'm', 'm', 'm', 'm', 'm'],
  array['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": 5}', '{"n": 6}', '{"n": 7}']::jsonb[],
  array[null, null, null, null, 'k', 'k1', 'k1']);
select is(current_user::text, session_user::text, 'send_batch returns with the session''s own role');
reset role;
select results_eq($$select ord, id is not null, seq is not null, duplicate, error_code from batch order by ord$$,
  $$values (1, true, true, false, null::text), (2, false, false, null::boolean, '42501'), (3, true, true, false, null),
           (4, false, false, null, 'RT404'), (5, false, false, null, 'RT400'), (6, true, true, false, null), (7, true, true, true, null)$$,
  'each item answered as alone: a member''s and anon''s publishes under their own policies, a non-member denied, no channel RT404, an anonymous key RT400, a repeated key a duplicate');
select is((select id from batch where ord = 7), (select id from batch where ord = 6), 'the repeat returns the first message of its key');
select results_eq($$select payload ->> 'n', sender_type from realtime.messages order by seq$$,
  $$values ('1', 'user'), ('3', 'user'), ('6', 'user')$$,
  'only the allowed items were written: the failed ones rolled back alone');
select results_eq($$select m.seq from realtime.messages m join batch b on b.id = m.id and not b.duplicate order by m.seq$$,
  $$select seq from batch where id is not null and not duplicate order by seq$$, 'the returned seqs are the stored rows''');
select is((select error_message from batch where ord = 2), 'new row violates row-level security policy for table "messages"', 'the error message is the one alone');

set local role rt_test_daemon;
select throws_ok($$select * from realtime.send_batch(array_fill('anon'::text, array[65]), array_fill('{}'::jsonb, array[65]),
  array_fill('lobby:1'::text, array[65]), array_fill('m'::text, array[65]), array_fill('{}'::jsonb, array[65]), array_fill(null::text, array[65]))$$,
  '22023', null, 'at most 64 items: the subtransaction ids a backend caches');
select throws_ok($$select * from realtime.send_batch(array['anon'], array['{}']::jsonb[], array['lobby:1'], array['m'], array[]::jsonb[], array[null])$$,
  '22023', null, 'arrays of different lengths are refused');
select is_empty($$select * from realtime.send_batch(array[]::text[], array[]::jsonb[], array[]::text[], array[]::text[], array[]::jsonb[], array[]::text[])$$,
  'an empty batch: no row');
reset role;

-- authorize_subscriptions: each row is authorize_subscription's alone.
create temporary table checks (ord int, role text, claims jsonb, channel text);
insert into checks values
  (1, 'anon', '{}', 'orders'),
  (2, 'authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'chat:7'),
  (3, 'authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', 'chat:7'),
  (4, 'authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'order:42'),
  (5, 'anon', '{}', 'order:42'),
  (6, 'nosuchrole', '{}', 'orders'),
  (7, 'authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', 'order:42'),
  (8, 'anon', '{}', 'nowhere:1');
grant all on checks to public;
create temporary table together as select * from realtime.authorize_subscriptions(null, null, null, null) limit 0;
grant all on together to public;
set local role rt_test_daemon;
create temporary table before as select current_setting('request.jwt.claims', true) as claims;
insert into together select * from realtime.authorize_subscriptions(
  (select array_agg(role order by ord) from checks), (select array_agg(claims order by ord) from checks),
  (select array_agg(channel order by ord) from checks), '00000000-0000-4000-8000-000000000000');
select is(current_user::text, 'rt_test_daemon', 'authorize_subscriptions returns with the caller''s role');
select is(current_setting('request.jwt.claims', true), (select claims from before), 'and leaves no item''s claims set');
reset role;
select results_eq($$select ord, channel_id is not null, error_code from together order by ord$$,
  $$values (1, true, null::text), (2, true, null), (3, false, null), (4, true, null), (5, false, null),
           (6, false, '42704'), (7, false, null), (8, false, null)$$,
  'allowed, denied and failing checks side by side, each answered for its own role and claims');
select is((select count(*)::int from together t join checks c using (ord)
           where t.error_code is null
             and row(t.channel_id, t.max_seq, t.max_subscribers, t.other_subscribers) is not distinct from
                 (select row(a.channel_id, a.max_seq, a.max_subscribers, a.other_subscribers)
                  from realtime.authorize_subscription(c.role, c.claims, c.channel, '00000000-0000-4000-8000-000000000000') a)),
          7, 'every answered check is exactly what authorize_subscription gives alone');
select is(current_user::text, session_user::text, '(and those calls alone left the role as it was)');
select is((select max_seq from together where ord = 1), (select max_seq from realtime.stream_info()), 'the stream position comes with each answer');
select is((select count(*)::int from together where error_code is null and epoch is null), 0, 'every answered check carries the epoch');

select * from finish();
rollback;
