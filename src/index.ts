/** realtimed as a library: installing the SQL package, and its errors. */
export { migrate, type MigrateOptions, type MigrateResult } from './cli/migrate.js';
export { buildScript, loadMigrations, MIGRATIONS_FOLDER, type Migration, type ScriptOptions } from './cli/sql.js';
export { RealtimedError, type CliErrorCode } from './cli/errors.js';
export { parseDatabaseUrl, DEFAULT_DATABASE_URL, type DatabaseTarget } from './db/url.js';
