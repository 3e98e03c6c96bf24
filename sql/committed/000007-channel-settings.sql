--! Previous: sha1:fc8c0c564cf855d371b9382aeb58450cc03b5182
--! Hash: sha1:607a6f051d6daffb2d4418254e2197906d50dabe
--! Message: channel settings

-- realtimed 000007: per-channel settings on realtime.channels, so a DBA can
-- bound one noisy channel without changing the daemon's flags.
--
-- - max_subscribers: sockets subscribed to one concrete channel name, on each
--   realtimed instance (the daemon counts its own sockets; with N instances
--   behind a balancer the channel can hold up to N times this).
-- - max_message_bytes: a payload cap for client messages to this channel,
--   enforced here by the insert trigger, below realtime.config.max_payload_bytes.
-- - publish_rate: client publishes per second per connection to this channel
--   (the daemon's token bucket; ephemeral messages have their own).
-- - metadata: free-form JSON for the DBA's own use (policies may read it).
set local lock_timeout = '5s';

alter table realtime.channels
  add column if not exists max_subscribers integer check (max_subscribers > 0),
  add column if not exists max_message_bytes integer check (max_message_bytes > 0),
  add column if not exists publish_rate integer check (publish_rate > 0),
  add column if not exists metadata jsonb not null default '{}'
    check (pg_catalog.jsonb_typeof(metadata) = 'object');
comment on column realtime.channels.max_subscribers is
  'At most this many sockets subscribed to one concrete channel name matching this pattern, on each realtimed instance (NULL: no limit). Over it, a subscribe gets LIMIT_EXCEEDED.';
comment on column realtime.channels.max_message_bytes is
  'Largest client message payload (bytes of its JSON text) on channels matching this pattern; the lower of this and realtime.config.max_payload_bytes applies (NULL: only the latter). RT413 / PAYLOAD_TOO_LARGE.';
comment on column realtime.channels.publish_rate is
  'Client publishes per second each connection may make to one channel matching this pattern (NULL: only the daemon''s --publish-rate). RATE_LIMITED. Ephemeral messages are not counted.';
comment on column realtime.channels.metadata is
  'Free-form JSON object for the DBA (policies may read it). Not shown to clients unless granted.';

-- Limits are visible to whoever can see the row; metadata stays with the DBA.
grant select (max_subscribers, max_message_bytes, publish_rate) on realtime.channels to anon, authenticated;

create or replace function realtime.messages_before_insert() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_trusted boolean;
  v_bytes integer;
  v_cap integer;
  v_channel_cap integer;
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
  new.ws_audience_count := 0;
  new.wh_delivered_count := 0;

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
    select c.max_message_bytes into v_channel_cap from realtime.channels c where c.id = new.channel_id;
    if v_bytes > v_cap then
      raise exception 'realtime: payload is % bytes, over the limit of % bytes', v_bytes, v_cap
        using errcode = 'RT413',
              hint = 'The limit is realtime.config.max_payload_bytes.';
    end if;
    if v_bytes > v_channel_cap then
      raise exception 'realtime: payload is % bytes, over this channel''s limit of % bytes', v_bytes, v_channel_cap
        using errcode = 'RT413',
              hint = 'The limit is max_message_bytes of the channel''s row in realtime.channels.';
    end if;
  end if;

  -- Only system messages go to webhooks (only the owner can write those).
  if new.sender_type = 'system' then
    select coalesce(pg_catalog.cardinality(c.webhook_urls), 0) into new.wh_audience_count
    from realtime.channels c where c.id = new.channel_id;
  else
    new.wh_audience_count := 0;
  end if;
  return new;
end
$$;
comment on function realtime.messages_before_insert() is
  'Trigger: sets sender_type/sender_id for client inserts (never trusted from the client), matches the channel (RT400 bad name, RT404 no enabled channel), enforces the payload caps of realtime.config and of the channel (RT413) and sets the webhook audience of system messages.';

-- The subscribe check, the stream position and the channel's limits in one
-- round trip (authorize_subscribe_stream stays for daemons of version 5 and 6).
drop function if exists realtime.authorize_subscription(text, jsonb, text);
create function realtime.authorize_subscription(role text, claims jsonb, channel text)
returns table (channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint,
               max_subscribers integer, publish_rate integer, max_message_bytes integer)
language plpgsql volatile set search_path = ''
as $$
declare
  v_stream record;
  v_id uuid;
begin
  select s.epoch, s.max_seq, s.pruned_through_seq into v_stream from realtime.stream_info() s;
  v_id := realtime.authorize_subscribe(authorize_subscription.role, authorize_subscription.claims,
                                       authorize_subscription.channel);
  -- Back to the daemon to read the limits (the client may not see them all).
  perform pg_catalog.set_config('role', 'none', true);
  return query
    select v_id, v_stream.epoch, v_stream.max_seq, v_stream.pruned_through_seq,
           c.max_subscribers, c.publish_rate, c.max_message_bytes
    from (select 1) one left join realtime.channels c on c.id = v_id;
end
$$;
comment on function realtime.authorize_subscription(text, jsonb, text) is
  'For the daemon, one round trip per subscribe: realtime.stream_info() (as the daemon), authorize_subscribe(role, claims, channel) (NULL channel_id when denied), then the matched channel''s limits. Call it as a single statement: the role ends with the transaction.';
revoke execute on function realtime.authorize_subscription(text, jsonb, text) from public;
grant execute on function realtime.authorize_subscription(text, jsonb, text) to service_role;

insert into realtime.schema_versions (version, name) values (7, 'channel settings')
on conflict (version) do nothing;
