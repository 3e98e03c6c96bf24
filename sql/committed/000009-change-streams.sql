--! Previous: sha1:561ffd79db231bdc84ba0bbc0f9501791491f4a3
--! Hash: sha1:b85d44fcca9ed487d1840b5a975de369e8706f27
--! Message: change streams

-- realtimed 000009: table change streams.
--
-- realtime.enable_changes(table) installs a row trigger that publishes
-- {op, schema, table, new, old} to <table>:changes and to <table>:<primary
-- key>, with only the listed columns. Who may subscribe is the channel's
-- SELECT policy, as always; on top of that, an INSERT or UPDATE event reaches
-- a subscriber only if the subscriber's role and claims can SELECT the row
-- under the source table's own row-level security (realtime.change_audience,
-- one call per batch of events for all subscribers), unless the stream is
-- marked public. A deleted row cannot be checked: DELETE events of a
-- non-public stream carry only the primary key.
set local lock_timeout = '5s';

create table if not exists realtime.change_streams (
  table_id regclass primary key,
  channel text not null check (realtime.is_valid_channel_name(channel)),
  row_channels boolean not null default true,
  columns text[],
  primary_key text[] not null,
  operations text[] not null
    check (operations <@ array['insert', 'update', 'delete'] and pg_catalog.cardinality(operations) > 0),
  changed_only boolean not null default false,
  public boolean not null default false,
  created_at timestamptz not null default now()
);
alter table realtime.change_streams enable row level security;
comment on table realtime.change_streams is
  'Tables whose row changes are published (realtime.enable_changes). Change with enable_changes/disable_changes, not by hand.';
comment on column realtime.change_streams.table_id is 'The source table.';
comment on column realtime.change_streams.channel is 'The stream''s channel (default <table>:changes).';
comment on column realtime.change_streams.row_channels is 'Also publish each change to <table>:<primary key> (composite keys joined by commas).';
comment on column realtime.change_streams.columns is 'The only columns events carry (the primary key is always added); NULL: every column, including ones added later.';
comment on column realtime.change_streams.primary_key is 'The primary key columns when the stream was enabled (run enable_changes again after changing the key).';
comment on column realtime.change_streams.operations is 'Which of insert, update, delete are published.';
comment on column realtime.change_streams.changed_only is 'UPDATE events carry only the changed columns (and the primary key).';
comment on column realtime.change_streams.public is 'Skip the per-subscriber row check: anyone the channel policy admits sees every event, and DELETE events carry the whole old row.';
comment on column realtime.change_streams.created_at is 'When the stream was (last) enabled.';
drop policy if exists change_streams_service_role_select on realtime.change_streams;
create policy change_streams_service_role_select on realtime.change_streams
  for select to service_role using (true);
comment on policy change_streams_service_role_select on realtime.change_streams is 'The daemon reads the streams.';

create or replace function realtime.changes_trigger() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  v_cfg realtime.change_streams;
  v_new jsonb;
  v_old jsonb;
  v_row jsonb;
  v_key text;
begin
  select * into v_cfg from realtime.change_streams cs where cs.table_id = tg_relid;
  if not found then
    return null;
  end if;
  if tg_op <> 'DELETE' then
    v_new := pg_catalog.to_jsonb(new);
  end if;
  if tg_op <> 'INSERT' then
    v_old := pg_catalog.to_jsonb(old);
  end if;
  -- An allow-list: a column added to the table later is never sent.
  if v_cfg.columns is not null then
    v_new := (select pg_catalog.jsonb_object_agg(e.key, e.value) from pg_catalog.jsonb_each(v_new) e
              where e.key = any (v_cfg.columns));
    v_old := (select pg_catalog.jsonb_object_agg(e.key, e.value) from pg_catalog.jsonb_each(v_old) e
              where e.key = any (v_cfg.columns));
  end if;
  if tg_op = 'UPDATE' and v_cfg.changed_only then
    select pg_catalog.jsonb_object_agg(e.key, e.value) filter (where e.key = any (v_cfg.primary_key) or e.value is distinct from v_old -> e.key),
           pg_catalog.jsonb_object_agg(e.key, v_old -> e.key) filter (where e.key = any (v_cfg.primary_key) or e.value is distinct from v_old -> e.key)
      into v_new, v_old
    from pg_catalog.jsonb_each(v_new) e;
  end if;
  if tg_op = 'DELETE' and not v_cfg.public then
    -- Nobody's row-level security can be asked about a deleted row: only its key goes out.
    v_old := (select pg_catalog.jsonb_object_agg(e.key, e.value) from pg_catalog.jsonb_each(v_old) e
              where e.key = any (v_cfg.primary_key));
  end if;
  v_row := pg_catalog.jsonb_build_object('op', tg_op, 'schema', tg_table_schema, 'table', tg_table_name,
                                         'new', v_new, 'old', v_old);
  perform realtime.publish(v_cfg.channel, pg_catalog.lower(tg_op), v_row);
  if v_cfg.row_channels then
    select pg_catalog.string_agg(coalesce(v_new, v_old) ->> k.col, ',' order by k.n) into v_key
    from pg_catalog.unnest(v_cfg.primary_key) with ordinality k(col, n);
    perform realtime.publish(tg_table_name || ':' || v_key, pg_catalog.lower(tg_op), v_row);
  end if;
  return null;
