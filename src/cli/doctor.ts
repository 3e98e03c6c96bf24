/**
 * `realtimed doctor`: what production needs, checked against a database and
 * said in plain words. Each finding is ok, warn (works, but look at it) or
 * fail (realtimed will not work as it should). Read-only: it changes nothing.
 */
import { Option, type Command } from 'commander';
import pg from 'pg';

import * as q from '../db/doctor.js';
import { deliveryMode, notifyQueueUsage, realtimedSlots, walProblem } from '../db/replication.js';
import { parseDatabaseUrl } from '../db/url.js';
import { RealtimedError, fromPgError } from './errors.js';
import type { CliIo } from './io.js';
import { list, OPTIONS } from './options.js';
import { loadMigrations } from './sql.js';

export type Level = 'ok' | 'warn' | 'fail';

export interface Finding {
  level: Level;
  /** Short name of the check, e.g. "listen". */
  check: string;
  message: string;
}

type Add = (level: Level, check: string, message: string) => void;

export interface DoctorOptions {
  databaseUrl: string | undefined;
  databaseUrlSource?: string;
  /** The connection `start --listen-url` would use; default the database URL. */
  listenUrl?: string | undefined;
  /** Roles clients act as (start --roles). */
  roles: string[];
  /** How long to wait for our own notification. */
  listenTimeoutMs?: number;
  /** How long the search for the oldest message may take. */
  retentionTimeoutMs?: number;
}

