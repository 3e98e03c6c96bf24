/**
 * Applying committed migrations to a database the application is writing to.
 *
 * - One transaction per migration, recorded in graphile_migrate.migrations as
 *   graphile-migrate records it (same table, same hash chain), so either tool
 *   can take over from the other.
 * - Before its first statement, each migration takes the hot tables it changes
 *   (messages, channels, config, webhook_deliveries: read by every publish) in
 *   the order a publishing transaction takes them, which depends on the
 *   installed realtime.publish() (before version 12 it read channels and
 *   config, then inserted; since, it inserts first), every try giving up after
 *   100 ms. Holding them all, it never waits for a lock a publisher holds, so
 *   no deadlock can pick a publisher as its victim; and no publisher queues
 *   behind it for longer than one try. Landed migrations cannot be edited
 *   (000004 builds an index on messages and then locks config), so the runner
 *   takes the locks for them.
 * - Before version 13 partitions realtime.messages, the index and the
 *   constraint it needs are built online (CREATE INDEX CONCURRENTLY, VALIDATE
 *   CONSTRAINT), outside any transaction, so the migration itself only swaps
 *   tables.
 */
import { createHash } from 'node:crypto';

import type pg from 'pg';

/** graphile-migrate's own lock: a graphile-migrate run at the same time fails instead of interleaving. */
const GRAPHILE_MIGRATE_LOCK = 2_128_512_512;

/** The tables every publish reads or writes, in the order it takes them, by the installed version. */
function hotTablesInOrder(installedVersion: number): string[] {
  return installedVersion < 12
    ? ['realtime.channels', 'realtime.config', 'realtime.messages', 'realtime.webhook_deliveries']
    : ['realtime.messages', 'realtime.channels', 'realtime.config', 'realtime.webhook_deliveries'];
}

/** Statements that lock a table they name: DDL on it, an index or trigger on it, a reference to it. */
const LOCKING = /(?:alter\s+table|create\s+(?:unique\s+)?index[^;]*?\son|(?:create|drop)\s+trigger[^;]*?\son|lock\s+table|references|create\s+policy[^;]*?\son|drop\s+policy[^;]*?\son)(?:\s+if\s+(?:not\s+)?exists)?(?:\s+only)?\s+(realtime\.(?:messages|channels|config|webhook_deliveries))\b/gi;

/** The hot tables a migration locks, in the order publishers take them. */
export function hotTablesOf(body: string, installedVersion: number): string[] {
  return lockPlanOf(body, installedVersion).map((l) => l.table);
}

export type LockMode = 'access exclusive' | 'share row exclusive';

/**
 * Each hot table a migration locks, in the order publishers take them, with
 * the mode taken first: SHARE ROW EXCLUSIVE when all the migration does to
 * the table is create or drop triggers (what CREATE TRIGGER itself takes: it
 * waits for no publisher, which only reads these tables or inserts into
 * messages... and no trigger is made on messages this way), ACCESS
 * EXCLUSIVE for anything else.
 */
export function lockPlanOf(body: string, installedVersion: number): { table: string; mode: LockMode }[] {
  const modes = new Map<string, LockMode>();
  for (const m of body.matchAll(LOCKING)) {
    const table = (m[1] ?? '').toLowerCase();
    const triggerOnly = /^(?:create|drop)\s+trigger\b/i.test(m[0]) && table !== 'realtime.messages';
    if (!triggerOnly || !modes.has(table)) modes.set(table, triggerOnly && modes.get(table) !== 'access exclusive' ? 'share row exclusive' : 'access exclusive');
  }
  for (const m of body.matchAll(/lock\s+table\s+([^;]+?)\s+in\s+/gi)) {
    for (const name of (m[1] ?? '').split(',')) modes.set(name.trim().toLowerCase(), 'access exclusive');
  }
  return hotTablesInOrder(installedVersion)
    .filter((t) => modes.has(t))
    .map((table) => ({ table, mode: modes.get(table) ?? 'access exclusive' }));
}

function lockStatement(locks: { table: string; mode: LockMode }[]): string {
  return `
do $realtimed_locks$
declare
  v_tables text;
  v_attempt integer := 0;
  v_lock record;
begin
  select pg_catalog.string_agg(t.name, ', ' order by t.n) into v_tables
  from pg_catalog.unnest('{${locks.map((l) => l.table).join(',')}}'::text[]) with ordinality t(name, n)
  where pg_catalog.to_regclass(t.name) is not null;
  if v_tables is null then
    return;
  end if;
  loop
    begin
      perform pg_catalog.set_config('lock_timeout', '100ms', true);
      for v_lock in
        select t.name, m.mode
        from pg_catalog.unnest('{${locks.map((l) => l.table).join(',')}}'::text[]) with ordinality t(name, n)
        join pg_catalog.unnest('{${locks.map((l) => `"${l.mode}"`).join(',')}}'::text[]) with ordinality m(mode, n) using (n)
        where pg_catalog.to_regclass(t.name) is not null
        order by n
      loop
        execute 'lock table ' || v_lock.name || ' in ' || v_lock.mode || ' mode';
      end loop;
      perform pg_catalog.set_config('lock_timeout', '0', true);
      return;
    exception when lock_not_available then
      v_attempt := v_attempt + 1;
      if v_attempt >= 600 then
        raise exception 'could not lock % in 600 tries of 100 ms', v_tables
          using hint = 'Long transactions hold them; run realtimed migrate again at a quieter moment. Nothing was changed.';
      end if;
      perform pg_catalog.pg_sleep(least(0.02 * v_attempt, 0.5) * (0.5 + pg_catalog.random()));
    end;
  end loop;
end
$realtimed_locks$`;
}

