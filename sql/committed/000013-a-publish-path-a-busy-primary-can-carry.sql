--! Previous: sha1:8b3ecaca509197ea978d42baa1abfc93411e72dc
--! Hash: sha1:5a148b20e4b520b1f61e4d8b78704192bbd9f21a
--! Message: a publish path a busy primary can carry

-- realtimed 000013: a publish path a busy primary can carry.
--
-- 1. realtime.messages is partitioned by seq ranges of 2^32, one partition
--    per partition_span (a day by default): realtime.maintain_partitions()
--    moves the sequence to the next range when the current partition is
--    older than that, keeps two empty partitions ahead, and drops whole
--    partitions once retention has passed (a DROP, not a DELETE: no dead
--    rows). The existing table becomes partition messages_p0, attached with a
--    CHECK constraint proved first, so nothing is copied or rewritten.
-- 2. No foreign key from a message to its channel (its KEY SHARE lock on the
--    one channel row made a MultiXact of nearly every publish), nor from a
--    webhook delivery to its message. Deleting a channel leaves its messages
--    as they are, channel_id and all.
-- 3. Messages are written once. The sockets each message reached go to
--    realtime.message_audience (one row per report of a daemon, arrays of
--    seqs); webhook deliveries are counted from realtime.webhook_deliveries.
--    realtime.message_stats shows ws_audience_count, wh_audience_count and
--    wh_delivered_count per message as before; the two columns that used to
--    be updated stay on realtime.messages, NULL for new messages.
-- 4. One index per partition: the primary key (channel_name, seq) serves
--    replay and every lookup; BRIN indexes (a few pages) cover xact_id, seq
--    and created_at. No index on id: the daemon finds messages by channel
--    and seq.
-- 5. Dedupe keys live in realtime.message_dedupe, keyed by channel, sender
--    ('system', or 'user:' || the sub claim, any format) and key. A publish
--    never waits for another transaction's key: it takes the key's advisory
--    lock without waiting (the lock key is derived from realtime.notify_key,
--    so no other role can hold it), and a key still held by a transaction in
--    progress counts as a repeat. Two transactions using keys in opposite
--    orders no longer deadlock, and under REPEATABLE READ a key committed
--    after the snapshot is a repeat instead of a serialization failure.
-- 6. The whole change takes its locks first, in the order publishers take
--    them (messages, channels, config, webhook_deliveries), each attempt
--    waiting at most 100 ms, so publishers queue behind it for no longer.
set local lock_timeout = '5s';

do $locks$
declare
  v_attempt integer := 0;
begin
  loop
    begin
      perform pg_catalog.set_config('lock_timeout', '100ms', true);
      lock table realtime.messages, realtime.channels, realtime.config, realtime.webhook_deliveries
        in access exclusive mode;
      exit;
    exception when lock_not_available then
      v_attempt := v_attempt + 1;
      if v_attempt >= 300 then
        raise exception 'realtime 000013: could not lock realtime.messages in 300 attempts of 100 ms'
          using hint = 'Long transactions hold it; run the upgrade again at a quieter moment.';
      end if;
      perform pg_catalog.pg_sleep(least(0.05 * v_attempt, 1.0) * (0.5 + pg_catalog.random()));
    end;
  end loop;
  perform pg_catalog.set_config('lock_timeout', '5s', true);
end
$locks$;

--------------------------------------------------------------------------------
-- New tables

alter table realtime.config
  add column if not exists partition_span interval not null default interval '1 day';
alter table realtime.config drop constraint if exists config_partition_span_check;
alter table realtime.config add constraint config_partition_span_check
  check (partition_span between interval '1 minute' and interval '31 days');
comment on column realtime.config.partition_span is
  'How long one partition of realtime.messages takes new messages (realtime.maintain_partitions). A partition is dropped whole once retention has passed since it took its last message, so messages are kept between retention and retention + partition_span.';

create table if not exists realtime.message_partitions (
  seq_from bigint not null,
  seq_to bigint not null,
  table_name text not null,
  opened_at timestamptz,
  closed_at timestamptz,
  constraint message_partitions_pkey primary key (seq_from),
  constraint message_partitions_table_name_key unique (table_name),
  constraint message_partitions_range_check check (seq_to > seq_from)
);
alter table realtime.message_partitions enable row level security;
comment on table realtime.message_partitions is 'The partitions of realtime.messages, by seq range, kept by realtime.maintain_partitions(). Read it to see what retention will drop next.';
comment on column realtime.message_partitions.seq_from is 'First seq of the partition (the first partition, messages_p0, starts at the lowest bigint).';
comment on column realtime.message_partitions.seq_to is 'First seq past it.';
comment on column realtime.message_partitions.table_name is 'The partition, in schema realtime.';
comment on column realtime.message_partitions.opened_at is 'When new messages started going to it (NULL: not yet, one of the partitions kept ahead).';
comment on column realtime.message_partitions.closed_at is 'When new messages stopped going to it (NULL: still open).';
drop policy if exists message_partitions_service_role_select on realtime.message_partitions;
create policy message_partitions_service_role_select on realtime.message_partitions for select to service_role using (true);
comment on policy message_partitions_service_role_select on realtime.message_partitions is 'service_role reads the partition list.';
revoke all on realtime.message_partitions from public;
grant select on realtime.message_partitions to service_role;

create table if not exists realtime.message_dedupe (
  channel_name text not null,
  sender_key text not null,
  dedupe_key text not null,
  message_id uuid not null,
  message_seq bigint not null,
  created_at timestamptz not null default pg_catalog.now(),
  constraint message_dedupe_pkey primary key (channel_name, sender_key, dedupe_key)
);
alter table realtime.message_dedupe enable row level security;
comment on table realtime.message_dedupe is 'The dedupe keys used, one row per (channel, sender, key), with the message each first wrote. Pruned with the messages.';
comment on column realtime.message_dedupe.channel_name is 'The channel.';
comment on column realtime.message_dedupe.sender_key is 'system, or user: followed by the sub claim of the sender.';
comment on column realtime.message_dedupe.dedupe_key is 'The key.';
comment on column realtime.message_dedupe.message_id is 'The message the key first wrote.';
comment on column realtime.message_dedupe.message_seq is 'Its seq.';
comment on column realtime.message_dedupe.created_at is 'When the key was first used.';
create index if not exists message_dedupe_created_at_idx on realtime.message_dedupe (created_at);
comment on index realtime.message_dedupe_created_at_idx is 'Retention by age.';
drop policy if exists message_dedupe_service_role_select on realtime.message_dedupe;
create policy message_dedupe_service_role_select on realtime.message_dedupe for select to service_role using (true);
comment on policy message_dedupe_service_role_select on realtime.message_dedupe is 'service_role reads the dedupe keys.';
revoke all on realtime.message_dedupe from public;
grant select on realtime.message_dedupe to service_role;

create table if not exists realtime.message_audience (
  id bigint generated always as identity,
  reported_at timestamptz not null default pg_catalog.now(),
  seq_min bigint not null,
  seq_max bigint not null,
  channel_names text[] not null,
  seqs bigint[] not null,
  counts integer[] not null,
  constraint message_audience_pkey primary key (id),
  constraint message_audience_arrays_check check (
    pg_catalog.cardinality(seqs) = pg_catalog.cardinality(counts)
    and pg_catalog.cardinality(seqs) = pg_catalog.cardinality(channel_names))
);
alter table realtime.message_audience enable row level security;
comment on table realtime.message_audience is 'Sockets each message was written to: one row per report of a daemon instance (realtime.record_ws_audience), so a message row is never rewritten. Summed per message by realtime.message_stats. Pruned with the messages.';
comment on column realtime.message_audience.id is 'Row id.';
comment on column realtime.message_audience.reported_at is 'When it was reported.';
comment on column realtime.message_audience.seq_min is 'Lowest seq in the report.';
comment on column realtime.message_audience.seq_max is 'Highest seq in the report.';
comment on column realtime.message_audience.channel_names is 'The channel of each message.';
comment on column realtime.message_audience.seqs is 'The seq of each message.';
comment on column realtime.message_audience.counts is 'Sockets each was written to by the reporting instance.';
create index if not exists message_audience_seqs_idx on realtime.message_audience
  using gist (pg_catalog.int8range(seq_min, seq_max, '[]'));
comment on index realtime.message_audience_seqs_idx is 'The reports that may hold a seq.';
create index if not exists message_audience_reported_at_idx on realtime.message_audience (reported_at);
comment on index realtime.message_audience_reported_at_idx is 'Retention by age.';
drop policy if exists message_audience_service_role_select on realtime.message_audience;
create policy message_audience_service_role_select on realtime.message_audience for select to service_role using (true);
comment on policy message_audience_service_role_select on realtime.message_audience is 'service_role reads the audience reports.';
revoke all on realtime.message_audience from public;
grant select on realtime.message_audience to service_role;

-- A delivery finds its message by channel and seq (messages have no index on id).
alter table realtime.webhook_deliveries
  add column if not exists channel_name text,
  add column if not exists message_seq bigint;
comment on column realtime.webhook_deliveries.channel_name is 'The message''s channel (with message_seq, the message''s primary key). NULL for deliveries finished before version 13.';
comment on column realtime.webhook_deliveries.message_seq is 'The message''s seq. NULL for deliveries finished before version 13.';
create index if not exists webhook_deliveries_message_seq_idx on realtime.webhook_deliveries (message_seq);
comment on index realtime.webhook_deliveries_message_seq_idx is 'Deliveries of a message, or of a partition''s seq range (retention keeps a partition while one is due).';

