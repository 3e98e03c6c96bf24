#!/usr/bin/env node
// What the realtime publish path costs per business transaction (the cost
// table in docs/performance.md). pgbench, connected as the application role
// app_writer, inserts one row into app.orders per transaction (--clients, 4 by default,
// 2 threads); the variants differ only in what that INSERT sets off:
//   plain     nothing;
//   notify    a trigger calling pg_notify: the floor an application writes by hand;
//   publish   a trigger calling realtime.publish (bench/publish-cost/*.sql);
//   the rest  publish with one piece of realtime.messages removed, so that the
//             piece's cost shows as the difference to publish.
// Each variant has its own database, cloned from one migrated template. Runs
// are interleaved (every variant once per run, in the same order) and medians
// reported, with synchronous_commit on and off.
//
//   node bench/publish-cost.mjs [--seconds 10] [--runs 3] [--clients 4] [--only plain,publish] [--json FILE]
//                               [--realtimed DIR]
//
// --realtimed: the built realtimed checkout whose `bin/realtimed.js migrate`
// installs the package (default: this one, after `npm run build`), to measure
// another version of the schema with the same harness.
//
// Creates databases rt_cost_* and, when missing, the role app_writer on
// DATABASE_URL's server (pgbench logs in as app_writer without a password),
// and drops what it created, also on failure or Ctrl-C.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import pg from 'pg';

import { log, median, SERVER, sleep } from './lib/common.mjs';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string' },
    json: { type: 'string' },
    realtimed: { type: 'string' },
    clients: { type: 'string', default: '4' },
  },
});
const CLIENTS = args.clients;
const SECONDS = Number(args.seconds);
const RUNS = Number(args.runs);
const ONLY = args.only?.split(',');

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REALTIMED = resolve(args.realtimed ?? ROOT);
const HERE = fileURLToPath(new URL('publish-cost/', import.meta.url));
const sqlFile = (name) => readFileSync(`${HERE}${name}.sql`, 'utf8');
const PREFIX = `rt_cost_${randomBytes(3).toString('hex')}`;
const ROLE = 'app_writer';
const MODES = ['on', 'off']; // synchronous_commit
const MEASURED = ['plain', 'notify', 'publish']; // WAL, MultiXacts, storage

