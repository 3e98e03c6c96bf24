/**
 * `realtimed start` as a library: wires the pool, the LISTEN connection, the
 * relay and the server. Everything it uses is passed in; only src/cli.ts reads
 * the environment.
 */
import type { AddressInfo } from 'node:net';

import type pg from 'pg';
import type { Logger } from 'pino';

import { createAuthenticator } from './auth.js';
import type { StartConfig } from './config.js';
import type { Connection } from './connection.js';
import { createDb } from './db.js';
import { Hub } from './hub.js';
import { createListener, type Listener } from './listener.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createRelay, type Relay } from './relay.js';
import { createServer, type Server } from './server.js';

export interface DaemonDeps {
  config: StartConfig;
  /** Pooled connections for checks and publishes (may go through a transaction pooler). */
  pool: pg.Pool;
  logger: Logger;
  /** Milliseconds since the epoch; tests move it. */
  now?: () => number;
}

export interface Daemon {
  start(): Promise<AddressInfo>;
  stop(): Promise<void>;
  readonly metrics: Metrics;
  readonly server: Server;
  readonly relay: Relay;
  readonly listener: Listener;
}

export function createDaemon(deps: DaemonDeps): Daemon {
  const { config, pool, logger } = deps;
  const now = deps.now ?? Date.now;
  const hub = new Hub<Connection>();
  const db = createDb(pool);
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection failed'));

  let server: Server | undefined;
  const metrics = createMetrics({ connections: () => server?.connections.size ?? 0, subscriptions: () => hub.size });
  const auth = createAuthenticator({ ...config, now });
  const relay = createRelay({ db, hub, metrics, logger });

  // A channel was added, changed or deleted: re-match what this instance serves.
  let rematchTimer: NodeJS.Timeout | undefined;
  const rematch = async (): Promise<void> => {
    const names = hub.channelNames();
    if (names.length === 0) return;
    const matches = await db.matchChannels(names);
    for (const name of names) {
      const id = matches.get(name) ?? null;
      for (const connection of [...(hub.subscribers(name) ?? [])]) {
        if (id === null) connection.drop(name, 'CHANNEL_CLOSED');
        else if (connection.channels.get(name) !== id) connection.reauthorize(name);
      }
    }
  };
  const scheduleRematch = (): void => {
    clearTimeout(rematchTimer);
    rematchTimer = setTimeout(() => {
      rematch().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'could not re-match channels'));
    }, 50);
  };

  const listener = createListener(
    { url: config.listenUrl, logger, metrics },
    { onMessage: (envelope) => relay.enqueue(envelope), onChannelsChanged: scheduleRematch, onConnected: scheduleRematch },
  );
  server = createServer({ config, db, auth, hub, metrics, logger, now, listener });
  const srv = server;

  return {
    metrics,
    server: srv,
    relay,
    listener,
    async start() {
      await listener.start();
      const address = await srv.listen();
      logger.info({ host: address.address, port: address.port, path: config.path }, 'realtimed listening');
      return address;
    },
    async stop() {
      clearTimeout(rematchTimer);
      await srv.close();
      await listener.stop();
      await relay.idle();
      logger.info('realtimed stopped');
    },
  };
}
