/**
 * `realtimed dev` as a new user runs it: an embedded PostgreSQL in a folder,
 * the demo channels, a token that works, a psql line that publishes, one
 * instance per folder, and Ctrl-C leaving no process or lock behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import pg from 'pg';
import t from 'tap';

import { BIN, runBin } from '../helpers/cli.js';
import { createDatabase, type Teardown } from '../helpers/db.js';
import { TestClient } from '../helpers/ws.js';

interface Dev {
  child: ChildProcess;
  banner: string;
  wsUrl: string;
  token: string | undefined;
  psqlUrl: string | undefined;
  exited: Promise<number | null>;
}

/** Starts `realtimed dev` and waits for its banner (the line after "Ctrl-C"). */
async function startDev(t: Teardown, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Dev> {
  const child = spawn(process.execPath, [BIN, 'dev', '--port', '0', ...args], {
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill('SIGINT');
      await exited;
    }
  });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const banner = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (/Ctrl-C stops/.test(out)) resolve(out);
    });
    void exited.then((code) => reject(new Error(`dev exited ${code}: ${err}`)));
    setTimeout(() => reject(new Error(`no banner within 60 s: ${out} ${err}`)), 60_000).unref();
  });
  return {
    child,
    banner,
    exited,
    wsUrl: /WebSocket\s+(ws:\/\/\S+)/.exec(banner)?.[1] ?? '',
    token: /Demo token\s+(\S+)/.exec(banner)?.[1],
    psqlUrl: /psql '([^']+)'/.exec(banner)?.[1],
  };
}

async function folder(t: Teardown): Promise<string> {
  // PostgreSQL runs as the postgres user when we are root: it must reach the folder.
  const dir = await mkdtemp(join(tmpdir(), 'realtimed-dev-'));
  await chmod(dir, 0o755);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, '.realtimed');
}

