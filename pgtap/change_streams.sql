-- Change streams (000009, 000012). enable_changes/disable_changes, the events
-- the trigger publishes (columns, operations, changed_only, deletes, old rows),
-- and change_audience: the source table's row-level security per subscriber,
-- for the version the event carries.
begin;
select plan(43);

select has_table('realtime', 'change_streams', 'realtime.change_streams exists');
select table_privs_are('realtime', 'change_streams', 'authenticated', array[]::text[], 'clients cannot read streams');
select is_definer('realtime', 'enable_changes', array['regclass', 'text', 'text[]', 'text[]', 'boolean', 'boolean', 'boolean']);
select function_privs_are('realtime', 'enable_changes', array['regclass', 'text', 'text[]', 'text[]', 'boolean', 'boolean', 'boolean'],
  'authenticated', array[]::text[], 'clients cannot enable streams');
select function_privs_are('realtime', 'change_audience', array['uuid[]', 'jsonb'], 'service_role', array['EXECUTE'],
  'the daemon can ask change_audience');
select function_privs_are('realtime', 'change_audience', array['uuid[]', 'jsonb'], 'anon', array[]::text[],
  'clients cannot');

create table public.rt_orders (id integer primary key, owner uuid not null, status text not null, card text);
alter table public.rt_orders enable row level security;
grant select, insert, update, delete on public.rt_orders to authenticated;
create policy rt_orders_own on public.rt_orders for all to authenticated
  using (owner = realtime.uid()) with check (owner = realtime.uid());
create table public.rt_nokey (n integer);

select throws_ok($$select realtime.enable_changes('public.rt_nokey')$$, 'RT400', null, 'a table without a primary key: RT400');
select throws_ok($$select realtime.enable_changes('public.rt_orders', columns => array['nope'])$$, 'RT400', null,
  'an unknown column: RT400');
select throws_ok($$select realtime.enable_changes('public.rt_orders', operations => array['truncate'])$$, 'RT400', null,
  'an unknown operation: RT400');
select throws_ok($$select realtime.enable_changes('public.rt_orders', channel => 'bad channel')$$, 'RT400', null,
  'an invalid channel name: RT400');
create role rt_test_stranger nologin;
grant service_role to rt_test_stranger;
set local role rt_test_stranger;
select throws_ok($$select realtime.enable_changes('public.rt_orders')$$, '42501', null,
  'only the table''s owner may stream it');
reset role;

select lives_ok($$select realtime.enable_changes('public.rt_orders', columns => array['status', 'owner'])$$,
  'enable_changes with a column list');
select results_eq($$select channel, columns, primary_key, row_channels, public from realtime.change_streams$$,
  $$values ('rt_orders:changes', array['id', 'owner', 'status'], array['id'], true, false)$$,
  'the stream: default channel, the listed columns plus the key');
select results_eq($$select pattern from realtime.channels where pattern like 'rt_orders:%' order by pattern$$,
  $$values ('rt_orders:%'), ('rt_orders:changes')$$, 'the channel rows are created');
select has_trigger('public', 'rt_orders', 'realtime_changes', 'the trigger is on the table');

-- Events, as a client whose own policies allow the writes.
select realtime.impersonate('authenticated', '{"sub": "11111111-1111-4111-8111-111111111111"}');
insert into public.rt_orders values (1, '11111111-1111-4111-8111-111111111111', 'new', '4242 4242');
update public.rt_orders set status = 'paid' where id = 1;
delete from public.rt_orders where id = 1;
reset role;
select results_eq($$select channel_name, event_name from realtime.messages order by seq$$,
  $$values ('rt_orders:changes', 'insert'), ('rt_orders:1', 'insert'), ('rt_orders:changes', 'update'),
           ('rt_orders:1', 'update'), ('rt_orders:changes', 'delete'), ('rt_orders:1', 'delete')$$,
  'each change goes to the stream and to the row''s channel');
select is((select payload from realtime.messages where channel_name = 'rt_orders:changes' and event_name = 'insert'),
  '{"op": "INSERT", "schema": "public", "table": "rt_orders", "old": null,
    "new": {"id": 1, "owner": "11111111-1111-4111-8111-111111111111", "status": "new"}}'::jsonb,
  'INSERT: {op, schema, table, new, old}, only the listed columns (no card)');
select is((select payload -> 'old' from realtime.messages where channel_name = 'rt_orders:changes' and event_name = 'update'),
  '{"id": 1}'::jsonb, 'UPDATE of a non-public stream carries only the old row''s key: nobody can be asked about the old version');
