--! Previous: -
--! Hash: sha1:ff802f644d21332488e5764549c43807da8eed9d
--! Message: foundation

-- realtimed 000001: the realtime package (schema, roles, channels, messages,
-- publish, policy helpers). One transaction: a failure installs nothing.
set local lock_timeout = '5s';

-- Refuse what we must not touch: an old server, or a `realtime` schema that
-- another product created (it has objects but not our version table).
do $guard$
begin
  if current_setting('server_version_num')::integer < 140000 then
    raise exception 'realtimed needs PostgreSQL 14 or newer; this server is %',
      current_setting('server_version');
  end if;
  if exists (select from pg_catalog.pg_namespace where nspname = 'realtime')
     and pg_catalog.to_regclass('realtime.schema_versions') is null
     and (exists (select from pg_catalog.pg_class c
                  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = 'realtime')
          or exists (select from pg_catalog.pg_proc p
                     join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                     where n.nspname = 'realtime')
          or exists (select from pg_catalog.pg_type t
                     join pg_catalog.pg_namespace n on n.oid = t.typnamespace
                     where n.nspname = 'realtime'))
  then
    raise exception 'a schema named "realtime" already exists and was not created by realtimed'
      using hint = 'realtimed installs into schema "realtime" only; rename or drop the other schema first. Nothing was changed.';
  end if;
end
$guard$;

-- Roles: created only if missing, and left alone if present.
do $roles$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
    comment on role anon is 'realtimed/PostgREST convention: clients without a token.';
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
    comment on role authenticated is 'realtimed/PostgREST convention: clients with a verified token.';
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit;
    comment on role service_role is 'realtimed/Supabase convention: trusted server-side callers (channel administration, relay).';
  end if;
end
$roles$;

create schema if not exists realtime;
comment on schema realtime is
  'realtimed: Postgres-native realtime messaging. Row-level security on realtime.channels (SELECT = subscribe) and realtime.messages (INSERT = publish) decides who may do what.';
revoke all on schema realtime from public;

--------------------------------------------------------------------------------
-- Installed version

create table realtime.schema_versions (
  version integer primary key check (version > 0),
  name text not null,
  installed_at timestamptz not null default now()
);
alter table realtime.schema_versions enable row level security;
comment on table realtime.schema_versions is
  'One row per realtimed migration applied to this database, whichever way it was installed (realtimed migrate or the script from realtimed sql). Marks the schema as realtimed''s.';
comment on column realtime.schema_versions.version is 'Migration number (000001.sql is 1).';
comment on column realtime.schema_versions.name is 'What the migration does, in a few words.';
comment on column realtime.schema_versions.installed_at is 'When it was applied.';

create function realtime.version() returns integer
language sql stable security definer set search_path = ''
as $$ select coalesce(max(v.version), 0) from realtime.schema_versions v $$;
comment on function realtime.version() is
  'The installed realtimed schema version (the highest migration applied). Upgrade scripts: realtimed sql --from <this>.';

--------------------------------------------------------------------------------
-- Settings a DBA changes without a migration

create table realtime.config (
  id boolean primary key default true check (id),
  max_payload_bytes integer not null default 65536
    check (max_payload_bytes between 2 and 104857600)
);
alter table realtime.config enable row level security;
insert into realtime.config default values;
comment on table realtime.config is
  'Settings of the realtime package, one row. Change them with UPDATE; they apply to the next statement.';
comment on column realtime.config.id is 'Always true: keeps the table to one row.';
comment on column realtime.config.max_payload_bytes is
  'Largest message payload, in bytes of its JSON text. Client inserts over it fail (SQLSTATE RT413); realtime.publish() drops the message with a WARNING and records it in realtime.dropped_messages.';

create function realtime.max_payload_bytes() returns integer
language sql stable security definer set search_path = ''
as $$ select coalesce((select c.max_payload_bytes from realtime.config c), 65536) $$;
comment on function realtime.max_payload_bytes() is
  'The payload cap from realtime.config (65536 if the row is missing).';

--------------------------------------------------------------------------------
-- Helpers for policies: transaction-local settings the daemon sets per request

