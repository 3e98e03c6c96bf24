import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import pg from 'pg';
import { pino } from 'pino';

import { START_DEFAULTS, checkStartConfig, parseDatabaseUrl, type StartConfig } from './config.js';
import { createDaemon } from './daemon.js';
import { doctor, formatFindings } from './doctor.js';
import { RealtimedError, fromPgError } from './errors.js';
import { migrate } from './migrate.js';
import { buildScript, loadMigrations } from './sqlPackage.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** Resolves when the process is asked to stop (SIGTERM/SIGINT); `start` waits on it. */
  stopSignal?: () => Promise<string>;
}

const defaultStopSignal = (): Promise<string> =>
  new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });

const defaultIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
  stopSignal: defaultStopSignal,
};

function integer(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** How long `start` may take to stop after SIGTERM before it exits anyway. */
const STOP_DEADLINE_MS = 10_000;

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

  addStartOptions(
    program
      .command('start')
      .description('Run the WebSocket relay: RLS-checked subscribe and publish, committed messages to subscribers.')
      .addOption(new Option('--database-url <url>', 'PostgreSQL URL for checks and publishes (may be a pooler)').env('DATABASE_URL'))
      .addOption(
        new Option('--workers <n>', 'processes sharing the port, one per core (each with its own pool and LISTEN connection)')
          .env('REALTIMED_WORKERS')
          .default(1)
          .argParser(integer(1, 256)),
      ),
    { inspector: false, logLevel: START_DEFAULTS.logLevel },
  ).action(async (opts: Record<string, unknown>) => {
    const databaseUrl = opts['databaseUrl'] as string | undefined;
    if (databaseUrl === undefined) {
      throw new RealtimedError('RT_ERR_USAGE', 'no database: pass --database-url or set DATABASE_URL');
    }
    const config = startConfigFrom(opts, { databaseUrl, jwtSecret: opts['jwtSecret'] as string | undefined });
    const workers = opts['workers'] as number;
    if (workers > 1) {
      if (cluster.isPrimary) {
        const { superviseWorkers } = await import('./workers.js');
        const log = pino({ level: config.logLevel, base: { service: 'realtimed', role: 'primary' } });
        log.info({ workers }, 'starting workers');
        const code = await superviseWorkers(workers, (line) => log.warn(line), io.stopSignal ?? defaultStopSignal).done;
        if (code !== 0) throw new RealtimedError('RT_ERR_WORKERS', 'a worker did not stop cleanly');
        return;
      }
    }
    await serve(config, io);
    // A worker's channel to the primary would keep it alive.
    if (cluster.isWorker) cluster.worker?.disconnect();
  });

  addStartOptions(
    program
      .command('dev')
      .description(
        'Try realtimed with nothing installed: an embedded PostgreSQL in ./.realtimed (unless DATABASE_URL is set), the migrations, demo channels, the relay and the inspector page.',
      )
      .addOption(new Option('--database-url <url>', 'use this database instead of the embedded one').env('DATABASE_URL'))
      .option('--dir <path>', 'where the embedded cluster and dev state live', '.realtimed')
      .option('--fresh', 'delete the embedded cluster and dev state first, and start over')
      .addOption(new Option('--demo', 'install the demo channels and their permissive policies (default: only on the embedded database)'))
      .addOption(new Option('--no-demo', 'do not install the demo channels')),
    { inspector: true, logLevel: 'warn' },
  ).action(async (opts: Record<string, unknown>) => {
    const { runDev } = await import('./dev.js');
    await runDev(
      {
        dir: opts['dir'] as string,
        fresh: opts['fresh'] === true,
        databaseUrl: opts['databaseUrl'] as string | undefined,
        demo: opts['demo'] as boolean | undefined,
        jwtSecret: opts['jwtSecret'] as string | undefined,
        configFor: (databaseUrl, jwtSecret) => startConfigFrom(opts, { databaseUrl, jwtSecret }),
      },
      { out: io.out, serve: (config, onListening) => serve(config, io, onListening) },
    );
  });

  program
    .command('doctor')
    .description('Check a database for what realtimed needs in production, in plain words; changes nothing. Exit 1 on a problem.')
    .addOption(new Option('--database-url <url>', 'the database realtimed start will use').env('DATABASE_URL'))
    .addOption(new Option('--listen-url <url>', 'the direct connection start --listen-url will use').env('REALTIMED_LISTEN_URL'))
    .addOption(new Option('--roles <list>', 'roles client tokens carry (start --roles)').env('REALTIMED_ROLES').default(START_DEFAULTS.roles.join(',')))
    .action(async (opts: { databaseUrl?: string; listenUrl?: string; roles: string }) => {
      const { where, findings } = await doctor({
        databaseUrl: opts.databaseUrl,
        databaseUrlSource: '--database-url or DATABASE_URL',
        listenUrl: opts.listenUrl,
        roles: list(opts.roles),
      });
      io.out(formatFindings(where, findings));
      const problems = findings.filter((f) => f.level === 'fail').length;
      if (problems > 0) throw new RealtimedError('RT_ERR_DOCTOR', `${problems} problem${problems === 1 ? '' : 's'} found (FAIL lines above)`);
    });

  program
    .command('stats')
    .description('Print realtime.channel_stats: messages, audiences, webhook success per channel.')
    .option('--database-url <url>', 'PostgreSQL connection URL (default: $DATABASE_URL)')
    .action(async (opts: { databaseUrl?: string }) => {
      const target = parseDatabaseUrl(opts.databaseUrl ?? io.env['DATABASE_URL'], opts.databaseUrl === undefined ? 'DATABASE_URL' : '--database-url');
      const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
      client.on('error', () => {});
      try {
        await client.connect();
        const { rows } = await client.query<Record<string, string | null>>(`
          select pattern, case when enabled then 'yes' else 'no' end as enabled,
                 messages_last_hour::text as last_hour, messages_last_day::text as last_day,
                 messages_total::text as total, coalesce(avg_ws_audience::text, '-') as avg_sockets,
                 coalesce(to_char(webhook_success_rate * 100, 'FM990.0') || '%', '-') as webhooks_ok,
                 webhooks_pending::text as pending,
                 coalesce(to_char(last_message_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '-') as last_message_utc
          from realtime.channel_stats order by pattern`);
        io.out(formatTable(rows));
      } catch (err) {
        throw fromPgError(err, target.where);
      } finally {
        await client.end().catch(() => {});
      }
    });

  return program;
}