t.test('embedded: banner, demo token, psql publish, one per folder, clean Ctrl-C, data kept', async (t) => {
  const dir = await folder(t);
  const dev = await startDev(t, ['--dir', dir]);
  t.match(dev.banner, /PostgreSQL \d+ \(embedded/, 'says it runs an embedded PostgreSQL');
  t.match(dev.banner, /Inspector\s+http:\/\/127\.0\.0\.1:\d+\/inspector#token=/, 'the inspector URL, token in the fragment');
  t.match(dev.banner, 'DEMO channels demo:%', 'the demo policies are announced as such');
  t.ok(dev.token && dev.psqlUrl, 'a demo token and a psql line');

  const alice = await TestClient.connect(t, dev.wsUrl, { token: dev.token ?? '' });
  t.match(await alice.subscribe('demo:hello'), { type: 'subscribed', channel: 'demo:hello' }, 'the demo token subscribes');
  const published = await alice.request({ type: 'publish', channel: 'demo:hello', event: 'message', payload: { n: 1 } });
  t.match(published, { type: 'published' }, 'and publishes (authenticated)');
  const anon = await TestClient.connect(t, dev.wsUrl);
  t.match(await anon.request({ type: 'publish', channel: 'demo:hello', event: 'message', payload: {} }), { type: 'error' }, 'anon may not publish to the demo channel');

  // The printed psql line, as a user pastes it (psql itself may be missing: same URL, same SQL).
  const client = new pg.Client({ connectionString: dev.psqlUrl });
  await client.connect();
  await client.query(`select realtime.publish('demo:hello', 'greeting', '{"text": "hi"}')`);
  const event = await alice.next((f) => f.type === 'event' && f['event'] === 'greeting', 5000);
  t.match(event, { payload: { text: 'hi' }, meta: { senderType: 'system' } }, 'a publish from SQL reaches the socket');
  const daemonRole = await client.query<{ rolsuper: boolean; rolbypassrls: boolean }>(
    `select rolsuper, rolbypassrls from pg_roles where rolname = 'realtimed'`,
  );
  t.same(daemonRole.rows, [{ rolsuper: false, rolbypassrls: false }], 'the daemon logs in as a plain role with the documented grants');
  await client.end();

  const second = await runBin(['dev', '--dir', dir, '--port', '0']);
  t.equal(second.code, 2, 'a second dev in the same folder exits 2');
  t.match(second.stderr, /already running .* \[RT_ERR_BUSY\]\n$/);
  t.equal(dev.child.exitCode, null, 'and the first one keeps running');

  const pid = Number((await readFile(join(dir, 'dev.lock'), 'utf8')).trim());
  t.equal(pid, dev.child.pid, 'the lock names the running dev');
  dev.child.kill('SIGINT');
  t.equal(await dev.exited, 0, 'Ctrl-C: exit 0');
  t.notOk(existsSync(join(dir, 'dev.lock')), 'the lock is gone');
  t.notOk(existsSync(join(dir, 'pg', 'postmaster.pid')), 'PostgreSQL stopped');

  // Again: the same cluster, with what was written before; this time in delivery wal.
  const again = await startDev(t, ['--dir', dir, '--delivery', 'wal']);
  t.match(again.banner, /Delivery\s+wal /, 'the banner says the mode');
  const kept = new pg.Client({ connectionString: again.psqlUrl });
  await kept.connect();
  const count = await kept.query<{ n: number }>(`select count(*)::int as n from realtime.messages`);
  t.equal(count.rows[0]?.n, 2, 'the messages of the first run are still there');
  const listener = await TestClient.connect(t, again.wsUrl);
  await listener.subscribe('demo:hello');
  await kept.query(`select realtime.publish('demo:hello', 'greeting', '{"text": "wal"}')`);
  t.match(await listener.next((f) => f.type === 'event', 5000), { payload: { text: 'wal' } }, 'delivered by logical replication');
  const slots = await kept.query(`select 1 from pg_replication_slots where slot_name like 'realtimed%' and temporary and active`);
  t.equal(slots.rowCount, 1, 'from a temporary slot of its own');
  await kept.end();
  again.child.kill('SIGINT');
  t.equal(await again.exited, 0);

  const fresh = await startDev(t, ['--dir', dir, '--fresh']);
  const empty = new pg.Client({ connectionString: fresh.psqlUrl });
  await empty.connect();
  const none = await empty.query<{ n: number }>(`select count(*)::int as n from realtime.messages`);
  await empty.end();
  t.equal(none.rows[0]?.n, 0, '--fresh starts over');
  fresh.child.kill('SIGINT');
  t.equal(await fresh.exited, 0);
});

t.test('as root in a folder only root can enter: the cluster lives under /var/lib/realtimed, the same one each run', {
  skip: process.getuid?.() === 0 ? false : 'only as root (CI runs as root)',
}, async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'realtimed-rootonly-'));
  await chmod(home, 0o700);
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const dir = join(home, 'clone', '.realtimed');
  const dev = await startDev(t, ['--dir', dir]);
  const data = /data in (\/var\/lib\/realtimed\/[^:]+\/pg): the postgres user cannot enter ([^,]+),/.exec(dev.banner);
  t.ok(data, `the banner says where the data went and why: ${dev.banner.split('\n')[0]}`);
  const dataDir = data?.[1] ?? '';
  t.teardown(() => rm(dirname(dataDir), { recursive: true, force: true }));
  t.equal(data?.[2], home, 'the folder in the way');
  t.ok(existsSync(join(dataDir, 'PG_VERSION')), 'the cluster is there');
  const client = new pg.Client({ connectionString: dev.psqlUrl });
  await client.connect();
  await client.query(`select realtime.publish('demo:hello', 'greeting', '{}')`);
  await client.end();
  dev.child.kill('SIGINT');
  t.equal(await dev.exited, 0);

  const again = await startDev(t, ['--dir', dir]);
  t.match(again.banner, `data in ${dataDir}:`, 'the next run from that folder finds the same cluster');
  const kept = new pg.Client({ connectionString: again.psqlUrl });
  await kept.connect();
  const count = await kept.query<{ n: number }>(`select count(*)::int as n from realtime.messages`);
  await kept.end();
  t.equal(count.rows[0]?.n, 1, 'with what was written before');
  again.child.kill('SIGINT');
  t.equal(await again.exited, 0);

  const fresh = await startDev(t, ['--dir', dir, '--fresh']);
  const empty = new pg.Client({ connectionString: fresh.psqlUrl });
  await empty.connect();
  const none = await empty.query<{ n: number }>(`select count(*)::int as n from realtime.messages`);
  await empty.end();
  t.equal(none.rows[0]?.n, 0, '--fresh starts over there too');
  fresh.child.kill('SIGINT');
  t.equal(await fresh.exited, 0);

  // The folder removed by hand (its dev.json, so the cluster's password, with it): the next run starts over.
  await rm(dir, { recursive: true, force: true });
  const reset = await startDev(t, ['--dir', dir]);
  t.match(reset.banner, `data in ${dataDir}:`, 'after rm -rf .realtimed, the same place');
  reset.child.kill('SIGINT');
  t.equal(await reset.exited, 0, 'and it starts (a new cluster, not a password error)');

  // Another user's folder where the cluster would go: refused, nothing written through it.
  await rm(dirname(dataDir), { recursive: true, force: true });
  await mkdir(dirname(dataDir), { mode: 0o755 });
  await chown(dirname(dataDir), 65534, 65534);
  const refused = await runBin(['dev', '--dir', dir, '--port', '0']);
  t.equal(refused.code, 2, 'a folder root alone cannot change is refused');
  t.match(refused.stderr, /owned by uid 65534.*\[RT_ERR_EMBEDDED\]/);
  t.notOk(existsSync(join(dataDir, 'PG_VERSION')), 'no cluster was made there');
});

