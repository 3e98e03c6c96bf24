/**
 * realtimed start --workers 2: two processes share the port, each with its own
 * LISTEN connection, every socket gets every event once, and SIGTERM stops
 * them all.
 */
import { spawn } from 'node:child_process';

import t from 'tap';

import { BIN } from './helpers/cli.js';
import { createDatabase, createLoginRole, urlFor } from './helpers/db.js';
import { loadExamples } from './helpers/daemon.js';
import { SECRET } from './helpers/jwt.js';
import { TestClient } from './helpers/ws.js';

t.test('--workers 2: one port, two LISTEN connections, each event once per socket, one SIGTERM stops all', async (t) => {
  const db = await createDatabase(t);
  await loadExamples(db);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const child = spawn(process.execPath, [BIN, 'start', '--workers', '2', '--port', '0', '--log-level', 'info'], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: urlFor(db.name, undefined, role), REALTIMED_JWT_SECRET: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => void child.kill('SIGKILL'));
  let logs = '';
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
      const found = [...logs.matchAll(/"msg":"realtimed listening"[^\n]*|[^\n]*"msg":"realtimed listening"/g)].map((m) => Number(/"port":(\d+)/.exec(m[0])?.[1]));
      if (found.length >= 2) resolve(found);
    });
    void exited.then((code) => reject(new Error(`exited ${code}: ${logs}`)));
  });
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
