/**
 * `realtimed dev`: realtimed working before you have a database. An embedded
 * PostgreSQL in ./.realtimed (kept between runs), the migrations, the demo
 * channels, the relay with its inspector page, and what to paste next.
 *
 * One `dev` per folder: a lock file holds the pid, and a second one exits 2
 * instead of starting a second server on the same data folder.
 */
import { randomBytes } from 'node:crypto';
import { access, lstat, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { dirname, join, relative, resolve } from 'node:path';

import { Option, type Command } from 'commander';
import { SignJWT } from 'jose';
import pg from 'pg';

import { ensureDaemonRole, ensureDatabase } from '../db/dev.js';
import { commanderOptions, startConfigFrom, type StartConfig } from './options.js';
import { reachableDataDir, ROOT_DATA_HOME, rootOwnedFolder, startEmbedded, type EmbeddedServer } from './embedded.js';
import { RealtimedError, fromPgError } from './errors.js';
import type { CliIo } from './io.js';
import { migrate } from './migrate.js';
import { serve } from './start.js';

export interface DevOptions {
  /** Folder for the embedded cluster, the lock and the dev state. */
  dir: string;
  /** Delete the cluster and state first. */
  fresh: boolean;
  /** Use this database instead of the embedded one. */
  databaseUrl: string | undefined;
  /** Install the demo channels; default: only on the embedded database. */
  demo: boolean | undefined;
  /** Set realtime.config.delivery to this first (the embedded cluster runs with wal_level = logical). */
  delivery?: 'notify' | 'wal' | 'poll' | undefined;
  /** --jwt-secret / REALTIMED_JWT_SECRET; else one kept in the dev state. */
  jwtSecret: string | undefined;
  /** Builds and checks the start configuration for the database chosen here. */
  configFor(databaseUrl: string, jwtSecret: string | undefined): StartConfig;
}

export interface DevIo {
  out(text: string): void;
  /** Runs the daemon until asked to stop. */
  serve(config: StartConfig, onListening: (address: AddressInfo) => void): Promise<void>;
}

/** The demo user of the printed token. */
export const DEMO_USER = 'de300000-0000-4000-8000-000000000001';

interface DevState {
  /** Password of the embedded superuser `postgres`. */
  superuserPassword: string;
  /** Password of the embedded login role `realtimed` the daemon uses. */
  daemonPassword: string;
  /** Signs the demo token (HS256). */
  jwtSecret: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the folder's lock; resolves to its release. A lock whose owner died is taken over. */
export async function lockFolder(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, 'dev.lock');
  for (;;) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new RealtimedError(
          'RT_ERR_BUSY',
          `realtimed dev is already running with ${dir} (pid ${pid}): stop it first, or use another --dir`,
        );
      }
      await rm(path, { force: true });
    }
  }
}

