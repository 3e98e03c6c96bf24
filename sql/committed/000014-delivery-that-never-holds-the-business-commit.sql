--! Previous: sha1:5a148b20e4b520b1f61e4d8b78704192bbd9f21a
--! Hash: sha1:9dfb1a5c47dee9330469eecdb657773c635c4d15
--! Message: Delivery that never holds the business commit

-- 000014: delivery that never holds the business commit.
--
-- realtime.config.delivery chooses how committed messages reach the daemons:
-- 'notify' (a NOTIFY per message at commit, as before), 'wal' (each daemon
-- reads logical replication of realtime.messages) or 'poll' (each daemon
-- reads what committed since its last look). In 'wal' and 'poll' no business
-- transaction NOTIFYs: not realtime.publish(), not a client's insert, not the
-- webhook outbox. Lock order: only realtime.config is locked exclusively (one
-- row; realtimed migrate takes it in the publishers' order, 100 ms a try).

alter table realtime.config add column if not exists delivery text not null default 'notify';
alter table realtime.config drop constraint if exists config_delivery_check;
alter table realtime.config add constraint config_delivery_check check (delivery in ('notify', 'wal', 'poll'));
comment on column realtime.config.delivery is 'How committed messages reach the daemons (docs/delivery.md): notify (a NOTIFY per publishing transaction; it takes the cluster-wide notification lock at commit), wal (logical replication of realtime.messages through publication realtime_messages; needs wal_level = logical and a role with REPLICATION) or poll (each daemon reads what committed every --poll-interval ms). In wal and poll no business transaction NOTIFYs. Daemons follow a change at once (they are notified), or within 10 s.';

-- What the insert trigger needs, in one SECURITY DEFINER call.
create or replace function realtime.insert_context(
  channel_name text,
  out channel_id uuid, out max_message_bytes integer, out webhook_count integer, out payload_cap integer, out notify boolean)
returns record
language plpgsql stable security definer
set search_path to ''
as $$
declare
  v realtime.channels := realtime.channel_row(insert_context.channel_name);
begin
  select c.max_payload_bytes, c.delivery = 'notify' into payload_cap, notify from realtime.config c;
  payload_cap := coalesce(payload_cap, 65536);
  notify := coalesce(notify, true);
  if v.enabled then
    channel_id := v.id;
    max_message_bytes := v.max_message_bytes;
    webhook_count := coalesce(pg_catalog.cardinality(v.webhook_urls), 0);
  end if;
end
$$;
comment on function realtime.insert_context(text) is 'For the insert trigger, in one call: the enabled channel a name matches (NULL when none), its max_message_bytes and how many webhook URLs it has, realtime.config.max_payload_bytes, and whether to NOTIFY (realtime.config.delivery = notify), read as the owner (a client may not see the rows).';
grant execute on function realtime.insert_context(text) to public;

create or replace function realtime.messages_before_insert()
returns trigger
language plpgsql
set search_path to ''
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
      v_channel := realtime.insert_context(new.channel_name);
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
    if v_channel.notify then
      -- Wakes the daemons at commit (a hint: they read the row). Not in
      -- delivery wal or poll, where the daemons find the row themselves.
      perform pg_catalog.pg_notify('realtime_messages', '{"v":1,"id":"' || new.id::text || '","seq":' || new.seq::text
                                   || ',"channel":' || pg_catalog.to_json(new.channel_name)::text || '}');
    end if;
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
  v_channel := realtime.insert_context(new.channel_name);
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
  if v_channel.notify then
    perform pg_catalog.pg_notify('realtime_messages', '{"v":1,"id":"' || new.id::text || '","seq":' || new.seq::text
                                 || ',"channel":' || pg_catalog.to_json(new.channel_name)::text || '}');
  end if;
  return new;
end
$$;
comment on function realtime.messages_before_insert() is 'Trigger: a row written by a role that may publish (realtime.may_publish) is a system message; it is validated and, when it cannot be written (bad name, event, payload or dedupe key, no enabled channel, over the payload cap), dropped with a WARNING and a row in realtime.dropped_messages instead of raising; a repeated dedupe key (realtime.claim_dedupe_key) skips the row. Any other row is a client''s: sender_type user, sender_id from its claims, a fresh id; RT400 bad name or a dedupe key without a sub claim, 23514 (as the CHECK constraints it replaces) bad event name, payload or dedupe key, RT404 no enabled channel, RT413 over a payload cap. Sets the channel and the webhook audience (realtime.insert_context) and, in delivery notify only, notifies realtime_messages with {"v":1,"id","seq","channel"} (delivered at commit, or never). realtime.messages has no CHECK constraints: this trigger is what validates.';

create or replace function realtime.messages_enqueue_webhooks()
returns trigger
language plpgsql
security definer
set search_path to ''
as $$
begin
  insert into realtime.webhook_deliveries (message_id, channel_name, message_seq, url, created_at)
  select new.id, new.channel_name, new.seq, u.url, new.created_at
  from realtime.channels c, pg_catalog.unnest(c.webhook_urls) as u(url)
  where c.id = new.channel_id
  on conflict do nothing;
  -- One wake-up per transaction (identical notifications are delivered once);
  -- in delivery wal and poll the daemons see the message and wake themselves.
  if (select c.delivery from realtime.config c) = 'notify' then
    perform pg_catalog.pg_notify('realtime_webhooks', '');
  end if;
  return null;
end
$$;
comment on function realtime.messages_enqueue_webhooks() is 'Trigger: writes the outbox rows of a system message in its own transaction and, in delivery notify, wakes the daemon (NOTIFY realtime_webhooks). SECURITY DEFINER: the writer of a system message need not see the outbox.';

-- The daemons read the mode, and hear when it changes (a DBA's UPDATE, not a business write).
create or replace function realtime.delivery_mode()
returns text
language sql stable security definer
set search_path to ''
as $$ select coalesce((select c.delivery from realtime.config c), 'notify') $$;
comment on function realtime.delivery_mode() is 'For the daemon: realtime.config.delivery.';
revoke all on function realtime.delivery_mode() from public;
grant execute on function realtime.delivery_mode() to service_role;

create or replace function realtime.config_notify()
returns trigger
language plpgsql
set search_path to ''
as $$
begin
  if new.delivery is distinct from old.delivery then
    perform pg_catalog.pg_notify('realtime_channels', '{"v":1,"op":"DELIVERY"}');
  end if;
  return null;
end
$$;
revoke all on function realtime.config_notify() from public;
comment on function realtime.config_notify() is 'Trigger: tells the daemons (NOTIFY realtime_channels, op DELIVERY) that realtime.config.delivery changed.';
drop trigger if exists config_notify on realtime.config;
create trigger config_notify after update on realtime.config for each row execute function realtime.config_notify();
comment on trigger config_notify on realtime.config is 'Tells the daemons that the delivery mode changed.';

-- A transaction that was in progress when low was taken and committed since
-- may have written rows with an old xact_id; the scan starts at the oldest of
-- those, not at low's xmin: a transaction left open for hours (a dump, a
-- report) no longer makes every pass read every message written since. And
-- the bounds are planned as constants: as parameters (a LANGUAGE sql body),
-- the planner cannot see how narrow the range is and scans every partition.
create or replace function realtime.committed_between(low pg_snapshot, high pg_snapshot)
returns table(id uuid, seq bigint, channel_name text)
language plpgsql stable
set search_path to ''
as $$
declare
  v_from bigint;
  v_to bigint := (pg_catalog.pg_snapshot_xmax(committed_between.high)::text)::bigint;
begin
  select coalesce(pg_catalog.min((x::text)::bigint), (pg_catalog.pg_snapshot_xmax(committed_between.low)::text)::bigint)
    into v_from
  from pg_catalog.pg_snapshot_xip(committed_between.low) x
  where pg_catalog.pg_visible_in_snapshot(x, committed_between.high);
  if v_from >= v_to then
    return;
  end if;
  -- The xact_id bounds are written as the BRIN index's expression so it is used.
  return query execute pg_catalog.format(
    'select m.id, m.seq, m.channel_name from realtime.messages m
     where ((m.xact_id::text)::bigint) >= %s and ((m.xact_id::text)::bigint) < %s
       and pg_catalog.pg_visible_in_snapshot(m.xact_id, $2) and not pg_catalog.pg_visible_in_snapshot(m.xact_id, $1)
     order by m.seq', v_from, v_to)
    using committed_between.low, committed_between.high;
end
$$;
comment on function realtime.committed_between(pg_snapshot, pg_snapshot) is 'For the daemon: the messages whose transactions committed after snapshot low was taken and before snapshot high, in seq order. Comparing snapshots, not seqs: a lower seq can commit after a higher one. Reads from the oldest transaction that was in progress at low and committed by high (else from low''s xmax), so a long open transaction does not widen every pass; the bounds are planned as constants, so the BRIN index on xact_id is used.';

-- The relay's read of the messages it was told about, with each writing
-- transaction: a subscription gets only what committed after it was
-- authorized (a message committed before, relayed a moment later, belongs to
-- the time before it). PL/pgSQL with a generic plan, and the frame and the
-- row-check test written out rather than called: as a LANGUAGE sql function
-- (and through event_frame and needs_row_check, which are) its body was
-- planned again on every call, 0.94 ms against 0.16 ms for one message
-- (pgbench -M prepared). pgtap/delivery.sql holds the frame to
-- realtime.event_frame's.
create or replace function realtime.relay_messages(channels text[], seqs bigint[], after pg_snapshot default null)
returns table(id uuid, seq bigint, channel_name text, frame text, row_check boolean, xact_id xid8)
language plpgsql stable
set search_path to ''
set plan_cache_mode to 'force_generic_plan'
as $$
begin
  return query
  select m.id, m.seq, m.channel_name,
         '{"type":"event","channel":' || pg_catalog.to_json(m.channel_name)::text
      || ',"event":' || pg_catalog.to_json(m.event_name)::text
      || ',"payload":' || m.payload::text
      || ',"meta":{"messageId":"' || m.id::text
      || '","seq":' || m.seq::text
      || ',"senderType":"' || m.sender_type
      || '","senderId":' || coalesce('"' || m.sender_id::text || '"', 'null')
      || ',"timestamp":"' || pg_catalog.to_char(m.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
      || '"}}',
         m.sender_type = 'system' and m.event_name in ('insert', 'update')
           and m.payload operator(pg_catalog.?) 'table' and m.payload operator(pg_catalog.?) 'schema'
           and exists (select from realtime.change_streams cs
                       where cs.table_id = pg_catalog.to_regclass(pg_catalog.quote_ident(m.payload ->> 'schema') || '.'
                                                                  || pg_catalog.quote_ident(m.payload ->> 'table'))
                         and not cs.public),
         m.xact_id
  from rows from (pg_catalog.unnest(relay_messages.channels), pg_catalog.unnest(relay_messages.seqs)) with ordinality as i(channel_name, seq, n)
  join realtime.messages m on m.channel_name = i.channel_name and m.seq = i.seq
  where relay_messages.after is null or not pg_catalog.pg_visible_in_snapshot(m.xact_id, relay_messages.after)
  order by i.n;
end
$$;
comment on function realtime.relay_messages(text[], bigint[], pg_snapshot) is 'For the daemon: as realtime.relay_frames (the frame is realtime.event_frame''s, the row check realtime.needs_row_check''s, written out so the plan is cached), with the writing transaction of each message (xact_id), which the daemon compares with the snapshot each subscription was authorized in.';
revoke all on function realtime.relay_messages(text[], bigint[], pg_snapshot) from public;
grant execute on function realtime.relay_messages(text[], bigint[], pg_snapshot) to service_role;

-- The relay's poll reads the newest pages of the xact_id BRIN index; page
-- ranges not yet summarized are read whole. The daemons in delivery poll
-- summarize the open partition's ranges as they fill. Only complete ranges:
-- a summarized range that inserts still extend would cost every publish a
-- BRIN update. One daemon at a time (a try-lock), never waiting.
create or replace function realtime.summarize_messages()
returns integer
language plpgsql
security definer
set search_path to ''
set lock_timeout to '50ms'
as $$
declare
  r record;
  v_done integer := 0;
  v_ranges bigint;
  v_range bigint;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('realtime.summarize_messages')) then
    return 0;
  end if;
  for r in
    select i.indexrelid::regclass as index, c.oid as heap,
           coalesce((select pg_catalog.split_part(o, '=', 2)::integer from pg_catalog.unnest(ic.reloptions) o
                     where o like 'pages\_per\_range=%'), 128) as pages_per_range,
           p.closed_at is not null as closed
    from realtime.message_partitions p
    join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass('realtime.' || pg_catalog.quote_ident(p.table_name))
    join pg_catalog.pg_index i on i.indrelid = c.oid
    join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_am a on a.oid = ic.relam and a.amname = 'brin'
    where p.opened_at is not null and (p.closed_at is null or p.closed_at > pg_catalog.now() - interval '1 hour')
  loop
    begin
      if r.closed then
        -- Nothing is added to a closed partition: its last, partial range too.
        v_done := v_done + pg_catalog.brin_summarize_new_values(r.index);
      else
        v_ranges := pg_catalog.pg_relation_size(r.heap) / pg_catalog.current_setting('block_size')::bigint / r.pages_per_range;
        -- The last few complete ranges (a second of messages is far fewer); already summarized ones cost a look-up.
        for v_range in greatest(v_ranges - 4, 0) .. v_ranges - 1 loop
          v_done := v_done + pg_catalog.brin_summarize_range(r.index, v_range * r.pages_per_range);
        end loop;
      end if;
    exception when lock_not_available then
      -- VACUUM or a partition change has the table: the next call catches up.
      null;
    end;
  end loop;
  return v_done;
end
$$;
comment on function realtime.summarize_messages() is 'For the daemon in delivery poll, every second: summarizes the complete page ranges of the open partition''s BRIN indexes (and all of a partition closed within the hour), so a poll reads about a second of messages, not everything since the last VACUUM. Never the range inserts still extend (that would cost every publish a BRIN update). One daemon at a time: the others return 0 at once; a lock held by VACUUM is skipped after 50 ms.';
revoke all on function realtime.summarize_messages() from public;
grant execute on function realtime.summarize_messages() to service_role;

-- Logical replication of realtime.messages, for delivery wal. Published under
-- the partitioned table's name; inserts only. Created when this role may
-- (it owns the table, or is a superuser, and may CREATE in the database);
-- else `realtimed doctor` names the statement for a DBA.
-- CREATE PUBLICATION takes SHARE UPDATE EXCLUSIVE on realtime.messages
-- (publishers never wait for it, but it waits for a partition being attached
-- or dropped): 100 ms a try while realtime.config is held, then it is left
-- to a DBA rather than holding every publisher.
do $$
declare
  v_try integer := 0;
begin
  if exists (select from pg_catalog.pg_publication where pubname = 'realtime_messages')
     or not (pg_catalog.pg_has_role(current_user, (select c.relowner from pg_catalog.pg_class c where c.oid = 'realtime.messages'::regclass), 'USAGE')
             or (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user))
     or not pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') then
    return;
  end if;
  perform pg_catalog.set_config('lock_timeout', '100ms', true);
  loop
    begin
      create publication realtime_messages for table realtime.messages
        with (publish = 'insert', publish_via_partition_root = true);
      comment on publication realtime_messages is 'realtimed: inserts into realtime.messages, for delivery wal.';
      exit;
    exception when lock_not_available then
      v_try := v_try + 1;
      if v_try >= 20 then
        raise notice 'realtime: publication realtime_messages not created (realtime.messages was busy); for delivery wal a DBA runs: create publication realtime_messages for table realtime.messages with (publish = ''insert'', publish_via_partition_root = true)';
        exit;
      end if;
    end;
  end loop;
  perform pg_catalog.set_config('lock_timeout', '0', true);
end
$$;

insert into realtime.schema_versions (version, name) values (14, 'delivery that never holds the business commit')
on conflict (version) do nothing;
