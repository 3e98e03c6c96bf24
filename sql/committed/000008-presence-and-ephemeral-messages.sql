--! Previous: sha1:607a6f051d6daffb2d4418254e2197906d50dabe
--! Hash: sha1:561ffd79db231bdc84ba0bbc0f9501791491f4a3
--! Message: presence and ephemeral messages

-- realtimed 000008: presence and ephemeral messages, across every realtimed
-- instance on this database.
--
-- Presence lives in an UNLOGGED table: it is about who is connected now, so
-- it is cheap to write and, like the connections themselves, gone after a
-- database crash. Each instance heartbeats in realtime.instances; an instance
-- that stops heartbeating is removed by the next heartbeat of any other, and
-- its members with it. NOTIFY realtime_presence carries only a channel name:
-- a hint to re-read the table, so a forged one costs a read and nothing else.
--
-- Ephemeral messages are never stored: the daemon checks the INSERT policies
-- (realtime.can_publish) and NOTIFYs the frame, signed with HMAC-SHA256 under
-- realtime.notify_key, which only service_role can read. Other roles can
-- NOTIFY realtime_ephemeral but cannot sign, so they cannot forge one.
set local lock_timeout = '5s';

create table if not exists realtime.instances (
  id uuid primary key,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  host text,
  pid integer
);
alter table realtime.instances enable row level security;
comment on table realtime.instances is
  'The realtimed instances serving this database, with their last heartbeat. A row whose heartbeat is older than the presence timeout is removed by any other instance, with its presence.';
comment on column realtime.instances.id is 'Random per process start.';
comment on column realtime.instances.started_at is 'When the instance registered.';
comment on column realtime.instances.heartbeat_at is 'Last heartbeat (realtime.instance_heartbeat).';
comment on column realtime.instances.host is 'Host name the instance reported.';
comment on column realtime.instances.pid is 'Process id the instance reported.';

create unlogged table if not exists realtime.presence (
  channel_name text not null check (realtime.is_valid_channel_name(channel_name)),
  connection_id uuid not null,
  instance_id uuid not null references realtime.instances (id) on delete cascade,
  member_key text not null check (pg_catalog.octet_length(member_key) between 1 and 255),
  state jsonb not null check (pg_catalog.jsonb_typeof(state) = 'object'),
  updated_at timestamptz not null default now(),
  primary key (channel_name, connection_id)
);
alter table realtime.presence enable row level security;
create index if not exists presence_instance_id_idx on realtime.presence (instance_id);
create index if not exists presence_channel_member_idx on realtime.presence (channel_name, member_key);
comment on table realtime.presence is
  'Presence: one row per socket and channel. Members are distinct member_key (the token''s sub, else the socket), so one user with three tabs is one member. Unlogged: emptied by a database crash, as the sockets are.';
comment on column realtime.presence.channel_name is 'The concrete channel.';
comment on column realtime.presence.connection_id is 'The socket (random per connection).';
comment on column realtime.presence.instance_id is 'The instance holding the socket.';
comment on column realtime.presence.member_key is 'Who: the token''s sub claim, or conn:<connection_id> without one.';
comment on column realtime.presence.state is 'The state the socket set (a JSON object).';
comment on column realtime.presence.updated_at is 'When the state was last set.';
comment on index realtime.presence_instance_id_idx is 'Removing an instance''s members.';
comment on index realtime.presence_channel_member_idx is 'Counting and listing a channel''s members.';

drop policy if exists instances_service_role_all on realtime.instances;
create policy instances_service_role_all on realtime.instances
  for all to service_role using (true) with check (true);
comment on policy instances_service_role_all on realtime.instances is 'The daemon (service_role) manages instances.';
drop policy if exists presence_service_role_all on realtime.presence;
create policy presence_service_role_all on realtime.presence
  for all to service_role using (true) with check (true);
comment on policy presence_service_role_all on realtime.presence is
  'The daemon (service_role) writes presence after checking the client''s INSERT policies; clients read it through the daemon.';

