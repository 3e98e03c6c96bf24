-- realtime.committed_between(low, high): gap recovery for the daemon. The
-- messages whose transactions committed after snapshot low and before
-- snapshot high, in seq order: snapshots, not seqs, since a lower seq can
-- commit after a higher one.
begin;
select plan(5);

select function_privs_are('realtime', 'committed_between', array['pg_snapshot', 'pg_snapshot'], 'service_role', array['EXECUTE'],
  'the daemon may look for gaps');

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
-- A transaction left open since long before (xid 3 here) and still open at
-- high does not move where the search starts, nor hide what committed.
select results_eq($$select count(*)::int from realtime.committed_between(
                      format('3:%s:3,%s', (select x from snaps) + 1, (select x from snaps))::pg_snapshot,
                      format('3:%s:3', (select x from snaps) + 1)::pg_snapshot)$$,
  $$values (3)$$, 'with an old transaction still open, what committed since is found');
select is_empty($$select * from realtime.committed_between((select running from snaps), (select running from snaps))$$,
  'nothing between a snapshot and itself');

select * from finish();
rollback;
