-- realtime.config.delivery (000014): how committed messages reach the daemons.
-- In wal and poll no business transaction NOTIFYs. A notification is queued
-- at commit, so this file looks at what the trigger decided
-- (realtime.insert_context) and at the queue after a committed publish is
-- impossible in one transaction; test/e2e/delivery.test.ts listens for real.
begin;
select plan(32);

select has_column('realtime', 'config', 'delivery', 'config has delivery');
select col_not_null('realtime', 'config', 'delivery', 'delivery is never NULL');
select col_default_is('realtime', 'config', 'delivery', 'notify', 'notify by default: an upgrade changes nothing');
select is((select delivery from realtime.config), 'notify', 'the installed row says notify');
select throws_ok($$update realtime.config set delivery = 'kafka'$$, '23514', null, 'only notify, wal and poll');
select lives_ok($$update realtime.config set delivery = 'wal'$$, 'a DBA sets wal with an UPDATE');
select lives_ok($$update realtime.config set delivery = 'poll'$$, 'or poll');

-- insert_context: one SECURITY DEFINER call for the insert trigger.
select is_definer('realtime', 'insert_context', array['text'], 'insert_context reads as the owner');
select function_privs_are('realtime', 'insert_context', array['text'], 'public', array['EXECUTE'],
  'any role whose write fires a trigger may call it');
insert into realtime.channels (pattern, webhook_urls) values ('d:%', array['https://example.com/hook']);
update realtime.config set delivery = 'notify';
select is((select notify from realtime.insert_context('d:1')), true, 'notify: the trigger NOTIFYs');
update realtime.config set delivery = 'wal';
select is((select notify from realtime.insert_context('d:1')), false, 'wal: it does not');
update realtime.config set delivery = 'poll';
select is((select notify from realtime.insert_context('d:1')), false, 'poll: it does not');
select is((select webhook_count from realtime.insert_context('d:1')), 1, 'the channel''s webhook count comes along');
select is((select channel_id from realtime.insert_context('nope')), null::uuid, 'no channel: NULL');
select is((select payload_cap from realtime.insert_context('d:1')), (select max_payload_bytes from realtime.config),
  'and the payload cap');

-- A publish in poll mode still writes the message and its outbox.
select isnt(realtime.publish('d:1', 'e', '{"n": 1}'), null::uuid, 'publish writes the message in poll');
select is((select count(*)::int from realtime.webhook_deliveries where channel_name = 'd:1'), 1, 'and its webhook delivery');

-- delivery_mode: for the daemon.
select is_definer('realtime', 'delivery_mode', array[]::text[], 'delivery_mode reads as the owner');
select function_privs_are('realtime', 'delivery_mode', array[]::text[], 'service_role', array['EXECUTE'], 'the daemon reads the mode');
select function_privs_are('realtime', 'delivery_mode', array[]::text[], 'anon', array[]::text[], 'a client does not');
select is(realtime.delivery_mode(), 'poll', 'delivery_mode says what config says');

-- The daemons hear a change.
select has_trigger('realtime', 'config', 'config_notify', 'a change of mode is notified');
select trigger_is('realtime', 'config', 'config_notify', 'realtime', 'config_notify');

-- summarize_messages: the daemon's BRIN upkeep in poll.
select function_privs_are('realtime', 'summarize_messages', array[]::text[], 'service_role', array['EXECUTE'], 'the daemon may summarize');
select function_privs_are('realtime', 'summarize_messages', array[]::text[], 'authenticated', array[]::text[], 'a client may not');
select lives_ok($$select realtime.summarize_messages()$$, 'it summarizes the open partition''s BRIN indexes');

-- relay_messages: frames with their writing transaction.
select function_privs_are('realtime', 'relay_messages', array['text[]', 'bigint[]', 'pg_snapshot'], 'service_role', array['EXECUTE'], 'the daemon reads frames');
select function_privs_are('realtime', 'relay_messages', array['text[]', 'bigint[]', 'pg_snapshot'], 'authenticated', array[]::text[], 'a client does not');
select results_eq($$select r.frame, r.xact_id = pg_current_xact_id(), r.row_check
                    from realtime.messages m, realtime.relay_messages(array[m.channel_name], array[m.seq]) r
                    where m.channel_name = 'd:1'$$,
  $$select realtime.event_frame(m), true, false from realtime.messages m where m.channel_name = 'd:1'$$,
  'the stored frame, and the transaction that wrote it');
select is_empty($$select m.id from realtime.messages m, realtime.relay_messages(array[m.channel_name], array[m.seq]) r
                 where r.frame is distinct from realtime.event_frame(m) or r.row_check is distinct from realtime.needs_row_check(m)$$,
  'for every message: event_frame''s frame and needs_row_check''s answer, written out');
select is_empty($$select * from realtime.messages m,
                   realtime.relay_messages(array[m.channel_name], array[m.seq],
                                           format('%s:%s:', pg_current_xact_id()::text::bigint + 1, pg_current_xact_id()::text::bigint + 1)::pg_snapshot)
                 where m.channel_name = 'd:1'$$,
  'nothing the watermark already saw');

-- The publication for wal, made by the migration when the installing role may.
select results_eq($$select pubinsert, pubupdate, pubdelete, pubviaroot from pg_publication where pubname = 'realtime_messages'$$,
  $$values (true, false, false, true)$$, 'publication realtime_messages: inserts, under the partitioned table''s name');

select * from finish();
rollback;
