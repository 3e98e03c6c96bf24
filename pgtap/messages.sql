-- realtime.messages: structure, constraints, indexes, triggers, grants, the
-- RLS default, and what the database decides for every client insert.
begin;
select plan(70);

select has_table('realtime', 'messages', 'realtime.messages exists');
select columns_are('realtime', 'messages', array[
  'id', 'seq', 'channel_id', 'channel_name', 'event_name', 'payload', 'sender_type', 'sender_id',
  'dedupe_key', 'ws_audience_count', 'wh_audience_count', 'wh_delivered_count', 'xact_id', 'created_at']);
select col_is_pk('realtime', 'messages', array['channel_name', 'seq'], 'the primary key is (channel_name, seq): replay and every lookup');
select col_type_is('realtime', 'messages', 'id', 'uuid', 'messages.id is uuid');
select col_type_is('realtime', 'messages', 'seq', 'bigint', 'messages.seq is bigint');
select col_default_is('realtime', 'messages', 'seq', $$nextval('realtime.messages_seq_seq'::regclass)$$,
  'messages.seq comes from realtime.messages_seq_seq');
select is(pg_get_partkeydef('realtime.messages'::regclass), 'RANGE (seq)', 'messages are partitioned by seq ranges');
select col_type_is('realtime', 'messages', 'channel_id', 'uuid', 'messages.channel_id is uuid');
select hasnt_fk('realtime', 'messages', 'no foreign key: a publish locks no channel row (no MultiXact per message)');
select is((select count(*)::int from pg_constraint where confrelid = 'realtime.messages'::regclass), 0,
  'and nothing references a message (a partition can be dropped whole)');
select col_not_null('realtime', 'messages', 'channel_name', 'messages.channel_name is NOT NULL');
select col_not_null('realtime', 'messages', 'event_name', 'messages.event_name is NOT NULL');
select col_type_is('realtime', 'messages', 'payload', 'jsonb', 'messages.payload is jsonb');
select col_not_null('realtime', 'messages', 'payload', 'messages.payload is NOT NULL');
select col_type_is('realtime', 'messages', 'sender_id', 'uuid', 'messages.sender_id is uuid');
select col_type_is('realtime', 'messages', 'ws_audience_count', 'integer', 'ws_audience_count is integer');
select col_hasnt_default('realtime', 'messages', 'ws_audience_count', 'ws_audience_count is NULL for new messages (see realtime.message_stats)');
select col_default_is('realtime', 'messages', 'wh_audience_count', 0, 'wh_audience_count defaults to 0');
select col_hasnt_default('realtime', 'messages', 'wh_delivered_count', 'wh_delivered_count is NULL for new messages (see realtime.message_stats)');
select col_type_is('realtime', 'messages', 'xact_id', 'xid8', 'messages.xact_id is xid8');
select col_type_is('realtime', 'messages', 'created_at', 'timestamp with time zone', 'messages.created_at is timestamptz');

select indexes_are('realtime', 'messages', array['messages_pkey', 'messages_seq_brin', 'messages_xact_id_brin'],
  'one btree (the primary key) and two BRIN indexes of a few pages');
select is((select amname from pg_class c join pg_am a on a.oid = c.relam where c.oid = 'realtime.messages_xact_id_brin'::regclass), 'brin',
  'messages are found by transaction (realtime.committed_between) through a BRIN index');
select is((select count(*)::int from pg_index where indrelid = 'realtime.messages'::regclass and indisunique), 1,
  'the primary key is the only unique index (dedupe keys are in realtime.message_dedupe)');
select triggers_are('realtime', 'messages', array['messages_before_insert',
  'messages_enqueue_webhooks', 'messages_before_update']);
select trigger_is('realtime', 'messages', 'messages_before_insert', 'realtime', 'messages_before_insert',
  'messages_before_insert runs realtime.messages_before_insert()');
select ok(pg_get_functiondef('realtime.messages_before_insert()'::regprocedure) like '%pg_notify(''realtime_messages''%',
  'the insert trigger notifies realtime_messages (no AFTER trigger per row)');

