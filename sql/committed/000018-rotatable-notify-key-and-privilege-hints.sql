--! Previous: sha1:bb0576b4e15887ed5f0d9691ed81552da0a3f454
--! Hash: sha1:e4568c0e499bb7c34429e369b27c4a60dad594c5
--! Message: rotatable notify key and privilege hints

-- 000018: a notify key that can be rotated, and privilege errors that name the fix.
--
-- realtime.notify_key travels in every pg_dump. Whoever holds a dump can seal
-- ephemeral notifications every daemon accepts and sign replay cursors, until
-- the key changes. realtime.rotate_notify_key() changes it: the old key stays
-- in previous_key, accepted by daemons until previous_valid_until, so the
-- notifications sealed while daemons reload are still relayed. A NOTIFY on
-- realtime_keys (a hint: any role may send one) tells daemons to re-read.
--
-- On PostgreSQL 16+ a role that owns the package but is not a superuser is no
-- longer a member of the roles it created (it holds ADMIN only), and a table
-- another role owns needs TRIGGER for realtime.enable_changes. These failed
-- with PostgreSQL's own message; now they say which GRANT fixes them.
--
-- Locks: ALTER TABLE takes ACCESS EXCLUSIVE on the one-row realtime.notify_key
-- (catalog changes and one row's update), which publishes with a dedupe key and
-- presence writes read: they wait for this transaction, which holds nothing
-- else they need. lock_timeout fails the migration instead of queueing them
-- behind a long reader.
set local lock_timeout = '5s';

alter table realtime.notify_key add column if not exists previous_key text;
alter table realtime.notify_key add column if not exists previous_valid_until timestamptz;
alter table realtime.notify_key add column if not exists rotated_at timestamptz;
comment on table realtime.notify_key is
  'The key instances seal ephemeral notifications and sign replay cursors with. Readable by service_role only, but every pg_dump of the database carries it: a dump holder can forge ephemeral messages and replay cursors until it is rotated with realtime.rotate_notify_key() (docs/sql.md).';
comment on column realtime.notify_key.key is '244 random bits, as text. Daemons seal and sign with it.';
comment on column realtime.notify_key.previous_key is 'The key before the last rotation; daemons still accept what it sealed or signed until previous_valid_until.';
comment on column realtime.notify_key.previous_valid_until is 'Until when daemons accept previous_key (the grace period of realtime.rotate_notify_key).';
comment on column realtime.notify_key.rotated_at is 'When realtime.rotate_notify_key() last ran (NULL: never).';

-- The advisory-lock seed of dedupe claims and presence writes came from
-- md5(key): rotating the key mid-transaction would let two writers of one
-- dedupe key take different locks, and the second fail on the primary key
-- of realtime.message_dedupe (aborting a business write). It gets a column
-- of its own, set to the value it had, which rotation leaves alone.
alter table realtime.notify_key add column if not exists lock_seed bigint;
update realtime.notify_key k set lock_seed = ('x' || pg_catalog.left(pg_catalog.md5(k.key), 16))::bit(64)::bigint
where k.lock_seed is null;
alter table realtime.notify_key alter column lock_seed
  set default ('x' || pg_catalog.left(pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 16))::bit(64)::bigint;
alter table realtime.notify_key alter column lock_seed set not null;
comment on column realtime.notify_key.lock_seed is
  'Seed of the advisory-lock keys of dedupe claims and presence writes (no other role can compute them). Not rotated: a lock taken before a rotation must still be the one taken after it.';

create or replace function realtime.claim_dedupe_key(channel_name text, sender_key text, dedupe_key text, message_id uuid, message_seq bigint, OUT outcome text, OUT first_id uuid, OUT first_seq bigint)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $$
declare
  v_seed bigint;
begin
  -- The key's lock, never waited for: a transaction in progress with the same
  -- key holds it, and this message counts as its repeat. The lock key comes
  -- from realtime.notify_key.lock_seed, so no other role can compute and hold it.
  select k.lock_seed into v_seed from realtime.notify_key k;
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended(
           'realtime.dedupe:' || claim_dedupe_key.channel_name || E'\x1f' || claim_dedupe_key.sender_key
           || E'\x1f' || claim_dedupe_key.dedupe_key, coalesce(v_seed, 0))) then
    outcome := 'in_flight';
    return;
  end if;
  select d.message_id, d.message_seq into first_id, first_seq
  from realtime.message_dedupe d
  where d.channel_name = claim_dedupe_key.channel_name and d.sender_key = claim_dedupe_key.sender_key
    and d.dedupe_key = claim_dedupe_key.dedupe_key;
  if found then
    outcome := 'repeat';
    return;
  end if;
  if pg_catalog.current_setting('transaction_isolation') = 'read committed' then
    -- Cannot conflict: whoever wrote this key held its lock, and committed
    -- before this statement's snapshot.
    insert into realtime.message_dedupe (channel_name, sender_key, dedupe_key, message_id, message_seq)
    values (claim_dedupe_key.channel_name, claim_dedupe_key.sender_key, claim_dedupe_key.dedupe_key,
            claim_dedupe_key.message_id, claim_dedupe_key.message_seq);
  else
    -- REPEATABLE READ or SERIALIZABLE: a key committed after the snapshot is
    -- not visible, and writing it again would fail the caller: a repeat.
    begin
      insert into realtime.message_dedupe (channel_name, sender_key, dedupe_key, message_id, message_seq)
      values (claim_dedupe_key.channel_name, claim_dedupe_key.sender_key, claim_dedupe_key.dedupe_key,
              claim_dedupe_key.message_id, claim_dedupe_key.message_seq)
      on conflict do nothing;
    exception when serialization_failure then
      outcome := 'repeat';
      return;
    end;
  end if;
  outcome := 'new';
  first_id := claim_dedupe_key.message_id;
  first_seq := claim_dedupe_key.message_seq;