t.test('a stale lock (its dev was killed) is taken over', async (t) => {
  const dir = await folder(t);
  const dev = await startDev(t, ['--dir', dir]);
  dev.child.kill('SIGKILL');
  await dev.exited;
  t.ok(existsSync(join(dir, 'dev.lock')), 'SIGKILL leaves the lock');
  const next = await startDev(t, ['--dir', dir]);
  t.match(next.banner, /PostgreSQL \d+ \(embedded/, 'the next dev starts anyway (and stops the orphaned PostgreSQL first)');
  next.child.kill('SIGINT');
  t.equal(await next.exited, 0);
  t.notOk(existsSync(join(dir, 'pg', 'postmaster.pid')), 'no PostgreSQL left running');
});

t.test('with DATABASE_URL: that database, no demo unless --demo', async (t) => {
  const db = await createDatabase(t);
  const dir = await folder(t);
  const env = { DATABASE_URL: db.url };
  const dev = await startDev(t, ['--dir', dir, '--jwt-secret', 'x'.repeat(40)], env);
  t.match(dev.banner, 'the database in DATABASE_URL');
  t.match(dev.banner, 'No demo channels');
  t.notOk(existsSync(join(dir, 'pg')), 'no embedded cluster');
  const { rows } = await db.pool.query(`select pattern from realtime.channels`);
  t.same(rows, [], 'nothing permissive was installed in the user’s database');
  dev.child.kill('SIGINT');
  t.equal(await dev.exited, 0);

  const withDemo = await startDev(t, ['--dir', dir, '--jwt-secret', 'x'.repeat(40), '--demo'], env);
  t.match(withDemo.banner, 'DEMO channels demo:%');
  const after = await db.pool.query(`select pattern from realtime.channels`);
  t.same(after.rows, [{ pattern: 'demo:%' }], '--demo installs them');
  withDemo.child.kill('SIGINT');
  t.equal(await withDemo.exited, 0);
});
