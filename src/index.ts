export { migrate, type MigrateOptions, type MigrateResult } from './migrate.js';
export { buildScript, loadMigrations, MIGRATIONS_FOLDER, type Migration, type ScriptOptions } from './sqlPackage.js';
export { RealtimedError, type CliErrorCode } from './errors.js';
export { parseDatabaseUrl, DEFAULT_DATABASE_URL, type DatabaseTarget } from './config.js';