end
$$;
comment on function realtime.claim_dedupe_key(text, text, text, uuid, bigint) is 'For the insert trigger: claims a dedupe key for a new message without ever waiting. outcome new (the message is written), repeat (the key wrote first_id already, or was committed after a REPEATABLE READ snapshot: first_id NULL) or in_flight (a transaction in progress holds the key: this message is not written).';
revoke all on function realtime.claim_dedupe_key(text, text, text, uuid, bigint) from public;
grant execute on function realtime.claim_dedupe_key(text, text, text, uuid, bigint) to public;

create or replace function realtime.presence_track(instance uuid, connection uuid, role text, claims jsonb, channel text, state jsonb, max_members integer, max_state_bytes integer)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO ''
AS $$
declare
  v_key text := coalesce(nullif(claims ->> 'sub', ''), 'conn:' || connection::text);
  v_bytes integer := pg_catalog.octet_length(state::text);
  v_seed bigint;
begin
  if pg_catalog.jsonb_typeof(state) is distinct from 'object' then
    raise exception 'realtime: presence state must be a JSON object' using errcode = 'RT400';
  end if;
  if v_bytes > max_state_bytes then
    raise exception 'realtime: presence state is % bytes, over the limit of % bytes', v_bytes, max_state_bytes
      using errcode = 'RT413';
  end if;
  -- Authorized like a publish of event "presence": the client's INSERT policies decide.
  perform realtime.impersonate(presence_track.role, presence_track.claims);
  if not realtime.can_publish(presence_track.channel, 'presence') then
    raise exception 'realtime: not allowed to set presence on this channel' using errcode = '42501';
  end if;
  perform pg_catalog.set_config('role', 'none', true);
  -- One writer per channel at a time, so the member count holds. The lock's
  -- key comes from realtime.notify_key (service_role only): another role
  -- cannot compute it to hold it. Bounded wait all the same.
  select k.lock_seed into v_seed from realtime.notify_key k;
  perform pg_catalog.set_config('lock_timeout', '2s', true);
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('realtime.presence:' || channel, coalesce(v_seed, 0)));
  if not exists (select from realtime.presence p where p.channel_name = channel and p.member_key = v_key)
     and (select pg_catalog.count(distinct p.member_key) from realtime.presence p where p.channel_name = channel) >= max_members then
    raise exception 'realtime: channel has % presence members, the limit', max_members using errcode = 'RT429';
  end if;
  insert into realtime.presence as p (channel_name, connection_id, instance_id, member_key, state)
  values (channel, connection, instance, v_key, state)
  on conflict (channel_name, connection_id)
  do update set state = excluded.state, updated_at = pg_catalog.now(), instance_id = excluded.instance_id;
  perform pg_catalog.pg_notify('realtime_presence', pg_catalog.json_build_object('v', 1, 'channel', channel)::text);
  return v_key;
