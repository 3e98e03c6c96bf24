#!/usr/bin/env node
// What upgrading a large install costs the application: a database at
// version FROM with N messages, upgraded to the latest by `realtimed migrate`
// while 4 clients publish; prints the steps with their times, the publishers'
// errors and their longest waits. Needs `npm run build` first.
//
//   node bench/upgrade-cost.mjs [--from 12] [--messages 2000000]
//
// Creates and drops the database rt_bench_upgrade on DATABASE_URL's server.
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import pg from 'pg';

import { migrate } from '../dist/cli/migrate.js';
import { MIGRATIONS_FOLDER } from '../dist/cli/sql.js';

const { values: args } = parseArgs({ options: { from: { type: 'string' }, messages: { type: 'string' } } });
const FROM = Number(args.from ?? 12);
const N = Number(args.messages ?? 2_000_000);
const server = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const admin = server.toString();
server.pathname = '/rt_bench_upgrade';
const url = server.toString();

async function q(connectionString, sql) {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** The first FROM committed migrations, as a migrations folder of their own. */
async function folderUpTo(version) {
  const dir = await mkdtemp(join(tmpdir(), 'rt-upgrade-'));
  const committed = join(MIGRATIONS_FOLDER, 'committed');
  for (const f of (await readdir(committed)).filter((f) => /^\d{6}/.test(f)).sort().slice(0, version)) {
    await cp(join(committed, f), join(dir, 'committed', f));
  }
  return dir;
}

await q(admin, 'drop database if exists rt_bench_upgrade');
await q(admin, 'create database rt_bench_upgrade');
const older = await folderUpTo(FROM);
try {
  await migrate({ databaseUrl: url, migrationsFolder: older });
  let t = Date.now();
  await q(url, `insert into realtime.channels (pattern) values ('order:%')`);
  await q(url, `insert into realtime.messages (channel_name, event_name, payload)
    select 'order:' || (i % 10000), 'created',
           jsonb_build_object('id', i, 'status', 'payment_authorization_pending_review', 'total', 123.45)
    from generate_series(1, ${N}) i`);
  await q(url, 'vacuum analyze realtime.messages');
  const seeded = (await q(url, `select pg_size_pretty(pg_total_relation_size('realtime.messages')) as size`)).rows[0];
  console.log(`version ${FROM}, ${N} messages (${seeded.size}), seeded in ${Date.now() - t} ms`);

  let stop = false;
  let committed = 0;
  const waits = [];
  const errors = [];
  const publishers = Array.from({ length: 4 }, async (_, k) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    while (!stop) {
      const started = Date.now();
      try {
        await c.query(`select realtime.publish('order:${k}', 'e', '{}')`);
        committed++;
      } catch (err) {
        errors.push(err.message);
      }
      waits.push(Date.now() - started);
    }
    await c.end();
  });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const before = waits.length;
  t = Date.now();
  const steps = [];
  const result = await migrate({ databaseUrl: url, log: (line) => steps.push(`  ${Date.now() - t} ms: ${line}`) });
  const took = Date.now() - t;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  stop = true;
  await Promise.all(publishers);
  const during = waits.slice(before).sort((a, b) => b - a);
  console.log(steps.join('\n'));
  console.log(`upgrade ${result.from} -> ${result.to}: ${took} ms; publishers: ${committed} commits, ` +
    `${errors.length} errors${errors.length ? ` (${[...new Set(errors)].join('; ')})` : ''}, ` +
    `longest waits ${during.slice(0, 4).join(', ')} ms`);
} finally {
  await rm(older, { recursive: true, force: true });
  await q(admin, 'drop database if exists rt_bench_upgrade');
}
