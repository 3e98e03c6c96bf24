import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import t from 'tap';
import pg from 'pg';

import { migrate } from '../../src/cli/migrate.js';
import { buildScript, loadMigrations, MIGRATIONS_FOLDER } from '../../src/cli/sql.js';
import { cli, runBin } from '../helpers/cli.js';
import { createDatabase, createLoginRole, serverQuery, urlFor } from '../helpers/db.js';

/** Everything a DBA would notice outside schema realtime, as comparable rows. */
const OUTSIDE_REALTIME = `
  with ours(nspname) as (values ('realtime'), ('graphile_migrate'))
  select 'schema' as kind, n.nspname as name, n.nspacl::text as acl, obj_description(n.oid, 'pg_namespace') as comment
  from pg_namespace n
  where n.nspname not in (select nspname from ours) and n.nspname !~ '^pg_(temp|toast)'
  union all
  select 'relation ' || c.relkind::text, n.nspname || '.' || c.relname, c.relacl::text, obj_description(c.oid, 'pg_class')
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname not in (select nspname from ours) and n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname !~ '^pg_(temp|toast)'
  union all
  select 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
         p.proacl::text, obj_description(p.oid, 'pg_proc')
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname not in (select nspname from ours) and n.nspname not in ('pg_catalog', 'information_schema')
  union all
  select 'role', r.rolname,
         concat_ws(',', r.rolcanlogin, r.rolinherit, r.rolsuper, r.rolbypassrls, r.rolcreaterole),
         shobj_description(r.oid, 'pg_authid')
  from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role')
  union all
  select 'database', d.datname, d.datacl::text, null from pg_database d where d.datname = current_database()
  order by 1, 2`;

async function snapshot(url: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(OUTSIDE_REALTIME)).rows;
  } finally {
    await client.end();
  }
}

async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

t.test('migrate installs the package into a fresh database, then is a no-op', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const migrations = await loadMigrations();
  const latest = migrations.length;

  const first = await cli(['migrate', '--database-url', db.url]);
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, `migrated from version 0 to ${latest}`);
  t.match(first.stderr, '000001-foundation.sql');

  const [row] = await query<{ v: number }>(db.url, 'select realtime.version() as v');
  t.equal(row?.v, latest, 'realtime.version() is the latest migration');
  const chain = await query<{ hash: string }>(db.url, 'select hash from graphile_migrate.migrations order by filename');
  t.same(chain.map((r) => r.hash), migrations.map((m) => m.hash), 'graphile_migrate records our chain');

  const before = await snapshot(db.url);
  const again = await cli(['migrate'], { DATABASE_URL: db.url });
  t.equal(again.code, 0);
  t.equal(again.stdout, `realtime schema is up to date (version ${latest})\n`);
  t.equal(again.stderr, '', 'nothing applied, nothing logged');
  t.same(await snapshot(db.url), before);
});

t.test('migrate leaves existing roles and other schemas alone', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  await db.pool.query(`
    create schema app;
    create table app.orders (id int primary key, owner_id uuid);
    comment on table app.orders is 'the application''s own';
    create function app.answer() returns int language sql as 'select 42';
    grant usage on schema app to anon;`);
  // anon/authenticated/service_role exist on this server already (the template or an earlier run).
  const roles = await query<{ n: number }>(
    db.url,
    `select count(*)::int as n from pg_roles where rolname in ('anon', 'authenticated', 'service_role')`,
  );
  t.equal(roles[0]?.n, 3, 'the roles exist before migrating');
  const before = await snapshot(db.url);

  const result = await migrate({ databaseUrl: db.url });
  t.equal(result.from, 0);
  t.ok(result.applied.length > 0);
  t.same(await snapshot(db.url), before, 'no object, grant, comment or role outside realtime changed');
});

t.test('two migrate runs at once: one applies, the other waits and finds it current', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const [a, b] = await Promise.all([migrate({ databaseUrl: db.url }), migrate({ databaseUrl: db.url })]);
  t.same([a.applied.length > 0, b.applied.length > 0].sort(), [false, true]);
});

