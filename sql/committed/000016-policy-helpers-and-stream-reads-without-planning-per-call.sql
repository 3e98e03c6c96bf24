--! Previous: sha1:1ac75cec0a01b6265ab423401895857d32cfd548
--! Hash: sha1:05b9c0c82c3b56ce7e767efa643f6c2b61dae2ef
--! Message: Policy helpers and stream reads without planning per call

-- 000016: the helpers policies call, and the reads of every subscribe, without planning per call.
--
-- A LANGUAGE sql function with SET search_path (or SECURITY DEFINER) is never
-- inlined, and its body is parsed and planned again for every statement that
-- calls it: measured on PostgreSQL 15, realtime.stream_info() cost 130-190 µs a
-- call (14 µs of it is the query), realtime.uid() 20-30 µs. The same bodies
-- as below: policy helpers with SQL-standard bodies (bound when created, so
-- no search_path applies, and inlined into the policy that calls them, as the
-- realtime.is_valid_* functions already are); the two SECURITY DEFINER reads
-- as PL/pgSQL, whose plans a session keeps.
--
-- Only CREATE OR REPLACE FUNCTION, same signatures, results and grants: no
-- lock on a table the application writes.

create or replace function realtime.claims() returns jsonb
language sql stable
return nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb;

create or replace function realtime.channel_name() returns text
language sql stable
return nullif(pg_catalog.current_setting('realtime.channel_name', true), '');

create or replace function realtime.role() returns text
language sql stable
return coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.role', true), ''),
                realtime.claims() operator(pg_catalog.->>) 'role');

create or replace function realtime.uid() returns uuid
language sql stable
return case
  when coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                realtime.claims() operator(pg_catalog.->>) 'sub')
       operator(pg_catalog.~*) '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
  then coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                realtime.claims() operator(pg_catalog.->>) 'sub')::uuid
end;

create or replace function realtime.stream_info()
returns table(epoch text, max_seq bigint, pruned_through_seq bigint)
language plpgsql stable security definer
set search_path to ''
as $$
begin
  return query
  select pg_catalog.left(pg_catalog.md5(c.epoch || ':' || d.oid::text || ':'
           || case when pg_catalog.pg_is_in_recovery() then ''
                   else pg_catalog.left(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 8) end), 16),
         (select case when s.is_called then s.last_value else 0 end from realtime.messages_seq_seq s),
         c.pruned_through_seq
  from realtime.config c, pg_catalog.pg_database d
  where d.datname = pg_catalog.current_database();
end
$$;

create or replace function realtime.dedupe_first(channel_name text, sender_key text, dedupe_key text, out id uuid, out seq bigint)
returns record
language plpgsql stable security definer
set search_path to ''
as $$
begin
  select d.message_id, d.message_seq into id, seq
  from realtime.message_dedupe d
  where d.channel_name = dedupe_first.channel_name and d.sender_key = dedupe_first.sender_key
    and d.dedupe_key = dedupe_first.dedupe_key;
end
$$;

insert into realtime.schema_versions (version, name) values (16, 'policy helpers and stream reads without planning per call')
on conflict (version) do nothing;
