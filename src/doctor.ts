/**
 * `realtimed doctor`: what production needs, checked against a database and
 * said in plain words. Each finding is ok, warn (works, but look at it) or
 * fail (realtimed will not work as it should). Read-only: it changes nothing.
 */
import { randomBytes } from 'node:crypto';

import pg from 'pg';

import { parseDatabaseUrl } from './config.js';
import { fromPgError } from './errors.js';
import { loadMigrations } from './sqlPackage.js';

export type Level = 'ok' | 'warn' | 'fail';

export interface Finding {
  level: Level;
  /** Short name of the check, e.g. "listen". */
  check: string;
  message: string;
}

export interface DoctorOptions {
  databaseUrl: string | undefined;
  databaseUrlSource?: string;
  /** The connection `start --listen-url` would use; default the database URL. */
  listenUrl?: string | undefined;
  /** Roles clients act as (start --roles). */
  roles: string[];
  /** How long to wait for our own notification. */
  listenTimeoutMs?: number;
}

const OLDEST_SERVER = 140000;

/**
 * Whether a LISTEN on this URL hears a NOTIFY sent from another session, as
 * the daemon's must. Through a transaction-mode pooler the listening client is
 * not tied to its server connection between statements, so it hears nothing.
 */
async function listenWorks(url: string, timeoutMs: number): Promise<boolean> {
  const connect = async (): Promise<pg.Client> => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
    client.on('error', () => {});
    await client.connect();
    return client;
  };
  const listener = await connect();
  let sender: pg.Client | undefined;
  try {
    const channel = `realtimed_doctor_${randomBytes(4).toString('hex')}`;
    const heard = new Promise<boolean>((resolve) => {
      listener.on('notification', (n) => n.channel === channel && resolve(true));
      setTimeout(() => resolve(false), timeoutMs).unref();
    });
    await listener.query(`listen ${channel}`);
    sender = await connect();
    await sender.query('select pg_notify($1, $2)', [channel, 'ping']);
    return await heard;
  } finally {
    await listener.end().catch(() => {});
    await sender?.end().catch(() => {});
  }
}

/** A SELECT policy on realtime.channels names a pattern if its USING text has it as a literal. */
function namesPattern(qual: string | null, pattern: string): boolean {
  if (qual === null) return true; // no USING: every row
  if (!/\bpattern\b/.test(qual)) return true; // decides by something other than the pattern
  return qual.includes(`'${pattern.replace(/'/g, "''")}'`);
}

