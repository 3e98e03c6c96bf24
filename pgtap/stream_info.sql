-- realtime.stream_info(): the stream epoch (realtime.config.epoch, the
-- database and the WAL timeline), the highest seq allocated, and how far
-- realtime.prune() went (tested in prune.sql).
begin;
select plan(5);

select function_privs_are('realtime', 'stream_info', array[]::text[], 'service_role', array['EXECUTE'], 'the daemon reads the epoch');
select is_definer('realtime', 'stream_info', array[]::text[], 'stream_info reads the sequence as the owner');

insert into realtime.channels (pattern) values ('c:%');
select realtime.publish('c:1', 'e', '{"n": 1}');
select realtime.publish('c:2', 'e', '{"n": 2}');
select matches((select epoch from realtime.stream_info()), '^[0-9a-f]{16}$', 'the epoch is 16 hex digits');
select is((select max_seq from realtime.stream_info()), (select max(seq) from realtime.messages), 'max_seq is the last seq allocated');
create temporary table epochs as select epoch from realtime.stream_info();
update realtime.config set epoch = gen_random_uuid()::text;
select isnt((select epoch from realtime.stream_info()), (select epoch from epochs), 'a new realtime.config.epoch is a new stream epoch');

select * from finish();
rollback;
