/**
 * `realtimed start`: the relay, until SIGTERM/SIGINT. With --workers N the
 * primary supervises N worker processes (workers.ts), each a whole daemon.
 */
import cluster from 'node:cluster';
import type { AddressInfo } from 'node:net';

import { Option, type Command } from 'commander';
import pg from 'pg';
import { pino } from 'pino';

import { createDaemon } from '../daemon/index.js';
import { RealtimedError } from './errors.js';
import { defaultStopSignal, type CliIo } from './io.js';
import { commanderOptions, integer, startConfigFrom, type StartConfig } from './options.js';

/** How long `start` may take to stop after SIGTERM before it exits anyway. */
const STOP_DEADLINE_MS = 10_000;

export function addStartCommand(program: Command, io: CliIo): void {
  const command = program
    .command('start')
    .description('Run the WebSocket relay: RLS-checked subscribe and publish, committed messages to subscribers.')
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL for checks and publishes (may be a pooler)').env('DATABASE_URL'))
    .addOption(
      new Option('--workers <n>', 'processes sharing the port, one per core (each with its own pool and LISTEN connection)')
        .env('REALTIMED_WORKERS')
        .default(1)
        .argParser(integer(1, 256)),
    );
  for (const option of commanderOptions('start')) command.addOption(option);
  command.action(async (opts: Record<string, unknown>) => {
    const databaseUrl = opts['databaseUrl'] as string | undefined;
    if (databaseUrl === undefined) {
      throw new RealtimedError('RT_ERR_USAGE', 'no database: pass --database-url or set DATABASE_URL');
    }
    const config = startConfigFrom(opts, 'start', { databaseUrl });
    const workers = opts['workers'] as number;
    if (workers > 1 && cluster.isPrimary) {
      const { superviseWorkers } = await import('./workers.js');
      const log = pino({ level: config.logLevel, base: { service: 'realtimed', role: 'primary' } });
      log.info({ workers }, 'starting workers');
      const code = await superviseWorkers(workers, (line) => log.warn(line), io.stopSignal ?? defaultStopSignal).done;
      if (code !== 0) throw new RealtimedError('RT_ERR_WORKERS', 'a worker did not stop cleanly');
      return;
    }
    await serve(config, io);
    // A worker's channel to the primary would keep it alive.
    if (cluster.isWorker) cluster.worker?.disconnect();
  });
}

/**
 * Runs the daemon until SIGTERM/SIGINT, then stops it within 10 s.
 * `onListening` runs once it accepts connections (dev prints its banner there).
 */
export async function serve(config: StartConfig, io: CliIo, onListening?: (address: AddressInfo) => void): Promise<void> {
  const logger = pino({ level: config.logLevel, base: { service: 'realtimed' } });
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: config.poolSize,
    application_name: 'realtimed',
    connectionTimeoutMillis: 5000,
  });
  const daemon = createDaemon({ config, pool, logger });
  const stopping = (io.stopSignal ?? defaultStopSignal)();
  let address: AddressInfo;
  try {
    address = await daemon.start();
  } catch (err) {
    await pool.end().catch(() => {});
    throw listenError(err, config);
  }
  onListening?.(address);
  const signal = await stopping;
  logger.info({ signal }, 'stopping');
  if (cluster.isWorker) {
    // A terminal's Ctrl-C reaches the workers and the primary forwards it too:
    // the second one must not cut this graceful stop short.
    process.on('SIGINT', () => {});
    process.on('SIGTERM', () => {});
  }
  const deadline = setTimeout(() => {
    logger.error('could not stop within 10 s; exiting');
    process.exit(1);
  }, STOP_DEADLINE_MS);
  deadline.unref();
  await daemon.stop();
  await pool.end();
  clearTimeout(deadline);
}

/** A failure to take the address (in use, not permitted, not here) as one line an operator can act on. */
function listenError(err: unknown, config: StartConfig): unknown {
  const code = (err as { code?: unknown }).code;
  const where = `${config.host}:${config.port}`;
  if (code === 'EADDRINUSE') return new RealtimedError('RT_ERR_LISTEN', `${where} is in use: stop what listens there or pass another --port`);
  if (code === 'EACCES') return new RealtimedError('RT_ERR_LISTEN', `not permitted to listen on ${where}: use a port from 1024, or another --host`);
  if (code === 'EADDRNOTAVAIL') return new RealtimedError('RT_ERR_LISTEN', `${config.host} is not an address of this machine: pass another --host`);
  return err;
}
