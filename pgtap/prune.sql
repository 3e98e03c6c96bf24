-- realtime.prune(older_than, max_rows): retention. Deletes old messages and
-- records the highest seq it deleted (realtime.config.pruned_through_seq,
-- returned by stream_info), so a replay from below it is known to be
-- incomplete. What it keeps for webhooks still due is in webhooks.sql.
begin;
select plan(4);

select is_definer('realtime', 'prune', array['interval', 'integer'], 'prune is SECURITY DEFINER (it deletes for its caller)');
select function_privs_are('realtime', 'prune', array['interval', 'integer'], 'service_role', array['EXECUTE'],
  'service_role (the daemon, pg_cron as the DBA chooses) may prune');

insert into realtime.channels (pattern) values ('c:%');
select realtime.publish('c:1', 'e', '{"n": 1}');
select realtime.publish('c:1', 'e', '{"n": 2}');
select realtime.publish('c:2', 'e', '{"n": 3}');
alter table realtime.messages disable trigger messages_before_update;
update realtime.messages set created_at = now() - interval '2 days' where channel_name = 'c:1';
alter table realtime.messages enable trigger messages_before_update;
select is(realtime.prune(), 2::bigint, 'prune deletes the two old messages');
select is((select pruned_through_seq from realtime.stream_info()),
  (select max(seq) from realtime.messages) - 1, 'and records the highest seq it deleted');

select * from finish();
rollback;
