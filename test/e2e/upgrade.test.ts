/**
 * Upgrades are safe while the application writes: from every earlier version
 * of the committed chain (read from sql/committed/ at run time), `realtimed
 * migrate` runs while 4 clients publish through a trigger, and nobody waits
 * forever, deadlocks or aborts; every committed write's message is there once
 * (dedupe repeats excepted), in write order.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import t from 'tap';
import pg from 'pg';

import { migrate, type MigrateResult } from '../../src/cli/migrate.js';
import { MIGRATIONS_FOLDER, loadMigrations, type Migration } from '../../src/cli/sql.js';
import { createDatabase, createLoginRole, urlFor, type Teardown } from '../helpers/db.js';
import {
  installApplication,
  startPublishers,
  type Application,
  type Publisher,
  type PublisherError,
} from '../helpers/publishers.js';
import { until } from '../helpers/wait.js';

// 11 upgrades of a few seconds each, on 2 cores beside other files.
t.setTimeout(300_000);

const PUBLISHERS = 4;
/** Rows per publisher before the upgrade: 2 messages each with dedupe (8,000 in all). */
const SEED_PER_PUBLISHER = 1_000;
/** Transactions each publisher commits before the upgrade starts, and again after it ends. */
const WARM_UP = 10;
const AFTERWARDS = 20;

const migrations = await loadMigrations();

/** A migrationsFolder holding the first `version` committed migrations (removed in teardown). */
async function folderUpTo(t: Teardown, chain: Migration[], version: number): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), 'realtimed-upgrade-'));
  t.teardown(() => rm(folder, { recursive: true, force: true }));
  await mkdir(join(folder, 'committed'));
  for (const m of chain.slice(0, version)) {
    await copyFile(join(MIGRATIONS_FOLDER, 'committed', m.filename), join(folder, 'committed', m.filename));
  }
  return folder;
}

/**
 * A deadlock's DETAIL readable: relation oids as names, and each process as
 * the publisher it is, else as the upgrade (no other session writes here).
 */
async function readable(pool: pg.Pool, publishers: Publisher[], detail: string): Promise<string> {
  const relation = /relation (\d+) of database \d+/g;
  const oids = [...new Set([...detail.matchAll(relation)].map((m) => m[1] ?? ''))];
  const { rows } = await pool.query<{ oid: string; name: string }>(
    'select c.oid::text as oid, c.oid::regclass::text as name from pg_catalog.pg_class c where c.oid = any ($1::oid[])',
    [oids],
  );
  const names = new Map(rows.map((r) => [r.oid, r.name]));
  const pids = new Map(publishers.map((p) => [String(p.pid), `publisher ${p.index}`]));
  return detail
    .replace(relation, (_match, oid: string) => `relation ${names.get(oid) ?? oid}`)
    .replace(/[Pp]rocess (\d+)/g, (_match, pid: string) => pids.get(pid) ?? `the upgrade (process ${pid})`)
    .replace(/\n/g, ' / ');
}

/** A CONTEXT without its SQL text: "PL/pgSQL function realtime.publish(...) line 62 at SQL statement < ...". */
function functionsOf(where: string): string {
  const frames = [...where.matchAll(/^(?:PL\/pgSQL|SQL) function (.*)$/gm)].map((m) => m[1] ?? '');
  return frames.length > 0 ? frames.join(' < ') : where.replace(/\s+/g, ' ');
}

/**
 * Every error, grouped by what happened, with one DETAIL of each:
 * "3x 40P01 during update: deadlock detected [in realtime.publish(...) ...] (publisher 0,2) [detail: ...]".
 */
