--! Previous: sha1:73da67edc39f8bbb913ad12241093468f311874b
--! Hash: sha1:1f1c3a0a4c5bd378a71d428838b329f8d0187a65
--! Message: webhooks

-- realtimed 000003: webhooks that are never lost or doubled (a durable
-- outbox claimed with SKIP LOCKED), delivery statistics added in batches,
-- immutable messages, the statistics views and retention.
set local lock_timeout = '5s';

--------------------------------------------------------------------------------
-- Settings

alter table realtime.config
  add column if not exists webhook_max_attempts integer not null default 5
    check (webhook_max_attempts between 1 and 100),
  add column if not exists webhook_backoff_ms integer not null default 1000
    check (webhook_backoff_ms between 1 and 3600000),
  add column if not exists webhook_max_backoff_ms integer not null default 3600000
    check (webhook_max_backoff_ms between 1 and 86400000),
  add column if not exists retention interval not null default '24 hours'
    check (retention > interval '0');
comment on column realtime.config.webhook_max_attempts is
  'Attempts per webhook delivery (network errors, timeouts, 429 and 5xx are retried; other 4xx fail at once).';
comment on column realtime.config.webhook_backoff_ms is
  'First retry delay; it doubles with each attempt (1 s, 2 s, 4 s, ...), with +/-25% jitter. A Retry-After header wins.';
comment on column realtime.config.webhook_max_backoff_ms is 'Longest delay between two attempts (Retry-After included).';
comment on column realtime.config.retention is
  'How long realtime.prune() keeps messages by default (undelivered webhooks are kept until they finish).';

--------------------------------------------------------------------------------
-- The outbox

