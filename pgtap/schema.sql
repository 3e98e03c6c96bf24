-- The realtime schema as a whole: what it holds, who may touch it, and the
-- rules every object follows (comment, search_path, no PUBLIC grants but the
-- publish path's, RLS on).
begin;
select plan(30);

select has_schema('realtime');
select is(obj_description('realtime'::regnamespace, 'pg_namespace') is not null, true, 'schema realtime has a comment');

-- Tables, but not the partitions of realtime.messages (see partitions.sql).
select is(array(select c.relname::text from pg_class c
                where c.relnamespace = 'realtime'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
                order by 1),
  array['change_streams', 'channel_subscribers', 'channels', 'config', 'dropped_messages', 'instances',
        'message_audience', 'message_dedupe', 'message_partitions', 'messages', 'notify_key', 'presence',
        'schema_versions', 'webhook_attempts', 'webhook_deliveries'],
  'Schema realtime should have the correct tables');
select views_are('realtime', array['channel_stats', 'webhook_failures', 'message_stats']);
select functions_are('realtime', array[
  'version', 'max_payload_bytes', 'channel_name', 'claims', 'role', 'uid',
  'is_valid_channel_name', 'is_valid_channel_pattern', 'is_valid_event_name', 'are_valid_webhook_urls',
  'touch_updated_at', 'match_channel', 'messages_before_insert',
  'publish', 'impersonate', 'can_subscribe', 'can_publish',
  'authorize_subscribe', 'send', 'channels_notify',
  'messages_enqueue_webhooks', 'messages_before_update', 'webhook_body', 'claim_webhook_deliveries',
  'record_webhook_attempts', 'add_ws_audience', 'prune',
  'event_frame', 'stream_info', 'committed_between',
  'authorize_subscription', 'instance_heartbeat', 'instance_stop', 'presence_track', 'presence_untrack',
  'presence_members', 'send_ephemeral', 'changes_trigger', 'enable_changes', 'disable_changes',
  'needs_row_check', 'relay_frames', 'replay_relay_frames', 'change_audience', 'report_subscribers',
  'may_publish', 'record_drop', 'channel_for_insert', 'system_message_id',
  'maintain_partitions', 'create_message_partition', 'claim_dedupe_key', 'dedupe_first', 'record_ws_audience', 'channel_row',
  'insert_context', 'delivery_mode', 'config_notify', 'summarize_messages', 'relay_messages',
  'send_batch', 'authorize_subscriptions', 'channels_null_means_none', 'rotate_notify_key']);

-- Superseded and dropped (000011): the daemon calls relay_frames, replay_relay_frames
-- and the four-argument authorize_subscription.
select hasnt_function('realtime', 'event_frames', array['uuid[]', 'pg_snapshot'], 'event_frames is gone');
select hasnt_function('realtime', 'replay_frames', array['text', 'bigint', 'integer'], 'replay_frames is gone');
select hasnt_function('realtime', 'authorize_subscribe_stream', array['text', 'jsonb', 'text'], 'authorize_subscribe_stream is gone');
select hasnt_function('realtime', 'authorize_subscription', array['text', 'jsonb', 'text'], 'the three-argument authorize_subscription is gone');

-- Roles: exist, are not superusers and do not bypass RLS (policies must apply to them).
select has_role('anon');
select has_role('authenticated');
select has_role('service_role');
select is_empty($$
  select rolname from pg_roles
  where rolname in ('anon', 'authenticated', 'service_role') and (rolsuper or rolbypassrls)
$$, 'anon, authenticated and service_role are subject to row-level security');

select schema_privs_are('realtime', 'anon', array['USAGE']);
select schema_privs_are('realtime', 'authenticated', array['USAGE']);
select schema_privs_are('realtime', 'service_role', array['USAGE']);
-- Any role may call realtime.publish() (000012): its body decides.
select schema_privs_are('realtime', 'public', array['USAGE']);

select is_empty($$
  select c.relname from pg_class c
  where c.relnamespace = 'realtime'::regnamespace and c.relkind = 'r' and not c.relrowsecurity
$$, 'row-level security is enabled on every table');

select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
  where p.pronamespace = 'realtime'::regnamespace
    and not coalesce(p.proconfig @> array['search_path=""'], false)
    and p.prosqlbody is null
$$, 'every function runs with search_path = '''', or has a SQL-standard body (bound when created)');
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
  where p.pronamespace = 'realtime'::regnamespace and p.prosqlbody is not null
    and (p.prosecdef or p.prokind <> 'f'
         or (p.provolatile <> 'i' and p.proname not in ('channel_name', 'claims', 'role', 'uid')))
$$, 'SQL-standard bodies are kept to immutable validation helpers and the policy helpers (000016), never SECURITY DEFINER');

select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
  where p.pronamespace = 'realtime'::regnamespace and p.prosecdef
    and p.proname not in ('version', 'max_payload_bytes', 'match_channel', 'claim_webhook_deliveries',
                          'record_webhook_attempts', 'add_ws_audience', 'prune', 'stream_info',
                          'changes_trigger', 'enable_changes', 'disable_changes',
                          'record_drop', 'channel_for_insert', 'system_message_id', 'messages_enqueue_webhooks',
                          'maintain_partitions', 'claim_dedupe_key', 'dedupe_first', 'record_ws_audience',
                          'insert_context', 'delivery_mode', 'summarize_messages', 'rotate_notify_key')
$$, 'only the documented functions are SECURITY DEFINER');
select isnt_definer('realtime', 'publish', array['text', 'text', 'jsonb', 'text'], 'publish runs as its caller: the role it sees decides');
select is_definer('realtime', 'match_channel', array['text']);

-- The exceptions (000012): realtime.publish(), and what it and the insert
-- trigger call as the publishing role (any role may publish; the body decides).
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
  where p.pronamespace = 'realtime'::regnamespace and a.grantee = 0
    and p.oid not in ('realtime.publish(text,text,jsonb,text)'::regprocedure, 'realtime.may_publish()'::regprocedure,
                      'realtime.record_drop(text,text,text,integer)'::regprocedure, 'realtime.channel_for_insert(text)'::regprocedure,
                      'realtime.system_message_id(text,text)'::regprocedure, 'realtime.match_channel(text)'::regprocedure,
                      'realtime.max_payload_bytes()'::regprocedure, 'realtime.uid()'::regprocedure, 'realtime.claims()'::regprocedure,
                      'realtime.is_valid_channel_name(text)'::regprocedure, 'realtime.is_valid_event_name(text)'::regprocedure,
                      'realtime.claim_dedupe_key(text,text,text,uuid,bigint)'::regprocedure,
                      'realtime.dedupe_first(text,text,text)'::regprocedure,
                      'realtime.insert_context(text)'::regprocedure)
  union all
  select c.oid::regclass::text from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
  where c.relnamespace = 'realtime'::regnamespace and a.grantee = 0
    and not (c.oid = 'realtime.messages_seq_seq'::regclass and a.privilege_type = 'USAGE')
$$, 'PUBLIC holds no other privilege on any function, table or sequence');
select is_empty($$
  select a.attname from pg_attribute a, aclexplode(a.attacl) x
  where a.attrelid = 'realtime.messages'::regclass and x.grantee = 0 and x.privilege_type <> 'INSERT'
  union all
  select a.attname from pg_attribute a, aclexplode(a.attacl) x
  where a.attrelid = 'realtime.messages'::regclass and x.grantee = 0
    and a.attname not in ('id', 'channel_name', 'event_name', 'payload', 'dedupe_key')
$$, 'on realtime.messages PUBLIC may only INSERT id, channel_name, event_name, payload and dedupe_key (the trigger decides the rest)');

select is_empty($$
  select 'relation ' || c.relname from pg_class c
  where c.relnamespace = 'realtime'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'i', 'I')
    and not c.relispartition
    and obj_description(c.oid, 'pg_class') is null
    and not exists (select from pg_constraint k where k.conindid = c.oid)
  union all
  select 'column ' || c.relname || '.' || a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
  where c.relnamespace = 'realtime'::regnamespace and c.relkind in ('r', 'p', 'v') and not c.relispartition and a.attnum > 0
    and not a.attisdropped and col_description(c.oid, a.attnum) is null
  union all
  select 'function ' || p.oid::regprocedure::text from pg_proc p
  where p.pronamespace = 'realtime'::regnamespace and obj_description(p.oid, 'pg_proc') is null
  union all
  select 'policy ' || pol.polname from pg_policy pol join pg_class c on c.oid = pol.polrelid
  where c.relnamespace = 'realtime'::regnamespace and obj_description(pol.oid, 'pg_policy') is null
  union all
  select 'trigger ' || tg.tgname from pg_trigger tg join pg_class c on c.oid = tg.tgrelid
  where c.relnamespace = 'realtime'::regnamespace and not tg.tgisinternal and tg.tgparentid = 0
    and obj_description(tg.oid, 'pg_trigger') is null
$$, 'every table, column, index, function, policy and trigger has a comment');

-- The installed version, recorded in the schema itself.
select results_eq('select version, name from realtime.schema_versions order by version',
                  $$values (1, 'foundation'), (2, 'daemon'), (3, 'webhooks'), (4, 'replay'), (5, 'hot paths'), (6, 'webhook backoff on network errors'),
                    (7, 'channel settings'), (8, 'presence and ephemeral messages'), (9, 'change streams'),
                    (10, 'channel subscribers across instances'), (11, 'drop superseded functions'),
                    (12, 'publish by privilege'), (13, 'a publish path a busy primary can carry'),
                    (14, 'delivery that never holds the business commit'),
                    (15, 'client publishes committed together, subscribe checks asked together'),
                    (16, 'policy helpers and stream reads without planning per call'),
                    (17, 'null means none in channel settings'),
                    (18, 'rotatable notify key and privilege hints')$$,
                  'schema_versions records each migration');
select is(realtime.version(), 18, 'realtime.version() is the highest migration');
select function_privs_are('realtime', 'version', array[]::text[], 'service_role', array['EXECUTE']);
select function_privs_are('realtime', 'version', array[]::text[], 'anon', array[]::text[]);

select * from finish();
rollback;
