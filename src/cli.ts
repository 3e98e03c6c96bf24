import { readFileSync } from 'node:fs';

import { Command, CommanderError, InvalidArgumentError } from 'commander';

import { RealtimedError } from './errors.js';
import { migrate } from './migrate.js';
import { buildScript, loadMigrations } from './sqlPackage.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

const defaultIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
};

function version(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a schema version number, e.g. 1');
  return Number(value);
}

function buildProgram(io: CliIo): Command {
  const program = new Command('realtimed')
    .description('Postgres-native realtime messaging: row-level security decides who subscribes and who publishes.')
    .version(pkg.version)
    .configureOutput({
      writeOut: io.out,
      writeErr: io.err,
      // Usage errors are one line with a code, like every other error.
      outputError: (text, write) => write(`realtimed: ${oneLine(text.replace(/^error: /, ''))} (see --help) [RT_ERR_USAGE]\n`),
    })
    .exitOverride();

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
      io.out(
        result.applied.length === 0
          ? `realtime schema is up to date (version ${result.to})\n`
          : `realtime schema migrated from version ${result.from} to ${result.to} (${result.applied.length} applied)\n`,
      );
    });

  program
    .command('sql')
    .description(
      'Print the realtime SQL package as one plain SQL script, for psql or your own migration tool; safe to run twice.',
    )
    .option('--from <version>', 'print only the upgrade from this installed version (SELECT realtime.version())', version)
    .option('--no-transaction', 'leave out BEGIN/COMMIT (when your migration tool wraps each migration in one)')
    .action(async (opts: { from?: number; transaction: boolean }) => {
      const script = buildScript(await loadMigrations(), {
        from: opts.from ?? 0,
        transaction: opts.transaction,
        packageVersion: pkg.version,
      });
      io.out(script);
    });

  return program;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** Runs the CLI; resolves to the process exit code. Never throws. */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with exit code 0; usage errors were printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof RealtimedError) {
      io.err(`realtimed: ${oneLine(err.message)} [${err.code}]\n`);
      return err.exitCode;
    }
    const message = err instanceof Error ? err.message : String(err);
    io.err(`realtimed: unexpected error: ${oneLine(message)} [RT_ERR_INTERNAL]\n`);
    return 1;
  }
}
