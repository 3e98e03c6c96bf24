/**
 * `realtimed start` as a library: wiring only. Each part is its own module
 * and takes what it uses; only src/cli/ reads the environment.
 *
 *   listener ──hints──▶ relay ──frames──▶ hub ──▶ subscriptions ──▶ sockets
 *   delivery ─(wal: rows, poll: timer)─▶ ┘ ▲
 *      ├─▶ ephemeral (verified) ───────────┘
 *      ├─▶ presence, rematch, webhooks (wake-ups)
 *   http server ──upgrade──▶ socket/connection ──▶ db (as the client)
 */
import type { AddressInfo } from 'node:net';

import type pg from 'pg';
import type { Logger } from 'pino';

import type { StartConfig } from '../cli/options.js';
import { RealtimedError } from '../cli/errors.js';
import { createDb } from '../db/index.js';
import { createServer, type Server } from '../http/server.js';
import { createAuthenticator } from './auth.js';
import { errorText } from './boundary.js';
import { createDelivery, type Delivery } from './delivery.js';
import { createEphemeral } from './ephemeral.js';
import { groupedDb } from './grouped.js';
import { createKeys } from './keys.js';
import { Hub } from './hub.js';
import { UserConnections } from './limits.js';
import { createListener, type Listener } from './listener.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createPresence, type Presence } from './presence.js';
import { createRelay, type Relay } from './relay.js';
import { createRematch } from './rematch.js';
import { createRetention } from './retention.js';
import type { Subscription } from './socket/subscription.js';
import { createStats, type Stats } from './statistics.js';
import { createSubscriberCounts } from './subscriberCounts.js';
import { createWebhooks, type Webhooks } from './webhooks.js';

/** The oldest realtime schema this daemon works with (it reads realtime.relay_messages, 14). */
export const MIN_SCHEMA_VERSION = 15;

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
  readonly stats: Stats;
  readonly webhooks: Webhooks | null;
  readonly presence: Presence;
  readonly delivery: Delivery;
}

export function createDaemon(deps: DaemonDeps): Daemon {
  const { config, pool, logger } = deps;
  const now = deps.now ?? Date.now;
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection failed'));
  const db = createDb(pool);
  const hub = new Hub<Subscription>();

  let server: Server | undefined;
  const metrics = createMetrics({ connections: () => server?.connections.size ?? 0, subscriptions: () => hub.size });
  const auth = createAuthenticator({ ...config, now });
  const stats = createStats({ db, logger }, config.statsIntervalMs);
  const presence = createPresence(
    { db, logger, metrics, now },
    {
      maxMembers: config.maxPresenceMembers,
      maxStateBytes: config.maxPresenceBytes,
      throttleMs: config.presenceThrottleMs,
      heartbeatMs: config.presenceHeartbeatMs,
      timeoutMs: config.presenceTimeoutMs,
    },
  );
  const keys = createKeys({ db, logger, now });
  const ephemeral = createEphemeral({ db, hub, metrics, now, keys, instance: presence.instance });
  const relay = createRelay(
    { db, hub, metrics, logger, stats, onCommitted: () => webhooks?.wake() },
    { recoveryIntervalMs: config.recoveryIntervalMs, pollIntervalMs: config.pollIntervalMs },
  );
  const webhooks = config.webhooks
    ? createWebhooks(
        { db, logger, metrics, now },
        {
          secret: config.webhookSecret,
          timeoutMs: config.webhookTimeoutMs,
          perUrl: config.webhookConcurrency,
          maxInFlight: config.webhookMaxInFlight,
          sweepMs: config.webhookSweepMs,
          userAgent: 'realtimed',
          allowLocal: config.webhookAllowLocal,
        },
      )
    : null;
  const rematch = createRematch({ db, hub, logger });
  const counts = createSubscriberCounts({ db, hub, instance: presence.instance, logger }, config.statsIntervalMs);
  const retention = createRetention({ db, logger }, config.pruneIntervalMs);
  const delivery = createDelivery({
    db, relay, logger, metrics, listenUrl: config.listenUrl, instance: presence.instance, onWebhooksDue: () => webhooks?.wake(),
  });

  const listener = createListener(
    { url: config.listenUrl, logger, metrics },
    {
      onMessage: (envelope) => relay.enqueue(envelope),
      onChannelsChanged: () => {
        rematch.schedule();
        delivery.changed();
      },
      onWebhooksDue: () => webhooks?.wake(),
      onPresence: (payload) => presence.hint(payload),
      onEphemeral: (payload) => ephemeral.onNotification(payload),
      onKeysChanged: () => void keys.load(),
      // Only notifications come through LISTEN in notify; in wal and poll the
      // relay goes on (recovery passes cover any hint missed meanwhile).
      onDisconnected: () => {
        if (delivery.mode() === 'notify') relay.pause();
        presence.disconnected();
      },
      onConnected: () => {
        relay.resync();
        rematch.schedule();
        webhooks?.wake();
        presence.resync();
        delivery.changed();
        // A rotation may have been missed while LISTEN was down.
        void keys.load();
      },
    },
  );
  const stop = async (): Promise<void> => {
    rematch.stop();
    retention.stop();
    counts.stop();
    await srv.close();
    await presence.stop();
    await listener.stop();
    await delivery.stop();
    await relay.stop();
    await webhooks?.stop();
    await stats.stop();
    ephemeral.stop();
    logger.info('realtimed stopped');
  };
  // What clients drive (publishes, subscribe checks) is grouped; a third of
  // the pool each at most, the rest stays for the relay, presence and webhooks.
  const clientDb = groupedDb(db, { metrics }, { concurrency: Math.max(1, Math.floor(config.poolSize / 3)) });
  const srv = createServer({
    config, db: clientDb, auth, hub, metrics, logger, now, listener, presence, ephemeral, keys,
    users: new UserConnections(config.maxConnectionsPerUser),
  });
  server = srv;

  return {
    metrics,
    server: srv,
    relay,
    listener,
    stats,
    webhooks,
    presence,
    delivery,
    async start() {
      try {
        // A database that answers must have the schema this daemon reads; one
        // that does not answer yet is waited for (/health is 503 meanwhile).
        const version = await db.schemaVersion().catch(() => null);
        if (version !== null && version < MIN_SCHEMA_VERSION) {
          throw new RealtimedError('RT_ERR_VERSION',
            `realtime schema version ${version}, this realtimed needs ${MIN_SCHEMA_VERSION} or newer: run realtimed migrate first (migrate, then upgrade the daemons)`);
        }
        await keys.load();
        await presence.start();
        await relay.start();
        await listener.start();
        await delivery.start();
        stats.start();
        counts.start();
        webhooks?.start();
        await retention.start();
        const address = await srv.listen();
        logger.info({ host: address.address, port: address.port, path: config.path }, 'realtimed listening');
        return address;
      } catch (err) {
        // Half started is not started: stop what did, so the process can exit.
        await stop().catch((again: unknown) => logger.error({ err: errorText(again) }, 'could not stop after a failed start'));
        throw err;
      }
    },
    stop,
  };
}
