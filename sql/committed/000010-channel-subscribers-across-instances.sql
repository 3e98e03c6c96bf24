--! Previous: sha1:b85d44fcca9ed487d1840b5a975de369e8706f27
--! Hash: sha1:ac11831b379fee729b10116f513092e0d3ef5027
--! Message: channel subscribers across instances

-- realtimed 000010: max_subscribers counted across instances.
--
-- 000007 counted a channel's subscribers on each instance only. Each instance
-- now reports its counts for channels that have a max_subscribers, every
-- --stats-interval, and the subscribe check adds the other instances' last
-- reports to its own count. The cap holds across instances to within one
-- report interval (two instances admitting at the same moment can both pass).
set local lock_timeout = '5s';

create unlogged table if not exists realtime.channel_subscribers (
  channel_name text not null,
  instance_id uuid not null references realtime.instances (id) on delete cascade,
  subscribers integer not null check (subscribers > 0),
  updated_at timestamptz not null default now(),
  primary key (channel_name, instance_id)
);
alter table realtime.channel_subscribers enable row level security;
create index if not exists channel_subscribers_instance_id_idx on realtime.channel_subscribers (instance_id);
comment on table realtime.channel_subscribers is
  'Sockets subscribed per concrete channel and instance, for channels with a max_subscribers: each instance reports its own every --stats-interval. Unlogged: counts of live sockets.';
comment on column realtime.channel_subscribers.channel_name is 'The concrete channel.';
comment on column realtime.channel_subscribers.instance_id is 'The reporting instance (its rows go with it).';
comment on column realtime.channel_subscribers.subscribers is 'Its subscribed sockets at the last report.';
comment on column realtime.channel_subscribers.updated_at is 'When it was reported.';
comment on index realtime.channel_subscribers_instance_id_idx is 'Replacing or removing an instance''s reports.';
drop policy if exists channel_subscribers_service_role_all on realtime.channel_subscribers;
create policy channel_subscribers_service_role_all on realtime.channel_subscribers
  for all to service_role using (true) with check (true);
comment on policy channel_subscribers_service_role_all on realtime.channel_subscribers is 'The daemon (service_role) reports and reads counts.';

drop function if exists realtime.report_subscribers(uuid, text[], integer[]);
create function realtime.report_subscribers(instance uuid, channels text[], counts integer[]) returns void
language sql volatile set search_path = ''
as $$
  -- This instance's whole report: what it no longer has goes.
  delete from realtime.channel_subscribers s
  where s.instance_id = report_subscribers.instance
    and not s.channel_name = any (report_subscribers.channels);
  insert into realtime.channel_subscribers as s (channel_name, instance_id, subscribers)
  select c.name, report_subscribers.instance, c.n
  from rows from (pg_catalog.unnest(report_subscribers.channels), pg_catalog.unnest(report_subscribers.counts)) as c(name, n)
  where c.n > 0
  on conflict (channel_name, instance_id)
  do update set subscribers = excluded.subscribers, updated_at = pg_catalog.now();
$$;
comment on function realtime.report_subscribers(uuid, text[], integer[]) is
  'For the daemon: replaces this instance''s subscriber counts (channels with a max_subscribers) with the given ones.';

drop function if exists realtime.authorize_subscription(text, jsonb, text, uuid);
create function realtime.authorize_subscription(role text, claims jsonb, channel text, instance uuid)
returns table (channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint,
               max_subscribers integer, publish_rate integer, max_message_bytes integer,
               other_subscribers integer)
language plpgsql volatile set search_path = ''
as $$
declare
  v_stream record;
  v_id uuid;
  v_max_subscribers integer;
  v_publish_rate integer;
  v_max_message_bytes integer;
  v_others integer := 0;
begin
  -- One body, no nested wrapper: this runs for every subscribe.
  select s.epoch, s.max_seq, s.pruned_through_seq into v_stream from realtime.stream_info() s;
  v_id := realtime.authorize_subscribe(authorize_subscription.role, authorize_subscription.claims,
                                       authorize_subscription.channel);
  -- Back to the daemon to read the limits (the client may not see them all).
  perform pg_catalog.set_config('role', 'none', true);
  if v_id is not null then
    select c.max_subscribers, c.publish_rate, c.max_message_bytes
      into v_max_subscribers, v_publish_rate, v_max_message_bytes
    from realtime.channels c where c.id = v_id;
    if v_max_subscribers is not null then
      select coalesce(pg_catalog.sum(s.subscribers), 0)::integer into v_others
      from realtime.channel_subscribers s
      where s.channel_name = authorize_subscription.channel
        and s.instance_id <> authorize_subscription.instance;
    end if;
  end if;
  return query select v_id, v_stream.epoch, v_stream.max_seq, v_stream.pruned_through_seq,
                      v_max_subscribers, v_publish_rate, v_max_message_bytes, v_others;
end
$$;
comment on function realtime.authorize_subscription(text, jsonb, text, uuid) is
  'For the daemon, one round trip per subscribe: realtime.stream_info() (as the daemon), authorize_subscribe(role, claims, channel) (NULL channel_id when denied), the matched channel''s limits, and other_subscribers, the sockets other instances last reported on this channel (0 when it has no max_subscribers). Call it as a single statement.';

revoke all on realtime.channel_subscribers from public;
grant select, insert, update, delete on realtime.channel_subscribers to service_role;
revoke execute on function realtime.report_subscribers(uuid, text[], integer[]) from public;
revoke execute on function realtime.authorize_subscription(text, jsonb, text, uuid) from public;
grant execute on function realtime.report_subscribers(uuid, text[], integer[]) to service_role;
grant execute on function realtime.authorize_subscription(text, jsonb, text, uuid) to service_role;

comment on column realtime.channels.max_subscribers is
  'At most this many sockets subscribed to one concrete channel name matching this pattern, over all realtimed instances (each adds the others'' counts, reported every --stats-interval; NULL: no limit). Over it, a subscribe gets LIMIT_EXCEEDED.';

insert into realtime.schema_versions (version, name) values (10, 'channel subscribers across instances')
on conflict (version) do nothing;
