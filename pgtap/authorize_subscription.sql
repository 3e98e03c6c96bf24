-- realtime.authorize_subscribe(role, claims, channel) and
-- realtime.authorize_subscription(role, claims, channel, instance): the
-- subscribe check the daemon makes as the client, one statement each.
-- authorize_subscription, called per subscribe, also returns the stream
-- position (read as the daemon first) and the matched channel's limits;
-- its other_subscribers is tested in channel_subscribers.sql.
begin;
select plan(24);

select has_function('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authorize_subscribe exists');
select isnt_definer('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authorize_subscribe runs as the daemon, then as the client');
select function_privs_are('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'service_role', array['EXECUTE'], 'service_role (the daemon) may authorize');
select function_privs_are('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authenticated', array[]::text[], 'clients may not');
select has_function('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'authorize_subscription exists');
select isnt_definer('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'it runs as the daemon, then as the client');
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'service_role', array['EXECUTE'], 'the daemon may call it');
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'authenticated', array[]::text[], 'clients may not');
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'public',
  array[]::text[], 'nor PUBLIC');
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text', 'uuid'], 'anon',
  array[]::text[], 'nor anon');

\ir ../docs/examples/policies.sql
insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');

-- The daemon's login role: member of the roles it impersonates, nothing more.
create role rt_test_daemon login;
grant anon, authenticated, service_role to rt_test_daemon;

-- authorize_subscribe: the matched channel id when the SELECT policies allow, else NULL.
set local role rt_test_daemon;
select isnt(realtime.authorize_subscribe('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'chat:7'), null,
  'a member is authorized for chat:7');
select is(current_user::text, 'authenticated', 'the statement left the role set (it ends with the transaction)');
reset role;
set local role rt_test_daemon;
create temporary table granted as select null::uuid as id;
grant all on granted to public;
set local role rt_test_daemon;
update granted set id = realtime.authorize_subscribe('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'chat:7');
reset role;
select is((select c.pattern from realtime.channels c, granted g where c.id = g.id), 'chat:%', 'the result is the matched channel id');
reset role;
set local role rt_test_daemon;
select is(realtime.authorize_subscribe('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', 'chat:7'), null,
  'a non-member is not');
reset role;
set local role rt_test_daemon;
select is(realtime.authorize_subscribe('anon', '{}', 'chat:7'), null, 'anon is not');
reset role;
set local role rt_test_daemon;
select throws_ok($$select realtime.authorize_subscribe('authenticated', '{}', 'chat 7')$$, 'RT400', null, 'an invalid name is RT400');
reset role;

-- authorize_subscription: the stream position (read as the daemon) and the check, one statement.
create temporary table answers (who text, channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint);
grant all on answers to public;
set local role rt_test_daemon;
insert into answers select 'alice', a.channel_id, a.epoch, a.max_seq, a.pruned_through_seq
  from realtime.authorize_subscription('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'chat:7',
                                       '00000000-0000-4000-8000-000000000001') a;
reset role;
set local role rt_test_daemon;
insert into answers select 'bob', a.channel_id, a.epoch, a.max_seq, a.pruned_through_seq
  from realtime.authorize_subscription('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', 'chat:7',
                                       '00000000-0000-4000-8000-000000000001') a;
reset role;
select is((select c.pattern from realtime.channels c join answers a on a.channel_id = c.id where a.who = 'alice'), 'chat:%', 'a member gets the matched channel id');
select is((select channel_id from answers where who = 'bob'), null, 'a non-member gets NULL');
select results_eq($$select epoch, max_seq, pruned_through_seq from answers where who = 'alice'$$,
                  $$select epoch, max_seq, pruned_through_seq from realtime.stream_info()$$,
                  'and the stream position is realtime.stream_info()''s');
select is((select count(distinct epoch)::int from answers), 1, 'allowed or not, the same epoch');
set local role rt_test_daemon;
select throws_ok($$select * from realtime.authorize_subscription('authenticated', '{}', 'chat 7', '00000000-0000-4000-8000-000000000001')$$,
  'RT400', null, 'an invalid name is RT400');
reset role;

-- The matched channel's limits, read as the daemon (the client may not see them all).
insert into realtime.channels (pattern, max_message_bytes, publish_rate, max_subscribers, metadata)
values ('small:%', 20, 5, 3, '{"tier": "free"}');
create policy rt_test_small_select on realtime.channels for select to anon using (pattern = 'small:%');
select results_eq($$select channel_id is not null, max_subscribers, publish_rate, max_message_bytes
                    from realtime.authorize_subscription('anon', '{}', 'small:7', '00000000-0000-4000-8000-000000000001')$$,
                  $$values (true, 3, 5, 20)$$, 'allowed: the channel id and its limits');
select results_eq($$select channel_id, max_subscribers
                    from realtime.authorize_subscription('anon', '{}', 'other:7', '00000000-0000-4000-8000-000000000001')$$,
                  $$values (null::uuid, null::integer)$$, 'no channel: NULL id, no limits');
select is(current_setting('role'), 'none', 'the statement leaves the role as it found it (the daemon''s own)');

select * from finish();
rollback;