// Every variant, in run order. `base`: the trigger file put on app.orders (none
// for plain). `sql`: run as postgres after it, to remove one piece of the
// publish path. `each`: a catalog query giving one variant per row (name,
// removes, sql). Objects are found in the catalog where they can be, since the
// schema changes (a later version partitions realtime.messages and drops the
// foreign key); a variant whose SQL fails is reported n/a.
const VARIANTS = [
  { name: 'plain', removes: 'the trigger: the INSERT alone', base: null },
  { name: 'notify', removes: 'realtime.publish, for pg_notify (the floor)', base: 'notify' },
  { name: 'publish', removes: 'nothing: the full publish path', base: 'publish' },
  {
    name: 'publish-wal-or-poll',
    removes: "the notification, as realtime.config.delivery = 'poll' (or 'wal') does (14 on)",
    base: 'publish',
    sql: `update realtime.config set delivery = 'poll'`,
  },
  {
    // Every index but the primary key; one backing a constraint goes with it.
    base: 'publish',
    each: `
      select 'no-index:' || i.relname as name,
             'index: ' || coalesce(obj_description(i.oid, 'pg_class'), obj_description(c.oid, 'pg_constraint'), i.relname) as removes,
             case when c.oid is null then format('drop index realtime.%I', i.relname)
                  else format('alter table realtime.messages drop constraint %I', c.conname) end as sql
      from pg_index x
      join pg_class i on i.oid = x.indexrelid
      left join pg_constraint c on c.conindid = x.indexrelid and c.conrelid = x.indrelid
      where x.indrelid = 'realtime.messages'::regclass and not x.indisprimary
      order by i.relname`,
  },
  {
    name: 'no-notify',
    removes: 'the NOTIFY: the messages_notify trigger (through 12), the pg_notify calls of the insert trigger (13 on)',
    base: 'publish',
    sql: `do $do$
      declare v text;
      begin
        if exists (select from pg_trigger where tgrelid = 'realtime.messages'::regclass and tgname = 'messages_notify') then
          drop trigger messages_notify on realtime.messages;
        else
          v := pg_get_functiondef('realtime.messages_before_insert()'::regprocedure);
          v := regexp_replace(v, 'perform pg_catalog\\.pg_notify\\(''realtime_messages''[^;]*;', '', 'g');
          if v !~ 'pg_notify' then execute v; else raise exception 'no notification to take out'; end if;
        end if;
      end $do$`,
  },
  {
    name: 'no-webhooks',
    // 'order:%' has no webhook URLs, so the trigger's WHEN clause is false.
    removes: 'the webhook trigger (messages_enqueue_webhooks): here only its WHEN clause',
    base: 'publish',
    sql: 'drop trigger messages_enqueue_webhooks on realtime.messages',
  },
  {
    name: 'no-fk',
    removes: 'the foreign key to realtime.channels',
    base: 'publish',
    sql: `do $do$
      declare r record;
      begin
        for r in select conname from pg_constraint
                 where conrelid = 'realtime.messages'::regclass and confrelid = 'realtime.channels'::regclass and contype = 'f'
        loop
          execute format('alter table realtime.messages drop constraint %I', r.conname);
        end loop;
        if not found then raise exception 'no foreign key from realtime.messages to realtime.channels'; end if;
      end $do$`,
  },
  {
    name: 'no-rls',
    // The trigger runs as postgres, and a superuser is never subject to RLS.
    removes: 'the row-level security check: none here, the publishing trigger runs as a superuser',
    base: 'publish',
    sql: 'alter table realtime.messages disable row level security',
  },
  {
    name: 'min-before-insert',
    removes: 'the before-insert trigger, for one that sets sender_type and a constant channel_id (and notifies, from 13 on)',
    base: 'publish',
    // tgtype bits: 1 row, 2 before, 4 insert.
    sql: `do $do$
      declare r record;
      begin
        for r in select tgname from pg_trigger
                 where tgrelid = 'realtime.messages'::regclass and not tgisinternal and tgtype & 7 = 7
        loop
          execute format('drop trigger %I on realtime.messages', r.tgname);
        end loop;
        if not found then raise exception 'no before-insert row trigger on realtime.messages'; end if;
        execute format($f$
          create function realtime.bench_minimal_before_insert() returns trigger
          language plpgsql set search_path = '' as $b$
          begin
            new.sender_type := 'system';
            new.channel_id := %L;
            %s
            return new;
          end $b$
          $f$, (select id from realtime.channels where pattern = 'order:%'),
          -- Since 13 the insert trigger also sends the notification: so does this one.
          case when exists (select from pg_trigger where tgrelid = 'realtime.messages'::regclass and tgname = 'messages_notify')
               then '' else 'perform pg_catalog.pg_notify(''realtime_messages'', new.id::text);' end);
        create trigger messages_before_insert before insert on realtime.messages
          for each row execute function realtime.bench_minimal_before_insert();
      end $do$`,
  },
];

// ------------------------------------------------------------ plumbing

const created = []; // databases to drop, registered before they exist
let createdRole = false;
let child = null; // the running pgbench or migrate, to stop on Ctrl-C
let interrupted = false;

