/** What `realtimed doctor` reads: catalogs and the package's tables, as the login it checks. Read-only. */
import { randomBytes, randomUUID } from 'node:crypto';

import pg from 'pg';

async function one<R extends pg.QueryResultRow>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<R> {
  return (await client.query<R>(sql, params)).rows[0] as R;
}

export function serverVersion(client: pg.ClientBase): Promise<{ num: number; version: string }> {
  return one(client, `select current_setting('server_version_num')::int as num, current_setting('server_version') as version`);
}

/** Whether the package is installed, and whether this login may read its version. */
export function packageState(client: pg.ClientBase): Promise<{ installed: boolean; readable: boolean }> {
  return one(
    client,
    `select to_regprocedure('realtime.version()') is not null as installed,
            to_regprocedure('realtime.version()') is not null
            and has_function_privilege('realtime.version()', 'execute') as readable`,
  );
}

export async function schemaVersion(client: pg.ClientBase): Promise<number> {
  return (await one<{ v: number }>(client, 'select realtime.version() as v')).v;
}

/** Each wanted role: whether it exists and whether the login is a member of it. */
export async function roleMemberships(client: pg.ClientBase, wanted: string[]): Promise<{ role: string; exists: boolean; member: boolean }[]> {
  return (
    await client.query<{ role: string; exists: boolean; member: boolean }>(
      `select r as role, exists (select from pg_roles where rolname = r) as exists,
              coalesce(pg_has_role(current_user, (select oid from pg_roles where rolname = r), 'MEMBER'), false) as member
       from unnest($1::text[]) as r`,
      [wanted],
    )
  ).rows;
}

export function login(client: pg.ClientBase): Promise<{ name: string; super: boolean; bypass: boolean }> {
  return one(client, `select current_user as name, rolsuper as super, rolbypassrls as bypass from pg_roles where rolname = current_user`);
}

/** Row-level security of realtime.channels and realtime.messages. */
export async function rowSecurity(client: pg.ClientBase): Promise<{ name: string; on: boolean }[]> {
  return (
    await client.query<{ name: string; on: boolean }>(
      `select c.relname as name, c.relrowsecurity as on from pg_class c
       where c.oid in ('realtime.channels'::regclass, 'realtime.messages'::regclass) order by 1`,
    )
  ).rows;
}

/** Permissive SELECT (or ALL) policies on realtime.channels: their USING text and roles. */
export async function subscribePolicies(client: pg.ClientBase): Promise<{ name: string; qual: string | null; roles: string[] }[]> {
  return (
    await client.query<{ name: string; qual: string | null; roles: string[] }>(
      `select p.polname as name, pg_get_expr(p.polqual, p.polrelid) as qual,
              array(select case when r = 0 then 'public' else (select rolname::text from pg_roles where oid = r) end
                    from unnest(p.polroles) r)::text[] as roles
       from pg_policy p
       where p.polrelid = 'realtime.channels'::regclass and p.polcmd in ('r', '*') and p.polpermissive`,
    )
  ).rows;
}

export async function enabledChannels(client: pg.ClientBase): Promise<{ id: string; pattern: string }[]> {
  return (await client.query<{ id: string; pattern: string }>(`select id, pattern from realtime.channels where enabled order by pattern`)).rows;
}

/** realtime.match_channel for each name: the enabled channel it belongs to now, or null. */
export async function matchChannels(client: pg.ClientBase, names: string[]): Promise<(string | null)[]> {
  const { rows } = await client.query<{ id: string | null }>(
    `select realtime.match_channel(n) as id from unnest($1::text[]) with ordinality as u(n, i) order by i`,
    [names],
  );
  return rows.map((r) => r.id);
}

export interface SubscribeCheck {
  role: string;
  claims: Record<string, unknown>;
  channel: string;
}

/**
 * The daemon's own subscribe check, realtime.authorize_subscriptions: each
 * item acts as its role and claims in a subtransaction that is rolled back.
 * allowed, or the SQLSTATE and message the check failed with.
 */