t.test('a database whose application uses graphile-migrate: refuse, then the plain script', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  await db.pool.query(`
    create schema graphile_migrate;
    create table graphile_migrate.migrations (hash text primary key, previous_hash text references graphile_migrate.migrations,
      filename text not null, date timestamptz not null default now());
    create table graphile_migrate.current (filename text primary key default 'current.sql', content text not null,
      date timestamptz not null default now());
    insert into graphile_migrate.migrations (hash, previous_hash, filename) values ('sha1:app1', null, '000001.sql');`);
  const before = await snapshot(db.url);

  const refused = await cli(['migrate', '--database-url', db.url]);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /\[RT_ERR_FOREIGN_CHAIN\]\n$/);
  t.match(refused.stderr, 'realtimed sql', 'the message offers the way out');
  t.equal(refused.stderr.split('\n').length, 2, 'one line');
  const schemas = await query(db.url, `select from pg_namespace where nspname = 'realtime'`);
  t.equal(schemas.length, 0, 'no realtime schema');
  t.same(await snapshot(db.url), before, 'nothing changed');

  const script = await cli(['sql']);
  t.equal(script.code, 0);
  await db.pool.query(script.stdout);
  const [v] = await query<{ v: number }>(db.url, 'select realtime.version() as v');
  t.equal(v?.v, (await loadMigrations()).length, 'the script installed the package');
  const appChain = await query<{ hash: string }>(db.url, 'select hash from graphile_migrate.migrations');
  t.same(appChain, [{ hash: 'sha1:app1' }], "the application's chain is untouched");

  const installed = await snapshot(db.url);
  await db.pool.query(script.stdout);
  t.same(await snapshot(db.url), installed, 'applying the script twice changes nothing');
  const upgrade = await cli(['sql', '--from', String(v?.v)]);
  t.equal(upgrade.code, 0);
  await db.pool.query(upgrade.stdout);

  const again = await cli(['migrate', '--database-url', db.url]);
  t.equal(again.code, 2, 'migrate still refuses (the chain is the application’s)');
  t.match(again.stderr, 'RT_ERR_FOREIGN_CHAIN');
});

t.test('a database installed from the script: migrate says so, keeps it chain-free, applies what is newer', async (t) => {
  const migrations = await loadMigrations();
  const latest = migrations.length;
  const db = await createDatabase(t, { migrated: false });
  // Installed from the script of an older package (all but the last migration), as a DBA would have.
  await db.pool.query(buildScript(migrations.slice(0, latest - 1)));
  const older = await cli(['migrate', '--database-url', db.url]);
  t.equal(older.code, 0, older.stderr);
  t.match(older.stdout, `migrated from version ${latest - 1} to ${latest} (1 applied; installed from the plain script (realtimed sql), so no graphile-migrate chain was created)`);
  t.match(older.stderr, 'no graphile-migrate chain: this database was installed from the plain script');
  const [v] = await query<{ v: number }>(db.url, 'select realtime.version() as v');
  t.equal(v?.v, latest, 'the newer migration was applied');
  t.same(await query(db.url, `select from pg_namespace where nspname = 'graphile_migrate'`), [], 'no graphile_migrate schema was created');

  const before = await snapshot(db.url);
  const current = await cli(['migrate', '--database-url', db.url]);
  t.equal(current.code, 0, 'a deploy pipeline that always runs migrate passes');
  t.match(current.stdout, `up to date (version ${latest}; installed from the plain script`);
  t.same(await snapshot(db.url), before, 'nothing changed');
  const upgrade = await cli(['sql', '--from', String(latest)]);
  t.equal(upgrade.code, 0, 'and the script path still works for it');
  await db.pool.query(upgrade.stdout);
});

