/**
 * An application that publishes from its own writes, for tests that change the
 * schema under load: a table app.orders whose trigger (SECURITY DEFINER, owned
 * by the superuser that creates it) calls realtime.publish() for every inserted
 * or updated row, and clients that write it in multi-statement transactions as
 * an ordinary login role, recording what committed and every error.
 *
 * Each client owns its own rows, so clients never wait for each other: any
 * lock wait, deadlock or abort they see comes from something else (a migration).
 */
import pg from 'pg';

import type { Teardown } from './db.js';

/** One row write that committed: the row and the n it left. */
export interface Write {
  id: number;
  n: number;
}

export interface PublisherError {
  publisher: number;
  /** SQLSTATE, or the Node error code for a connection failure. */
  code: string;
  message: string;
  /** The server's DETAIL (a deadlock names the locks) and CONTEXT (which function, which line), when sent. */
  detail?: string;
  where?: string;
  /** The statement that failed: begin, insert, update, commit, rollback, connection. */
  statement: string;
  /** Publishers.phase when it happened (the test names its phases). */
  phase: string;
}

export interface Publisher {
  index: number;
  /** Its backend's pid (deadlock reports name processes). */
  pid: number;
  /** Committed transactions. */
  committed: number;
  /** The row writes of committed transactions, in commit order. */
  writes: Write[];
  errors: PublisherError[];
  /** WARNINGs the server sent (realtime.publish reports dropped messages so). */
  warnings: string[];
  /** False once the loop ended (stopped, or the connection is gone). */
  running: boolean;
}

export interface Application {
  /** Rows seeded for each publisher (n = 0), by publisher index. */
  seeded: number[][];
  /** Whether realtime.publish takes a dedupe key here, so the trigger also publishes with one. */
  dedupe: boolean;
}

/** Ids of publisher k's rows start here (k from 0). */
export const idBase = (k: number): number => (k + 1) * 1_000_000;

/**
 * Creates app.orders, its publishing trigger and the channel order:%, grants
 * the role what an application needs, and seeds seedPerPublisher rows for
 * each publisher (two messages per row with dedupe, else one).
 * Run as a superuser: the trigger function is owned by the role that runs this.
 */
export async function installApplication(
  db: pg.Pool | pg.ClientBase,
  role: string,
  options: { publishers: number; seedPerPublisher: number },
): Promise<Application> {
  const { rows } = await db.query<{ dedupe: boolean; required: string[] }>(`
    select exists (select from pg_catalog.pg_proc p
                   where p.pronamespace = 'realtime'::regnamespace and p.proname = 'publish' and p.pronargs = 4
                     and p.proargtypes[3] = 'text'::regtype) as dedupe,
           array(select a.attname::text from pg_catalog.pg_attribute a
                 where a.attrelid = 'realtime.channels'::regclass and a.attnum > 0 and not a.attisdropped
                   and a.attnotnull and not a.atthasdef and a.attidentity = '' and a.attgenerated = ''
                 order by a.attnum) as required`);
  const dedupe = rows[0]?.dedupe ?? false;
  // Every version so far needs only a pattern (and has description); a new
  // required column must be given here.
  const required = rows[0]?.required ?? [];
  if (required.join() !== 'pattern') {
    throw new Error(`realtime.channels needs columns ${required.join(', ')} at this version: teach installApplication`);
  }
  const dedupeCall = dedupe
    ? `perform realtime.publish('order:' || new.id, 'n', pg_catalog.jsonb_build_object('id', new.id, 'n', new.n),
                                'order:' || new.id || ':n:' || new.n);`
    : '';
  const r = pg.escapeIdentifier(role);
  await db.query(`
    create schema app;
    create table app.orders (
      id integer primary key,
      n integer not null default 0
    );
    comment on table app.orders is 'An application table whose writes publish (test fixture).';
    create function app.orders_publish() returns trigger
    language plpgsql security definer set search_path = ''
    as $$
    begin
      perform realtime.publish('order:' || new.id, 'changed', pg_catalog.jsonb_build_object('id', new.id, 'n', new.n));
      ${dedupeCall}
      return null;
    end
    $$;
    comment on function app.orders_publish() is
      'Trigger: publishes each written row to order:<id> (event changed) and, once per value of n, with a dedupe key (event n).';
    revoke all on function app.orders_publish() from public;
    create trigger orders_publish
      after insert or update on app.orders
      for each row execute function app.orders_publish();
    comment on trigger orders_publish on app.orders is 'Every write publishes, in the writer''s transaction.';
    grant usage on schema app to ${r};
    grant select, insert, update on app.orders to ${r};
    insert into realtime.channels (pattern, description) values ('order:%', 'Orders of app.orders (test fixture).');`);
  const seeded: number[][] = [];
  for (let k = 0; k < options.publishers; k++) {
    const ids = Array.from({ length: options.seedPerPublisher }, (_, i) => idBase(k) + i);
    await db.query('insert into app.orders (id, n) select i, 0 from pg_catalog.unnest($1::integer[]) i', [ids]);
    seeded.push(ids);
  }
  return { seeded, dedupe };
}

export interface Publishers {
  list: Publisher[];
  /** A label stamped on errors (e.g. before / during / after the upgrade). */
  phase: string;
  /** Ends every loop after its current transaction and closes the clients. */
  stop(): Promise<void>;
}