async function loadState(dir: string): Promise<DevState> {
  const path = join(dir, 'dev.json');
  try {
    return JSON.parse(await readFile(path, 'utf8')) as DevState;
  } catch {
    const secret = (): string => randomBytes(24).toString('base64url');
    const state: DevState = { superuserPassword: secret(), daemonPassword: secret(), jwtSecret: secret() + secret() };
    await writeFile(path, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    return state;
  }
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

function urlWith(base: string, changes: { database?: string; user?: string; password?: string }): string {
  const url = new URL(base);
  if (changes.database !== undefined) url.pathname = `/${changes.database}`;
  if (changes.user !== undefined) url.username = changes.user;
  if (changes.password !== undefined) url.password = encodeURIComponent(changes.password);
  return url.toString();
}

/** The application database and the daemon's login role with the documented minimal grants. */
async function prepareEmbedded(server: EmbeddedServer, state: DevState): Promise<{ adminUrl: string; daemonUrl: string }> {
  await withClient(server.url, (client) => ensureDatabase(client, 'realtimed'));
  const adminUrl = urlWith(server.url, { database: 'realtimed' });
  return { adminUrl, daemonUrl: urlWith(adminUrl, { user: 'realtimed', password: state.daemonPassword }) };
}

async function createDaemonRole(adminUrl: string, password: string): Promise<void> {
  await withClient(adminUrl, async (client) => {
    await ensureDaemonRole(client, password);
    // delivery 'wal' replicates as this role (it is the embedded cluster's own).
    await client.query('alter role realtimed replication');
  });
}

/** The embedded cluster can run every delivery mode. */
const EMBEDDED_SETTINGS = { wal_level: 'logical', max_wal_senders: '10', max_replication_slots: '10' };

export async function runDev(options: DevOptions, io: DevIo): Promise<void> {
  const dir = resolve(options.dir);
  const shown = relative(process.cwd(), dir) || '.';
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const unlock = await lockFolder(dir);
  let embedded: EmbeddedServer | undefined;
  try {
    // As root in a folder the postgres user cannot enter (a clone under /root),
    // the cluster lives under /var/lib/realtimed instead, the same one each run,
    // in folders only root can change (checked before anything is written there).
    const data = await reachableDataDir(join(dir, 'pg'));
    if (data.movedFrom !== undefined) {
      await rootOwnedFolder(ROOT_DATA_HOME);
      await rootOwnedFolder(dirname(data.dataDir));
      if (await lstat(data.dataDir).then((i) => !i.isDirectory(), () => false)) {
        throw new RealtimedError('RT_ERR_EMBEDDED', `${data.dataDir} is not a folder: remove it, or set DATABASE_URL`);
      }
    }
    const hadState = await access(join(dir, 'dev.json')).then(() => true, () => false);
    if (options.fresh || (!hadState && data.movedFrom !== undefined)) {
      // Without dev.json the moved cluster's password is gone with it (the
      // folder was removed, or this is a new clone at the same path): start over.
      for (const name of ['pg', 'dev.json']) await rm(join(dir, name), { recursive: true, force: true });
      if (data.movedFrom !== undefined) await rm(data.dataDir, { recursive: true, force: true });
    }
    const state = await loadState(dir);
    let adminUrl: string;
    let daemonUrl: string;
    let where: string;
    if (options.databaseUrl === undefined) {
      embedded = await startEmbedded({ dataDir: data.dataDir, password: state.superuserPassword, settings: EMBEDDED_SETTINGS });
      ({ adminUrl, daemonUrl } = await prepareEmbedded(embedded, state));
      const at = data.movedFrom === undefined ? `${shown}/pg` : `${data.dataDir}: the postgres user cannot enter ${data.movedFrom}`;
      where = `PostgreSQL ${embedded.version} (embedded, data in ${at}, port ${embedded.port})`;
    } else {
      adminUrl = daemonUrl = options.databaseUrl;
      where = `the database in DATABASE_URL`;
    }

    const migrated = await migrate({ databaseUrl: adminUrl });
    if (embedded) await createDaemonRole(adminUrl, state.daemonPassword);
    if (options.delivery !== undefined) {
      await withClient(adminUrl, (client) => client.query('update realtime.config set delivery = $1', [options.delivery]));
    }
    const delivery = await withClient(adminUrl, async (client) => (await client.query<{ d: string }>('select delivery as d from realtime.config')).rows[0]?.d);
    const demo = options.demo ?? embedded !== undefined;
    if (demo) {
      const sql = await readFile(new URL('../../sql/demo.sql', import.meta.url), 'utf8');
      const target = new URL(adminUrl);
      await withClient(adminUrl, (client) => client.query(sql)).catch((err: unknown) => {
        throw fromPgError(err, `${target.hostname}:${target.port || 5432}${target.pathname}`);
      });
    }

    const jwtSecret = options.jwtSecret ?? state.jwtSecret;
    const config = options.configFor(daemonUrl, jwtSecret);
    const token = config.jwtSecret
      ? await new SignJWT({ role: 'authenticated', name: 'demo' })
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject(DEMO_USER)
          .setIssuedAt()
          .setExpirationTime('24h')
          .sign(new TextEncoder().encode(config.jwtSecret))
      : undefined;

    await io.serve(config, (address) => {
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const http = `http://${host}:${address.port}`;
      const psqlUrl = embedded ? adminUrl : '"$DATABASE_URL"';
      const lines = [
        `realtimed dev: ${where}, realtime schema version ${migrated.to}`,
        '',
        `  WebSocket   ws://${host}:${address.port}${config.path}`,
        config.inspector ? `  Inspector   ${http}/inspector${token ? `#token=${token}` : ''}` : undefined,
        token ? `  Demo token  ${token}` : undefined,
        token ? `              (user ${DEMO_USER}, role authenticated, valid 24 h; secret in ${shown}/dev.json)` : undefined,
        `  Publish     psql ${embedded ? `'${psqlUrl}'` : psqlUrl} -c "select realtime.publish('demo:hello', 'greeting', '{\\"text\\": \\"hi\\"}')"`,
        `  Delivery    ${delivery ?? 'notify'} (realtime.config.delivery; --delivery notify|wal|poll, docs/delivery.md)`,
        '',
        demo
          ? 'DEMO channels demo:% are installed with permissive policies (sql/demo.sql): anyone subscribes, signed-in users publish.'
          : 'No demo channels (pass --demo to install demo:% with permissive policies).',
        'Ctrl-C stops realtimed' + (embedded ? ' and its PostgreSQL.' : '.'),
        '',
      ];
      io.out(lines.filter((line) => line !== undefined).join('\n') + '\n');
    });
  } finally {
    await embedded?.stop();
    await unlock();
  }
}

export function addDevCommand(program: Command, io: CliIo): void {
  const command = program
    .command('dev')
    .description(
      'Try realtimed with nothing installed: an embedded PostgreSQL in ./.realtimed (unless DATABASE_URL is set), the migrations, demo channels, the relay and the inspector page.',
    )
    .addOption(new Option('--database-url <url>', 'use this database instead of the embedded one').env('DATABASE_URL'))
    .option('--dir <path>', 'where the embedded cluster and dev state live', '.realtimed')
    .option('--fresh', 'delete the embedded cluster and dev state first, and start over')
    .addOption(new Option('--demo', 'install the demo channels and their permissive policies (default: only on the embedded database)'))
    .addOption(new Option('--no-demo', 'do not install the demo channels'))
    .addOption(new Option('--delivery <mode>', 'set realtime.config.delivery first').choices(['notify', 'wal', 'poll']));
  for (const option of commanderOptions('dev')) command.addOption(option);
  command.action(async (opts: Record<string, unknown>) => {
    await runDev(
      {
        dir: opts['dir'] as string,
        fresh: opts['fresh'] === true,
        databaseUrl: opts['databaseUrl'] as string | undefined,
        demo: opts['demo'] as boolean | undefined,
        delivery: opts['delivery'] as DevOptions['delivery'],
        jwtSecret: opts['jwtSecret'] as string | undefined,
        configFor: (databaseUrl, jwtSecret) => startConfigFrom(opts, 'dev', { databaseUrl, jwtSecret }),
      },
      { out: io.out, serve: (config, onListening) => serve(config, io, onListening) },
    );
  });
}
