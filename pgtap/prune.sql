-- realtime.prune(older_than, max_rows): retention. Whole partitions first
-- (realtime.maintain_partitions, see partitions.sql); then the rows written
-- before version 13, which live in partition messages_p0, old ones deleted in
-- batches, recording the highest seq deleted (realtime.config.pruned_through_seq,
-- returned by stream_info) so a replay from below it is known to be incomplete;
-- then what lives beside the messages, by age. What it keeps for webhooks
-- still due is in webhooks.sql.
begin;
select plan(8);

select is_definer('realtime', 'prune', array['interval', 'integer'], 'prune is SECURITY DEFINER (it deletes for its caller)');
select function_privs_are('realtime', 'prune', array['interval', 'integer'], 'service_role', array['EXECUTE'],
  'service_role (the daemon, pg_cron as the DBA chooses) may prune');

insert into realtime.channels (pattern) values ('c:%');
-- Rows from before version 13 (seq below the first partition of the new ones).
insert into realtime.messages (seq, channel_name, event_name, payload, created_at) values
  (1, 'c:1', 'e', '{"n": 1}', now() - interval '2 days'),
  (2, 'c:1', 'e', '{"n": 2}', now() - interval '2 days'),
  (3, 'c:2', 'e', '{"n": 3}', now());
select is((select count(*)::int from realtime.messages_p0), 3, 'they are in messages_p0');
select is(realtime.prune(), 2::bigint, 'prune deletes its two old rows');
select is((select pruned_through_seq from realtime.stream_info()), 2::bigint, 'and records the highest seq it deleted');

-- Beside the messages: dedupe keys and audience reports go by age.
insert into realtime.message_dedupe (channel_name, sender_key, dedupe_key, message_id, message_seq, created_at) values
  ('c:1', 'system', 'old', gen_random_uuid(), 1, now() - interval '2 days'),
  ('c:1', 'system', 'new', gen_random_uuid(), 3, now());
insert into realtime.message_audience (reported_at, seq_min, seq_max, channel_names, seqs, counts) values
  (now() - interval '2 days', 1, 1, '{c:1}', '{1}', '{1}'), (now(), 3, 3, '{c:2}', '{3}', '{2}');
select realtime.prune();
select results_eq($$select dedupe_key from realtime.message_dedupe$$, $$values ('new'::text)$$, 'old dedupe keys go');
select results_eq($$select seqs from realtime.message_audience$$, $$values ('{3}'::bigint[])$$, 'old audience reports go');
select is(realtime.prune(interval '1 year'), 0::bigint, 'nothing is older than a year');

select * from finish();
rollback;
