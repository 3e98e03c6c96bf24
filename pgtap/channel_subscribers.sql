-- 000010: subscriber counts per channel and instance, so max_subscribers holds
-- across instances.
begin;
select plan(10);

select has_table('realtime', 'channel_subscribers', 'realtime.channel_subscribers exists');
select is((select relpersistence from pg_class where oid = 'realtime.channel_subscribers'::regclass), 'u',
  'UNLOGGED: counts of live sockets');
select fk_ok('realtime', 'channel_subscribers', 'instance_id', 'realtime', 'instances', 'id');
select table_privs_are('realtime', 'channel_subscribers', 'authenticated', array[]::text[], 'clients cannot see counts');
select function_privs_are('realtime', 'report_subscribers', array['uuid', 'text[]', 'integer[]'], 'service_role', array['EXECUTE'],
  'the daemon reports');

insert into realtime.channels (pattern, max_subscribers) values ('room:%', 5), ('open:%', null);
create policy rt_test_rooms on realtime.channels for select to anon using (true);
select realtime.instance_heartbeat('00000000-0000-4000-8000-000000000001', '15 seconds');
select realtime.instance_heartbeat('00000000-0000-4000-8000-000000000002', '15 seconds');
select realtime.report_subscribers('00000000-0000-4000-8000-000000000001', '{room:1,room:2}', '{2,1}');
select realtime.report_subscribers('00000000-0000-4000-8000-000000000002', '{room:1}', '{3}');
select results_eq($$select other_subscribers, max_subscribers
                    from realtime.authorize_subscription('anon', '{}', 'room:1', '00000000-0000-4000-8000-000000000001')$$,
  $$values (3, 5)$$, 'the first instance is told the second holds 3');
select results_eq($$select other_subscribers from realtime.authorize_subscription('anon', '{}', 'open:1', '00000000-0000-4000-8000-000000000001')$$,
  $$values (0)$$, 'a channel without max_subscribers is not counted');
select realtime.report_subscribers('00000000-0000-4000-8000-000000000001', '{room:2}', '{1}');
select results_eq($$select channel_name, subscribers from realtime.channel_subscribers
                    where instance_id = '00000000-0000-4000-8000-000000000001'$$,
  $$values ('room:2', 1)$$, 'a report replaces the instance''s previous one');
select realtime.instance_stop('00000000-0000-4000-8000-000000000002');
select is_empty($$select from realtime.channel_subscribers where instance_id = '00000000-0000-4000-8000-000000000002'$$,
  'an instance''s counts go with it');
select is(current_setting('role'), 'none', 'authorize_subscription ends as the daemon');

select * from finish();
rollback;
