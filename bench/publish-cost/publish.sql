-- The `publish` variant: the trigger docs/sql.md gives for publishing. The
-- function is SECURITY DEFINER and owned by postgres, a role that may publish,
-- because app_writer has no realtime privileges of its own.
create function app.orders_publish()
  returns trigger
  language plpgsql
  security definer
  set search_path = ''
as $$
begin
  perform realtime.publish('order:' || new.id, 'created', pg_catalog.jsonb_build_object(
    'id', new.id, 'customer', new.customer, 'status', new.status, 'total', new.total));
  return null;
end
$$;
comment on function app.orders_publish() is 'Trigger: publishes event created on channel order:<id> with the new order.';
revoke execute on function app.orders_publish() from public;

create trigger orders_publish after insert on app.orders
  for each row execute function app.orders_publish();
