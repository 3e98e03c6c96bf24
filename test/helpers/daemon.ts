import pg from 'pg';
import { pino } from 'pino';

import { START_DEFAULTS, type StartConfig } from '../../src/cli/options.js';
import { createDaemon, type Daemon } from '../../src/daemon/index.js';
import { createLoginRole, urlFor, type TestDatabase, type Teardown } from './db.js';
import { SECRET } from './jwt.js';

export interface TestDaemon {
  daemon: Daemon;
  /** The daemon's own pool (its login role), to look at what it leaves behind. */
  pool: pg.Pool;
  role: string;
  wsUrl: string;
  httpUrl: string;
}

/**
 * A daemon in this process on 127.0.0.1:0, connected as a login role with the
 * documented minimal grants (member of anon, authenticated, service_role).
 */
export async function startDaemon(
  t: Teardown,
  db: TestDatabase,
  overrides: Partial<StartConfig> = {},
  options: { poolSize?: number; databaseUrl?: string; existingRole?: string; delivery?: 'notify' | 'wal' | 'poll' } = {},
): Promise<TestDaemon> {
  // A role on another server (an embedded one) is made by the test itself.
  const role = options.existingRole ?? (await createLoginRole(t, ['anon', 'authenticated', 'service_role']));
  const url = options.existingRole ? (options.databaseUrl ?? '') : urlFor(db.name, undefined, role);
  const config: StartConfig = {
    ...START_DEFAULTS,
    roles: [...START_DEFAULTS.roles],
    databaseUrl: options.databaseUrl ?? url,
    listenUrl: url,
    port: 0,
    jwtSecret: SECRET,
    jwksUrl: undefined,
    allowAnon: true,
    allowedOrigins: [],
    perMessageDeflate: false,
    logLevel: 'silent',
    webhooks: true,
    webhookSecret: undefined,
    // The receivers are on 127.0.0.1.
    webhookAllowLocal: true,
    ...overrides,
  };
  // REALTIMED_TEST_DELIVERY=poll (or wal, on a server with wal_level = logical)
  // runs every suite in that mode (docs/development.md).
  // A test that is about one mode says so (options.delivery).
  const delivery = options.delivery ?? process.env['REALTIMED_TEST_DELIVERY'];
  if (delivery) await db.pool.query('update realtime.config set delivery = $1', [delivery]);
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: options.poolSize ?? 4 });
  const logger = pino({ level: process.env['REALTIMED_TEST_LOG'] ?? 'silent' });
  const daemon = createDaemon({ config, pool, logger });
  const address = await daemon.start();
  t.teardown(async () => {
    try {
      await daemon.stop();
      await pool.end();
    } catch (err) {
      console.error('DAEMON TEARDOWN', err);
      throw err;
    }
  });
  return {
    daemon,
    pool,
    role,
    wsUrl: `ws://127.0.0.1:${address.port}${config.path}`,
    httpUrl: `http://127.0.0.1:${address.port}`,
  };
}

/** The example application of docs/examples/policies.sql, with alice and bob. */
export async function loadExamples(db: TestDatabase): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  const sql = await readFile(new URL('../../docs/examples/policies.sql', import.meta.url), 'utf8');
  await db.pool.query(sql);
  await db.pool.query(`
    insert into app.orders (id, owner_id) values (1, 'a11ce000-0000-4000-8000-000000000001'),
                                                 (2, 'b0b00000-0000-4000-8000-000000000002');
    insert into app.chat_members values (7, 'a11ce000-0000-4000-8000-000000000001');
    create function app.orders_publish() returns trigger language plpgsql as $$
    begin
      perform realtime.publish('order:' || new.id, 'status_changed', jsonb_build_object('status', new.status));
      return new;
    end $$;
    create trigger orders_publish after update on app.orders for each row execute function app.orders_publish();`);
}

/** app.ticks: each inserted row publishes a system message {n} to 'orders' from a trigger. */
export async function createTicks(db: TestDatabase): Promise<void> {
  await db.pool.query(`
    create table app.ticks (n int primary key);
    create function app.ticks_publish() returns trigger language plpgsql as $$
    begin perform realtime.publish('orders', 'tick', jsonb_build_object('n', new.n)); return new; end $$;
    create trigger ticks_publish after insert on app.ticks for each row execute function app.ticks_publish();`);
}