end
$$;
comment on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) is 'For the daemon: sets a socket''s presence state on a channel, authorized like a publish of event "presence" (can_publish as role/claims; 42501). RT400 state not an object, RT413 over max_state_bytes, RT429 a new member over max_members. Returns the member key. Call it as a single statement.';
revoke all on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) from public;
grant execute on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) to service_role;

create or replace function realtime.rotate_notify_key(grace interval default '1 minute')
returns timestamptz
language plpgsql security definer set search_path = ''
as $$
declare
  v_until timestamptz;
begin
  if grace is null or grace < interval '0' or grace > interval '1 day' then
    raise exception 'realtime.rotate_notify_key: grace must be between 0 and 1 day (% given)', grace
      using errcode = '22023';
  end if;
  update realtime.notify_key k
     set previous_key = k.key,
         key = pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text,
         previous_valid_until = pg_catalog.clock_timestamp() + grace,
         rotated_at = pg_catalog.now()
   where k.id
  returning k.previous_valid_until into v_until;
  if not found then
    raise exception 'realtime.rotate_notify_key: realtime.notify_key has no row' using errcode = 'P0002';
  end if;
  -- A hint, delivered at commit: every daemon re-reads the key.
  perform pg_catalog.pg_notify('realtime_keys', '');
  return v_until;
end
$$;
comment on function realtime.rotate_notify_key(interval) is
  'Replaces realtime.notify_key with a fresh random key (after a pg_dump left the building, or on a schedule). Running daemons re-read it at commit (NOTIFY realtime_keys) without a restart and accept the previous key for grace (0 to 1 day, default 1 minute), so nothing in flight is dropped; after that, anything sealed or signed with the old key is refused (replay cursors issued before: the client resyncs). Returns when the grace ends. service_role and the owner only.';
revoke all on function realtime.rotate_notify_key(interval) from public;
grant execute on function realtime.rotate_notify_key(interval) to service_role;

create or replace function realtime.impersonate(role text, claims jsonb default '{}'::jsonb)
returns void
language plpgsql set search_path = ''
as $$
declare
  v_role pg_catalog.pg_roles%rowtype;
  v_pg16 boolean;
begin
  select * into v_role from pg_catalog.pg_roles r where r.rolname = impersonate.role;
  if not found then
    raise exception 'realtime.impersonate: role "%" does not exist', role using errcode = '42704';
  end if;
  if v_role.rolsuper or v_role.rolbypassrls then
    raise exception 'realtime.impersonate: role "%" bypasses row-level security', role
      using errcode = '42501', hint = 'Impersonate a role that policies apply to.';
  end if;
  -- SET ROLE checks the session user. PostgreSQL 16+ gives a CREATEROLE user
  -- only ADMIN on the roles it creates, not SET: say which grant fixes it.
  v_pg16 := pg_catalog.current_setting('server_version_num')::int >= 160000;
  if not pg_catalog.pg_has_role(session_user, v_role.oid, case when v_pg16 then 'SET' else 'MEMBER' end) then
    raise exception 'realtime.impersonate: % may not act as role "%"', pg_catalog.quote_ident(session_user), role
      using errcode = '42501',
            hint = pg_catalog.format('As a role with ADMIN OPTION on %I (a superuser, or the role that created it), run: grant %I to %I%s;',
                     role, role, session_user, case when v_pg16 then ' with inherit false, set true' else '' end);
  end if;
  perform pg_catalog.set_config('role', role, true);
  perform pg_catalog.set_config('request.jwt.claims', coalesce(claims, '{}'::jsonb)::text, true);
  perform pg_catalog.set_config('request.jwt.claim.sub', coalesce(claims ->> 'sub', ''), true);
  perform pg_catalog.set_config('request.jwt.claim.role', role, true);
