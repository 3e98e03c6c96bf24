/**
 * One client socket: its identity, subscriptions and limits, and the
 * protocol's request/reply frames. Frames from one socket are handled in
 * order, one at a time, so a publish after a subscribe sees the subscription.
 */
import { randomUUID } from 'node:crypto';

import type { Logger } from 'pino';
import WebSocket from 'ws';

import type { Authenticator, Identity } from './auth.js';
import type { StartConfig } from './config.js';
import type { ChannelLimits, Db, EventFrame, StreamInfo } from './db.js';
import { ephemeralFrame, signNotification } from './ephemeral.js';
import { CloseCode, WireError, wireErrorFromPg, type WireErrorCode } from './errors.js';
import { matches, recordOf, type Filter } from './filter.js';
import type { Hub, Subscriber } from './hub.js';
import { TokenBucket, type UserConnections } from './limits.js';
import type { Metrics } from './metrics.js';
import type { Presence, PresenceWatcher } from './presence.js';
import { errorFrame, parseClientFrame, serverFrame, type ClientFrame } from './protocol.js';

export interface ConnectionDeps {
  config: StartConfig;
  db: Db;
  auth: Authenticator;
  hub: Hub;
  metrics: Metrics;
  logger: Logger;
  now: () => number;
  presence: Presence;
  users: UserConnections;
  /** The key ephemeral notifications are signed with (read at start), null until read. */
  notifyKey: () => string | null;
}

/** Longest a timer may be (setTimeout's limit); later expiries are checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How long ids sent by a replay are remembered against late notifications. */
const REPLAY_DEDUPE_MS = 30_000;
/** Frames waiting behind the one being handled before the socket is told to slow down. */
const MAX_QUEUED_FRAMES = 256;

export class Connection implements Subscriber, PresenceWatcher {
  /** Random per socket: its presence rows carry it. */
  readonly id = randomUUID();
  /** Channel name → the channel id it matched when authorized. */
  readonly channels = new Map<string, string>();
  alive = true;
  /** Who the socket acts as; null until it authenticates. */
  identity: Identity | null = null;
  /** The user counted against --max-connections-per-user. */
  private user: string | undefined;
  private readonly filters = new Map<string, Filter>();
  private readonly limits = new Map<string, ChannelLimits>();
  private readonly channelBuckets = new Map<string, TokenBucket>();
  private readonly watching = new Set<string>();
  private readonly ephemeralBucket: TokenBucket;
  /** Live events held back while a `since` subscribe sends its replay. */
  private readonly replaying = new Map<string, { id: string; frame: Buffer }[]>();
  /** Ids a replay sent: their notifications may still be on the way, and must not send them twice. */
  private readonly replayed = new Map<string, { ids: Set<string>; until: number }>();
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
    this.ephemeralBucket = new TokenBucket(deps.config.ephemeralRate, deps.now);
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
    if (frame.type === 'publish' || frame.type === 'presence') {
      const ephemeral = frame.type === 'publish' && frame.ephemeral === true;
      const wait = (ephemeral ? this.ephemeralBucket : this.bucket).take();
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
    for (const channel of this.watching) this.deps.presence.unwatch(channel, this);
    this.watching.clear();
    this.deps.presence.untrack(this.id, null).catch((err: unknown) => {
      this.deps.logger.warn({ err: (err as Error).message }, 'could not remove a closed socket\'s presence; retrying at the next heartbeat');
    });
    if (this.user !== undefined) this.deps.users.release(this.user);
    this.user = undefined;
  }

  /** The max_subscribers of a subscribed channel, if it has one. */
  maxSubscribers(channel: string): number | null {
    return this.limits.get(channel)?.maxSubscribers ?? null;
  }

  /** The filter of this socket's subscription to a channel. */
  filter(channel: string): Filter | undefined {
    return this.filters.get(channel);
  }

  /** A presence frame (presence_state, presence_diff). */
  sendText(text: string): void {
    this.send(text);
  }

  /** Forgets everything about one channel: subscription, filter, limits, presence. */
  private leave(channel: string): void {
    this.channels.delete(channel);
    this.deps.hub.remove(channel, this);
    this.filters.delete(channel);
    this.limits.delete(channel);
    this.channelBuckets.delete(channel);
    if (this.watching.delete(channel)) this.deps.presence.unwatch(channel, this);
    this.deps.presence.untrack(this.id, [channel]).catch((err: unknown) => {
      this.deps.logger.warn({ err: (err as Error).message, channel }, 'could not remove presence; retrying at the next heartbeat');
    });
  }

