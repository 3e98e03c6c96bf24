/**
 * What `realtimed dev` sets up on its own embedded cluster: the application
 * database and the daemon's login role with the documented minimal grants.
 * Never run against a database the user brought.
 */
import type pg from 'pg';

export async function ensureDatabase(client: pg.ClientBase, name: 'realtimed'): Promise<void> {
  const exists = await client.query(`select from pg_database where datname = $1`, [name]);
  if (exists.rowCount === 0) await client.query(`create database ${name}`);
}

/** The login role `realtimed` (password set or reset), member of anon, authenticated and service_role. */
export async function ensureDaemonRole(client: pg.ClientBase, password: string): Promise<void> {
  const exists = await client.query(`select from pg_roles where rolname = 'realtimed'`);
  const verb = exists.rowCount === 0 ? 'create' : 'alter';
  await client.query(`${verb} role realtimed login password ${client.escapeLiteral(password)}`);
  await client.query('grant anon, authenticated, service_role to realtimed');
}
