-- The partitions of realtime.messages (000013): realtime.message_partitions,
-- realtime.maintain_partitions() and realtime.create_message_partition().
-- Partitions are ranges of 2^32 seqs; the open one takes new messages for
-- partition_span, then the sequence moves to the next; two empty ones wait
-- ahead; a partition closed longer ago than the retention is dropped whole.
begin;
select plan(27);

select has_table('realtime', 'message_partitions', 'realtime.message_partitions exists');
select columns_are('realtime', 'message_partitions', array['seq_from', 'seq_to', 'table_name', 'opened_at', 'closed_at']);
select col_is_pk('realtime', 'message_partitions', 'seq_from', 'a partition is known by its first seq');
select table_privs_are('realtime', 'message_partitions', 'service_role', array['SELECT']);
select table_privs_are('realtime', 'message_partitions', 'authenticated', array[]::text[]);
select is_definer('realtime', 'maintain_partitions', array[]::text[], 'maintain_partitions is SECURITY DEFINER (it creates and drops tables)');
select function_privs_are('realtime', 'maintain_partitions', array[]::text[], 'service_role', array['EXECUTE'], 'the daemon keeps the partitions');
select function_privs_are('realtime', 'maintain_partitions', array[]::text[], 'authenticated', array[]::text[], 'clients may not');
select function_privs_are('realtime', 'create_message_partition', array['bigint'], 'service_role', array[]::text[],
  'create_message_partition is maintain_partitions'' alone');

-- As installed: the partition of the rows before version 13, closed; the open one; two ahead.
select results_eq($$select table_name, seq_from, opened_at is not null, closed_at is not null
                    from realtime.message_partitions order by seq_from$$,
  $$values ('messages_p0'::text, '-9223372036854775808'::bigint, false, true), ('messages_p1', 4294967296, true, false),
           ('messages_p2', 8589934592, false, false), ('messages_p3', 12884901888, false, false)$$,
  'messages_p0 (closed), messages_p1 (open), messages_p2 and messages_p3 ahead');
select results_eq($$select c.relname::text collate "default", c.relrowsecurity, not exists (select from aclexplode(c.relacl) a where a.grantee <> c.relowner) from pg_inherits i
                    join pg_class c on c.oid = i.inhrelid where i.inhparent = 'realtime.messages'::regclass order by 1$$,
  $$values ('messages_p0'::text, true, true), ('messages_p1', true, true), ('messages_p2', true, true), ('messages_p3', true, true)$$,
  'each is attached, with row-level security on and no grants: read through realtime.messages');
select is((select count(*)::int from pg_index x join pg_class c on c.oid = x.indrelid
           where c.relname = 'messages_p1' and c.relnamespace = 'realtime'::regnamespace), 3,
  'a partition has the table''s three indexes');

insert into realtime.channels (pattern) values ('c:%');
select realtime.publish('c:1', 'first', '{}');
select is((select tableoid::regclass::text from realtime.messages where event_name = 'first'), 'realtime.messages_p1',
  'a new message goes to the open partition');
select is(realtime.maintain_partitions(), '', 'nothing to do while nothing is due');

-- partition_span has passed: the next partition opens, another is made ahead.
update realtime.message_partitions set opened_at = now() - interval '25 hours' where table_name = 'messages_p1';
select is(realtime.maintain_partitions(), 'rolled to messages_p2; created messages_p4', 'after partition_span the next one opens');
select realtime.publish('c:1', 'second', '{}');
select is((select tableoid::regclass::text from realtime.messages where event_name = 'second'), 'realtime.messages_p2',
  'new messages go there');
select is((select seq from realtime.messages where event_name = 'second'), 8589934592::bigint,
  'its first seq: the sequence moved to the partition''s start');
select ok((select closed_at is not null from realtime.message_partitions where table_name = 'messages_p1'),
  'the rolled one is closed');
select ok((select seq from realtime.messages where event_name = 'first') between 4294967296 and 8589934591,
  'seq keeps increasing across partitions');

-- The retention has passed since it closed: dropped whole, unless a webhook of it is due.
update realtime.channels set webhook_urls = '{http://127.0.0.1:9/x}';
update realtime.message_partitions set opened_at = now() - interval '25 hours' where table_name = 'messages_p2';
insert into realtime.messages (seq, channel_name, event_name) values (4294967297, 'c:1', 'hooked');
update realtime.message_partitions set closed_at = now() - interval '25 hours' where table_name in ('messages_p0', 'messages_p1');
select is(realtime.maintain_partitions(), 'rolled to messages_p3; created messages_p5; dropped messages_p0',
  'messages_p1 is kept while its webhook is due (messages_p0, empty, goes)');
update realtime.webhook_deliveries set state = 'delivered';
select is(realtime.maintain_partitions(), 'dropped messages_p1', 'once it finished, messages_p1 is dropped');
select hasnt_table('realtime', 'messages_p1', 'the table is gone');
select is((select pruned_through_seq from realtime.stream_info()), 8589934591::bigint,
  'pruned_through_seq: the last seq of the dropped range (a replay from below it is incomplete)');
select results_eq($$select event_name from realtime.messages$$, $$values ('second'::text)$$, 'the newer messages stay');

-- The sequence ran past a range on its own (no roll): the partition it left is closed.
select setval('realtime.messages_seq_seq', 17179869184 + 5);
select realtime.maintain_partitions();
select ok((select closed_at is not null from realtime.message_partitions where table_name = 'messages_p3'),
  'a partition the sequence left is closed, so retention can drop it');
select is((select count(*)::int from realtime.message_partitions where seq_from > 17179869184 and opened_at is null), 2,
  'and two are ahead of the open one again');

-- Another role cannot hold the maintainer's lock.
set local role authenticated;
select throws_ok($$lock table realtime.message_partitions in share row exclusive mode$$, '42501', null,
  'only the owner can take maintain_partitions'' lock');
reset role;

-- Sequences are not transactional: put it back for the files that follow.
select setval('realtime.messages_seq_seq', 4294967296 + 1000000, false);

select * from finish();
rollback;
