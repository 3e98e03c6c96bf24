-- realtime.relay_frames(ids, after) and realtime.replay_relay_frames(channel,
-- since, max_count): the wire frame of each message (realtime.event_frame),
-- built once in SQL so the daemon writes the same text to every subscriber.
-- Live: in the order of the ids asked, skipping messages behind the daemon's
-- watermark. Replay: seq > since, in seq order. Their row_check flag is tested
-- in change_streams.sql.
begin;
select plan(13);

select has_function('realtime', 'relay_frames', array['uuid[]', 'pg_snapshot'], 'relay_frames exists');
select function_privs_are('realtime', 'relay_frames', array['uuid[]', 'pg_snapshot'], 'anon', array[]::text[], 'clients may not read frames');
select has_function('realtime', 'replay_relay_frames', array['text', 'bigint', 'integer'], 'replay_relay_frames exists');
select function_privs_are('realtime', 'replay_relay_frames', array['text', 'bigint', 'integer'], 'authenticated', array[]::text[],
  'clients may not read replays directly (the daemon checks can_subscribe first)');

-- Two messages, written as the owner (a role that may publish: system messages).
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
  $$select jsonb_build_object('messageId', m.id, 'seq', m.seq, 'senderType', m.sender_type, 'senderId', m.sender_id), true
    from realtime.messages m order by m.seq limit 1$$,
  'meta carries messageId, seq, senderType, senderId and an ISO 8601 UTC timestamp');
reset role;

-- The daemon's watermark: messages whose transaction is visible in `after`
-- were handled before, however often their id is notified again.
create temporary table snaps as
  select format('%s:%s:', x, x)::pg_snapshot as before,
         format('%s:%s:', x + 1, x + 1)::pg_snapshot as after
  from (select pg_current_xact_id()::text::bigint as x) t;
grant select on snaps to public;
set local role service_role;
select is_empty($$select * from realtime.relay_frames(array(select id from realtime.messages), (select after from snaps))$$,
  'relay_frames skips messages already behind the watermark (a repeated or forged notification)');
select is((select count(*)::int from realtime.relay_frames(array(select id from realtime.messages), (select before from snaps))), 2,
  'and relays those ahead of it');
reset role;

-- replay_relay_frames: seq > since, one channel, in order, bounded.
insert into realtime.channels (pattern) values ('c:%');
select realtime.publish('c:1', 'e', '{"n": 1}');
select realtime.publish('c:1', 'e', '{"n": 2}');
select realtime.publish('c:2', 'e', '{"n": 3}');
set local role service_role;
select results_eq($$select (frame::jsonb -> 'payload' ->> 'n') from realtime.replay_relay_frames('c:1', 0, 10)$$,
  $$values ('1'::text), ('2')$$, 'replay from 0: the channel''s messages in seq order');
select results_eq($$select (frame::jsonb -> 'payload' ->> 'n') from realtime.replay_relay_frames('c:1',
  (select min(seq) from realtime.messages where channel_name = 'c:1'), 10)$$, $$values ('2'::text)$$, 'replay from a seq: only later ones');
select is((select count(*)::int from realtime.replay_relay_frames('c:1', 0, 1)), 1, 'at most max_count');
select is((select frame from realtime.replay_relay_frames('c:2', 0, 1)),
  (select f.frame from realtime.relay_frames(array(select id from realtime.messages where channel_name = 'c:2')) f),
  'a replayed frame is the same text as the live one');
reset role;

select * from finish();
rollback;