--------------------------------------------------------------------------------
-- realtime.messages becomes the first partition of a table partitioned by seq

do $swap$
declare
  v_last bigint;
  v_bound bigint;
  v_def text;
  v_index record;
  r record;
  v_cmd text;
  v_roles text;
begin
  if (select c.relkind from pg_catalog.pg_class c where c.oid = 'realtime.messages'::regclass) <> 'r' then
    return; -- already partitioned
  end if;

  -- Unfinished deliveries learn their message's channel and seq while the id
  -- still finds it.
  update realtime.webhook_deliveries d
  set channel_name = m.channel_name, message_seq = m.seq
  from realtime.messages m
  where m.id = d.message_id and d.message_seq is null and d.state <> 'delivered';

  -- Dedupe keys used so far.
  insert into realtime.message_dedupe as k (channel_name, sender_key, dedupe_key, message_id, message_seq, created_at)
  select m.channel_name,
         case when m.sender_type = 'system' then 'system' else 'user:' || m.sender_id::text end,
         m.dedupe_key, m.id, m.seq, m.created_at
  from realtime.messages m
  where m.dedupe_key is not null
  on conflict do nothing;

  -- The range of the first partition: every seq allocated so far, up to the
  -- next multiple of 2^32; or, when `realtimed migrate` prepared the table
  -- online, the bound of the CHECK constraint it validated.
  select case when s.is_called then s.last_value else 0 end into v_last from realtime.messages_seq_seq s;
  v_bound := ((v_last >> 32) + 1) << 32;
  select pg_catalog.pg_get_constraintdef(c.oid) into v_def
  from pg_catalog.pg_constraint c
  where c.conrelid = 'realtime.messages'::regclass and c.conname = 'messages_p0_bound' and c.convalidated;
  if v_def is not null then
    v_bound := (pg_catalog.regexp_match(v_def, 'seq < ''?(\d+)'))[1]::bigint;
  else
    alter table realtime.messages drop constraint if exists messages_p0_bound;
    execute pg_catalog.format('alter table realtime.messages add constraint messages_p0_bound check (seq < %s) not valid', v_bound);
    alter table realtime.messages validate constraint messages_p0_bound;
  end if;

  -- Its primary key (channel_name, seq), unless prepared online.
  select i.indexrelid, i.indisvalid into v_index
  from pg_catalog.pg_index i
  where i.indexrelid = pg_catalog.to_regclass('realtime.messages_p0_pkey');
  if v_index.indexrelid is not null and not v_index.indisvalid then
    drop index realtime.messages_p0_pkey;
    v_index := null;
  end if;
  if v_index.indexrelid is null then
    create unique index messages_p0_pkey on realtime.messages (channel_name, seq);
  end if;
  select i.indexrelid, i.indisvalid into v_index
  from pg_catalog.pg_index i
  where i.indexrelid = pg_catalog.to_regclass('realtime.messages_p0_xact_id_brin');
  if v_index.indexrelid is not null and not v_index.indisvalid then
    drop index realtime.messages_p0_xact_id_brin;
    v_index := null;
  end if;
  if v_index.indexrelid is null then
    create index messages_p0_xact_id_brin on realtime.messages using brin (((xact_id::text)::bigint));
  end if;
  select i.indexrelid, i.indisvalid into v_index
  from pg_catalog.pg_index i
  where i.indexrelid = pg_catalog.to_regclass('realtime.messages_p0_seq_brin');
  if v_index.indexrelid is not null and not v_index.indisvalid then
    drop index realtime.messages_p0_seq_brin;
    v_index := null;
  end if;
  if v_index.indexrelid is null then
    create index messages_p0_seq_brin on realtime.messages using brin (seq);
  end if;

  -- What the partitioned table holds itself: its triggers, keys, policies and
  -- grants move to it; the old table keeps its rows and an index or two.
  alter table realtime.webhook_deliveries drop constraint if exists webhook_deliveries_message_id_fkey;
  alter table realtime.messages drop constraint if exists messages_channel_id_fkey;
  drop trigger if exists messages_before_insert on realtime.messages;
  drop trigger if exists messages_before_update on realtime.messages;
  drop trigger if exists messages_enqueue_webhooks on realtime.messages;
  drop trigger if exists messages_notify on realtime.messages;
  alter table realtime.messages alter column seq drop identity if exists;
  alter table realtime.messages drop constraint messages_pkey;
  alter table realtime.messages drop constraint if exists messages_seq_key;
  alter table realtime.messages add constraint messages_p0_pkey primary key using index messages_p0_pkey;
  drop index if exists realtime.messages_channel_name_seq_idx;
  drop index if exists realtime.messages_channel_id_idx;
  drop index if exists realtime.messages_dedupe_key_idx;
  drop index if exists realtime.messages_xact_id_idx;
  alter index if exists realtime.messages_created_at_idx rename to messages_p0_created_at_idx;
  -- The counts that used to be updated are NULL for rows written from now on.
  alter table realtime.messages alter column ws_audience_count drop not null,
                                alter column wh_delivered_count drop not null;
  alter table realtime.messages rename to messages_p0;

  create sequence realtime.messages_seq_seq as bigint start with 1 minvalue 1;
  perform pg_catalog.setval('realtime.messages_seq_seq', v_bound, false);
  create table realtime.messages (
    id uuid not null default pg_catalog.gen_random_uuid(),
    seq bigint not null default pg_catalog.nextval('realtime.messages_seq_seq'::regclass),
    channel_id uuid,
    channel_name text not null,
    event_name text not null,
    payload jsonb not null default '{}'::jsonb,
    sender_type text not null default 'user',
    sender_id uuid,
    dedupe_key text,
    ws_audience_count integer,
    wh_audience_count integer not null default 0,
    wh_delivered_count integer,
    xact_id xid8 not null default pg_catalog.pg_current_xact_id(),
    created_at timestamptz not null default pg_catalog.now(),
    -- No CHECK constraints: the insert trigger validates every row (a system
    -- message is dropped, not refused, so it must anyway), and preparing six
    -- CHECK expressions for each one-row INSERT took a third of the CPU of a
    -- publish. messages_p0 keeps the ones it had.
    constraint messages_pkey primary key (channel_name, seq)
  ) partition by range (seq);
  alter sequence realtime.messages_seq_seq owned by realtime.messages.seq;
  create index messages_xact_id_brin on realtime.messages using brin (((xact_id::text)::bigint));
  create index messages_seq_brin on realtime.messages using brin (seq);
  execute pg_catalog.format('alter table realtime.messages attach partition realtime.messages_p0 for values from (minvalue) to (%s)', v_bound);
  alter table realtime.messages_p0 drop constraint messages_p0_bound;
  alter table realtime.messages enable row level security;

  -- Policies, the DBA's included, now on the partitioned table.
  for r in
    select p.polname, p.polpermissive, p.polcmd, p.polroles,
           pg_catalog.pg_get_expr(p.polqual, p.polrelid) as qual,
           pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as check_expr,
           pg_catalog.obj_description(p.oid, 'pg_policy') as note
    from pg_catalog.pg_policy p where p.polrelid = 'realtime.messages_p0'::regclass
  loop
    select pg_catalog.string_agg(case when x.r = 0 then 'public' else pg_catalog.quote_ident(x.n) end, ', ')
    into v_roles
    from (select u.r, a.rolname as n from pg_catalog.unnest(r.polroles) u(r)
          left join pg_catalog.pg_roles a on a.oid = u.r) x;
    v_cmd := pg_catalog.format('create policy %I on realtime.messages as %s for %s to %s',
      r.polname, case when r.polpermissive then 'permissive' else 'restrictive' end,
      case r.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                    when 'd' then 'delete' else 'all' end, v_roles);
    if r.qual is not null then v_cmd := v_cmd || ' using (' || r.qual || ')'; end if;
    if r.check_expr is not null then v_cmd := v_cmd || ' with check (' || r.check_expr || ')'; end if;
    execute v_cmd;
    if r.note is not null then
      execute pg_catalog.format('comment on policy %I on realtime.messages is %L', r.polname, r.note);
    end if;
    execute pg_catalog.format('drop policy %I on realtime.messages_p0', r.polname);
  end loop;

  -- Table and column grants too; the partition keeps none (its owner reads it).
  for r in
    select a.privilege_type, a.grantee, a.is_grantable
    from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
    where c.oid = 'realtime.messages_p0'::regclass and a.grantee <> c.relowner
  loop
    execute pg_catalog.format('grant %s on realtime.messages to %s%s', r.privilege_type,
      case when r.grantee = 0 then 'public' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) end,
      case when r.is_grantable then ' with grant option' else '' end);
    execute pg_catalog.format('revoke %s on realtime.messages_p0 from %s', r.privilege_type,
      case when r.grantee = 0 then 'public' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) end);
  end loop;
  for r in
    select t.attname, a.privilege_type, a.grantee, a.is_grantable
    from pg_catalog.pg_attribute t, pg_catalog.pg_class c, pg_catalog.aclexplode(t.attacl) a
    where t.attrelid = 'realtime.messages_p0'::regclass and c.oid = t.attrelid
      and t.attacl is not null and not t.attisdropped and a.grantee <> c.relowner
  loop
    execute pg_catalog.format('grant %s (%I) on realtime.messages to %s%s', r.privilege_type, r.attname,
      case when r.grantee = 0 then 'public' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) end,
      case when r.is_grantable then ' with grant option' else '' end);
    execute pg_catalog.format('revoke %s (%I) on realtime.messages_p0 from %s', r.privilege_type, r.attname,
      case when r.grantee = 0 then 'public' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) end);
  end loop;

  -- Column comments carry over; the partition says what it is.
  for r in
    select t.attname, pg_catalog.col_description(t.attrelid, t.attnum) as note
    from pg_catalog.pg_attribute t
    where t.attrelid = 'realtime.messages_p0'::regclass and t.attnum > 0 and not t.attisdropped
  loop
    if r.note is not null then
      execute pg_catalog.format('comment on column realtime.messages.%I is %L', r.attname, r.note);
    end if;
  end loop;
  comment on table realtime.messages_p0 is 'The messages written before version 13, as the first partition of realtime.messages. Dropped whole by realtime.maintain_partitions() once retention has passed; until then realtime.prune() deletes its old rows in batches, as before.';

  -- Functions of the row type now belong to the partition's; the new ones follow.
  drop function if exists realtime.event_frame(realtime.messages_p0);
  drop function if exists realtime.needs_row_check(realtime.messages_p0);
  drop function if exists realtime.webhook_body(realtime.messages_p0);

  insert into realtime.message_partitions (seq_from, seq_to, table_name, opened_at, closed_at)
  values (-9223372036854775808, v_bound, 'messages_p0', null, pg_catalog.now());

  -- Objects of the DBA's that used the old table keep using the old table.
  for r in
    select distinct pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) as what
    from pg_catalog.pg_depend d
    where d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid = 'realtime.messages_p0'::regclass
      and d.deptype = 'n' and d.classid in ('pg_catalog.pg_rewrite'::regclass, 'pg_catalog.pg_proc'::regclass)
      and not exists (select from pg_catalog.pg_rewrite w join pg_catalog.pg_class v on v.oid = w.ev_class
                      where d.classid = 'pg_catalog.pg_rewrite'::regclass and w.oid = d.objid
                        and v.relnamespace = 'realtime'::regnamespace)
      and not exists (select from pg_catalog.pg_proc f
                      where d.classid = 'pg_catalog.pg_proc'::regclass and f.oid = d.objid
                        and f.pronamespace = 'realtime'::regnamespace)
  loop
    raise warning 'realtime 000013: % refers to realtime.messages_p0, the messages written before this upgrade; recreate it to read realtime.messages', r.what;
  end loop;
