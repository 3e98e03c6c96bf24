-- 000008: instances, presence and ephemeral messages.
begin;
select plan(31);

select has_table('realtime', 'instances', 'realtime.instances exists');
select has_table('realtime', 'presence', 'realtime.presence exists');
select is((select relpersistence from pg_class where oid = 'realtime.presence'::regclass), 'u',
  'presence is UNLOGGED: it dies with the connections on a database crash');
select col_is_pk('realtime', 'presence', array['channel_name', 'connection_id'], 'one row per channel and socket');
select fk_ok('realtime', 'presence', 'instance_id', 'realtime', 'instances', 'id');
select table_privs_are('realtime', 'presence', 'anon', array[]::text[], 'clients cannot touch presence');
select table_privs_are('realtime', 'notify_key', 'authenticated', array[]::text[], 'clients cannot read the notify key');
select table_privs_are('realtime', 'notify_key', 'service_role', array['SELECT'], 'the daemon can read the notify key');
select ok((select length(key) >= 64 from realtime.notify_key), 'the notify key is long and random');
select policies_are('realtime', 'presence', array['presence_service_role_all']);
select function_privs_are('realtime', 'presence_track', array['uuid', 'uuid', 'text', 'jsonb', 'text', 'jsonb', 'integer', 'integer'],
  'authenticated', array[]::text[], 'clients cannot call presence_track');
select function_privs_are('realtime', 'send_ephemeral', array['text', 'jsonb', 'text', 'text', 'text'],
  'service_role', array['EXECUTE'], 'the daemon can call send_ephemeral');

-- A room anyone may join; presence is authorized like a publish of event "presence".
insert into realtime.channels (pattern) values ('room:%'), ('quiet:%');
create policy rt_test_rooms on realtime.channels for select to anon, authenticated using (true);
create policy rt_test_room_insert on realtime.messages for insert to anon, authenticated
  with check (realtime.channel_name() like 'room:%');

select results_eq($$select registered from realtime.instance_heartbeat('00000000-0000-4000-8000-000000000001', '15 seconds')$$,
  $$values (true)$$, 'the first heartbeat registers the instance');
select results_eq($$select registered from realtime.instance_heartbeat('00000000-0000-4000-8000-000000000001', '15 seconds')$$,
  $$values (false)$$, 'later ones refresh it');

select is(realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a1',
  'authenticated', '{"sub": "u1"}', 'room:1', '{"tab": 1}', 2, 100), 'u1', 'the member key is the sub');
select is(realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a2',
  'authenticated', '{"sub": "u1"}', 'room:1', '{"tab": 2}', 2, 100), 'u1', 'a second tab of the same user');
select is(realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a3',
  'anon', '{}', 'room:1', '{"anon": true}', 2, 100), 'conn:00000000-0000-4000-8000-0000000000a3',
  'without a sub, the socket is the member');
-- (One transaction here: make the first tab's state the older one, as separate statements would.)
update realtime.presence set updated_at = updated_at - interval '1 second'
where connection_id = '00000000-0000-4000-8000-0000000000a1';
select results_eq($$select member_key, state, connections from realtime.presence_members('{room:1}') order by member_key$$,
  $$values ('conn:00000000-0000-4000-8000-0000000000a3', '{"anon": true}'::jsonb, 1),
           ('u1', '{"tab": 2}'::jsonb, 2)$$,
  'three tabs, two members; a member has the state of its latest socket');
select throws_ok($$select realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a4',
  'authenticated', '{"sub": "u2"}', 'room:1', '{}', 2, 100)$$, 'RT429', null, 'a new member over max_members: RT429');
select lives_ok($$select realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a1',
  'authenticated', '{"sub": "u1"}', 'room:1', '{"tab": 1, "typing": true}', 2, 100)$$,
  'an existing member may update its state at the limit');
select throws_ok($$select realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a1',
  'authenticated', '{"sub": "u1"}', 'room:1', jsonb_build_object('x', repeat('x', 200)), 2, 100)$$, 'RT413', null,
  'a state over max_state_bytes: RT413');
select throws_ok($$select realtime.presence_track('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a1',
  'authenticated', '{"sub": "u1"}', 'quiet:1', '{}', 2, 100)$$, '42501', null,
  'denied by the INSERT policies: 42501');
select is(current_setting('role'), 'none', 'presence_track ends as the daemon');

select is(realtime.presence_untrack('00000000-0000-4000-8000-0000000000a2'), 1, 'a closed tab leaves');
select results_eq($$select member_key from realtime.presence_members('{room:1}') where member_key = 'u1'$$,
  $$values ('u1')$$, 'the user is still a member through its other tab');

-- A crashed instance: silent past the timeout, removed by another's heartbeat.
select realtime.instance_heartbeat('00000000-0000-4000-8000-000000000002', '15 seconds');
select realtime.presence_track('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000b1',
  'authenticated', '{"sub": "u9"}', 'room:2', '{}', 10, 100);
update realtime.instances set heartbeat_at = now() - interval '1 minute' where id = '00000000-0000-4000-8000-000000000002';
select results_eq($$select removed_instances from realtime.instance_heartbeat('00000000-0000-4000-8000-000000000001', '15 seconds')$$,
  $$values (1)$$, 'a heartbeat removes the silent instance');
select is_empty($$select * from realtime.presence_members('{room:2}')$$, 'and its members with it');
select realtime.instance_stop('00000000-0000-4000-8000-000000000001');
select is_empty($$select * from realtime.presence where instance_id = '00000000-0000-4000-8000-000000000001'$$,
  'instance_stop removes the instance''s presence');

-- Ephemeral: the INSERT policies decide, nothing is stored.
select lives_ok($$select realtime.send_ephemeral('anon', '{}', 'room:1', 'typing', '{"v":1}')$$,
  'an allowed ephemeral message is notified');
select throws_ok($$select realtime.send_ephemeral('anon', '{}', 'quiet:1', 'typing', '{"v":1}')$$, '42501', null,
  'a denied one: 42501');
select is((select count(*)::int from realtime.messages where channel_name like 'room:%'), 0,
  'ephemeral messages are never stored');

select * from finish();
rollback;