create table if not exists realtime.webhook_deliveries (
  id bigint generated always as identity primary key,
  message_id uuid not null references realtime.messages (id) on delete cascade,
  url text not null,
  state text not null default 'pending' check (state in ('pending', 'delivering', 'delivered', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  locked_until timestamptz,
  last_status integer,
  last_error text,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  unique (message_id, url)
);
alter table realtime.webhook_deliveries enable row level security;
create index if not exists webhook_deliveries_due_idx on realtime.webhook_deliveries (next_attempt_at)
  where state = 'pending';
create index if not exists webhook_deliveries_leased_idx on realtime.webhook_deliveries (locked_until)
  where state = 'delivering';
comment on table realtime.webhook_deliveries is
  'One row per (system message, webhook URL), written in the message''s own transaction; the daemon claims due rows with FOR UPDATE SKIP LOCKED, so each is POSTed by one instance at a time and survives restarts.';
comment on column realtime.webhook_deliveries.id is 'Delivery id.';
comment on column realtime.webhook_deliveries.message_id is 'The system message to deliver.';
comment on column realtime.webhook_deliveries.url is 'Where to POST it (from the channel''s webhook_urls when it was published).';
comment on column realtime.webhook_deliveries.state is
  'pending (due at next_attempt_at), delivering (claimed until locked_until), delivered or failed.';
comment on column realtime.webhook_deliveries.attempts is 'Attempts started so far.';
comment on column realtime.webhook_deliveries.next_attempt_at is 'When a pending delivery is due.';
comment on column realtime.webhook_deliveries.locked_until is
  'End of the claim of a delivering row; after it another instance may claim it again (the first one died).';
comment on column realtime.webhook_deliveries.last_status is 'HTTP status of the last attempt (NULL: no response).';
comment on column realtime.webhook_deliveries.last_error is 'What went wrong in the last attempt.';
comment on column realtime.webhook_deliveries.delivered_at is 'When a 2xx came back.';
comment on column realtime.webhook_deliveries.created_at is 'When the message was published.';
comment on index realtime.webhook_deliveries_due_idx is 'Claiming due deliveries.';
comment on index realtime.webhook_deliveries_leased_idx is 'Reclaiming deliveries of an instance that died.';

create table if not exists realtime.webhook_attempts (
  id bigint generated always as identity primary key,
  delivery_id bigint not null references realtime.webhook_deliveries (id) on delete cascade,
  attempt integer not null check (attempt > 0),
  status integer,
  error text,
  duration_ms integer,
  attempted_at timestamptz not null default now()
);
alter table realtime.webhook_attempts enable row level security;
create index if not exists webhook_attempts_delivery_id_idx on realtime.webhook_attempts (delivery_id);
comment on table realtime.webhook_attempts is 'The outcome of every webhook attempt.';
comment on column realtime.webhook_attempts.id is 'Row id.';
comment on column realtime.webhook_attempts.delivery_id is 'The delivery attempted.';
comment on column realtime.webhook_attempts.attempt is 'Its number, from 1.';
comment on column realtime.webhook_attempts.status is 'HTTP status (NULL: no response).';
comment on column realtime.webhook_attempts.error is 'Network error, timeout, or the status line.';
comment on column realtime.webhook_attempts.duration_ms is 'How long the attempt took.';
comment on column realtime.webhook_attempts.attempted_at is 'When it was recorded.';
comment on index realtime.webhook_attempts_delivery_id_idx is 'Attempts of one delivery.';

-- Messages know their webhook audience when written; the outbox rows are
-- written by the same statement.
create or replace function realtime.messages_before_insert() returns trigger
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
    if v_bytes > v_cap then
      raise exception 'realtime: payload is % bytes, over the limit of % bytes', v_bytes, v_cap
        using errcode = 'RT413',
              hint = 'The limit is realtime.config.max_payload_bytes.';
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
  'Trigger: sets sender_type/sender_id for client inserts (never trusted from the client), matches the channel (RT400 bad name, RT404 no enabled channel), enforces the payload cap (RT413) and sets the webhook audience of system messages.';

create or replace function realtime.messages_enqueue_webhooks() returns trigger
language plpgsql set search_path = ''
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
  'Trigger: writes the outbox rows of a system message in its own transaction, and wakes the daemon (NOTIFY realtime_webhooks).';

drop trigger if exists messages_enqueue_webhooks on realtime.messages;
create trigger messages_enqueue_webhooks
  after insert on realtime.messages
  for each row when (new.wh_audience_count > 0)
  execute function realtime.messages_enqueue_webhooks();
comment on trigger messages_enqueue_webhooks on realtime.messages is
  'A committed system message always has its webhook deliveries recorded.';

--------------------------------------------------------------------------------
-- Messages are immutable, but for their statistics and a deleted channel

create or replace function realtime.messages_before_update() returns trigger
language plpgsql set search_path = ''
as $$
begin
  if (new.id, new.seq, new.channel_name, new.event_name, new.payload, new.sender_type, new.sender_id,
      new.dedupe_key, new.xact_id, new.created_at, new.wh_audience_count)
     is distinct from
     (old.id, old.seq, old.channel_name, old.event_name, old.payload, old.sender_type, old.sender_id,
      old.dedupe_key, old.xact_id, old.created_at, old.wh_audience_count)
  then
    raise exception 'realtime: messages are immutable' using errcode = 'RT405',
      hint = 'Only ws_audience_count and wh_delivered_count grow, and channel_id becomes NULL when its channel is deleted.';
  end if;
  if new.channel_id is distinct from old.channel_id and new.channel_id is not null then
    raise exception 'realtime: a message keeps its channel' using errcode = 'RT405';
  end if;
  if new.ws_audience_count < old.ws_audience_count or new.wh_delivered_count < old.wh_delivered_count then
    raise exception 'realtime: delivery statistics only grow' using errcode = 'RT405';
  end if;
  return new;
end
$$;
comment on function realtime.messages_before_update() is
  'Trigger: a message never changes after it is written, but for its growing statistics and channel_id becoming NULL (RT405).';

drop trigger if exists messages_before_update on realtime.messages;
create trigger messages_before_update
  before update on realtime.messages
  for each row execute function realtime.messages_before_update();
comment on trigger messages_before_update on realtime.messages is 'Messages are immutable.';

--------------------------------------------------------------------------------
-- What the daemon calls

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
comment on function realtime.webhook_body(realtime.messages) is
  'The body POSTed to webhooks: {"id","channel","event","payload","createdAt"} (the signature covers all of it).';

drop function if exists realtime.claim_webhook_deliveries(integer, integer, text[], interval);
create function realtime.claim_webhook_deliveries(max_count integer, per_url integer,
                                                  busy_urls text[] default '{}', lease interval default '5 minutes')
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
    returning w.id, w.url, w.attempts, w.message_id
  )
  select c.id, c.url, c.attempts, m.id, m.channel_name, m.event_name, realtime.webhook_body(m)
  from claimed c join realtime.messages m on m.id = c.message_id
  order by c.id
$$;
comment on function realtime.claim_webhook_deliveries(integer, integer, text[], interval) is
  'For the daemon: claims up to max_count due deliveries (at most per_url per URL, none for busy_urls) with FOR UPDATE SKIP LOCKED, until now() + lease, and returns what to POST.';

drop function if exists realtime.record_webhook_attempts(jsonb);
create function realtime.record_webhook_attempts(results jsonb) returns integer
language plpgsql volatile security definer set search_path = ''
as $$
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
    select w.id, w.attempts, w.message_id, r.status, r.error, r.duration_ms, r.retry_after_ms,
           r.status between 200 and 299 as ok,
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
    returning w.message_id, cr.ok
  ), delivered as (
    update realtime.messages m
    set wh_delivered_count = m.wh_delivered_count + x.n
    from (select o.message_id, pg_catalog.count(*)::integer as n from outcome o where o.ok group by o.message_id) x
    where m.id = x.message_id
  )
  select pg_catalog.count(*)::integer into v_count from outcome;
  return v_count;