/** The options `start` and `dev` share, each also from an environment variable. */
function addStartOptions(command: Command, defaults: { inspector: boolean; logLevel: string }): Command {
  return command
    .addOption(new Option('--listen-url <url>', 'direct PostgreSQL URL for LISTEN (default: --database-url)').env('REALTIMED_LISTEN_URL'))
    .addOption(new Option('--host <host>', 'address to listen on').env('REALTIMED_HOST').default(START_DEFAULTS.host))
    .addOption(new Option('--port <port>', 'port to listen on').env('REALTIMED_PORT').default(START_DEFAULTS.port).argParser(integer(0, 65535)))
    .addOption(new Option('--path <path>', 'WebSocket endpoint path').env('REALTIMED_PATH').default(START_DEFAULTS.path))
    .addOption(new Option('--jwt-secret <secret>', 'HS256 secret that signs client tokens (32+ characters)').env('REALTIMED_JWT_SECRET'))
    .addOption(new Option('--jwks-url <url>', 'JWKS URL for RS256/ES256 client tokens').env('REALTIMED_JWKS_URL'))
    .addOption(new Option('--roles <list>', 'roles a token may carry, comma-separated').env('REALTIMED_ROLES').default(START_DEFAULTS.roles.join(',')))
    .addOption(new Option('--no-anon', 'refuse connections without a token (they must send an auth frame)').env('REALTIMED_NO_ANON'))
    .addOption(new Option('--allowed-origins <list>', 'browser origins allowed to connect, comma-separated (default: any)').env('REALTIMED_ALLOWED_ORIGINS'))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('REALTIMED_LOG_LEVEL').default(defaults.logLevel))
    .addOption(
      defaults.inspector
        ? new Option('--no-inspector', 'do not serve the inspector page at /inspector').env('REALTIMED_NO_INSPECTOR')
        : new Option('--inspector', 'serve the inspector page at /inspector (a development tool)').env('REALTIMED_INSPECTOR').default(false),
    )
    .addOption(new Option('--max-frame-bytes <n>', 'largest client frame; bigger closes with 1009').env('REALTIMED_MAX_FRAME_BYTES').default(START_DEFAULTS.maxFrameBytes).argParser(integer(1024, 64 * 1024 * 1024)))
    .addOption(new Option('--max-subscriptions <n>', 'subscriptions per connection').env('REALTIMED_MAX_SUBSCRIPTIONS').default(START_DEFAULTS.maxSubscriptions).argParser(integer(1, 100_000)))
    .addOption(new Option('--publish-rate <n>', 'client publishes per second per connection').env('REALTIMED_PUBLISH_RATE').default(START_DEFAULTS.publishRate).argParser(integer(1, 1_000_000)))
    .addOption(new Option('--ping-interval <ms>', 'WebSocket ping interval; a socket that misses one is dropped').env('REALTIMED_PING_INTERVAL').default(START_DEFAULTS.pingIntervalMs).argParser(integer(100, 3_600_000)))
    .addOption(new Option('--max-buffered-bytes <n>', 'unsent bytes after which a slow socket is closed with 4008').env('REALTIMED_MAX_BUFFERED_BYTES').default(START_DEFAULTS.maxBufferedBytes).argParser(integer(1024, 2 ** 31 - 1)))
    .addOption(new Option('--auth-timeout <ms>', 'with --no-anon: time to send an auth frame').env('REALTIMED_AUTH_TIMEOUT').default(START_DEFAULTS.authTimeoutMs).argParser(integer(100, 3_600_000)))
    .addOption(new Option('--pool-size <n>', 'pooled database connections').env('REALTIMED_POOL_SIZE').default(START_DEFAULTS.poolSize).argParser(integer(1, 1000)))
    .addOption(new Option('--permessage-deflate', 'compress frames (costs CPU and memory per socket)').env('REALTIMED_PERMESSAGE_DEFLATE').default(false))
    .addOption(new Option('--no-webhooks', 'do not deliver webhooks from this instance').env('REALTIMED_NO_WEBHOOKS'))
    .addOption(new Option('--webhook-secret <secret>', 'sign webhooks: X-Realtime-Signature (16+ characters)').env('REALTIMED_WEBHOOK_SECRET'))
    .addOption(new Option('--webhook-timeout <ms>', 'give up on a webhook request after this long').env('REALTIMED_WEBHOOK_TIMEOUT').default(START_DEFAULTS.webhookTimeoutMs).argParser(integer(100, 600_000)))
    .addOption(new Option('--webhook-concurrency <n>', 'requests in flight to one URL').env('REALTIMED_WEBHOOK_CONCURRENCY').default(START_DEFAULTS.webhookConcurrency).argParser(integer(1, 1000)))
    .addOption(new Option('--webhook-max-in-flight <n>', 'webhook requests in flight in all').env('REALTIMED_WEBHOOK_MAX_IN_FLIGHT').default(START_DEFAULTS.webhookMaxInFlight).argParser(integer(1, 10_000)))
    .addOption(new Option('--webhook-sweep-interval <ms>', 'how often to look for retries that fell due').env('REALTIMED_WEBHOOK_SWEEP_INTERVAL').default(START_DEFAULTS.webhookSweepMs).argParser(integer(50, 3_600_000)))
    .addOption(new Option('--stats-interval <ms>', 'how often delivery statistics are written').env('REALTIMED_STATS_INTERVAL').default(START_DEFAULTS.statsIntervalMs).argParser(integer(50, 3_600_000)))
    .addOption(new Option('--max-replay <n>', 'events a subscribe with since may replay before REPLAY_UNAVAILABLE').env('REALTIMED_MAX_REPLAY').default(START_DEFAULTS.maxReplay).argParser(integer(0, 1_000_000)))
    .addOption(new Option('--recovery-interval <ms>', 'how often to look for committed messages never notified').env('REALTIMED_RECOVERY_INTERVAL').default(START_DEFAULTS.recoveryIntervalMs).argParser(integer(50, 3_600_000)))
    .addOption(new Option('--prune-interval <ms>', 'run realtime.prune() this often; 0 is off').env('REALTIMED_PRUNE_INTERVAL').default(START_DEFAULTS.pruneIntervalMs).argParser(integer(0, 86_400_000)))
    .addOption(new Option('--max-connections <n>', 'open sockets on this instance; 0 is no limit').env('REALTIMED_MAX_CONNECTIONS').default(START_DEFAULTS.maxConnections).argParser(integer(0, 10_000_000)))
    .addOption(new Option('--max-connections-per-user <n>', 'open sockets per user (token role and sub); 0 is no limit').env('REALTIMED_MAX_CONNECTIONS_PER_USER').default(START_DEFAULTS.maxConnectionsPerUser).argParser(integer(0, 10_000_000)))
    .addOption(new Option('--connect-rate <n>', 'new connections per second per client address (bursts of twice that); 0 is off').env('REALTIMED_CONNECT_RATE').default(START_DEFAULTS.connectRate).argParser(integer(0, 1_000_000)))
    .addOption(new Option('--ephemeral-rate <n>', 'ephemeral messages per second per connection').env('REALTIMED_EPHEMERAL_RATE').default(START_DEFAULTS.ephemeralRate).argParser(integer(1, 1_000_000)))
    .addOption(new Option('--max-presence-members <n>', 'members in one channel\'s presence').env('REALTIMED_MAX_PRESENCE_MEMBERS').default(START_DEFAULTS.maxPresenceMembers).argParser(integer(1, 1_000_000)))
    .addOption(new Option('--max-presence-bytes <n>', 'bytes of one socket\'s presence state').env('REALTIMED_MAX_PRESENCE_BYTES').default(START_DEFAULTS.maxPresenceBytes).argParser(integer(2, 1_000_000)))
    .addOption(new Option('--presence-throttle <ms>', 'at most one presence_diff per channel per this period').env('REALTIMED_PRESENCE_THROTTLE').default(START_DEFAULTS.presenceThrottleMs).argParser(integer(0, 60_000)))
    .addOption(new Option('--presence-heartbeat <ms>', 'how often this instance tells the database it is alive').env('REALTIMED_PRESENCE_HEARTBEAT').default(START_DEFAULTS.presenceHeartbeatMs).argParser(integer(100, 600_000)))
    .addOption(new Option('--presence-timeout <ms>', 'an instance silent this long is removed with its presence members').env('REALTIMED_PRESENCE_TIMEOUT').default(START_DEFAULTS.presenceTimeoutMs).argParser(integer(200, 3_600_000)))
    .addOption(new Option('--admin-role <role>', 'token role the HTTP API treats as admin (/api/channels)').env('REALTIMED_ADMIN_ROLE').default(START_DEFAULTS.adminRole));
}