export async function doctor(options: DoctorOptions): Promise<{ where: string; findings: Finding[] }> {
  const target = parseDatabaseUrl(options.databaseUrl, options.databaseUrlSource);
  const findings: Finding[] = [];
  const add = (level: Level, check: string, message: string): void => {
    findings.push({ level, check, message });
  };
  const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    const one = async <R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R> =>
      (await client.query<R>(sql, params)).rows[0] as R;

    const server = await one<{ num: number; version: string }>(
      `select current_setting('server_version_num')::int as num, current_setting('server_version') as version`,
    );
    if (server.num < OLDEST_SERVER) add('fail', 'server', `PostgreSQL ${server.version}: realtimed needs 14 or newer`);
    else add('ok', 'server', `PostgreSQL ${server.version}`);

    const latest = (await loadMigrations()).length;
    const pkg = await one<{ installed: boolean; readable: boolean }>(
      `select to_regprocedure('realtime.version()') is not null as installed,
              to_regprocedure('realtime.version()') is not null
              and has_function_privilege('realtime.version()', 'execute') as readable`,
    );
    if (!pkg.installed) {
      add('fail', 'schema', 'the realtime package is not installed: run realtimed migrate (or apply realtimed sql)');
      return { where: target.where, findings };
    }
    if (!pkg.readable) {
      add('fail', 'schema', 'this login may not call realtime.version(): it is not a member of service_role (see login below)');
    } else {
      const { v } = await one<{ v: number }>('select realtime.version() as v');
      if (v < latest) {
        add('fail', 'schema', `realtime schema version ${v}, this realtimed needs ${latest}: run realtimed migrate (or realtimed sql --from ${v})`);
      } else if (v > latest) {
        add('fail', 'schema', `realtime schema version ${v} is newer than this realtimed knows (${latest}): upgrade realtimed`);
      } else {
        add('ok', 'schema', `realtime schema version ${v}, as this realtimed expects`);
      }
    }

    const timeout = options.listenTimeoutMs ?? 2000;
    for (const [name, url] of [['--database-url', target.url], ['--listen-url', options.listenUrl]] as const) {
      if (url === undefined || (name === '--listen-url' && url === target.url)) continue;
      const listenTarget = parseDatabaseUrl(url, name);
      const works = await listenWorks(listenTarget.url, timeout).catch(() => false);
      if (works) add('ok', 'listen', `LISTEN/NOTIFY works on ${name} (${listenTarget.where}): a direct connection`);
      else if (name === '--database-url' && options.listenUrl !== undefined && options.listenUrl !== target.url) {
        add('ok', 'listen', `no LISTEN/NOTIFY on ${name} (${listenTarget.where}), a pooler? Fine: --listen-url is checked below`);
      } else {
        add('fail', 'listen', `a LISTEN on ${name} (${listenTarget.where}) did not hear a NOTIFY from another session within ${timeout} ms: LISTEN does not work through a transaction-mode pooler; give realtimed start --listen-url a direct connection`);
      }
    }

    const wanted = [...new Set([...options.roles, 'service_role'])];
    const roles = (
      await client.query<{ role: string; exists: boolean; member: boolean }>(
        `select r as role, exists (select from pg_roles where rolname = r) as exists,
                coalesce(pg_has_role(current_user, (select oid from pg_roles where rolname = r), 'MEMBER'), false) as member
         from unnest($1::text[]) as r`,
        [wanted],
      )
    ).rows;
    const missing = roles.filter((r) => !r.exists).map((r) => r.role);
    if (missing.length > 0) add('fail', 'roles', `missing roles: ${missing.join(', ')} (realtimed migrate creates anon, authenticated and service_role)`);
    else add('ok', 'roles', `roles ${wanted.join(', ')} exist`);
    const login = await one<{ name: string; super: boolean; bypass: boolean }>(
      `select current_user as name, rolsuper as super, rolbypassrls as bypass from pg_roles where rolname = current_user`,
    );
    const notMember = roles.filter((r) => r.exists && !r.member).map((r) => r.role);
    if (login.super || login.bypass) {
      add('warn', 'login', `${login.name} is a ${login.super ? 'superuser' : 'BYPASSRLS role'}: run realtimed start as a plain login role granted ${wanted.join(', ')} (docs/sql.md)`);
    } else if (notMember.length > 0) {
      add('fail', 'login', `${login.name} is not a member of ${notMember.join(', ')}: realtimed start needs "grant ${wanted.join(', ')} to ${login.name}"`);
    } else {
      add('ok', 'login', `${login.name} has the minimal grants (member of ${wanted.join(', ')}, no superuser)`);
    }

    const rls = (
      await client.query<{ name: string; on: boolean }>(
        `select c.relname as name, c.relrowsecurity as on from pg_class c
         where c.oid in ('realtime.channels'::regclass, 'realtime.messages'::regclass) order by 1`,
      )
    ).rows;
    const off = rls.filter((r) => !r.on).map((r) => `realtime.${r.name}`);
    if (off.length > 0) add('fail', 'rls', `row-level security is OFF on ${off.join(', ')}: every client could subscribe or publish everywhere; alter table ... enable row level security`);
    else add('ok', 'rls', 'row-level security is on for realtime.channels and realtime.messages');

    // Subscribe policies per channel pattern: a policy for a client role that names the pattern or does not look at it.
    const policies = (
      await client.query<{ name: string; qual: string | null; roles: string[] }>(
        `select p.polname as name, pg_get_expr(p.polqual, p.polrelid) as qual,
                array(select case when r = 0 then 'public' else (select rolname::text from pg_roles where oid = r) end
                      from unnest(p.polroles) r)::text[] as roles
         from pg_policy p
         where p.polrelid = 'realtime.channels'::regclass and p.polcmd in ('r', '*') and p.polpermissive`,
      )
    ).rows.filter((p) => p.roles.some((r) => r === 'public' || options.roles.includes(r)));
    const channels = (
      await client.query<{ pattern: string }>(`select pattern from realtime.channels where enabled order by pattern`)
    ).rows;
    if (channels.length === 0) {
      add('warn', 'channels', 'no enabled channel: insert into realtime.channels (pattern) values (...)');
    } else if (policies.length === 0) {
      add('warn', 'policies', `no SELECT policy on realtime.channels for ${options.roles.join(', ')}: clients can subscribe to none of the ${channels.length} channels`);
    } else {
      const orphans = channels.filter((c) => !policies.some((p) => namesPattern(p.qual, c.pattern))).map((c) => c.pattern);
      if (orphans.length > 0) {
        add('warn', 'policies', `nobody but service_role can subscribe to ${orphans.map((p) => `'${p}'`).join(', ')}: no SELECT policy for ${options.roles.join(', ')} names the pattern`);
      } else {
        add('ok', 'policies', `every enabled channel (${channels.length}) has a SELECT policy that can let clients subscribe`);
      }
    }
    // Change streams: the row check means something only under the source table's RLS.
    const readable = await one<{ ok: boolean }>(
      `select to_regclass('realtime.change_streams') is not null
              and has_table_privilege('realtime.change_streams', 'SELECT') as ok`,
    );
    const streams = !readable.ok ? [] : (
      await client.query<{ source: string; rls: boolean; readers: string[] }>(
        `select cs.table_id::text as source, c.relrowsecurity as rls,
                array(select r from unnest($1::text[]) r
                      where exists (select from pg_roles where rolname = r)
                        and has_table_privilege(r, cs.table_id, 'SELECT'))::text[] as readers
         from realtime.change_streams cs join pg_class c on c.oid = cs.table_id
         where not cs.public order by 1`,
        [options.roles],
      )
    ).rows;
    for (const stream of streams) {
      if (!stream.rls) {
        add('warn', 'changes', `${stream.source} streams its changes with a row check, but its row-level security is off: every subscriber with SELECT on it sees every row; enable RLS or mark the stream public`);
      } else if (stream.readers.length === 0) {
        add('warn', 'changes', `${stream.source} streams its changes, but none of ${options.roles.join(', ')} may SELECT it: no subscriber will receive its insert and update events`);
      } else {
        add('ok', 'changes', `${stream.source}: changes checked against its row-level security for ${stream.readers.join(', ')}`);
      }
    }

    const demo = await one<{ n: number }>(
      `select count(*)::int as n from pg_policy where polrelid in ('realtime.channels'::regclass, 'realtime.messages'::regclass) and polname like 'DEMO:%'`,
    );
    if (demo.n > 0) add('warn', 'demo', `the DEMO policies of realtimed dev are installed (${demo.n}): drop them before real users connect (sql/demo.sql says how)`);

    const cron = await one<{ installed: boolean }>(`select to_regclass('cron.job') is not null as installed`);
    let pruneJob = false;
    if (cron.installed) {
      pruneJob = (await one<{ n: number }>(`select count(*)::int as n from cron.job where command ilike '%realtime.prune%' and active`).catch(() => ({ n: 0 }))).n > 0;
    }
    if (pruneJob) add('ok', 'retention', 'a pg_cron job runs realtime.prune()');
    else {
      add('warn', 'retention', `${cron.installed ? 'no pg_cron job runs' : 'pg_cron is not installed, so nothing schedules'} realtime.prune(): messages are kept until pruned; schedule it (README) or run one realtimed start with --prune-interval`);
    }
    return { where: target.where, findings };
  } catch (err) {
    throw fromPgError(err, target.where);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The report as people read it; the last line counts. */
export function formatFindings(where: string, findings: Finding[]): string {
  const label: Record<Level, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' };
  const count = (level: Level): number => findings.filter((f) => f.level === level).length;
  return [
    `realtimed doctor: ${where}`,
    ...findings.map((f) => `  ${label[f.level]}  ${f.check.padEnd(9)} ${f.message}`),
    `${count('ok')} ok, ${count('warn')} warnings, ${count('fail')} problems`,
    '',
  ].join('\n');
}
