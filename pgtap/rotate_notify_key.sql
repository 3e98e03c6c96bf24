-- realtime.rotate_notify_key(grace) (000018): a fresh key, the old one kept
-- for the grace period, service_role and the owner only.
begin;
select plan(15);

select has_function('realtime', 'rotate_notify_key', array['interval']);
select is_definer('realtime', 'rotate_notify_key', array['interval']);
select function_privs_are('realtime', 'rotate_notify_key', array['interval'], 'service_role', array['EXECUTE'],
  'service_role (the daemon, an operator) may rotate');
select function_privs_are('realtime', 'rotate_notify_key', array['interval'], 'authenticated', array[]::text[],
  'clients may not');
select function_privs_are('realtime', 'rotate_notify_key', array['interval'], 'anon', array[]::text[],
  'nor anonymous clients');
select table_privs_are('realtime', 'notify_key', 'authenticated', array[]::text[], 'clients cannot read the key');

create temp table rt_before on commit drop as select key, lock_seed from realtime.notify_key;
-- Measured from the rotation itself (clock_timestamp), not from the start of the
-- transaction that calls it: a long transaction does not eat the grace.
create temp table rt_rotated on commit drop as
  select pg_catalog.clock_timestamp() as before, realtime.rotate_notify_key('90 seconds') as until, pg_catalog.clock_timestamp() as after;
select ok((select until between before + interval '90 seconds' and after + interval '90 seconds' and until > now() + interval '90 seconds' from rt_rotated),
  'returns when the grace ends: 90 seconds from the rotation, not from the transaction''s start');
select isnt((select key from realtime.notify_key), (select key from rt_before), 'the key changed');
select is((select previous_key from realtime.notify_key), (select key from rt_before), 'the old key is kept as previous_key');
select ok((select length(key) = 72 and rotated_at = now() from realtime.notify_key), 'a fresh 72-character key, rotated now');
select is((select lock_seed from realtime.notify_key), (select lock_seed from rt_before),
  'the advisory-lock seed stays: a lock taken before a rotation is the one taken after');
select throws_ok($$select realtime.rotate_notify_key('-1 second')$$, '22023', null, 'a negative grace is refused');
select throws_ok($$select realtime.rotate_notify_key('2 days')$$, '22023', null, 'a grace over a day is refused');

select realtime.impersonate('service_role');
select lives_ok($$select realtime.rotate_notify_key('0')$$, 'service_role rotates');
reset role;
select realtime.impersonate('authenticated', '{"sub": "cccccccc-cccc-4ccc-8ccc-cccccccccccc"}');
select throws_ok($$select realtime.rotate_notify_key()$$, '42501', null, 'a client cannot');
reset role;

select * from finish();
rollback;