export async function subscribeChecks(
  client: pg.ClientBase,
  items: SubscribeCheck[],
): Promise<{ allowed: boolean; error: { code: string; message: string } | null }[]> {
  const out: { allowed: boolean; error: { code: string; message: string } | null }[] = [];
  const instance = randomUUID(); // counts no subscriber of any real instance
  for (let i = 0; i < items.length; i += 1000) {
    const batch = items.slice(i, i + 1000);
    const { rows } = await client.query<{ channel_id: string | null; error_code: string | null; error_message: string | null }>(
      `select channel_id, error_code, error_message
       from realtime.authorize_subscriptions($1::text[], $2::jsonb[], $3::text[], $4) order by ord`,
      [batch.map((c) => c.role), batch.map((c) => JSON.stringify(c.claims)), batch.map((c) => c.channel), instance],
    );
    for (const r of rows) {
      out.push({
        allowed: r.channel_id !== null,
        error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' },
      });
    }
  }
  return out;
}

/** Non-public change streams: the source's RLS and which of the roles may SELECT it ([] when the login cannot read streams). */
export async function rowCheckedStreams(client: pg.ClientBase, roles: string[]): Promise<{ source: string; rls: boolean; readers: string[] }[]> {
  const readable = await one<{ ok: boolean }>(
    client,
    `select to_regclass('realtime.change_streams') is not null
            and has_table_privilege('realtime.change_streams', 'SELECT') as ok`,
  );
  if (!readable.ok) return [];
  return (
    await client.query<{ source: string; rls: boolean; readers: string[] }>(
      // By oid, from pg_roles: has_table_privilege(name, ...) raises for a role
      // that does not exist, and SQL does not promise to test exists() first.
      `select cs.table_id::text as source, c.relrowsecurity as rls,
              array(select r.rolname::text from unnest($1::text[]) with ordinality as w(name, n)
                    join pg_roles r on r.rolname = w.name
                    where has_table_privilege(r.oid, cs.table_id, 'SELECT') order by w.n)::text[] as readers
       from realtime.change_streams cs join pg_class c on c.oid = cs.table_id
       where not cs.public order by 1`,
      [roles],
    )
  ).rows;
}

/**
 * Permissive policies that admit every row: SELECT (or ALL) on
 * realtime.channels using (true), INSERT (or ALL) on realtime.messages with
 * check (true) (an ALL policy without WITH CHECK checks its USING). Left out
 * when a restrictive policy on the same table and command applies to one of
 * its roles: that one narrows it.
 */
export async function wideOpenPolicies(client: pg.ClientBase): Promise<{ table: string; name: string; clause: string; roles: string[] }[]> {
  return (
    await client.query<{ table: string; name: string; clause: string; roles: string[] }>(
      `select c.relname::text as table, p.polname::text as name,
              case when p.polrelid = 'realtime.channels'::regclass then 'using (true)' else 'with check (true)' end as clause,
              array(select case when r = 0 then 'public' else (select rolname::text from pg_roles where oid = r) end
                    from unnest(p.polroles) r)::text[] as roles
       from pg_policy p join pg_class c on c.oid = p.polrelid
       where p.polpermissive
         and ((p.polrelid = 'realtime.channels'::regclass and p.polcmd in ('r', '*')
               and pg_get_expr(p.polqual, p.polrelid) = 'true')
           or (p.polrelid = 'realtime.messages'::regclass and p.polcmd in ('a', '*')
               and coalesce(pg_get_expr(p.polwithcheck, p.polrelid), pg_get_expr(p.polqual, p.polrelid)) = 'true'))
         and not exists (select from pg_policy n
                         where n.polrelid = p.polrelid and not n.polpermissive
                           and (n.polcmd = '*' or n.polcmd = case when p.polrelid = 'realtime.channels'::regclass then 'r' else 'a' end)
                           and (0 = any(n.polroles) or 0 = any(p.polroles) or n.polroles && p.polroles))
       order by 1, 2`,
    )
  ).rows;
}

