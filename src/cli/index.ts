/**
 * The `realtimed` command line: one file per command, registered here. Only
 * src/cli/ reads the environment; everything else takes what it uses.
 */
import { Command, CommanderError } from 'commander';

import { addDevCommand } from './dev.js';
import { addDoctorCommand } from './doctor.js';
import { RealtimedError } from './errors.js';
import { defaultIo, oneLine, PACKAGE_VERSION, type CliIo } from './io.js';
import { addMigrateCommand } from './migrate.js';
import { addSqlCommand } from './sql.js';
import { addStartCommand } from './start.js';
import { addStatsCommand } from './stats.js';

export type { CliIo } from './io.js';

function buildProgram(io: CliIo): Command {
  const program = new Command('realtimed')
    .description('Postgres-native realtime messaging: row-level security decides who subscribes and who publishes.')
    .version(PACKAGE_VERSION)
    .configureOutput({
      writeOut: io.out,
      writeErr: io.err,
      // Usage errors are one line with a code, like every other error.
      outputError: (text, write) => write(`realtimed: ${oneLine(text.replace(/^error: /, ''))} (see --help) [RT_ERR_USAGE]\n`),
    })
    .exitOverride();
  addMigrateCommand(program, io);
  addSqlCommand(program, io);
  addStartCommand(program, io);
  addDevCommand(program, io);
  addDoctorCommand(program, io);
  addStatsCommand(program, io);
  return program;
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
