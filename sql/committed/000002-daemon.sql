--! Previous: sha1:ff802f644d21332488e5764549c43807da8eed9d
--! Hash: sha1:73da67edc39f8bbb913ad12241093468f311874b
--! Message: daemon

-- realtimed 000002: what the daemon calls, one round trip each: authorize a
-- subscribe, publish for a client, build event frames; and a hint when
-- channels change so subscribers of a closed channel can be told.
set local lock_timeout = '5s';

drop function if exists realtime.authorize_subscribe(text, jsonb, text);
create function realtime.authorize_subscribe(role text, claims jsonb, channel text)
returns uuid
language plpgsql volatile set search_path = ''
as $$
begin
  -- Acts as the client until the end of the (single-statement) transaction.
  perform realtime.impersonate(authorize_subscribe.role, authorize_subscribe.claims);
  if realtime.can_subscribe(authorize_subscribe.channel) then
    return realtime.match_channel(authorize_subscribe.channel);
  end if;
  return null;
end
$$;
comment on function realtime.authorize_subscribe(text, jsonb, text) is
  'For the daemon: impersonate(role, claims), then can_subscribe(channel). Returns the matched channel id when allowed, else NULL. Call it as a single statement: the role ends with the transaction.';

drop function if exists realtime.send(text, jsonb, text, text, jsonb, text);
create function realtime.send(role text, claims jsonb, channel text, event text, payload jsonb,
                              dedupe_key text default null)
returns table (id uuid, seq bigint, duplicate boolean)
language plpgsql volatile set search_path = ''
as $$
declare
  v_sender uuid;
  v_id uuid;
  v_seq bigint;
begin
  -- The sender the insert trigger will record, to find an earlier message with
  -- the same dedupe key (read as the daemon: clients may not SELECT messages).
  perform pg_catalog.set_config('request.jwt.claims', coalesce(send.claims, '{}'::jsonb)::text, true);
  perform pg_catalog.set_config('request.jwt.claim.sub', coalesce(send.claims ->> 'sub', ''), true);
  v_sender := realtime.uid();
  if send.dedupe_key is not null then
    select m.id, m.seq into v_id, v_seq
    from realtime.messages m
    where m.channel_name = send.channel and m.sender_type = 'user'
      and coalesce(m.sender_id, '00000000-0000-0000-0000-000000000000'::uuid)
          = coalesce(v_sender, '00000000-0000-0000-0000-000000000000'::uuid)
      and m.dedupe_key = send.dedupe_key;
    if found then
      return query select v_id, v_seq, true;
      return;
    end if;
  end if;

  -- The INSERT policies of the client's role decide.
  perform realtime.impersonate(send.role, send.claims);
  perform pg_catalog.set_config('realtime.channel_name', send.channel, true);
  if send.dedupe_key is null then
    insert into realtime.messages (channel_name, event_name, payload)
    values (send.channel, send.event, send.payload);
  else
    begin
      insert into realtime.messages (channel_name, event_name, payload, dedupe_key)
      values (send.channel, send.event, send.payload, send.dedupe_key);
    exception when unique_violation then
      -- A concurrent publish with the same key won.
      perform pg_catalog.set_config('role', 'none', true);
      return query
        select m.id, m.seq, true from realtime.messages m
        where m.channel_name = send.channel and m.sender_type = 'user'
          and coalesce(m.sender_id, '00000000-0000-0000-0000-000000000000'::uuid)
              = coalesce(v_sender, '00000000-0000-0000-0000-000000000000'::uuid)
          and m.dedupe_key = send.dedupe_key;
      return;
    end;
  end if;

  -- Back to the daemon's role to read the row back (the client may not SELECT it).
  perform pg_catalog.set_config('role', 'none', true);
  v_seq := pg_catalog.currval(pg_catalog.pg_get_serial_sequence('realtime.messages', 'seq'));
  return query select m.id, m.seq, false from realtime.messages m where m.seq = v_seq;
end
$$;
comment on function realtime.send(text, jsonb, text, text, jsonb, text) is
  'For the daemon: a client publish. Inserts as the client (impersonate(role, claims)), so the INSERT policies on realtime.messages decide, and returns the id and seq; with a dedupe key already used by this sender on this channel, the first message (duplicate = true).';

drop function if exists realtime.event_frames(uuid[]);
create function realtime.event_frames(ids uuid[])
returns table (id uuid, seq bigint, channel_name text, frame text)
language sql stable set search_path = ''
as $$
  -- Built as text: compact, fields in the documented order, strings escaped by to_json.
  select m.id, m.seq, m.channel_name,
         '{"type":"event","channel":' || pg_catalog.to_json(m.channel_name)::text
         || ',"event":' || pg_catalog.to_json(m.event_name)::text
         || ',"payload":' || m.payload::text
         || ',"meta":{"messageId":"' || m.id::text
         || '","seq":' || m.seq::text
         || ',"senderType":"' || m.sender_type
         || '","senderId":' || coalesce('"' || m.sender_id::text || '"', 'null')
         || ',"timestamp":"' || pg_catalog.to_char(m.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
         || '"}}'
  from pg_catalog.unnest(event_frames.ids) with ordinality as i(id, n)
  join realtime.messages m on m.id = i.id
  order by i.n
$$;
comment on function realtime.event_frames(uuid[]) is
  'For the daemon: the wire frame of each message, in the order of ids, built once here so the daemon writes the same text to every subscriber. Unknown ids are skipped.';

create or replace function realtime.channels_notify() returns trigger
language plpgsql set search_path = ''
as $$
begin
  perform pg_catalog.pg_notify('realtime_channels', pg_catalog.json_build_object(
    'v', 1, 'op', pg_catalog.lower(tg_op), 'id', coalesce(new.id, old.id))::text);
  return null;
end
$$;
comment on function realtime.channels_notify() is
  'Trigger: NOTIFY realtime_channels with {"v":1,"op","id"} when a channel is added, changed or deleted, so the daemon re-matches its subscriptions (a hint: it reads the table).';

drop trigger if exists channels_notify on realtime.channels;
create trigger channels_notify
  after insert or update or delete on realtime.channels
  for each row execute function realtime.channels_notify();
comment on trigger channels_notify on realtime.channels is 'Tells the daemon that channel matching may have changed.';

revoke execute on function realtime.authorize_subscribe(text, jsonb, text) from public;
revoke execute on function realtime.send(text, jsonb, text, text, jsonb, text) from public;
revoke execute on function realtime.event_frames(uuid[]) from public;
revoke execute on function realtime.channels_notify() from public;
grant execute on function realtime.authorize_subscribe(text, jsonb, text) to service_role;
grant execute on function realtime.send(text, jsonb, text, text, jsonb, text) to service_role;
grant execute on function realtime.event_frames(uuid[]) to service_role;
grant select on sequence realtime.messages_seq_seq to service_role;

insert into realtime.schema_versions (version, name) values (2, 'daemon')
on conflict (version) do nothing;
