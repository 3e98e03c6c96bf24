-- realtime.config (settings a DBA changes with UPDATE), realtime.dropped_messages
-- (what publish() dropped) and realtime.schema_versions (the installed version).
begin;
select plan(22);

select columns_are('realtime', 'config', array['id', 'max_payload_bytes', 'webhook_max_attempts', 'webhook_backoff_ms',
  'webhook_max_backoff_ms', 'retention', 'epoch', 'pruned_through_seq', 'partition_span', 'delivery']);
select results_eq('select id, max_payload_bytes, webhook_max_attempts, webhook_backoff_ms, retention from realtime.config',
  $$values (true, 65536, 5, 1000, interval '24 hours')$$,
  'one row; defaults: 64 KiB payloads, 5 webhook attempts from 1 s, 24 hours retention');
select throws_ok('insert into realtime.config (id) values (false)', '23514', null, 'config keeps to one row (id is true)');
select throws_ok('insert into realtime.config default values', '23505', null, 'a second row is refused');
select throws_ok('update realtime.config set max_payload_bytes = 0', '23514', null, 'the cap must be positive');
update realtime.config set max_payload_bytes = 1024;
select is(realtime.max_payload_bytes(), 1024, 'max_payload_bytes() reads the current value');
delete from realtime.config;
select is(realtime.max_payload_bytes(), 65536, 'and falls back to 64 KiB if the row is gone');
select table_privs_are('realtime', 'config', 'anon', array[]::text[]);
select table_privs_are('realtime', 'config', 'authenticated', array[]::text[]);
select table_privs_are('realtime', 'config', 'service_role', array[]::text[]);
select function_privs_are('realtime', 'max_payload_bytes', array[]::text[], 'authenticated', array['EXECUTE'],
  'clients may read the cap (the insert trigger runs as the client)');

select columns_are('realtime', 'dropped_messages',
  array['id', 'channel_name', 'event_name', 'reason', 'payload_bytes', 'dropped_at']);
select col_is_pk('realtime', 'dropped_messages', 'id', 'dropped_messages.id is the primary key');
select has_index('realtime', 'dropped_messages', 'dropped_messages_dropped_at_idx', 'dropped_messages is indexed by time');
select throws_ok($$insert into realtime.dropped_messages (channel_name, reason) values ('x', 'other')$$,
  '23514', null, 'reason is one of the documented values');
select table_privs_are('realtime', 'dropped_messages', 'service_role', array['SELECT']);
select table_privs_are('realtime', 'dropped_messages', 'authenticated', array[]::text[]);
select policies_are('realtime', 'dropped_messages', array['dropped_messages_service_role_select']);

select columns_are('realtime', 'schema_versions', array['version', 'name', 'installed_at']);
select col_is_pk('realtime', 'schema_versions', 'version', 'schema_versions.version is the primary key');
select table_privs_are('realtime', 'schema_versions', 'anon', array[]::text[]);
select table_privs_are('realtime', 'schema_versions', 'service_role', array[]::text[]);

select * from finish();
rollback;
