/**
 * Throwaway databases for tests. Each test file gets its own database, cloned
 * from a migrated template when scripts/test.mjs made one (REALTIMED_TEST_TEMPLATE),
 * else created and migrated here. Every database is dropped in teardown; the
 * run never writes into a database it did not create.
 */
import { randomBytes } from 'node:crypto';

import pg from 'pg';

import { migrate } from '../../src/cli/migrate.js';

export const SERVER_URL = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const RUN = process.env['REALTIMED_TEST_RUN'] ?? `solo${process.pid}`;
const TEMPLATE = process.env['REALTIMED_TEST_TEMPLATE'];

/** The subset of tap's Test these helpers use. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

export function urlFor(database: string, base: string = SERVER_URL, user?: string): string {
  const url = new URL(base);
  url.pathname = `/${database}`;
  if (user !== undefined) {
    url.username = user;
    url.password = '';
  }
  return url.toString();
}

export function uniqueName(kind: string): string {
  return `rt_test_${RUN}_${kind}_${randomBytes(4).toString('hex')}`;
}

/** Runs one statement on the server's maintenance database. */
export async function serverQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  const client = new pg.Client({ connectionString: SERVER_URL });
  await client.connect();
  try {
    return await client.query<R>(sql, params);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  name: string;
  url: string;
  /** A pool as the server URL's user (a superuser in CI). */
  pool: pg.Pool;
}

/**
 * A new database for one test file. `migrated: false` gives an empty one.
 * Dropped (with its connections) when the test ends.
 */
export async function createDatabase(t: Teardown, options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  const migrated = options.migrated ?? true;
  const name = uniqueName('db');
  if (migrated && TEMPLATE) {
    await cloneTemplate(name, TEMPLATE);
  } else {
    await serverQuery(`create database ${pg.escapeIdentifier(name)}`);
  }
  const url = urlFor(name);
  if (migrated && !TEMPLATE) await migrate({ databaseUrl: url });
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // An idle client killed by the server (a test terminating backends, the final
  // DROP DATABASE ... WITH (FORCE)) must not crash the test process.
  pool.on('error', () => {});
  t.teardown(async () => {
    try {
      await pool.end();
      await dropDatabase(name);
    } catch (err) {
      console.error('DB TEARDOWN', err);
      throw err;
    }
  });
  return { name, url, pool };
}

async function cloneTemplate(name: string, template: string): Promise<void> {
  // CREATE DATABASE ... TEMPLATE fails while another clone holds the template: retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await serverQuery(`create database ${pg.escapeIdentifier(name)} template ${pg.escapeIdentifier(template)}`);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== '55006' || attempt >= 50) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 100));
    }
  }
}

export async function dropDatabase(name: string): Promise<void> {
  await serverQuery(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
}

/** A login role for one test (cluster-wide, so dropped in teardown). */
export async function createLoginRole(t: Teardown, grants: string[] = []): Promise<string> {
  const role = uniqueName('role');
  await serverQuery(`create role ${pg.escapeIdentifier(role)} login`);
  for (const g of grants) await serverQuery(`grant ${pg.escapeIdentifier(g)} to ${pg.escapeIdentifier(role)}`);
  t.teardown(async () => {
    try {
      await serverQuery(`drop role if exists ${pg.escapeIdentifier(role)}`);
    } catch (err) {
      console.error('ROLE TEARDOWN', err);
      throw err;
    }
  });
  return role;
}

/**
 * As if partition_span had passed: the open partition of realtime.messages is
 * closed and the next one opened (realtime.maintain_partitions rolls it).
 */
export async function rollPartition(pool: pg.Pool): Promise<void> {
  await pool.query(`
    update realtime.message_partitions set opened_at = now() - interval '400 days'
    where opened_at is not null and closed_at is null;
    select realtime.maintain_partitions();`);
}

/** As if the retention had passed since every closed partition closed (the next prune drops them). */
export async function expireClosedPartitions(pool: pg.Pool): Promise<void> {
  await pool.query(`update realtime.message_partitions set closed_at = now() - interval '400 days' where closed_at is not null`);
}