/** A checked StartConfig from parsed options (shared by `start` and `dev`). */
function startConfigFrom(opts: Record<string, unknown>, given: { databaseUrl: string; jwtSecret: string | undefined }): StartConfig {
  return checkStartConfig({
    databaseUrl: given.databaseUrl,
    listenUrl: (opts['listenUrl'] as string | undefined) ?? given.databaseUrl,
    host: opts['host'] as string,
    port: opts['port'] as number,
    path: opts['path'] as string,
    jwtSecret: given.jwtSecret,
    jwksUrl: opts['jwksUrl'] as string | undefined,
    roles: list(opts['roles'] as string),
    allowAnon: opts['anon'] !== false,
    allowedOrigins: list((opts['allowedOrigins'] as string | undefined) ?? ''),
    logLevel: opts['logLevel'] as string,
    inspector: opts['inspector'] === true,
    maxFrameBytes: opts['maxFrameBytes'] as number,
    maxSubscriptions: opts['maxSubscriptions'] as number,
    publishRate: opts['publishRate'] as number,
    pingIntervalMs: opts['pingInterval'] as number,
    maxBufferedBytes: opts['maxBufferedBytes'] as number,
    authTimeoutMs: opts['authTimeout'] as number,
    poolSize: opts['poolSize'] as number,
    perMessageDeflate: opts['permessageDeflate'] === true,
    webhooks: opts['webhooks'] !== false,
    webhookSecret: opts['webhookSecret'] as string | undefined,
    webhookTimeoutMs: opts['webhookTimeout'] as number,
    webhookConcurrency: opts['webhookConcurrency'] as number,
    webhookMaxInFlight: opts['webhookMaxInFlight'] as number,
    webhookSweepMs: opts['webhookSweepInterval'] as number,
    statsIntervalMs: opts['statsInterval'] as number,
    pruneIntervalMs: opts['pruneInterval'] as number,
    maxReplay: opts['maxReplay'] as number,
    recoveryIntervalMs: opts['recoveryInterval'] as number,
    maxConnections: opts['maxConnections'] as number,
    maxConnectionsPerUser: opts['maxConnectionsPerUser'] as number,
    connectRate: opts['connectRate'] as number,
    ephemeralRate: opts['ephemeralRate'] as number,
    maxPresenceMembers: opts['maxPresenceMembers'] as number,
    maxPresenceBytes: opts['maxPresenceBytes'] as number,
    presenceThrottleMs: opts['presenceThrottle'] as number,
    presenceHeartbeatMs: opts['presenceHeartbeat'] as number,
    presenceTimeoutMs: opts['presenceTimeout'] as number,
    adminRole: opts['adminRole'] as string,
  });
}

/**
 * Runs the daemon until SIGTERM/SIGINT, then stops it within 10 s.
 * `onListening` runs once it accepts connections (dev prints its banner there).
 */
async function serve(config: StartConfig, io: CliIo, onListening?: (address: AddressInfo) => void): Promise<void> {
  const logger = pino({ level: config.logLevel, base: { service: 'realtimed' } });
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: config.poolSize,
    application_name: 'realtimed',
    connectionTimeoutMillis: 5000,
  });
  const daemon = createDaemon({ config, pool, logger });
  const stopping = (io.stopSignal ?? defaultIo.stopSignal)?.();
  const address = await daemon.start();
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

/** A plain text table, columns padded to their widest cell. */
export function formatTable(rows: Record<string, string | null>[]): string {
  if (rows.length === 0) return '(no channels)\n';
  const columns = Object.keys(rows[0] ?? {});
  const cells = rows.map((row) => columns.map((c) => row[c] ?? '-'));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(columns), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
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
