#!/usr/bin/env node
// `npm run bench:changes`: what table change streams cost (docs/performance.md,
// "Change streams"). realtimed only: the naive relay has no such feature.
//
//   A  the row check in SQL: realtime.change_audience() for a batch of events
//      and N subscriber identities, medians of repeated calls;
//   B  end to end: commit → event at 100 sockets of 100 users, a private
//      stream (row check, a policy that shows every row) against the same
//      table as a public stream (no check): medians, p99 and the ratio;
//   C  a 10,000-row UPDATE in one statement: the statement's own time with
//      and without the stream, the time until the last event reached its
//      subscriber, and the latency of an unrelated message committed right
//      after the burst (does the burst stall the relay?).
//
//   npm run bench:changes [-- --runs 3] [--rows 10000] [--parts A,B,C] [--smoke]
//
// It creates its own database and login role on DATABASE_URL's server and drops both.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { SignJWT } from 'jose';
import pg from 'pg';
import WebSocket from 'ws';

import { migrate } from '../dist/index.js';
import { benchDatabase, listeningPort, log, median, quantile, SERVER, sleep } from './lib/common.mjs';

const { values: args } = parseArgs({
  options: { runs: { type: 'string' }, rows: { type: 'string' }, parts: { type: 'string' }, smoke: { type: 'boolean', default: false } },
});
const RUNS = Number(args.runs ?? (args.smoke ? 1 : 3));
const ROWS = Number(args.rows ?? (args.smoke ? 500 : 10_000));
const USERS = args.smoke ? 10 : 100;
const EVENTS = args.smoke ? 20 : 200;
const IDENTITIES = args.smoke ? [1, 10] : [1, 10, 100, 1000];
const PARTS = (args.parts ?? 'A,B,C').split(',');

const { DB, ROLE, SECRET, dbUrl } = benchDatabase('rt_bench_changes');
const ms = (n) => (n === null ? 'none' : `${n.toFixed(n < 10 ? 2 : 0)} ms`);

const admin = new pg.Pool({ connectionString: SERVER, max: 1 });
let db;
let daemon;

async function setup() {
  await admin.query(`create database ${DB}`);
  await admin.query(`create role ${ROLE} login`);
  await admin.query(`grant anon, authenticated, service_role to ${ROLE}`);
  await migrate({ databaseUrl: dbUrl() });
  db = new pg.Pool({ connectionString: dbUrl(), max: 4 });
  // pool.end() resolves before its connections have closed: the DROP DATABASE
  // ... WITH (FORCE) of teardown can still terminate one, which is no error here.
  db.on('error', () => {});
  await db.query(`
    create schema shop;
    grant usage on schema shop to authenticated;
    create table shop.members (user_id uuid primary key);
    create table shop.orders (id integer primary key, owner uuid not null, status text not null, note text);
    create table shop.open_orders (id integer primary key, owner uuid not null, status text not null, note text);
    alter table shop.orders enable row level security;
    alter table shop.open_orders enable row level security;
    grant select on shop.orders, shop.open_orders to authenticated;
    -- The owner; "seeall" users see every row. The helpers in (select ...) are
    -- evaluated once per query, not once per row (docs/sql.md, "Fast policies").
    create policy own on shop.orders for select to authenticated
      using (owner = (select realtime.uid()) or coalesce(((select realtime.claims()) ->> 'seeall')::boolean, false));
    create policy own on shop.open_orders for select to authenticated using (true);
    select realtime.enable_changes('shop.orders', columns => array['status', 'owner']);
    select realtime.enable_changes('shop.open_orders', columns => array['status', 'owner'], public => true);
    create policy subscribe_all on realtime.channels for select to authenticated using (true);
    insert into realtime.channels (pattern) values ('marker');`);
}

async function teardown() {
  await daemon?.stop().catch(() => {});
  await db?.end().catch(() => {});
  await admin.query(`drop database if exists ${DB} with (force)`).catch(() => {});
  await admin.query(`drop role if exists ${ROLE}`).catch(() => {});
  await admin.end();
}