end
$$;
comment on function realtime.changes_trigger() is
  'Trigger installed by realtime.enable_changes: publishes each row change to the stream''s channel and, with row_channels, to <table>:<primary key>, carrying only the stream''s columns.';

drop function if exists realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean);
create function realtime.enable_changes(source regclass, channel text default null, columns text[] default null,
                                        operations text[] default array['insert', 'update', 'delete'],
                                        changed_only boolean default false, public boolean default false,
                                        row_channels boolean default true)
returns void
language plpgsql volatile security definer set search_path = ''
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

  if exists (select from pg_catalog.pg_trigger t where t.tgrelid = source and t.tgname = 'realtime_changes') then
    execute pg_catalog.format('drop trigger realtime_changes on %s', source);
  end if;
  execute pg_catalog.format(
    'create trigger realtime_changes after %s on %s for each row execute function realtime.changes_trigger()',
    pg_catalog.array_to_string(v_ops, ' or '), source);
  execute pg_catalog.format('comment on trigger realtime_changes on %s is %L', source,
    'Publishes row changes to realtime (realtime.enable_changes; remove with realtime.disable_changes).');
end
$$;
comment on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) is
  'Publishes the row changes of a table (its owner only): {op, schema, table, new, old} to channel (default <table>:changes) and, with row_channels, to <table>:<primary key>; only the listed columns (plus the primary key); operations among insert/update/delete; changed_only sends only changed columns of an UPDATE; public skips the per-subscriber row check. Creates the channel rows if missing. Run again to change the options.';

drop function if exists realtime.disable_changes(regclass);
create function realtime.disable_changes(source regclass) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_invoker text := pg_catalog.current_setting('role');
begin
  if v_invoker = 'none' then
    v_invoker := session_user;
  end if;
  if not pg_catalog.pg_has_role(v_invoker, (select c.relowner from pg_catalog.pg_class c where c.oid = source), 'USAGE') then
    raise exception 'realtime.disable_changes: only the owner of % may stop its stream', source using errcode = '42501';
  end if;
  if exists (select from pg_catalog.pg_trigger t where t.tgrelid = source and t.tgname = 'realtime_changes') then
    execute pg_catalog.format('drop trigger realtime_changes on %s', source);
  end if;
  delete from realtime.change_streams cs where cs.table_id = source;
  return found;
end
$$;
comment on function realtime.disable_changes(regclass) is
  'Stops publishing the row changes of a table (its owner only): drops the trigger and the stream. The channel rows and their policies stay. Returns whether a stream was enabled.';

-- Which messages are change events that need the row check.
create or replace function realtime.needs_row_check(m realtime.messages) returns boolean
language sql stable set search_path = ''
as $$
  select m.sender_type = 'system' and m.event_name in ('insert', 'update')
     and m.payload operator(pg_catalog.?) 'table' and m.payload operator(pg_catalog.?) 'schema'
     and exists (select from realtime.change_streams cs
                 where cs.table_id = pg_catalog.to_regclass(pg_catalog.quote_ident(m.payload ->> 'schema') || '.'
                                                            || pg_catalog.quote_ident(m.payload ->> 'table'))
                   and not cs.public)
$$;
comment on function realtime.needs_row_check(realtime.messages) is
  'Whether a message is an INSERT or UPDATE event of a non-public change stream: the daemon sends it only to subscribers realtime.change_audience admits.';

drop function if exists realtime.relay_frames(uuid[], pg_catalog.pg_snapshot);
create function realtime.relay_frames(ids uuid[], after pg_catalog.pg_snapshot default null)
returns table (id uuid, seq bigint, channel_name text, frame text, row_check boolean)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, m.channel_name, realtime.event_frame(m), realtime.needs_row_check(m)
  from pg_catalog.unnest(relay_frames.ids) with ordinality as i(id, n)
  join realtime.messages m on m.id = i.id
  where relay_frames.after is null or not pg_catalog.pg_visible_in_snapshot(m.xact_id, relay_frames.after)
  order by i.n
$$;
comment on function realtime.relay_frames(uuid[], pg_catalog.pg_snapshot) is
  'For the daemon: realtime.event_frames plus row_check (realtime.needs_row_check).';