async function describeErrors(pool: pg.Pool, publishers: Publisher[], errors: PublisherError[]): Promise<string[]> {
  const groups = new Map<string, { count: number; publishers: Set<number>; detail?: string }>();
  for (const e of errors) {
    const key = `${e.code} ${e.phase} ${e.statement}: ${e.message}${e.where ? ` [in ${functionsOf(e.where)}]` : ''}`;
    const g = groups.get(key) ?? { count: 0, publishers: new Set<number>(), ...(e.detail ? { detail: e.detail } : {}) };
    g.count++;
    g.publishers.add(e.publisher);
    groups.set(key, g);
  }
  const out: string[] = [];
  for (const [key, g] of groups) {
    const detail = g.detail ? ` [detail: ${await readable(pool, publishers, g.detail)}]` : '';
    out.push(`${g.count}x ${key} (publisher ${[...g.publishers].sort().join(',')})${detail}`);
  }
  return out;
}

interface MessageRow {
  channel_name: string;
  event_name: string;
  id: number | null;
  n: number | null;
}

/**
 * What each channel must hold, in write order: a 'changed' event per row write
 * and, with dedupe, an 'n' event the first time the row reaches each n.
 */
function expectedEvents(app: Application, publishers: Publisher[]): Map<string, string[]> {
  const channels = new Map<string, string[]>();
  const seen = new Map<string, Set<number>>();
  const write = (id: number, n: number): void => {
    const channel = `order:${id}`;
    const events = channels.get(channel) ?? [];
    channels.set(channel, events);
    events.push(`changed ${id} ${n}`);
    if (!app.dedupe) return;
    const values = seen.get(channel) ?? new Set<number>();
    seen.set(channel, values);
    if (!values.has(n)) {
      values.add(n);
      events.push(`n ${id} ${n}`);
    }
  };
  for (const ids of app.seeded) for (const id of ids) write(id, 0);
  for (const p of publishers) for (const w of p.writes) write(w.id, w.n);
  return channels;
}

const seedWrites = (app: Application): number => app.seeded.reduce((sum, ids) => sum + ids.length, 0);

