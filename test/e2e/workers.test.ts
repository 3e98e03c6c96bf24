/**
 * realtimed start --workers 2: two processes share the port, each with its own
 * LISTEN connection, every socket gets every event once, and SIGTERM stops
 * them all.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

import t from 'tap';

import { freePort } from '../../src/cli/embedded.js';
import { BIN } from '../helpers/cli.js';
import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { loadExamples } from '../helpers/daemon.js';
import { SECRET } from '../helpers/jwt.js';
import { until } from '../helpers/wait.js';
import { TestClient } from '../helpers/ws.js';

/** `realtimed start --workers 2` on a port; resolves once both workers listen, with their ports. */
async function startWorkers(t: Tap, databaseUrl: string, port: number) {
  const child = spawn(process.execPath, [BIN, 'start', '--workers', '2', '--port', String(port), '--log-level', 'info'], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: databaseUrl, REALTIMED_JWT_SECRET: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => void child.kill('SIGKILL'));
  let logs = '';
  const listening = (): number[] =>
    [...logs.matchAll(/"msg":"realtimed listening"[^\n]*|[^\n]*"msg":"realtimed listening"/g)].map((m) => Number(/"port":(\d+)/.exec(m[0])?.[1]));
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
      if (listening().length >= 2) resolve(listening());
    });
    void exited.then((code) => reject(new Error(`exited ${code}: ${logs}`)));
  });
  return { child, exited, ports, listening };
}
type Tap = { teardown(fn: () => unknown): void };

t.test('--workers 2: one port, two LISTEN connections, each event once per socket, one SIGTERM stops all', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const { child, exited, ports } = await startWorkers(t, urlFor(db.name, undefined, role), 0);
  t.equal(ports[0], ports[1], `both workers listen on port ${ports[0]}`);
  const listeners = await db.pool.query(`select count(*)::int as n from pg_stat_activity where application_name = 'realtimed-listen' and datname = current_database()`);
  t.equal(listeners.rows[0]?.n, 2, 'each worker has its own LISTEN connection');

  const clients = await Promise.all(Array.from({ length: 12 }, () => TestClient.connect(t, `ws://127.0.0.1:${ports[0]}/`)));
  for (const c of clients) await c.subscribe('orders');
  await db.pool.query(`select realtime.publish('orders', 'created', jsonb_build_object('n', i)) from generate_series(1, 5) i`);
  for (const c of clients) for (let n = 1; n <= 5; n++) await c.next((f) => f.type === 'event' && (f['payload'] as { n: number }).n === n);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.ok(clients.every((c) => c.events().length === 0), 'every socket got each of the 5 events exactly once');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: the primary exits 0 once the workers have stopped');
  for (const c of clients) t.equal((await c.closed).code, 1001, 'sockets closed with 1001');
  const after = await db.pool.query(`select count(*)::int as n from pg_stat_activity where application_name like 'realtimed%' and datname = current_database()`);
  t.equal(after.rows[0]?.n, 0, 'no connection left behind');
});

/** The pids of a process's children (Linux). */
function childrenOf(pid: number): number[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  } catch {
    return []; // it has exited
  }
  return text === '' ? [] : text.split(/\s+/).map(Number);
}

t.test('--workers 2: every worker dead while a restart waits, the primary starts new ones and keeps serving', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  // A fixed port: with --port 0 the cluster would pick a new one once every worker is gone.
  const port = await freePort();
  const { child, exited, listening } = await startWorkers(t, urlFor(db.name, undefined, role), port);
  const initial = childrenOf(child.pid as number);
  t.equal(initial.length, 2, 'two workers');
  // One dies and is replaced at once; then every worker dies while the next
  // restart waits out its one-second throttle.
  process.kill(initial[0] as number, 'SIGKILL');
  const first = await until('a new worker in its place', () => {
    const now = childrenOf(child.pid as number);
    return now.length === 2 && !now.includes(initial[0] as number) ? now : undefined;
  });
  for (const pid of first) process.kill(pid, 'SIGKILL');
  const replaced = await until(
    'two new workers serving',
    async () => {
      const now = childrenOf(child.pid as number).filter((pid) => !first.includes(pid));
      // Bounded: a connection made while no worker is up may be held until one is.
      const healthy = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false);
      return now.length === 2 && healthy && listening().length >= 4 ? now : undefined;
    },
    30_000,
  ).catch(() => []);
  t.equal(child.exitCode, null, 'the primary is still running');
  t.equal(replaced.length, 2, 'it started two new workers');
  t.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'and they serve the same port');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM still stops it cleanly');
});
