-- Runs once, when the postgres container creates its database (compose.yml).
-- The roles realtimed's policies use (realtimed migrate leaves existing ones
-- alone), and the daemon's login with the minimal grants (docs/sql.md).
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit;
create role realtimed login password 'realtimed';
grant anon, authenticated, service_role to realtimed;