end
$$;
comment on function realtime.impersonate(text, jsonb) is
  'For tests and server code: until the transaction ends (or RESET ROLE), act as role with these JWT claims, as the daemon does per request. Refuses superuser and BYPASSRLS roles; 42501 with the GRANT to run in its HINT when the session user may not SET ROLE to it (PostgreSQL 16+: a CREATEROLE owner holds only ADMIN on the roles it created).';
revoke all on function realtime.impersonate(text, jsonb) from public;
grant execute on function realtime.impersonate(text, jsonb) to service_role;

create or replace function realtime.enable_changes(source regclass, channel text default null,
  columns text[] default null, operations text[] default array['insert', 'update', 'delete'],
  changed_only boolean default false, public boolean default false, row_channels boolean default true)
returns void
language plpgsql security definer set search_path = ''
as $$
declare
  v_invoker text := pg_catalog.current_setting('role');
  v_rel record;
  v_pk text[];
  v_unknown text[];
  v_ops text[];
  v_channel text;
begin
  if v_invoker = 'none' then
    v_invoker := session_user;
  end if;
  select c.relname, c.relowner, c.relkind into v_rel from pg_catalog.pg_class c where c.oid = source;
  if v_rel.relkind not in ('r', 'p') then
    raise exception 'realtime.enable_changes: % is not a table', source using errcode = 'RT400';
  end if;
  if not pg_catalog.pg_has_role(v_invoker, v_rel.relowner, 'USAGE') then
    raise exception 'realtime.enable_changes: only the owner of % may stream its changes', source
      using errcode = '42501';
  end if;
  -- The trigger is created as the package's owner (this function's): on a
  -- table another role owns, that needs TRIGGER on it.
  if not pg_catalog.has_table_privilege(current_user, source, 'TRIGGER') then
    raise exception 'realtime.enable_changes: the owner of the realtime package (%) may not create triggers on %',
      pg_catalog.quote_ident(current_user), source
      using errcode = '42501',
            hint = pg_catalog.format('As the owner of %s, run: grant trigger on table %s to %I;', source, source, current_user);
  end if;
  select pg_catalog.array_agg(a.attname::text order by k.n) into v_pk
  from pg_catalog.pg_index i
  cross join lateral pg_catalog.unnest(i.indkey) with ordinality k(attnum, n)
  join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = source and i.indisprimary;
  if v_pk is null then
    raise exception 'realtime.enable_changes: % has no primary key', source
      using errcode = 'RT400', hint = 'Events name rows by primary key, and the row check looks rows up by it.';
  end if;
  select pg_catalog.array_agg(c) into v_unknown from pg_catalog.unnest(columns) c
  where not exists (select from pg_catalog.pg_attribute a
                    where a.attrelid = source and a.attname = c and a.attnum > 0 and not a.attisdropped);
  if v_unknown is not null then
    raise exception 'realtime.enable_changes: % has no column %', source, pg_catalog.array_to_string(v_unknown, ', ')
      using errcode = 'RT400';
  end if;
  select pg_catalog.array_agg(distinct pg_catalog.lower(o)) into v_ops from pg_catalog.unnest(operations) o;
  if v_ops is null or not v_ops <@ array['insert', 'update', 'delete'] then
    raise exception 'realtime.enable_changes: operations must be among insert, update, delete' using errcode = 'RT400';
  end if;
  v_channel := coalesce(channel, v_rel.relname || ':changes');
  if not realtime.is_valid_channel_name(v_channel) then
    raise exception 'realtime.enable_changes: "%" is not a valid channel name', v_channel using errcode = 'RT400';
  end if;

  insert into realtime.change_streams as cs (table_id, channel, row_channels, columns, primary_key, operations,
                                             changed_only, public)
  values (source, v_channel, row_channels,
          case when columns is null then null
               else (select pg_catalog.array_agg(distinct c) from pg_catalog.unnest(columns || v_pk) c) end,
          v_pk, v_ops, changed_only, public)
  on conflict (table_id) do update
    set channel = excluded.channel, row_channels = excluded.row_channels, columns = excluded.columns,
        primary_key = excluded.primary_key, operations = excluded.operations,
        changed_only = excluded.changed_only, public = excluded.public, created_at = pg_catalog.now();
  -- The channels, if missing; who may subscribe is still the DBA's SELECT policy.
  insert into realtime.channels (pattern, description)
  values (v_channel, 'Changes of ' || source::text)
  on conflict (pattern) do nothing;
  if row_channels then
    insert into realtime.channels (pattern, description)
    values (v_rel.relname || ':%', 'Changes of single rows of ' || source::text)
    on conflict (pattern) do nothing;
  end if;

  -- CREATE OR REPLACE needs TRIGGER only; DROP TRIGGER and COMMENT ON TRIGGER
  -- need the table's owner, so a table the package's owner does not own gets
  -- its trigger without a comment.
  execute pg_catalog.format(
    'create or replace trigger realtime_changes after %s on %s for each row execute function realtime.changes_trigger()',
    pg_catalog.array_to_string(v_ops, ' or '), source);
  if pg_catalog.pg_has_role(current_user, v_rel.relowner, 'USAGE') then
    execute pg_catalog.format('comment on trigger realtime_changes on %s is %L', source,
      'Publishes row changes to realtime (realtime.enable_changes; remove with realtime.disable_changes).');
  end if;
