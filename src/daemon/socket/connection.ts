/**
 * One client socket: frames in, in order and one at a time (so a publish
 * after a subscribe sees the subscription); replies and events out, with the
 * slow-consumer cap; its session (who it acts as) and its subscriptions (one
 * Subscription per channel). dispose() ends all of them.
 */
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';

import type { Logger } from 'pino';
import WebSocket from 'ws';

import type { Db } from '../../db/index.js';
import type { Identity } from '../../db/identity.js';
import { wireErrorFromPg } from '../../db/errors.js';
import type { StartConfig } from '../../cli/options.js';
import { CloseCode, WIRE_ERRORS, WireError, type WireErrorCode } from '../../protocol/errors.js';
import { errorFrame, parseClientFrame, serverFrame, type ClientFrame } from '../../protocol/frames.js';
import type { Authenticator } from '../auth.js';
import { errorText } from '../boundary.js';
import type { Ephemeral } from '../ephemeral.js';
import type { Hub } from '../hub.js';
import type { Keys } from '../keys.js';
import { TokenBucket, type UserConnections } from '../limits.js';
import type { Metrics } from '../metrics.js';
import type { Presence } from '../presence.js';
import { corkForTick } from './cork.js';
import { Session } from './session.js';
import { Subscription, type SubscribeFrame, type SubscriptionOwner } from './subscription.js';

export interface ConnectionDeps {
  config: StartConfig;
  db: Db;
  auth: Authenticator;
  hub: Hub;
  metrics: Metrics;
  logger: Logger;
  now: () => number;
  presence: Presence;
  ephemeral: Ephemeral;
  /** The keys replay cursors are signed with. */
  keys: Keys;
  users: UserConnections;
}

/** Event bytes corked in one tick before they are written out (one write of about this much; at most half of --max-buffered-bytes). */
const CORK_BYTES = 64 * 1024;

/** Frames waiting behind the one being handled before the socket is told to slow down. */
const MAX_QUEUED_FRAMES = 256;

type Frame<T extends ClientFrame['type']> = Extract<ClientFrame, { type: T }>;

export class Connection implements SubscriptionOwner {
  /** Random per socket: its presence rows carry it. */
  readonly id = randomUUID();
  /** Channel name → this socket's subscription to it. */
  readonly subscriptions = new Map<string, Subscription>();
  /** Answered the last ping (server.ts drops a socket that did not). */
  alive = true;
  closed = false;
  private readonly session: Session;
  private readonly publishBucket: TokenBucket;
  private readonly ephemeralBucket: TokenBucket;
  private queue: Promise<void> = Promise.resolve();
  /** Event bytes written since this tick corked the socket (cork.ts). */
  private corkedBytes = 0;
  private readonly uncorked = (): void => {
    this.corkedBytes = 0;
    try {
      this.checkBuffered(0);
    } catch (err) {
      this.deps.logger.error({ err: errorText(err) }, 'closing a slow consumer failed');
    }
  };
  private queued = 0;
  /** Running only while the socket has no subscription and --idle-timeout is set. */
  private idleTimer: NodeJS.Timeout | undefined;
  /** Since when (deps.now) the socket has had no subscription. */
  private idleSince: number | undefined;
  /** Subscribes being checked now. */
  private opening = 0;
  /** When the socket was accepted, and when its last frame arrived (GET /api/connections). */
  readonly connectedAt: number;
  lastFrameAt: number;

  constructor(
    readonly ws: WebSocket,
    private readonly deps: ConnectionDeps,
    token: string | undefined,
    /** The upgraded TCP socket under `ws`, corked per tick for event frames (cork.ts); absent in tests that make their own. */
    private readonly socket?: Duplex,
  ) {
    this.connectedAt = deps.now();
    this.lastFrameAt = this.connectedAt;
    this.publishBucket = new TokenBucket(deps.config.publishRate, deps.now);
    this.ephemeralBucket = new TokenBucket(deps.config.ephemeralRate, deps.now);
    this.session = new Session(deps, () =>
      this.fail('TOKEN_EXPIRED', 'the token has expired: send a fresh one in an auth frame'),
    );
    if (token !== undefined) {
      this.enqueue(async () => {
        await this.authenticate(token, undefined);
      });
    } else {
      this.session.startWithoutToken(() => this.fail('UNAUTHORIZED', 'no token: send an auth frame first'));
    }
    this.idleCheck();
  }

  get identity(): Identity | null {
    return this.session.identity;
  }

  onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.closed) return;
    this.lastFrameAt = this.deps.now();
    if (isBinary) {
      this.send(errorFrame('INVALID_MESSAGE', 'frames must be JSON text'));
      return;
    }
    let frame: ClientFrame;
    try {
      frame = parseClientFrame(data.toString());
    } catch (err) {
      const e = err as WireError;
      this.send(errorFrame(e.code, e.message, e.extra));
      return;
    }
    if (frame.type === 'ping') {
      this.send(serverFrame({ type: 'pong', ref: frame.ref }));
      return;
    }
    const disabled = this.disabledFeature(frame);
    if (disabled !== null) {
      this.send(errorFrame('FEATURE_DISABLED', `${disabled.replace('_', ' ')} is switched off on this server`, {
        ref: frame.ref, channel: 'channel' in frame ? frame.channel : undefined, feature: disabled,
      }));
      return;
    }
    if (frame.type === 'publish' || frame.type === 'presence') {
      const ephemeral = frame.type === 'publish' && frame.ephemeral === true;
      const wait = (ephemeral ? this.ephemeralBucket : this.publishBucket).take();
      if (wait > 0) {
        this.deps.metrics.limitRejections.inc({ limit: ephemeral ? 'ephemeral_rate' : 'publish_rate' });
        this.send(errorFrame('RATE_LIMITED', ephemeral ? 'too many ephemeral messages' : 'too many publishes', {
          ref: frame.ref, channel: frame.channel, retryAfter: wait,
        }));
        return;
      }
    }
    if (this.queued >= MAX_QUEUED_FRAMES) {
      this.send(errorFrame('RATE_LIMITED', 'too many frames waiting', { ref: frame.ref, retryAfter: 100 }));
      return;
    }
    this.enqueue(() => this.handle(frame));
  }

  /** The switched-off feature (--no-presence, --no-ephemeral, --no-client-publish) a frame needs, if any. */
  private disabledFeature(frame: ClientFrame): 'presence' | 'ephemeral' | 'client_publish' | null {
    const { config } = this.deps;
    if (frame.type === 'presence' && !config.allowPresence) return 'presence';
    if (frame.type === 'publish' && frame.ephemeral === true && !config.allowEphemeral) return 'ephemeral';
    if (frame.type === 'publish' && frame.ephemeral !== true && !config.allowClientPublish) return 'client_publish';
    return null;
  }

  /**
   * Starts the --idle-timeout timer when the socket has no subscription, and
   * stops it when it has one: one timer per idle socket, none per tick. The
   * idle time counts from when the socket last had none: a subscribe that is
   * refused (or still being checked) does not start it again.
   */
  private idleCheck(): void {
    const ms = this.deps.config.idleTimeoutMs;
    if (ms <= 0 || this.closed) return;
    if (this.subscriptions.size > 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
      this.idleSince = undefined;
      return;
    }
    this.idleSince ??= this.deps.now();
    if (this.idleTimer !== undefined) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      // A subscribe being checked: its outcome calls idleCheck again.
      if (this.closed || this.subscriptions.size > 0 || this.opening > 0) return;
      if (this.deps.now() < (this.idleSince ?? 0) + ms) {
        this.idleCheck();
        return;
      }
      this.deps.metrics.idleCloses.inc();
      this.dispose();
      this.ws.close(CloseCode.IDLE_TIMEOUT, 'idle timeout');
      setTimeout(() => this.ws.terminate(), 5000).unref();
    }, Math.max(0, (this.idleSince ?? 0) + ms - this.deps.now()));
    this.idleTimer.unref();
  }

  /** Writes one event frame; closes the socket with 4008 if it cannot keep up. */
  write(frame: Buffer): boolean {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return false;
    if (this.socket) {
      const most = Math.min(CORK_BYTES, this.deps.config.maxBufferedBytes / 2);
      if (this.corkedBytes > 0 && this.corkedBytes + frame.length > most) {
        // Enough for one write: out now, the rest of the tick corked again.
        this.socket.uncork();
        this.corkedBytes = 0;
        this.socket.cork();
      }
      if (corkForTick(this.socket, this.uncorked)) this.corkedBytes += frame.length;
    }
    this.ws.send(frame, { binary: false });
    this.checkBuffered(0);
    return true;
  }

  /** A reply, presence or error frame: counted toward the same cap as events. */
  send(text: string): void {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(text);
    this.checkBuffered(0);
  }

  /**
   * Resolves true once at most half of --max-buffered-bytes is waiting to be
   * read (at once, usually), false if the socket closed or did not drain
   * within one --ping-interval (then it is closed with 4008).
   */
  async drained(): Promise<boolean> {
    const limit = this.deps.config.maxBufferedBytes / 2;
    const deadline = this.deps.now() + this.deps.config.pingIntervalMs;
    while (!this.closed && this.ws.bufferedAmount > limit) {
      if (this.deps.now() > deadline) {
        this.closeSlow(0);
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return !this.closed;
  }

  /**
   * The socket did not answer the last ping. With bytes it has not read,
   * the ping may wait behind them: it is a slow consumer (4008). With none,
   * the peer is gone: the socket is dropped without a close frame.
   */
  missedPing(): void {
    if (!this.closed && this.ws.bufferedAmount > 0) {
      this.closeSlow(0);
      return;
    }
    this.dispose();
    this.ws.terminate();
  }

  /**
   * Closes the socket with 4008 when what it has not read, and `pending`
   * bytes about to be written, pass --max-buffered-bytes. Returns whether it did.
   */
  checkBuffered(pending: number): boolean {
    if (this.closed) return true;
    // Corked bytes were never offered to the peer: not what it left unread.
    if (this.ws.bufferedAmount - this.corkedBytes + pending <= this.deps.config.maxBufferedBytes) return false;
    this.closeSlow(pending);
    return true;
  }

  private closeSlow(pending: number): void {
    this.deps.metrics.slowConsumerCloses.inc();
    this.deps.logger.info({ buffered: this.ws.bufferedAmount, pending }, 'closing a slow consumer');
    this.dispose();
    this.ws.close(CloseCode.SLOW_CONSUMER, 'slow consumer');
    // A socket that does not read will not read the close frame either.
    setTimeout(() => this.ws.terminate(), 5000).unref();
  }

  /** A frame handler threw: tell the client, keep the socket. */
  internalError(): void {
    this.send(errorFrame('INTERNAL_ERROR', 'the server failed to handle a frame'));
  }

  /** Ends every subscription and the session; the socket is closing or closed. */
  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.session.end();
    for (const subscription of this.subscriptions.values()) subscription.close();
    this.subscriptions.clear();
    this.deps.presence.untrack(this.id, null).catch((err: unknown) => {
      this.deps.logger.warn({ err: errorText(err) }, 'could not remove a closed socket\'s presence; retrying at the next heartbeat');
    });
  }

  /** Tells the socket a subscription ended: its channel closed, or it is no longer allowed. */
  drop(channel: string, reason: 'CHANNEL_CLOSED' | 'UNAUTHORIZED'): void {
    const subscription = this.subscriptions.get(channel);
    if (!subscription || subscription.channelId === null) return;
    this.subscriptions.delete(channel);
    subscription.leave();
    this.send(serverFrame({ type: 'unsubscribed', channel, reason }));
    this.idleCheck();
  }

  /** Authorizes one channel again (its channel changed); drops it if now denied. */
  reauthorize(channel: string): void {
    this.enqueue(async () => {
      const subscription = this.subscriptions.get(channel);
      if (!subscription || subscription.channelId === null) return;
      const id = await subscription.reauthorize();
      if (id === null) this.drop(channel, 'UNAUTHORIZED');
      else subscription.channelId = id;
    });
  }

  private enqueue(task: () => Promise<void>): void {
    this.queued++;
    this.queue = this.queue
      .then(() => (this.closed ? undefined : task()))
      .catch((err: unknown) => {
        this.deps.logger.error({ err: errorText(err) }, 'frame handler failed');
        this.internalError();
      })
      .finally(() => {
        this.queued--;
      });
  }

  /** An error frame, then close: how a browser learns why (it never sees an HTTP status). */
  private fail(code: 'UNAUTHORIZED' | 'TOKEN_EXPIRED' | 'LIMIT_EXCEEDED', message: string, ref?: string): void {
    if (code !== 'LIMIT_EXCEEDED') this.deps.metrics.authFailures.inc({ code });
    this.send(errorFrame(code, message, { ref }));
    this.dispose();
    this.ws.close(WIRE_ERRORS[code].close, code);
  }

  /** Verifies a token; on failure the socket is told why and closed. */
  private async authenticate(token: string, ref: string | undefined): Promise<boolean> {
    try {
      return await this.session.authenticate(token);
    } catch (err) {
      const e = err instanceof WireError ? err : new WireError('UNAUTHORIZED', 'the token is not valid');
      const code = e.code === 'TOKEN_EXPIRED' || e.code === 'LIMIT_EXCEEDED' ? e.code : 'UNAUTHORIZED';
      this.fail(code, e.message, ref);
      return false;
    }
  }

  private async handle(frame: ClientFrame): Promise<void> {
    const { ref } = frame;
    try {
      switch (frame.type) {
        case 'auth':
          await this.refresh(frame.token, ref);
          return;
        case 'unsubscribe':
          this.unsubscribe(frame);
          return;
        case 'subscribe':
          await this.subscribe(frame);
          return;
        case 'presence':
          await this.subscribed(frame.channel, 'setting presence on it').setPresence(frame.state, ref);
          return;
        case 'publish':
          await this.publish(frame);
          return;
        case 'ping':
          return;
      }
    } catch (err) {
      const e = err instanceof WireError ? err : wireErrorFromPg(err);
      const channel = 'channel' in frame ? frame.channel : undefined;
      if (e.code === 'PAYLOAD_TOO_LARGE') this.deps.metrics.limitRejections.inc({ limit: 'message_bytes' });
      this.send(errorFrame(e.code, e.message, { ref, channel, ...e.extra }));
    }
  }

  /** A fresh token: every subscription is authorized again under its claims. */
  private async refresh(token: string, ref: string | undefined): Promise<void> {
    if (!(await this.authenticate(token, ref))) return;
    for (const [channel, subscription] of [...this.subscriptions]) {
      if (subscription.channelId === null) continue;
      const id = await subscription.reauthorize().catch(() => null);
      if (this.closed) return;
      if (id === null) this.drop(channel, 'UNAUTHORIZED');
      else subscription.channelId = id;
    }
    this.send(serverFrame({ type: 'authed', ref }));
  }

  private async subscribe(frame: SubscribeFrame): Promise<void> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    const existing = this.subscriptions.get(frame.channel);
    if (existing) {
      await existing.update(frame);
      return;
    }
    const max = this.deps.config.maxSubscriptions;
    if (this.subscriptions.size >= max) {
      this.deps.metrics.limitRejections.inc({ limit: 'subscriptions' });
      throw new WireError('LIMIT_EXCEEDED', `at most ${max} subscriptions per connection`, { limit: 'subscriptions' });
    }
    const subscription = new Subscription(this, frame.channel, this.deps);
    this.subscriptions.set(frame.channel, subscription);
    this.opening++;
    try {
      await subscription.open(frame);
    } catch (err) {
      if (this.subscriptions.get(frame.channel) === subscription) this.subscriptions.delete(frame.channel);
      throw err;
    } finally {
      this.opening--;
      this.idleCheck();
    }
  }

  private unsubscribe(frame: Frame<'unsubscribe'>): void {
    const subscription = this.subscriptions.get(frame.channel);
    if (subscription) {
      this.subscriptions.delete(frame.channel);
      subscription.leave();
    }
    this.send(serverFrame({ type: 'unsubscribed', channel: frame.channel, ref: frame.ref }));
    this.idleCheck();
  }

  /** The subscription a publish or presence frame needs. */
  private subscribed(channel: string, doing: string): Subscription {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    const subscription = this.subscriptions.get(channel);
    if (!subscription || subscription.channelId === null) {
      throw new WireError('NOT_SUBSCRIBED', `subscribe to the channel before ${doing}`);
    }
    return subscription;
  }

  private async publish(frame: Frame<'publish'>): Promise<void> {
    const subscription = this.subscribed(frame.channel, 'publishing to it');
    const identity = this.identity as Identity;
    if (frame.ephemeral) {
      await this.deps.ephemeral.publish(identity, frame, subscription.limits);
      this.send(serverFrame({ type: 'published', channel: frame.channel, ref: frame.ref, ephemeral: true }));
      return;
    }
    const wait = subscription.takePublish();
    if (wait > 0) {
      this.deps.metrics.limitRejections.inc({ limit: 'channel_publish_rate' });
      throw new WireError('RATE_LIMITED', `this channel takes at most ${subscription.limits?.publishRate} publishes per second per connection`, {
        retryAfter: wait,
      });
    }
    const sent = await this.deps.db.send(identity, {
      channel: frame.channel,
      event: frame.event,
      payload: frame.payload,
      ...(frame.dedupeKey === undefined ? {} : { dedupeKey: frame.dedupeKey }),
    });
    this.send(
      serverFrame({
        type: 'published',
        channel: frame.channel,
        ref: frame.ref,
        messageId: sent.id,
        seq: sent.seq,
        ...(sent.duplicate ? { duplicate: true } : {}),
      }),
    );
  }
}