/** A small deterministic generator (mulberry32), so each run makes the same choices. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Step {
  statement: 'insert' | 'update';
  id: number;
  /** For update: what to add to n (0 repeats the row's n, so its dedupe key). */
  delta: number;
}

/**
 * One transaction: always more than one statement; some touch two rows, in
 * either order; some write the same row twice (the second leaves n as it was).
 */
function plan(next: () => number, owned: number[], newId: () => number): Step[] {
  const pick = (): number => owned[Math.floor(next() * owned.length)] ?? owned[0] ?? 0;
  const x = pick();
  let y = pick();
  while (y === x && owned.length > 1) y = pick();
  const [low, high] = x < y ? [x, y] : [y, x];
  switch (Math.floor(next() * 4)) {
    case 0:
      return [{ statement: 'insert', id: newId(), delta: 0 }, { statement: 'update', id: x, delta: 1 }];
    case 1:
      return [{ statement: 'update', id: low, delta: 1 }, { statement: 'update', id: high, delta: 1 }];
    case 2:
      return [{ statement: 'update', id: high, delta: 1 }, { statement: 'update', id: low, delta: 1 }];
    default:
      return [{ statement: 'update', id: x, delta: 1 }, { statement: 'update', id: x, delta: 0 }];
  }
}

function errorOf(publisher: number, statement: string, phase: string, err: unknown): PublisherError {
  const e = err as { code?: unknown; message?: unknown; detail?: unknown; where?: unknown };
  return {
    publisher,
    code: typeof e.code === 'string' ? e.code : 'none',
    message: typeof e.message === 'string' ? e.message : String(err),
    ...(typeof e.detail === 'string' ? { detail: e.detail } : {}),
    ...(typeof e.where === 'string' ? { where: e.where } : {}),
    statement,
    phase,
  };
}

/**
 * Starts one client per seeded publisher at url (connected as the application
 * role), each looping begin; two writes; commit over its own rows until
 * stop(). A failed statement is recorded and its transaction rolled back, and
 * the loop goes on; a lost connection ends it. statement_timeout bounds every
 * wait (a lock held for longer is an error too).
 */
export async function startPublishers(
  t: Teardown,
  options: { url: string; app: Application; statementTimeoutMs?: number; maxTransactions?: number },
): Promise<Publishers> {
  const maxTransactions = options.maxTransactions ?? 100_000;
  let stopping = false;
  const clients: pg.Client[] = [];
  const loops: Promise<void>[] = [];
  let stopped: Promise<void> | null = null;
  const publishers: Publishers = {
    list: [],
    phase: 'start',
    stop: () => {
      stopped ??= (async () => {
        stopping = true;
        await Promise.all(loops);
        await Promise.all(clients.map((c) => c.end().catch(() => {})));
      })();
      return stopped;
    },
  };
  // Registered before the first connect, so a failed start leaks nothing.
  t.teardown(() => publishers.stop());

  for (const [k, seeded] of options.app.seeded.entries()) {
    const me: Publisher = { index: k, pid: 0, committed: 0, writes: [], errors: [], warnings: [], running: true };
    publishers.list.push(me);
    const client = new pg.Client({
      connectionString: options.url,
      application_name: `upgrade-publisher-${k}`,
      statement_timeout: options.statementTimeoutMs ?? 20_000,
    });
    let lost: unknown = null;
    client.on('error', (err) => {
      lost = err;
    });
    client.on('notice', (notice) => {
      if (notice.severity === 'WARNING' && me.warnings.length < 100) me.warnings.push(notice.message ?? '');
    });
    clients.push(client);
    await client.connect();
    me.pid = (await client.query<{ pid: number }>('select pg_catalog.pg_backend_pid() as pid')).rows[0]?.pid ?? 0;

    const owned = [...seeded];
    let nextId = idBase(k) + seeded.length;
    const next = random(k + 1);

    const loop = async (): Promise<void> => {
      try {
        while (!stopping && me.committed < maxTransactions && lost === null) {
          const inserted: number[] = [];
          const steps = plan(next, owned, () => {
            const id = nextId++;
            inserted.push(id);
            return id;
          });
          const writes: Write[] = [];
          let statement = 'begin';
          try {
            await client.query('begin');
            for (const step of steps) {
              statement = step.statement;
              const result =
                step.statement === 'insert'
                  ? await client.query<Write>('insert into app.orders (id, n) values ($1, 0) returning id, n', [step.id])
                  : await client.query<Write>('update app.orders set n = n + $2 where id = $1 returning id, n', [
                      step.id,
                      step.delta,
                    ]);
              writes.push(...result.rows);
            }
            statement = 'commit';
            await client.query('commit');
          } catch (err) {
            me.errors.push(errorOf(k, statement, publishers.phase, err));
            try {
              await client.query('rollback');
            } catch (rollbackError) {
              me.errors.push(errorOf(k, 'rollback', publishers.phase, rollbackError));
              break;
            }
            continue;
          }
          me.writes.push(...writes);
          owned.push(...inserted);
          me.committed++;
        }
        if (lost !== null && !stopping) me.errors.push(errorOf(k, 'connection', publishers.phase, lost));
      } finally {
        me.running = false;
      }
    };
    loops.push(loop());
  }
  return publishers;
}