drop function if exists realtime.replay_relay_frames(text, bigint, integer);
create function realtime.replay_relay_frames(channel text, since bigint, max_count integer)
returns table (id uuid, seq bigint, frame text, row_check boolean)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, realtime.event_frame(m), realtime.needs_row_check(m)
  from realtime.messages m
  where m.channel_name = replay_relay_frames.channel and m.seq > replay_relay_frames.since
  order by m.seq
  limit replay_relay_frames.max_count
$$;
comment on function realtime.replay_relay_frames(text, bigint, integer) is
  'For the daemon: realtime.replay_frames plus row_check (realtime.needs_row_check).';

drop function if exists realtime.change_audience(uuid[], jsonb);
create function realtime.change_audience(ids uuid[], identities jsonb)
returns table (id uuid, identity integer)
language plpgsql volatile set search_path = ''
as $$
declare
  v_table record;
  v_identity record;
  v_sql text;
  v_visible integer[];
begin
  -- Per source table: one query per identity over all its events, as that
  -- identity, so the table's own policies decide which rows it sees now.
  for v_table in
    select cs.table_id, cs.primary_key,
           pg_catalog.array_agg(m.id order by m.seq) as message_ids,
           pg_catalog.jsonb_agg(m.payload -> 'new' order by m.seq) as rows
    from realtime.messages m
    join realtime.change_streams cs
      on cs.table_id = pg_catalog.to_regclass(pg_catalog.quote_ident(m.payload ->> 'schema') || '.'
                                             || pg_catalog.quote_ident(m.payload ->> 'table'))
    where m.id = any (change_audience.ids) and realtime.needs_row_check(m)
    group by cs.table_id, cs.primary_key
  loop
    -- The keys are typed in a subquery kept apart (offset 0), so the lookup is
    -- a plain equality between columns: leakproof, so the planner may use the
    -- primary key's index under the table's policies (a non-leakproof jsonb
    -- operator in that condition would force a scan of the whole table).
    select pg_catalog.format(
             'select coalesce(pg_catalog.array_agg(k.i::integer), ''{}'') from (select %s, x.i from pg_catalog.jsonb_array_elements($1) with ordinality x(r, i) offset 0) k where exists (select from %s t where %s)',
             pg_catalog.string_agg(pg_catalog.format('(x.r ->> %L)::%s as c%s', a.attname,
                                                     pg_catalog.format_type(a.atttypid, a.atttypmod), k.n), ', '),
             v_table.table_id,
             pg_catalog.string_agg(pg_catalog.format('t.%I = k.c%s', a.attname, k.n), ' and '))
      into v_sql
    from pg_catalog.unnest(v_table.primary_key) with ordinality k(col, n)
    join pg_catalog.pg_attribute a on a.attrelid = v_table.table_id and a.attname = k.col;
    for v_identity in
      select e.value, e.n from pg_catalog.jsonb_array_elements(change_audience.identities) with ordinality e(value, n)
    loop
      begin
        perform realtime.impersonate(v_identity.value ->> 'role', v_identity.value -> 'claims');
        execute v_sql into v_visible using v_table.rows;
        perform pg_catalog.set_config('role', 'none', true);
      exception when others then
        -- No SELECT privilege, a policy that fails, an unknown role: sees nothing.
        v_visible := '{}';
      end;
      return query select v_table.message_ids[x], v_identity.n::integer from pg_catalog.unnest(v_visible) x;
    end loop;
  end loop;
end
$$;
comment on function realtime.change_audience(uuid[], jsonb) is
  'For the daemon: which identities ([{role, claims}], numbered from 1) may see which row-checked change events among ids, by selecting each row by primary key as that identity under the source table''s row-level security. One row per (message, identity) allowed; events that need no check are not listed.';

revoke all on realtime.change_streams from public;
grant select on realtime.change_streams to service_role;
revoke execute on function realtime.changes_trigger() from public;
revoke execute on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) from public;
revoke execute on function realtime.disable_changes(regclass) from public;
revoke execute on function realtime.needs_row_check(realtime.messages) from public;
revoke execute on function realtime.relay_frames(uuid[], pg_catalog.pg_snapshot) from public;
revoke execute on function realtime.replay_relay_frames(text, bigint, integer) from public;
revoke execute on function realtime.change_audience(uuid[], jsonb) from public;
grant execute on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) to service_role;
grant execute on function realtime.disable_changes(regclass) to service_role;
grant execute on function realtime.needs_row_check(realtime.messages) to service_role;
grant execute on function realtime.relay_frames(uuid[], pg_catalog.pg_snapshot) to service_role;
grant execute on function realtime.replay_relay_frames(text, bigint, integer) to service_role;
grant execute on function realtime.change_audience(uuid[], jsonb) to service_role;

insert into realtime.schema_versions (version, name) values (9, 'change streams')
on conflict (version) do nothing;
