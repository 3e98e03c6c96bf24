--! Previous: sha1:49e64e9a3cd0913a90989231057ab76b028b78dd
--! Hash: sha1:fc8c0c564cf855d371b9382aeb58450cc03b5182
--! Message: webhook backoff on network errors

-- realtimed 000006: a webhook attempt that got no HTTP status (connection
-- refused, reset, timeout) was retried at once instead of after the backoff:
-- "ok" was NULL for it, so the next attempt time was left as it was, and the
-- attempts ran out within seconds of a receiver going down. Now a network
-- error waits like a 5xx: 1 s, 2 s, 4 s, ... (realtime.config).
set local lock_timeout = '5s';

create or replace function realtime.record_webhook_attempts(results jsonb) returns integer
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
           coalesce(r.status between 200 and 299, false) as ok,
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

insert into realtime.schema_versions (version, name) values (6, 'webhook backoff on network errors')
on conflict (version) do nothing;