select is((select payload -> 'old' from realtime.messages where channel_name = 'rt_orders:changes' and event_name = 'delete'),
  '{"id": 1}'::jsonb, 'DELETE of a non-public stream carries only the key');
select is((select sender_type from realtime.messages limit 1), 'system', 'change events are system messages');

-- The row check: who can SELECT the row now.
insert into public.rt_orders values (2, '22222222-2222-4222-8222-222222222222', 'new', null),
                                    (3, '11111111-1111-4111-8111-111111111111', 'new', null);
select results_eq($$select realtime.needs_row_check(m) from realtime.messages m where channel_name = 'rt_orders:changes'
                    order by seq$$,
  $$values (true), (true), (false), (true), (true)$$, 'INSERT and UPDATE events need the check, DELETE not');
select results_eq($$select row_check from realtime.relay_frames(
                      (select array_agg(id order by seq) from realtime.messages where channel_name = 'rt_orders:changes'))$$,
  $$values (true), (true), (false), (true), (true)$$, 'relay_frames carries the flag with each frame');
select results_eq($$select row_check from realtime.replay_relay_frames('rt_orders:changes', 0, 100)$$,
  $$values (true), (true), (false), (true), (true)$$, 'and so does replay_relay_frames');
select results_eq($$
  select m.payload -> 'new' ->> 'id', array_agg(a.identity order by a.identity)
  from realtime.change_audience(
         (select array_agg(id) from realtime.messages where channel_name = 'rt_orders:changes' and event_name = 'insert'),
         '[{"role": "authenticated", "claims": {"sub": "11111111-1111-4111-8111-111111111111"}},
           {"role": "authenticated", "claims": {"sub": "22222222-2222-4222-8222-222222222222"}},
           {"role": "anon", "claims": {}},
           {"role": "no_such_role", "claims": {}}]') a
  join realtime.messages m on m.id = a.id
  group by 1 order by 1$$,
  $$values ('2', array[2]), ('3', array[1])$$,
  'each row reaches only its owner; anon (no grant) and an unknown role see nothing; row 1 is gone');
select is(current_setting('role'), 'none', 'change_audience ends as the daemon');

-- A version that changed since cannot be checked: it is withheld from everyone.
-- Row 3 is handed from its first owner (identity 1) to the second (identity 2).
update public.rt_orders set owner = '22222222-2222-4222-8222-222222222222', status = 'sold' where id = 3;
select results_eq($$
  select m.event_name, coalesce(array_agg(a.identity order by a.identity) filter (where a.identity is not null), '{}')
  from realtime.messages m
  left join realtime.change_audience(
         (select array_agg(id) from realtime.messages where channel_name = 'rt_orders:changes' and payload -> 'new' ->> 'id' = '3'),
         '[{"role": "authenticated", "claims": {"sub": "11111111-1111-4111-8111-111111111111"}},
           {"role": "authenticated", "claims": {"sub": "22222222-2222-4222-8222-222222222222"}}]') a on a.id = m.id
  where m.channel_name = 'rt_orders:changes' and m.payload -> 'new' ->> 'id' = '3'
  group by m.event_name, m.seq order by m.seq$$,
  $$values ('insert', '{}'::integer[]), ('update', array[2])$$,
  'the first owner''s version reaches nobody (no longer theirs, and not the new owner''s); the new version reaches the new owner');
select is((select payload -> 'old' from realtime.messages where channel_name = 'rt_orders:changes' and event_name = 'update'
           and payload -> 'new' ->> 'id' = '3'),
  '{"id": 3}'::jsonb, 'and the hand-over carries nothing of the first owner''s version');
-- Written in one writer's time zone, checked in another's: the same values.
set local timezone = 'America/New_York';
alter table public.rt_orders add column due timestamptz;
select realtime.enable_changes('public.rt_orders', columns => array['status', 'owner', 'due']);
insert into public.rt_orders values (40, '22222222-2222-4222-8222-222222222222', 'new', null, '2026-12-02 10:00+00');
reset timezone;
set local timezone = 'Asia/Tokyo';
select results_eq($$
  select a.identity from realtime.change_audience(
    (select array_agg(id) from realtime.messages where channel_name = 'rt_orders:changes' and payload -> 'new' ->> 'id' = '40'),
    '[{"role": "authenticated", "claims": {"sub": "22222222-2222-4222-8222-222222222222"}}]') a$$,
  $$values (1)$$, 'a timestamp written in New York is the same version read in Tokyo');
