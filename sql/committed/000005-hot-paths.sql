--! Previous: sha1:b81851564c157c3ae801ceee779c4bb0457dbe1a
--! Hash: sha1:49e64e9a3cd0913a90989231057ab76b028b78dd
--! Message: hot paths

-- realtimed 000005: the hot paths, measured (bench/run.mjs, docs/BENCHMARKS.md).
-- No behaviour changes.
--
-- 1. The validation functions become SQL-standard bodies (BEGIN ATOMIC)
--    without a SET clause. A function with SET search_path is never inlined,
--    so each call from the CHECK constraints on realtime.messages and from
--    realtime.publish() paid a call and a GUC save/restore per row. A
--    BEGIN ATOMIC body is parsed and bound when it is created, so the caller's
--    search_path cannot change what it calls: it needs no SET to be safe.
-- 2. realtime.publish() without a dedupe key is a plain INSERT (no ON CONFLICT
--    arbiter to check).
-- 3. realtime.authorize_subscribe_stream(): the subscribe check and the stream
--    position in one round trip (the daemon made two per subscribe).
set local lock_timeout = '5s';

create or replace function realtime.is_valid_channel_name(name text) returns boolean
language sql immutable parallel safe
begin atomic
  select coalesce(pg_catalog.octet_length(name) between 1 and 255
                  and name operator(pg_catalog.!~) '[[:space:][:cntrl:]%]', false);
end;

create or replace function realtime.is_valid_channel_pattern(pattern text) returns boolean
language sql immutable parallel safe
begin atomic
  select coalesce(pg_catalog.octet_length(pattern) between 1 and 255
                  and pattern operator(pg_catalog.!~) '[[:space:][:cntrl:]]', false);
end;

create or replace function realtime.is_valid_event_name(name text) returns boolean
language sql immutable parallel safe
begin atomic
  select coalesce(pg_catalog.octet_length(name) between 1 and 255
                  and name operator(pg_catalog.!~) '[[:cntrl:]]', false);
end;

create or replace function realtime.publish(channel_name text, event_name text, payload jsonb,
                                 dedupe_key text default null)
returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
#variable_conflict use_column
declare
  v_role text := pg_catalog.current_setting('role');
  v_channel_id uuid;
  v_bytes integer;
  v_cap integer;
  v_reason text;
  v_id uuid;
begin
  -- Client roles may publish system messages only through a trigger the DBA
  -- wrote, never by calling this function themselves.
  if v_role = 'none' then
    v_role := session_user;
  end if;
  if pg_catalog.pg_trigger_depth() = 0 and v_role in ('anon', 'authenticated') then
    raise exception 'realtime.publish() may not be called directly by role %', v_role
      using errcode = '42501',
            hint = 'Clients publish by inserting into realtime.messages, under its INSERT policies.';
  end if;

  payload := coalesce(payload, '{}'::jsonb);
  if not realtime.is_valid_channel_name(channel_name) then
    v_reason := 'invalid_channel_name';
  elsif not realtime.is_valid_event_name(event_name) then
    v_reason := 'invalid_event_name';
  elsif pg_catalog.jsonb_typeof(payload) <> 'object' then
    v_reason := 'invalid_payload';
  elsif dedupe_key is not null and pg_catalog.octet_length(dedupe_key) not between 1 and 255 then
    v_reason := 'invalid_dedupe_key';
  else
    v_channel_id := realtime.match_channel(channel_name);
    if v_channel_id is null then
      v_reason := 'no_channel';
    else
      v_bytes := pg_catalog.octet_length(payload::text);
      v_cap := realtime.max_payload_bytes();
      if v_bytes > v_cap then
        v_reason := 'payload_too_large';
      end if;
    end if;
  end if;

  if v_reason is not null then
    insert into realtime.dropped_messages (channel_name, event_name, reason, payload_bytes)
    values (coalesce(pg_catalog.left(channel_name, 255), ''), pg_catalog.left(event_name, 255),
            v_reason, v_bytes);
    raise warning 'realtime.publish: message to channel "%" dropped: %',
      pg_catalog.left(channel_name, 255), v_reason
      using hint = 'Recorded in realtime.dropped_messages.';
    return null;
  end if;

  if dedupe_key is null then
    -- The common case: no arbiter index to check.
    insert into realtime.messages as m
      (channel_id, channel_name, event_name, payload, sender_type, sender_id)
    values
      (v_channel_id, publish.channel_name, publish.event_name, publish.payload, 'system', null)
    returning m.id into v_id;
    return v_id;
  end if;

  insert into realtime.messages as m
    (channel_id, channel_name, event_name, payload, sender_type, sender_id, dedupe_key)
  values
    (v_channel_id, publish.channel_name, publish.event_name, publish.payload, 'system', null,
     publish.dedupe_key)
  on conflict (channel_name, sender_type,
               coalesce(sender_id, '00000000-0000-0000-0000-000000000000'::uuid), dedupe_key)
    where dedupe_key is not null
  do nothing
  returning m.id into v_id;

  if v_id is null then
    select m.id into v_id
    from realtime.messages m
    where m.channel_name = publish.channel_name
      and m.sender_type = 'system'
      and m.sender_id is null
      and m.dedupe_key = publish.dedupe_key;
  end if;
  return v_id;
end
$$;
comment on function realtime.publish(text, text, jsonb, text) is
  'Publishes a system message (for triggers and server code) and returns its id. Never aborts the caller: a bad name, no enabled channel or a payload over the cap gives a WARNING, a row in realtime.dropped_messages and NULL. With dedupe_key, a repeat returns the first id and notifies nothing. anon/authenticated may call it only from a trigger.';

drop function if exists realtime.authorize_subscribe_stream(text, jsonb, text);
create function realtime.authorize_subscribe_stream(role text, claims jsonb, channel text)
returns table (channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint)
language plpgsql volatile set search_path = ''
as $$
declare
  v_stream record;
begin
  -- The stream position first, as the daemon: authorize_subscribe acts as the
  -- client until the (single-statement) transaction ends.
  select s.epoch, s.max_seq, s.pruned_through_seq into v_stream from realtime.stream_info() s;
  return query
    select realtime.authorize_subscribe(authorize_subscribe_stream.role, authorize_subscribe_stream.claims,
                                        authorize_subscribe_stream.channel),
           v_stream.epoch, v_stream.max_seq, v_stream.pruned_through_seq;
end
$$;
comment on function realtime.authorize_subscribe_stream(text, jsonb, text) is
  'For the daemon, one round trip per subscribe: realtime.stream_info() (taken first, as the daemon), then authorize_subscribe(role, claims, channel) (NULL channel_id when denied). Call it as a single statement: the role ends with the transaction.';
revoke execute on function realtime.authorize_subscribe_stream(text, jsonb, text) from public;
grant execute on function realtime.authorize_subscribe_stream(text, jsonb, text) to service_role;

insert into realtime.schema_versions (version, name) values (5, 'hot paths')
on conflict (version) do nothing;
