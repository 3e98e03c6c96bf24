--! Previous: sha1:ac11831b379fee729b10116f513092e0d3ef5027
--! Hash: sha1:997e35bd4e054c6668d669d16efc494199687337
--! Message: drop superseded functions

-- realtimed 000011: drop the functions the daemon no longer calls.
--
-- Each was kept for daemons of an older version after a replacement that does
-- more in the same round trip; realtimed calls only the replacements:
--
-- - realtime.event_frames(uuid[], pg_snapshot): realtime.relay_frames (000009),
--   the same frames plus row_check.
-- - realtime.replay_frames(text, bigint, integer): realtime.replay_relay_frames
--   (000009), the same plus row_check.
-- - realtime.authorize_subscribe_stream(text, jsonb, text) (000005) and the
--   three-argument realtime.authorize_subscription(text, jsonb, text) (000007):
--   the four-argument authorize_subscription (000010), which also returns the
--   channel's limits and the subscribers other instances reported.
--
-- No object of the package depends on them. A realtimed built for schema 9 or
-- older calls them: upgrade every instance before applying this. An object of
-- your own that depends on one of them stops the migration (no CASCADE);
-- nothing is changed then.
--
-- The comments of relay_frames and replay_relay_frames described them by the
-- dropped functions; they now say what they return themselves.
set local lock_timeout = '5s';

drop function if exists realtime.event_frames(uuid[], pg_catalog.pg_snapshot);
drop function if exists realtime.replay_frames(text, bigint, integer);
drop function if exists realtime.authorize_subscribe_stream(text, jsonb, text);
drop function if exists realtime.authorize_subscription(text, jsonb, text);

comment on function realtime.relay_frames(uuid[], pg_catalog.pg_snapshot) is
  'For the daemon: the wire frame of each message (realtime.event_frame), in the order of ids, built once so the same text goes to every subscriber, with row_check (realtime.needs_row_check). Unknown ids, and messages whose transaction is visible in after (the daemon''s watermark: already handled), are skipped.';
comment on function realtime.replay_relay_frames(text, bigint, integer) is
  'For the daemon, after the subscribe check allowed it: the retained messages of a channel with seq > since, in seq order, at most max_count, as wire frames (realtime.event_frame) with row_check (realtime.needs_row_check).';

insert into realtime.schema_versions (version, name) values (11, 'drop superseded functions')
on conflict (version) do nothing;
