--! Previous: sha1:997e35bd4e054c6668d669d16efc494199687337
--! Hash: sha1:8b3ecaca509197ea978d42baa1abfc93411e72dc
--! Message: publish by privilege

-- realtimed 000012: who may publish is decided by privilege, not by trigger
-- depth; change events carry only what the subscriber could see; presence
-- serializes on a lock no other role can take; a dedupe key needs a sender
-- the database can tell apart (attack review, issue 13).
--
-- 1. realtime.publish() runs as its caller (SECURITY INVOKER), so the role it
--    sees is the role that called it: the owner of a SECURITY DEFINER trigger
--    function, or the role whose write fired an ordinary trigger. A client
--    role (anon, authenticated, or any role that is a member of either, unless
--    it is a superuser or a member of service_role) never writes a system
--    message: called directly it gets 42501; from a trigger its message is
--    dropped with a WARNING (reason not_allowed) and the write goes on.
--    pg_trigger_depth() was no authority: any role may create a temporary
--    table with its own trigger. Every other role may publish with no grant
--    of its own: USAGE on the schema and EXECUTE on publish() go to PUBLIC, and
--    a non-client role's INSERT into realtime.messages is a system message
--    (policy messages_system_insert). The insert trigger validates such a row
--    and, instead of raising into the caller's transaction, drops a bad one
--    with a WARNING and a row in realtime.dropped_messages.
-- 2. messages_before_insert reads the channel's settings through a SECURITY
--    DEFINER helper: read as the client under RLS, a client without a SELECT
--    policy on the channel row got no per-channel payload cap.
-- 3. Change streams: an UPDATE event of a row-checked stream carries only the
--    primary key of the old row (nobody can be asked whether they could see
--    the old version), and change_audience admits a subscriber only while the
--    version the event carries is still the row's current version, as the
--    subscriber sees it. A version that changed since cannot be checked: it is
--    withheld (the event of the newer version follows).
-- 4. presence_track serializes per channel on an advisory lock whose key is
--    derived from realtime.notify_key, so no other role can compute it and
--    hold it (which stalled every daemon connection), and waits at most 2 s.
-- 5. A user message with a dedupe key needs a sender whose sub is a UUID:
--    without one (anonymous senders, non-UUID subs) every such sender shared
--    one dedupe namespace, and a victim's publish came back as someone else's.
set local lock_timeout = '5s';

--------------------------------------------------------------------------------
-- Who may publish

create or replace function realtime.may_publish() returns boolean
language sql stable set search_path = ''
as $$
  select r.rolsuper
      or pg_catalog.pg_has_role(current_user, 'service_role', 'MEMBER')
      or not (pg_catalog.pg_has_role(current_user, 'anon', 'MEMBER')
              or pg_catalog.pg_has_role(current_user, 'authenticated', 'MEMBER'))
  from pg_catalog.pg_roles r
  where r.rolname = current_user
$$;
comment on function realtime.may_publish() is
  'Whether the current role may write system messages (realtime.publish, or an INSERT into realtime.messages): any role but a client role. Client roles are anon, authenticated and every role that is a member of either (inherited or not), unless it is a superuser or a member of service_role.';

create or replace function realtime.record_drop(channel_name text, event_name text, reason text, payload_bytes integer)
returns void
language sql volatile security definer set search_path = ''
as $$
  insert into realtime.dropped_messages (channel_name, event_name, reason, payload_bytes)
  values (coalesce(pg_catalog.left(record_drop.channel_name, 255), ''), pg_catalog.left(record_drop.event_name, 255),
          record_drop.reason, record_drop.payload_bytes)
$$;
comment on function realtime.record_drop(text, text, text, integer) is
  'Records a message realtime.publish() (or a system insert) did not write, in realtime.dropped_messages. reason is one of that table''s values.';

create or replace function realtime.channel_for_insert(channel_name text,
                                                     out channel_id uuid, out max_message_bytes integer,
                                                     out webhook_count integer)
language sql stable security definer set search_path = ''
as $$
  select c.id, c.max_message_bytes, coalesce(pg_catalog.cardinality(c.webhook_urls), 0)
  from (select realtime.match_channel(channel_for_insert.channel_name) as id) m
  left join realtime.channels c on c.id = m.id
$$;
comment on function realtime.channel_for_insert(text) is
  'For the insert trigger: the enabled channel a name matches (NULL when none), its max_message_bytes and how many webhook URLs it has, read as the owner (a client may not see the row).';

create or replace function realtime.system_message_id(channel_name text, dedupe_key text) returns uuid
language sql stable security definer set search_path = ''
as $$
  select m.id from realtime.messages m
  where m.channel_name = system_message_id.channel_name and m.sender_type = 'system'
    and m.sender_id is null and m.dedupe_key = system_message_id.dedupe_key
$$;
comment on function realtime.system_message_id(text, text) is
  'The id of the system message written with this dedupe key on this channel, if any (realtime.publish returns it for a repeat).';