  /** Tells subscribers of a channel that is now closed or no longer allowed. */
  drop(channel: string, reason: 'CHANNEL_CLOSED' | 'UNAUTHORIZED'): void {
    if (!this.channels.has(channel)) return;
    this.leave(channel);
    this.send(serverFrame({ type: 'unsubscribed', channel, reason }));
  }

  /** The channel's row changed: its limits may have too. */
  setLimits(channel: string, limits: ChannelLimits): void {
    if (!this.channels.has(channel)) return;
    const before = this.limits.get(channel);
    this.limits.set(channel, limits);
    if (before?.publishRate !== limits.publishRate) this.channelBuckets.delete(channel);
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

  /** A frame handler threw: tell the client, keep the socket. */
  internalError(): void {
    this.send(errorFrame('INTERNAL_ERROR', 'the server failed to handle a frame'));
  }

  private send(text: string): void {
    if (!this.closed && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** An error frame, then close: how a browser learns why (it never sees an HTTP status). */
  private fail(code: WireErrorCode, message: string, closeCode: number, ref?: string): void {
    if (code !== 'LIMIT_EXCEEDED') this.deps.metrics.authFailures.inc({ code });
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
    const sub = identity.claims['sub'];
    const user = typeof sub === 'string' && sub !== '' ? `${identity.role}:${sub}` : undefined;
    if (user !== this.user) {
      if (user !== undefined && !this.deps.users.acquire(user)) {
        this.deps.metrics.limitRejections.inc({ limit: 'user_connections' });
        this.fail('LIMIT_EXCEEDED', `at most ${this.deps.config.maxConnectionsPerUser} connections per user`,
          CloseCode.TOO_MANY_CONNECTIONS, ref);
        return false;
      }
      if (this.user !== undefined) this.deps.users.release(this.user);
      this.user = user;
    }
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
          if (this.channels.has(frame.channel)) this.leave(frame.channel);
          this.send(serverFrame({ type: 'unsubscribed', channel: frame.channel, ref }));
          return;
        case 'subscribe':
          await this.subscribe(frame);
          return;
        case 'presence':
          await this.setPresence(frame);
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

  private async subscribe(frame: Extract<ClientFrame, { type: 'subscribe' }>): Promise<void> {
    const { channel, ref, since, epoch } = frame;
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    if (this.channels.has(channel)) {
      // Subscribed already: the new frame's filter and presence wish apply.
      if (frame.filter) this.filters.set(channel, frame.filter.conditions);
      else this.filters.delete(channel);
      const info = await this.deps.db.streamInfo();
      this.send(serverFrame({ type: 'subscribed', channel, ref, epoch: info.epoch, seq: info.maxSeq, filter: frame.filter?.text }));
      if (frame.presence && !this.watching.has(channel)) await this.watchPresence(channel);
      return;
    }
    if (this.channels.size >= this.deps.config.maxSubscriptions) {
      this.deps.metrics.limitRejections.inc({ limit: 'subscriptions' });
      throw new WireError('LIMIT_EXCEEDED', `at most ${this.deps.config.maxSubscriptions} subscriptions per connection`, { limit: 'subscriptions' });
    }
    // In the hub before the check, live events held back: the stream position
    // the check reads comes after this point, so replay and live meet with no
    // gap and no duplicate. Denied, the held events are dropped unseen.
    const held: { id: string; frame: Buffer }[] = [];
    this.replaying.set(channel, held);
    if (frame.filter) this.filters.set(channel, frame.filter.conditions);
    this.deps.hub.add(channel, this);
    try {
      const { id, stream: info, limits, otherSubscribers } = await this.checkWithStream(channel);
      if (this.closed) {
        this.deps.hub.remove(channel, this);
        return;
      }
      if (id === null) throw new WireError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
      // This instance's sockets (this one included) and the others' last reports.
      if (limits.maxSubscribers !== null && this.deps.hub.countOf(channel) + otherSubscribers > limits.maxSubscribers) {
        this.deps.metrics.limitRejections.inc({ limit: 'channel_subscribers' });
        throw new WireError('LIMIT_EXCEEDED', `this channel takes at most ${limits.maxSubscribers} subscribers`, {
          limit: 'channel_subscribers',
        });
      }
      this.channels.set(channel, id);
      this.limits.set(channel, limits);
      let replay: EventFrame[] = [];
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
          } else {
            replay = await this.visibleReplay(channel, replay);
          }
        }
      }
      if (this.closed) return;
      if (unavailable !== null) {
        this.send(errorFrame('REPLAY_UNAVAILABLE', unavailable, { ref, channel, epoch: info.epoch }));
      }
      this.send(serverFrame({ type: 'subscribed', channel, ref, epoch: info.epoch, seq: info.maxSeq, filter: frame.filter?.text }));
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
      this.filters.delete(channel);
      this.limits.delete(channel);
      this.deps.hub.remove(channel, this);
      throw err;
    } finally {
      this.replaying.delete(channel);
    }
    if (frame.presence) await this.watchPresence(channel);
  }

  /** Replayed events this socket may see: the row check for change events, then its filter. */
  private async visibleReplay(channel: string, rows: EventFrame[]): Promise<EventFrame[]> {
    const checked = rows.filter((r) => r.rowCheck);
    let allowed = new Map<string, Set<number>>();
    if (checked.length > 0 && this.identity) {
      allowed = await this.deps.db.changeAudience(checked.map((r) => r.id), [this.identity]);
    }
    const filter = this.filters.get(channel);
    return rows.filter((r) => {
      if (r.rowCheck && !allowed.get(r.id)?.has(0)) return false;
      if (!filter) return true;
      try {
        return matches(filter, recordOf((JSON.parse(r.frame) as { payload?: unknown }).payload));
      } catch {
        return false;
      }
    });
  }

  /** presence_state now; presence_diff frames follow as members change. */
  private async watchPresence(channel: string): Promise<void> {
    this.watching.add(channel);
    let members: Record<string, Record<string, unknown>>;
    try {
      members = await this.deps.presence.watch(channel, this);
    } catch (err) {
      this.watching.delete(channel);
      throw err;
    }
    if (this.closed || !this.channels.has(channel)) {
      this.deps.presence.unwatch(channel, this);
      this.watching.delete(channel);
      return;
    }
    this.send(serverFrame({ type: 'presence_state', channel, members }));
  }

  private async setPresence(frame: Extract<ClientFrame, { type: 'presence' }>): Promise<void> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    if (!this.channels.has(frame.channel)) {
      throw new WireError('NOT_SUBSCRIBED', 'subscribe to the channel before setting presence on it');
    }
    if (frame.state === null) {
      await this.deps.presence.untrack(this.id, [frame.channel]);
      this.send(serverFrame({ type: 'presence_left', channel: frame.channel, ref: frame.ref }));
      return;
    }
    let key: string;
    try {
      key = await this.deps.presence.track(this.id, this.identity, frame.channel, frame.state);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'LIMIT_EXCEEDED') this.deps.metrics.limitRejections.inc({ limit: 'presence_members' });
      throw e;
    }
    this.send(serverFrame({ type: 'presence_updated', channel: frame.channel, ref: frame.ref, key }));
  }

  /** The subscribe check and the stream position, one round trip; errors as in check(). */
  private async checkWithStream(
    channel: string,
  ): Promise<{ id: string | null; stream: StreamInfo; limits: ChannelLimits; otherSubscribers: number }> {
    if (!this.identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    try {
      return await this.deps.db.authorizeSubscribeStream(this.identity, channel, this.deps.presence.instance);
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
    const limits = this.limits.get(frame.channel);
    if (frame.ephemeral) {
      await this.publishEphemeral(frame, limits);
      return;
    }
    if (limits?.publishRate) {
      let bucket = this.channelBuckets.get(frame.channel);
      if (!bucket) this.channelBuckets.set(frame.channel, (bucket = new TokenBucket(limits.publishRate, this.deps.now)));
      const wait = bucket.take();
      if (wait > 0) {
        this.deps.metrics.limitRejections.inc({ limit: 'channel_publish_rate' });
        throw new WireError('RATE_LIMITED', `this channel takes at most ${limits.publishRate} publishes per second per connection`, {
          retryAfter: wait,
        });
      }
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

  private async publishEphemeral(frame: Extract<ClientFrame, { type: 'publish' }>, limits: ChannelLimits | undefined): Promise<void> {
    const identity = this.identity as Identity;
    const key = this.deps.notifyKey();
    if (key === null) throw new WireError('INTERNAL_ERROR', 'ephemeral messages are not available yet');
    const bytes = Buffer.byteLength(JSON.stringify(frame.payload));
    if (limits?.maxMessageBytes != null && bytes > limits.maxMessageBytes) {
      throw new WireError('PAYLOAD_TOO_LARGE', `payload is ${bytes} bytes, over this channel's limit of ${limits.maxMessageBytes} bytes`);
    }
    const text = ephemeralFrame(frame, identity, this.deps.now());
    await this.deps.db.sendEphemeral(identity, frame.channel, frame.event, signNotification(key, frame.channel, text));
    this.send(serverFrame({ type: 'published', channel: frame.channel, ref: frame.ref, ephemeral: true }));
  }
}
