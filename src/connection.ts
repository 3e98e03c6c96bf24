/**
 * One client socket: its identity, subscriptions and limits, and the
 * protocol's request/reply frames. Frames from one socket are handled in
 * order, one at a time, so a publish after a subscribe sees the subscription.
 */
import type { Logger } from 'pino';
import WebSocket from 'ws';

import type { Authenticator, Identity } from './auth.js';
import type { StartConfig } from './config.js';
import type { Db, StreamInfo } from './db.js';
import { CloseCode, WireError, wireErrorFromPg, type WireErrorCode } from './errors.js';
import type { Hub, Subscriber } from './hub.js';
import type { Metrics } from './metrics.js';
import { errorFrame, parseClientFrame, serverFrame, type ClientFrame } from './protocol.js';

export interface ConnectionDeps {
  config: StartConfig;
  db: Db;
  auth: Authenticator;
  hub: Hub;
  metrics: Metrics;
  logger: Logger;
  now: () => number;
}

/** Longest a timer may be (setTimeout's limit); later expiries are checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How long ids sent by a replay are remembered against late notifications. */
const REPLAY_DEDUPE_MS = 30_000;
/** Frames waiting behind the one being handled before the socket is told to slow down. */
const MAX_QUEUED_FRAMES = 256;

class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly now: () => number,
  ) {
    this.tokens = rate;
    this.last = now();
  }

  /** 0 when a token was taken, else the milliseconds until one is due. */
  take(): number {
    const now = this.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

export class Connection implements Subscriber {
  /** Channel name → the channel id it matched when authorized. */
  readonly channels = new Map<string, string>();
  alive = true;
  /** Live events held back while a `since` subscribe sends its replay. */
  private readonly replaying = new Map<string, { id: string; frame: Buffer }[]>();
  /** Ids a replay sent: their notifications may still be on the way, and must not send them twice. */
  private readonly replayed = new Map<string, { ids: Set<string>; until: number }>();
  private identity: Identity | null = null;
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  private closed = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  private authTimer: NodeJS.Timeout | undefined;
  private readonly bucket: TokenBucket;

  constructor(
    readonly ws: WebSocket,
    private readonly deps: ConnectionDeps,
    token: string | undefined,
  ) {
    this.bucket = new TokenBucket(deps.config.publishRate, deps.now);
    if (token !== undefined) {
      this.enqueue(async () => {
        await this.authenticate(token, undefined);
      });
    } else {
      this.identity = deps.auth.anonymous();
      if (this.identity === null) {
        this.authTimer = setTimeout(() => {
          this.fail('UNAUTHORIZED', 'no token: send an auth frame first', CloseCode.UNAUTHORIZED);
        }, deps.config.authTimeoutMs);
      }
    }
  }

  onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.closed) return;
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
    if (frame.type === 'publish') {
      const wait = this.bucket.take();
      if (wait > 0) {
        this.send(errorFrame('RATE_LIMITED', 'too many publishes', { ref: frame.ref, channel: frame.channel, retryAfter: wait }));
        return;
      }
    }
    if (this.queued >= MAX_QUEUED_FRAMES) {
      this.send(errorFrame('RATE_LIMITED', 'too many frames waiting', { ref: frame.ref, retryAfter: 100 }));
      return;
    }
    this.enqueue(() => this.handle(frame));
  }

  /** Writes one event frame; closes the socket with 4008 if it cannot keep up. */
  sendEvent(frame: Buffer, channel: string, id: string): boolean {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return false;
    const held = this.replaying.get(channel);
    if (held) {
      held.push({ id, frame });
      return true;
    }
    const replayed = this.replayed.get(channel);
    if (replayed) {
      if (replayed.until < this.deps.now()) this.replayed.delete(channel);
      else if (replayed.ids.has(id)) return true;
    }
    this.ws.send(frame, { binary: false });
    if (this.ws.bufferedAmount > this.deps.config.maxBufferedBytes) {
      this.deps.metrics.slowConsumerCloses.inc();
      this.deps.logger.info({ buffered: this.ws.bufferedAmount }, 'closing a slow consumer');
      this.dispose();
      this.ws.close(CloseCode.SLOW_CONSUMER, 'slow consumer');
      // A socket that does not read will not read the close frame either.
      setTimeout(() => this.ws.terminate(), 5000).unref();
    }
    return true;
  }

  /** Leaves every channel and stops timers; the socket is closing or closed. */
  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.expiryTimer);
    clearTimeout(this.authTimer);
    for (const channel of this.channels.keys()) this.deps.hub.remove(channel, this);
    this.channels.clear();
  }

  /** Tells subscribers of a channel that is now closed or no longer allowed. */
  drop(channel: string, reason: 'CHANNEL_CLOSED' | 'UNAUTHORIZED'): void {
    if (!this.channels.delete(channel)) return;
    this.deps.hub.remove(channel, this);
    this.send(serverFrame({ type: 'unsubscribed', channel, reason }));
  }

  /** Authorizes one channel again (its channel changed); drops it if now denied. */
  reauthorize(channel: string): void {
    this.enqueue(async () => {
      if (!this.channels.has(channel) || !this.identity) return;
      const id = await this.check(channel);
      if (id === null) this.drop(channel, 'UNAUTHORIZED');
      else this.channels.set(channel, id);
    });
  }

  private enqueue(task: () => Promise<void>): void {
    this.queued++;
    this.queue = this.queue
      .then(() => (this.closed ? undefined : task()))
      .catch((err: unknown) => {
        this.deps.logger.error({ err: (err as Error).message }, 'frame handler failed');
        this.send(errorFrame('INTERNAL_ERROR', 'the server failed to handle a frame'));
      })
      .finally(() => {
        this.queued--;
      });
  }

  private send(text: string): void {
    if (!this.closed && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** An error frame, then close: how a browser learns why (it never sees an HTTP status). */
  private fail(code: WireErrorCode, message: string, closeCode: number, ref?: string): void {
    this.deps.metrics.authFailures.inc({ code });
    this.send(errorFrame(code, message, { ref }));
    this.dispose();
    this.ws.close(closeCode, code);
  }

  private async authenticate(token: string, ref: string | undefined): Promise<boolean> {
    let identity: Identity;
    try {
      identity = await this.deps.auth.verify(token);
    } catch (err) {
      const e = err instanceof WireError ? err : new WireError('UNAUTHORIZED', 'the token is not valid');
      this.fail(e.code, e.message, e.code === 'TOKEN_EXPIRED' ? CloseCode.TOKEN_EXPIRED : CloseCode.UNAUTHORIZED, ref);
      return false;
    }
    if (this.closed) return false;
    this.identity = identity;
    clearTimeout(this.authTimer);
    clearTimeout(this.expiryTimer);
    if (identity.exp !== undefined) this.scheduleExpiry(identity.exp);
    return true;
  }

  private scheduleExpiry(exp: number): void {
    const ms = exp * 1000 - this.deps.now();
    this.expiryTimer = setTimeout(
      () => {
        if (exp * 1000 - this.deps.now() > 0) this.scheduleExpiry(exp);
        else this.fail('TOKEN_EXPIRED', 'the token has expired: send a fresh one in an auth frame', CloseCode.TOKEN_EXPIRED);
      },
      Math.max(0, Math.min(ms, MAX_TIMER_MS)),
    );
  }

  /** The matched channel id if the current identity may subscribe, else null; errors deny. */
  private async check(channel: string): Promise<string | null> {
    if (!this.identity) return null;
    try {
      return await this.deps.db.authorizeSubscribe(this.identity, channel);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'INVALID_MESSAGE') throw e;
      if (e.code === 'INTERNAL_ERROR') throw e;
      this.deps.logger.debug({ err: (err as Error).message }, 'subscribe check failed: denied');
      return null;
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
          if (this.channels.delete(frame.channel)) this.deps.hub.remove(frame.channel, this);
          this.send(serverFrame({ type: 'unsubscribed', channel: frame.channel, ref }));
          return;
        case 'subscribe':
          await this.subscribe(frame.channel, ref, frame.since, frame.epoch);
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
      this.send(errorFrame(e.code, e.message, { ref, channel, ...e.extra }));
    }
  }

  private async refresh(token: string, ref: string | undefined): Promise<void> {
    if (!(await this.authenticate(token, ref))) return;
    // Every subscription is authorized again under the new claims.
    for (const channel of [...this.channels.keys()]) {
      const id = await this.check(channel).catch(() => null);
      if (this.closed) return;
      if (id === null) this.drop(channel, 'UNAUTHORIZED');
      else this.channels.set(channel, id);
    }
    this.send(serverFrame({ type: 'authed', ref }));
  }

  private async subscribe(channel: string, ref: string | undefined, since?: number, epoch?: string): Promise<void> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    if (this.channels.has(channel)) {
      const info = await this.deps.db.streamInfo();
      this.send(serverFrame({ type: 'subscribed', channel, ref, epoch: info.epoch, seq: info.maxSeq }));
      return;
    }
    if (this.channels.size >= this.deps.config.maxSubscriptions) {
      throw new WireError('LIMIT_EXCEEDED', `at most ${this.deps.config.maxSubscriptions} subscriptions per connection`);
    }
    // In the hub before the check, live events held back: the stream position
    // the check reads comes after this point, so replay and live meet with no
    // gap and no duplicate. Denied, the held events are dropped unseen.
    const held: { id: string; frame: Buffer }[] = [];
    this.replaying.set(channel, held);
    this.deps.hub.add(channel, this);
    try {
      const { id, stream: info } = await this.checkWithStream(channel);
      if (this.closed) {
        this.deps.hub.remove(channel, this);
        return;
      }
      if (id === null) throw new WireError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
      this.channels.set(channel, id);
      let replay: { id: string; frame: string }[] = [];
      let unavailable: string | null = null;
      if (since !== undefined) {
        if (epoch !== undefined && epoch !== info.epoch) {
          unavailable = 'the message stream was reset (another epoch): resync';
        } else if (since > info.maxSeq) {
          unavailable = 'that seq is ahead of this stream: resync';
        } else if (since < info.prunedThroughSeq) {
          unavailable = 'messages after that seq were pruned: resync';
        } else {
          const max = this.deps.config.maxReplay;
          replay = await this.deps.db.replayFrames(channel, since, max + 1);
          if (replay.length > max) {
            replay = [];
            unavailable = `more than ${max} messages to replay: resync`;
          }
        }
      }
      if (this.closed) return;
      if (unavailable !== null) {
        this.send(errorFrame('REPLAY_UNAVAILABLE', unavailable, { ref, channel, epoch: info.epoch }));
      }
      this.send(serverFrame({ type: 'subscribed', channel, ref, epoch: info.epoch, seq: info.maxSeq }));
      const replayed = new Set<string>();
      for (const row of replay) {
        replayed.add(row.id);
        this.ws.send(row.frame);
      }
      for (const event of held) if (!replayed.has(event.id)) this.ws.send(event.frame, { binary: false });
      if (replayed.size > 0) {
        // Notifications of replayed messages can arrive after the seam; the relay's
        // recovery pass settles within a few periods, so this window is enough.
        this.replayed.set(channel, { ids: replayed, until: this.deps.now() + REPLAY_DEDUPE_MS });
      }
    } catch (err) {
      this.channels.delete(channel);
      this.deps.hub.remove(channel, this);
      throw err;
    } finally {
      this.replaying.delete(channel);
    }
  }

  /** The subscribe check and the stream position, one round trip; errors as in check(). */
  private async checkWithStream(channel: string): Promise<{ id: string | null; stream: StreamInfo }> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    try {
      return await this.deps.db.authorizeSubscribeStream(this.identity, channel);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'INVALID_MESSAGE' || e.code === 'INTERNAL_ERROR') throw e;
      this.deps.logger.debug({ err: (err as Error).message }, 'subscribe check failed: denied');
      throw new WireError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
    }
  }

  private async publish(frame: Extract<ClientFrame, { type: 'publish' }>): Promise<void> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    if (!this.channels.has(frame.channel)) {
      throw new WireError('NOT_SUBSCRIBED', 'subscribe to the channel before publishing to it');
    }
    const sent = await this.deps.db.send(this.identity, {
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
