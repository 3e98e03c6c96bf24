-- realtime.impersonate(role, claims): what the daemon does per request (the
-- role and the JWT settings the policy helpers read, until the transaction
-- ends), for tests and server code. Refuses roles policies do not apply to.
begin;
select plan(11);

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