create function realtime.channel_name() returns text
language sql stable set search_path = ''
as $$ select nullif(pg_catalog.current_setting('realtime.channel_name', true), '') $$;
comment on function realtime.channel_name() is
  'The concrete channel being subscribed to or published on (setting realtime.channel_name), e.g. ''order:42'' for the channel row with pattern ''order:%''. NULL outside a request.';

create function realtime.claims() returns jsonb
language sql stable set search_path = ''
as $$ select nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb $$;
comment on function realtime.claims() is
  'The verified JWT claims of the client (setting request.jwt.claims), as jsonb. NULL when none are set.';

create function realtime.role() returns text
language sql stable set search_path = ''
as $$
  select coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.role', true), ''),
                  realtime.claims() ->> 'role')
$$;
comment on function realtime.role() is
  'The role claim of the client (setting request.jwt.claim.role, else claims()->>''role'').';

create function realtime.uid() returns uuid
language sql stable set search_path = ''
as $$
  select case
           when s.sub ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
           then s.sub::uuid
         end
  from (select coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                        realtime.claims() ->> 'sub') as sub) s
$$;
comment on function realtime.uid() is
  'The client''s user id: the sub claim (setting request.jwt.claim.sub, else claims()->>''sub'') as uuid; NULL when absent or not a uuid (read realtime.claims()->>''sub'' for other subject formats).';

--------------------------------------------------------------------------------
-- Validation shared by tables and functions

create function realtime.is_valid_channel_name(name text) returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(pg_catalog.octet_length(name) between 1 and 255
                  and name !~ '[[:space:][:cntrl:]%]', false)
$$;
comment on function realtime.is_valid_channel_name(text) is
  'A concrete channel name: 1 to 255 bytes, no white space, no control characters and no % (the pattern wildcard).';

create function realtime.is_valid_channel_pattern(pattern text) returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(pg_catalog.octet_length(pattern) between 1 and 255
                  and pattern !~ '[[:space:][:cntrl:]]', false)
$$;
comment on function realtime.is_valid_channel_pattern(text) is
  'A channel pattern: 1 to 255 bytes, no white space or control characters. % is the only wildcard; _ and \ are literal.';

create function realtime.is_valid_event_name(name text) returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(pg_catalog.octet_length(name) between 1 and 255
                  and name !~ '[[:cntrl:]]', false)
$$;
comment on function realtime.is_valid_event_name(text) is
  'An event name: 1 to 255 bytes, no control characters.';

create function realtime.are_valid_webhook_urls(urls text[]) returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select urls is not null
     and coalesce(pg_catalog.cardinality(urls), 0) <= 16
     and coalesce(pg_catalog.array_ndims(urls), 1) = 1
     and not exists (
       select from pg_catalog.unnest(urls) u(url)
       where u.url is null
          or pg_catalog.octet_length(u.url) > 2048
          or u.url !~* '^https?://[^[:space:][:cntrl:]/?#]+([/?#][^[:space:][:cntrl:]]*)?$')
     and (select pg_catalog.count(distinct u.url) from pg_catalog.unnest(urls) u(url))
         = coalesce(pg_catalog.cardinality(urls), 0)
$$;
comment on function realtime.are_valid_webhook_urls(text[]) is
  'Webhook URLs: at most 16, distinct, each an absolute http(s) URL of at most 2048 bytes without white space.';

--------------------------------------------------------------------------------
-- Channels: who may subscribe is the SELECT policy on this table

