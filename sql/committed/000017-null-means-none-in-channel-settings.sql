--! Previous: sha1:05b9c0c82c3b56ce7e767efa643f6c2b61dae2ef
--! Hash: sha1:bb0576b4e15887ed5f0d9691ed81552da0a3f454
--! Message: NULL means none in channel settings

-- 000017: NULL means "none" in a channel's webhook_urls and metadata.
--
-- Scripts written the way the InsForge realtime documentation writes them list
-- every column and pass NULL for a channel without webhooks:
--   insert into realtime.channels (pattern, description, webhook_urls, enabled)
--   values ('orders', 'Global order events', NULL, true);
-- The columns stay NOT NULL (the daemon, the checks and every reader rely on
-- an array and an object); a BEFORE trigger turns an explicit NULL into the
-- column's default first, on INSERT and UPDATE alike.
--
-- Locks: CREATE TRIGGER takes SHARE ROW EXCLUSIVE on realtime.channels, which
-- waits for (and holds off) channel writes only, never the daemon's reads or
-- the application's publishes; a channel write holding it longer than 5 s
-- fails the migration instead of queueing the daemon behind it.
set local lock_timeout = '5s';

create or replace function realtime.channels_null_means_none() returns trigger
language plpgsql set search_path = ''
as $$
begin
  new.webhook_urls := coalesce(new.webhook_urls, '{}'::text[]);
  new.metadata := coalesce(new.metadata, '{}'::jsonb);
  return new;
end
$$;
comment on function realtime.channels_null_means_none() is
  'Trigger: an explicit NULL webhook_urls or metadata becomes the default (no webhooks, no metadata).';
revoke all on function realtime.channels_null_means_none() from public;

drop trigger if exists channels_null_means_none on realtime.channels;
create trigger channels_null_means_none
  before insert or update on realtime.channels
  for each row execute function realtime.channels_null_means_none();
comment on trigger channels_null_means_none on realtime.channels is
  'NULL in webhook_urls or metadata means none: stored as ''{}''.';

insert into realtime.schema_versions (version, name) values (17, 'null means none in channel settings')
on conflict (version) do nothing;