end
$swap$;

--------------------------------------------------------------------------------
-- Partitions: ahead, rolled, dropped

create or replace function realtime.maintain_partitions() returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_span interval;
  v_retention interval;
  v_next bigint;
  v_from bigint;
  v_current realtime.message_partitions;
  v_lock_timeout text := pg_catalog.current_setting('lock_timeout');
  v_done text[] := '{}';
  r record;
begin
  -- One maintainer at a time (daemons, pg_cron); only the owner can take this lock.
  lock table realtime.message_partitions in share row exclusive mode;
  select c.partition_span, c.retention into v_span, v_retention from realtime.config c;
  v_span := coalesce(v_span, interval '1 day');
  v_retention := coalesce(v_retention, interval '24 hours');

  -- The partition the next seq goes to, and two empty ones after it, so a
  -- publish never meets a range without a partition, whatever happens to
  -- this function's schedule.
  select case when s.is_called then s.last_value + 1 else s.last_value end into v_next from realtime.messages_seq_seq s;
  for i in 0..2 loop
    v_from := ((v_next >> 32) + i) << 32;
    if not exists (select from realtime.message_partitions p where p.seq_from <= v_from and v_from < p.seq_to) then
      perform realtime.create_message_partition(v_from);
      v_done := v_done || ('created messages_p' || (v_from >> 32)::text);
    end if;
  end loop;
  select * into v_current from realtime.message_partitions p where p.seq_from <= v_next and v_next < p.seq_to;
  if v_current.opened_at is null then
    update realtime.message_partitions p set opened_at = pg_catalog.now() where p.seq_from = v_current.seq_from;
    v_current.opened_at := pg_catalog.now();
  end if;
  -- Every partition before the open one is closed (also when the sequence ran
  -- into the next range on its own).
  update realtime.message_partitions p set closed_at = pg_catalog.now()
  where p.seq_to <= v_current.seq_from and p.closed_at is null;

  -- Roll: the open partition has taken messages for partition_span. Never
  -- into a partition this transaction created: moving the sequence is not
  -- undone by a rollback, the partition would be.
  if v_current.opened_at < pg_catalog.now() - v_span
     and exists (select from realtime.message_partitions p
                 where p.seq_from = v_current.seq_to
                   and p.xmin::text::bigint <> pg_catalog.pg_current_xact_id()::text::bigint % 4294967296) then
    perform pg_catalog.setval('realtime.messages_seq_seq', v_current.seq_to, false);
    update realtime.message_partitions p set closed_at = pg_catalog.now() where p.seq_from = v_current.seq_from;
    update realtime.message_partitions p set opened_at = pg_catalog.now() where p.seq_from = v_current.seq_to;
    v_done := v_done || ('rolled to messages_p' || (v_current.seq_to >> 32)::text);
    v_from := v_current.seq_to + (2::bigint << 32);
    if not exists (select from realtime.message_partitions p where p.seq_from = v_from) then
      perform realtime.create_message_partition(v_from);
      v_done := v_done || ('created messages_p' || (v_from >> 32)::text);
    end if;
  end if;

  -- Drop what retention has passed, unless a webhook of it is still due.
  for r in
    select p.seq_from, p.seq_to, p.table_name from realtime.message_partitions p
    where p.closed_at < pg_catalog.now() - v_retention
      and not exists (select from realtime.webhook_deliveries d
                      where d.message_seq >= p.seq_from and d.message_seq < p.seq_to
                        and d.state in ('pending', 'delivering'))
    order by p.seq_from
  loop
    begin
      -- Dropping a partition locks realtime.messages: wait for it briefly, or
      -- try again next time, rather than queue every publisher behind it.
      perform pg_catalog.set_config('lock_timeout', '200ms', true);
      execute pg_catalog.format('drop table realtime.%I', r.table_name);
      perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
      delete from realtime.message_partitions p where p.seq_from = r.seq_from;
      update realtime.config c set pruned_through_seq = greatest(c.pruned_through_seq, r.seq_to - 1);
      v_done := v_done || ('dropped ' || r.table_name);
    exception when lock_not_available then
      perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
      raise notice 'realtime.maintain_partitions: % is in use; it will be dropped next time', r.table_name;
    when dependent_objects_still_exist then
      perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
      raise warning 'realtime.maintain_partitions: % is kept: other objects depend on it', r.table_name
        using hint = 'Views or functions of yours that read it directly; make them read realtime.messages.';
    end;
  end loop;
  return pg_catalog.array_to_string(v_done, '; ');
end
$$;
comment on function realtime.maintain_partitions() is 'Keeps realtime.messages partitioned: two empty partitions ahead of the open one; when the open one is older than realtime.config.partition_span, new messages go to the next (the sequence moves to its first seq); a partition closed more than retention ago, with no webhook still due, is dropped whole. Called by realtime.prune() and by the daemon. Returns what it did.';

create or replace function realtime.create_message_partition(seq_from bigint) returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_name text := 'messages_p' || (seq_from >> 32)::text;
begin
  -- Created apart and attached: ATTACH PARTITION locks realtime.messages in
  -- SHARE UPDATE EXCLUSIVE mode only, which publishers never wait for.
  execute pg_catalog.format('create table realtime.%I (like realtime.messages including defaults)', v_name);
  execute pg_catalog.format('alter table realtime.%I add constraint %I check (seq >= %s and seq < %s)',
                            v_name, v_name || '_range', seq_from, seq_from + (1::bigint << 32));
  execute pg_catalog.format('alter table realtime.%I enable row level security', v_name);
  execute pg_catalog.format('alter table realtime.messages attach partition realtime.%I for values from (%s) to (%s)',
                            v_name, seq_from, seq_from + (1::bigint << 32));
  execute pg_catalog.format('alter table realtime.%I drop constraint %I', v_name, v_name || '_range');
  execute pg_catalog.format('comment on table realtime.%I is %L', v_name,
    'Messages with seq from ' || seq_from || ' (a partition of realtime.messages; see realtime.message_partitions).');
  insert into realtime.message_partitions (seq_from, seq_to, table_name)
  values (create_message_partition.seq_from, create_message_partition.seq_from + (1::bigint << 32), v_name);
end
$$;
comment on function realtime.create_message_partition(bigint) is 'For realtime.maintain_partitions: a new empty partition for the 2^32 seqs from seq_from, attached without blocking writers.';
revoke execute on function realtime.create_message_partition(bigint) from public;

-- The partitions the first version-13 messages go to.
select realtime.maintain_partitions();

--------------------------------------------------------------------------------
-- Dedupe without waiting

