--! Previous: sha1:1f1c3a0a4c5bd378a71d428838b329f8d0187a65
--! Hash: sha1:b81851564c157c3ae801ceee779c4bb0457dbe1a
--! Message: replay

-- realtimed 000004: no message lost or duplicated. Gap recovery for the
-- daemon (messages committed between two snapshots), replay for clients
-- (seq > since), the stream epoch, and one shared event frame builder.
set local lock_timeout = '5s';

create index if not exists messages_xact_id_idx on realtime.messages (xact_id);
comment on index realtime.messages_xact_id_idx is
  'Finding messages committed between two snapshots (realtime.committed_between).';

alter table realtime.config
  add column if not exists epoch text not null default pg_catalog.gen_random_uuid()::text,
  add column if not exists pruned_through_seq bigint not null default 0;
comment on column realtime.config.epoch is
  'Part of the stream epoch (realtime.stream_info): set a new value (update realtime.config set epoch = gen_random_uuid()) after resetting or restoring messages, so clients resync instead of replaying from a seq that now means something else.';
comment on column realtime.config.pruned_through_seq is
  'The highest seq realtime.prune() deleted: a replay from below it may have lost messages (REPLAY_UNAVAILABLE).';

-- One frame builder for live events and replays.
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

-- event_frames gains a watermark: messages already behind it (handled
-- before) are never relayed again, however often their id is notified.
drop function if exists realtime.event_frames(uuid[]);
drop function if exists realtime.event_frames(uuid[], pg_catalog.pg_snapshot);
create function realtime.event_frames(ids uuid[], after pg_catalog.pg_snapshot default null)
returns table (id uuid, seq bigint, channel_name text, frame text)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, m.channel_name, realtime.event_frame(m)
  from pg_catalog.unnest(event_frames.ids) with ordinality as i(id, n)
  join realtime.messages m on m.id = i.id
  where event_frames.after is null or not pg_catalog.pg_visible_in_snapshot(m.xact_id, event_frames.after)
  order by i.n
$$;
comment on function realtime.event_frames(uuid[], pg_catalog.pg_snapshot) is
  'For the daemon: the wire frame of each message, in the order of ids, built once so the same text goes to every subscriber. Unknown ids, and messages whose transaction is visible in after (the daemon''s watermark: already handled), are skipped.';

create or replace function realtime.replay_frames(channel text, since bigint, max_count integer)
returns table (id uuid, seq bigint, frame text)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, realtime.event_frame(m)
  from realtime.messages m
  where m.channel_name = replay_frames.channel and m.seq > replay_frames.since
  order by m.seq
  limit replay_frames.max_count
$$;
comment on function realtime.replay_frames(text, bigint, integer) is
  'For the daemon, after can_subscribe allowed it: the retained messages of a channel with seq > since, in seq order, at most max_count.';

create or replace function realtime.stream_info()
returns table (epoch text, max_seq bigint, pruned_through_seq bigint)
language sql stable security definer set search_path = ''
as $$
  select pg_catalog.left(pg_catalog.md5(c.epoch || ':' || d.oid::text || ':'
           || case when pg_catalog.pg_is_in_recovery() then ''
                   else pg_catalog.left(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 8) end), 16),
         (select case when s.is_called then s.last_value else 0 end from realtime.messages_seq_seq s),
         c.pruned_through_seq
  from realtime.config c, pg_catalog.pg_database d
  where d.datname = pg_catalog.current_database()
$$;
comment on function realtime.stream_info() is
  'The stream epoch (changes with realtime.config.epoch, the database, and the WAL timeline: a restore or failover), the highest seq allocated, and realtime.config.pruned_through_seq.';

create or replace function realtime.committed_between(low pg_catalog.pg_snapshot, high pg_catalog.pg_snapshot)
returns table (id uuid, seq bigint, channel_name text)
language sql stable set search_path = ''
as $$
  select m.id, m.seq, m.channel_name
  from realtime.messages m
  where m.xact_id >= pg_catalog.pg_snapshot_xmin(committed_between.low)
    and m.xact_id < pg_catalog.pg_snapshot_xmax(committed_between.high)
    and pg_catalog.pg_visible_in_snapshot(m.xact_id, committed_between.high)
    and not pg_catalog.pg_visible_in_snapshot(m.xact_id, committed_between.low)
  order by m.seq
$$;
comment on function realtime.committed_between(pg_catalog.pg_snapshot, pg_catalog.pg_snapshot) is
  'For the daemon: the messages whose transactions committed after snapshot low was taken and before snapshot high, in seq order. Comparing snapshots, not seqs: a lower seq can commit after a higher one.';

-- prune() now remembers how far it went.
create or replace function realtime.prune(older_than interval default null, max_rows integer default 100000)
returns bigint
language plpgsql volatile security definer set search_path = ''
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
  loop
    -- Batches of 5000 rows, oldest first, skipping rows another session holds;
    -- a message whose webhooks are still due stays until they finish.
    with doomed as (
      select m.id from realtime.messages m
      where m.created_at < v_cutoff
        and not exists (select from realtime.webhook_deliveries d
                        where d.message_id = m.id and d.state in ('pending', 'delivering'))
      order by m.created_at
      limit 5000
      for update skip locked
    ), deleted as (
      delete from realtime.messages m using doomed where m.id = doomed.id
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
  delete from realtime.dropped_messages d where d.dropped_at < v_cutoff;
  return v_total;
end
$$;

revoke execute on function realtime.event_frame(realtime.messages) from public;
revoke execute on function realtime.event_frames(uuid[], pg_catalog.pg_snapshot) from public;
grant execute on function realtime.event_frames(uuid[], pg_catalog.pg_snapshot) to service_role;
revoke execute on function realtime.replay_frames(text, bigint, integer) from public;
revoke execute on function realtime.stream_info() from public;
revoke execute on function realtime.committed_between(pg_catalog.pg_snapshot, pg_catalog.pg_snapshot) from public;
grant execute on function realtime.event_frame(realtime.messages) to service_role;
grant execute on function realtime.replay_frames(text, bigint, integer) to service_role;
grant execute on function realtime.stream_info() to service_role;
grant execute on function realtime.committed_between(pg_catalog.pg_snapshot, pg_catalog.pg_snapshot) to service_role;

insert into realtime.schema_versions (version, name) values (4, 'replay')
on conflict (version) do nothing;
