#!/usr/bin/env node
// `npm test`: type check and build, the tap suite (test/), the pgTAP suite
// (pgtap/), then one line over all of them: "N passed, N failed".
//
// Every database it uses is created here or by the suites on the server named
// by DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) under
// the prefix rt_test_<run>_, and dropped at the end.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

import pg from 'pg';

import { runPgtap, serverQuery } from './pgtap.mjs';

process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/postgres';
const RUN = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
process.env.REALTIMED_TEST_RUN = RUN;

const results = [];

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

const bin = (name) => `node_modules/.bin/${name}`;

try {
  section('typecheck and build');
  const typecheck = await run(bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']);
  results.push(['typecheck', typecheck.code === 0 ? 1 : 0, typecheck.code === 0 ? 0 : 1]);
  const build = await run(bin('tsc'), ['-p', 'tsconfig.build.json']);
  results.push(['build', build.code === 0 ? 1 : 0, build.code === 0 ? 0 : 1]);

  section('template database');
  const template = `rt_test_${RUN}_template`;
  await serverQuery(`create database ${pg.escapeIdentifier(template)}`);
  const { migrate } = await import('../dist/migrate.js');
  const url = new URL(process.env.DATABASE_URL);
  url.pathname = `/${template}`;
  await migrate({ databaseUrl: url.toString() });
  process.env.REALTIMED_TEST_TEMPLATE = template;
  process.stdout.write(`migrated ${template}\n`);

  section('tap (test/)');
  const tap = await run(bin('tap'), ['--reporter=tap'], { capture: true });
  const summary = /# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(tap.text);
  const tapPassed = summary ? Number(summary[2]) : 0;
  let tapFailed = summary ? Number(summary[3] ?? 0) : 1;
  if (tap.code !== 0 && tapFailed === 0) tapFailed = 1;
  results.push(['tap', tapPassed, tapFailed]);

  section('pgTAP (pgtap/)');
  const pgtap = await runPgtap();
  results.push(['pgtap', pgtap.passed, pgtap.failed, pgtap.skipped]);
} catch (err) {
  process.stdout.write(`\nnpm test: ${err instanceof Error ? err.message : String(err)}\n`);
  results.push(['harness', 0, 1]);
} finally {
  const leftovers = await serverQuery(
    `select datname from pg_database where datname like 'rt\\_test\\_${RUN}\\_%'`,
  ).catch(() => ({ rows: [] }));
  for (const { datname } of leftovers.rows) {
    await serverQuery(`drop database if exists ${pg.escapeIdentifier(datname)} with (force)`).catch(() => {});
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
