-- realtime.is_valid_channel_name, is_valid_channel_pattern and
-- is_valid_event_name: what the CHECK constraints and publish() accept. They
-- are inlined (no SET clause, a SQL-standard body bound when created, since
-- 000005), so a caller's search_path changes nothing.
begin;
select plan(10);

select is((select p.proconfig from pg_proc p where p.oid = 'realtime.is_valid_channel_name(text)'::regprocedure), null,
          'is_valid_channel_name has no SET clause (so it can be inlined)');
select isnt((select p.prosqlbody from pg_proc p where p.oid = 'realtime.is_valid_channel_name(text)'::regprocedure), null,
            'and a SQL-standard body, bound when created');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'realtime'::regnamespace
           and p.proname in ('is_valid_channel_name', 'is_valid_channel_pattern', 'is_valid_event_name')
           and p.prosqlbody is not null and p.provolatile = 'i' and p.proparallel = 's'), 3,
          'the three validation helpers are immutable, parallel safe, SQL-standard');

-- Inlined: the plan shows the expression, not a function call.
create temporary table plan_text (line text);
do $$
declare r record;
begin
  for r in execute 'explain (verbose, costs off) select realtime.is_valid_channel_name(relname::text) from pg_catalog.pg_class' loop
    insert into plan_text values (r."QUERY PLAN");
  end loop;
end $$;
select ok((select bool_or(line like '%octet_length%') and not bool_or(line like '%is_valid_channel_name%') from plan_text),
          'a call is inlined into the caller''s plan');

-- Same answers as before.
select is(realtime.is_valid_channel_name('order:1'), true, 'a name');
select is(realtime.is_valid_channel_name('order:%'), false, 'a pattern is not a name');
select is(realtime.is_valid_channel_name(repeat('x', 256)), false, 'over 255 bytes');
select is(realtime.is_valid_event_name(E'a\tb'), false, 'control characters in an event name');
select is(realtime.is_valid_channel_pattern('order:%'), true, 'a pattern');

-- A hostile search_path cannot redirect what the helpers call.
create schema evil;
create function evil.octet_length(text) returns integer language sql as $$ select 1 $$;
set local search_path = evil, pg_catalog, public;
select is(realtime.is_valid_channel_name(repeat('x', 300)), false, 'a caller''s search_path does not change the helpers');
reset search_path;

select * from finish();
rollback;
