#!/usr/bin/env node
// What each delivery mode costs the database per message and per instance
// (docs/scaling.md). On a throwaway embedded PostgreSQL with wal_level =
// logical (so every mode runs on the same server), for each mode and each
// instance count: N `realtimed start` processes, one subscriber on each,
// and one publisher committing `rate` trigger publishes per second for
// `seconds`. Measured from /proc: the CPU of every server process but the
// publisher's own backend (what the daemons cost the database: their
// queries, their LISTEN or walsender backends), and the daemons' CPU. Also
// idle: the same with nothing published.
//
//   node bench/delivery-cost.mjs [--rate 500] [--seconds 10] [--instances 1,2,4]
//                                [--modes notify,poll,wal] [--poll-interval 20]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import pg from 'pg';
import WebSocket from 'ws';

import { startEmbedded } from '../dist/cli/embedded.js';
import { migrate } from '../dist/index.js';
import { listeningPort, log, median, sleep } from './lib/common.mjs';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '10' },
    instances: { type: 'string', default: '0,1,2,4' },
    modes: { type: 'string', default: 'notify,poll,wal' },
    'poll-interval': { type: 'string', default: '20' },
  },
});
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const INSTANCES = args.instances.split(',').map(Number);
const MODES = args.modes.split(',');
const POLL = args['poll-interval'];

/** utime + stime of a process, in ms; 0 when it is gone. */
async function cpuMs(pid) {
  try {
    const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}
/** The postmaster's children (every backend, walsender and background process). */
async function serverPids(postmaster) {
  const pids = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.split(') ')[1].split(' ')[1]) === postmaster) pids.push(Number(name));
    } catch {}
  }
  return pids;
}
/** CPU ms of each pid, for differences (processes that come and go count from 0). */
async function snapshot(pids) {
  return new Map(await Promise.all(pids.map(async (p) => [p, await cpuMs(p)])));
}
const spent = (before, after, skip = new Set()) => [...after].reduce((n, [p, ms]) => (skip.has(p) ? n : n + ms - (before.get(p) ?? 0)), 0);

const dir = await mkdtemp(join(tmpdir(), 'rt-delivery-cost-'));
await chmod(dir, 0o755);
const server = await startEmbedded({
  dataDir: join(dir, 'pg'),
  password: randomBytes(8).toString('hex'),
  auth: 'trust',
  settings: { wal_level: 'logical', max_wal_senders: '20', max_replication_slots: '20', shared_buffers: '512MB' },
});
const postmaster = Number((await readFile(join(dir, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0]);
const url = (user = 'postgres') => `postgres://${user}@127.0.0.1:${server.port}/bench`;
const daemons = [];
const stopDaemons = async () => {
  await Promise.all(daemons.splice(0).map((d) => new Promise((r) => (d.exitCode !== null ? r() : (d.once('exit', r), d.kill('SIGTERM'))))));
};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await stopDaemons();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
    process.exit(130);
  });
}

