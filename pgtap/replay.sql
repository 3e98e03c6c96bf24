-- Gap recovery and replay (000004): committed_between compares snapshots,
-- not seqs; replay_frames; stream_info; prune's watermark.
begin;
select plan(18);

select has_index('realtime', 'messages', 'messages_xact_id_idx', 'messages are indexed by transaction');
select function_privs_are('realtime', 'committed_between', array['pg_snapshot', 'pg_snapshot'], 'service_role', array['EXECUTE'],
  'the daemon may look for gaps');
select function_privs_are('realtime', 'replay_frames', array['text', 'bigint', 'integer'], 'authenticated', array[]::text[],
  'clients may not read replays directly (the daemon checks can_subscribe first)');
select function_privs_are('realtime', 'stream_info', array[]::text[], 'service_role', array['EXECUTE'], 'the daemon reads the epoch');
select is_definer('realtime', 'stream_info', array[]::text[], 'stream_info reads the sequence as the owner');

insert into realtime.channels (pattern) values ('c:%');
-- Snapshots as other sessions see this transaction: not started yet, in
-- progress (its xid in xip), committed.
select realtime.publish('c:1', 'e', '{"n": 1}');
select realtime.publish('c:1', 'e', '{"n": 2}');
select realtime.publish('c:2', 'e', '{"n": 3}');
create temporary table snaps as
  select x, format('%s:%s:', x, x)::pg_snapshot as before,
         format('%s:%s:%s', x, x + 1, x)::pg_snapshot as running,
         format('%s:%s:', x + 1, x + 1)::pg_snapshot as after
  from (select pg_current_xact_id()::text::bigint as x) t;
select is_empty($$select * from realtime.committed_between((select before from snaps), (select running from snaps))$$,
  'messages of a transaction still in progress are not "committed between"');
select results_eq($$select c.channel_name, (select payload->>'n' from realtime.messages m where m.id = c.id)
                    from realtime.committed_between((select before from snaps), (select after from snaps)) c$$,
  $$values ('c:1'::text, '1'::text), ('c:1', '2'), ('c:2', '3')$$, 'once committed, they are found, in seq order');
select is_empty($$select * from realtime.committed_between((select running from snaps), (select running from snaps))$$,
  'nothing between a snapshot and itself');

select is_empty($$select * from realtime.event_frames(array(select id from realtime.messages), (select after from snaps))$$,
  'event_frames skips messages already behind the watermark (a repeated or forged notification)');

-- replay_frames: seq > since, one channel, in order, bounded.
select results_eq($$select (frame::jsonb -> 'payload' ->> 'n') from realtime.replay_frames('c:1', 0, 10)$$,
  $$values ('1'::text), ('2')$$, 'replay from 0: the channel''s messages in seq order');
select results_eq($$select (frame::jsonb -> 'payload' ->> 'n') from realtime.replay_frames('c:1',
  (select min(seq) from realtime.messages where channel_name = 'c:1'), 10)$$, $$values ('2'::text)$$, 'replay from a seq: only later ones');
select is((select count(*)::int from realtime.replay_frames('c:1', 0, 1)), 1, 'at most max_count');
select is((select frame from realtime.replay_frames('c:2', 0, 1)),
  (select f.frame from realtime.event_frames(array(select id from realtime.messages where channel_name = 'c:2')) f),
  'a replayed frame is the same text as the live one');

-- stream_info: epoch, max seq, prune watermark.
select matches((select epoch from realtime.stream_info()), '^[0-9a-f]{16}$', 'the epoch is 16 hex digits');
select is((select max_seq from realtime.stream_info()), (select max(seq) from realtime.messages), 'max_seq is the last seq allocated');
create temporary table epochs as select epoch from realtime.stream_info();
update realtime.config set epoch = gen_random_uuid()::text;
select isnt((select epoch from realtime.stream_info()), (select epoch from epochs), 'a new realtime.config.epoch is a new stream epoch');
alter table realtime.messages disable trigger messages_before_update;
update realtime.messages set created_at = now() - interval '2 days' where channel_name = 'c:1';
alter table realtime.messages enable trigger messages_before_update;
select is(realtime.prune(), 2::bigint, 'prune deletes the two old messages');
select is((select pruned_through_seq from realtime.stream_info()),
  (select max(seq) from realtime.messages) - 1, 'and records the highest seq it deleted');

select * from finish();
rollback;
