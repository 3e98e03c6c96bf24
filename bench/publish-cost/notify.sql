-- The `notify` variant: the floor an application would write by hand. Same
-- shape as publish.sql (SECURITY DEFINER, empty search_path, no EXECUTE for
-- public) so that the difference between the two is the call alone.
create function app.orders_notify()
  returns trigger
  language plpgsql
  security definer
  set search_path = ''
as $$
begin
  perform pg_catalog.pg_notify('orders', pg_catalog.json_build_object('id', new.id, 'status', new.status)::text);
  return null;
end
$$;
comment on function app.orders_notify() is 'Trigger: NOTIFY orders with the new order''s id and status.';
revoke execute on function app.orders_notify() from public;

create trigger orders_notify after insert on app.orders
  for each row execute function app.orders_notify();
