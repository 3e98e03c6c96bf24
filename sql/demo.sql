-- DEMO ONLY. `realtimed dev` runs this on its embedded database (and on your
-- own only with --demo). It opens the channels demo:% to everyone: never run
-- it on a database that serves real users. Safe to run twice.
--
-- Remove it with:
--   drop policy if exists "DEMO: anyone subscribes to demo:%" on realtime.channels;
--   drop policy if exists "DEMO: signed-in users publish to demo:%" on realtime.messages;
--   delete from realtime.channels where pattern = 'demo:%';

insert into realtime.channels (pattern, description)
values ('demo:%', 'DEMO ONLY (realtimed dev): anyone may subscribe, any signed-in user may publish.')
on conflict (pattern) do nothing;

drop policy if exists "DEMO: anyone subscribes to demo:%" on realtime.channels;
create policy "DEMO: anyone subscribes to demo:%" on realtime.channels
  for select to anon, authenticated
  using (pattern = 'demo:%');
comment on policy "DEMO: anyone subscribes to demo:%" on realtime.channels is
  'DEMO ONLY, installed by realtimed dev: every client, signed in or not, may subscribe to demo:<anything>.';

drop policy if exists "DEMO: signed-in users publish to demo:%" on realtime.messages;
create policy "DEMO: signed-in users publish to demo:%" on realtime.messages
  for insert to authenticated
  with check (starts_with(channel_name, 'demo:'));
comment on policy "DEMO: signed-in users publish to demo:%" on realtime.messages is
  'DEMO ONLY, installed by realtimed dev: any signed-in client may publish to demo:<anything>.';
