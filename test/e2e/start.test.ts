/**
 * `realtimed start` as an operator runs it: options and their errors, and a
 * graceful stop on SIGTERM, in a real child process.
 */
import { spawn } from 'node:child_process';

import t from 'tap';

import { BIN, runBin } from '../helpers/cli.js';
import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { SECRET, userToken } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';

t.test('start --help documents every option', async (t) => {
  const help = await runBin(['start', '--help']);
  t.equal(help.code, 0);
  for (const option of [
    '--database-url', '--listen-url', '--host', '--port', '--path', '--jwt-secret', '--jwks-url', '--roles',
    '--no-anon', '--allowed-origins', '--log-level', '--max-frame-bytes', '--max-subscriptions', '--publish-rate',
    '--ping-interval', '--max-buffered-bytes', '--auth-timeout', '--pool-size', '--permessage-deflate',
    '--idle-timeout', '--no-presence', '--no-ephemeral', '--no-client-publish',
  ]) {
    t.match(help.stdout, option, `--help lists ${option}`);
  }
  t.match(help.stdout, 'REALTIMED_PORT', 'and the environment variables');
});

t.test('missing or contradictory options: one line, exit 2', async (t) => {
  const db = 'postgres://postgres@127.0.0.1:5432/postgres';
  const cases: [string, string[], NodeJS.ProcessEnv][] = [
    ['no database', ['start'], {}],
    ['bad database URL', ['start', '--database-url', 'nope'], {}],
    ['secret and JWKS', ['start', '--database-url', db, '--jwt-secret', SECRET, '--jwks-url', 'https://id.example/jwks'], {}],
    ['short secret', ['start', '--database-url', db, '--jwt-secret', 'short'], {}],
    ['no anon and no verifier', ['start', '--database-url', db, '--no-anon'], {}],
    ['anon allowed but not a role', ['start', '--database-url', db, '--jwt-secret', SECRET, '--roles', 'authenticated'], {}],
    ['odd role name', ['start', '--database-url', db, '--roles', 'anon,"x; drop"'], {}],
    ['bad port', ['start', '--database-url', db, '--port', '99999'], {}],
    ['bad port from the environment', ['start', '--database-url', db], { REALTIMED_PORT: 'http' }],
    ['bad log level', ['start', '--database-url', db, '--log-level', 'loud'], {}],
  ];
  for (const [name, args, env] of cases) {
    const r = await runBin(args, env);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, /^realtimed: [^\n]+ \[RT_ERR_(USAGE|DB_URL)\]\n$/, `${name}: one line`);
  }
});

t.test('SIGTERM: sockets closed with 1001, exit 0 well within 10 s', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  await db.pool.query(`insert into realtime.channels (pattern) values ('orders');
    create policy everyone on realtime.channels for select to anon, authenticated using (pattern = 'orders');`);
  const child = spawn(process.execPath, [BIN, 'start', '--port', '0', '--log-level', 'info'], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: urlFor(db.name, undefined, role), REALTIMED_JWT_SECRET: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let logs = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
      const m = /"port":(\d+)/.exec(logs);
      if (m?.[1]) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${logs}`)));
  });
  const token = await userToken('a11ce000-0000-4000-8000-000000000001');
  const client = await TestClient.connect(t, `ws://127.0.0.1:${port}/`, { token });
  t.equal((await client.subscribe('orders')).type, 'subscribed');
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const started = Date.now();
  child.kill('SIGTERM');
  t.equal((await client.closed).code, 1001, 'the client is told the server is going away');
  t.equal(await exited, 0, 'exit code 0');
  t.ok(Date.now() - started < 10_000, `stopped in ${Date.now() - started} ms`);
  t.match(logs, '"msg":"realtimed stopped"');
  t.notMatch(logs, SECRET, 'the secret is never logged');
  t.notMatch(logs, token, 'nor the token');
});

t.test('a port in use: one line, exit 2, nothing left running (finding 7c)', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const { createServer } = await import('node:net');
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const started = Date.now();
  const r = await runBin(['start', '--port', String(port)], { DATABASE_URL: urlFor(db.name, undefined, role), REALTIMED_JWT_SECRET: SECRET });
  t.equal(r.code, 2, 'exit 2');
  t.match(r.stderr, new RegExp(`^realtimed: 127\\.0\\.0\\.1:${port} is in use[^\\n]*\\[RT_ERR_LISTEN\\]\\n$`), 'one line that says so');
  t.ok(Date.now() - started < 15_000, `the process ended by itself, in ${Date.now() - started} ms (no SIGTERM needed)`);
  const left = await db.pool.query(`select count(*)::int as n from pg_stat_activity where application_name like 'realtimed%' and datname = current_database()`);
  t.equal(left.rows[0]?.n, 0, 'no database connection left behind');
  const instances = await db.pool.query(`select count(*)::int as n from realtime.instances`);
  t.equal(instances.rows[0]?.n, 0, 'and its instance row was removed');
});
