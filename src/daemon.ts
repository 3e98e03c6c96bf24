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
import { verifyNotification } from './ephemeral.js';
import { deliver, Hub } from './hub.js';
import { UserConnections } from './limits.js';
import { createListener, type Listener } from './listener.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createPresence, type Presence } from './presence.js';
import { createRelay, type Relay } from './relay.js';
import { createServer, type Server } from './server.js';
import { createStats, type Stats } from './stats.js';
import { createWebhooks, type Webhooks } from './webhooks.js';

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
  const stats = createStats({ pool, logger }, config.statsIntervalMs);
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
  const users = new UserConnections(config.maxConnectionsPerUser);
  let notifyKey: string | null = null;
  const loadNotifyKey = async (): Promise<void> => {
    try {
      notifyKey = await db.notifyKey();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not read realtime.notify_key: ephemeral messages wait for the database');
    }
  };
  let ephemeralSeq = 0;
  const onEphemeral = (payload: string | undefined): void => {
    const verified = notifyKey !== null && payload !== undefined ? verifyNotification(notifyKey, payload) : null;
    if (!verified) {
      metrics.notificationsDropped.inc({ reason: 'forged' });
      return;
    }
    const subscribers = hub.subscribers(verified.channel);
    if (!subscribers) return;
    const written = deliver(subscribers, { frame: Buffer.from(verified.frame), channel: verified.channel, id: `e${++ephemeralSeq}` });
    if (written > 0) {
      metrics.ephemeralRelayed.inc();
      metrics.framesSent.inc(written);
    }
  };

  const relay = createRelay({ db, hub, metrics, logger, stats }, { recoveryIntervalMs: config.recoveryIntervalMs });
  const webhooks = config.webhooks
    ? createWebhooks(
        { pool, logger, metrics, now },
        {
          secret: config.webhookSecret,
          timeoutMs: config.webhookTimeoutMs,
          perUrl: config.webhookConcurrency,
          maxInFlight: config.webhookMaxInFlight,
          sweepMs: config.webhookSweepMs,
          userAgent: 'realtimed',
        },
      )
    : null;

  // max_subscribers across instances: report this instance's counts of the
  // channels that have one, when they change (and every 10 s regardless, so a
  // report lost to an outage is put right).
  let countsTimer: NodeJS.Timeout | undefined;
  let lastCounts = '';
  let lastCountsAt = 0;
  const reportCounts = async (): Promise<void> => {
    const counts = new Map<string, number>();
    for (const name of hub.channelNames()) {
      const subscribers = hub.subscribers(name);
      if (!subscribers) continue;
      let limited = false;
      for (const c of subscribers) {
        if (c.maxSubscribers(name) !== null) {
          limited = true;
          break;
        }
      }
      if (limited) counts.set(name, subscribers.size);
    }
    const text = JSON.stringify([...counts]);
    if (text === lastCounts && Date.now() - lastCountsAt < 10_000) return;
    await db.reportSubscribers(presence.instance, counts);
    lastCounts = text;
    lastCountsAt = Date.now();
  };

  // Retention, when asked for: realtime.prune() until it has no full batch left.
  let pruneTimer: NodeJS.Timeout | undefined;
  const prune = async (): Promise<void> => {
    const maxRows = 100_000;
    let deleted = 0;
    for (;;) {
      const { rows } = await pool.query<{ n: string }>('select realtime.prune(null, $1) as n', [maxRows]);
      const n = Number(rows[0]?.n ?? 0);
      deleted += n;
      if (n < maxRows) break;
    }
    if (deleted > 0) logger.info({ deleted }, 'pruned old messages');
  };

  // A channel was added, changed or deleted: re-match what this instance serves.
  let rematchTimer: NodeJS.Timeout | undefined;
  const rematch = async (): Promise<void> => {
    const names = hub.channelNames();
    if (names.length === 0) return;
    const matches = await db.matchChannels(names);
    for (const name of names) {
      const match = matches.get(name);
      const id = match?.id ?? null;
      for (const connection of [...(hub.subscribers(name) ?? [])]) {
        if (id === null) connection.drop(name, 'CHANNEL_CLOSED');
        else if (connection.channels.get(name) !== id) connection.reauthorize(name);
        if (id !== null && match) connection.setLimits(name, match.limits);
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
    {
      onMessage: (envelope) => relay.enqueue(envelope),
      onChannelsChanged: scheduleRematch,
      onWebhooksDue: () => webhooks?.wake(),
      onPresence: (payload) => presence.hint(payload),
      onEphemeral,
      onDisconnected: () => relay.pause(),
      onConnected: () => {
        relay.resync();
        scheduleRematch();
        webhooks?.wake();
        presence.resync();
        if (notifyKey === null) void loadNotifyKey();
      },
    },
  );
  server = createServer({
    config, db, auth, hub, metrics, logger, now, listener, presence, users,
    notifyKey: () => notifyKey,
    subscriptions: () => hub.size,
  });
  const srv = server;

  return {
    metrics,
    server: srv,
    relay,
    listener,
    stats,
    webhooks,
    presence,
    async start() {
      await loadNotifyKey();
      await presence.start();
      await relay.start();
      await listener.start();
      stats.start();
      countsTimer = setInterval(() => {
        reportCounts().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'could not report subscriber counts'));
      }, config.statsIntervalMs);
      countsTimer.unref();
      webhooks?.start();
      if (config.pruneIntervalMs > 0) {
        pruneTimer = setInterval(() => {
          prune().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'prune failed'));
        }, config.pruneIntervalMs);
        pruneTimer.unref();
      }
      const address = await srv.listen();
      logger.info({ host: address.address, port: address.port, path: config.path }, 'realtimed listening');
      return address;
    },
    async stop() {
      clearTimeout(rematchTimer);
      clearInterval(pruneTimer);
      clearInterval(countsTimer);
      await srv.close();
      await presence.stop();
      await listener.stop();
      await relay.stop();
      await webhooks?.stop();
      await stats.stop();
      logger.info('realtimed stopped');
    },
  };
}