create or replace function realtime.claim_dedupe_key(channel_name text, sender_key text, dedupe_key text,
                                                     message_id uuid, message_seq bigint,
                                                     out outcome text, out first_id uuid, out first_seq bigint)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_seed bigint;
begin
  -- The key's lock, never waited for: a transaction in progress with the same
  -- key holds it, and this message counts as its repeat. The lock key comes
  -- from realtime.notify_key, so no other role can compute and hold it.
  select ('x' || pg_catalog.left(pg_catalog.md5(k.key), 16))::bit(64)::bigint into v_seed from realtime.notify_key k;
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

create or replace function realtime.dedupe_first(channel_name text, sender_key text, dedupe_key text,
                                                 out id uuid, out seq bigint)
language sql stable security definer set search_path = ''
as $$
  select d.message_id, d.message_seq from realtime.message_dedupe d
  where d.channel_name = dedupe_first.channel_name and d.sender_key = dedupe_first.sender_key
    and d.dedupe_key = dedupe_first.dedupe_key
$$;
comment on function realtime.dedupe_first(text, text, text) is 'The message a dedupe key first wrote (id, seq), or NULLs.';

create or replace function realtime.system_message_id(channel_name text, dedupe_key text) returns uuid
language sql stable security definer set search_path = ''
as $$ select (realtime.dedupe_first(system_message_id.channel_name, 'system', system_message_id.dedupe_key)).id $$;
comment on function realtime.system_message_id(text, text) is 'The id of the system message written with this dedupe key on this channel, if any (realtime.publish returns it for a repeat).';

--------------------------------------------------------------------------------
-- The functions every publish calls are PL/pgSQL: a LANGUAGE sql function
-- that cannot be inlined is parsed and planned again on every call from
-- another function, which was 30% of the CPU a publish took (perf, pgbench).

create or replace function realtime.may_publish() returns boolean
language plpgsql stable set search_path = ''
as $$
begin
  -- A superuser is a member of every role, service_role included.
  return pg_catalog.pg_has_role(current_user, 'service_role', 'MEMBER')
      or not (pg_catalog.pg_has_role(current_user, 'anon', 'MEMBER')
              or pg_catalog.pg_has_role(current_user, 'authenticated', 'MEMBER'));
end
$$;

create or replace function realtime.max_payload_bytes() returns integer
language plpgsql stable security definer set search_path = ''
as $$
begin
  return coalesce((select c.max_payload_bytes from realtime.config c), 65536);
end
$$;

-- Matching, once: match_channel (subscribe) and channel_for_insert (publish)
-- both read it, each in one SECURITY DEFINER call.
create or replace function realtime.channel_row(channel_name text) returns realtime.channels
language plpgsql stable set search_path = ''
as $$
declare
  v realtime.channels;
begin
  if not realtime.is_valid_channel_name(channel_row.channel_name) then
    return v;
  end if;
  -- An exact pattern wins (names cannot contain %, so = finds exact patterns only).
  select c.* into v from realtime.channels c where c.pattern = channel_row.channel_name;
  if not found then
    -- Among wildcards: longest literal prefix, then most literal characters,
    -- then the pattern itself (C collation) so ties are deterministic.
    -- Only % is a wildcard: escape LIKE's \ and _ first.
    select c.* into v
    from realtime.channels c
    where pg_catalog.strpos(c.pattern, '%') > 0
      and channel_row.channel_name like
          pg_catalog.replace(pg_catalog.replace(c.pattern, E'\\', E'\\\\'), '_', E'\\_')
    order by pg_catalog.strpos(c.pattern, '%') desc,
             pg_catalog.length(pg_catalog.replace(c.pattern, '%', '')) desc,
             c.pattern collate "C"
    limit 1;
  end if;
  return v;
end
$$;
comment on function realtime.channel_row(text) is 'The channel row a concrete name matches (exact pattern, else the longest literal prefix), enabled or not; all NULL when none. Runs as its caller: only match_channel and channel_for_insert call it, as the owner.';
revoke execute on function realtime.channel_row(text) from public;

create or replace function realtime.match_channel(channel_name text) returns uuid
language plpgsql stable security definer set search_path = ''
as $$
declare
  v realtime.channels := realtime.channel_row(match_channel.channel_name);
begin
  return case when v.enabled then v.id end;
end
$$;

drop function if exists realtime.channel_for_insert(text);
create function realtime.channel_for_insert(channel_name text,
                                            out channel_id uuid, out max_message_bytes integer,
                                            out webhook_count integer, out payload_cap integer)
language plpgsql stable security definer set search_path = ''
as $$
declare
  v realtime.channels := realtime.channel_row(channel_for_insert.channel_name);
begin
  payload_cap := coalesce((select c.max_payload_bytes from realtime.config c), 65536);
  if v.enabled then
    channel_id := v.id;
    max_message_bytes := v.max_message_bytes;
    webhook_count := coalesce(pg_catalog.cardinality(v.webhook_urls), 0);
  end if;
end
$$;
comment on function realtime.channel_for_insert(text) is 'For the insert trigger, in one call: the enabled channel a name matches (NULL when none), its max_message_bytes and how many webhook URLs it has, and realtime.config.max_payload_bytes, read as the owner (a client may not see the rows).';
revoke execute on function realtime.channel_for_insert(text) from public;
grant execute on function realtime.channel_for_insert(text) to public;

--------------------------------------------------------------------------------
-- Writing a message: once, with no lock on any shared row

create or replace function realtime.messages_before_insert() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_channel record;
  v_bytes integer;
  v_cap integer;
  v_reason text;
  v_dedupe record;
  v_sub text;
begin
  new.ws_audience_count := null;
  new.wh_delivered_count := null;
  if realtime.may_publish() then
    -- A system message (realtime.publish, a trigger, server code). It never
    -- raises into the writing transaction: a bad one is dropped and recorded.
    new.sender_type := 'system';
    new.sender_id := null;
    new.payload := coalesce(new.payload, '{}'::jsonb);
    if not realtime.is_valid_channel_name(new.channel_name) then
      v_reason := 'invalid_channel_name';
    elsif not realtime.is_valid_event_name(new.event_name) then
      v_reason := 'invalid_event_name';
    elsif pg_catalog.jsonb_typeof(new.payload) <> 'object' then
      v_reason := 'invalid_payload';
    elsif new.dedupe_key is not null and pg_catalog.octet_length(new.dedupe_key) not between 1 and 255 then
      v_reason := 'invalid_dedupe_key';
    else
      v_channel := realtime.channel_for_insert(new.channel_name);
      if v_channel.channel_id is null then
        v_reason := 'no_channel';
      elsif pg_catalog.pg_column_size(new.payload) * 6 + 64 > v_channel.payload_cap then
        -- Its JSON text is at most six bytes per stored byte (\u0001): only
        -- a payload that might be over the cap is measured as text.
        v_bytes := pg_catalog.octet_length(new.payload::text);
        if v_bytes > v_channel.payload_cap then
          v_reason := 'payload_too_large';
        end if;
      end if;
    end if;
    if v_reason is not null then
      perform realtime.record_drop(new.channel_name, new.event_name, v_reason, v_bytes);
      raise warning 'realtime.publish: message to channel "%" dropped: %', pg_catalog.left(new.channel_name, 255), v_reason
        using hint = 'Recorded in realtime.dropped_messages.';
      return null;
    end if;
    if new.dedupe_key is not null then
      v_dedupe := realtime.claim_dedupe_key(new.channel_name, 'system', new.dedupe_key, new.id, new.seq);
      if v_dedupe.outcome <> 'new' then
        if v_dedupe.outcome = 'in_flight' then
          raise notice 'realtime.publish: dedupe key "%" on channel "%" is in use by a transaction in progress: this message is its repeat',
            pg_catalog.left(new.dedupe_key, 255), pg_catalog.left(new.channel_name, 255);
        end if;
        return null;
      end if;
    end if;
    new.channel_id := v_channel.channel_id;
    new.wh_audience_count := v_channel.webhook_count;
    -- Wakes the daemon at commit (a hint: it reads the row); from here rather
    -- than an AFTER trigger, which cost a queued event and a second call.
    perform pg_catalog.pg_notify('realtime_messages', '{"v":1,"id":"' || new.id::text || '","seq":' || new.seq::text
                                 || ',"channel":' || pg_catalog.to_json(new.channel_name)::text || '}');
    return new;
  end if;

  -- A client's message: the database says who sent it, and errors are the client's.
  new.id := pg_catalog.gen_random_uuid();
  new.sender_type := 'user';
  new.sender_id := realtime.uid();
  new.wh_audience_count := 0;
  if not realtime.is_valid_channel_name(new.channel_name) then
    raise exception 'realtime: invalid channel name'
      using errcode = 'RT400',
            detail = 'A channel name is 1 to 255 bytes without white space, control characters or %.';
  end if;
  if not realtime.is_valid_event_name(new.event_name) then
    raise exception 'new row for relation "messages" violates check constraint "messages_event_name_check"'
      using errcode = '23514', constraint = 'messages_event_name_check', table = 'messages', schema = 'realtime',
            detail = 'An event name is 1 to 255 bytes without control characters.';
  end if;
  if pg_catalog.jsonb_typeof(new.payload) is distinct from 'object' then
    raise exception 'new row for relation "messages" violates check constraint "messages_payload_check"'
      using errcode = '23514', constraint = 'messages_payload_check', table = 'messages', schema = 'realtime',
            detail = 'The payload is a JSON object.';
  end if;
  if new.dedupe_key is not null and pg_catalog.octet_length(new.dedupe_key) not between 1 and 255 then
    raise exception 'new row for relation "messages" violates check constraint "messages_dedupe_key_check"'
      using errcode = '23514', constraint = 'messages_dedupe_key_check', table = 'messages', schema = 'realtime',
            detail = 'A dedupe key is 1 to 255 bytes.';
  end if;
  v_channel := realtime.channel_for_insert(new.channel_name);
  if v_channel.channel_id is null then
    raise exception 'realtime: no enabled channel matches "%"', new.channel_name using errcode = 'RT404';
  end if;
  new.channel_id := v_channel.channel_id;
  v_bytes := pg_catalog.octet_length(new.payload::text);
  v_cap := v_channel.payload_cap;
  if v_bytes > v_cap then
    raise exception 'realtime: payload is % bytes, over the limit of % bytes', v_bytes, v_cap
      using errcode = 'RT413', hint = 'The limit is realtime.config.max_payload_bytes.';
  end if;
  if v_bytes > v_channel.max_message_bytes then
    raise exception 'realtime: payload is % bytes, over this channel''s limit of % bytes', v_bytes, v_channel.max_message_bytes
      using errcode = 'RT413', hint = 'The limit is max_message_bytes of the channel''s row in realtime.channels.';
  end if;
  if new.dedupe_key is not null then
    -- Senders are told apart by their sub claim, whatever its format.
    v_sub := nullif(coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                             realtime.claims() ->> 'sub'), '');
    if v_sub is null then
      raise exception 'realtime: a dedupe key needs a signed-in sender (a sub claim)'
        using errcode = 'RT400',
              detail = 'Without one, senders could not be told apart, and one sender''s key would answer for another''s.';
    end if;
    v_dedupe := realtime.claim_dedupe_key(new.channel_name, 'user:' || v_sub, new.dedupe_key, new.id, new.seq);
    if v_dedupe.outcome <> 'new' then
      return null;
    end if;
  end if;
  perform pg_catalog.pg_notify('realtime_messages', '{"v":1,"id":"' || new.id::text || '","seq":' || new.seq::text
                               || ',"channel":' || pg_catalog.to_json(new.channel_name)::text || '}');
  return new;