for (let from = 1; from < migrations.length; from++) {
  t.test(`upgrade from version ${from} while ${PUBLISHERS} clients publish`, async (t) => {
    // The role first: teardown runs last-in first-out, and the role can be
    // dropped only after the database holding its grants.
    const role = await createLoginRole(t);
    const db = await createDatabase(t, { migrated: false });
    const installed = await migrate({ databaseUrl: db.url, migrationsFolder: await folderUpTo(t, migrations, from) });
    t.equal(installed.to, from, `installed version ${from}`);

    const seeding = Date.now();
    const app = await installApplication(db.pool, role, {
      publishers: PUBLISHERS,
      seedPerPublisher: SEED_PER_PUBLISHER,
    });
    const dedupe = app.dedupe ? 'takes' : 'does not take';
    t.comment(`version ${from}: seeded in ${Date.now() - seeding} ms; realtime.publish ${dedupe} a dedupe key`);
    const publishers = await startPublishers(t, { url: urlFor(db.name, undefined, role), app });
    // Each publisher commits `count` more transactions; one that only fails
    // (or lost its connection) is not waited for: its errors are reported below.
    const progress = async (what: string, count: number, timeoutMs: number): Promise<void> => {
      const marks = publishers.list.map((p) => ({ committed: p.committed, errors: p.errors.length }));
      const done = (p: Publisher, k: number): boolean =>
        p.committed >= (marks[k]?.committed ?? 0) + count ||
        p.errors.length >= (marks[k]?.errors ?? 0) + count ||
        !p.running;
      try {
        await until(what, () => publishers.list.every(done), timeoutMs);
      } catch (err) {
        t.fail((err as Error).message, { committed: publishers.list.map((p) => p.committed) });
      }
    };
    await progress(`each publisher commits ${WARM_UP} transactions`, WARM_UP, 20_000);

    publishers.phase = 'during';
    const before = publishers.list.map((p) => p.committed);
    const started = Date.now();
    let upgraded: MigrateResult | null = null;
    let failure: unknown = null;
    const progressLines: string[] = [];
    try {
      upgraded = await migrate({ databaseUrl: db.url, log: (line) => progressLines.push(line) });
    } catch (err) {
      failure = err;
    }
    const took = Date.now() - started;
    publishers.phase = 'after';
    const marks = publishers.list.map((p) => p.committed);
    const meanwhile = marks.reduce((sum, n, k) => sum + n - (before[k] ?? 0), 0);
    t.comment(`the upgrade took ${took} ms; ${meanwhile} transactions committed meanwhile`);
    await progress(`each publisher commits ${AFTERWARDS} more transactions after the upgrade`, AFTERWARDS, 30_000);
    await publishers.stop();

    // The chain may have grown while this ran (new migrations are committed
    // beside it): the target is whatever is committed now.
    const latest = (await loadMigrations()).length;
    type Failure = { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown; detail?: unknown } };
    const failed = failure as Failure | null;
    t.ok(upgraded !== null, `migrate succeeded (${took} ms)`, {
      error: failed && {
        code: failed.code,
        message: failed.message,
        cause: failed.cause && {
          code: failed.cause.code,
          message: failed.cause.message,
          detail: typeof failed.cause.detail === 'string' ? await readable(db.pool, publishers.list, failed.cause.detail) : undefined,
        },
      },
      progress: progressLines,
    });
    t.equal(upgraded?.to, latest, `upgraded to version ${latest}`);
    const version = await db.pool.query<{ v: number }>('select realtime.version() as v');
    t.equal(version.rows[0]?.v, latest, 'realtime.version() is the latest');

    for (const p of publishers.list) {
      t.equal(p.errors.length, 0, `publisher ${p.index}: no errors (${p.committed} transactions committed)`, {
        errors: await describeErrors(db.pool, publishers.list, p.errors),
        warnings: p.warnings,
      });
    }
    const committed = publishers.list.map((p) => p.committed);
    t.ok(
      publishers.list.every((p, k) => p.committed >= (marks[k] ?? 0) + AFTERWARDS),
      `each publisher went on committing after the upgrade (${committed.join(', ')} in all)`,
    );

    // Every committed write's messages, each once, in write order per channel.
    const { rows } = await db.pool.query<MessageRow>(`
      select m.channel_name, m.event_name,
             (m.payload ->> 'id')::integer as id, (m.payload ->> 'n')::integer as n
      from realtime.messages m
      where m.channel_name like 'order:%'
      order by m.seq`);
    const expected = expectedEvents(app, publishers.list);
    const actual = new Map<string, string[]>();
    for (const row of rows) {
      const events = actual.get(row.channel_name) ?? [];
      actual.set(row.channel_name, events);
      events.push(`${row.event_name} ${row.id} ${row.n}`);
    }
    const count = (m: Map<string, string[]>, event: string): number =>
      [...m.values()].reduce((sum, events) => sum + events.filter((e) => e.startsWith(`${event} `)).length, 0);
    const writes = count(expected, 'changed');
    t.comment(`${rows.length} messages; ${writes} row writes committed, ${writes - seedWrites(app)} by the publishers`);
    t.equal(count(actual, 'changed'), writes, "one 'changed' message per committed row write");
    if (app.dedupe) {
      t.ok(count(expected, 'n') < writes, 'some writes repeated a dedupe key');
      t.equal(count(actual, 'n'), count(expected, 'n'), "one 'n' message per distinct (row, n): dedupe repeats left out");
    }

    const wrong: { channel: string; expected: string[]; actual: string[] }[] = [];
    for (const channel of new Set([...expected.keys(), ...actual.keys()])) {
      const want = expected.get(channel) ?? [];
      const got = actual.get(channel) ?? [];
      if (want.join('|') !== got.join('|')) wrong.push({ channel, expected: want, actual: got });
    }
    t.equal(
      wrong.length,
      0,
      'in every channel, the messages in seq order are the committed writes in write order (seq increases across the upgrade)',
      { first: wrong.slice(0, 5) },
    );

    const dropped = await db.pool.query<{ reason: string; count: number }>(`
      select d.reason, pg_catalog.count(*)::integer as count from realtime.dropped_messages d
      where d.channel_name like 'order:%' group by d.reason order by d.reason`);
    t.same(dropped.rows, [], 'realtime.publish dropped nothing');
  });
}
