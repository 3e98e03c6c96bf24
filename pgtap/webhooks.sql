-- The webhook outbox, claims, attempt records, statistics, immutability,
-- the views and retention (000003).
begin;
select plan(55);
set local client_min_messages = error;

-- Structure and grants.
select columns_are('realtime', 'webhook_deliveries', array['id', 'message_id', 'url', 'state', 'attempts',
  'next_attempt_at', 'locked_until', 'last_status', 'last_error', 'delivered_at', 'created_at', 'channel_name', 'message_seq']);
select hasnt_fk('realtime', 'webhook_deliveries', 'a delivery finds its message by channel and seq, no foreign key (partitions drop whole)');
select col_is_unique('realtime', 'webhook_deliveries', array['message_id', 'url'], 'one delivery per (message, url)');
select indexes_are('realtime', 'webhook_deliveries', array['webhook_deliveries_pkey', 'webhook_deliveries_message_id_url_key',
  'webhook_deliveries_due_idx', 'webhook_deliveries_leased_idx', 'webhook_deliveries_message_seq_idx']);
select columns_are('realtime', 'webhook_attempts', array['id', 'delivery_id', 'attempt', 'status', 'error', 'duration_ms', 'attempted_at']);
select fk_ok('realtime', 'webhook_attempts', 'delivery_id', 'realtime', 'webhook_deliveries', 'id', 'attempts belong to a delivery');
select triggers_are('realtime', 'messages', array['messages_before_insert',
  'messages_enqueue_webhooks', 'messages_before_update']);
select table_privs_are('realtime', 'webhook_deliveries', 'service_role', array['SELECT']);
select table_privs_are('realtime', 'webhook_deliveries', 'authenticated', array[]::text[]);
select table_privs_are('realtime', 'webhook_attempts', 'anon', array[]::text[]);
select table_privs_are('realtime', 'channel_stats', 'service_role', array['SELECT']);
select table_privs_are('realtime', 'channel_stats', 'authenticated', array[]::text[]);
select table_privs_are('realtime', 'webhook_failures', 'service_role', array['SELECT']);
select policies_are('realtime', 'webhook_deliveries', array['webhook_deliveries_service_role_select']);
select function_privs_are('realtime', 'claim_webhook_deliveries', array['integer', 'integer', 'text[]', 'interval'],
  'service_role', array['EXECUTE'], 'the daemon claims');
select function_privs_are('realtime', 'record_webhook_attempts', array['jsonb'], 'authenticated', array[]::text[],
  'clients may not record attempts');
select function_privs_are('realtime', 'prune', array['interval', 'integer'], 'service_role', array['EXECUTE'], 'service_role may prune');
select function_privs_are('realtime', 'prune', array['interval', 'integer'], 'anon', array[]::text[], 'clients may not');
select is_definer('realtime', 'claim_webhook_deliveries', array['integer', 'integer', 'text[]', 'interval'], 'claims run as the owner');

-- The outbox is written with the message, for system messages on channels with URLs.
insert into realtime.channels (pattern, webhook_urls) values
  ('hook:%', array['http://127.0.0.1:9/a', 'http://127.0.0.1:9/b']), ('plain', '{}');
create policy anyone_publishes on realtime.messages for insert to authenticated with check (true);
select realtime.publish('hook:1', 'created', '{"n": 1}');
select realtime.publish('plain', 'created', '{}');
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
insert into realtime.messages (channel_name, event_name, payload) values ('hook:2', 'said', '{}');
reset role;
select results_eq($$select m.channel_name, m.sender_type, m.wh_audience_count from realtime.messages m order by m.seq$$,
  $$values ('hook:1'::text, 'system'::text, 2), ('plain', 'system', 0), ('hook:2', 'user', 0)$$,
  'wh_audience_count is the URL count for system messages, 0 for user messages');
select results_eq($$select m.channel_name, d.url, d.state, d.attempts from realtime.webhook_deliveries d
                    join realtime.messages m on m.id = d.message_id order by d.url$$,
  $$values ('hook:1'::text, 'http://127.0.0.1:9/a'::text, 'pending'::text, 0), ('hook:1', 'http://127.0.0.1:9/b', 'pending', 0)$$,
  'one pending delivery per URL, for the system message only (user messages are never webhooked)');