reset timezone;
delete from public.rt_orders where id = 40;
alter table public.rt_orders drop column due;

-- changed_only, operations, public.
select realtime.enable_changes('public.rt_orders', changed_only => true, operations => array['update', 'delete'],
                               public => true, row_channels => false);
select is((select array_to_string(array_agg(tgtype::text), ',') from pg_trigger
           where tgrelid = 'public.rt_orders'::regclass and tgname = 'realtime_changes'), '25',
  'the trigger fires on UPDATE and DELETE only (AFTER, FOR EACH ROW)');
delete from realtime.messages;
insert into public.rt_orders values (4, '11111111-1111-4111-8111-111111111111', 'new', 'x');
select is_empty($$select from realtime.messages$$, 'an INSERT is not published when not among the operations');
update public.rt_orders set status = 'paid' where id = 4;
select is((select payload -> 'new' from realtime.messages), '{"id": 4, "status": "paid"}'::jsonb,
  'changed_only: the new values of the changed columns and the key');
select is((select payload -> 'old' from realtime.messages), '{"id": 4, "status": "new"}'::jsonb,
  'and their old values');
select is((select count(*)::int from realtime.messages where channel_name <> 'rt_orders:changes'), 0,
  'row_channels off: only the stream''s channel');
select is((select realtime.needs_row_check(m) from realtime.messages m), false, 'a public stream needs no row check');
delete from public.rt_orders where id = 4;
select is((select payload -> 'old' ->> 'card' from realtime.messages where event_name = 'delete'), 'x',
  'a public stream''s DELETE carries the whole old row');

-- A column added later is not sent by a stream with a column list.
select realtime.enable_changes('public.rt_orders', columns => array['status']);
alter table public.rt_orders add column internal_note text;
delete from realtime.messages;
insert into public.rt_orders values (5, '11111111-1111-4111-8111-111111111111', 'new', null, 'secret');
select is((select payload -> 'new' from realtime.messages where channel_name = 'rt_orders:changes'),
  '{"id": 5, "status": "new"}'::jsonb, 'a new column stays out of a stream with a column list');

select ok(realtime.disable_changes('public.rt_orders'), 'disable_changes reports a stream was on');
select hasnt_trigger('public', 'rt_orders', 'realtime_changes', 'the trigger is gone');
select is_empty($$select from realtime.change_streams$$, 'and the stream');
delete from realtime.messages;
insert into public.rt_orders values (6, '11111111-1111-4111-8111-111111111111', 'new', null, null);
select is_empty($$select from realtime.messages$$, 'nothing is published after');

-- 000018: the package's owner is not always a superuser. On a table another
-- role owns, it needs TRIGGER to create the trigger, and the table's owner to
-- drop it: each refusal says what to run.
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
create role rt_test_pkg nologin;
create role rt_test_app nologin;
create table public.rt_test_items (id integer primary key);
alter table public.rt_test_items owner to rt_test_app;
alter function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean) owner to rt_test_pkg;
alter function realtime.disable_changes(regclass) owner to rt_test_pkg;
grant usage on schema realtime to rt_test_app;
grant execute on function realtime.enable_changes(regclass, text, text[], text[], boolean, boolean, boolean),
  realtime.disable_changes(regclass) to rt_test_app;
set local role rt_test_app;
select throws_ok($$select realtime.enable_changes('public.rt_test_items')$$, '42501',
  'realtime.enable_changes: the owner of the realtime package (rt_test_pkg) may not create triggers on public.rt_test_items',
  'without TRIGGER on the table, enable_changes is refused');
select is(pg_temp.hint_of($$select realtime.enable_changes('public.rt_test_items')$$),
  'As the owner of public.rt_test_items, run: grant trigger on table public.rt_test_items to rt_test_pkg;',
  'and the HINT is the GRANT');
reset role;
create trigger realtime_changes after insert on public.rt_test_items for each row execute function realtime.changes_trigger();
set local role rt_test_app;
select is(pg_temp.hint_of($$select realtime.disable_changes('public.rt_test_items')$$),
  'As the owner of public.rt_test_items, run: drop trigger realtime_changes on public.rt_test_items; then call realtime.disable_changes(''public.rt_test_items'') again.',
  'disable_changes on a table the package''s owner does not own names the DROP TRIGGER');
reset role;

select * from finish();
rollback;
