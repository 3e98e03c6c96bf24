-- realtime.relay_frames(ids, after): the wire frame of each message
-- (realtime.event_frame), built once in SQL so the daemon writes the same text
-- to every subscriber, in the order of the ids asked. Its row_check flag is
-- tested in change_streams.sql.
begin;
select plan(5);

select has_function('realtime', 'relay_frames', array['uuid[]', 'pg_snapshot'], 'relay_frames exists');
select function_privs_are('realtime', 'relay_frames', array['uuid[]', 'pg_snapshot'], 'anon', array[]::text[], 'clients may not read frames');

-- Two user messages, written as the owner (the insert trigger trusts it with the sender).
insert into realtime.channels (pattern) values ('chat:%');
insert into realtime.messages (channel_name, event_name, payload, sender_type, sender_id)
values ('chat:7', 'message', '{"text": "hi"}', 'user', 'a11ce000-0000-4000-8000-000000000001'),
       ('chat:7', 'message', '{"text": "no key"}', 'user', 'a11ce000-0000-4000-8000-000000000001');

-- The wire frame, in the order asked, unknown ids skipped; read as the daemon.
set local role service_role;
select is((select count(*)::int from realtime.relay_frames(array[gen_random_uuid()])), 0, 'unknown ids give no frame');
select results_eq(
  $$select (f.frame::jsonb - 'meta') from realtime.relay_frames(array(select id from realtime.messages order by seq desc)) f$$,
  $$values ('{"type": "event", "channel": "chat:7", "event": "message", "payload": {"text": "no key"}}'::jsonb),
           ('{"type": "event", "channel": "chat:7", "event": "message", "payload": {"text": "hi"}}'::jsonb)$$,
  'frames come in the order of the ids given');
select results_eq(
  $$select (f.frame::jsonb -> 'meta') - 'timestamp', f.frame::jsonb -> 'meta' ->> 'timestamp' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$'
    from realtime.relay_frames(array(select id from realtime.messages order by seq limit 1)) f$$,
  $$select jsonb_build_object('messageId', m.id, 'seq', m.seq, 'senderType', 'user', 'senderId', m.sender_id), true
    from realtime.messages m order by m.seq limit 1$$,
  'meta carries messageId, seq, senderType, senderId and an ISO 8601 UTC timestamp');
reset role;

select * from finish();
rollback;
