/**
 * `realtimed doctor` against real databases: a bare one, the example
 * application, the ways production goes wrong, and LISTEN through a real
 * transaction-mode PgBouncer (installed by .ci/run).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import t from 'tap';

import { freePort } from '../../src/cli/embedded.js';
import { migrate } from '../../src/cli/migrate.js';
import { cli } from '../helpers/cli.js';
import { createDatabase, createLoginRole, urlFor, SERVER_URL, type Teardown } from '../helpers/db.js';
import { loadExamples } from '../helpers/daemon.js';

const PGBOUNCER = '/usr/sbin/pgbouncer';

/** The findings as [LEVEL, check] pairs, and the full text for messages. */
async function doctor(url: string, extra: string[] = []) {
  const r = await cli(['doctor', '--database-url', url, ...extra]);
  const findings = [...r.stdout.matchAll(/^ {2}(ok|WARN|FAIL) +(\S+) +(.*)$/gm)].map((m) => ({ level: m[1], check: m[2], message: m[3] }));
  const find = (check: string) => findings.find((f) => f.check === check);
  return { ...r, findings, find };
}

t.test('a database without the package: FAIL, exit 1', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const r = await doctor(db.url);
  t.equal(r.code, 1);
  t.match(r.find('schema'), { level: 'FAIL', message: /not installed: run realtimed migrate/ });
  t.match(r.stderr, /^realtimed: 1 problem found .*\[RT_ERR_DOCTOR\]\n$/);
});

t.test('the example application as the daemon’s login: all ok but retention', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const r = await doctor(urlFor(db.name, undefined, role));
  t.equal(r.code, 0, r.stderr);
  t.same(
    r.findings.map((f) => [f.level, f.check]),
    [['ok', 'server'], ['ok', 'schema'], ['ok', 'listen'], ['ok', 'delivery'], ['ok', 'roles'], ['ok', 'login'], ['ok', 'rls'], ['ok', 'policies'], ['WARN', 'retention']],
    r.stdout,
  );
  t.match(r.find('delivery'), { level: 'ok', message: /^notify: NOTIFY queue 0\.00% used/ });
  t.match(r.stdout, /\n8 ok, 1 warnings, 0 problems\n$/);
});

t.test('delivery: wal on a server without logical replication fails with the fix; poll is ok', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const walLevel = (await db.pool.query<{ w: string }>(`select current_setting('wal_level') as w`)).rows[0]?.w;
  await db.pool.query(`update realtime.config set delivery = 'wal'`);
  const wal = await doctor(urlFor(db.name, undefined, role));
  if (walLevel === 'logical') {
    t.match(wal.find('delivery'), { level: 'FAIL', message: /may not replicate: a DBA runs: alter role/ });
  } else {
    t.match(wal.find('delivery'), { level: 'FAIL', message: /wal_level is \w+: set wal_level = logical and restart PostgreSQL/ });
  }
  t.equal(wal.code, 1, 'a FAIL exits 1');
  await db.pool.query(`update realtime.config set delivery = 'poll'`);
  const poll = await doctor(urlFor(db.name, undefined, role));
  t.match(poll.find('delivery'), { level: 'ok', message: /^poll: / });
});

t.test('what goes wrong in production is named', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`insert into realtime.channels (pattern) values ('invoice:%'), ('nobody-listens')`);
  const superuser = await doctor(db.url);
  t.match(superuser.find('login'), { level: 'WARN', message: /superuser: run realtimed start as a plain login role/ });
  t.match(superuser.find('policies'), { level: 'WARN', message: /nobody but service_role can subscribe to 'invoice:%', 'nobody-listens'/ });
  t.equal(superuser.code, 0, 'warnings alone exit 0');

  const bare = await createLoginRole(t, ['anon']);
  const unprivileged = await doctor(urlFor(db.name, undefined, bare));
  t.match(unprivileged.find('login'), { level: 'FAIL', message: /not a member of authenticated, service_role/ });
  t.equal(unprivileged.code, 1);

  await db.pool.query(`alter table realtime.messages disable row level security`);
  const open = await doctor(db.url);
  t.match(open.find('rls'), { level: 'FAIL', message: /OFF on realtime\.messages/ });

  await db.pool.query(`alter table realtime.messages enable row level security;
    drop policy "orders: everyone subscribes" on realtime.channels;
    drop policy "order:<id>: the owner subscribes" on realtime.channels;
    drop policy "chat:<id>: members subscribe" on realtime.channels`);
  const closed = await doctor(db.url);
  t.match(closed.find('policies'), { level: 'WARN', message: /no SELECT policy on realtime\.channels .* none of the 5 channels/ });

  await db.pool.query(`create schema cron; create table cron.job (command text, active boolean);
    insert into cron.job values ('select realtime.prune()', true)`);
  t.match((await doctor(db.url)).find('retention'), { level: 'ok', message: /pg_cron job runs realtime\.prune/ });

  await db.pool.query(`create table app.invoices (id int primary key, owner uuid);
    select realtime.enable_changes('app.invoices');`);
  t.match((await doctor(db.url)).find('changes'), { level: 'WARN', message: /app\.invoices .* row-level security is off/ });
  await db.pool.query(`alter table app.invoices enable row level security`);
  t.match((await doctor(db.url)).find('changes'), { level: 'WARN', message: /none of anon, authenticated may SELECT it/ });
  await db.pool.query(`grant usage on schema app to authenticated; grant select on app.invoices to authenticated`);
  t.match((await doctor(db.url)).find('changes'), { level: 'ok', message: /checked against its row-level security for authenticated/ });

  await db.pool.query(`update realtime.schema_versions set version = 99 where version = (select max(version) from realtime.schema_versions)`);
  t.match((await doctor(db.url)).find('schema'), { level: 'FAIL', message: /newer than this realtimed knows/ });
});

