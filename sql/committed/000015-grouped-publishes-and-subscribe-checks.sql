--! Previous: sha1:9dfb1a5c47dee9330469eecdb657773c635c4d15
--! Hash: sha1:1ac75cec0a01b6265ab423401895857d32cfd548
--! Message: Client publishes committed together, subscribe checks asked together

-- 000015: client publishes committed together, subscribe checks asked together.
--
-- Two functions for the daemon, nothing else changed: no table, no lock on
-- anything the application writes.
--
-- realtime.send_batch: up to 64 client publishes in one statement, so one
-- round trip and one commit. Each item is realtime.send() as alone (its own
-- role, claims and INSERT policies) in its own subtransaction: a denied or
-- failing item rolls back alone, with its SQLSTATE and message, and the others
-- commit. 64 because a backend caches the ids of 64 subtransactions; past that
-- every snapshot on the server gets slower (PostgreSQL docs, "Subtransactions").
-- The daemon sends at most 32, which leaves room for a policy or trigger of
-- the application's own that writes in an EXCEPTION block.
--
-- realtime.authorize_subscriptions: realtime.authorize_subscription() for many
-- subscribes at once (a reconnect storm). Each item runs in a subtransaction
-- that is always rolled back once its answer is read, so nothing one item's
-- policies set (the role, the claims, any setting) is there for the next: each
-- answer is what the item gets alone.

create or replace function realtime.send_batch(
  roles text[], claims jsonb[], channels text[], events text[], payloads jsonb[], dedupe_keys text[])
returns table(ord integer, id uuid, seq bigint, duplicate boolean, error_code text, error_message text)
language plpgsql
set search_path to ''
as $$
declare
  v_n integer := coalesce(pg_catalog.cardinality(send_batch.roles), 0);
begin
  if v_n > 64 then
    raise exception 'realtime.send_batch: at most 64 publishes at once (% given)', v_n using errcode = '22023';
  end if;
  if coalesce(pg_catalog.cardinality(send_batch.claims), 0) <> v_n
     or coalesce(pg_catalog.cardinality(send_batch.channels), 0) <> v_n
     or coalesce(pg_catalog.cardinality(send_batch.events), 0) <> v_n
     or coalesce(pg_catalog.cardinality(send_batch.payloads), 0) <> v_n
     or coalesce(pg_catalog.cardinality(send_batch.dedupe_keys), 0) <> v_n then
    raise exception 'realtime.send_batch: the arrays differ in length' using errcode = '22023';
  end if;
  for i in 1 .. v_n loop
    ord := i;
    error_code := null;
    error_message := null;
    begin
      select s.id, s.seq, s.duplicate into send_batch.id, send_batch.seq, send_batch.duplicate
      from realtime.send(send_batch.roles[i], send_batch.claims[i], send_batch.channels[i], send_batch.events[i],
                         send_batch.payloads[i], send_batch.dedupe_keys[i]) s;
    exception when others then
      send_batch.id := null;
      send_batch.seq := null;
      send_batch.duplicate := null;
      get stacked diagnostics error_code = returned_sqlstate, error_message = message_text;
    end;
    -- The next item starts as the daemon, whatever this one's policies did to the role.
    perform pg_catalog.set_config('role', 'none', true);
    return next;
  end loop;
end
$$;
comment on function realtime.send_batch(text[], jsonb[], text[], text[], jsonb[], text[]) is 'For the daemon: up to 64 client publishes in one statement and one commit. Item i is realtime.send(roles[i], claims[i], channels[i], events[i], payloads[i], dedupe_keys[i]) in its own subtransaction: one row per item (ord = i) with its id, seq and duplicate, or its error_code (SQLSTATE) and error_message when it failed, in which case only it rolled back. Call it as a single statement.';
revoke all on function realtime.send_batch(text[], jsonb[], text[], text[], jsonb[], text[]) from public;
grant execute on function realtime.send_batch(text[], jsonb[], text[], text[], jsonb[], text[]) to service_role;

create or replace function realtime.authorize_subscriptions(roles text[], claims jsonb[], channels text[], instance uuid)
returns table(ord integer, channel_id uuid, epoch text, max_seq bigint, pruned_through_seq bigint, max_subscribers integer,
              publish_rate integer, max_message_bytes integer, other_subscribers integer, error_code text, error_message text)
language plpgsql
set search_path to ''
as $$
declare
  v_n integer := coalesce(pg_catalog.cardinality(authorize_subscriptions.roles), 0);
begin
  if v_n > 1000 then
    raise exception 'realtime.authorize_subscriptions: at most 1000 checks at once (% given)', v_n using errcode = '22023';
  end if;
  if coalesce(pg_catalog.cardinality(authorize_subscriptions.claims), 0) <> v_n
     or coalesce(pg_catalog.cardinality(authorize_subscriptions.channels), 0) <> v_n then
    raise exception 'realtime.authorize_subscriptions: the arrays differ in length' using errcode = '22023';
  end if;
  for i in 1 .. v_n loop
    ord := i;
    error_code := null;
    error_message := null;
    begin
      select a.channel_id, a.epoch, a.max_seq, a.pruned_through_seq, a.max_subscribers, a.publish_rate,
             a.max_message_bytes, a.other_subscribers
        into channel_id, epoch, max_seq, pruned_through_seq, max_subscribers, publish_rate,
             max_message_bytes, other_subscribers
      from realtime.authorize_subscription(authorize_subscriptions.roles[i], authorize_subscriptions.claims[i],
                                           authorize_subscriptions.channels[i], authorize_subscriptions.instance) a;
      -- Roll the item back (its role, claims and whatever its policies set);
      -- the answer stays in the output variables.
      raise exception using errcode = 'RT000';
    exception
      when sqlstate 'RT000' then
        null;
      when others then
        channel_id := null; epoch := null; max_seq := null; pruned_through_seq := null;
        max_subscribers := null; publish_rate := null; max_message_bytes := null; other_subscribers := null;
        get stacked diagnostics error_code = returned_sqlstate, error_message = message_text;
    end;
    return next;
  end loop;
end
$$;
comment on function realtime.authorize_subscriptions(text[], jsonb[], text[], uuid) is 'For the daemon: realtime.authorize_subscription(roles[i], claims[i], channels[i], instance) for up to 1000 subscribes in one round trip. Each item runs in a subtransaction rolled back once its answer is read, so no item sees what another''s policies set. One row per item (ord = i); error_code (SQLSTATE) and error_message when its check failed. Call it as a single statement.';
revoke all on function realtime.authorize_subscriptions(text[], jsonb[], text[], uuid) from public;
grant execute on function realtime.authorize_subscriptions(text[], jsonb[], text[], uuid) to service_role;

insert into realtime.schema_versions (version, name) values (15, 'client publishes committed together, subscribe checks asked together')
on conflict (version) do nothing;