end
$$;
comment on function realtime.record_webhook_attempts(jsonb) is
  'For the daemon: records a batch of attempts [{"id","status","error","duration_ms","retry_after_ms"}]. 2xx: delivered (wh_delivered_count += 1); network error, timeout, 429 or 5xx: retried with backoff up to webhook_max_attempts; other statuses: failed. Rows no longer claimed are ignored.';

drop function if exists realtime.add_ws_audience(uuid[], integer[]);
create function realtime.add_ws_audience(ids uuid[], counts integer[]) returns integer
language sql volatile security definer set search_path = ''
as $$
  with v as (
    select x.id, pg_catalog.sum(x.n)::integer as n
    from rows from (pg_catalog.unnest(add_ws_audience.ids), pg_catalog.unnest(add_ws_audience.counts)) as x(id, n)
    where x.n > 0 group by x.id
  ), updated as (
    update realtime.messages m set ws_audience_count = m.ws_audience_count + v.n
    from v where m.id = v.id
    returning 1
  )
  select pg_catalog.count(*)::integer from updated
$$;
comment on function realtime.add_ws_audience(uuid[], integer[]) is
  'For the daemon: adds the sockets each message was written to (+=, never overwritten), many messages in one statement.';

--------------------------------------------------------------------------------
-- Retention

drop function if exists realtime.prune(interval);
drop function if exists realtime.prune(interval, integer);
create function realtime.prune(older_than interval default null, max_rows integer default 100000)
returns bigint
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cutoff timestamptz;
  v_batch bigint;
  v_total bigint := 0;
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
    )
    delete from realtime.messages m using doomed where m.id = doomed.id;
    get diagnostics v_batch = row_count;
    v_total := v_total + v_batch;
    exit when v_batch < 5000 or v_total >= max_rows;
  end loop;
  delete from realtime.dropped_messages d where d.dropped_at < v_cutoff;
  return v_total;
end
$$;
comment on function realtime.prune(interval, integer) is
  'Deletes messages older than older_than (default realtime.config.retention, 24 hours) with their finished webhook deliveries, in batches of 5000 and at most max_rows per call; keeps messages whose webhooks are still due. Returns the messages deleted; call again while it returns max_rows.';

--------------------------------------------------------------------------------
-- Statistics

create or replace view realtime.channel_stats as
select c.id as channel_id,
       c.pattern,
       c.enabled,
       coalesce(s.messages_last_hour, 0) as messages_last_hour,
       coalesce(s.messages_last_day, 0) as messages_last_day,
       coalesce(s.messages_total, 0) as messages_total,
       s.avg_ws_audience,
       w.webhook_success_rate,
       coalesce(w.webhooks_pending, 0) as webhooks_pending,
       s.last_message_at
