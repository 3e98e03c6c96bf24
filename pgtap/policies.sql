-- realtime.can_subscribe / can_publish, and the example policies of
-- docs/sql.md (docs/examples/policies.sql, included verbatim) allowing and
-- denying the right users.
begin;
select plan(38);

select has_function('realtime', 'can_subscribe', array['text'], 'can_subscribe(channel) exists');
select has_function('realtime', 'can_publish', array['text', 'text'], 'can_publish(channel, event) exists');
select isnt_definer('realtime', 'can_subscribe', array['text'], 'can_subscribe runs as the caller (its policies decide)');
select isnt_definer('realtime', 'can_publish', array['text', 'text'], 'can_publish runs as the caller');
select function_privs_are('realtime', 'can_subscribe', array['text'], 'anon', array['EXECUTE'], 'anon may ask');
select function_privs_are('realtime', 'can_publish', array['text', 'text'], 'authenticated', array['EXECUTE'], 'authenticated may ask');

\ir ../docs/examples/policies.sql

insert into app.orders (id, owner_id) values
  (1, 'a11ce000-0000-4000-8000-000000000001'),  -- alice's
  (2, 'b0b00000-0000-4000-8000-000000000002');  -- bob's
insert into app.chat_members (chat_id, user_id) values (7, 'a11ce000-0000-4000-8000-000000000001');

-- anon may read the public feed and nothing else.
select realtime.impersonate('anon');
select is(realtime.can_subscribe('orders'), true, 'anon: the public orders feed allowed');
select is(realtime.can_subscribe('order:1'), false, 'anon: order:1 denied');
select is(realtime.can_subscribe('chat:7'), false, 'anon: chat:7 denied');
select is(realtime.can_publish('chat:7', 'message'), false, 'anon: publish to chat:7 denied');
reset role;

-- alice: owns order 1, member of chat 7.
select realtime.impersonate('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}');
select is(realtime.can_subscribe('orders'), true, 'alice: orders allowed (public)');
select is(realtime.can_subscribe('order:1'), true, 'alice: her order:1 allowed');
select is(realtime.can_subscribe('order:2'), false, 'alice: bob''s order:2 denied');
select is(realtime.can_subscribe('order:999'), false, 'alice: an order that does not exist denied');
select is(realtime.can_subscribe('chat:7'), true, 'alice: chat:7 allowed (member)');
select is(realtime.can_subscribe('chat:8'), false, 'alice: chat:8 denied (not a member)');
select is(realtime.can_publish('chat:7', 'message'), true, 'alice: may publish to chat:7');
select is(realtime.can_publish('chat:8', 'message'), false, 'alice: may not publish to chat:8');
select is(realtime.can_publish('order:1', 'message'), false, 'alice: may not publish to her order (no INSERT policy)');
select is(realtime.can_subscribe('nowhere:1'), false, 'no channel matches: denied');
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:7', 'message', '{"text": "hi"}')$$,
  'alice publishes to chat:7');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:8', 'message', '{}')$$,
  '42501', null, 'alice publishing to chat:8 is refused by the INSERT policy');
reset role;

-- bob: owns order 2, member of nothing.
select realtime.impersonate('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}');
select is(realtime.can_subscribe('order:2'), true, 'bob: his order:2 allowed');
select is(realtime.can_subscribe('order:1'), false, 'bob: alice''s order:1 denied');
select is(realtime.can_subscribe('chat:7'), false, 'bob: chat:7 denied');
select is(realtime.can_publish('chat:7', 'message'), false, 'bob: may not publish to chat:7');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('chat:7', 'message', '{}')$$,
  '42501', null, 'bob publishing to chat:7 is refused');
reset role;

-- The three-line recipe of docs/sql.md.
select realtime.impersonate('authenticated', '{"sub": "b0b00000-0000-4000-8000-000000000002"}');
select ok(not realtime.can_subscribe('order:1'), 'bob cannot subscribe to order:1');
reset role;

-- A disabled channel is denied whatever the policies say.
update realtime.channels set enabled = false where pattern = 'chat:%';
select realtime.impersonate('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}');
select is(realtime.can_subscribe('chat:7'), false, 'a disabled channel: denied even to a member');
select is(realtime.can_publish('chat:7', 'message'), false, 'and publishing to it too');
reset role;
update realtime.channels set enabled = true where pattern = 'chat:%';

-- Bad names are an error, not a quiet false.
select throws_ok($$select realtime.can_subscribe('chat 7')$$, 'RT400', null, 'can_subscribe: invalid name is RT400');
select throws_ok($$select realtime.can_publish('chat:%', 'message')$$, 'RT400', null, 'can_publish: a pattern is not a name (RT400)');
select throws_ok($$select realtime.can_subscribe(null)$$, 'RT400', null, 'can_subscribe: NULL is RT400');

-- can_publish probes without leaving a row, and both restore realtime.channel_name.
select is((select count(*)::int from realtime.messages), 1, 'only alice''s real message was written');
select set_config('realtime.channel_name', 'outer', true);
select realtime.impersonate('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}');
select ok(realtime.can_publish('chat:7', 'message') and realtime.can_subscribe('chat:7'), 'alice asks twice');
select is(realtime.channel_name(), 'outer', 'realtime.channel_name is restored afterwards');
reset role;
select is((select count(*)::int from realtime.messages), 1, 'the probe left no row');

-- A policy that throws denies through an error the caller sees (the daemon denies on any error).
create policy "broken" on realtime.channels for select to authenticated using (1 / 0 = 1);
select realtime.impersonate('authenticated', '{"sub": "a11ce000-0000-4000-8000-000000000001"}');
select throws_ok($$select realtime.can_subscribe('orders')$$, '22012', null, 'a policy that throws raises, it never allows');
reset role;

select * from finish();
rollback;