end
$$;
comment on function realtime.messages_before_insert() is 'Trigger: a row written by a role that may publish (realtime.may_publish) is a system message; it is validated and, when it cannot be written (bad name, event, payload or dedupe key, no enabled channel, over the payload cap), dropped with a WARNING and a row in realtime.dropped_messages instead of raising; a repeated dedupe key (realtime.claim_dedupe_key) skips the row. Any other row is a client''s: sender_type user, sender_id from its claims, a fresh id; RT400 bad name or a dedupe key without a sub claim, 23514 (as the CHECK constraints it replaces) bad event name, payload or dedupe key, RT404 no enabled channel, RT413 over a payload cap. Sets the channel and the webhook audience, and notifies realtime_messages with {"v":1,"id","seq","channel"} (delivered at commit, or never). realtime.messages has no CHECK constraints: this trigger is what validates.';

create or replace function realtime.messages_before_update() returns trigger
language plpgsql set search_path = ''
as $$
begin
  raise exception 'realtime: messages are immutable' using errcode = 'RT405',
    hint = 'Delivery statistics are in realtime.message_stats; retention drops whole partitions (realtime.maintain_partitions).';
end
$$;
comment on function realtime.messages_before_update() is 'Trigger: a message never changes after it is written (RT405).';

create or replace function realtime.messages_enqueue_webhooks() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into realtime.webhook_deliveries (message_id, channel_name, message_seq, url, created_at)
  select new.id, new.channel_name, new.seq, u.url, new.created_at
  from realtime.channels c, pg_catalog.unnest(c.webhook_urls) as u(url)
  where c.id = new.channel_id
  on conflict do nothing;
  -- One wake-up per transaction: identical notifications are delivered once.
  perform pg_catalog.pg_notify('realtime_webhooks', '');
  return null;
end
$$;
comment on function realtime.messages_enqueue_webhooks() is 'Trigger: writes the outbox rows of a system message in its own transaction, and wakes the daemon (NOTIFY realtime_webhooks). SECURITY DEFINER: the writer of a system message need not see the outbox.';

drop trigger if exists messages_before_insert on realtime.messages;
create trigger messages_before_insert before insert on realtime.messages
  for each row execute function realtime.messages_before_insert();
comment on trigger messages_before_insert on realtime.messages is 'Sender, channel and size of every new message are decided by the database.';
drop trigger if exists messages_before_update on realtime.messages;
create trigger messages_before_update before update on realtime.messages
  for each row execute function realtime.messages_before_update();
comment on trigger messages_before_update on realtime.messages is 'Messages are immutable.';
drop trigger if exists messages_enqueue_webhooks on realtime.messages;
create trigger messages_enqueue_webhooks after insert on realtime.messages
  for each row when (new.wh_audience_count > 0) execute function realtime.messages_enqueue_webhooks();
comment on trigger messages_enqueue_webhooks on realtime.messages is 'A committed system message always has its webhook deliveries recorded.';
drop trigger if exists messages_notify on realtime.messages;
drop function if exists realtime.messages_notify();

create or replace function realtime.publish(channel_name text, event_name text, payload jsonb, dedupe_key text default null)
returns uuid
language plpgsql set search_path = ''
as $$
declare
  v_id uuid := pg_catalog.gen_random_uuid();
  v_written integer;
begin
  if not realtime.may_publish() then
    if pg_catalog.pg_trigger_depth() = 0 then
      raise exception 'realtime.publish() may not be called by client role %', current_user
        using errcode = '42501',
              hint = 'Clients publish by inserting into realtime.messages, under its INSERT policies. A trigger that publishes for client writes must be SECURITY DEFINER, owned by a role that may publish.';
    end if;
    -- Inside a client's write (a trigger running as the client): the write goes on.
    perform realtime.record_drop(publish.channel_name, publish.event_name, 'not_allowed', null);
    raise warning 'realtime.publish: message to channel "%" dropped: not_allowed (role %)',
      pg_catalog.left(publish.channel_name, 255), current_user
      using hint = 'Make the trigger function SECURITY DEFINER, owned by a role that may publish. Recorded in realtime.dropped_messages.';
    return null;
  end if;
  -- The insert trigger validates, and drops (never raises) what cannot be written.
  insert into realtime.messages (id, channel_name, event_name, payload, dedupe_key)
  values (v_id, publish.channel_name, publish.event_name, publish.payload, publish.dedupe_key);
  get diagnostics v_written = row_count;
  if v_written = 1 then
    return v_id;
  end if;
  -- Dropped (recorded by the trigger), or a repeat of a dedupe key: its first id.
  return case when publish.dedupe_key is not null
              then (realtime.dedupe_first(publish.channel_name, 'system', publish.dedupe_key)).id end;
end
$$;
comment on function realtime.publish(text, text, jsonb, text) is 'Publishes a system message (for triggers and server code) and returns its id. Runs as its caller: any role may, but a client role (realtime.may_publish), which gets 42501 when it calls it itself and a dropped message (WARNING, reason not_allowed) from its own trigger. Never aborts the caller for its input: a bad name, no enabled channel or a payload over the cap gives a WARNING, a row in realtime.dropped_messages and NULL. With dedupe_key, a repeat returns the first id and notifies nothing; a key held by a transaction still in progress is a repeat too (NULL, with a NOTICE), and so is one committed after a REPEATABLE READ snapshot (NULL).';

create or replace function realtime.send(role text, claims jsonb, channel text, event text, payload jsonb,
                                        dedupe_key text default null)
returns table (id uuid, seq bigint, duplicate boolean)
language plpgsql volatile set search_path = ''
as $$
declare
  v_sub text := nullif(send.claims ->> 'sub', '');
  v_id uuid;
  v_seq bigint;
  v_written integer;
begin
  if send.dedupe_key is not null then
    if v_sub is null then
      raise exception 'realtime: a dedupe key needs a signed-in sender (a sub claim)' using errcode = 'RT400';
    end if;
    -- Read as the daemon: clients may not read the dedupe keys.
    select d.id, d.seq into v_id, v_seq from realtime.dedupe_first(send.channel, 'user:' || v_sub, send.dedupe_key) d;
    if v_id is not null then
      return query select v_id, v_seq, true;
      return;
    end if;
  end if;

  -- The INSERT policies of the client's role decide.
  perform realtime.impersonate(send.role, send.claims);
  perform pg_catalog.set_config('realtime.channel_name', send.channel, true);
  insert into realtime.messages (channel_name, event_name, payload, dedupe_key)
  values (send.channel, send.event, send.payload, send.dedupe_key);
  get diagnostics v_written = row_count;
  -- Back to the daemon's role to read the row back (the client may not SELECT it).
  perform pg_catalog.set_config('role', 'none', true);
  if v_written = 0 then
    -- A repeat: the key was used meanwhile, or is held by a publish in progress (NULL id).
    select d.id, d.seq into v_id, v_seq from realtime.dedupe_first(send.channel, 'user:' || v_sub, send.dedupe_key) d;
    return query select v_id, v_seq, true;
    return;
  end if;
  v_seq := pg_catalog.currval('realtime.messages_seq_seq');
  return query select m.id, m.seq, false from realtime.messages m
               where m.channel_name = send.channel and m.seq = v_seq;
