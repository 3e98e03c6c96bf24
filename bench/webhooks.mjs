#!/usr/bin/env node
// Webhook deliveries per second to a local receiver: one `realtimed start`
// process, a receiver in this process on 127.0.0.1, N system messages
// published in one statement, timed from commit to the last request received.
// Three runs; prints each and the median.
//
//   npm run build && node bench/webhooks.mjs [--messages 5000] [--urls 1] [--runs 3]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import pg from 'pg';

import { migrate } from '../dist/migrate.js';

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '5000' }, urls: { type: 'string', default: '1' }, runs: { type: 'string', default: '3' } },
});
const MESSAGES = Number(values.messages);
const URLS = Number(values.urls);
const RUNS = Number(values.runs);
const SERVER = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const id = randomBytes(3).toString('hex');
const dbName = `rt_bench_${id}`;
const role = `rt_bench_${id}_daemon`;
const dbUrl = (user) => { const u = new URL(SERVER); u.pathname = `/${dbName}`; if (user) { u.username = user; u.password = ''; } return u.toString(); };

async function q(url, sql, params) { const c = new pg.Client({ connectionString: url }); await c.connect(); try { return await c.query(sql, params); } finally { await c.end(); } }

await q(SERVER, `create database ${dbName}`);
await q(SERVER, `create role ${role} login; grant anon, authenticated, service_role to ${role}`);
let daemon;
const receivers = [];
try {
  await migrate({ databaseUrl: dbUrl() });
  let received = 0;
  let onCount = () => {};
  for (let i = 0; i < URLS; i++) {
    const server = createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200); res.end(); received++; onCount(); }); });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    receivers.push(server);
  }
  const urls = receivers.map((s) => `http://127.0.0.1:${s.address().port}/hook`);
  await q(dbUrl(), `insert into realtime.channels (pattern, webhook_urls) values ('bench', $1)`, [urls]);
  daemon = spawn(process.execPath, ['bin/realtimed.js', 'start', '--port', '0', '--log-level', 'warn', '--webhook-concurrency', '16', '--webhook-max-in-flight', '128'], {
    env: { ...process.env, DATABASE_URL: dbUrl(role) }, stdio: 'inherit',
  });
  await new Promise((r) => setTimeout(r, 1500));
  const rates = [];
  for (let run = 1; run <= RUNS; run++) {
    received = 0;
    const want = MESSAGES * URLS;
    const done = new Promise((resolve) => { onCount = () => { if (received >= want) resolve(); }; });
    const started = performance.now();
    await q(dbUrl(), `select realtime.publish('bench', 'e', jsonb_build_object('n', i)) from generate_series(1, $1) i`, [MESSAGES]);
    await done;
    const seconds = (performance.now() - started) / 1000;
    rates.push(want / seconds);
    console.log(`run ${run}: ${want} deliveries in ${seconds.toFixed(2)} s = ${Math.round(want / seconds)}/s`);
  }
  rates.sort((a, b) => a - b);
  console.log(`median: ${Math.round(rates[Math.floor(rates.length / 2)])} webhook deliveries/s (${MESSAGES} messages x ${URLS} URL, ${RUNS} runs)`);
} finally {
  daemon?.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  for (const s of receivers) s.close();
  await q(SERVER, `drop database if exists ${dbName} with (force)`);
  await q(SERVER, `drop role if exists ${role}`);
}
