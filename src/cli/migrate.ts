/**
 * `realtimed migrate`: the committed graphile-migrate chain, one migration at
 * a time with realtime's hot tables locked first (src/db/migrations.ts), so
 * it is safe while the application writes; after refusing databases it must
 * not touch. A no-op when current.
 */
import type { Command } from 'commander';
import pg from 'pg';

import { beginMigration, installState, type InstallState } from '../db/install.js';
import { applyMigration, ensureChainTables, migrationHash, prepareVersion13 } from '../db/migrations.js';
import { parseDatabaseUrl } from '../db/url.js';
import { RealtimedError, fromPgError } from './errors.js';
import type { CliIo } from './io.js';
import { MIGRATIONS_FOLDER, loadMigrations, type Migration } from './sql.js';

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
  /**
   * How the versions already installed got there, when not all by migrate:
   * 'script' (installed from `realtimed sql`, no graphile-migrate chain here:
   * newer migrations are applied the same way, without one), or 'adopted'
   * (some were upgraded with `realtimed sql --from`: recorded in the chain).
   */
  scriptInstalled?: { how: 'script' | 'adopted'; versions: number[] };
}

interface Installed {
  /** The installed version (realtime.schema_versions). */
  version: number;
  /** Rows of realtimed's own graphile-migrate chain (0: none). */
  chained: number;
}

/** Refuses databases realtimed must not migrate, with the way out in the message. */
function check(state: InstallState, migrations: Migration[]): Installed {
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
  if (state.foreignRealtimeSchema) {
    throw new RealtimedError(
      'RT_ERR_FOREIGN_SCHEMA',
      'a schema named "realtime" already exists and was not created by realtimed; rename or drop it first. Nothing was changed.',
    );
  }
  const chained = (state.chain ?? []).length;
  // Every migration adds its realtime.schema_versions row and its chain row
  // in one transaction: versions with a gap, or a chain ahead of the schema
  // (a realtime schema restored from an older dump), are not states migrate
  // can reason about.
  if (state.versionRows !== state.scriptVersion || chained > state.scriptVersion) {
    throw new RealtimedError(
      'RT_ERR_MIGRATION',
      `realtime.schema_versions holds ${state.versionRows} rows up to version ${state.scriptVersion}` +
        (chained > state.scriptVersion ? ` but graphile_migrate.migrations records ${chained} migrations` : ', with gaps') +
        '; the schema does not match one realtimed version (restored from another dump?). Nothing was changed.',
    );
  }
  const version = state.scriptVersion;
  if (version > migrations.length) {
    throw new RealtimedError(
      'RT_ERR_VERSION',
      `this database is at realtime version ${version}, newer than this realtimed's ${migrations.length}: upgrade realtimed. Nothing was changed.`,
    );
  }
  return { version, chained };
}

/**
 * Applies the committed migrations not yet applied, one transaction each.
 * A no-op when the database is current. Versions the plain script installed
 * count as installed: with realtimed's graphile-migrate chain present they are
 * recorded in it first; with none (a script install) newer ones are applied
 * without creating one, as the next `realtimed sql --from` would.
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
    await beginMigration(client);
    const installed = check(await installState(client), migrations);
    const before = installed.version;
    const fromScript = migrations.slice(installed.chained, before).map((m) => m.version);
    const scriptOnly = installed.chained === 0 && before > 0;
    let scriptInstalled: MigrateResult['scriptInstalled'];
    if (scriptOnly) {
      scriptInstalled = { how: 'script', versions: fromScript };
    } else if (fromScript.length > 0) {
      // Upgraded with `realtimed sql --from` after migrate installed it: the
      // same migrations, so the chain records them as applied.
      await recordApplied(client, migrations.slice(installed.chained, before));
      log(`versions ${fromScript[0]} to ${before} were applied by the plain script (realtimed sql): recorded them in graphile_migrate.migrations`);
      scriptInstalled = { how: 'adopted', versions: fromScript };
    }
    const done = (to: number, applied: string[]): MigrateResult => ({ from: before, to, applied, ...(scriptInstalled ? { scriptInstalled } : {}) });
    if (before === migrations.length) return done(before, []);
    if (!scriptOnly) await ensureChainTables(client);
    const applied: string[] = [];
    for (const m of migrations.slice(before)) {
      if (migrationHash(m.body, m.previousHash) !== m.hash) {
        throw new RealtimedError('RT_ERR_MIGRATION', `Hash for ${m.filename} does not match its contents; has the file been edited?`);
      }
      if (m.version === 13) await prepareVersion13(client, log);
      log(`applying ${m.filename}${scriptOnly ? ' (no graphile-migrate chain: this database was installed from the plain script)' : ''}`);
      await applyMigration(client, m, m.version - 1, { record: !scriptOnly });
      applied.push(m.filename);
    }
    return done(check(await installState(client), migrations).version, applied);
  } catch (err) {
    throw fromMigrationError(err, target.where);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Records migrations the plain script applied in realtimed's chain, in order, in one transaction. */
async function recordApplied(client: pg.Client, done: Migration[]): Promise<void> {
  await client.query('begin');
  try {
    for (const m of done) {
      await client.query(
        'insert into graphile_migrate.migrations (hash, previous_hash, filename) values ($1, $2, $3) on conflict (hash) do nothing',
        [m.hash, m.previousHash, m.filename],
      );
    }
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
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
  return fromPgError(err, where);
}

export function addMigrateCommand(program: Command, io: CliIo): void {
  program
    .command('migrate')
    .description(
      'Install or upgrade the realtime SQL package in an existing database (graphile-migrate); a no-op when current.',
    )
    .option('--database-url <url>', 'PostgreSQL connection URL (default: $DATABASE_URL)')
    .action(async (opts: { databaseUrl?: string }) => {
      const result = await migrate({
        databaseUrl: opts.databaseUrl ?? io.env['DATABASE_URL'],
        databaseUrlSource: opts.databaseUrl === undefined ? 'DATABASE_URL' : '--database-url',
        log: (line) => io.err(`realtimed migrate: ${line}\n`),
      });
      const how =
        result.scriptInstalled?.how === 'script'
          ? '; installed from the plain script (realtimed sql), so no graphile-migrate chain was created'
          : result.scriptInstalled?.how === 'adopted'
            ? `; versions ${result.scriptInstalled.versions.join(', ')} came from the plain script and are now recorded`
            : '';
      io.out(
        result.applied.length === 0
          ? `realtime schema is up to date (version ${result.to}${how})\n`
          : `realtime schema migrated from version ${result.from} to ${result.to} (${result.applied.length} applied${how})\n`,
      );
    });
}