create table if not exists realtime.notify_key (
  id boolean primary key default true check (id),
  key text not null default (pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text),
  created_at timestamptz not null default now()
);
alter table realtime.notify_key enable row level security;
insert into realtime.notify_key (id) values (true) on conflict (id) do nothing;
comment on table realtime.notify_key is
  'The key instances sign ephemeral notifications with (HMAC-SHA256). Readable by service_role only: whoever can read it can forge ephemeral messages. Rotate with update realtime.notify_key set key = default (instances re-read it on restart).';
comment on column realtime.notify_key.id is 'Always true: one row.';
comment on column realtime.notify_key.key is '244 random bits, as text.';
comment on column realtime.notify_key.created_at is 'When the row was created.';
drop policy if exists notify_key_service_role_select on realtime.notify_key;
create policy notify_key_service_role_select on realtime.notify_key
  for select to service_role using (true);
comment on policy notify_key_service_role_select on realtime.notify_key is 'Only the daemon reads the key.';

--------------------------------------------------------------------------------
-- Instances

drop function if exists realtime.instance_heartbeat(uuid, interval, text, integer);
create function realtime.instance_heartbeat(instance uuid, timeout interval, host text default null,
                                             pid integer default null)
returns table (registered boolean, removed_instances integer)
language plpgsql volatile set search_path = ''
as $$
declare
  v_registered boolean;
  v_removed integer;
  v_channel text;
begin
  insert into realtime.instances as i (id, host, pid) values (instance, host, pid)
  on conflict (id) do update set heartbeat_at = pg_catalog.now()
  returning (i.xmax = 0) into v_registered;
  -- Members of instances that stopped heartbeating leave; tell every instance.
  for v_channel in
    select distinct p.channel_name from realtime.presence p
    join realtime.instances i on i.id = p.instance_id
    where i.heartbeat_at < pg_catalog.now() - timeout and i.id <> instance
  loop
    perform pg_catalog.pg_notify('realtime_presence', pg_catalog.json_build_object('v', 1, 'channel', v_channel)::text);
  end loop;
  delete from realtime.instances i where i.heartbeat_at < pg_catalog.now() - timeout and i.id <> instance;
  get diagnostics v_removed = row_count;
  return query select v_registered, v_removed;
end
$$;
comment on function realtime.instance_heartbeat(uuid, interval, text, integer) is
  'For the daemon, every few seconds: registers or refreshes this instance, and removes instances silent for longer than timeout with their presence (notifying the channels). registered is true when the row was new (first beat, or this instance had been removed: re-send its presence).';

drop function if exists realtime.instance_stop(uuid);
create function realtime.instance_stop(instance uuid) returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_channel text;
begin
  for v_channel in select distinct p.channel_name from realtime.presence p where p.instance_id = instance loop
    perform pg_catalog.pg_notify('realtime_presence', pg_catalog.json_build_object('v', 1, 'channel', v_channel)::text);
  end loop;
  delete from realtime.instances i where i.id = instance;
end
$$;
comment on function realtime.instance_stop(uuid) is
  'For the daemon on shutdown: removes this instance and its presence, notifying the channels.';

--------------------------------------------------------------------------------
-- Presence

drop function if exists realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer);
create function realtime.presence_track(instance uuid, connection uuid, role text, claims jsonb, channel text,
                                        state jsonb, max_members integer, max_state_bytes integer)
returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_key text := coalesce(nullif(claims ->> 'sub', ''), 'conn:' || connection::text);
  v_bytes integer := pg_catalog.octet_length(state::text);
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
  -- One writer per channel at a time, so the member count holds.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('realtime.presence:' || channel));
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
comment on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) is
  'For the daemon: sets a socket''s presence state on a channel, authorized like a publish of event "presence" (can_publish as role/claims; 42501). RT400 state not an object, RT413 over max_state_bytes, RT429 a new member over max_members. Returns the member key. Call it as a single statement.';

drop function if exists realtime.presence_untrack(uuid, text[]);
create function realtime.presence_untrack(connection uuid, channels text[] default null) returns integer
language plpgsql volatile set search_path = ''
as $$
declare
  v_channel text;
  v_count integer := 0;