export interface PendingMigration {
  version: number;
  filename: string;
  hash: string;
  previousHash: string | null;
  body: string;
}

/** graphile-migrate's hash of a migration: sha1 over the previous hash and the trimmed body. */
export function migrationHash(body: string, previousHash: string | null): string {
  const text = `${`${previousHash ?? ''}\n${body.trim()}`.trim()}\n`;
  return `sha1:${createHash('sha1').update(text).digest('hex')}`;
}

/** The bookkeeping graphile-migrate keeps, created as it creates it when missing. */
export async function ensureChainTables(client: pg.ClientBase): Promise<void> {
  await client.query(`
    create schema if not exists graphile_migrate;
    create table if not exists graphile_migrate.migrations (
      hash text primary key,
      previous_hash text references graphile_migrate.migrations,
      filename text not null,
      date timestamptz not null default now()
    );
    create table if not exists graphile_migrate.current (
      filename text primary key default 'current.sql',
      content text not null,
      date timestamptz not null default now()
    );`);
}

/**
 * Applies one migration in its own transaction, the hot tables it changes
 * locked first; recorded in graphile_migrate.migrations unless `record` is
 * false (a database installed from the plain script keeps no chain).
 */
export async function applyMigration(
  client: pg.ClientBase,
  migration: PendingMigration,
  installedVersion: number,
  options: { record?: boolean } = {},
): Promise<void> {
  const { rows } = await client.query<{ locked: boolean }>('select pg_catalog.pg_try_advisory_lock($1) as locked', [
    GRAPHILE_MIGRATE_LOCK,
  ]);
  if (!rows[0]?.locked) throw new Error('graphile-migrate is migrating this database right now; try again when it is done');
  try {
    await client.query('begin');
    try {
      const locks = lockPlanOf(migration.body, installedVersion);
      if (locks.length > 0) await client.query(lockStatement(locks));
      await client.query(migration.body);
      if (options.record !== false) {
        await client.query('insert into graphile_migrate.migrations (hash, previous_hash, filename) values ($1, $2, $3)', [
          migration.hash,
          migration.previousHash,
          migration.filename,
        ]);
      }
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => {});
      throw err;
    }
  } finally {
    await client.query('select pg_catalog.pg_advisory_unlock($1)', [GRAPHILE_MIGRATE_LOCK]).catch(() => {});
  }
}

/**
 * Before version 13: what it needs from realtime.messages, built without
 * blocking writers. Each statement commits on its own; each is skipped when
 * already done (a run interrupted here is simply run again).
 */
export async function prepareVersion13(client: pg.ClientBase, log: (line: string) => void): Promise<void> {
  const { rows } = await client.query<{ kind: string | null }>(
    `select c.relkind::text as kind from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass('realtime.messages')`,
  );
  if (rows[0]?.kind !== 'r') return;
  await client.query(`set statement_timeout = 0`);
  const indexes: [string, string][] = [
    ['messages_p0_pkey', 'create unique index concurrently messages_p0_pkey on realtime.messages (channel_name, seq)'],
    ['messages_p0_xact_id_brin', 'create index concurrently messages_p0_xact_id_brin on realtime.messages using brin (((xact_id::text)::bigint))'],
    ['messages_p0_seq_brin', 'create index concurrently messages_p0_seq_brin on realtime.messages using brin (seq)'],
  ];
  for (const [name, create] of indexes) {
    const state = await client.query<{ valid: boolean }>(
      `select i.indisvalid as valid from pg_catalog.pg_index i where i.indexrelid = pg_catalog.to_regclass($1)`,
      [`realtime.${name}`],
    );
    if (state.rows[0]?.valid) continue;
    // An interrupted concurrent build leaves an invalid index behind.
    if (state.rows[0]) await client.query(`drop index concurrently realtime.${name}`);
    log(`building realtime.${name} (online, before version 13)`);
    await client.query(create);
  }
  const bound = await client.query<{ validated: boolean }>(
    `select c.convalidated as validated from pg_catalog.pg_constraint c
     where c.conrelid = 'realtime.messages'::regclass and c.conname = 'messages_p0_bound'`,
  );
  if (!bound.rows[0]) {
    // Above every seq already taken, with room for 2^31 more before the
    // upgrade: the next multiple of 2^32 past that. Adding the constraint
    // locks the table for an instant; proving it (VALIDATE) does not.
    await client.query(`
      do $realtimed_bound$
      declare
        v_bound bigint;
        v_attempt integer := 0;
      begin
        select (((case when s.is_called then s.last_value else 0 end + (1::bigint << 31)) >> 32) + 1) << 32
        into v_bound from realtime.messages_seq_seq s;
        loop
          begin
            perform pg_catalog.set_config('lock_timeout', '100ms', true);
            execute pg_catalog.format(
              'alter table realtime.messages add constraint messages_p0_bound check (seq < %s) not valid', v_bound);
            return;
          exception when lock_not_available then
            v_attempt := v_attempt + 1;
            if v_attempt >= 600 then
              raise exception 'could not lock realtime.messages in 600 tries of 100 ms';
            end if;
            perform pg_catalog.pg_sleep(least(0.02 * v_attempt, 0.5) * (0.5 + pg_catalog.random()));
          end;
        end loop;
      end
      $realtimed_bound$`);
  }
  if (!bound.rows[0]?.validated) {
    log('validating realtime.messages_p0_bound (online, before version 13)');
    await client.query('alter table realtime.messages validate constraint messages_p0_bound');
  }
  await client.query(`set statement_timeout = '120s'`);
}
