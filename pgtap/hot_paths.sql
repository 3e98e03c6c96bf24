-- 000005: the validation helpers are inlined (no SET clause, a SQL-standard
-- body bound when created), publish() without a dedupe key is a plain INSERT,
-- and authorize_subscribe_stream() answers a subscribe in one round trip.
-- Behaviour is unchanged; the search_path of a caller changes nothing.
begin;
select plan(21);

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

-- publish() without a dedupe key: a plain insert, one message, one id.
insert into realtime.channels (pattern) values ('fast:%');
select isnt(realtime.publish('fast:1', 'e', '{"n": 1}'), null, 'publish without a dedupe key returns an id');
select is((select count(*)::int from realtime.messages where channel_name = 'fast:1' and dedupe_key is null), 1,
          'and writes one system message');

-- authorize_subscribe_stream: the stream position (read as the daemon) and the check, one statement.
select has_function('realtime', 'authorize_subscribe_stream', array['text', 'jsonb', 'text'], 'authorize_subscribe_stream exists');
select isnt_definer('realtime', 'authorize_subscribe_stream', array['text', 'jsonb', 'text'], 'it runs as the daemon, then as the client');
select function_privs_are('realtime', 'authorize_subscribe_stream', array['text', 'jsonb', 'text'], 'service_role', array['EXECUTE'], 'the daemon may call it');
select function_privs_are('realtime', 'authorize_subscribe_stream', array['text', 'jsonb', 'text'], 'authenticated', array[]::text[], 'clients may not');

\ir ../docs/examples/policies.sql
insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');
create role rt_test_stream_daemon login;
grant anon, authenticated, service_role to rt_test_stream_daemon;
create temporary table answers (who text, channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint);
grant all on answers to public;
set local role rt_test_stream_daemon;
insert into answers select 'alice', * from realtime.authorize_subscribe_stream('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}', 'chat:7');
reset role;
set local role rt_test_stream_daemon;
insert into answers select 'bob', * from realtime.authorize_subscribe_stream('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}', 'chat:7');
reset role;
select is((select c.pattern from realtime.channels c join answers a on a.channel_id = c.id where a.who = 'alice'), 'chat:%', 'a member gets the matched channel id');
select is((select channel_id from answers where who = 'bob'), null, 'a non-member gets NULL');
select results_eq($$select epoch, max_seq, pruned_through_seq from answers where who = 'alice'$$,
                  $$select epoch, max_seq, pruned_through_seq from realtime.stream_info()$$,
                  'and the stream position is realtime.stream_info()''s');
select is((select count(distinct epoch)::int from answers), 1, 'allowed or not, the same epoch');
set local role rt_test_stream_daemon;
select throws_ok($$select * from realtime.authorize_subscribe_stream('authenticated', '{}', 'chat 7')$$, 'RT400', null, 'an invalid name is RT400');
reset role;

select * from finish();
rollback;