begin
  for v_channel in
    delete from realtime.presence p
    where p.connection_id = connection and (channels is null or p.channel_name = any (channels))
    returning p.channel_name
  loop
    v_count := v_count + 1;
    perform pg_catalog.pg_notify('realtime_presence', pg_catalog.json_build_object('v', 1, 'channel', v_channel)::text);
  end loop;
  return v_count;
end
$$;
comment on function realtime.presence_untrack(uuid, text[]) is
  'For the daemon: a socket leaves presence on the given channels (all when NULL), notifying each. Returns the rows removed.';

drop function if exists realtime.presence_members(text[]);
create function realtime.presence_members(channels text[])
returns table (channel_name text, member_key text, state jsonb, connections integer, updated_at timestamptz)
language sql stable set search_path = ''
as $$
  -- A member's state is the one its most recent socket set.
  select distinct on (p.channel_name, p.member_key)
         p.channel_name, p.member_key, p.state,
         (pg_catalog.count(*) over (partition by p.channel_name, p.member_key))::integer,
         p.updated_at
  from realtime.presence p
  join realtime.instances i on i.id = p.instance_id
  where p.channel_name = any (channels)
  order by p.channel_name, p.member_key, p.updated_at desc, p.connection_id
$$;
comment on function realtime.presence_members(text[]) is
  'For the daemon: the members of each channel, one row per member_key with the state of its latest socket and how many sockets it has.';

--------------------------------------------------------------------------------
-- Ephemeral messages

drop function if exists realtime.send_ephemeral(text, jsonb, text, text, text);
create function realtime.send_ephemeral(role text, claims jsonb, channel text, event text, notification text)
returns void
language plpgsql volatile set search_path = ''
as $$
begin
  if pg_catalog.octet_length(notification) > 7900 then
    raise exception 'realtime: an ephemeral message must fit in one notification (7900 bytes)' using errcode = 'RT413';
  end if;
  -- The same INSERT policies as a stored message decide; nothing is written.
  perform realtime.impersonate(send_ephemeral.role, send_ephemeral.claims);
  if not realtime.can_publish(send_ephemeral.channel, send_ephemeral.event) then
    raise exception 'realtime: not allowed to publish to this channel' using errcode = '42501';
  end if;
  perform pg_catalog.set_config('role', 'none', true);
  perform pg_catalog.pg_notify('realtime_ephemeral', notification);
end
$$;
comment on function realtime.send_ephemeral(text, jsonb, text, text, text) is
  'For the daemon: an ephemeral publish. Checks the INSERT policies as role/claims (can_publish; 42501), then NOTIFYs realtime_ephemeral with the notification the daemon signed with realtime.notify_key. Nothing is stored. RT413 over 7900 bytes.';

revoke all on realtime.instances, realtime.presence, realtime.notify_key from public;
grant select, insert, update, delete on realtime.instances to service_role;
grant select, insert, update, delete on realtime.presence to service_role;
grant select on realtime.notify_key to service_role;
revoke execute on function realtime.instance_heartbeat(uuid, interval, text, integer) from public;
revoke execute on function realtime.instance_stop(uuid) from public;
revoke execute on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) from public;
revoke execute on function realtime.presence_untrack(uuid, text[]) from public;
revoke execute on function realtime.presence_members(text[]) from public;
revoke execute on function realtime.send_ephemeral(text, jsonb, text, text, text) from public;
grant execute on function realtime.instance_heartbeat(uuid, interval, text, integer) to service_role;
grant execute on function realtime.instance_stop(uuid) to service_role;
grant execute on function realtime.presence_track(uuid, uuid, text, jsonb, text, jsonb, integer, integer) to service_role;
grant execute on function realtime.presence_untrack(uuid, text[]) to service_role;
grant execute on function realtime.presence_members(text[]) to service_role;
grant execute on function realtime.send_ephemeral(text, jsonb, text, text, text) to service_role;

insert into realtime.schema_versions (version, name) values (8, 'presence and ephemeral messages')
on conflict (version) do nothing;
