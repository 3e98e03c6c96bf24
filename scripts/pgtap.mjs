#!/usr/bin/env node
// The pgTAP suite: pgtap/*.sql run by pg_prove against a throwaway database
// (created, migrated with the built package, dropped). Needs `npm run build`.
//
//   node scripts/pgtap.mjs [pgtap/file.sql ...]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

import pg from 'pg';

const SERVER_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const INSTALL_PGTAP = 'apt-get install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl';

function urlFor(database, server) {
  const url = new URL(server);
  url.pathname = `/${database}`;
  return url;
}

/** One statement on the server's maintenance database (or `url`). */
export async function serverQuery(sql, url = SERVER_URL) {
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

function hasCommand(command) {
  return new Promise((resolve) => {
    const child = spawn(command, ['--version'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}

/**
 * Runs pg_prove against a new database on `server`; resolves to
 * { passed, failed, skipped, files }. Without pgTAP it skips loudly, or fails
 * under CI (which always installs it).
 */
export async function runPgtap(files = defaultFiles(), { log = (s) => process.stdout.write(s), server = SERVER_URL } = {}) {
  const available = (await serverQuery(`select 1 from pg_available_extensions where name = 'pgtap'`, server)).rowCount > 0;
  const prove = await hasCommand('pg_prove');
  if (!available || !prove) {
    const what = [!available && 'the pgtap extension is not on the server', !prove && 'pg_prove is not installed']
      .filter(Boolean)
      .join(' and ');
    const line = `pgtap: SKIPPED ${files.length} files: ${what}. Install it with: ${INSTALL_PGTAP}\n`;
    if (process.env.CI) throw new Error(line);
    log(`\n!!!!!!!!!!\n${line}!!!!!!!!!!\n\n`);
    return { passed: 0, failed: 0, skipped: files.length, files: files.length };
  }

  const run = process.env.REALTIMED_TEST_RUN ?? `solo${process.pid}`;
  const name = `rt_test_${run}_pgtap_${randomBytes(4).toString('hex')}`;
  const url = urlFor(name, server);
  await serverQuery(`create database ${pg.escapeIdentifier(name)}`, server);
  try {
    const { migrate } = await import('../dist/index.js');
    await migrate({ databaseUrl: url.toString() });
    await serverQuery('create extension pgtap', url);

    const args = ['--verbose', '--failures', '--dbname', name];
    if (url.hostname) args.push('--host', url.hostname);
    if (url.port) args.push('--port', url.port);
    if (url.username) args.push('--username', decodeURIComponent(url.username));
    const env = { ...process.env, PGPASSWORD: decodeURIComponent(url.password) };
    const output = await new Promise((resolve, reject) => {
      const child = spawn('pg_prove', [...args, ...files], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (d) => {
        text += d;
        log(d.toString());
      });
      child.stderr.on('data', (d) => {
        text += d;
        log(d.toString());
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ text, code }));
    });
    // Count the test points pg_prove printed (it prints every "ok"/"not ok" with --verbose).
    let passed = 0;
    let failed = 0;
    for (const line of output.text.split('\n')) {
      if (/^\s*ok \d+/.test(line)) passed++;
      else if (/^\s*not ok \d+/.test(line)) failed++;
    }
    if (output.code !== 0 && failed === 0) failed = 1; // a file that died or planned wrong
    return { passed, failed, skipped: 0, files: files.length };
  } finally {
    await serverQuery(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`, server);
  }
}

function defaultFiles() {
  return readdirSync('pgtap')
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((f) => `pgtap/${f}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const result = await runPgtap(args.length > 0 ? args : undefined);
  process.stdout.write(`${result.passed} passed, ${result.failed} failed${result.skipped ? `, ${result.skipped} skipped` : ''}\n`);
  process.exitCode = result.failed > 0 ? 1 : 0;
}
