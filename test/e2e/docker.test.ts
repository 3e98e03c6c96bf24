/**
 * The Dockerfile. Where a Docker engine answers, the image is built and run
 * against the test database. Where none does (CI here), that part is skipped
 * and says why, and the runtime stage is rebuilt by hand instead: its COPY
 * lines and `npm ci --omit=dev --omit=optional` in a folder of its own, run as
 * a user without privileges, must start realtimed and report healthy.
 */
import { execFile, spawn } from 'node:child_process';
import { cp, chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import t from 'tap';

import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { SECRET } from '../helpers/jwt.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
const stages = dockerfile.split(/^FROM /m).slice(1);
const final = stages[stages.length - 1] ?? '';

t.test('multi-stage, Node 20+ slim, non-root, healthcheck on /health, realtimed start by default', async (t) => {
  t.ok(stages.length >= 2, 'multi-stage');
  const base = /^node:(\d+)[^\s]*-slim\b/.exec(final);
  t.ok(base && Number(base[1]) >= 20, `the runtime image is an official Node 20+ slim image (${final.split('\n')[0]})`);
  t.match(final, /^USER node$/m, 'runs as the unprivileged node user');
  t.match(final, /^HEALTHCHECK .*\n?.*\/health/m, 'HEALTHCHECK asks /health');
  t.match(final, /^ENTRYPOINT \["node", "bin\/realtimed\.js"\]\nCMD \["start"\]$/m, 'realtimed start unless told otherwise');
  t.notMatch(final, /npm ci(?![^\n]*--omit=dev)/, 'no dev dependencies in the runtime image');
});

t.test('the runtime stage rebuilt by hand starts realtimed as a non-root user', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'realtimed-image-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  // COPY lines of the final stage; "--from=build /src/dist" is our own dist/.
  for (const match of final.matchAll(/^COPY (?:--from=(\w+) )?(\S+) (\S+)$/gm)) {
    const [, from, source = '', destination = ''] = match;
    if (from === 'deps') continue; // node_modules: installed below, as the deps stage does
    const path = from === 'build' ? source.replace(/^\/src\//, '') : source;
    await cp(join(ROOT, path), join(dir, destination === './' ? path : destination), { recursive: true });
  }
  await cp(join(ROOT, 'package-lock.json'), join(dir, 'package-lock.json'));
  await run('npm', ['ci', '--omit=dev', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: dir });

  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  // As root, run as `nobody`, like USER node: nothing may need write access to the app folder.
  const ids = userInfo().uid === 0 ? { uid: 65534, gid: 65534 } : {};
  // Through env -u: tap's process tracking adds its --import loader (a path in this clone, which
  // `nobody` cannot read when the clone is under /root) to node children; the image runs none.
  const child = spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, 'bin/realtimed.js', 'start'], {
    cwd: dir,
    ...ids,
    env: { PATH: process.env['PATH'] ?? '', NODE_ENV: 'production', REALTIMED_HOST: '127.0.0.1', REALTIMED_PORT: '0', DATABASE_URL: urlFor(db.name, undefined, role), REALTIMED_JWT_SECRET: SECRET, REALTIMED_INSPECTOR: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let logs = '';
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
      const m = /"port":(\d+)/.exec(logs);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${logs}`)));
  });
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  t.equal(health.status, 200, 'healthy with production dependencies only');
  t.equal((await fetch(`http://127.0.0.1:${port}/inspector`)).status, 200, 'the inspector bundle is in the image');
  child.kill('SIGTERM');
  const code = await new Promise((resolve) => child.once('exit', resolve));
  t.equal(code, 0, 'stops cleanly on SIGTERM');
});

const engine = await run('docker', ['info', '--format', '{{.ServerVersion}}']).then(
  () => null,
  (err: { stderr?: string; message: string }) => (err.stderr || err.message).trim().split('\n').pop() ?? 'docker info failed',
);
t.test('docker build and run', { skip: engine ? `no Docker engine here: ${engine}` : false }, async (t) => {
  const tag = `realtimed-test:${process.pid}`;
  await run('docker', ['build', '-t', tag, ROOT], { maxBuffer: 64 * 1024 * 1024 });
  t.teardown(() => run('docker', ['rmi', '-f', tag]).catch(() => {}));
  const { stdout } = await run('docker', ['run', '--rm', tag, '--version']);
  t.match(stdout, /^\d+\.\d+\.\d+/);
  const user = await run('docker', ['run', '--rm', '--entrypoint', 'id', tag, '-u']);
  t.not(user.stdout.trim(), '0', 'not root');
});
