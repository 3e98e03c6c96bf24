-- What the daemon calls: authorize_subscribe, send, event_frames, and the
-- realtime_channels hint. Each acts as the client for one statement.
begin;
select plan(27);

select has_function('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authorize_subscribe exists');
select has_function('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'send exists');
select has_function('realtime', 'event_frames', array['uuid[]', 'pg_snapshot'], 'event_frames exists');
select isnt_definer('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authorize_subscribe runs as the daemon, then as the client');
select isnt_definer('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'send runs as the daemon, then as the client');
select function_privs_are('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'service_role', array['EXECUTE'], 'service_role (the daemon) may authorize');
select function_privs_are('realtime', 'authorize_subscribe', array['text', 'jsonb', 'text'], 'authenticated', array[]::text[], 'clients may not');
select function_privs_are('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'authenticated', array[]::text[], 'clients may not call send');
select function_privs_are('realtime', 'event_frames', array['uuid[]', 'pg_snapshot'], 'anon', array[]::text[], 'clients may not read frames');
select sequence_privs_are('realtime', 'messages_seq_seq', 'service_role', array['SELECT'], 'the daemon reads currval of seq');
select has_trigger('realtime', 'channels', 'channels_notify', 'channels has the change hint trigger');

\ir ../docs/examples/policies.sql
insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');

-- The daemon's login role: member of the roles it impersonates, nothing more.
create role rt_test_daemon login;
grant anon, authenticated, service_role to rt_test_daemon;
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

-- send: insert as the client; id and seq back; dedupe per sender.
create temporary table sent as select * from realtime.send('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}',
  'chat:7', 'message', '{"text": "hi"}', 'k1') limit 0;
grant all on sent to public;
set local role rt_test_daemon;
insert into sent select * from realtime.send('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}',
  'chat:7', 'message', '{"text": "hi"}', 'k1');
select is(current_user::text, session_user::text, 'send returns with the session''s own role (the daemon''s login)');
reset role;
set local role rt_test_daemon;
insert into sent select * from realtime.send('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}',
  'chat:7', 'message', '{"text": "again"}', 'k1');
reset role;
select results_eq('select count(distinct id)::int, bool_or(duplicate), bool_and(seq is not null) from sent',
  'values (1, true, true)', 'a retried publish with the same dedupe key returns the first id, marked duplicate');
select results_eq($$select m.seq, m.sender_type, m.sender_id from realtime.messages m join sent s on s.id = m.id and not s.duplicate$$,
  $$select seq, 'user'::text, 'a11ce000-0000-4000-8000-000000000001'::uuid from sent where not duplicate$$,
  'the returned seq is the stored row''s; the sender is the claims'' uid');
set local role rt_test_daemon;
select throws_ok($$select * from realtime.send('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}',
  'chat:7', 'message', '{}')$$, '42501', null, 'a non-member''s send is refused by the INSERT policy');
reset role;
set local role rt_test_daemon;
select throws_ok($$select * from realtime.send('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}',
  'nowhere:1', 'message', '{}')$$, 'RT404', null, 'no channel: RT404');
reset role;
set local role rt_test_daemon;
insert into sent select * from realtime.send('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}',
  'chat:7', 'message', '{"text": "no key"}');
reset role;
select is((select count(*)::int from realtime.messages), 2, 'two messages written (one deduplicated)');

-- event_frames: the wire frame, in the order asked, unknown ids skipped.
set local role rt_test_daemon;
select is((select count(*)::int from realtime.event_frames(array[gen_random_uuid()])), 0, 'unknown ids give no frame');
select results_eq(
  $$select (f.frame::jsonb - 'meta') from realtime.event_frames(array(select id from realtime.messages order by seq desc)) f$$,
  $$values ('{"type": "event", "channel": "chat:7", "event": "message", "payload": {"text": "no key"}}'::jsonb),
           ('{"type": "event", "channel": "chat:7", "event": "message", "payload": {"text": "hi"}}'::jsonb)$$,
  'frames come in the order of the ids given');
select results_eq(
  $$select (f.frame::jsonb -> 'meta') - 'timestamp', f.frame::jsonb -> 'meta' ->> 'timestamp' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$'
    from realtime.event_frames(array(select id from realtime.messages order by seq limit 1)) f$$,
  $$select jsonb_build_object('messageId', m.id, 'seq', m.seq, 'senderType', 'user', 'senderId', m.sender_id), true
    from realtime.messages m order by m.seq limit 1$$,
  'meta carries messageId, seq, senderType, senderId and an ISO 8601 UTC timestamp');
reset role;

select function_privs_are('realtime', 'channels_notify', array[]::text[], 'public', array[]::text[], 'PUBLIC cannot call the trigger function');

select * from finish();
rollback;
