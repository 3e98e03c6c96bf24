-- realtime.impersonate(role, claims): what the daemon does per request (the
-- role and the JWT settings the policy helpers read, until the transaction
-- ends), for tests and server code. Refuses roles policies do not apply to.
begin;
select plan(14);

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

-- 000018: a session user that may not SET ROLE (PostgreSQL 16+: a CREATEROLE
-- owner holds only ADMIN on the roles it created) gets the GRANT to run.
create function pg_temp.hint_of(sql text) returns text language plpgsql as $f$
declare h text;
begin
  execute sql;
  return null;
exception when insufficient_privilege then
  get stacked diagnostics h = pg_exception_hint;
  return h;
end
$f$;
create role rt_test_owner nologin;
grant usage on schema realtime to rt_test_owner;
grant execute on function realtime.impersonate(text, jsonb) to rt_test_owner;
set local session authorization rt_test_owner;
select throws_ok($$select realtime.impersonate('authenticated')$$, '42501',
  'realtime.impersonate: rt_test_owner may not act as role "authenticated"', 'a session user outside the role is refused');
select is(pg_temp.hint_of($$select realtime.impersonate('authenticated')$$),
  'As a role with ADMIN OPTION on authenticated (a superuser, or the role that created it), run: grant authenticated to rt_test_owner'
    || case when current_setting('server_version_num')::int >= 160000 then ' with inherit false, set true' else '' end || ';',
  'the HINT names the GRANT to run');
reset session authorization;
grant authenticated to rt_test_owner;
set local session authorization rt_test_owner;
select realtime.impersonate('authenticated');
select is(current_user::text, 'authenticated', 'after that GRANT, impersonate works');
reset role;
reset session authorization;

select * from finish();
rollback;
