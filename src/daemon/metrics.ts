import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The Prometheus metrics of one daemon (GET /metrics). */
export interface Metrics {
  registry: Registry;
  connections: Gauge;
  subscriptions: Gauge;
  messagesRelayed: Counter;
  messagesRecovered: Counter;
  framesSent: Counter;
  fanoutSeconds: Histogram;
  slowConsumerCloses: Counter;
  idleCloses: Counter;
  publishBatchItems: Histogram;
  subscribeBatchItems: Histogram;
  listenReconnects: Counter;
  replicatedRows: Counter;
  replicationReconnects: Counter;
  deliveryMode: Gauge<'mode'>;
  authFailures: Counter<'code'>;
  notificationsDropped: Counter<'reason'>;
  webhookAttempts: Counter<'result'>;
  webhookSeconds: Histogram;
  rowChecks: Counter;
  rowCheckFailures: Counter;
  rowCheckSeconds: Histogram;
  limitRejections: Counter<'limit'>;
  ephemeralRelayed: Counter;
  presenceDiffs: Counter;
  presenceRestored: Counter;
  presenceUnavailable: Gauge;
  httpRequests: Counter<'route' | 'status'>;
}

export function createMetrics(sources: { connections: () => number; subscriptions: () => number }): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'realtimed_' });
  return {
    registry,
    connections: new Gauge({
      name: 'realtimed_connections',
      help: 'Open WebSocket connections.',
      registers: [registry],
      collect() {
        this.set(sources.connections());
      },
    }),
    subscriptions: new Gauge({
      name: 'realtimed_subscriptions',
      help: 'Channel subscriptions over all connections.',
      registers: [registry],
      collect() {
        this.set(sources.subscriptions());
      },
    }),
    messagesRelayed: new Counter({
      name: 'realtimed_messages_relayed_total',
      help: 'Committed messages written to at least one socket.',
      registers: [registry],
    }),
    messagesRecovered: new Counter({
      name: 'realtimed_messages_recovered_total',
      help: 'Committed messages relayed without their notification (found by a recovery pass after a lost LISTEN connection or read).',
      registers: [registry],
    }),
    framesSent: new Counter({
      name: 'realtimed_frames_sent_total',
      help: 'Event frames written to sockets.',
      registers: [registry],
    }),
    fanoutSeconds: new Histogram({
      name: 'realtimed_fanout_seconds',
      help: 'From the notification arriving to the frame written to every subscriber.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    publishBatchItems: new Histogram({
      name: 'realtimed_publish_batch_items',
      help: 'Client publishes committed together (realtime.send_batch; 1 = alone).',
      buckets: [1, 2, 4, 8, 16, 32],
      registers: [registry],
    }),
    subscribeBatchItems: new Histogram({
      name: 'realtimed_subscribe_batch_items',
      help: 'Subscribe checks asked together (realtime.authorize_subscriptions; 1 = alone).',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 250],
      registers: [registry],
    }),
    slowConsumerCloses: new Counter({
      name: 'realtimed_slow_consumer_closes_total',
      help: 'Sockets closed with 4008 because they did not read fast enough.',
      registers: [registry],
    }),
    idleCloses: new Counter({
      name: 'realtimed_idle_closes_total',
      help: 'Sockets closed with 4010 after --idle-timeout without a subscription.',
      registers: [registry],
    }),
    listenReconnects: new Counter({
      name: 'realtimed_listen_reconnects_total',
      help: 'Times the LISTEN connection was lost and re-established.',
      registers: [registry],
    }),
    replicatedRows: new Counter({
      name: 'realtimed_replicated_rows_total',
      help: 'Rows of realtime.messages received by logical replication (delivery wal).',
      registers: [registry],
    }),
    replicationReconnects: new Counter({
      name: 'realtimed_replication_reconnects_total',
      help: 'Times the replication connection (delivery wal) was lost and re-established.',
      registers: [registry],
    }),
    deliveryMode: new Gauge({
      name: 'realtimed_delivery_mode',
      help: 'The source of committed messages this daemon uses (1 for the one in use): notify, wal or poll.',
      labelNames: ['mode'],
      registers: [registry],
    }),
    authFailures: new Counter({
      name: 'realtimed_auth_failures_total',
      help: 'Refused tokens, by error code.',
      labelNames: ['code'],
      registers: [registry],
    }),
    notificationsDropped: new Counter({
      name: 'realtimed_notifications_dropped_total',
      help: 'Notifications not relayed: malformed, unknown (no such message), mismatched (the row says otherwise) or repeated.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    webhookAttempts: new Counter({
      name: 'realtimed_webhook_attempts_total',
      help: 'Webhook POSTs by result: 2xx, 3xx, 4xx, 5xx, or error (network, timeout).',
      labelNames: ['result'],
      registers: [registry],
    }),
    webhookSeconds: new Histogram({
      name: 'realtimed_webhook_seconds',
      help: 'Duration of webhook POSTs.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    rowChecks: new Counter({
      name: 'realtimed_row_checks_total',
      help: 'Change events times subscriber identities asked about in realtime.change_audience (the row check).',
      registers: [registry],
    }),
    rowCheckFailures: new Counter({
      name: 'realtimed_row_check_failures_total',
      help: 'Change events withheld from every subscriber because their row check failed (fails closed).',
      registers: [registry],
    }),
    rowCheckSeconds: new Histogram({
      name: 'realtimed_row_check_seconds',
      help: 'Duration of one batched row check (realtime.change_audience).',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    limitRejections: new Counter({
      name: 'realtimed_limit_rejections_total',
      help: 'Requests refused by a limit: connections, user_connections, connect_rate, subscriptions, channel_subscribers, channel_publish_rate, publish_rate, ephemeral_rate, message_bytes (a payload or presence state over its cap), presence_members.',
      labelNames: ['limit'],
      registers: [registry],
    }),
    ephemeralRelayed: new Counter({
      name: 'realtimed_ephemeral_relayed_total',
      help: 'Ephemeral messages (verified notifications) written to at least one socket here.',
      registers: [registry],
    }),
    presenceDiffs: new Counter({
      name: 'realtimed_presence_diffs_total',
      help: 'presence_diff frames sent.',
      registers: [registry],
    }),
    presenceRestored: new Counter({
      name: 'realtimed_presence_restored_total',
      help: 'Presence rows this instance wrote back after the database lost them (a crash or failover empties the unlogged realtime.presence) or removed this instance for missed heartbeats.',
      registers: [registry],
    }),
    presenceUnavailable: new Gauge({
      name: 'realtimed_presence_unavailable',
      help: '1 while the database is a hot standby (in recovery): presence is refused with PRESENCE_UNAVAILABLE.',
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'realtimed_http_api_requests_total',
      help: 'HTTP API requests by route and status.',
      labelNames: ['route', 'status'],
      registers: [registry],
    }),
  };
}