-- Grants: clients may only name channel, event, payload and dedupe key; service_role reads.
select table_privs_are('realtime', 'messages', 'anon', array[]::text[]);
select column_privs_are('realtime', 'messages', 'channel_name', 'authenticated', array['INSERT']);
select column_privs_are('realtime', 'messages', 'payload', 'authenticated', array['INSERT']);
select column_privs_are('realtime', 'messages', 'sender_type', 'authenticated', array[]::text[]);
select column_privs_are('realtime', 'messages', 'sender_id', 'authenticated', array[]::text[]);
select table_privs_are('realtime', 'messages', 'service_role', array['SELECT']);
select sequence_privs_are('realtime', 'messages_seq_seq', 'service_role', array['SELECT', 'USAGE'], 'the daemon reads currval of seq (realtime.send)');
select ok(has_sequence_privilege('anon', 'realtime.messages_seq_seq', 'USAGE') and not has_sequence_privilege('anon', 'realtime.messages_seq_seq', 'UPDATE'),
  'any role may take a seq (the column default runs as the writer), none may set one');
select policies_are('realtime', 'messages', array['messages_service_role_select', 'messages_system_insert']);
select policy_cmd_is('realtime', 'messages', 'messages_system_insert', 'insert', 'a role that may publish writes system messages');
select is((select polroles from pg_policy where polname = 'messages_system_insert'), '{0}'::oid[], 'to PUBLIC: whoever may publish');
select policy_cmd_is('realtime', 'messages', 'messages_service_role_select', 'select', 'the service_role policy is SELECT');

insert into realtime.channels (pattern) values ('chat:%'), ('closed:%');
update realtime.channels set enabled = false where pattern = 'closed:%';

-- A client's bad row is the client's error (a permissive policy, so only the checks speak).
create policy rt_test_anyone on realtime.messages for insert to authenticated with check (true);
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:1', '', '{}')$$,
  '23514', null, 'empty event name refused');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:1', repeat('e', 256), '{}')$$,
  '23514', null, 'event name over 255 bytes refused');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:1', 'e', '[1]')$$,
  '23514', null, 'a payload that is not a JSON object is refused');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload, dedupe_key) values ('chat:1', 'e', '{}', '')$$,
  '23514', null, 'empty dedupe key refused');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat: 1', 'e', '{}')$$,
  'RT400', null, 'invalid channel name: RT400');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('nowhere:1', 'e', '{}')$$,
  'RT404', null, 'no matching channel: RT404');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('closed:1', 'e', '{}')$$,
  'RT404', null, 'disabled channel: RT404');
reset role;
drop policy rt_test_anyone on realtime.messages;
select is((select count(*)::int from pg_constraint where conrelid = 'realtime.messages'::regclass and contype = 'c'), 0,
  'no CHECK constraints: the insert trigger validates every row (and a system message is dropped, not refused)');
set local role authenticated;
select throws_ok($$insert into realtime.messages (seq, channel_name, event_name) values (1, 'chat:1', 'e')$$,
  '42501', null, 'a client cannot choose seq');
reset role;

-- A row written by a role that may publish is a system message, and a bad one
-- is dropped and recorded, never raised into the writer's transaction.
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload) values
  ('chat: 1', 'e', '{}'), ('nowhere:1', 'e', '{}'), ('chat:1', '', '{}'), ('chat:1', 'e', '[1]')$$,
  'a system writer''s bad rows do not raise');
select results_eq($$select reason from realtime.dropped_messages order by id$$,
  $$values ('invalid_channel_name'), ('no_channel'), ('invalid_event_name'), ('invalid_payload')$$,
  'each is dropped and recorded with its reason');
select is((select count(*)::int from realtime.messages), 0, 'none was written');

-- RLS default: without a policy of the DBA's, no client can publish.
set local role anon;
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:1', 'e', '{}')$$,
  '42501', null, 'anon cannot publish without an INSERT policy');
select throws_ok('select * from realtime.messages', '42501', null, 'anon cannot read messages');
reset role;
set local role authenticated;
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:1', 'e', '{}')$$,
  '42501', null, 'authenticated cannot publish without an INSERT policy');
reset role;