end
$$;
comment on function realtime.send(text, jsonb, text, text, jsonb, text) is 'For the daemon: a client publish. Inserts as the client (impersonate(role, claims)), so the INSERT policies on realtime.messages decide, and returns the id and seq; with a dedupe key already used by this sender (its sub claim, any format) on this channel, the first message (duplicate = true; id NULL while the first is still being written). RT400 for a dedupe key from a sender without a sub claim.';

--------------------------------------------------------------------------------
-- Reading messages: by channel and seq

create or replace function realtime.event_frame(m realtime.messages) returns text
language sql stable parallel safe set search_path = ''
as $$
  -- Built as text: compact, fields in the documented order, strings escaped by to_json.
  select '{"type":"event","channel":' || pg_catalog.to_json(m.channel_name)::text
      || ',"event":' || pg_catalog.to_json(m.event_name)::text
      || ',"payload":' || m.payload::text
      || ',"meta":{"messageId":"' || m.id::text
      || '","seq":' || m.seq::text
      || ',"senderType":"' || m.sender_type
      || '","senderId":' || coalesce('"' || m.sender_id::text || '"', 'null')
      || ',"timestamp":"' || pg_catalog.to_char(m.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
      || '"}}'
$$;
comment on function realtime.event_frame(realtime.messages) is 'The wire frame of one message (docs/protocol.md), as JSON text.';

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
comment on function realtime.needs_row_check(realtime.messages) is 'Whether a message is an INSERT or UPDATE event of a non-public change stream: the daemon sends it only to subscribers realtime.change_audience admits.';

create or replace function realtime.webhook_body(m realtime.messages) returns text
language sql stable parallel safe set search_path = ''
as $$
  select '{"id":"' || m.id::text
      || '","channel":' || pg_catalog.to_json(m.channel_name)::text
      || ',"event":' || pg_catalog.to_json(m.event_name)::text
      || ',"payload":' || m.payload::text
      || ',"createdAt":"' || pg_catalog.to_char(m.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
      || '"}'
$$;
comment on function realtime.webhook_body(realtime.messages) is 'The body POSTed to webhooks: {"id","channel","event","payload","createdAt"} (the signature covers all of it).';

create or replace function realtime.relay_frames(channels text[], seqs bigint[], after pg_snapshot default null)
returns table (id uuid, seq bigint, channel_name text, frame text, row_check boolean)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, m.channel_name, realtime.event_frame(m), realtime.needs_row_check(m)
  from rows from (pg_catalog.unnest(relay_frames.channels), pg_catalog.unnest(relay_frames.seqs)) with ordinality as i(channel_name, seq, n)
  join realtime.messages m on m.channel_name = i.channel_name and m.seq = i.seq
  where relay_frames.after is null or not pg_catalog.pg_visible_in_snapshot(m.xact_id, relay_frames.after)
  order by i.n
$$;
comment on function realtime.relay_frames(text[], bigint[], pg_snapshot) is 'For the daemon: the wire frame of each message (realtime.event_frame), given by channel and seq, in that order, built once so the same text goes to every subscriber, with row_check (realtime.needs_row_check). Unknown messages, and messages whose transaction is visible in after (the daemon''s watermark: already handled), are skipped.';

-- Until every daemon is upgraded: the old calls, by id, look in the open partition only.
create or replace function realtime.relay_frames(ids uuid[], after pg_snapshot default null)
returns table (id uuid, seq bigint, channel_name text, frame text, row_check boolean)
language sql stable set search_path = ''
as $$
  select f.* from (
    select pg_catalog.array_agg(m.channel_name order by i.n) as channels, pg_catalog.array_agg(m.seq order by i.n) as seqs
    from pg_catalog.unnest(relay_frames.ids) with ordinality as i(id, n)
    join realtime.messages m on m.id = i.id
    where m.seq >= (select pg_catalog.max(p.seq_from) from realtime.message_partitions p where p.opened_at is not null)
  ) x, realtime.relay_frames(x.channels, x.seqs, relay_frames.after) f
$$;
comment on function realtime.relay_frames(uuid[], pg_snapshot) is 'The call of daemons older than version 13, by message id: looks in the open partition only (messages have no index on id). Upgrade the daemon; this goes in a later version.';

create or replace function realtime.committed_between(low pg_snapshot, high pg_snapshot)
returns table (id uuid, seq bigint, channel_name text)
language sql stable set search_path = ''
as $$
  -- The xact_id bounds are written as the BRIN index's expression so it is used.
  select m.id, m.seq, m.channel_name
  from realtime.messages m
  where ((m.xact_id::text)::bigint) >= (pg_catalog.pg_snapshot_xmin(committed_between.low)::text)::bigint
    and ((m.xact_id::text)::bigint) < (pg_catalog.pg_snapshot_xmax(committed_between.high)::text)::bigint
    and pg_catalog.pg_visible_in_snapshot(m.xact_id, committed_between.high)
    and not pg_catalog.pg_visible_in_snapshot(m.xact_id, committed_between.low)
  order by m.seq
$$;
comment on function realtime.committed_between(pg_snapshot, pg_snapshot) is 'For the daemon: the messages whose transactions committed after snapshot low was taken and before snapshot high, in seq order. Comparing snapshots, not seqs: a lower seq can commit after a higher one.';

create or replace function realtime.change_audience(channels text[], seqs bigint[], identities jsonb)
returns table (id uuid, identity integer)
language plpgsql
set search_path = ''
set "TimeZone" = 'UTC'
set "IntervalStyle" = 'postgres'
set extra_float_digits = '1'
set bytea_output = 'hex'
as $function$
declare
  v_table record;
  v_identity record;
  v_sql text;
  v_visible integer[];
begin
  -- Per source table: one query per identity over all its events, as that
  -- identity, so the table's own policies decide which rows it sees now.
  for v_table in
    select cs.table_id, cs.primary_key, cs.columns,
           pg_catalog.array_agg(m.id order by m.seq) as message_ids,
           pg_catalog.jsonb_agg(m.payload -> 'new' order by m.seq) as rows
    from realtime.messages m
    join realtime.change_streams cs
      on cs.table_id = pg_catalog.to_regclass(pg_catalog.quote_ident(m.payload ->> 'schema') || '.'
                                             || pg_catalog.quote_ident(m.payload ->> 'table'))
    where (m.channel_name, m.seq) in (select k.c, k.s from rows from (pg_catalog.unnest(change_audience.channels), pg_catalog.unnest(change_audience.seqs)) k(c, s))
      and realtime.needs_row_check(m)
    group by cs.table_id, cs.primary_key, cs.columns
  loop
    -- The keys are typed in a subquery kept apart (offset 0), so the lookup is
    -- a plain equality between columns: leakproof, so the planner may use the
    -- primary key's index under the table's policies (a non-leakproof jsonb
    -- operator in that condition would force a scan of the whole table).
    -- Then the version: each column the event carries must still hold the
    -- value it carries, as this identity reads the row (its column grants
    -- included). A version that changed since is not checked: it is withheld.
    select pg_catalog.format(
             'select coalesce(pg_catalog.array_agg(k.i::integer), ''{}'') from (select %s, x.r, x.i from pg_catalog.jsonb_array_elements($1) with ordinality x(r, i) offset 0) k where exists (select from %s t where %s and (select pg_catalog.bool_and((%s) -> e.key = e.value) from pg_catalog.jsonb_each(k.r) e))',
             pg_catalog.string_agg(pg_catalog.format('(x.r ->> %L)::%s as c%s', a.attname,
                                                     pg_catalog.format_type(a.atttypid, a.atttypmod), k.n), ', '),
             v_table.table_id,
             pg_catalog.string_agg(pg_catalog.format('t.%I = k.c%s', a.attname, k.n), ' and '),
             (select pg_catalog.string_agg(pg_catalog.format('pg_catalog.jsonb_build_object(%s)', chunk.args), ' || ')
              from (select pg_catalog.string_agg(pg_catalog.format('%L, t.%I', c.attname, c.attname), ', ') as args
                    from (select ca.attname, (pg_catalog.row_number() over (order by ca.attnum) - 1) / 50 as part
                          from pg_catalog.pg_attribute ca
                          where ca.attrelid = v_table.table_id and ca.attnum > 0 and not ca.attisdropped
                            and (v_table.columns is null or ca.attname = any (v_table.columns))) c
                    group by c.part) chunk))
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
$function$;
comment on function realtime.change_audience(text[], bigint[], jsonb) is 'For the daemon: which identities ([{role, claims}], numbered from 1) may see which row-checked change events among the messages given by channel and seq: the row, looked up by primary key as that identity under the source table''s row-level security and column grants, still holds every value the event carries (a version that changed since is withheld from everyone). One row per (message id, identity) allowed; events that need no check are not listed.';

create or replace function realtime.change_audience(ids uuid[], identities jsonb)
returns table (id uuid, identity integer)
language sql set search_path = ''
as $$
  select a.* from (
    select pg_catalog.array_agg(m.channel_name) as channels, pg_catalog.array_agg(m.seq) as seqs
    from realtime.messages m
    where m.id = any (change_audience.ids)
      and m.seq >= (select pg_catalog.max(p.seq_from) from realtime.message_partitions p where p.opened_at is not null)
  ) x, realtime.change_audience(x.channels, x.seqs, change_audience.identities) a
$$;
comment on function realtime.change_audience(uuid[], jsonb) is 'The call of daemons older than version 13, by message id: looks in the open partition only. Upgrade the daemon; this goes in a later version.';

--------------------------------------------------------------------------------
-- Delivery statistics, never on the message row

create or replace function realtime.record_ws_audience(channels text[], seqs bigint[], counts integer[])
returns integer
language sql volatile security definer set search_path = ''
as $$
  with v as (
    select x.c, x.s, x.n
    from rows from (pg_catalog.unnest(record_ws_audience.channels), pg_catalog.unnest(record_ws_audience.seqs), pg_catalog.unnest(record_ws_audience.counts)) as x(c, s, n)
    where x.n > 0 and x.s is not null and x.c is not null
  ), written as (
    insert into realtime.message_audience (seq_min, seq_max, channel_names, seqs, counts)
    select pg_catalog.min(v.s), pg_catalog.max(v.s), pg_catalog.array_agg(v.c), pg_catalog.array_agg(v.s), pg_catalog.array_agg(v.n)
    from v having pg_catalog.count(*) > 0
    returning pg_catalog.cardinality(seqs) as n
  )
  select coalesce((select written.n from written), 0)::integer
$$;
comment on function realtime.record_ws_audience(text[], bigint[], integer[]) is 'For the daemon: the sockets each message (channel, seq) was written to by this instance, as one row of realtime.message_audience. Returns how many messages it counted.';

create or replace function realtime.add_ws_audience(ids uuid[], counts integer[]) returns integer
language sql stable security definer set search_path = ''
as $$ select 0 $$;
comment on function realtime.add_ws_audience(uuid[], integer[]) is 'The call of daemons older than version 13: their counts are not kept (messages are no longer rewritten; see realtime.record_ws_audience). Upgrade the daemon; this goes in a later version.';

create or replace function realtime.claim_webhook_deliveries(max_count integer, per_url integer,
                                                            busy_urls text[] default '{}',
                                                            lease interval default interval '5 minutes')
returns table (id bigint, url text, attempt integer, message_id uuid, channel text, event text, body text)
language sql volatile security definer set search_path = ''
as $$
  with due as (
    -- Due rows, and rows whose claim ran out (the instance holding them died).
    select d.id, d.url, d.next_attempt_at from (
      (select w.id, w.url, w.next_attempt_at from realtime.webhook_deliveries w
       where w.state = 'pending' and w.next_attempt_at <= pg_catalog.now()
       order by w.next_attempt_at limit 1000)
      union all
      (select w.id, w.url, w.next_attempt_at from realtime.webhook_deliveries w
       where w.state = 'delivering' and w.locked_until < pg_catalog.now()
       order by w.locked_until limit 1000)) d
    where d.url <> all (coalesce(claim_webhook_deliveries.busy_urls, '{}'))
  ), ranked as (
    select due.id, pg_catalog.row_number() over (partition by due.url order by due.next_attempt_at, due.id) as n
    from due
  ), picked as (
    select w.id from realtime.webhook_deliveries w
    join ranked on ranked.id = w.id
    where ranked.n <= claim_webhook_deliveries.per_url
      and (w.state = 'pending' or (w.state = 'delivering' and w.locked_until < pg_catalog.now()))
    order by w.next_attempt_at, w.id
    limit claim_webhook_deliveries.max_count
    for update of w skip locked
  ), claimed as (
    update realtime.webhook_deliveries w
    set state = 'delivering', attempts = w.attempts + 1,
        locked_until = pg_catalog.now() + claim_webhook_deliveries.lease
    from picked where w.id = picked.id
    returning w.id, w.url, w.attempts, w.message_id, w.channel_name, w.message_seq
  )
  select c.id, c.url, c.attempts, m.id, m.channel_name, m.event_name, realtime.webhook_body(m)
  from claimed c join realtime.messages m on m.channel_name = c.channel_name and m.seq = c.message_seq
  order by c.id
$$;
comment on function realtime.claim_webhook_deliveries(integer, integer, text[], interval) is 'For the daemon: claims up to max_count due deliveries (at most per_url per URL, none for busy_urls) with FOR UPDATE SKIP LOCKED, until now() + lease, and returns what to POST.';

create or replace function realtime.record_webhook_attempts(results jsonb) returns integer
language plpgsql security definer set search_path = ''
as $function$
declare
  v_max_attempts integer;
  v_backoff_ms integer;
  v_max_backoff_ms integer;
  v_count integer;
begin
  select c.webhook_max_attempts, c.webhook_backoff_ms, c.webhook_max_backoff_ms
  into v_max_attempts, v_backoff_ms, v_max_backoff_ms from realtime.config c;
  v_max_attempts := coalesce(v_max_attempts, 5);
  v_backoff_ms := coalesce(v_backoff_ms, 1000);
  v_max_backoff_ms := coalesce(v_max_backoff_ms, 3600000);

  with r as (
    select x.id, x.status, x.error, x.duration_ms, x.retry_after_ms
    from pg_catalog.jsonb_to_recordset(results)
      as x(id bigint, status integer, error text, duration_ms integer, retry_after_ms bigint)
  ), current_rows as (
    select w.id, w.attempts, r.status, r.error, r.duration_ms, r.retry_after_ms,
           coalesce(r.status between 200 and 299, false) as ok,
           (r.status is null or r.status = 429 or r.status >= 500) as retryable
    from realtime.webhook_deliveries w join r on r.id = w.id
    where w.state = 'delivering'
  ), logged as (
    insert into realtime.webhook_attempts (delivery_id, attempt, status, error, duration_ms)
    select cr.id, cr.attempts, cr.status, cr.error, cr.duration_ms from current_rows cr
  ), outcome as (
    update realtime.webhook_deliveries w
    set state = case when cr.ok then 'delivered'
                     when cr.retryable and cr.attempts < v_max_attempts then 'pending'
                     else 'failed' end,
        next_attempt_at = case when not cr.ok and cr.retryable and cr.attempts < v_max_attempts
          then pg_catalog.now() + pg_catalog.make_interval(secs => least(v_max_backoff_ms,
                 coalesce(cr.retry_after_ms,
                          v_backoff_ms * 2.0 ^ (cr.attempts - 1) * (0.75 + pg_catalog.random() * 0.5))) / 1000.0)
          else w.next_attempt_at end,
        locked_until = null,
        last_status = cr.status,
        last_error = cr.error,
        delivered_at = case when cr.ok then pg_catalog.now() end
    from current_rows cr
    where w.id = cr.id
    returning w.id
  )
  select pg_catalog.count(*)::integer into v_count from outcome;
  return v_count;
end
$function$;
comment on function realtime.record_webhook_attempts(jsonb) is 'For the daemon: records a batch of attempts [{"id","status","error","duration_ms","retry_after_ms"}]. 2xx: delivered; network error, timeout, 429 or 5xx: retried with backoff up to webhook_max_attempts; other statuses: failed. Rows no longer claimed are ignored. Deliveries are counted per message by realtime.message_stats.';

--------------------------------------------------------------------------------
-- Retention

create or replace function realtime.prune(older_than interval default null, max_rows integer default 100000)
returns bigint
language plpgsql security definer set search_path = ''
as $$
declare
  v_cutoff timestamptz;
  v_batch bigint;
  v_max_seq bigint;
  v_total bigint := 0;
  v_through bigint := 0;
begin
  v_cutoff := pg_catalog.now()
    - coalesce(older_than, (select c.retention from realtime.config c), interval '24 hours');
  -- Whole partitions first (and the next ones created, the open one rolled).
  perform realtime.maintain_partitions();
  -- The rows written before version 13 are one partition, messages_p0, kept
  -- until it can be dropped whole; meanwhile its old rows go in batches of
  -- 5000, oldest first, as before. A message whose webhooks are still due
  -- stays until they finish.
  if pg_catalog.to_regclass('realtime.messages_p0') is not null then
    loop
      with doomed as (
        select m.channel_name, m.seq from realtime.messages_p0 m
        where m.created_at < v_cutoff
          and not exists (select from realtime.webhook_deliveries d
                          where d.channel_name = m.channel_name and d.message_seq = m.seq
                            and d.state in ('pending', 'delivering'))
        order by m.created_at
        limit 5000
        for update skip locked
      ), deleted as (
        delete from realtime.messages_p0 m using doomed
        where m.channel_name = doomed.channel_name and m.seq = doomed.seq
        returning m.seq
      )
      select pg_catalog.count(*), pg_catalog.max(deleted.seq) into v_batch, v_max_seq from deleted;
      v_total := v_total + v_batch;
      v_through := greatest(v_through, coalesce(v_max_seq, 0));
      exit when v_batch < 5000 or v_total >= max_rows;
    end loop;
    if v_through > 0 then
      update realtime.config set pruned_through_seq = greatest(pruned_through_seq, v_through);
    end if;
  end if;
  -- What lives beside the messages goes by age.
  delete from realtime.webhook_deliveries d
  where d.created_at < v_cutoff and d.state in ('delivered', 'failed');
  delete from realtime.message_dedupe k where k.created_at < v_cutoff;
  delete from realtime.message_audience a where a.reported_at < v_cutoff;
  delete from realtime.dropped_messages d where d.dropped_at < v_cutoff;
  return v_total;
end
$$;
comment on function realtime.prune(interval, integer) is 'Retention: realtime.maintain_partitions() (whole partitions dropped once retention has passed since they closed), then the rows of messages_p0 (written before version 13) older than older_than (default realtime.config.retention, 24 hours) in batches of 5000, at most max_rows per call, keeping messages whose webhooks are still due; finished webhook deliveries, dedupe keys, audience reports and dropped-message records older than that. Returns the rows deleted from messages_p0.';

--------------------------------------------------------------------------------
-- Views

create or replace view realtime.message_stats as
  select m.id, m.seq, m.channel_id, m.channel_name, m.event_name, m.sender_type, m.created_at,
         (coalesce(m.ws_audience_count, 0) + coalesce(a.n, 0))::integer as ws_audience_count,
         m.wh_audience_count,
         (coalesce(m.wh_delivered_count, 0) + coalesce(d.n, 0))::integer as wh_delivered_count
  from realtime.messages m
  left join lateral (
    select pg_catalog.sum(u.n) as n
    from realtime.message_audience x, rows from (pg_catalog.unnest(x.channel_names), pg_catalog.unnest(x.seqs), pg_catalog.unnest(x.counts)) u(c, s, n)
    where pg_catalog.int8range(x.seq_min, x.seq_max, '[]') operator(pg_catalog.@>) m.seq
      and u.s = m.seq and u.c = m.channel_name) a on true
  left join lateral (
    select pg_catalog.count(*) as n from realtime.webhook_deliveries w
    where w.message_seq = m.seq and w.channel_name = m.channel_name and w.state = 'delivered') d on true;
comment on view realtime.message_stats is 'Delivery statistics per message, kept apart so a message is written once: sockets written to (over all daemon instances), webhook URLs due, webhook deliveries that succeeded.';
comment on column realtime.message_stats.id is 'The message.';
comment on column realtime.message_stats.seq is 'Its seq.';
comment on column realtime.message_stats.channel_id is 'The channel it matched.';
comment on column realtime.message_stats.channel_name is 'Its channel.';
comment on column realtime.message_stats.event_name is 'Its event.';
comment on column realtime.message_stats.sender_type is 'system or user.';
comment on column realtime.message_stats.created_at is 'When it was written.';
comment on column realtime.message_stats.ws_audience_count is 'Sockets it was written to, summed over all daemon instances (realtime.message_audience).';
comment on column realtime.message_stats.wh_audience_count is 'Webhook URLs it was due to be POSTed to.';
comment on column realtime.message_stats.wh_delivered_count is 'Webhook deliveries that succeeded.';
revoke all on realtime.message_stats from public;
grant select on realtime.message_stats to service_role;

create or replace view realtime.channel_stats as
  select c.id as channel_id,
         c.pattern,
         c.enabled,
         coalesce(s.messages_last_hour, 0) as messages_last_hour,
         coalesce(s.messages_last_day, 0) as messages_last_day,
         coalesce(s.messages_total, 0) as messages_total,
         pg_catalog.round((coalesce(s.legacy_audience, 0) + coalesce(a.audience, 0))::numeric
                          / nullif(s.messages_total, 0), 2) as avg_ws_audience,
         w.webhook_success_rate,
         coalesce(w.webhooks_pending, 0) as webhooks_pending,
         s.last_message_at
  from realtime.channels c
  left join (
    select m.channel_id,
           pg_catalog.count(*) filter (where m.created_at > pg_catalog.now() - interval '1 hour') as messages_last_hour,
           pg_catalog.count(*) filter (where m.created_at > pg_catalog.now() - interval '1 day') as messages_last_day,
           pg_catalog.count(*) as messages_total,
           pg_catalog.sum(m.ws_audience_count) as legacy_audience,
           pg_catalog.max(m.created_at) as last_message_at
    from realtime.messages m group by m.channel_id) s on s.channel_id = c.id
  left join (
    select m.channel_id, pg_catalog.sum(u.n) as audience
    from realtime.message_audience x
    cross join rows from (pg_catalog.unnest(x.channel_names), pg_catalog.unnest(x.seqs), pg_catalog.unnest(x.counts)) u(c, s, n)
    join realtime.messages m on m.channel_name = u.c and m.seq = u.s
    group by m.channel_id) a on a.channel_id = c.id
  left join (
    select m.channel_id,
           pg_catalog.round(pg_catalog.count(*) filter (where d.state = 'delivered')::numeric
             / nullif(pg_catalog.count(*) filter (where d.state in ('delivered', 'failed')), 0), 4) as webhook_success_rate,
           pg_catalog.count(*) filter (where d.state in ('pending', 'delivering')) as webhooks_pending
    from realtime.webhook_deliveries d
    join realtime.messages m on m.channel_name = d.channel_name and m.seq = d.message_seq
    group by m.channel_id) w on w.channel_id = c.id;
comment on view realtime.channel_stats is 'Per channel: messages in the last hour and day, retained in total, average sockets reached, webhook success rate (delivered / finished) and backlog, last message time. Over retained messages only; webhook figures over deliveries since version 13.';

create or replace view realtime.webhook_failures as
  select d.id as delivery_id, d.message_id, m.channel_name, m.event_name, d.url, d.state, d.attempts,
         d.last_status, d.last_error, d.next_attempt_at, d.created_at
  from realtime.webhook_deliveries d
  join realtime.messages m on m.channel_name = d.channel_name and m.seq = d.message_seq
  where d.state = 'failed' or (d.state = 'pending' and d.attempts > 0);
comment on view realtime.webhook_failures is 'Webhook deliveries that failed for good (state failed), or failed and wait for a retry (state pending).';

--------------------------------------------------------------------------------
-- Grants

comment on table realtime.messages is 'Every message, from realtime.publish() (system) or a client INSERT (user), partitioned by seq (realtime.message_partitions). An INSERT policy decides who may publish; with no policy no client can. Each committed row is NOTIFYed on channel realtime_messages. Written once: delivery statistics are in realtime.message_stats.';
comment on column realtime.messages.seq is 'Allocated at INSERT from realtime.messages_seq_seq: unique and increasing in insert order, not commit order (a lower seq can commit later). It jumps to the next multiple of 2^32 when a new partition opens.';
comment on column realtime.messages.channel_id is 'The channel the name matched when the message was written. Kept when that channel is deleted (no foreign key: no lock on the channel row per publish).';
comment on column realtime.messages.ws_audience_count is 'NULL since version 13 (the row is never rewritten): see realtime.message_stats. Messages written before it keep their count here.';
comment on column realtime.messages.wh_delivered_count is 'NULL since version 13 (the row is never rewritten): see realtime.message_stats. Messages written before it keep their count here.';
comment on column realtime.messages.wh_audience_count is 'Webhook URLs the message was due to be POSTed to (set when it is written).';
comment on index realtime.messages_xact_id_brin is 'Finding messages committed between two snapshots (realtime.committed_between): a few pages, since xact_id grows with the table.';
comment on index realtime.messages_seq_brin is 'Ranges of seq without a channel (history of a channel id, recovery): a few pages.';
comment on constraint messages_pkey on realtime.messages is 'One index per partition: replay of a channel by seq, and every lookup of a message (by channel and seq).';

grant select on sequence realtime.messages_seq_seq to service_role;
-- The seq column's default calls nextval() as the inserting role (an identity
-- column did not need the privilege; partitioned tables cannot have one before
-- PostgreSQL 17). setval needs UPDATE, which nobody is granted.
grant usage on sequence realtime.messages_seq_seq to public;
revoke execute on function realtime.maintain_partitions() from public;
grant execute on function realtime.maintain_partitions() to service_role;
revoke execute on function realtime.claim_dedupe_key(text, text, text, uuid, bigint) from public;
revoke execute on function realtime.dedupe_first(text, text, text) from public;
revoke execute on function realtime.relay_frames(text[], bigint[], pg_snapshot) from public;
grant execute on function realtime.relay_frames(text[], bigint[], pg_snapshot) to service_role;
revoke execute on function realtime.change_audience(text[], bigint[], jsonb) from public;
grant execute on function realtime.change_audience(text[], bigint[], jsonb) to service_role;
revoke execute on function realtime.record_ws_audience(text[], bigint[], integer[]) from public;
grant execute on function realtime.record_ws_audience(text[], bigint[], integer[]) to service_role;
revoke execute on function realtime.event_frame(realtime.messages) from public;
grant execute on function realtime.event_frame(realtime.messages) to service_role;
revoke execute on function realtime.needs_row_check(realtime.messages) from public;
grant execute on function realtime.needs_row_check(realtime.messages) to service_role;
revoke execute on function realtime.webhook_body(realtime.messages) from public;
revoke execute on function realtime.messages_before_update() from public;
revoke execute on function realtime.messages_enqueue_webhooks() from public;
revoke execute on function realtime.messages_before_insert() from public;
-- The insert trigger runs as the publishing role, any role (000012).
grant execute on function realtime.claim_dedupe_key(text, text, text, uuid, bigint) to public;
grant execute on function realtime.dedupe_first(text, text, text) to public;

insert into realtime.schema_versions (version, name) values (13, 'a publish path a busy primary can carry')
on conflict (version) do nothing;
