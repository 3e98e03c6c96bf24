/** What `realtimed migrate` reads before it runs graphile-migrate. */
import type pg from 'pg';

/** Serializes concurrent `realtimed migrate` runs (graphile-migrate's own lock fails instead of waiting). */
const MIGRATE_LOCK_KEY = 7_413_520_019;

/**
 * Readies the session `realtimed migrate` inspects the database with: a
 * statement timeout, and the lock that makes any other `realtimed migrate` on
 * this database wait (held until the session ends).
 */
export async function beginMigration(client: pg.ClientBase): Promise<void> {
  await client.query(`set statement_timeout = '120s'`);
  // Tried, not waited for inside one statement: a statement waiting holds a
  // snapshot, and the other run's CREATE INDEX CONCURRENTLY would wait for
  // that snapshot while this one waits for its lock.
  for (let attempt = 0; ; attempt++) {
    const { rows } = await client.query<{ locked: boolean }>('select pg_catalog.pg_try_advisory_lock($1) as locked', [
      MIGRATE_LOCK_KEY,
    ]);
    if (rows[0]?.locked) return;
    if (attempt >= 1200) throw new Error('another realtimed migrate has held this database for 2 minutes');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface InstallState {
  chain: { filename: string; hash: string }[] | null;
  scriptVersion: number;
  /** Rows in realtime.schema_versions: every migration adds one, so this equals scriptVersion. */
  versionRows: number;
  foreignRealtimeSchema: boolean;
}

/** What is installed: graphile-migrate's chain, the script-installed version, a foreign realtime schema. */
export async function installState(client: pg.ClientBase): Promise<InstallState> {
  const { rows } = await client.query<{
    has_chain: boolean;
    has_versions: boolean;
    realtime_objects: boolean;
  }>(`
    select pg_catalog.to_regclass('graphile_migrate.migrations') is not null as has_chain,
           pg_catalog.to_regclass('realtime.schema_versions') is not null as has_versions,
           exists (select from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = 'realtime')
           or exists (select from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                      where n.nspname = 'realtime') as realtime_objects`);
  const row = rows[0];
  if (!row) throw new Error('inspect returned no row');
  let chain: InstallState['chain'] = null;
  if (row.has_chain) {
    chain = (
      await client.query<{ filename: string; hash: string }>(
        'select filename, hash from graphile_migrate.migrations order by filename',
      )
    ).rows;
  }
  let scriptVersion = 0;
  let versionRows = 0;
  if (row.has_versions) {
    const versions = (
      await client.query<{ v: number; n: number }>(
        'select coalesce(max(version), 0)::int as v, count(*)::int as n from realtime.schema_versions',
      )
    ).rows[0];
    scriptVersion = versions?.v ?? 0;
    versionRows = versions?.n ?? 0;
  }
  return { chain, scriptVersion, versionRows, foreignRealtimeSchema: row.realtime_objects && !row.has_versions };
}
