-- The helpers policies call: realtime.channel_name(), claims(), role() and
-- uid(), read from the transaction-local settings the daemon sets per request.
begin;
select plan(23);

select volatility_is('realtime', 'channel_name', array[]::name[], 'stable', 'channel_name() is STABLE');
select volatility_is('realtime', 'uid', array[]::name[], 'stable', 'uid() is STABLE');
select volatility_is('realtime', 'role', array[]::name[], 'stable', 'role() is STABLE');
select volatility_is('realtime', 'claims', array[]::name[], 'stable', 'claims() is STABLE');
select function_returns('realtime', 'uid', array[]::name[], 'uuid', 'uid() returns uuid');
-- Inlined into the policies that call them (000016): SQL-standard bodies, bound
-- when created, with no SET clause and not SECURITY DEFINER, so no call is planned on its own.
select is(array(select p.proname::text from pg_proc p
                where p.pronamespace = 'realtime'::regnamespace and p.proname in ('channel_name', 'claims', 'role', 'uid')
                  and p.prosqlbody is not null and p.proconfig is null and not p.prosecdef order by 1),
          array['channel_name', 'claims', 'role', 'uid'], 'the helpers have SQL-standard bodies, no SET clause, no SECURITY DEFINER');
select is((select pg_catalog.count(*)::int from pg_proc p join pg_language l on l.oid = p.prolang
           where p.pronamespace = 'realtime'::regnamespace and l.lanname = 'sql' and p.prosqlbody is null
             and (p.prosecdef or p.proconfig is not null) and p.proname in ('stream_info', 'dedupe_first', 'uid', 'claims', 'role', 'channel_name')),
          0, 'no function read on every subscribe or publish is a SQL function planned per call');
select function_returns('realtime', 'claims', array[]::name[], 'jsonb', 'claims() returns jsonb');
select function_privs_are('realtime', 'uid', array[]::name[], 'anon', array['EXECUTE'], 'anon may call uid() in policies');
select function_privs_are('realtime', 'channel_name', array[]::name[], 'authenticated', array['EXECUTE'],
  'authenticated may call channel_name() in policies');

-- Nothing set: NULL everywhere.
select is(realtime.channel_name(), null, 'channel_name() is NULL outside a request');
select is(realtime.uid(), null, 'uid() is NULL without claims');
select is(realtime.role(), null, 'role() is NULL without claims');
select is(realtime.claims(), null, 'claims() is NULL without claims');

-- Empty settings (what a custom setting reads after its transaction ended) are NULL too.
select set_config('realtime.channel_name', '', true), set_config('request.jwt.claims', '', true),
       set_config('request.jwt.claim.sub', '', true);
select is(realtime.channel_name(), null, 'an empty realtime.channel_name is NULL');
select is(realtime.claims(), null, 'an empty request.jwt.claims is NULL');

-- From request.jwt.claims (the PostgREST v10+ form) ...
select set_config('request.jwt.claims', '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated", "org": "acme"}', true);
select is(realtime.uid(), 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'::uuid, 'uid() reads sub from request.jwt.claims');
select is(realtime.role(), 'authenticated', 'role() reads role from request.jwt.claims');
select is(realtime.claims() ->> 'org', 'acme', 'claims() returns the whole claim set');
-- ... and from request.jwt.claim.sub / .role, which win when set.
select set_config('request.jwt.claim.sub', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', true);
select set_config('request.jwt.claim.role', 'anon', true);
select is(realtime.uid(), 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'::uuid, 'request.jwt.claim.sub wins over claims');
select is(realtime.role(), 'anon', 'request.jwt.claim.role wins over claims');
select set_config('request.jwt.claim.sub', 'auth0|12345', true);
select is(realtime.uid(), null, 'a sub that is not a uuid gives NULL (read claims()->>''sub'' instead)');
select set_config('realtime.channel_name', 'order:42', true);
select is(realtime.channel_name(), 'order:42', 'channel_name() reads realtime.channel_name');

select * from finish();
rollback;