const rows = [];
try {
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('create database bench');
  await admin.query('create role daemon login replication');
  await admin.end();
  await migrate({ databaseUrl: url() });
  const db = new pg.Client({ connectionString: url() });
  await db.connect();
  await db.query(`
    grant anon, authenticated, service_role to daemon;
    insert into realtime.channels (pattern) values ('bench:%');
    create policy bench_subscribe on realtime.channels for select to anon using (true);
    create schema bench;
    create table bench.orders (id bigint generated always as identity primary key, t bigint not null);
    create function bench.orders_publish() returns trigger language plpgsql as $$
    begin perform realtime.publish('bench:0', 'bench', jsonb_build_object('t', new.t)); return null; end $$;
    create trigger orders_publish after insert on bench.orders for each row execute function bench.orders_publish();`);

  for (const mode of MODES) {
    await db.query('update realtime.config set delivery = $1', [mode]);
    for (const n of INSTANCES) {
      log(`${mode}, ${n} instance${n === 1 ? '' : 's'}`);
      // N daemons, one subscriber each.
      const received = [];
      for (let i = 0; i < n; i++) {
        const child = spawn(process.execPath, ['bin/realtimed.js', 'start', '--port', '0', '--log-level', 'info', '--poll-interval', POLL, '--jwt-secret', 'x'.repeat(32)], {
          env: { ...process.env, DATABASE_URL: url('daemon') },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        daemons.push(child);
        const port = await listeningPort(child, 'realtimed');
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
        const k = received.push(0) - 1;
        ws.on('message', (d) => {
          if (d.toString().includes('"type":"event"')) received[k]++;
        });
        ws.send(JSON.stringify({ type: 'subscribe', channel: 'bench:0' }));
      }
      await sleep(2000); // the daemons settle (slots made, first polls)
      const publisher = new pg.Client({ connectionString: url() });
      await publisher.connect();
      const publisherPid = (await publisher.query('select pg_backend_pid() as p')).rows[0].p;

      // Idle: nothing published.
      let pids = await serverPids(postmaster);
      let s0 = await snapshot(pids);
      let d0 = await snapshot(daemons.map((d) => d.pid));
      await sleep(SECONDS * 1000);
      pids = await serverPids(postmaster);
      const idleServer = spent(s0, await snapshot(pids), new Set([publisherPid]));
      const idleDaemons = spent(d0, await snapshot(daemons.map((d) => d.pid)));

      // Publishing at RATE/s.
      pids = await serverPids(postmaster);
      s0 = await snapshot(pids);
      d0 = await snapshot(daemons.map((d) => d.pid));
      const total = RATE * SECONDS;
      const started = Date.now();
      let sent = 0;
      while (sent < total) {
        const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * RATE));
        for (; sent < due; sent++) await publisher.query('insert into bench.orders (t) values ($1)', [Date.now()]);
        await sleep(2);
      }
      const elapsed = (Date.now() - started) / 1000;
      pids = await serverPids(postmaster);
      const busyServer = spent(s0, await snapshot(pids), new Set([publisherPid]));
      const busyDaemons = spent(d0, await snapshot(daemons.map((d) => d.pid)));
      const deadline = Date.now() + 15_000;
      while (received.some((r) => r < total) && Date.now() < deadline) await sleep(100);
      await publisher.end();
      await stopDaemons();
      await db.query('truncate bench.orders');

      // With no instance: what the publishing itself costs the server's other
      // processes (WAL writer, checkpointer, autovacuum); the rest is delivery.
      const base = rows.find((r) => r.mode === mode && r.instances === 0);
      const row = {
        mode,
        instances: n,
        messages: total,
        idleServerMsPerS: idleServer / SECONDS,
        idleDaemonMsPerS: n ? idleDaemons / SECONDS / n : 0,
        serverMsPerS: busyServer / elapsed,
        serverUsPerMessagePerInstance: n && base ? ((busyServer / elapsed - base.serverMsPerS) * 1000 * elapsed) / total / n : null,
        daemonUsPerMessage: n ? (busyDaemons * 1000) / total / n : null,
        lost: received.reduce((sum, r) => sum + Math.max(0, total - r), 0),
      };
      rows.push(row);
      log(JSON.stringify(row));
    }
  }
  await db.end();
} finally {
  await stopDaemons();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}

const f = (x, d = 0) => x.toFixed(d);
const lines = [
  `delivery cost, ${cpus().length} cores, PostgreSQL ${server.version} (embedded, wal_level = logical), ${RATE} msg/s for ${SECONDS} s, --poll-interval ${POLL}`,
  '',
  '| mode | instances | server CPU idle (ms/s) | server CPU publishing (ms/s) | server µs per message per instance | daemon µs per message | daemon idle (ms/s each) | lost |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map((r) => `| ${r.mode} | ${r.instances} | ${f(r.idleServerMsPerS, 1)} | ${f(r.serverMsPerS)} | ${r.serverUsPerMessagePerInstance === null ? '(baseline)' : f(r.serverUsPerMessagePerInstance, 1)} | ${r.daemonUsPerMessage === null ? '' : f(r.daemonUsPerMessage, 1)} | ${r.instances ? f(r.idleDaemonMsPerS, 1) : ''} | ${r.lost} |`),
  '',
];
for (const mode of MODES) {
  const base = rows.find((r) => r.mode === mode && r.instances === 0);
  const per = median(rows.filter((r) => r.mode === mode && r.instances > 0).map((r) => r.serverUsPerMessagePerInstance));
  const idle = median(rows.filter((r) => r.mode === mode && r.instances > 0).map((r) => (r.idleServerMsPerS - (base?.idleServerMsPerS ?? 0)) / r.instances));
  if (per === null) continue;
  // One core of the database spent on delivery, at RATE msg/s: (1e6 µs/s) / (µs per message per instance x rate + idle µs/s per instance).
  const perInstanceUsPerS = Math.max(per, 0) * RATE + idle * 1000;
  lines.push(`${mode}: ~${f(per, 1)} µs of database CPU per message per instance, ~${f(idle, 1)} ms/s idle per instance; one database core is spent on delivery at ${RATE} msg/s with ~${f(1e6 / perInstanceUsPerS)} instances`);
}
process.stdout.write(`${lines.join('\n')}\n`);