t.test('installed by migrate, upgraded with sql --from: migrate records those versions and goes on', async (t) => {
  const migrations = await loadMigrations();
  const latest = migrations.length;
  const db = await createDatabase(t, { migrated: false });
  const folder = await mkdtemp(join(tmpdir(), 'realtimed-migrate-'));
  t.teardown(() => rm(folder, { recursive: true, force: true }));
  await mkdir(join(folder, 'committed'));
  const base = latest - 2;
  for (const m of migrations.slice(0, base)) {
    await copyFile(join(MIGRATIONS_FOLDER, 'committed', m.filename), join(folder, 'committed', m.filename));
  }
  t.equal((await migrate({ databaseUrl: db.url, migrationsFolder: folder })).to, base, `migrate installed version ${base}`);
  // The next release's upgrade went through the script: one migration, then migrate again.
  await db.pool.query(buildScript(migrations.slice(0, base + 1), { from: base }));

  const lines: string[] = [];
  const result = await migrate({ databaseUrl: db.url, log: (line) => lines.push(line) });
  t.same(result.scriptInstalled, { how: 'adopted', versions: [base + 1] });
  t.same(result.applied, [migrations[latest - 1]?.filename], 'only what is newer was applied');
  t.equal(result.to, latest);
  t.match(lines.join('\n'), `versions ${base + 1} to ${base + 1} were applied by the plain script`);
  const chain = await query<{ filename: string }>(db.url, 'select filename from graphile_migrate.migrations order by filename');
  t.same(chain.map((r) => r.filename), migrations.map((m) => m.filename), 'the chain now records every version, in order');
  const again = await cli(['migrate', '--database-url', db.url]);
  t.equal(again.code, 0);
  t.match(again.stdout, `up to date (version ${latest})`);
});

t.test('versions with a gap, or a chain ahead of the schema: refused, nothing changed', async (t) => {
  const migrations = await loadMigrations();
  const gap = await createDatabase(t, { migrated: false });
  await gap.pool.query(buildScript(migrations));
  await gap.pool.query(`delete from realtime.schema_versions where version = 3`);
  const before = await snapshot(gap.url);
  const refused = await cli(['migrate', '--database-url', gap.url]);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /with gaps.*\[RT_ERR_MIGRATION\]/);
  t.same(await snapshot(gap.url), before);

  const ahead = await createDatabase(t, { migrated: false });
  t.equal((await migrate({ databaseUrl: ahead.url })).to, migrations.length);
  await ahead.pool.query(`delete from realtime.schema_versions where version = $1`, [migrations.length]);
  const behind = await cli(['migrate', '--database-url', ahead.url]);
  t.equal(behind.code, 2);
  t.match(behind.stderr, /graphile_migrate\.migrations records \d+ migrations.*\[RT_ERR_MIGRATION\]/);
});

t.test('a migration that only makes a trigger on channels waits for no transaction reading channels', async (t) => {
  const migrations = await loadMigrations();
  const v17 = migrations.findIndex((m) => m.filename.startsWith('000017-'));
  const db = await createDatabase(t, { migrated: false });
  const folder = await mkdtemp(join(tmpdir(), 'realtimed-migrate-'));
  t.teardown(() => rm(folder, { recursive: true, force: true }));
  await mkdir(join(folder, 'committed'));
  for (const m of migrations.slice(0, v17)) {
    await copyFile(join(MIGRATIONS_FOLDER, 'committed', m.filename), join(folder, 'committed', m.filename));
  }
  await migrate({ databaseUrl: db.url, migrationsFolder: folder });
  // An application transaction that published (it read channels) and is still open.
  const open = new pg.Client({ connectionString: db.url });
  await open.connect();
  t.teardown(() => open.end());
  await open.query(`begin; select realtime.publish('x:1', 'e', '{}')`).catch(() => undefined);
  await open.query('select 1 from realtime.channels limit 1');
  const started = Date.now();
  const result = await migrate({ databaseUrl: db.url });
  t.equal(result.to, migrations.length, `upgraded past 000017 in ${Date.now() - started} ms with the transaction open`);
  const held = await query<{ mode: string }>(db.url, `select mode from pg_locks where pid = $1 and relation = 'realtime.channels'::regclass`, [
    (await open.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid,
  ]);
  t.same(held, [{ mode: 'AccessShareLock' }], 'the open transaction still holds its lock: nothing waited for it to end');
  await open.query('rollback');
});

t.test('a database newer than this realtimed: refused, nothing changed', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const migrations = await loadMigrations();
  await db.pool.query(buildScript(migrations));
  await db.pool.query(`insert into realtime.schema_versions (version, name) values ($1, 'from the future')`, [migrations.length + 1]);
  const before = await snapshot(db.url);
  const refused = await cli(['migrate', '--database-url', db.url]);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /newer than this realtimed.*\[RT_ERR_VERSION\]/);
  t.same(await snapshot(db.url), before);
});