/** The DEMO policies `realtimed dev` installs, if present. */
export async function demoPolicies(client: pg.ClientBase): Promise<number> {
  return (
    await one<{ n: number }>(
      client,
      `select count(*)::int as n from pg_policy
       where polrelid in ('realtime.channels'::regclass, 'realtime.messages'::regclass) and polname like 'DEMO:%'`,
    )
  ).n;
}

/** Whether pg_cron is installed, and whether an active job of it runs realtime.prune(). */
export async function pruneJob(client: pg.ClientBase): Promise<{ cron: boolean; job: boolean }> {
  const cron = (await one<{ installed: boolean }>(client, `select to_regclass('cron.job') is not null as installed`)).installed;
  if (!cron) return { cron, job: false };
  const n = await one<{ n: number }>(client, `select count(*)::int as n from cron.job where command ilike '%realtime.prune%' and active`).catch(
    () => ({ n: 0 }),
  );
  return { cron, job: n.n > 0 };
}

export interface RetentionState {
  /** realtime.config.retention and partition_span in seconds; null when this login may not read them. */
  retentionS: number | null;
  spanS: number | null;
  /** Age of the oldest message in seconds; null when there is none; 'unreadable' / 'timeout' when it could not be read. */
  oldestS: number | null | 'unreadable' | 'timeout';
  /** realtimed instances that heartbeat within 10 minutes (the longest --presence-heartbeat); null when unreadable. */
  liveInstances: number | null;
}

/**
 * What retention needs to know. The oldest message is looked for in the
 * first partition (by seq) that holds any, so doctor reads one partition, not
 * the table, and gives up after timeoutMs. realtime.instances records no
 * settings of a daemon: whether one runs realtime.prune() (--prune-interval)
 * cannot be read here, only that it is running (every instance runs
 * realtime.maintain_partitions, which drops partitions past retention).
 */
export async function retentionState(client: pg.ClientBase, timeoutMs: number): Promise<RetentionState> {
  const can = await one<{ config: boolean; messages: boolean; instances: boolean }>(
    client,
    `select has_table_privilege('realtime.config', 'SELECT') as config,
            has_table_privilege('realtime.messages', 'SELECT')
            and to_regclass('realtime.message_partitions') is not null
            and has_table_privilege('realtime.message_partitions', 'SELECT') as messages,
            has_table_privilege('realtime.instances', 'SELECT') as instances`,
  );
  const state: RetentionState = { retentionS: null, spanS: null, oldestS: 'unreadable', liveInstances: null };
  if (can.config) {
    const c = await one<{ retention: number; span: number }>(
      client,
      `select extract(epoch from retention)::float8 as retention, extract(epoch from partition_span)::float8 as span from realtime.config`,
    );
    state.retentionS = c.retention;
    state.spanS = c.span;
  }
  if (can.instances) {
    state.liveInstances = (
      await one<{ n: number }>(client, `select count(*)::int as n from realtime.instances where heartbeat_at > now() - interval '10 minutes'`)
    ).n;
  }
  if (can.messages) {
    await client.query('begin');
    try {
      await client.query(`select set_config('statement_timeout', $1, true)`, [String(timeoutMs)]);
      const first = (
        await client.query<{ seq_from: string; seq_to: string }>(
          `select p.seq_from, p.seq_to from realtime.message_partitions p
           where exists (select from realtime.messages m where m.seq >= p.seq_from and m.seq < p.seq_to)
           order by p.seq_from limit 1`,
        )
      ).rows[0];
      state.oldestS = first
        ? (
            await one<{ age: number | null }>(
              client,
              `select extract(epoch from now() - min(created_at))::float8 as age from realtime.messages where seq >= $1 and seq < $2`,
              [first.seq_from, first.seq_to],
            )
          ).age
        : null;
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => {});
      if ((err as { code?: string }).code !== '57014') throw err;
      state.oldestS = 'timeout';
    }
  }
  return state;
}

/**
 * Whether a LISTEN on this URL hears a NOTIFY sent from another session, as
 * the daemon's must. Through a transaction-mode pooler the listening client is
 * not tied to its server connection between statements, so it hears nothing.
 */
export async function listenWorks(url: string, timeoutMs: number): Promise<boolean> {
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