const OLDEST_SERVER = 140000;

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

    const server = await q.serverVersion(client);
    if (server.num < OLDEST_SERVER) add('fail', 'server', `PostgreSQL ${server.version}: realtimed needs 14 or newer`);
    else add('ok', 'server', `PostgreSQL ${server.version}`);

    const latest = (await loadMigrations()).length;
    const pkg = await q.packageState(client);
    if (!pkg.installed) {
      add('fail', 'schema', 'the realtime package is not installed: run realtimed migrate (or apply realtimed sql)');
      return { where: target.where, findings };
    }
    if (!pkg.readable) {
      add('fail', 'schema', 'this login may not call realtime.version(): it is not a member of service_role (see login below)');
    } else {
      const v = await q.schemaVersion(client);
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
      const works = await q.listenWorks(listenTarget.url, timeout).catch(() => false);
      if (works) add('ok', 'listen', `LISTEN/NOTIFY works on ${name} (${listenTarget.where}): a direct connection`);
      else if (name === '--database-url' && options.listenUrl !== undefined && options.listenUrl !== target.url) {
        add('ok', 'listen', `no LISTEN/NOTIFY on ${name} (${listenTarget.where}), a pooler? Fine: --listen-url is checked below`);
      } else {
        add('fail', 'listen', `a LISTEN on ${name} (${listenTarget.where}) did not hear a NOTIFY from another session within ${timeout} ms: LISTEN does not work through a transaction-mode pooler; give realtimed start --listen-url a direct connection`);
      }
    }

    await checkDelivery(client, options.listenUrl ?? target.url, add);

    const wanted = [...new Set([...options.roles, 'service_role'])];
    const roles = await q.roleMemberships(client, wanted);
    const missing = roles.filter((r) => !r.exists).map((r) => r.role);
    if (missing.length > 0) {
      const which = missing.map((r) => `role ${r} does not exist`).join(', ');
      add('fail', 'roles', `${which}: the daemon cannot act as it for a client; create it (and grant it to the login) or drop it from --roles (realtimed migrate creates anon, authenticated and service_role)`);
    } else add('ok', 'roles', `roles ${wanted.join(', ')} exist`);
    const grants = roles.filter((r) => r.exists).map((r) => r.role);
    const login = await q.login(client);
    const notMember = roles.filter((r) => r.exists && !r.member).map((r) => r.role);
    if (login.super || login.bypass) {
      add('warn', 'login', `${login.name} is a ${login.super ? 'superuser' : 'BYPASSRLS role'}: run realtimed start as a plain login role granted ${grants.join(', ')} (docs/sql.md)`);
    } else if (notMember.length > 0) {
      add('fail', 'login', `${login.name} is not a member of ${notMember.join(', ')}: realtimed start needs "grant ${grants.join(', ')} to ${login.name}"`);
    } else {
      add('ok', 'login', `${login.name} has the minimal grants (member of ${grants.join(', ')}, no superuser)`);
    }

    const off = (await q.rowSecurity(client)).filter((r) => !r.on).map((r) => `realtime.${r.name}`);
    if (off.length > 0) add('fail', 'rls', `row-level security is OFF on ${off.join(', ')}: every client could subscribe or publish everywhere; alter table ... enable row level security`);
    else add('ok', 'rls', 'row-level security is on for realtime.channels and realtime.messages');

    const known = roles.filter((r) => r.exists && r.role !== 'service_role' && options.roles.includes(r.role)).map((r) => r.role);
    await checkSubscribe(client, options.roles, known, add);
    // Change streams: the row check means something only under the source table's RLS.
    for (const stream of await q.rowCheckedStreams(client, options.roles)) {
      if (!stream.rls) {
        add('warn', 'changes', `${stream.source} streams its changes with a row check, but its row-level security is off: every subscriber with SELECT on it sees every row; enable RLS or mark the stream public`);
      } else if (stream.readers.length === 0) {
        add('warn', 'changes', `${stream.source} streams its changes, but none of ${options.roles.join(', ')} may SELECT it: no subscriber will receive its insert and update events`);
      } else {
        add('ok', 'changes', `${stream.source}: changes checked against its row-level security for ${stream.readers.join(', ')}`);
      }
    }

    // Open to every client on every channel: on purpose only for the demo's demo:% (whose policies name it).
    for (const p of await q.wideOpenPolicies(client)) {
      const who = p.roles.filter((r) => r === 'public' || options.roles.includes(r));
      if (who.length === 0) continue; // server-side roles only (service_role's own policies)
      const table = `realtime.${p.table}`;
      const what = p.table === 'channels' ? 'subscribe to' : 'publish on';
      const fix = p.table === 'channels' ? `using (pattern = 'news')` : `with check (starts_with(channel_name, 'news:'))`;
      add('warn', 'open', `policy "${p.name}" on ${table} (${p.clause}) lets ${who.join(', ')} ${what} every channel: narrow it to the channels meant to be open, e.g. alter policy "${p.name}" on ${table} ${fix}`);
    }
    const demo = await q.demoPolicies(client);
    if (demo > 0) add('ok', 'demo', `the DEMO policies of realtimed dev are installed (${demo}): they open demo:% to every client on purpose; drop them before real users connect (sql/demo.sql says how)`);

    await checkRetention(client, options.retentionTimeoutMs ?? 5000, add).catch((err: unknown) => {
      const e = err as { code?: string; message?: string };
      add('warn', 'retention', `could not check retention ([${e.code ?? '?'}] ${e.message ?? String(err)}): an older schema (see schema) or a login without service_role (see login)`);
    });
    return { where: target.where, findings };
  } catch (err) {
    throw fromPgError(err, target.where);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A user id no real user has: the sub of the sample identities (anon has none, as the daemon gives it). */
const SAMPLE_SUB = '00000000-0000-4000-8000-000000000000';
/** What stands for % in a sample channel name, tried in order. */
const SAMPLE_PARTS = ['1', 'doctor'];

/** Quoted list, the first few then how many more. */
function quoted(names: string[], max = 6): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`).join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

/**
 * Who may subscribe to each enabled channel, asked of the daemon's own check
 * (realtime.authorize_subscriptions) as each client role on a sample name
 * derived from the pattern: whatever the policy text looks like, the
 * database's answer decides. Policies that admit only some users (owners,
 * members) refuse the sample identities; those are told apart by the policy
 * text only when no sample may subscribe.
 */
async function checkSubscribe(client: pg.Client, roles: string[], known: string[], add: Add): Promise<void> {
  const policies = (await q.subscribePolicies(client)).filter((p) => p.roles.some((r) => r === 'public' || roles.includes(r)));
  const channels = await q.enabledChannels(client);
  if (channels.length === 0) {
    add('warn', 'channels', 'no enabled channel: insert into realtime.channels (pattern) values (...)');
    return;
  }
  if (policies.length === 0) {
    add('warn', 'policies', `no SELECT policy on realtime.channels for ${roles.join(', ')}: clients can subscribe to none of the ${channels.length} channels`);
    return;
  }
  if (known.length === 0) return; // the roles line says why

  // A sample name per pattern: % replaced, and the name must match that very channel.
  const candidates = channels.map((c) => (c.pattern.includes('%') ? SAMPLE_PARTS.map((v) => c.pattern.replaceAll('%', v)) : [c.pattern]));
  const matched = await q.matchChannels(client, candidates.flat());
  let at = 0;
  const samples = candidates.map((names, i) => {
    const hit = names.find((_, j) => matched[at + j] === channels[i]?.id);
    at += names.length;
    return hit;
  });
  const identity = (role: string): Record<string, unknown> => (role === 'anon' ? { role } : { role, sub: SAMPLE_SUB });
  const items = channels.flatMap((_, i) => {
    const channel = samples[i];
    return channel === undefined ? [] : known.map((role) => ({ role, claims: identity(role), channel }));
  });
  let answers: Awaited<ReturnType<typeof q.subscribeChecks>>;
  try {
    answers = await q.subscribeChecks(client, items);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const why = e.code === '42501' ? ': the login needs service_role (see login)' : e.code === '42883' ? ': the schema is older than version 15 (see schema)' : '';
    add('warn', 'policies', `could not ask realtime.authorize_subscriptions who may subscribe ([${e.code ?? '?'}] ${e.message ?? String(err)})${why}`);
    return;
  }

  const open: string[] = []; // sample name (roles that may)
  const byWho: string[] = []; // refused to every sample, a policy names it: decided per user
  const nobody: { pattern: string; sample: string }[] = [];
  const unmatched: string[] = [];
  const failures: string[] = [];
  let k = 0;
  channels.forEach((c, i) => {
    const sample = samples[i];
    if (sample === undefined) {
      unmatched.push(c.pattern);
      return;
    }
    const allowed: string[] = [];
    for (const role of known) {
      const a = answers[k++];
      if (a?.allowed) allowed.push(role);
      else if (a?.error) failures.push(`'${sample}' as ${role}: [${a.error.code}] ${a.error.message}`);
    }
    if (allowed.length > 0) open.push(`'${sample}' (${allowed.join(', ')})`);
    else if (policies.some((p) => namesPattern(p.qual, c.pattern))) byWho.push(sample);
    else nobody.push({ pattern: c.pattern, sample });
  });

  const tried = `as ${known.map((r) => (r === 'anon' ? r : `${r} (sub ${SAMPLE_SUB})`)).join(', ')}`;
  if (nobody.length > 0) {
    add('warn', 'policies', `nobody but service_role can subscribe to ${quoted(nobody.map((n) => n.pattern))}: realtime.authorize_subscriptions refused ${quoted(nobody.map((n) => n.sample))} ${tried}, and no SELECT policy for ${roles.join(', ')} names the pattern`);
  }
  if (failures.length > 0) {
    add('warn', 'policies', `the subscribe check failed (clients get an error, not a refusal): ${failures.slice(0, 3).join('; ')}${failures.length > 3 ? ` and ${failures.length - 3} more` : ''}`);
  }
  if (unmatched.length > 0) {
    add('warn', 'policies', `no sample name (% as ${SAMPLE_PARTS.join(' or ')}) belongs to ${quoted(unmatched)}: a longer pattern takes them; not checked`);
  }
  if (open.length > 0 || byWho.length > 0) {
    const parts = [];
    if (open.length > 0) parts.push(`may subscribe: ${open.slice(0, 6).join(', ')}${open.length > 6 ? ` and ${open.length - 6} more` : ''}`);
    if (byWho.length > 0) parts.push(`refused to these samples, left to policies that name the pattern and decide per user: ${quoted(byWho)}`);
    add('ok', 'policies', `subscribe checked with realtime.authorize_subscriptions on a sample name per enabled channel (${open.length + byWho.length} of ${channels.length}) ${tried}; ${parts.join('; ')}`);
  }
}

/** 90000 -> "25 hours": the largest unit with at least two of it. */
function duration(seconds: number): string {
  for (const [unit, size] of [['days', 86_400], ['hours', 3600], ['minutes', 60]] as const) {
    if (seconds >= 2 * size) return `${Math.floor(seconds / size)} ${unit}`;
  }
  const n = Math.round(seconds);
  return `${n} second${n === 1 ? '' : 's'}`;
}

/**
 * Whether old messages go: a pg_cron job running realtime.prune(), or a
 * running daemon (each runs realtime.maintain_partitions every 10 minutes,
 * dropping partitions closed more than retention ago), against the age of
 * the oldest message. Messages are kept between retention and retention +
 * partition_span by design: that sum is the horizon.
 */
async function checkRetention(client: pg.Client, timeoutMs: number, add: Add): Promise<void> {
  const job = await q.pruneJob(client);
  const state = await q.retentionState(client, timeoutMs);
  const pruners: string[] = [];
  if (job.job) pruners.push('a pg_cron job runs realtime.prune()');
  if (state.liveInstances) {
    pruners.push(`${state.liveInstances} running realtimed instance${state.liveInstances === 1 ? '' : 's'} (realtime.instances) drop${state.liveInstances === 1 ? 's' : ''} partitions past retention every 10 minutes`);
  }
  const horizonS = state.retentionS !== null && state.spanS !== null ? state.retentionS + state.spanS : null;
  const horizon = state.retentionS !== null && state.spanS !== null
    ? `retention ${duration(state.retentionS)} + partition_span ${duration(state.spanS)}`
    : 'unknown: this login may not read realtime.config';
  const oldest = state.oldestS === null ? 'no message yet'
    : state.oldestS === 'unreadable' ? 'oldest message unknown: this login may not read realtime.messages'
    : state.oldestS === 'timeout' ? `oldest message not found within ${timeoutMs} ms`
    : `oldest message ${duration(state.oldestS)} old`;
  const age = typeof state.oldestS === 'number' ? `the oldest message is ${duration(state.oldestS)} old` : '';
  const past = typeof state.oldestS === 'number' && horizonS !== null && state.oldestS > horizonS;

  if (pruners.length === 0) {
    const nothing = `${job.cron ? 'no pg_cron job runs' : 'pg_cron is not installed, so nothing schedules'} realtime.prune() and no realtimed instance is running`;
    const fix = 'schedule realtime.prune() with pg_cron (README) or keep realtimed start running (with --prune-interval to clear dedupe keys and webhook deliveries too)';
    if (past) add('warn', 'retention', `${age}, past the retention horizon (${horizon}), and nothing prunes: ${nothing}; ${fix}`);
    else add('warn', 'retention', `${nothing}: messages are kept until something prunes (${oldest}; horizon ${horizon}); ${fix}`);
    return;
  }
  const held = typeof state.oldestS === 'number' && horizonS !== null && state.oldestS > horizonS + 3600;
  if (held) {
    add('warn', 'retention', `${age}, past the retention horizon (${horizon}) by more than an hour, although ${pruners.join(' and ')}: a webhook still due or a view of yours on a partition keeps it (realtime.message_partitions, the daemon's log)`);
    return;
  }
  const unknown = job.job ? '' : '; whether an instance also runs realtime.prune() (--prune-interval, which clears dedupe keys, webhook deliveries and audience rows) is not recorded in realtime.instances: schedule it with pg_cron to be sure';
  add('ok', 'retention', `${pruners.join('; ')}; ${oldest} (horizon ${horizon})${unknown}`);
}

