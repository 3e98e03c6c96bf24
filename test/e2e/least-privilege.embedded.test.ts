/**
 * The least-privilege install of docs/install.md on a newer major (embedded
 * PostgreSQL, 16+), where a CREATEROLE user holds only ADMIN on the roles it
 * creates: a non-superuser admin (an RDS or Cloud SQL master user) installs
 * the package, grants the daemon its roles, and each privilege the package's
 * owner lacks fails with 42501 and a HINT whose statement, once run, fixes it.
 */
import pg from 'pg';
import t from 'tap';

import { migrate } from '../../src/cli/migrate.js';
import { newCluster } from '../helpers/embedded.js';

type Teardown = { teardown(fn: () => unknown): void };

async function connect(t: Teardown, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  return client;
}

/** The error a statement raises, with its HINT. */
async function failure(client: pg.Client, sql: string): Promise<{ code?: string; message: string; hint?: string }> {
  try {
    await client.query(sql);
  } catch (err) {
    const e = err as pg.DatabaseError;
    return { code: e.code, message: e.message, hint: e.hint };
  }
  throw new Error(`no error from: ${sql}`);
}

/** The statement a HINT says to run: what follows "run: ", up to its semicolon. */
function statementOf(hint: string | undefined): string {
  const m = /run: ([^;]+;)/.exec(hint ?? '');
  if (!m?.[1]) throw new Error(`no statement in hint: ${hint}`);
  return m[1];
}

/** A throwaway cluster of the newest major; its port. */
async function cluster(t: Teardown): Promise<number> {
  return (await newCluster(t, 'postgres')).port;
}

t.test('a CREATEROLE admin installs, grants the daemon, and follows each HINT', async (t) => {
  const port = await cluster(t);
  const url = (user: string, db: string): string => `postgres://${user}:pw@127.0.0.1:${port}/${db}`;

  // What the provider gives you: a master user that is not a superuser.
  const root = new pg.Client({ connectionString: `postgres://postgres:postgres@127.0.0.1:${port}/postgres` });
  await root.connect();
  const version = (await root.query<{ v: number }>(`select current_setting('server_version_num')::int as v`)).rows[0]?.v ?? 0;
  await root.query(`create role app_admin login password 'pw' createrole createdb`);
  await root.end();
  t.ok(version >= 160000, `a newer major (${version})`);

  const admin0 = await connect(t, url('app_admin', 'postgres'));
  await admin0.query('create database app');
  await migrate({ databaseUrl: url('app_admin', 'app') });
  const admin = await connect(t, url('app_admin', 'app'));
  const roles = await admin.query<{ rolname: string; admin_option: boolean; set: boolean }>(`
    select r.rolname, m.admin_option, pg_has_role('app_admin', r.oid, 'SET') as set
    from pg_auth_members m join pg_roles r on r.oid = m.roleid
    where m.member = 'app_admin'::regrole and r.rolname in ('anon', 'authenticated', 'service_role') order by 1`);
  t.same(roles.rows.map((r) => [r.rolname, r.admin_option, r.set]),
    [['anon', true, false], ['authenticated', true, false], ['service_role', true, false]],
    'the installer created the roles: it holds ADMIN on them, not SET');

  // The daemon's login role: the README's statement works for the roles' creator.
  await admin.query(`create role realtimed login password 'pw'`);
  await admin.query('grant anon, authenticated, service_role to realtimed');
  const daemon = await connect(t, url('realtimed', 'app'));
  await daemon.query('begin');
  await daemon.query(`select realtime.impersonate('authenticated')`);
  t.equal((await daemon.query<{ u: string }>('select current_user as u')).rows[0]?.u, 'authenticated', 'the daemon impersonates');
  await daemon.query('rollback');

  // impersonate as the package's owner (pgTAP in CI, say): the HINT's GRANT fixes it.
  const denied = await failure(admin, `select realtime.impersonate('authenticated')`);
  t.equal(denied.code, '42501', 'the owner may not impersonate a role it only administers');
  t.equal(statementOf(denied.hint), 'grant authenticated to app_admin with inherit false, set true;');
  await admin.query(statementOf(denied.hint));
  await admin.query('begin');
  await admin.query(`select realtime.impersonate('authenticated')`);
  t.equal((await admin.query<{ u: string }>('select current_user as u')).rows[0]?.u, 'authenticated', 'after the GRANT it may');
  await admin.query('rollback');

  // A table another role owns.
  await admin.query(`create role app_owner login password 'pw'`);
  await admin.query('grant create on schema public to app_owner');
  await admin.query('grant service_role to app_owner');
  const owner = await connect(t, url('app_owner', 'app'));
  await owner.query('create table public.items (id integer primary key, name text)');
  const noTrigger = await failure(owner, `select realtime.enable_changes('public.items')`);
  t.equal(noTrigger.code, '42501', 'enable_changes without TRIGGER for the package owner');
  t.equal(statementOf(noTrigger.hint), 'grant trigger on table public.items to app_admin;');
  await owner.query(statementOf(noTrigger.hint));
  await owner.query(`select realtime.enable_changes('public.items')`);
  await owner.query(`insert into public.items values (1, 'one')`);
  const published = await admin.query(`select from realtime.messages where channel_name in ('items:changes', 'items:1')`);
  t.equal(published.rowCount, 2, 'after the GRANT, row changes are published');
  await owner.query(`select realtime.enable_changes('public.items', operations => array['insert'])`);
  t.pass('and enable_changes runs again (CREATE OR REPLACE TRIGGER)');

  const noDrop = await failure(owner, `select realtime.disable_changes('public.items')`);
  t.equal(noDrop.code, '42501', 'disable_changes cannot drop a trigger on a table the package owner does not own');
  t.equal(statementOf(noDrop.hint), 'drop trigger realtime_changes on public.items;');
  await owner.query(statementOf(noDrop.hint));
  t.equal((await owner.query<{ off: boolean }>(`select realtime.disable_changes('public.items') as off`)).rows[0]?.off, true,
    'then disable_changes removes the stream');
});

t.test('roles another role created: the grant needs ADMIN, passed on as docs/install.md says', async (t) => {
  const port = await cluster(t);
  const url = (user: string, db: string): string => `postgres://${user}:pw@127.0.0.1:${port}/${db}`;
  const root = await connect(t, `postgres://postgres:postgres@127.0.0.1:${port}/postgres`);
  // A platform made the roles before you arrived.
  await root.query('create role anon nologin; create role authenticated nologin; create role service_role nologin');
  await root.query(`create role app_admin login password 'pw' createrole createdb`);
  const admin0 = await connect(t, url('app_admin', 'postgres'));
  await admin0.query('create database app');
  await migrate({ databaseUrl: url('app_admin', 'app') });
  const admin = await connect(t, url('app_admin', 'app'));
  await admin.query(`create role realtimed login password 'pw'`);
  const refused = await failure(admin, 'grant anon, authenticated, service_role to realtimed');
  t.equal(refused.code, '42501', 'CREATEROLE alone may not grant roles it did not create');

  await root.query('grant anon, authenticated, service_role to app_admin with admin true, inherit false, set false');
  await admin.query('grant anon, authenticated, service_role to realtimed');
  const daemon = await connect(t, url('realtimed', 'app'));
  await daemon.query('begin');
  await daemon.query(`select realtime.impersonate('anon')`);
  t.equal((await daemon.query<{ u: string }>('select current_user as u')).rows[0]?.u, 'anon', 'then it may, and the daemon impersonates');
  await daemon.query('rollback');
});
