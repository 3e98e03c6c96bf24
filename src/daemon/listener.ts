/**
 * The one LISTEN connection (pg-listen), retrying forever. It only hands on
 * hints: any role can NOTIFY these channels, so nothing here is relayed as
 * it stands (see relay.ts).
 */
// pg-listen is CommonJS with an `exports.default`; Node hands ESM the whole exports object.
import pgListen, { type Subscriber } from 'pg-listen';
import type { Logger } from 'pino';

import { guard } from './boundary.js';
import {
  ALL_CHANNELS, CHANNELS_CHANNEL, EPHEMERAL_CHANNEL, KEYS_CHANNEL, MESSAGES_CHANNEL, parseEnvelope, PRESENCE_CHANNEL, WEBHOOKS_CHANNEL,
  type Envelope,
} from './envelope.js';
import type { Metrics } from './metrics.js';

export interface ListenerHandlers {
  onMessage(envelope: Envelope): void;
  onChannelsChanged(): void;
  /** New webhook deliveries were committed. */
  onWebhooksDue?(): void;
  /** A channel's presence changed (the payload names it; a hint). */
  onPresence?(payload: string | undefined): void;
  /** An ephemeral message (signed; verified by the handler). */
  onEphemeral?(payload: string | undefined): void;
  /** realtime.notify_key was rotated (a hint: re-read it). */
  onKeysChanged?(): void;
  /** Called after every (re)connection, once LISTEN is in place. */
  onConnected?(): void;
  /** The LISTEN connection was lost (reconnecting now). */
  onDisconnected?(): void;
}

export interface Listener {
  start(): Promise<void>;
  stop(): Promise<void>;
  isUp(): boolean;
}

export function createListener(
  deps: { url: string; logger: Logger; metrics: Metrics },
  handlers: ListenerHandlers,
): Listener {
  const { logger, metrics } = deps;
  let subscriber: Subscriber | null = null;
  let up = false;
  let stopped = false;
  let startTimer: NodeJS.Timeout | undefined;
  let markFirstUp = (): void => {};
  const firstUp = new Promise<void>((resolve) => (markFirstUp = resolve));

  const connect = async (): Promise<void> => {
    const s = pgListen.default(
      { connectionString: deps.url, application_name: 'realtimed-listen' },
      {
        // pg-listen gives up after 3 s by default; a relay must not.
        retryTimeout: Infinity,
        retryInterval: (attempt: number) => Math.min(500 * 2 ** attempt, 5000),
        paranoidChecking: 10_000,
        parse: (text: string) => text,
      },
    );
    s.events.on('notification', guard(logger, 'notification', (n: { channel: string; payload?: unknown }) => {
      const receivedAt = process.hrtime.bigint();
      if (n.channel === MESSAGES_CHANNEL) {
        const envelope = parseEnvelope(typeof n.payload === 'string' ? n.payload : undefined, receivedAt);
        if (envelope) handlers.onMessage(envelope);
        else metrics.notificationsDropped.inc({ reason: 'malformed' });
      } else if (n.channel === CHANNELS_CHANNEL) {
        handlers.onChannelsChanged();
      } else if (n.channel === WEBHOOKS_CHANNEL) {
        handlers.onWebhooksDue?.();
      } else if (n.channel === PRESENCE_CHANNEL) {
        handlers.onPresence?.(typeof n.payload === 'string' ? n.payload : undefined);
      } else if (n.channel === EPHEMERAL_CHANNEL) {
        handlers.onEphemeral?.(typeof n.payload === 'string' ? n.payload : undefined);
      } else if (n.channel === KEYS_CHANNEL) {
        handlers.onKeysChanged?.();
      }
    }));
    s.events.on('reconnect', (attempt) => {
      if (attempt === 1) {
        up = false;
        metrics.listenReconnects.inc();
        logger.warn('LISTEN connection lost; reconnecting');
        handlers.onDisconnected?.();
      }
    });
    s.events.on('connected', () => {
      // pg-listen emits this after re-LISTENing on a reconnection; the first
      // connection is marked up below, once our LISTENs are in place.
      if (subscriber === s && !up && !stopped) {
        up = true;
        logger.info('LISTEN connection restored');
        handlers.onConnected?.();
      }
    });
    s.events.on('error', (err) => {
      logger.error({ err: err.message }, 'LISTEN connection error');
      // Between a lost connection and 'connected', an error is pg-listen's
      // re-LISTEN failing (on a server still in recovery, say): it then
      // keeps the new connection without LISTEN, and its paranoid check
      // passes, so nothing would ever be notified again. Start over instead,
      // with a new connection retried until its LISTENs are in place.
      if (subscriber === s && !up && !stopped) {
        subscriber = null;
        void s.close().catch(() => {});
        logger.warn('LISTEN could not be re-established on the new connection; connecting again');
        void run();
      }
    });
    try {
      await s.connect();
      for (const channel of ALL_CHANNELS) await s.listenTo(channel);
    } catch (err) {
      await s.close().catch(() => {});
      throw err;
    }
    if (stopped) {
      await s.close().catch(() => {});
      return;
    }
    subscriber = s;
    up = true;
    markFirstUp();
    logger.info({ channels: ALL_CHANNELS }, 'LISTEN connection up');
    handlers.onConnected?.();
  };

  // The first connection is retried here: pg-listen only retries after one succeeded.
  const run = async (): Promise<void> => {
    let attempt = 0;
    while (!stopped) {
      try {
        await connect();
        return;
      } catch (err) {
        attempt++;
        logger.warn({ err: (err as Error).message, attempt }, 'LISTEN connection failed; retrying');
        await new Promise<void>((resolve) => {
          startTimer = setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000));
        });
      }
    }
  };

  return {
    async start() {
      // Waits a moment for the first connection, but never fails: the daemon
      // serves /health (503) and keeps retrying while PostgreSQL is away.
      void run();
      await Promise.race([firstUp, new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
    },
    async stop() {
      stopped = true;
      up = false;
      clearTimeout(startTimer);
      await subscriber?.close().catch(() => {});
      subscriber = null;
    },
    isUp: () => up,
  };
}