-- Claims: SKIP LOCKED, per-URL cap, busy URLs, the body.
create temporary table claimed as select * from realtime.claim_webhook_deliveries(10, 5, array['http://127.0.0.1:9/b']);
select results_eq('select url, attempt from claimed', $$values ('http://127.0.0.1:9/a'::text, 1)$$,
  'a busy URL is skipped');
select is((select body::jsonb - 'createdAt' from claimed),
  (select jsonb_build_object('id', id, 'channel', 'hook:1', 'event', 'created', 'payload', '{"n": 1}'::jsonb)
   from realtime.messages where channel_name = 'hook:1'), 'the body is the {id, channel, event, payload, createdAt} envelope');
select ok((select body::jsonb ->> 'createdAt' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' from claimed), 'createdAt is ISO 8601 UTC');
select results_eq($$select url, state from realtime.webhook_deliveries order by url$$,
  $$values ('http://127.0.0.1:9/a'::text, 'delivering'::text), ('http://127.0.0.1:9/b', 'pending')$$, 'the claimed row is delivering');
select is_empty($$select * from realtime.claim_webhook_deliveries(10, 5, array['http://127.0.0.1:9/b'])$$,
  'a delivering row is not claimed twice');
select results_eq($$select url from realtime.claim_webhook_deliveries(10, 5)$$, $$values ('http://127.0.0.1:9/b'::text)$$,
  'the other URL is claimed once it is not busy');

-- Outcomes: 500 then retry with backoff; 200 delivered (+1 wh_delivered_count); 404 failed at once.
update realtime.config set webhook_backoff_ms = 1000, webhook_max_attempts = 3;
select is(realtime.record_webhook_attempts((select jsonb_agg(x) from (
  select d.id, case when d.url like '%/a' then 500 else 200 end as status, 'x' as error, 5 as duration_ms
  from realtime.webhook_deliveries d) x)), 2, 'two attempts recorded');
select results_eq($$select url, state, attempts, last_status from realtime.webhook_deliveries order by url$$,
  $$values ('http://127.0.0.1:9/a'::text, 'pending'::text, 1, 500), ('http://127.0.0.1:9/b', 'delivered', 1, 200)$$,
  '500: pending again; 200: delivered');
select ok((select next_attempt_at - now() between interval '750 ms' and interval '1250 ms'
           from realtime.webhook_deliveries where url like '%/a'), 'the first retry waits 1 s, +/-25%');
select is((select wh_delivered_count from realtime.message_stats where channel_name = 'hook:1'), 1, 'message_stats: wh_delivered_count 1');
select is(realtime.record_webhook_attempts((select jsonb_agg(x) from (
  select d.id, 200 as status from realtime.webhook_deliveries d where d.url like '%/b') x)), 0,
  'an attempt for a row no longer claimed is ignored (no double count)');
select is((select count(*)::int from realtime.webhook_attempts), 2, 'one attempt row per recorded attempt');

update realtime.webhook_deliveries set next_attempt_at = now() where url like '%/a';
select results_eq($$select attempt from realtime.claim_webhook_deliveries(10, 5)$$, 'values (2)', 'the retry is claimed as attempt 2');
select realtime.record_webhook_attempts((select jsonb_agg(x) from (
  select d.id, 429 as status, 3000 as retry_after_ms from realtime.webhook_deliveries d where d.url like '%/a') x));
select ok((select next_attempt_at - now() = interval '3 seconds' from realtime.webhook_deliveries where url like '%/a'),
  '429 with Retry-After: the retry waits exactly that long');
update realtime.webhook_deliveries set next_attempt_at = now() where url like '%/a';
select is((select count(*)::int from realtime.claim_webhook_deliveries(10, 5)), 1, 'attempt 3 claimed');
select realtime.record_webhook_attempts((select jsonb_agg(x) from (
  select d.id, null::int as status, 'ECONNREFUSED' as error from realtime.webhook_deliveries d where d.url like '%/a') x));
select results_eq($$select state, attempts, last_error from realtime.webhook_deliveries where url like '%/a'$$,
  $$values ('failed'::text, 3, 'ECONNREFUSED'::text)$$, 'after webhook_max_attempts it fails for good');

select realtime.publish('hook:3', 'created', '{}');
select is((select count(*)::int from realtime.claim_webhook_deliveries(10, 5)), 2, 'a new message: two claims');
select realtime.record_webhook_attempts((select jsonb_agg(x) from (
  select d.id, 404 as status from realtime.webhook_deliveries d where d.state = 'delivering') x));
select is((select count(*)::int from realtime.webhook_deliveries where state = 'failed' and attempts = 1), 2,
  '404 fails at once, no retry');

-- A lease that ran out (the instance died) is claimed again.
select realtime.publish('hook:4', 'created', '{}');
select is((select count(*)::int from realtime.claim_webhook_deliveries(10, 5, '{}', interval '1 hour')), 2, 'claimed for an hour');
update realtime.webhook_deliveries set locked_until = now() - interval '1 second' where state = 'delivering';
select is((select count(*)::int from realtime.claim_webhook_deliveries(10, 5)), 2, 'after the lease, claimed again');
select is((select sum(attempts)::int from realtime.webhook_deliveries w join realtime.messages m on m.id = w.message_id
           where m.channel_name = 'hook:4'), 4, 'counting both attempts');

-- Per-URL cap.
select realtime.publish('hook:5', 'e', '{}'), realtime.publish('hook:6', 'e', '{}'), realtime.publish('hook:7', 'e', '{}');
select results_eq($$select url, count(*)::int from realtime.claim_webhook_deliveries(100, 2) group by url order by url$$,
  $$values ('http://127.0.0.1:9/a'::text, 2), ('http://127.0.0.1:9/b', 2)$$, 'at most per_url rows per URL in one claim');

-- Statistics: reported beside the message, which is never rewritten.
select is(realtime.record_ws_audience(array['hook:1', 'plain'],
                                      array[(select seq from realtime.messages where channel_name = 'hook:1'),
                                            (select seq from realtime.messages where channel_name = 'plain')], array[3, 4]),
  2, 'record_ws_audience counts both messages, in one row');
select realtime.record_ws_audience(array['hook:1'], array(select seq from realtime.messages where channel_name = 'hook:1'), array[2]);
select is((select ws_audience_count from realtime.message_stats where channel_name = 'hook:1'), 5, 'reports add up (3 + 2)');
select is((select count(*)::int from realtime.message_audience), 2, 'one row per report');
select is(realtime.add_ws_audience(array(select id from realtime.messages where channel_name = 'hook:1'), array[9]), 0,
  'the call of older daemons counts nothing');
select throws_ok($$update realtime.messages set payload = '{"changed": true}' where channel_name = 'plain'$$, 'RT405', null, 'the payload cannot change');
select throws_ok($$update realtime.messages set ws_audience_count = 0 where channel_name = 'hook:1'$$, 'RT405', null, 'nor any count');
select throws_ok($$update realtime.messages set channel_id = (select id from realtime.channels where pattern = 'plain') where channel_name = 'hook:1'$$,
  'RT405', null, 'a message keeps its channel');

-- The views.
select results_eq($$select pattern, messages_total::int, messages_last_hour::int, webhook_success_rate from realtime.channel_stats order by pattern$$,
  $$values ('hook:%'::text, 7, 7, 0.2500::numeric), ('plain', 1, 1, null)$$,
  'channel_stats: messages and the webhook success rate (1 delivered of 4 finished)');
select is((select count(*)::int from realtime.webhook_failures where state = 'failed'), 3, 'webhook_failures lists the failed ones');

-- Retention: a partition stays while a webhook of it is due; finished deliveries go by age.
update realtime.webhook_deliveries set state = 'pending', locked_until = null where state = 'delivering';
update realtime.message_partitions set opened_at = now() - interval '2 days' where opened_at is not null and closed_at is null;
select realtime.maintain_partitions();
update realtime.message_partitions set closed_at = now() - interval '2 days' where closed_at is not null;
update realtime.webhook_deliveries set created_at = now() - interval '2 days';
select realtime.prune();
select is((select count(*)::int from realtime.messages), 8, 'a partition with pending webhooks is kept, whole');
select is((select count(*)::int from realtime.webhook_deliveries where state in ('delivered', 'failed')), 0,
  'finished deliveries older than the retention went');
update realtime.webhook_deliveries set state = 'failed';
select realtime.prune();
select is((select count(*)::int from realtime.messages), 0, 'once they finished, the partition is dropped');

select * from finish();
rollback;