t.test('policies: the daemon\'s subscribe check decides, whatever the policy text looks like', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('room:%');
    create policy "rooms: signed-in users subscribe" on realtime.channels for select to authenticated
      using (split_part(pattern, ':', 1) = 'room')`);
  const r = await doctor(db.url);
  t.match(r.find('policies'), { level: 'ok', message: /sample name .* as anon, authenticated \(sub [0-9a-f-]+\); may subscribe: 'room:1' \(authenticated\)$/ }, r.stdout);
  t.notMatch(r.stdout, /nobody but service_role/);

  // Many channels: the line names the first six.
  await db.pool.query(`insert into realtime.channels (pattern) select 'feed' || i from generate_series(1, 7) i;
    create policy "feeds: everyone subscribes" on realtime.channels for select to anon using (pattern like 'feed%')`);
  const many = await doctor(db.url);
  t.match(many.find('policies'), { level: 'ok', message: /\(8 of 8\) .*; may subscribe: 'feed1' \(anon\), .*'feed6' \(anon\) and 2 more$/ }, many.stdout);
  await db.pool.query(`delete from realtime.channels where pattern like 'feed%'`);

  await db.pool.query(`alter policy "rooms: signed-in users subscribe" on realtime.channels using (split_part(pattern, ':', 1) = 'lobby')`);
  const refused = await doctor(db.url);
  t.match(refused.find('policies'), {
    level: 'WARN',
    message: /^nobody but service_role can subscribe to 'room:%': realtime\.authorize_subscriptions refused 'room:1' as anon, authenticated/,
  }, refused.stdout);
});

t.test('policies open to every channel are named with a fix; the demo policies are open on purpose', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(await readFile(new URL('../../sql/demo.sql', import.meta.url), 'utf8'));
  const demo = await doctor(db.url);
  t.match(demo.find('demo'), { level: 'ok', message: /DEMO policies of realtimed dev are installed \(2\): they open demo:% to every client on purpose/ }, demo.stdout);
  t.notOk(demo.find('open'), 'the demo policies name demo:%: not wide open');
  t.match(demo.find('policies'), { level: 'ok', message: /'demo:1' \(anon, authenticated\)/ });

  await db.pool.query(`insert into realtime.channels (pattern) values ('invoice:%');
    create policy "everyone subscribes" on realtime.channels for select to public using (true);
    create policy "signed-in users publish" on realtime.messages for insert to authenticated with check (true);`);
  const open = await doctor(db.url);
  const lines = open.findings.filter((f) => f.check === 'open');
  t.same(lines.map((f) => f.level), ['WARN', 'WARN'], open.stdout);
  t.match(lines[0]?.message, /^policy "everyone subscribes" on realtime\.channels \(using \(true\)\) lets public subscribe to every channel: .* alter policy "everyone subscribes" on realtime\.channels using \(pattern = /);
  t.match(lines[1]?.message, /^policy "signed-in users publish" on realtime\.messages \(with check \(true\)\) lets authenticated publish on every channel: .* with check \(starts_with\(channel_name, /);
  t.equal(open.code, 0, 'warnings alone exit 0');

  // A restrictive policy for the same roles narrows the open one.
  await db.pool.query(`create policy "only demo and invoices" on realtime.channels as restrictive for select to anon, authenticated
    using (pattern in ('demo:%', 'invoice:%'))`);
  const narrowed = await doctor(db.url);
  t.same(narrowed.findings.filter((f) => f.check === 'open').map((f) => f.message?.split(' ')[1]), ['"signed-in'], narrowed.stdout);
});

t.test('retention: messages past the horizon with nothing pruning are a WARN; a running instance counts', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('news');
    select realtime.publish('news', 'old', '{}'); select realtime.publish('news', 'new', '{}');`);
  // Messages are immutable (a trigger refuses updates): skip triggers for this one transaction.
  const client = await db.pool.connect();
  try {
    await client.query(`begin; set local session_replication_role = replica;
      update realtime.messages set created_at = now() - interval '3 days' where event_name = 'old'; commit;`);
  } finally {
    client.release();
  }
  const stale = await doctor(db.url);
  t.match(stale.find('retention'), {
    level: 'WARN',
    message: /^the oldest message is 3 days old, past the retention horizon \(retention 24 hours \+ partition_span 24 hours\), and nothing prunes: pg_cron is not installed/,
  }, stale.stdout);

  // An instance heartbeats as realtimed start does; the old message is still there.
  await db.pool.query(`select realtime.instance_heartbeat(gen_random_uuid(), interval '15 seconds', 'doctor-test', 1)`);
  const held = await doctor(db.url);
  t.match(held.find('retention'), { level: 'WARN', message: /by more than an hour, although 1 running realtimed instance \(realtime\.instances\) drops partitions/ }, held.stdout);

  await db.pool.query(`delete from realtime.messages where event_name = 'old'`);
  const fine = await doctor(db.url);
  t.match(fine.find('retention'), {
    level: 'ok',
    message: /^1 running realtimed instance .*; oldest message \d+ seconds old \(horizon retention 24 hours .* is not recorded in realtime\.instances/,
  }, fine.stdout);
});

