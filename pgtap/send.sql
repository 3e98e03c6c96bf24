-- realtime.send(role, claims, channel, event, payload, dedupe_key): a client
-- publish, made by the daemon in one statement. Inserts as the client, so the
-- INSERT policies on realtime.messages decide; returns id and seq, read back
-- as the daemon; a dedupe key already used by this sender (its sub claim, any
-- format) returns the first; an anonymous sender has no dedupe keys.
begin;
select plan(15);

select has_function('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'send exists');
select isnt_definer('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'send runs as the daemon, then as the client');
select function_privs_are('realtime', 'send', array['text', 'jsonb', 'text', 'text', 'jsonb', 'text'], 'authenticated', array[]::text[], 'clients may not call send');

\ir ../docs/examples/policies.sql
insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');

-- The daemon's login role: member of the roles it impersonates, nothing more.
create role rt_test_daemon login;
grant anon, authenticated, service_role to rt_test_daemon;

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

-- A dedupe key belongs to a sender: its sub claim, whatever its format.
create policy rt_test_anyone_chats on realtime.messages for insert to anon, authenticated with check (realtime.channel_name() like 'chat:%');
set local role rt_test_daemon;
select throws_ok($$select * from realtime.send('anon', '{}', 'chat:7', 'message', '{}', 'k1')$$, 'RT400', null,
  'an anonymous sender''s dedupe key: RT400 (every anonymous sender would share one namespace)');
create temporary table alice (id uuid, seq bigint, duplicate boolean);
insert into alice select * from realtime.send('authenticated', '{"sub": "auth0|alice"}', 'chat:7', 'message', '{}', 'k1');
insert into alice select * from realtime.send('authenticated', '{"sub": "auth0|alice"}', 'chat:7', 'message', '{}', 'k1');
insert into alice select * from realtime.send('authenticated', '{"sub": "auth0|bob"}', 'chat:7', 'message', '{}', 'k1');
reset role;
select results_eq($$select duplicate from alice$$, $$values (false), (true), (false)$$,
  'a non-UUID sub has its own keys: its repeat is a duplicate, another sender''s same key is not');
select is((select count(distinct id)::int from alice), 2, 'two messages, never one sender''s answered with another''s');
select realtime.impersonate('authenticated', '{"sub": "auth0|carol"}');
select set_config('realtime.channel_name', 'chat:7', true);
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload, dedupe_key) values ('chat:7', 'm', '{}', 'k1')$$,
  'a direct INSERT with a dedupe key, as a non-UUID sub');
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload, dedupe_key) values ('chat:7', 'm', '{}', 'k1')$$,
  'and its repeat: skipped, not an error');
reset role;
select is((select count(*)::int from realtime.messages where channel_name = 'chat:7' and dedupe_key = 'k1'), 4,
  'the first sender, alice, bob and carol: one message each');
select * from finish();
rollback;
