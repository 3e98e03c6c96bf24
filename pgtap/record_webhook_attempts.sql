-- realtime.record_webhook_attempts(results): an attempt with no HTTP status
-- (connection refused, reset, timeout) waits the backoff before its retry,
-- like a 5xx, and counts toward webhook_max_attempts (before 000006 it was
-- retried at once). Statuses, Retry-After and the delivered count are in
-- webhooks.sql with the rest of the outbox.
begin;
select plan(6);

insert into realtime.channels (pattern, webhook_urls) values ('hook:%', array['http://127.0.0.1:9/down']);
update realtime.config set webhook_backoff_ms = 1000, webhook_max_attempts = 3;
select isnt(realtime.publish('hook:1', 'created', '{"n": 1}'), null, 'a system message with one webhook');

create temporary table claimed as select * from realtime.claim_webhook_deliveries(10, 5);
select is(realtime.record_webhook_attempts((select jsonb_agg(jsonb_build_object(
  'id', id, 'status', null, 'error', 'ECONNREFUSED', 'duration_ms', 1)) from claimed)), 1, 'a network error is recorded');
select results_eq($$select state, attempts, last_status, last_error from realtime.webhook_deliveries$$,
  $$values ('pending'::text, 1, null::integer, 'ECONNREFUSED'::text)$$, 'pending again, with the error');
select ok((select next_attempt_at - now() between interval '750 ms' and interval '1250 ms' from realtime.webhook_deliveries),
  'the retry waits the backoff (1 s, +/-25%), not zero');
select is_empty($$select * from realtime.claim_webhook_deliveries(10, 5)$$, 'so it is not claimed again at once');

-- The last allowed attempt fails for good, like a 5xx.
update realtime.webhook_deliveries set attempts = 2, next_attempt_at = now();
truncate claimed;
insert into claimed select * from realtime.claim_webhook_deliveries(10, 5);
select realtime.record_webhook_attempts((select jsonb_agg(jsonb_build_object('id', id, 'status', null, 'error', 'ECONNRESET', 'duration_ms', 1)) from claimed));
select results_eq($$select state, attempts from realtime.webhook_deliveries$$, $$values ('failed'::text, 3)$$,
  'after webhook_max_attempts it fails for good');

select * from finish();
rollback;
