-- The application's side of bench/publish-cost.mjs, run as postgres in the
-- template database after realtimed migrate: an orders table owned by
-- app_writer (a login role with no realtime grants of its own, created by the
-- harness), and the channel the publish variants write to.
create schema app;
comment on schema app is 'bench/publish-cost.mjs: a stand-in for an application''s tables.';
grant usage on schema app to app_writer;

create table app.orders (
  id bigserial primary key,
  customer int not null,
  status text not null,
  total numeric not null,
  created_at timestamptz not null default now()
);
-- Owned by the application (with its sequence), as in a real deployment.
alter table app.orders owner to app_writer;
comment on table app.orders is 'One row per business transaction of the benchmark.';

insert into realtime.channels (pattern) values ('order:%');