alter table realtime.dropped_messages drop constraint if exists dropped_messages_reason_check;
alter table realtime.dropped_messages add constraint dropped_messages_reason_check
  check (reason in ('invalid_channel_name', 'invalid_event_name', 'invalid_payload', 'invalid_dedupe_key',
                    'no_channel', 'payload_too_large', 'not_allowed')) not valid;
alter table realtime.dropped_messages validate constraint dropped_messages_reason_check;
comment on column realtime.dropped_messages.reason is
  'invalid_channel_name, invalid_event_name, invalid_payload (not a JSON object), invalid_dedupe_key, no_channel (no enabled channel matches), payload_too_large, or not_allowed (a client role''s trigger called realtime.publish).';

create or replace function realtime.messages_before_insert() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_trusted boolean := realtime.may_publish();
  v_channel record;
  v_bytes integer;
  v_cap integer;
  v_reason text;
begin
  new.ws_audience_count := 0;
  new.wh_delivered_count := 0;
  if v_trusted then
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
      else
        v_bytes := pg_catalog.octet_length(new.payload::text);
        if v_bytes > realtime.max_payload_bytes() then
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
    new.channel_id := v_channel.channel_id;
    new.wh_audience_count := v_channel.webhook_count;
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
  if new.dedupe_key is not null and new.sender_id is null then
    raise exception 'realtime: a dedupe key needs a sender whose sub claim is a UUID'
      using errcode = 'RT400',
            detail = 'Without one, senders could not be told apart, and one sender''s key would answer for another''s.';
  end if;
  v_channel := realtime.channel_for_insert(new.channel_name);
  if v_channel.channel_id is null then
    raise exception 'realtime: no enabled channel matches "%"', new.channel_name using errcode = 'RT404';
  end if;
  new.channel_id := v_channel.channel_id;
  v_bytes := pg_catalog.octet_length(new.payload::text);
  v_cap := realtime.max_payload_bytes();
  if v_bytes > v_cap then
    raise exception 'realtime: payload is % bytes, over the limit of % bytes', v_bytes, v_cap
      using errcode = 'RT413', hint = 'The limit is realtime.config.max_payload_bytes.';
  end if;
  if v_bytes > v_channel.max_message_bytes then
    raise exception 'realtime: payload is % bytes, over this channel''s limit of % bytes', v_bytes, v_channel.max_message_bytes
      using errcode = 'RT413', hint = 'The limit is max_message_bytes of the channel''s row in realtime.channels.';
  end if;
  return new;
end
$$;
comment on function realtime.messages_before_insert() is
  'Trigger: a row written by a role that may publish (realtime.may_publish) is a system message; it is validated and, when it cannot be written (bad name, event, payload or dedupe key, no enabled channel, over the payload cap), dropped with a WARNING and a row in realtime.dropped_messages instead of raising. Any other row is a client''s: sender_type user, sender_id from its claims, a fresh id; RT400 bad name or a dedupe key without a UUID sub, RT404 no enabled channel, RT413 over a payload cap. Sets the channel and the webhook audience.';

create or replace function realtime.messages_enqueue_webhooks() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into realtime.webhook_deliveries (message_id, url, created_at)
  select new.id, u.url, new.created_at
  from realtime.channels c, pg_catalog.unnest(c.webhook_urls) as u(url)
  where c.id = new.channel_id;
  -- One wake-up per transaction: identical notifications are delivered once.
  perform pg_catalog.pg_notify('realtime_webhooks', '');
  return null;
end
$$;
comment on function realtime.messages_enqueue_webhooks() is
  'Trigger: writes the outbox rows of a system message in its own transaction, and wakes the daemon (NOTIFY realtime_webhooks). SECURITY DEFINER: the writer of a system message need not see the outbox.';

drop policy if exists messages_system_insert on realtime.messages;
create policy messages_system_insert on realtime.messages
  for insert to public with check (sender_type = 'system');
comment on policy messages_system_insert on realtime.messages is
  'A role that may publish (realtime.may_publish) writes system messages; the insert trigger makes every other role''s row a user message, which this policy never admits (the DBA''s INSERT policies decide those).';

create or replace function realtime.publish(channel_name text, event_name text, payload jsonb,
                                           dedupe_key text default null)
returns uuid
language plpgsql volatile security invoker set search_path = ''
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
  values (v_id, publish.channel_name, publish.event_name, publish.payload, publish.dedupe_key)
  on conflict do nothing;
  get diagnostics v_written = row_count;
  if v_written = 1 then
    return v_id;
  end if;
  -- Dropped (recorded by the trigger), or a repeat of a dedupe key: its first id.
  return case when publish.dedupe_key is not null
              then realtime.system_message_id(publish.channel_name, publish.dedupe_key) end;
end
$$;
comment on function realtime.publish(text, text, jsonb, text) is
  'Publishes a system message (for triggers and server code) and returns its id. Runs as its caller: any role may, but a client role (realtime.may_publish), which gets 42501 when it calls it itself and a dropped message (WARNING, reason not_allowed) from its own trigger. Never aborts the caller for its input: a bad name, no enabled channel or a payload over the cap gives a WARNING, a row in realtime.dropped_messages and NULL. With dedupe_key, a repeat returns the first id and notifies nothing.';