async function startDaemon() {
  const child = spawn(process.execPath, ['bin/realtimed.js', 'start', '--port', '0', '--log-level', 'info', '--max-connections-per-user', '0'], {
    env: { ...process.env, DATABASE_URL: dbUrl(ROLE), REALTIMED_JWT_SECRET: SECRET },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await listeningPort(child, 'realtimed');
  return {
    url: `ws://127.0.0.1:${port}/`,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    },
  };
}

const token = (sub, extra = {}) =>
  new SignJWT({ role: 'authenticated', ...extra }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('2h')
    .sign(new TextEncoder().encode(SECRET));

/** A socket subscribed to channels; calls onEvent(frame, receivedAt) for each event. */
async function socket(url, jwt, channels, onEvent) {
  const ws = new WebSocket(`${url}?token=${jwt}`);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const pending = new Set(channels);
  await new Promise((resolve) => {
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'subscribed') {
        pending.delete(frame.channel);
        if (pending.size === 0) resolve();
      } else if (frame.type === 'event') {
        onEvent(frame, performance.now());
      }
    });
    for (const channel of channels) ws.send(JSON.stringify({ type: 'subscribe', channel }));
  });
  return ws;
}

// ---------------------------------------------------------------- A
async function partA() {
  const rows = [];
  // Events to check: 100 inserted rows of random owners.
  await db.query(`insert into shop.orders select i, gen_random_uuid(), 'new', null from generate_series(1, 100) i`);
  const { rows: ids } = await db.query(`select id from realtime.messages where channel_name = 'orders:changes' order by seq`);
  const daemonPool = new pg.Pool({ connectionString: dbUrl(ROLE), max: 1 });
  for (const [events, identities] of [...IDENTITIES.map((n) => [1, n]), [100, 100]]) {
    const list = JSON.stringify(Array.from({ length: identities }, () => ({ role: 'authenticated', claims: { sub: randomUUID(), role: 'authenticated' } })));
    const batch = ids.slice(0, events).map((r) => r.id);
    const times = [];
    for (let i = 0; i < 5 + RUNS * 5; i++) {
      const t = performance.now();
      await daemonPool.query('select count(*) from realtime.change_audience($1::uuid[], $2::jsonb)', [batch, list]);
      if (i >= 5) times.push(performance.now() - t);
    }
    const m = median(times);
    rows.push({ events, identities, median: m, perCheck: (m * 1000) / (events * identities) });
    log(`A: ${events} event(s) x ${identities} identities: ${ms(m)}`);
  }
  await daemonPool.end();
  await db.query(`delete from shop.orders`);
  return rows;
}

// ---------------------------------------------------------------- B
async function partB(url) {
  const result = {};
  for (const [name, table, channel] of [['private (row check)', 'shop.orders', 'orders:changes'], ['public (no check)', 'shop.open_orders', 'open_orders:changes']]) {
    const runs = [];
    for (let run = 0; run < RUNS; run++) {
      const sent = new Map();
      const latencies = [];
      const sockets = [];
      for (let u = 0; u < USERS; u++) {
        sockets.push(await socket(url, await token(randomUUID(), { seeall: true }), [channel], (frame, at) => {
          const id = frame.payload?.new?.id ?? frame.payload?.old?.id;
          const t = sent.get(id);
          if (t !== undefined && frame.event === 'insert') latencies.push(at - t);
        }));
      }
      const base = (run + 1) * 100_000;
      for (let i = 0; i < EVENTS; i++) {
        const id = base + i;
        // From before the INSERT: an event can arrive before the INSERT's reply.
        sent.set(id, performance.now());
        await db.query(`insert into ${table} values ($1, gen_random_uuid(), 'new', null)`, [id]);
        await sleep(20);
      }
      const deadline = Date.now() + 20_000;
      while (latencies.length < EVENTS * USERS && Date.now() < deadline) await sleep(50);
      for (const ws of sockets) ws.terminate();
      runs.push({ delivered: latencies.length, expected: EVENTS * USERS, median: median(latencies), p99: quantile(latencies, 0.99) });
      log(`B: ${name}, run ${run + 1}: ${latencies.length}/${EVENTS * USERS} delivered, median ${ms(median(latencies))}, p99 ${ms(quantile(latencies, 0.99))}`);
    }
    result[name] = {
      delivered: runs.reduce((a, r) => a + r.delivered, 0),
      expected: runs.reduce((a, r) => a + r.expected, 0),
      median: median(runs.map((r) => r.median)),
      p99: median(runs.map((r) => r.p99)),
    };
  }
  return result;
}

