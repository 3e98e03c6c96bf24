-- The helpers policies call (channel_name, uid, role, claims) and
-- realtime.impersonate(), which sets them the way the daemon does.
begin;
select plan(32);

select volatility_is('realtime', 'channel_name', array[]::name[], 'stable', 'channel_name() is STABLE');
select volatility_is('realtime', 'uid', array[]::name[], 'stable', 'uid() is STABLE');
select volatility_is('realtime', 'role', array[]::name[], 'stable', 'role() is STABLE');
select volatility_is('realtime', 'claims', array[]::name[], 'stable', 'claims() is STABLE');
select function_returns('realtime', 'uid', array[]::name[], 'uuid', 'uid() returns uuid');
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

-- impersonate(role, claims): what the daemon does per request, for tests.
select function_privs_are('realtime', 'impersonate', array['text', 'jsonb'], 'service_role', array['EXECUTE'],
  'service_role (the daemon) may impersonate');
select function_privs_are('realtime', 'impersonate', array['text', 'jsonb'], 'authenticated', array[]::text[],
  'clients may not');
select realtime.impersonate('authenticated', '{"sub": "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "email": "c@example.com"}');
select is(current_user::text, 'authenticated', 'impersonate sets the role');
select is(realtime.uid(), 'cccccccc-cccc-4ccc-8ccc-cccccccccccc'::uuid, 'and the sub');
select is(realtime.role(), 'authenticated', 'and the role claim');
select is(realtime.claims() ->> 'email', 'c@example.com', 'and the claims');
select throws_ok($$select realtime.impersonate('anon')$$, '42501', null, 'an impersonated client cannot impersonate again');
reset role;
select realtime.impersonate('anon');
select is(realtime.uid(), null, 'impersonate(role) without claims clears the sub');
reset role;
select throws_ok($$select realtime.impersonate('postgres')$$, '42501', null, 'a superuser is refused (policies would not apply)');
create role rt_test_bypass nologin bypassrls;
select throws_ok($$select realtime.impersonate('rt_test_bypass')$$, '42501', null, 'a BYPASSRLS role is refused');
select throws_ok($$select realtime.impersonate('no_such_role_here')$$, '42704', null, 'an unknown role is refused');

select * from finish();
rollback;