const MB = 1024 * 1024;

/** realtime.config.delivery and what it needs; the NOTIFY queue; realtimed's replication slots. */
async function checkDelivery(client: pg.Client, listenUrl: string, add: Add): Promise<void> {
  const mode = await deliveryMode(client);
  if (mode === null) {
    add('warn', 'delivery', 'could not read realtime.config.delivery (this login is not a member of service_role)');
  } else if (mode === 'notify') {
    const usage = await notifyQueueUsage(client);
    const used = `${(usage * 100).toFixed(usage < 0.01 ? 2 : 0)}%`;
    if (usage >= 0.5) {
      add('fail', 'delivery', `notify: the NOTIFY queue is ${used} full; when it fills, publishing commits fail. A session holding a LISTEN open in a long transaction stops it from emptying (pg_stat_activity), or switch: update realtime.config set delivery = 'wal' (or 'poll')`);
    } else {
      add('ok', 'delivery', `notify: NOTIFY queue ${used} used. Every publishing commit takes the cluster-wide notification lock; 'wal' or 'poll' keep business commits free of it (docs/delivery.md)`);
    }
  } else if (mode === 'wal') {
    const problem = await walProblem(listenUrl).catch((err: unknown) => `could not check delivery wal on the listen connection: ${(err as Error).message}`);
    if (problem) add('fail', 'delivery', problem);
    else add('ok', 'delivery', 'wal: wal_level = logical, publication realtime_messages, and the listen connection\'s role may replicate');
  } else {
    add('ok', 'delivery', 'poll: each daemon reads what committed every --poll-interval ms (works through poolers and on any PostgreSQL)');
  }
  for (const slot of await realtimedSlots(client)) {
    const retained = `${(slot.retainedBytes / MB).toFixed(1)} MB`;
    if (!slot.active) {
      add('fail', 'slots', `replication slot ${slot.name} is inactive and keeps ${retained} of WAL until it is dropped: select pg_drop_replication_slot('${slot.name}') (realtimed only makes temporary slots; this one was made by hand or by an older version)`);
    } else if (slot.retainedBytes > 256 * MB) {
      add('warn', 'slots', `replication slot ${slot.name} keeps ${retained} of WAL: its daemon is not keeping up (CPU, network), or a long transaction holds it back; max_slot_wal_keep_size bounds it`);
    } else {
      add('ok', 'slots', `replication slot ${slot.name}${slot.temporary ? ' (temporary)' : ''}: active, keeps ${retained} of WAL${slot.walStatus && slot.walStatus !== 'reserved' ? ` (wal_status ${slot.walStatus})` : ''}`);
    }
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

export function addDoctorCommand(program: Command, io: CliIo): void {
  program
    .command('doctor')
    .description('Check a database for what realtimed needs in production, in plain words; changes nothing. Exit 1 on a problem.')
    .addOption(new Option('--database-url <url>', 'the database realtimed start will use').env('DATABASE_URL'))
    .addOption(new Option('--listen-url <url>', 'the direct connection start --listen-url will use').env('REALTIMED_LISTEN_URL'))
    .addOption(
      new Option('--roles <list>', 'roles client tokens carry (start --roles)')
        .env(OPTIONS.roles.env)
        .default(OPTIONS.roles.default, JSON.stringify(OPTIONS.roles.default.join(',')))
        .argParser(list),
    )
    .action(async (opts: { databaseUrl?: string; listenUrl?: string; roles: string[] }) => {
      const { where, findings } = await doctor({
        databaseUrl: opts.databaseUrl,
        databaseUrlSource: '--database-url or DATABASE_URL',
        listenUrl: opts.listenUrl,
        roles: opts.roles,
      });
      io.out(formatFindings(where, findings));
      const problems = findings.filter((f) => f.level === 'fail').length;
      if (problems > 0) throw new RealtimedError('RT_ERR_DOCTOR', `${problems} problem${problems === 1 ? '' : 's'} found (FAIL lines above)`);
    });
}