from realtime.channels c
left join lateral (
  select pg_catalog.count(*) filter (where m.created_at > pg_catalog.now() - interval '1 hour') as messages_last_hour,
         pg_catalog.count(*) filter (where m.created_at > pg_catalog.now() - interval '1 day') as messages_last_day,
         pg_catalog.count(*) as messages_total,
         pg_catalog.round(pg_catalog.avg(m.ws_audience_count), 2) as avg_ws_audience,
         pg_catalog.max(m.created_at) as last_message_at
  from realtime.messages m where m.channel_id = c.id
) s on true
left join lateral (
  select pg_catalog.round(pg_catalog.count(*) filter (where d.state = 'delivered')::numeric
           / nullif(pg_catalog.count(*) filter (where d.state in ('delivered', 'failed')), 0), 4) as webhook_success_rate,
         pg_catalog.count(*) filter (where d.state in ('pending', 'delivering')) as webhooks_pending
  from realtime.webhook_deliveries d join realtime.messages m on m.id = d.message_id
  where m.channel_id = c.id
) w on true;
comment on column realtime.channel_stats.channel_id is 'The channel.';
comment on column realtime.channel_stats.pattern is 'Its pattern.';
comment on column realtime.channel_stats.enabled is 'Whether it is open.';
comment on column realtime.channel_stats.messages_last_hour is 'Messages written in the last hour.';
comment on column realtime.channel_stats.messages_last_day is 'Messages written in the last 24 hours.';
comment on column realtime.channel_stats.messages_total is 'Messages retained (realtime.prune removes older ones).';
comment on column realtime.channel_stats.avg_ws_audience is 'Average sockets each message was written to, over all instances.';
comment on column realtime.channel_stats.webhook_success_rate is 'Delivered / (delivered + failed) webhook deliveries; NULL when none finished.';
comment on column realtime.channel_stats.webhooks_pending is 'Webhook deliveries still due or under way.';
comment on column realtime.channel_stats.last_message_at is 'When its last retained message was written.';
comment on view realtime.channel_stats is
  'Per channel: messages in the last hour and day, retained in total, average sockets reached, webhook success rate (delivered / finished) and backlog, last message time. Over retained messages only.';

create or replace view realtime.webhook_failures as
select d.id as delivery_id,
       d.message_id,
       m.channel_name,
       m.event_name,
       d.url,
       d.state,
       d.attempts,
       d.last_status,
       d.last_error,
       d.next_attempt_at,
       d.created_at
from realtime.webhook_deliveries d
join realtime.messages m on m.id = d.message_id
where d.state = 'failed' or (d.state = 'pending' and d.attempts > 0);
comment on column realtime.webhook_failures.delivery_id is 'The delivery (realtime.webhook_deliveries.id).';
comment on column realtime.webhook_failures.message_id is 'The message.';
comment on column realtime.webhook_failures.channel_name is 'Its channel.';
comment on column realtime.webhook_failures.event_name is 'Its event.';
comment on column realtime.webhook_failures.url is 'The receiver.';
comment on column realtime.webhook_failures.state is 'failed (for good) or pending (a retry is due at next_attempt_at).';
comment on column realtime.webhook_failures.attempts is 'Attempts made.';
comment on column realtime.webhook_failures.last_status is 'HTTP status of the last attempt (NULL: no response).';
comment on column realtime.webhook_failures.last_error is 'What went wrong last.';
comment on column realtime.webhook_failures.next_attempt_at is 'When a pending one is retried.';
comment on column realtime.webhook_failures.created_at is 'When the message was published.';
comment on view realtime.webhook_failures is
  'Webhook deliveries that failed for good (state failed), or failed and wait for a retry (state pending).';

--------------------------------------------------------------------------------
-- Grants

revoke all on realtime.webhook_deliveries, realtime.webhook_attempts,
  realtime.channel_stats, realtime.webhook_failures from public;
grant select on realtime.webhook_deliveries, realtime.webhook_attempts,
  realtime.channel_stats, realtime.webhook_failures to service_role;
drop policy if exists webhook_deliveries_service_role_select on realtime.webhook_deliveries;
create policy webhook_deliveries_service_role_select on realtime.webhook_deliveries
  for select to service_role using (true);
comment on policy webhook_deliveries_service_role_select on realtime.webhook_deliveries is
  'service_role reads the outbox.';
drop policy if exists webhook_attempts_service_role_select on realtime.webhook_attempts;
create policy webhook_attempts_service_role_select on realtime.webhook_attempts
  for select to service_role using (true);
comment on policy webhook_attempts_service_role_select on realtime.webhook_attempts is
  'service_role reads the attempt log.';

revoke execute on function realtime.messages_enqueue_webhooks() from public;
revoke execute on function realtime.messages_before_update() from public;
revoke execute on function realtime.webhook_body(realtime.messages) from public;
revoke execute on function realtime.claim_webhook_deliveries(integer, integer, text[], interval) from public;
revoke execute on function realtime.record_webhook_attempts(jsonb) from public;
revoke execute on function realtime.add_ws_audience(uuid[], integer[]) from public;
revoke execute on function realtime.prune(interval, integer) from public;
grant execute on function realtime.claim_webhook_deliveries(integer, integer, text[], interval) to service_role;
grant execute on function realtime.record_webhook_attempts(jsonb) to service_role;
grant execute on function realtime.add_ws_audience(uuid[], integer[]) to service_role;
grant execute on function realtime.prune(interval, integer) to service_role;

insert into realtime.schema_versions (version, name) values (3, 'webhooks')
on conflict (version) do nothing;
