-- 000007: per-channel settings on realtime.channels, the per-channel payload
-- cap enforced by the insert trigger, and authorize_subscription() returning
-- the limits with the subscribe check.
begin;
select plan(18);

select col_type_is('realtime', 'channels', 'max_subscribers', 'integer', 'channels.max_subscribers is integer');
select col_is_null('realtime', 'channels', 'max_subscribers', 'channels.max_subscribers: NULL is no limit');
select col_type_is('realtime', 'channels', 'max_message_bytes', 'integer', 'channels.max_message_bytes is integer');
select col_type_is('realtime', 'channels', 'publish_rate', 'integer', 'channels.publish_rate is integer');
select col_type_is('realtime', 'channels', 'metadata', 'jsonb', 'channels.metadata is jsonb');
select col_default_is('realtime', 'channels', 'metadata', '{}'::jsonb, 'channels.metadata defaults to {}');
select throws_ok($$insert into realtime.channels (pattern, max_subscribers) values ('bad:%', 0)$$, '23514', null,
  'max_subscribers must be positive');
select throws_ok($$insert into realtime.channels (pattern, metadata) values ('bad:%', '[1]')$$, '23514', null,
  'metadata must be an object');

-- Clients may read the limits, not the metadata.
select ok(has_column_privilege('authenticated', 'realtime.channels', 'max_subscribers', 'SELECT'),
  'authenticated may read max_subscribers');
select ok(not has_column_privilege('anon', 'realtime.channels', 'metadata', 'SELECT'),
  'anon may not read metadata');

-- The per-channel payload cap, for client inserts.
insert into realtime.channels (pattern, max_message_bytes, publish_rate, max_subscribers, metadata)
values ('small:%', 20, 5, 3, '{"tier": "free"}');
create policy rt_test_small_insert on realtime.messages for insert to anon
  with check (realtime.channel_name() like 'small:%');
create policy rt_test_small_select on realtime.channels for select to anon using (pattern = 'small:%');
select realtime.impersonate('anon');
select set_config('realtime.channel_name', 'small:1', true);
select lives_ok($$insert into realtime.messages (channel_name, event_name, payload) values ('small:1', 'e', '{"a": 1}')$$,
  'a payload under the channel''s cap is accepted');
select throws_ok($$insert into realtime.messages (channel_name, event_name, payload)
                   values ('small:1', 'e', '{"a": "0123456789012345678"}')$$, 'RT413', null,
  'a payload over the channel''s cap: RT413');
reset role;
select isnt(realtime.publish('small:1', 'e', '{"a": "0123456789012345678"}'), null,
  'system messages (realtime.publish) keep the global cap only');

-- authorize_subscription: check, stream and limits in one statement.
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text'], 'service_role',
  array['EXECUTE'], 'the daemon may call authorize_subscription');
select function_privs_are('realtime', 'authorize_subscription', array['text', 'jsonb', 'text'], 'anon',
  array[]::text[], 'clients may not');
select results_eq($$select channel_id is not null, max_subscribers, publish_rate, max_message_bytes
                    from realtime.authorize_subscription('anon', '{}', 'small:7')$$,
                  $$values (true, 3, 5, 20)$$, 'allowed: the channel id and its limits');
select results_eq($$select channel_id, max_subscribers from realtime.authorize_subscription('anon', '{}', 'other:7')$$,
                  $$values (null::uuid, null::integer)$$, 'no channel: NULL id, no limits');
select is(current_setting('role'), 'none', 'the statement leaves the role as it found it (the daemon''s own)');

select * from finish();
rollback;