function onSignal(signal) {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping, then dropping the databases`);
  child?.kill('SIGINT');
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
const stopIfInterrupted = () => {
  if (interrupted) throw new Error('interrupted');
};

const dbUrl = (db) => {
  const u = new URL(SERVER);
  if (db) u.pathname = `/${db}`;
  return u.toString();
};

/** Runs fn with a fresh client to db (the server's own database when omitted). */
async function withDb(db, fn) {
  const c = new pg.Client({ connectionString: dbUrl(db) });
  c.on('error', () => {}); // reported by the query that fails
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Runs a program; resolves with its output (stdout and stderr), rejects on a non-zero exit. */
function run(cmd, argv, env = {}) {
  return new Promise((resolve, reject) => {
    let out = '';
    child = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.once('error', reject);
    child.once('exit', (code) => {
      child = null;
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code}: ${out.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

async function createDatabase(db, template) {
  created.push(db);
  await withDb(null, (c) => c.query(`create database ${db}${template ? ` template ${template}` : ''}`));
}

// ------------------------------------------------------------ setup

/** app_writer: a login role with nothing of realtime's. Reused (and kept) if it exists. */
async function setupRole() {
  await withDb(null, async (c) => {
    const { rows } = await c.query('select rolsuper from pg_roles where rolname = $1', [ROLE]);
    if (rows.length > 0) {
      if (rows[0].rolsuper) throw new Error(`role ${ROLE} exists and is a superuser: it would skip the checks measured here`);
      log(`role ${ROLE} exists: using it, and leaving it`);
      return;
    }
    await c.query(`create role ${ROLE} login nosuperuser`);
    createdRole = true;
  });
}

/** The migrated template every variant's database is cloned from. */
async function setupTemplate() {
  const tpl = `${PREFIX}_template`;
  await createDatabase(tpl);
  await run(process.execPath, [join(REALTIMED, 'bin/realtimed.js'), 'migrate', '--database-url', dbUrl(tpl)]);
  await withDb(tpl, async (c) => {
    await c.query(sqlFile('business'));
    // To tell this database's WAL from the rest of the server's (optional).
    await c.query('create extension pg_walinspect').catch((err) => log(`no pg_walinspect (${err.message}): WAL and MultiXacts are the server's only`));
  });
  return tpl;
}

/** VARIANTS with each `each` row expanded from the template's catalog, filtered by --only. */
async function expand(tpl) {
  const list = [];
  for (const v of VARIANTS) {
    if (!v.each) list.push({ ...v });
    else list.push(...(await withDb(tpl, (c) => c.query(v.each))).rows.map((r) => ({ ...r, base: v.base })));
  }
  return list.filter((v) => !ONLY || ONLY.includes(v.name) || ONLY.includes(v.name.split(':')[0]));
}

/** The variant's own database: the template, its trigger, its removal. */
async function prepare(v, i, tpl) {
  v.db = `${PREFIX}_${i}`;
  v.runs = [];
  await createDatabase(v.db, tpl);
  try {
    await withDb(v.db, async (c) => {
      if (v.base) await c.query(sqlFile(v.base));
      if (v.sql) await c.query(v.sql);
    });
  } catch (err) {
    v.na = err.message.split('\n')[0];
    log(`${v.name}: n/a (${v.na})`);
  }
}

// ------------------------------------------------------------ measuring