-- With a policy: the database decides the sender; the client cannot forge it.
create policy test_anyone_publishes on realtime.messages for insert to authenticated with check (true);
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload, sender_type)
  values ('chat:1', 'e', '{}', 'system')$$, '42501', null, 'a client cannot name sender_type');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload, sender_id)
  values ('chat:1', 'e', '{}', '22222222-2222-4222-8222-222222222222')$$, '42501', null, 'a client cannot name sender_id');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload, channel_id)
  values ('chat:1', 'e', '{}', gen_random_uuid())$$, '42501', null, 'a client cannot name channel_id');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload, ws_audience_count)
  values ('chat:1', 'e', '{}', 5)$$, '42501', null, 'a client cannot write statistics');
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload, dedupe_key)
  values ('chat:1', 'said', '{"text": "hi"}', 'k1')$$, 'a client publishes under the policy');
reset role;
select results_eq(
  $$select m.sender_type, m.sender_id, c.pattern, m.dedupe_key from realtime.messages m
    join realtime.channels c on c.id = m.channel_id where m.event_name = 'said'$$,
  $$values ('user'::text, '11111111-1111-4111-8111-111111111111'::uuid, 'chat:%'::text, 'k1'::text)$$,
  'the stored row says user, the uid from the claims and the matched channel');


-- Even if a DBA grants every column, the trigger overrules the client.
grant insert on realtime.messages to authenticated;
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload, sender_type, sender_id, ws_audience_count)
  values ('chat:1', 'forged', '{}', 'system', '22222222-2222-4222-8222-222222222222', 0)$$,
  'with a full INSERT grant the insert goes through ...');
reset role;
revoke insert on realtime.messages from authenticated;
grant insert (channel_name, event_name, payload, dedupe_key) on realtime.messages to authenticated;
select results_eq($$select sender_type, sender_id from realtime.messages where event_name = 'forged'$$,
  $$values ('user'::text, '11111111-1111-4111-8111-111111111111'::uuid)$$,
  '... but is stored as a user message from the claims'' uid');
select is((select count(*)::int from realtime.messages where sender_type = 'system' and event_name = 'forged'), 0,
  'no system message was forged');

-- The payload cap, changeable without a migration.
update realtime.config set max_payload_bytes = 100;
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
select throws_ok(format($$insert into realtime.messages (channel_name, event_name, payload)
  values ('chat:1', 'big', %L)$$, jsonb_build_object('text', repeat('x', 100))),
  'RT413', null, 'a client payload over realtime.config.max_payload_bytes fails with RT413');
select lives_ok(format($$insert into realtime.messages (channel_name, event_name, payload)
  values ('chat:1', 'small', %L)$$, jsonb_build_object('text', repeat('x', 80))), 'one under the cap passes');
reset role;
update realtime.config set max_payload_bytes = 65536;

-- Sequence and transaction id come from the database.
select ok((select bool_and(m.xact_id = pg_current_xact_id()) from realtime.messages m), 'xact_id is the writing transaction');
select ok((select max(seq) > min(seq) from realtime.messages), 'seq increases');

-- Deleting a channel keeps its messages.
delete from realtime.channels where pattern = 'chat:%';
select results_eq('select count(*)::int, count(channel_id)::int from realtime.messages',
  'values (3, 3)', 'messages survive their channel as they were, channel_id and all (never rewritten)');

-- A channel's own payload cap (channels.max_message_bytes), for client inserts.
insert into realtime.channels (pattern, max_message_bytes) values ('small:%', 20);
create policy rt_test_small_insert on realtime.messages for insert to anon
  with check (realtime.channel_name() like 'small:%');
-- No SELECT policy on the channel row for anon: the cap is read as the owner all the same.
select realtime.impersonate('anon');
select set_config('realtime.channel_name', 'small:1', true);
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('small:1', 'e', '{"a": 1}')$$,
  'a payload under the channel''s cap is accepted');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload)
                   values ('small:1', 'e', '{"a": "0123456789012345678"}')$$, 'RT413', null,
  'a payload over the channel''s cap: RT413');
reset role;

select * from finish();
rollback;