// ---------------------------------------------------------------- C
async function partC(url) {
  const result = [];
  for (const [table, channel, rowChannels, isPublic] of [
    ['shop.orders', 'orders:changes', false, false],
    ['shop.orders', 'orders:changes', true, false],
    ['shop.open_orders', 'open_orders:changes', false, true],
  ]) {
    const runs = [];
    for (let run = 0; run < RUNS; run++) {
      await db.query(`delete from ${table}`);
      await db.query(`select realtime.disable_changes($1)`, [table]);
      const owners = Array.from({ length: 10 }, () => randomUUID());
      await db.query(`insert into ${table} select i, ($1::uuid[])[1 + i % 10], 'new', null from generate_series(1, $2) i`, [owners, ROWS]);
      // The same UPDATE without a stream, for the statement's own cost.
      let t = performance.now();
      await db.query(`update ${table} set status = 'packed'`);
      const plain = performance.now() - t;
      await db.query(`select realtime.enable_changes($1, columns => array['status', 'owner'], row_channels => $2, public => $3)`,
        [table, rowChannels, isPublic]);
      await db.query(`delete from realtime.messages`);
      let got = 0;
      let last = 0;
      let marker = null;
      const sockets = [];
      for (const owner of owners) {
        sockets.push(await socket(url, await token(owner), [channel, 'marker'], (frame, at) => {
          if (frame.channel === 'marker') marker ??= at;
          else if (frame.event === 'update') {
            got++;
            last = at;
          }
        }));
      }
      t = performance.now();
      await db.query(`update ${table} set status = 'shipped'`);
      const committed = performance.now();
      const streamed = committed - t;
      await db.query(`select realtime.publish('marker', 'after', '{}')`);
      const markerSent = performance.now();
      const deadline = Date.now() + 120_000;
      // Public: every owner gets every row.
      const expected = isPublic ? ROWS * owners.length : ROWS;
      while ((got < expected || marker === null) && Date.now() < deadline) await sleep(20);
      for (const ws of sockets) ws.terminate();
      runs.push({ plain, streamed, delivered: got, expected, drain: last - committed, marker: marker - markerSent });
      log(`C: ${ROWS} rows, ${isPublic ? 'public' : 'private'}, row_channels ${rowChannels}, run ${run + 1}: UPDATE ${ms(plain)} plain, ${ms(streamed)} streamed; ${got}/${expected} delivered, last ${ms(last - committed)} after commit; marker ${ms(marker - markerSent)}`);
    }
    result.push({
      stream: isPublic ? 'public' : 'private',
      expected: runs[0].expected,
      rowChannels,
      plain: median(runs.map((r) => r.plain)),
      streamed: median(runs.map((r) => r.streamed)),
      delivered: Math.min(...runs.map((r) => r.delivered)),
      drain: median(runs.map((r) => r.drain)),
      marker: median(runs.map((r) => r.marker)),
    });
  }
  return result;
}

try {
  await setup();
  daemon = await startDaemon();
  const a = PARTS.includes('A') ? await partA() : [];
  const b = PARTS.includes('B') ? await partB(daemon.url) : {};
  const c = PARTS.includes('C') ? await partC(daemon.url) : [];
  const out = [];
  out.push(`Change streams (${RUNS} run(s); medians)`);
  out.push('');
  out.push('A. realtime.change_audience, one call');
  out.push('| events | identities | median | per (event, identity) |');
  out.push('| --- | --- | --- | --- |');
  for (const r of a) out.push(`| ${r.events} | ${r.identities} | ${ms(r.median)} | ${r.perCheck.toFixed(1)} µs |`);
  out.push('');
  out.push(`B. INSERT → event, ${USERS} sockets of ${USERS} users, ${EVENTS} inserts at 50/s`);
  out.push('| stream | delivered | median | p99 |');
  out.push('| --- | --- | --- | --- |');
  for (const [name, r] of Object.entries(b)) out.push(`| ${name} | ${r.delivered}/${r.expected} | ${ms(r.median)} | ${ms(r.p99)} |`);
  const [priv, pub] = Object.values(b);
  if (priv && pub) out.push(`ratio private/public: median ${(priv.median / pub.median).toFixed(2)}x, p99 ${(priv.p99 / pub.p99).toFixed(2)}x`);
  out.push('');
  out.push(`C. one UPDATE of ${ROWS} rows, 10 owners subscribed`);
  out.push('| stream | row_channels | UPDATE without stream | UPDATE with stream | delivered | last event after commit | marker after burst |');
  out.push('| --- | --- | --- | --- | --- | --- | --- |');
  for (const r of c) {
    out.push(`| ${r.stream} | ${r.rowChannels} | ${ms(r.plain)} | ${ms(r.streamed)} (${(r.streamed / r.plain).toFixed(0)}x) | ${r.delivered}/${r.expected} | ${ms(r.drain)} | ${ms(r.marker)} |`);
  }
  console.log(out.join('\n'));
  const lost = Object.values(b).some((r) => r.delivered !== r.expected) || c.some((r) => r.delivered !== r.expected);
  if (lost) {
    console.error('bench: events were lost');
    process.exitCode = 1;
  }
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  await teardown();
}