const walPosition = async (c) => (await c.query('select pg_current_wal_lsn()::text as l')).rows[0].l;
const walBytes = (from, to) => {
  const n = (lsn) => lsn.split('/').reduce((hi, lo) => (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`));
  return Number(n(to) - n(from));
};

const hasWalinspect = async (c) => (await c.query(`select 1 from pg_extension where extname = 'pg_walinspect'`)).rowCount === 1;

/**
 * This database's share of the WAL between two positions: records touching
 * its relations, and every record of the transactions that wrote them
 * (commits, MultiXact creations). Null without pg_walinspect.
 */
async function ownWal(c, from, to) {
  if (!(await hasWalinspect(c))) return null;
  // pg_walinspect reads only flushed WAL; the WAL writer flushes asynchronous
  // commits within wal_writer_delay (200 ms by default).
  for (let i = 0; i < 50 && !(await c.query('select pg_current_wal_flush_lsn() >= $1::pg_lsn as ok', [to])).rows[0].ok; i++) await sleep(100);
  const { rows: [r] } = await c.query(
    `with r as (select xid, resource_manager, record_type, record_length, fpi_length, block_ref from pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)),
          ours as (select distinct xid from r where block_ref like $3 and xid <> '0'::xid)
     select coalesce(sum(record_length), 0)::float8 as bytes,
            coalesce(sum(fpi_length), 0)::float8 as fpi,
            count(*) filter (where resource_manager = 'MultiXact' and record_type = 'CREATE_ID')::float8 as multixacts
     from r where block_ref like $3 or xid in (select xid from ours)`,
    [from, to, `% rel %/${(await c.query('select oid from pg_database where datname = current_database()')).rows[0].oid}/%`],
  );
  return r;
}
// The next MultiXact id is only written to pg_control at a checkpoint.
const nextMultixact = async (c) => Number((await c.query('select next_multixact_id::text as m from pg_control_checkpoint()')).rows[0].m);

// Transactions in databases not ours, by database: the server is shared, and
// its WAL and MultiXact counters and the cores with it. A run with many is
// suspect. A database dropped meanwhile is left out; one created (or made
// again under the same name) counts whole.
const otherTx = async (c) =>
  new Map((await c.query(`select datname, (xact_commit + xact_rollback)::float8 as n from pg_stat_database where datname not like 'rt\\_cost\\_%'`)).rows.map((r) => [r.datname, r.n]));
const otherTxSince = async (c, before) =>
  [...(await otherTx(c))].reduce((sum, [db, n]) => sum + (n >= (before.get(db) ?? 0) ? n - (before.get(db) ?? 0) : n), 0);

async function pgbench(db, mode) {
  const u = new URL(SERVER);
  const out = await run(
    'pgbench',
    ['-n', '-c', CLIENTS, '-j', '2', '-T', String(SECONDS), '-f', `${HERE}orders.pgbench`, '-h', u.hostname, '-p', u.port || '5432', '-U', ROLE, db],
    { PGOPTIONS: `-c synchronous_commit=${mode}` },
  );
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out);
  const tx = /number of transactions actually processed: (\d+)/.exec(out);
  if (!tps || !tx) throw new Error(`unexpected pgbench output: ${out}`);
  return { tps: Number(tps[1]), tx: Number(tx[1]) };
}

/**
 * One pgbench run of a variant. Every run starts alike: a VACUUM (no dead
 * rows or stale visibility map from the last run) and a CHECKPOINT (no dirty
 * pages left to write, and full-page images again from the start). WAL and
 * MultiXact counters are the server's, other sessions' work included;
 * ownWal() tells this database's share.
 */
async function runOnce(v, mode) {
  const measure = MEASURED.includes(v.name);
  return withDb(v.db, async (c) => {
    await c.query('vacuum app.orders, realtime.messages');
    await c.query('checkpoint');
    // Other sessions' checkpoints (DROP DATABASE makes one) would recycle the
    // run's WAL before pg_walinspect reads it; a temporary slot, gone with
    // this session, keeps it.
    if (measure && (await hasWalinspect(c))) await c.query('select pg_create_physical_replication_slot($1, true, true)', [v.db]);
    const before = { others: await otherTx(c), wal: await walPosition(c), mx: await nextMultixact(c) };
    const result = await pgbench(v.db, mode);
    const others = await otherTxSince(c, before.others);
    if (!measure) return { ...result, others };
    const wal = await walPosition(c);
    const own = await ownWal(c, before.wal, wal).catch((err) => log(`pg_walinspect: ${err.message}`));
    await c.query('checkpoint');
    const mx = await nextMultixact(c);
    return {
      ...result,
      others,
      walBytes: walBytes(before.wal, wal),
      multixacts: (mx - before.mx + 2 ** 32) % 2 ** 32,
      ownWalBytes: own?.bytes ?? null,
      ownFpiBytes: own?.fpi ?? null,
      ownMultixacts: own?.multixacts ?? null,
    };
  });
}

/** What the variant's database holds after all runs: messages, their size, HOT updates. */
async function storage(v) {
  return withDb(v.db, async (c) => {
    const { rows: [r] } = await c.query(`
      select (select count(*) from app.orders)::float8 as orders,
             (select count(*) from realtime.messages)::float8 as messages,
             (select avg(octet_length(payload::text)) from realtime.messages)::float8 as payload_avg,
             (select min(octet_length(payload::text)) from realtime.messages) as payload_min,
             (select max(octet_length(payload::text)) from realtime.messages) as payload_max,
             sum(pg_total_relation_size(t.relid))::float8 as bytes,
             coalesce(sum(s.n_tup_upd), 0)::float8 as upd,
             coalesce(sum(s.n_tup_hot_upd), 0)::float8 as hot
      -- The table, and every partition when it is partitioned (pg_partition_tree
      -- gives nothing for a plain table). Sizes include indexes and TOAST.
      from (select 'realtime.messages'::regclass as relid
            union select relid from pg_partition_tree('realtime.messages')) t
      left join pg_stat_user_tables s on s.relid = t.relid`);
    return r;
  });
}

// ------------------------------------------------------------ report

const fmt = (n, digits = 0) => (n === null || n === undefined ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const okRuns = (v, mode) => v.runs.filter((r) => r.mode === mode && r.tps !== undefined);
const tps = (v, mode) => (v.na || okRuns(v, mode).length === 0 ? null : median(okRuns(v, mode).map((r) => r.tps)));
const medianRun = (v, mode) => okRuns(v, mode).find((r) => r.tps === tps(v, mode));

function costTable(variants) {
  const by = (name) => variants.find((v) => v.name === name);
  const notifyOn = by('notify') && tps(by('notify'), 'on');
  const publishOn = by('publish') && tps(by('publish'), 'on');
  const lines = [
    '| variant | what it removes | tx/s sync on | tx/s sync off | ratio to `notify` (on) | µs per publish of the removed piece (on) |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const v of variants) {
    const on = tps(v, 'on');
    const cost = v.name === 'publish' || !on || !publishOn ? null : 1e6 / publishOn - 1e6 / on;
    lines.push(`| ${v.name} | ${v.removes} | ${fmt(on)} | ${fmt(tps(v, 'off'))} | ${on && notifyOn ? fmt(on / notifyOn, 2) : 'n/a'} | ${v.name === 'publish' ? '—' : fmt(cost, 1)} |`);
  }
  return lines.join('\n');
}

function resourceTable(variants) {
  const lines = [
    '| variant | WAL bytes/tx, on | WAL bytes/tx, off | MultiXacts per 1,000 tx, on | MultiXacts per 1,000 tx, off | bytes per stored message | HOT updates of realtime.messages |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const v of variants.filter((v) => MEASURED.includes(v.name) && !v.na)) {
    const [on, off] = MODES.map((m) => medianRun(v, m));
    // The server's figure, then this database's own when pg_walinspect could tell.
    const per = (r, key, k, digits) => fmt((k * r[key]) / r.tx, digits);
    const wal = (r) =>
      !r ? 'n/a' : `${per(r, 'walBytes', 1, 0)}${r.ownWalBytes === null ? '' : ` (own ${per(r, 'ownWalBytes', 1, 0)}, FPI ${per(r, 'ownFpiBytes', 1, 0)})`}`;
    const mx = (r) => (!r ? 'n/a' : `${per(r, 'multixacts', 1000, 1)}${r.ownMultixacts === null ? '' : ` (own ${per(r, 'ownMultixacts', 1000, 1)})`}`);
    const s = v.storage;
    const perMessage = s.messages > 0 ? fmt(s.bytes / s.messages) : 'no messages';
    const hot = s.upd > 0 ? `${fmt((100 * s.hot) / s.upd)}% of ${fmt(s.upd)}` : 'no updates';
    lines.push(`| ${v.name} | ${wal(on)} | ${wal(off)} | ${mx(on)} | ${mx(off)} | ${perMessage} | ${hot} |`);
  }
  lines.push('', 'WAL and MultiXacts: the server\'s counters (pg_current_wal_lsn(), pg_control_checkpoint()) over the median run;',
    '"own" counts only this database\'s WAL records and the transactions that wrote them (pg_walinspect), "FPI" the',
    'full-page images among them: each run starts at a checkpoint, so their share falls as runs get longer.');
  return lines.join('\n');
}

/** Warnings for publish variants that wrote fewer messages than orders (dropped, or not published). */
function checks(variants) {
  const short = variants.filter((v) => v.base === 'publish' && !v.na && v.storage.messages !== v.storage.orders);
  if (short.length === 0) return [];
  return ['Fewer messages than orders (see realtime.dropped_messages):',
    ...short.map((v) => `- ${v.name}: ${fmt(v.storage.messages)} messages for ${fmt(v.storage.orders)} orders`)];
}

// ------------------------------------------------------------ main

const command = [
  process.env.DATABASE_URL ? `DATABASE_URL=${process.env.DATABASE_URL}` : null,
  `node bench/publish-cost.mjs --seconds ${SECONDS} --runs ${RUNS} --clients ${CLIENTS}`,
  ONLY ? `--only ${ONLY.join(',')}` : null,
  args.realtimed ? `--realtimed ${args.realtimed}` : null,
].filter(Boolean).join(' ');

async function main() {
  await setupRole();
  const tpl = await setupTemplate();
  const schema = await withDb(tpl, (c) => c.query('select max(filename) as f from graphile_migrate.migrations'))
    .then(({ rows }) => rows[0].f, () => 'unknown');
  const variants = await expand(tpl);
  for (const [i, v] of variants.entries()) {
    stopIfInterrupted();
    await prepare(v, i, tpl);
  }
  const live = variants.filter((v) => !v.na);
  for (let r = 1; r <= RUNS; r++) {
    for (const v of live) {
      for (const mode of MODES) {
        stopIfInterrupted();
        try {
          const result = await runOnce(v, mode);
          v.runs.push({ run: r, mode, ...result });
          const others = result.others > 0 ? ` (other databases: ${fmt(result.others)} tx meanwhile)` : '';
          log(`run ${r}/${RUNS} ${v.name}, synchronous_commit=${mode}: ${fmt(result.tps)} tx/s${others}`);
        } catch (err) {
          stopIfInterrupted();
          v.runs.push({ run: r, mode, error: err.message });
          log(`run ${r}/${RUNS} ${v.name}, synchronous_commit=${mode}: failed: ${err.message}`);
        }
      }
    }
  }
  for (const v of live) v.storage = await storage(v);

  const { rows: [{ server_version: version }] } = await withDb(null, (c) => c.query('show server_version'));
  const publish = live.find((v) => v.name === 'publish')?.storage;
  const out = [
    `Medians of ${RUNS} run(s) of ${SECONDS} s per variant and mode, interleaved; pgbench -c 4 -j 2, one INSERT into app.orders`,
    `per transaction, as ${ROLE}; PostgreSQL ${version}; realtime through ${schema}.`,
    'The µs column is 1e6/tps(publish) − 1e6/tps(variant).',
    '',
    costTable(variants),
    '',
    resourceTable(variants),
    '',
    publish?.messages > 0
      ? `Payload: ${fmt(publish.payload_avg)} bytes of JSON text on average (${publish.payload_min} to ${publish.payload_max}).`
      : null,
    ...checks(variants),
    `Other databases on the server ran ${fmt(live.flatMap((v) => v.runs).reduce((n, r) => n + (r.others ?? 0), 0))} transactions during the runs.`,
    '',
    `Reproduce: \`${command}\``,
  ];
  process.stdout.write(`${out.filter((l) => l !== null).join('\n')}\n`);
  if (args.json) {
    const raw = variants.map(({ name, removes, base, sql, na, runs, storage: s }) => ({ name, removes, base, sql, na, runs, storage: s }));
    writeFileSync(args.json, `${JSON.stringify({ command, seconds: SECONDS, runs: RUNS, version, schema, variants: raw }, null, 2)}\n`);
  }
}

try {
  await main();
} catch (err) {
  log(`failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  await withDb(null, async (c) => {
    for (const db of created.reverse()) {
      await c.query(`drop database if exists ${db} with (force)`).catch((err) => log(`could not drop ${db}: ${err.message}`));
    }
    if (createdRole) await c.query(`drop role if exists ${ROLE}`).catch((err) => log(`could not drop role ${ROLE}: ${err.message}`));
  });
  if (interrupted) process.exitCode = 130;
}
