-- realtime.channels: structure, constraints, trigger, grants and the RLS default.
begin;
select plan(63);

select has_table('realtime', 'channels', 'realtime.channels exists');
select columns_are('realtime', 'channels',
  array['id', 'pattern', 'description', 'webhook_urls', 'enabled', 'created_at', 'updated_at',
        'max_subscribers', 'max_message_bytes', 'publish_rate', 'metadata']);
select col_is_pk('realtime', 'channels', 'id', 'channels.id: is pk');
select col_type_is('realtime', 'channels', 'id', 'uuid', 'channels.id is uuid');
select col_has_default('realtime', 'channels', 'id', 'channels.id: has default');
select col_type_is('realtime', 'channels', 'pattern', 'text', 'channels.pattern is text');
select col_not_null('realtime', 'channels', 'pattern', 'channels.pattern: not null');
select col_is_unique('realtime', 'channels', 'pattern', 'channels.pattern: is unique');
select col_type_is('realtime', 'channels', 'webhook_urls', 'text[]', 'channels.webhook_urls is text[]');
select col_not_null('realtime', 'channels', 'webhook_urls', 'channels.webhook_urls: not null');
select col_default_is('realtime', 'channels', 'webhook_urls', '{}'::text[], 'channels.webhook_urls default');
select col_type_is('realtime', 'channels', 'enabled', 'boolean', 'channels.enabled is boolean');
select col_default_is('realtime', 'channels', 'enabled', 'true', 'channels.enabled default');
select col_type_is('realtime', 'channels', 'created_at', 'timestamp with time zone', 'channels.created_at is timestamp with time zone');
select col_type_is('realtime', 'channels', 'updated_at', 'timestamp with time zone', 'channels.updated_at is timestamp with time zone');
select col_not_null('realtime', 'channels', 'updated_at', 'channels.updated_at: not null');

-- Per-channel settings: limits the daemon applies, and metadata for the DBA.
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

-- Patterns: non-empty, at most 255 bytes, no white space; % is allowed, so are _ and \.
select lives_ok($$insert into realtime.channels (pattern) values ('orders'), ('order:%'), ('a_b\c:%')$$,
  'plain names and patterns with %, _ and \ are accepted');
select throws_ok($$insert into realtime.channels (pattern) values ('')$$, '23514', null, 'empty pattern refused');
select throws_ok($$insert into realtime.channels (pattern) values ('has space')$$, '23514', null, 'white space refused');
select throws_ok($$insert into realtime.channels (pattern) values (repeat('x', 256))$$, '23514', null, 'over 255 bytes refused');
select throws_ok($$insert into realtime.channels (pattern) values ('orders')$$, '23505', null, 'patterns are unique');

-- Webhook URLs: absolute http(s), distinct, at most 16.
select lives_ok($$insert into realtime.channels (pattern, webhook_urls)
  values ('hooks', array['https://example.com/hook', 'http://127.0.0.1:8080/in?x=1'])$$, 'http and https URLs accepted');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls) values ('h1', array['ftp://example.com/'])$$,
  '23514', null, 'non-http scheme refused');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls) values ('h2', array['example.com/hook'])$$,
  '23514', null, 'relative URL refused');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls) values ('h3', array['https://a b/'])$$,
  '23514', null, 'white space refused');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls) values ('h4', array[null]::text[])$$,
  '23514', null, 'NULL element refused');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls) values ('h5', array['https://a/', 'https://a/'])$$,
  '23514', null, 'duplicate URL refused');
select throws_ok($$insert into realtime.channels (pattern, webhook_urls)
  select 'h6', array_agg('https://h/' || i) from generate_series(1, 17) i$$, '23514', null, 'more than 16 refused');
-- NULL means none (000017): scripts that list every column pass NULL for "no webhooks".
select has_trigger('realtime', 'channels', 'channels_null_means_none', 'channels has its NULL-means-none trigger');
select function_privs_are('realtime', 'channels_null_means_none', array[]::text[], 'public', array[]::text[], 'PUBLIC cannot call it');
select lives_ok($$insert into realtime.channels (pattern, description, webhook_urls, enabled) values ('h7', 'seven', null, true)$$,
  'an explicit NULL webhook_urls is accepted');
select results_eq($$select webhook_urls, metadata from realtime.channels where pattern = 'h7'$$,
  $$values ('{}'::text[], '{}'::jsonb)$$, 'and stored as no webhooks');
update realtime.channels set webhook_urls = array['https://h7.example/'], metadata = '{"a": 1}' where pattern = 'h7';
update realtime.channels set webhook_urls = null, metadata = null where pattern = 'h7';
select results_eq($$select webhook_urls, metadata from realtime.channels where pattern = 'h7'$$,
  $$values ('{}'::text[], '{}'::jsonb)$$, 'set to NULL by an UPDATE: none');
select throws_ok($$insert into realtime.channels (pattern, enabled) values ('h8', null)$$,
  '23502', null, 'enabled is not guessed: NULL refused');
select is((select attnotnull from pg_attribute where attrelid = 'realtime.channels'::regclass and attname = 'webhook_urls'),
  true, 'webhook_urls stays NOT NULL');

-- updated_at is kept by the trigger.
select has_trigger('realtime', 'channels', 'channels_touch_updated_at', 'channels has its updated_at trigger');
update realtime.channels set updated_at = '2000-01-01', created_at = '2000-01-01' where pattern = 'orders';
select is((select updated_at from realtime.channels where pattern = 'orders'), now(),
  'an UPDATE sets updated_at to now(), whatever the statement says');

-- Every change is a hint to the daemon (NOTIFY realtime_channels), so it re-matches its subscriptions.
select has_trigger('realtime', 'channels', 'channels_notify', 'channels has the change hint trigger');
select function_privs_are('realtime', 'channels_notify', array[]::text[], 'public', array[]::text[], 'PUBLIC cannot call the trigger function');

-- Grants: clients read the channel row (not its webhook URLs) under RLS; service_role administers.
select table_privs_are('realtime', 'channels', 'anon', array[]::text[]);
select column_privs_are('realtime', 'channels', 'pattern', 'anon', array['SELECT']);
select column_privs_are('realtime', 'channels', 'webhook_urls', 'anon', array[]::text[]);
select column_privs_are('realtime', 'channels', 'webhook_urls', 'authenticated', array[]::text[]);
select table_privs_are('realtime', 'channels', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
select table_privs_are('realtime', 'channels', 'public', array[]::text[]);

-- RLS: with no policy of the DBA's, clients see no channel; service_role sees all.
select policies_are('realtime', 'channels', array['channels_service_role_all']);
select policy_roles_are('realtime', 'channels', 'channels_service_role_all', array['service_role']);
select policy_cmd_is('realtime', 'channels', 'channels_service_role_all', 'all', 'service_role policy covers every command');

set local role anon;
select is_empty('select id from realtime.channels', 'anon sees no channel without a policy');
select throws_ok('select webhook_urls from realtime.channels', '42501', null, 'anon may not read webhook URLs at all');
reset role;
set local role authenticated;
select is_empty('select id from realtime.channels', 'authenticated sees no channel without a policy');
reset role;
set local role service_role;
select is((select count(*)::int from realtime.channels), 5, 'service_role sees every channel');
select lives_ok($$update realtime.channels set description = 'by service_role' where pattern = 'hooks'$$,
  'service_role administers channels');
reset role;

select * from finish();
rollback;