create table realtime.channels (
  id uuid primary key default gen_random_uuid(),
  pattern text not null unique check (realtime.is_valid_channel_pattern(pattern)),
  description text,
  webhook_urls text[] not null default '{}' check (realtime.are_valid_webhook_urls(webhook_urls)),
  enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table realtime.channels enable row level security;
comment on table realtime.channels is
  'Channels clients may use, by pattern. A SELECT policy decides who may subscribe (realtime.channel_name() holds the concrete name); with no policy nobody but service_role can.';
comment on column realtime.channels.id is 'Channel id; messages keep it in channel_id.';
comment on column realtime.channels.pattern is
  'A channel name (''orders'') or a pattern with % as the only wildcard (''order:%''); : separates parts by convention. Exact patterns win over wildcards, then the longest literal prefix.';
comment on column realtime.channels.description is 'Free text for people.';
comment on column realtime.channels.webhook_urls is
  'http(s) URLs that receive the system messages (realtime.publish) of this channel.';
comment on column realtime.channels.enabled is
  'false closes the channel: no subscribe, no publish. A disabled exact channel is not replaced by a matching wildcard.';
comment on column realtime.channels.created_at is 'When the channel was created.';
comment on column realtime.channels.updated_at is 'When the channel last changed (kept by trigger).';

create function realtime.touch_updated_at() returns trigger
language plpgsql set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
comment on function realtime.touch_updated_at() is 'Trigger: sets updated_at on every UPDATE.';

create trigger channels_touch_updated_at
  before update on realtime.channels
  for each row execute function realtime.touch_updated_at();
comment on trigger channels_touch_updated_at on realtime.channels is 'Keeps updated_at current.';

create policy channels_service_role_all on realtime.channels
  for all to service_role using (true) with check (true);
comment on policy channels_service_role_all on realtime.channels is
  'service_role (server-side callers, the daemon) administers and reads every channel.';

-- The one function every path uses to find the channel a name belongs to.
create function realtime.match_channel(channel_name text) returns uuid
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_id uuid;
  v_enabled boolean;
begin
  if not realtime.is_valid_channel_name(channel_name) then
    return null;
  end if;
  -- An exact pattern wins (names cannot contain %, so = finds exact patterns only).
  select c.id, c.enabled into v_id, v_enabled
  from realtime.channels c
  where c.pattern = match_channel.channel_name;
  if not found then
    -- Among wildcards: longest literal prefix, then most literal characters,
    -- then the pattern itself (C collation) so ties are deterministic.
    -- Only % is a wildcard: escape LIKE's \ and _ first.
    select c.id, c.enabled into v_id, v_enabled
    from realtime.channels c
    where pg_catalog.strpos(c.pattern, '%') > 0
      and match_channel.channel_name like
          pg_catalog.replace(pg_catalog.replace(c.pattern, E'\\', E'\\\\'), '_', E'\\_')
    order by pg_catalog.strpos(c.pattern, '%') desc,
             pg_catalog.length(pg_catalog.replace(c.pattern, '%', '')) desc,
             c.pattern collate "C"
    limit 1;
  end if;
  return case when v_enabled then v_id end;
end
$$;
comment on function realtime.match_channel(text) is
  'The id of the channel a concrete name belongs to, or NULL. The best match (exact, else longest literal prefix) decides; if it is disabled the result is NULL. Only % is a wildcard.';

--------------------------------------------------------------------------------
-- Messages: who may publish is the INSERT policy on this table

create table realtime.messages (
  id uuid primary key default gen_random_uuid(),
  seq bigint not null generated always as identity unique,
  channel_id uuid references realtime.channels (id) on delete set null,
  channel_name text not null check (realtime.is_valid_channel_name(channel_name)),
  event_name text not null check (realtime.is_valid_event_name(event_name)),
  payload jsonb not null default '{}' check (pg_catalog.jsonb_typeof(payload) = 'object'),
  sender_type text not null default 'user' check (sender_type in ('system', 'user')),
  sender_id uuid,
  dedupe_key text check (pg_catalog.octet_length(dedupe_key) between 1 and 255),
  ws_audience_count integer not null default 0 check (ws_audience_count >= 0),
  wh_audience_count integer not null default 0 check (wh_audience_count >= 0),
  wh_delivered_count integer not null default 0 check (wh_delivered_count >= 0),
  xact_id xid8 not null default pg_current_xact_id(),
  created_at timestamptz not null default now()
);
alter table realtime.messages enable row level security;
create index messages_channel_name_seq_idx on realtime.messages (channel_name, seq);
create index messages_channel_id_idx on realtime.messages (channel_id);
create index messages_created_at_idx on realtime.messages (created_at);
create unique index messages_dedupe_key_idx on realtime.messages
  (channel_name, sender_type, coalesce(sender_id, '00000000-0000-0000-0000-000000000000'::uuid), dedupe_key)
  where dedupe_key is not null;
comment on table realtime.messages is
  'Every message, from realtime.publish() (system) or a client INSERT (user). An INSERT policy decides who may publish; with no policy no client can. Each committed row is NOTIFYed on channel realtime_messages.';
comment on column realtime.messages.id is 'Message id (meta.messageId on the wire).';
comment on column realtime.messages.seq is
  'Allocated at INSERT from an identity: unique and increasing in insert order, not commit order (a lower seq can commit later).';
comment on column realtime.messages.channel_id is
  'The channel the name matched when the message was written; NULL after that channel is deleted.';
comment on column realtime.messages.channel_name is 'The concrete channel name, e.g. ''order:42''.';
comment on column realtime.messages.event_name is 'The event, e.g. ''status_changed''; 1 to 255 bytes.';
comment on column realtime.messages.payload is 'A JSON object, at most realtime.config.max_payload_bytes as text.';
comment on column realtime.messages.sender_type is
  'system (realtime.publish) or user (a client INSERT). Set by the database, never by the client.';
comment on column realtime.messages.sender_id is
  'For user messages, realtime.uid() of the client; set by the database, never by the client.';
comment on column realtime.messages.dedupe_key is
  'Optional idempotency key: a second message with the same key, channel and sender is not written; the first one''s id is returned.';
comment on column realtime.messages.ws_audience_count is 'Sockets the message was written to, summed over all daemon instances.';
comment on column realtime.messages.wh_audience_count is 'Webhook URLs the message was due to be POSTed to.';
comment on column realtime.messages.wh_delivered_count is 'Webhook deliveries that succeeded.';
comment on column realtime.messages.xact_id is
  'The writing transaction (pg_current_xact_id()), so readers can tell which rows may still commit below a seq.';
comment on column realtime.messages.created_at is 'Start of the writing transaction (now()).';
comment on index realtime.messages_channel_name_seq_idx is 'Replay of one channel by seq.';
comment on index realtime.messages_channel_id_idx is 'ON DELETE SET NULL of a channel without a table scan.';
comment on index realtime.messages_created_at_idx is 'Retention by age.';
comment on index realtime.messages_dedupe_key_idx is 'One message per (channel, sender, dedupe key).';

create policy messages_service_role_select on realtime.messages
  for select to service_role using (true);
comment on policy messages_service_role_select on realtime.messages is
  'service_role (the daemon relaying committed messages) reads every message.';

create function realtime.messages_before_insert() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_trusted boolean;
  v_bytes integer;
  v_cap integer;
begin
  -- Only the table owner (realtime.publish runs as the owner) decides who sent
  -- a message; everyone else is a user, identified by the database.
  select pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') into v_trusted
  from pg_catalog.pg_class c where c.oid = tg_relid;
  if not v_trusted then
    new.sender_type := 'user';
    new.sender_id := realtime.uid();
    new.channel_id := null;
  end if;

  if new.channel_id is null then
    if not realtime.is_valid_channel_name(new.channel_name) then
      raise exception 'realtime: invalid channel name'
        using errcode = 'RT400',
              detail = 'A channel name is 1 to 255 bytes without white space, control characters or %.';
    end if;
    new.channel_id := realtime.match_channel(new.channel_name);
    if new.channel_id is null then
      raise exception 'realtime: no enabled channel matches "%"', new.channel_name
        using errcode = 'RT404';
    end if;
  end if;

  if not v_trusted then
    v_bytes := pg_catalog.octet_length(new.payload::text);
    v_cap := realtime.max_payload_bytes();
    if v_bytes > v_cap then
      raise exception 'realtime: payload is % bytes, over the limit of % bytes', v_bytes, v_cap
        using errcode = 'RT413',
              hint = 'The limit is realtime.config.max_payload_bytes.';
    end if;
  end if;
  return new;
end
$$;
comment on function realtime.messages_before_insert() is
  'Trigger: sets sender_type/sender_id for client inserts (never trusted from the client), matches the channel (RT400 bad name, RT404 no enabled channel) and enforces the payload cap (RT413).';

create trigger messages_before_insert
  before insert on realtime.messages
  for each row execute function realtime.messages_before_insert();
comment on trigger messages_before_insert on realtime.messages is
  'Sender, channel and size of every new message are decided by the database.';

create function realtime.messages_notify() returns trigger
language plpgsql set search_path = ''
as $$
begin
  -- A hint only (any role can NOTIFY any channel): the daemon reads the row.
  perform pg_catalog.pg_notify('realtime_messages', pg_catalog.json_build_object(
    'v', 1, 'id', new.id, 'seq', new.seq, 'channel', new.channel_name)::text);
  return null;
end
$$;
comment on function realtime.messages_notify() is
  'Trigger: NOTIFY realtime_messages with {"v":1,"id","seq","channel"} (under 600 bytes whatever the payload). Delivered at commit; never sent if the transaction rolls back.';

create trigger messages_notify
  after insert on realtime.messages
  for each row execute function realtime.messages_notify();
comment on trigger messages_notify on realtime.messages is 'Wakes the daemon for each committed message.';

--------------------------------------------------------------------------------
-- Messages realtime.publish() did not write, so a DBA can see them

create table realtime.dropped_messages (
  id bigint generated always as identity primary key,
  channel_name text not null,
  event_name text,
  reason text not null check (reason in ('invalid_channel_name', 'invalid_event_name',
    'invalid_payload', 'invalid_dedupe_key', 'no_channel', 'payload_too_large')),
  payload_bytes integer,
  dropped_at timestamptz not null default now()
);
alter table realtime.dropped_messages enable row level security;
create index dropped_messages_dropped_at_idx on realtime.dropped_messages (dropped_at);
comment on table realtime.dropped_messages is
  'Messages realtime.publish() dropped (with a WARNING) instead of aborting the caller''s transaction. Rolled back with the caller''s transaction, like the message would have been.';
comment on column realtime.dropped_messages.id is 'Row id.';
comment on column realtime.dropped_messages.channel_name is 'The channel name given (cut to 255 characters).';
comment on column realtime.dropped_messages.event_name is 'The event name given (cut to 255 characters).';
comment on column realtime.dropped_messages.reason is
  'invalid_channel_name, invalid_event_name, invalid_payload (not a JSON object), invalid_dedupe_key, no_channel (no enabled channel matches) or payload_too_large.';
comment on column realtime.dropped_messages.payload_bytes is 'Size of the payload''s JSON text, when measured.';
comment on column realtime.dropped_messages.dropped_at is 'When (transaction start).';
comment on index realtime.dropped_messages_dropped_at_idx is 'Retention by age.';

create policy dropped_messages_service_role_select on realtime.dropped_messages
  for select to service_role using (true);
comment on policy dropped_messages_service_role_select on realtime.dropped_messages is
  'service_role reads the drop log.';

--------------------------------------------------------------------------------
-- Publishing from the database

create function realtime.publish(channel_name text, event_name text, payload jsonb,
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

--------------------------------------------------------------------------------
-- Asking the policies

create function realtime.impersonate(role text, claims jsonb default '{}')
returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_role pg_catalog.pg_roles%rowtype;
begin
  select * into v_role from pg_catalog.pg_roles r where r.rolname = impersonate.role;
  if not found then
    raise exception 'realtime.impersonate: role "%" does not exist', role using errcode = '42704';
  end if;
  if v_role.rolsuper or v_role.rolbypassrls then
    raise exception 'realtime.impersonate: role "%" bypasses row-level security', role
      using errcode = '42501', hint = 'Impersonate a role that policies apply to.';
  end if;
  perform pg_catalog.set_config('role', role, true);
  perform pg_catalog.set_config('request.jwt.claims', coalesce(claims, '{}'::jsonb)::text, true);
  perform pg_catalog.set_config('request.jwt.claim.sub', coalesce(claims ->> 'sub', ''), true);
  perform pg_catalog.set_config('request.jwt.claim.role', role, true);
end
$$;
comment on function realtime.impersonate(text, jsonb) is
  'For tests and server code: until the transaction ends (or RESET ROLE), act as role with these JWT claims, as the daemon does per request. Refuses superuser and BYPASSRLS roles.';

create function realtime.can_subscribe(channel text) returns boolean
language plpgsql volatile set search_path = ''
as $$
declare
  v_id uuid;
  v_previous text := pg_catalog.current_setting('realtime.channel_name', true);
  v_allowed boolean;
begin
  if not realtime.is_valid_channel_name(channel) then
    raise exception 'realtime: invalid channel name' using errcode = 'RT400';
  end if;
  v_id := realtime.match_channel(channel);
  if v_id is null then
    return false;
  end if;
  perform pg_catalog.set_config('realtime.channel_name', channel, true);
  -- The SELECT policies of the current role decide.
  select exists (select from realtime.channels c where c.id = v_id) into v_allowed;
  perform pg_catalog.set_config('realtime.channel_name', coalesce(v_previous, ''), true);
  return v_allowed;
end
$$;
comment on function realtime.can_subscribe(text) is
  'Whether the current role and claims may subscribe to a concrete channel: its enabled channel row is visible under the SELECT policies on realtime.channels, with realtime.channel_name() set to the name. RT400 for an invalid name.';

create function realtime.can_publish(channel text, event text) returns boolean
language plpgsql volatile set search_path = ''
as $$
declare
  v_previous text := pg_catalog.current_setting('realtime.channel_name', true);
  v_allowed boolean;
begin
  if not realtime.is_valid_channel_name(channel) then
    raise exception 'realtime: invalid channel name' using errcode = 'RT400';
  end if;
  if realtime.match_channel(channel) is null then
    return false;
  end if;
  perform pg_catalog.set_config('realtime.channel_name', channel, true);
  begin
    -- Probe the INSERT policies with an empty payload, then undo the row
    -- (and its notification) by failing this block on purpose.
    insert into realtime.messages (channel_name, event_name, payload)
    values (channel, event, '{}'::jsonb);
    raise exception 'probe' using errcode = 'RTPRB';
  exception
    when sqlstate 'RTPRB' then v_allowed := true;
    when insufficient_privilege then v_allowed := false;
  end;
  perform pg_catalog.set_config('realtime.channel_name', coalesce(v_previous, ''), true);
  return v_allowed;
end
$$;
comment on function realtime.can_publish(text, text) is
  'Whether the current role and claims may publish event to a concrete channel: an INSERT of an empty-payload message passes the INSERT policies on realtime.messages. The probe row is rolled back and never notified. RT400 for an invalid name.';

--------------------------------------------------------------------------------
-- Grants: explicit, per object and role. Functions are executable by PUBLIC
-- when created (a per-schema default cannot revoke that), so revoke here.

revoke all on all tables in schema realtime from public;
revoke all on all sequences in schema realtime from public;
revoke execute on all functions in schema realtime from public;

grant usage on schema realtime to anon, authenticated, service_role;

grant select (id, pattern, description, enabled, created_at, updated_at)
  on realtime.channels to anon, authenticated;
grant select, insert, update, delete on realtime.channels to service_role;

grant insert (channel_name, event_name, payload, dedupe_key)
  on realtime.messages to anon, authenticated;
grant select on realtime.messages to service_role;

grant select on realtime.dropped_messages to service_role;

grant execute on function realtime.channel_name() to anon, authenticated, service_role;
grant execute on function realtime.claims() to anon, authenticated, service_role;
grant execute on function realtime.role() to anon, authenticated, service_role;
grant execute on function realtime.uid() to anon, authenticated, service_role;
grant execute on function realtime.is_valid_channel_name(text) to anon, authenticated, service_role;
grant execute on function realtime.is_valid_channel_pattern(text) to service_role;
grant execute on function realtime.is_valid_event_name(text) to anon, authenticated, service_role;
grant execute on function realtime.are_valid_webhook_urls(text[]) to service_role;
grant execute on function realtime.match_channel(text) to anon, authenticated, service_role;
grant execute on function realtime.max_payload_bytes() to anon, authenticated, service_role;
grant execute on function realtime.publish(text, text, jsonb, text) to anon, authenticated, service_role;
grant execute on function realtime.can_subscribe(text) to anon, authenticated, service_role;
grant execute on function realtime.can_publish(text, text) to anon, authenticated, service_role;
grant execute on function realtime.impersonate(text, jsonb) to service_role;
grant execute on function realtime.version() to service_role;

insert into realtime.schema_versions (version, name) values (1, 'foundation');