t.test('another product’s realtime schema: refuse and change nothing, both paths', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  await db.pool.query(`create schema realtime; create table realtime.subscription (id bigint);`);
  const before = await snapshot(db.url);

  const refused = await cli(['migrate', '--database-url', db.url]);
  t.equal(refused.code, 2);
  t.match(refused.stderr, 'RT_ERR_FOREIGN_SCHEMA');
  t.same(await snapshot(db.url), before);
  const gm = await query(db.url, `select from pg_namespace where nspname = 'graphile_migrate'`);
  t.equal(gm.length, 0, 'not even graphile_migrate was created');

  await t.rejects(db.pool.query((await cli(['sql'])).stdout), {
    message: /already exists and was not created by realtimed/,
  });
  const tables = await query<{ relname: string }>(
    db.url,
    `select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'realtime'`,
  );
  t.same(tables, [{ relname: 'subscription' }], 'the script changed nothing either');
  t.same(await snapshot(db.url), before);
});

t.test('CLI errors: one line naming the problem, exit code 2, no stack trace', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const noPrivileges = await createLoginRole(t);
  await serverQuery(`revoke create on database ${pg.escapeIdentifier(db.name)} from public`);

  const cases: [string, string[], NodeJS.ProcessEnv, string][] = [
    ['no URL at all', ['migrate'], {}, 'RT_ERR_DB_URL'],
    ['not a URL', ['migrate', '--database-url', 'localhost:5432'], {}, 'RT_ERR_DB_URL'],
    ['not postgres', ['migrate', '--database-url', 'mysql://root@127.0.0.1/db'], {}, 'RT_ERR_DB_URL'],
    ['bad DATABASE_URL', ['migrate'], { DATABASE_URL: '::' }, 'RT_ERR_DB_URL'],
    ['unreachable', ['migrate', '--database-url', 'postgres://postgres@127.0.0.1:1/x'], {}, 'RT_ERR_DB_UNREACHABLE'],
    ['unknown host', ['migrate', '--database-url', 'postgres://postgres@no-such-host.invalid/x'], {}, 'RT_ERR_DB_UNREACHABLE'],
    ['missing database', ['migrate', '--database-url', urlFor(`${db.name}_missing`)], {}, 'RT_ERR_DB_MISSING'],
    ['missing privileges', ['migrate', '--database-url', urlFor(db.name, undefined, noPrivileges)], {}, 'RT_ERR_DB_PRIVILEGE'],
    ['bad --from', ['sql', '--from', '999'], {}, 'RT_ERR_VERSION'],
  ];
  for (const [name, args, env, code] of cases) {
    const r = await runBin(args, env);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, new RegExp(`^realtimed: [^\\n]+ \\[${code}\\]\\n$`), `${name}: one line with ${code}`);
    t.notMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`);
  }
  const usage = await runBin(['migrate', '--no-such-flag']);
  t.equal(usage.code, 2, 'unknown option: exit 2');
  t.match(usage.stderr, /^realtimed: unknown option '--no-such-flag' \(see --help\) \[RT_ERR_USAGE\]\n$/, 'one line with RT_ERR_USAGE');
});

t.test('npx realtimed --help and --version work from the built binary', async (t) => {
  const help = await runBin(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, 'migrate');
  t.match(help.stdout, 'sql');
  const version = await runBin(['--version']);
  t.equal(version.code, 0);
  t.match(version.stdout, /^\d+\.\d+\.\d+/);
});
