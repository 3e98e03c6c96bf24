-- realtime.match_channel(name): the one function that finds the channel a
-- name belongs to. Exact beats wildcard; the longest literal prefix wins;
-- only % is a wildcard; a disabled best match means no match.
begin;
select plan(16);

select has_function('realtime', 'match_channel', array['text'], 'match_channel(text) exists');
select function_returns('realtime', 'match_channel', array['text'], 'uuid', 'match_channel returns the channel id');
select is_definer('realtime', 'match_channel', array['text'], 'match_channel is SECURITY DEFINER (sees every channel)');
select volatility_is('realtime', 'match_channel', array['text'], 'stable', 'match_channel is STABLE');
select function_privs_are('realtime', 'match_channel', array['text'], 'anon', array['EXECUTE'],
  'anon may call match_channel (the insert trigger runs as the client)');

insert into realtime.channels (pattern, enabled) values
  ('orders', true),
  ('order:%', true),
  ('order:vip:%', true),
  ('order:42', true),
  ('order_1', true),
  ('a\b:%', true),
  ('room:%:typing', true),
  ('room:%', true),
  ('closed:%', true),
  ('closed:1', false),
  ('tie:%ab', true),
  ('tie:%a%b', true),
  ('gone', false);

create temporary table expect (name text, pattern text) on commit drop;
insert into expect values
  ('orders', 'orders'),                -- exact
  ('order:7', 'order:%'),              -- wildcard
  ('order:42', 'order:42'),            -- exact beats wildcard
  ('order:vip:9', 'order:vip:%'),      -- longer literal prefix beats shorter
  ('order_1', 'order_1'),              -- _ is literal ...
  ('orderX1', null),                   -- ... so it does not match any character
  ('a\b:1', 'a\b:%'),                  -- \ is literal
  ('ab:1', null),
  ('room:1:typing', 'room:%:typing'),  -- same prefix: more literal characters wins
  ('room:1', 'room:%'),
  ('closed:2', 'closed:%'),
  ('closed:1', null),                  -- the best match is disabled: no fallback to closed:%
  ('gone', null),                      -- disabled
  ('unknown', null),                   -- no match
  ('tie:zab', 'tie:%a%b');             -- tie on prefix and literal length: pattern order (C) decides

select results_eq(
  $$select e.name, c.pattern from expect e
    left join realtime.channels c on c.id = realtime.match_channel(e.name) order by e.name$$,
  $$select name, pattern from expect order by name$$,
  'every name matches the expected channel (or none)');

select is(realtime.match_channel(null), null, 'NULL matches nothing');
select is(realtime.match_channel(''), null, 'the empty name matches nothing');
select is(realtime.match_channel('order:%'), null, 'a name containing % (a pattern) matches nothing');
select is(realtime.match_channel('order: 1'), null, 'a name with white space matches nothing');
select is(realtime.match_channel('order:' || repeat('9', 300)), null, 'a name over 255 bytes matches nothing');

-- Deterministic: the same answer on every call and whatever the insertion order.
delete from realtime.channels where pattern in ('tie:%ab', 'tie:%a%b');
insert into realtime.channels (pattern) values ('tie:%ab'), ('tie:%a%b');
select is((select pattern from realtime.channels where id = realtime.match_channel('tie:zab')), 'tie:%a%b',
  'ties resolve the same way whatever the insertion order');

-- Enabling and disabling takes effect at once.
update realtime.channels set enabled = false where pattern = 'order:%';
select is(realtime.match_channel('order:7'), null, 'disabling the wildcard closes its names');
select is((select pattern from realtime.channels where id = realtime.match_channel('order:42')), 'order:42',
  'an exact channel stays open when the wildcard is disabled');
update realtime.channels set enabled = true where pattern = 'order:%';
select isnt(realtime.match_channel('order:7'), null, 'enabling it opens them again');

-- It works for a client role whatever that role's SELECT policies say.
set local role anon;
select isnt(realtime.match_channel('order:7'), null, 'anon gets the match although it cannot see the channel row');
reset role;

select * from finish();
rollback;
