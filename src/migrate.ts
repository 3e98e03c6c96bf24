import { migrate as graphileMigrate } from 'graphile-migrate';
// graphile-migrate keeps its pool 200 ms after use and exits the process if an
// idle connection of it errors; release it as soon as the run is over.
import { clearAllPools } from 'graphile-migrate/dist/pgReal.js';
import { Logger } from '@graphile/logger';
import pg from 'pg';

import { parseDatabaseUrl } from './config.js';
import { RealtimedError, fromPgError } from './errors.js';
import { MIGRATIONS_FOLDER, loadMigrations, type Migration } from './sqlPackage.js';

export interface MigrateOptions {
  databaseUrl: string | undefined;
  /** Where the URL came from, for error messages (default --database-url). */
  databaseUrlSource?: string;
  /** Defaults to the package's own sql/ folder. */
  migrationsFolder?: string;
  /** Progress lines for people ("applying 000001-foundation.sql"). */
  log?: (line: string) => void;
}

export interface MigrateResult {
  /** Schema version before and after. */
  from: number;
  to: number;
  applied: string[];
}

/** Serializes concurrent `realtimed migrate` runs (graphile-migrate's own lock fails instead of waiting). */
const MIGRATE_LOCK_KEY = 7_413_520_019;

interface DatabaseState {
  chain: { filename: string; hash: string }[] | null;
  scriptVersion: number;
  foreignRealtimeSchema: boolean;
}

async function inspect(client: pg.Client): Promise<DatabaseState> {
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
  let chain: DatabaseState['chain'] = null;
  if (row.has_chain) {
    chain = (
      await client.query<{ filename: string; hash: string }>(
        'select filename, hash from graphile_migrate.migrations order by filename',
      )
    ).rows;
  }
  let scriptVersion = 0;
  if (row.has_versions) {
    scriptVersion = (
      await client.query<{ v: number }>('select coalesce(max(version), 0)::int as v from realtime.schema_versions')
    ).rows[0]?.v ?? 0;
  }
  return { chain, scriptVersion, foreignRealtimeSchema: row.realtime_objects && !row.has_versions };
}

/** Refuses databases realtimed must not migrate, with the way out in the message. */
function check(state: DatabaseState, migrations: Migration[]): number {
  const ours = new Set(migrations.map((m) => m.hash));
  const foreign = (state.chain ?? []).filter((row) => !ours.has(row.hash));
  if (foreign.length > 0) {
    const last = foreign[foreign.length - 1]?.filename ?? '';
    throw new RealtimedError(
      'RT_ERR_FOREIGN_CHAIN',
      `this database's graphile_migrate schema holds another migration chain (${foreign.length} migrations, last ${last}); ` +
        'graphile-migrate keeps one chain per database, so realtimed will not add its own. ' +
        'Install with the plain script instead: realtimed sql | psql -v ON_ERROR_STOP=1 -d <database> ' +
        '(or add its output to your own migrations). Nothing was changed.',
    );
  }
  const installed = (state.chain ?? []).length;
  if (state.scriptVersion > installed) {
    throw new RealtimedError(
      'RT_ERR_SCRIPT_INSTALLED',
      `realtime version ${state.scriptVersion} was installed or upgraded from the plain script (realtimed sql), not by realtimed migrate; ` +
        `upgrade it the same way: realtimed sql --from ${state.scriptVersion} | psql -v ON_ERROR_STOP=1 -d <database>. Nothing was changed.`,
    );
  }
  if (state.foreignRealtimeSchema) {
    throw new RealtimedError(
      'RT_ERR_FOREIGN_SCHEMA',
      'a schema named "realtime" already exists and was not created by realtimed; rename or drop it first. Nothing was changed.',
    );
  }
  return installed;
}

/**
 * Applies the committed migrations through graphile-migrate's Node API.
 * A no-op when the database is current.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const target = parseDatabaseUrl(options.databaseUrl, options.databaseUrlSource);
  const migrationsFolder = options.migrationsFolder ?? MIGRATIONS_FOLDER;
  const migrations = await loadMigrations(migrationsFolder);
  const log = options.log ?? (() => {});

  const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {}); // reported by the query that fails
  try {
    await client.connect();
    await client.query(`set statement_timeout = '120s'`);
    await client.query('select pg_catalog.pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
    const before = check(await inspect(client), migrations);
    if (before === migrations.length) {
      return { from: before, to: before, applied: [] };
    }
    const applied: string[] = [];
    const logger = new Logger(() => (level, message) => {
      const running = /Running migration '([^']+)'/.exec(message);
      if (running?.[1]) {
        applied.push(running[1]);
        log(`applying ${running[1]}`);
      } else if (level === 'error' || level === 'warning') {
        log(message);
      }
    });
    try {
      await graphileMigrate({ connectionString: target.url, migrationsFolder, logger });
    } finally {
      clearAllPools();
    }
    const after = check(await inspect(client), migrations);
    return { from: before, to: after, applied };
  } catch (err) {
    throw fromMigrationError(err, target.where);
  } finally {
    await client.end().catch(() => {});
  }
}

function fromMigrationError(err: unknown, where: string): RealtimedError {
  if (err instanceof RealtimedError) return err;
  const e = err as { code?: unknown; message?: unknown; hint?: unknown };
  // Our migrations' own guards (raise exception): P0001 with a readable message.
  if (e.code === 'P0001' && typeof e.message === 'string') {
    const hint = typeof e.hint === 'string' && e.hint ? ` (${e.hint})` : '';
    return new RealtimedError('RT_ERR_MIGRATION', `${e.message}${hint}`, { cause: err });
  }
  if (typeof e.message === 'string' && /Hash for .* does not match/.test(e.message)) {
    return new RealtimedError('RT_ERR_MIGRATION', e.message, { cause: err });
  }
  return fromPgError(err, where);
}