end
$$;
comment on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) is
  'Publishes the row changes of a table (its owner only): {op, schema, table, new, old} to channel (default <table>:changes) and, with row_channels, to <table>:<primary key>; only the listed columns (plus the primary key); operations among insert/update/delete; changed_only sends only changed columns of an UPDATE; public skips the per-subscriber row check. Creates the channel rows if missing. Run again to change the options. On a table the package''s owner does not own, that owner needs TRIGGER on it (42501 with the GRANT in its HINT).';
revoke all on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) from public;
grant execute on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) to service_role;

create or replace function realtime.disable_changes(source regclass)
returns boolean
language plpgsql security definer set search_path = ''
as $$
declare
  v_invoker text := pg_catalog.current_setting('role');
  v_owner oid := (select c.relowner from pg_catalog.pg_class c where c.oid = source);
begin
  if v_invoker = 'none' then
    v_invoker := session_user;
  end if;
  if not pg_catalog.pg_has_role(v_invoker, v_owner, 'USAGE') then
    raise exception 'realtime.disable_changes: only the owner of % may stop its stream', source using errcode = '42501';
  end if;
  if exists (select from pg_catalog.pg_trigger t where t.tgrelid = source and t.tgname = 'realtime_changes') then
    -- DROP TRIGGER needs the table's owner, which the package's owner may not be.
    if not pg_catalog.pg_has_role(current_user, v_owner, 'USAGE') then
      raise exception 'realtime.disable_changes: the owner of the realtime package (%) may not drop triggers on %',
        pg_catalog.quote_ident(current_user), source
        using errcode = '42501',
              hint = pg_catalog.format('As the owner of %s, run: drop trigger realtime_changes on %s; then call realtime.disable_changes(%L) again.',
                       source, source, source::text);
    end if;
    execute pg_catalog.format('drop trigger realtime_changes on %s', source);
  end if;
  delete from realtime.change_streams cs where cs.table_id = source;
  return found;
end
$$;
comment on function realtime.disable_changes(regclass) is
  'Stops publishing the row changes of a table (its owner only): drops the trigger and the stream. The channel rows and their policies stay. Returns whether a stream was enabled. When the package''s owner does not own the table, 42501 with the DROP TRIGGER to run first in its HINT.';
revoke all on function realtime.disable_changes(regclass) from public;
grant execute on function realtime.disable_changes(regclass) to service_role;

insert into realtime.schema_versions (version, name) values (18, 'rotatable notify key and privilege hints')
on conflict (version) do nothing;