t.test('an older schema: FAIL for the schema, and the later checks say what they could not ask', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  // Migrations 1 to 12: before partitions (13) and grouped subscribe checks (15).
  const committed = new URL('../../sql/committed/', import.meta.url);
  const folder = await mkdtemp(join(tmpdir(), 'realtimed-doctor-'));
  t.teardown(() => rm(folder, { recursive: true, force: true }));
  await mkdir(join(folder, 'committed'));
  for (const file of (await readdir(committed)).filter((f) => /^0000(0\d|1[0-2])-/.test(f))) {
    await copyFile(new URL(file, committed), join(folder, 'committed', file));
  }
  t.equal((await migrate({ databaseUrl: db.url, migrationsFolder: folder })).to, 12);
  await db.pool.query(`insert into realtime.channels (pattern) values ('news');
    create policy "news: everyone" on realtime.channels for select to anon, authenticated using (pattern = 'news')`);
  const r = await doctor(db.url);
  t.notMatch(r.stderr, /RT_ERR_DB\b/, r.stderr);
  t.match(r.find('schema'), { level: 'FAIL', message: /version 12, this realtimed needs/ });
  t.match(r.find('policies'), { level: 'WARN', message: /could not ask realtime\.authorize_subscriptions .*\[42883\].* older than version 15/ }, r.stdout);
  t.match(r.find('retention'), { level: 'WARN', message: /^could not check retention \(\[42703\]/ }, r.stdout);
});

/** PgBouncer in transaction mode in front of the test server; its port. */
async function pgbouncer(t: Teardown): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'realtimed-pgbouncer-'));
  await chmod(dir, 0o755);
  const port = await freePort();
  const server = new URL(SERVER_URL);
  const ini = join(dir, 'pgbouncer.ini');
  await writeFile(
    ini,
    `[databases]\n* = host=${server.hostname} port=${server.port || 5432} user=${decodeURIComponent(server.username) || 'postgres'}\n` +
      `[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nauth_type = any\npool_mode = transaction\n` +
      `unix_socket_dir =\nlogfile =\npidfile =\nignore_startup_parameters = extra_float_digits,options\n`,
    { mode: 0o644 },
  );
  // PgBouncer refuses to run as root.
  const ids = userInfo().uid === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) } : {};
  const child = spawn(PGBOUNCER, [ini], { ...ids, stdio: 'ignore' });
  t.teardown(async () => {
    child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < 50; i++) {
    const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.end();
      return port;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error('pgbouncer did not start');
}

const noBouncer = !existsSync(PGBOUNCER) && !process.env['CI'];
t.test('through a transaction-mode PgBouncer: LISTEN fails, --listen-url fixes it', { skip: noBouncer ? `no ${PGBOUNCER}: apt-get install pgbouncer` : false }, async (t) => {
  const db = await createDatabase(t);
  const port = await pgbouncer(t);
  const pooled = `postgres://postgres@127.0.0.1:${port}/${db.name}`;
  const r = await doctor(pooled);
  t.match(r.find('listen'), { level: 'FAIL', message: /did not hear a NOTIFY .* give realtimed start --listen-url a direct connection/ });
  t.equal(r.code, 1);
  const fixed = await doctor(pooled, ['--listen-url', db.url]);
  const listens = fixed.findings.filter((f) => f.check === 'listen');
  t.same(listens.map((f) => f.level), ['ok', 'ok'], fixed.stdout);
  t.match(listens[1]?.message, /works on --listen-url/);
});

t.test('an unknown role in --roles is named and the other checks go on', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  // A change stream with a row check: its readers are looked up per role.
  await db.pool.query(`create table app.invoices (id int primary key);
    alter table app.invoices enable row level security;
    grant select on app.invoices to authenticated;
    select realtime.enable_changes('app.invoices');`);
  const r = await doctor(db.url, ['--roles', 'anon,authenticated,customer']);
  t.equal(r.code, 1, r.stderr);
  t.notMatch(r.stderr, /RT_ERR_DB\b/);
  t.match(r.find('roles'), { level: 'FAIL', message: /role customer does not exist/ });
  t.match(r.find('changes'), { level: 'ok', message: /app\.invoices: .* for authenticated$/ });
  t.ok(r.find('retention'), 'the last check ran');
});