--------------------------------------------------------------------------------
-- A client's publish through the daemon: a dedupe key needs a UUID sub

create or replace function realtime.send(role text, claims jsonb, channel text, event text, payload jsonb,
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
    if v_sender is null then
      raise exception 'realtime: a dedupe key needs a sender whose sub claim is a UUID' using errcode = 'RT400';
    end if;
    select m.id, m.seq into v_id, v_seq
    from realtime.messages m
    where m.channel_name = send.channel and m.sender_type = 'user'
      and m.sender_id = v_sender and m.dedupe_key = send.dedupe_key;
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
          and m.sender_id = v_sender and m.dedupe_key = send.dedupe_key;
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
  'For the daemon: a client publish. Inserts as the client (impersonate(role, claims)), so the INSERT policies on realtime.messages decide, and returns the id and seq; with a dedupe key already used by this sender on this channel, the first message (duplicate = true). RT400 for a dedupe key from a sender whose sub is not a UUID.';

--------------------------------------------------------------------------------
-- Change events carry only what the subscriber can be asked about

create or replace function realtime.changes_trigger() returns trigger
language plpgsql security definer
set search_path = '' set timezone = 'UTC' set intervalstyle = 'postgres' set extra_float_digits = 1 set bytea_output = 'hex'
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
  if tg_op <> 'INSERT' and not v_cfg.public then
    -- Nobody's row-level security can be asked about an old version of a row
    -- (an UPDATE's) or a deleted one: only its key goes out.
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
  'Trigger installed by realtime.enable_changes: publishes each row change to the stream''s channel and, with row_channels, to <table>:<primary key>, carrying only the stream''s columns; for a stream that is not public, the old row of an UPDATE or DELETE carries only its primary key. Values are written with fixed settings (UTC, ISO intervals, shortest exact floats, hex bytea), whatever the writer''s session says, so realtime.change_audience can compare them.';

create or replace function realtime.change_audience(ids uuid[], identities jsonb)
returns table (id uuid, identity integer)
language plpgsql volatile
set search_path = '' set timezone = 'UTC' set intervalstyle = 'postgres' set extra_float_digits = 1 set bytea_output = 'hex'
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
    select cs.table_id, cs.primary_key, cs.columns,
           pg_catalog.array_agg(m.id order by m.seq) as message_ids,
           pg_catalog.jsonb_agg(m.payload -> 'new' order by m.seq) as rows
    from realtime.messages m
    join realtime.change_streams cs
      on cs.table_id = pg_catalog.to_regclass(pg_catalog.quote_ident(m.payload ->> 'schema') || '.'
                                             || pg_catalog.quote_ident(m.payload ->> 'table'))
    where m.id = any (change_audience.ids) and realtime.needs_row_check(m)
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
$$;
comment on function realtime.change_audience(uuid[], jsonb) is
  'For the daemon: which identities ([{role, claims}], numbered from 1) may see which row-checked change events among ids: the row, looked up by primary key as that identity under the source table''s row-level security and column grants, still holds every value the event carries (a version that changed since is withheld from everyone). One row per (message, identity) allowed; events that need no check are not listed.';

--------------------------------------------------------------------------------
-- Presence: a lock no other role can take

create or replace function realtime.presence_track(instance uuid, connection uuid, role text, claims jsonb, channel text,
                                                  state jsonb, max_members integer, max_state_bytes integer)
returns text
language plpgsql volatile set search_path = ''
as $$
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
  select ('x' || pg_catalog.left(pg_catalog.md5(k.key), 16))::bit(64)::bigint into v_seed from realtime.notify_key k;
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

--------------------------------------------------------------------------------
-- Grants: any role may call publish() and write a system message; what a
-- client role may do is still its INSERT policies'.

revoke execute on function realtime.may_publish() from public;
revoke execute on function realtime.record_drop(text, text, text, integer) from public;
revoke execute on function realtime.channel_for_insert(text) from public;
revoke execute on function realtime.system_message_id(text, text) from public;

grant usage on schema realtime to public;
grant execute on function realtime.publish(text, text, jsonb, text) to public;
grant execute on function realtime.may_publish() to public;
grant execute on function realtime.record_drop(text, text, text, integer) to public;
grant execute on function realtime.channel_for_insert(text) to public;
grant execute on function realtime.system_message_id(text, text) to public;
grant execute on function realtime.match_channel(text) to public;
grant execute on function realtime.max_payload_bytes() to public;
grant execute on function realtime.uid() to public;
grant execute on function realtime.claims() to public;
grant execute on function realtime.is_valid_channel_name(text) to public;
grant execute on function realtime.is_valid_event_name(text) to public;
grant insert (id, channel_name, event_name, payload, dedupe_key) on realtime.messages to public;

insert into realtime.schema_versions (version, name) values (12, 'publish by privilege')
on conflict (version) do nothing;
