/**
 * One socket's subscription to one channel: the channel it matched, its
 * filter and limits, the channel's publish rate for this socket, its replay
 * seam, its presence, and its clean-up. close() undoes everything open() and
 * the frames after it set up, whichever way the subscription ends.
 *
 * The seam: the subscription is in the hub before the check, with live
 * events held back. The stream position the check reads comes after that
 * point, so the replay (seq > since, up to that position) and the live
 * events meet with no gap and no duplicate. Denied, the held events are
 * dropped unseen.
 *
 * Live means committed after the check: the check's statement also takes a
 * snapshot, and an event whose transaction that snapshot saw is not sent
 * live (it is the replay's, or before this subscription), however late the
 * relay found it. Once the relay's watermark has passed the snapshot, every
 * event is after it and the snapshot is let go.
 */
import type { Logger } from 'pino';

import type { Db } from '../../db/index.js';
import type { Identity } from '../../db/identity.js';
import type { ChannelLimits } from '../../db/subscriptions.js';
import { WireError } from '../../protocol/errors.js';
import type { Filter } from '../../protocol/filter.js';
import { errorFrame, serverFrame, type ClientFrame } from '../../protocol/frames.js';
import { wireErrorFromPg } from '../../db/errors.js';
import { errorText } from '../boundary.js';
import type { Hub, Subscriber } from '../hub.js';
import type { Keys } from '../keys.js';
import { TokenBucket } from '../limits.js';
import type { Metrics } from '../metrics.js';
import type { Presence, PresenceWatcher } from '../presence.js';
import { issueCursor, readCursor, type CursorScope } from './cursor.js';
import { replay, replayUnavailable } from './replay.js';
import { parseSnapshot, visibleIn, type Snapshot } from '../snapshot.js';

/** How long ids sent by a replay are remembered against late notifications. */
const REPLAY_DEDUPE_MS = 30_000;

export type SubscribeFrame = Extract<ClientFrame, { type: 'subscribe' }>;

/** What a subscription needs of its socket. */
export interface SubscriptionOwner {
  /** Random per socket: its presence rows carry it. */
  readonly id: string;
  readonly identity: Identity | null;
  readonly closed: boolean;
  /** A reply, presence or error frame. */
  send(text: string): void;
  /** An event frame; false if the socket could not take it. */
  write(frame: Buffer): boolean;
  /** Closes the socket (4008) if what it has not read plus `pending` bytes pass the cap; true if it did. */
  checkBuffered(pending: number): boolean;
  /** Waits until the socket has read most of what it was sent; false when it is gone or too slow. */
  drained(): Promise<boolean>;
  /** Ends this subscription and tells the client why. */
  drop(channel: string, reason: 'CHANNEL_CLOSED' | 'UNAUTHORIZED'): void;
  /** Authorizes the subscription again, in the socket's frame order. */
  reauthorize(channel: string): void;
}

export interface SubscriptionDeps {
  db: Pick<Db, 'authorizeSubscribe' | 'authorizeSubscription' | 'streamInfo' | 'replayCount' | 'replayRelayFrames' | 'changeAudience'>;
  hub: Hub;
  presence: Presence;
  metrics: Metrics;
  logger: Logger;
  now: () => number;
  keys: Keys;
  config: { maxReplay: number };
}

export class Subscription implements Subscriber, PresenceWatcher {
  /** The channel row it matched when authorized; null until then. */
  channelId: string | null = null;
  filter: Filter | undefined;
  limits: ChannelLimits | undefined;
  /** The channel's publish_rate, for this socket. */
  private publishBucket: TokenBucket | undefined;
  /** Live events held back while the replay is read and sent, and their bytes (counted toward the socket's cap). */
  private held: { id: string; frame: Buffer; xact: bigint | undefined }[] | null = null;
  /** The snapshot of the check: events it saw are not live for this subscription. */
  private start: Snapshot | null = null;
  private heldBytes = 0;
  /** Ids the replay sent: their notifications may still be on the way. */
  private replayed: { ids: Set<string>; until: number } | null = null;
  private watching = false;
  private closed = false;
  /** When it was asked for; its last event written, and how many (GET /api/subscriptions). */
  readonly since: number;
  lastEventAt: number | null = null;
  delivered = 0;

  constructor(
    readonly owner: SubscriptionOwner,
    readonly channel: string,
    private readonly deps: SubscriptionDeps,
  ) {
    this.since = deps.now();
  }

  /** Writes one event frame to the socket, counting it. */
  private deliver(frame: Buffer): boolean {
    if (!this.owner.write(frame)) return false;
    this.delivered++;
    this.lastEventAt = this.deps.now();
    return true;
  }

  get identity(): Identity | null {
    return this.owner.identity;
  }

  sendEvent(frame: Buffer, id: string, xact?: bigint, floor?: bigint): boolean {
    if (this.closed || this.owner.closed) return false;
    if (this.held) {
      this.heldBytes += frame.length;
      if (this.owner.checkBuffered(this.heldBytes)) return false;
      this.held.push({ id, frame, xact });
      return true;
    }
    if (this.start) {
      if (floor !== undefined && floor >= this.start.xmax) this.start = null;
      else if (xact !== undefined && visibleIn(xact, this.start)) return false;
    }
    if (this.replayed) {
      if (this.replayed.until < this.deps.now()) this.replayed = null;
      else if (this.replayed.ids.has(id)) return true;
    }
    return this.deliver(frame);
  }

  releaseStart(floor: bigint): void {
    if (this.start && floor >= this.start.xmax) this.start = null;
  }

  /** A presence frame (presence_state, presence_diff). */
  sendText(text: string): void {
    if (!this.closed) this.owner.send(text);
  }

  /**
   * Authorizes the subscription, replays what `since` asks for and sends
   * "subscribed". Throws WireError; then nothing of it is left in the hub.
   */
  async open(frame: SubscribeFrame): Promise<void> {
    const { channel, ref, since, epoch } = frame;
    const identity = this.identity;
    if (!identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    this.held = [];
    this.filter = frame.filter?.conditions;
    this.deps.hub.add(this);
    try {
      const auth = await this.authorize(identity);
      if (this.owner.closed) {
        this.close();
        return;
      }
      if (auth.id === null) throw new WireError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
      // This instance's sockets (this one included) and the others' last reports.
      const max = auth.limits.maxSubscribers;
      if (max !== null && this.deps.hub.countOf(channel) + auth.otherSubscribers > max) {
        this.deps.metrics.limitRejections.inc({ limit: 'channel_subscribers' });
        throw new WireError('LIMIT_EXCEEDED', `this channel takes at most ${max} subscribers`, { limit: 'channel_subscribers' });
      }
      this.channelId = auth.id;
      this.limits = auth.limits;
      this.start = parseSnapshot(auth.snapshot);
      const replayDeps = { db: this.deps.db, maxReplay: this.deps.config.maxReplay };
      const scope = this.scope(identity, auth.stream.epoch);
      const sameEpoch = epoch === undefined || epoch === auth.stream.epoch;
      const unavailable =
        since === undefined
          ? null
          : ((sameEpoch ? this.cursorRefusal(scope, since, frame.cursor, auth.stream.maxSeq) : null) ??
            (await replayUnavailable(replayDeps, channel, { since, epoch }, auth.stream)));
      if (this.owner.closed) return;
      if (unavailable !== null) {
        this.owner.send(errorFrame('REPLAY_UNAVAILABLE', unavailable, { ref, channel, epoch: auth.stream.epoch }));
      }
      this.owner.send(this.subscribedFrame(scope, ref, auth.stream.maxSeq, frame.filter?.text));
      const replayed =
        since === undefined || unavailable !== null
          ? new Set<string>()
          : await replay(replayDeps, identity, channel, this.filter, { since, through: auth.stream.maxSeq }, {
              write: (f) => this.deliver(f),
              drained: () => this.owner.drained(),
            });
      const start = this.start;
      for (const event of this.held) {
        if (replayed.has(event.id)) continue;
        if (start && event.xact !== undefined && visibleIn(event.xact, start)) continue; // before the check
        this.deliver(event.frame);
      }
      // Notifications of replayed messages can arrive after the seam; the relay's
      // recovery pass settles within a few periods, so this window is enough.
      if (replayed.size > 0) this.replayed = { ids: replayed, until: this.deps.now() + REPLAY_DEDUPE_MS };
    } catch (err) {
      this.close();
      throw err;
    } finally {
      this.held = null;
      this.heldBytes = 0;
    }
    if (!frame.presence) return;
    try {
      await this.watchPresence();
    } catch (err) {
      // `subscribed` went out: the subscription stands, without presence
      // (PRESENCE_UNAVAILABLE on a standby, INTERNAL_ERROR without a database);
      // a later subscribe with presence asks again.
      const e = wireErrorFromPg(err);
      this.owner.send(errorFrame(e.code, e.message, { ref: frame.ref, channel: this.channel, ...e.extra }));
    }
  }

  /** Subscribed already: the new frame's filter and presence wish apply. */
  async update(frame: SubscribeFrame): Promise<void> {
    this.filter = frame.filter?.conditions;
    const info = await this.deps.db.streamInfo();
    const identity = this.identity;
    if (identity) this.owner.send(this.subscribedFrame(this.scope(identity, info.epoch), frame.ref, info.maxSeq, frame.filter?.text));
    if (frame.presence && !this.watching) await this.watchPresence();
  }

  /** Whom a cursor of this subscription is for. */
  private scope(identity: Identity, epoch: string): CursorScope {
    const sub = identity.claims['sub'];
    return { channel: this.channel, role: identity.role, sub: typeof sub === 'string' ? sub : '', epoch };
  }

  /** "subscribed", with the position it stands at and a cursor for a later replay from there. */
  private subscribedFrame(scope: CursorScope, ref: string | undefined, seq: number, filter: string | undefined): string {
    const key = this.deps.keys.current?.cursor;
    return serverFrame({
      type: 'subscribed',
      channel: this.channel,
      ref,
      epoch: scope.epoch,
      seq,
      ...(key ? { cursor: issueCursor(key, scope, seq) } : {}),
      filter,
    });
  }

  /**
   * Why `since` may not be replayed for this scope, or null: a replay needs a
   * cursor this scope was given, and covers only what came after it.
   */
  private cursorRefusal(scope: CursorScope, since: number, cursor: string | undefined, maxSeq: number): string | null {
    if (since >= maxSeq) return null; // nothing to replay
    // Signed with the current key, or (for the grace period after a rotation) the previous one.
    let from: number | null = null;
    if (cursor !== undefined) {
      for (const k of this.deps.keys.accepted()) {
        from = readCursor(k.cursor, scope, cursor);
        if (from !== null) break;
      }
    }
    if (from === null) return 'a replay needs the cursor of a "subscribed" frame this token was given for this channel: resync';
    if (since < from) return 'that seq is before this token was allowed in: resync';
    return null;
  }

  /** Asks again (new claims, or the channel changed): the matched id when still allowed, else null; errors deny. */
  async reauthorize(): Promise<string | null> {
    const identity = this.identity;
    if (!identity) return null;
    try {
      return await this.deps.db.authorizeSubscribe(identity, this.channel);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'INVALID_MESSAGE' || e.code === 'INTERNAL_ERROR') throw e;
      this.deps.logger.debug({ err: errorText(err) }, 'subscribe check failed: denied');
      return null;
    }
  }

  /** The channel's row changed: its limits may have too. */
  setLimits(limits: ChannelLimits): void {
    if (this.limits?.publishRate !== limits.publishRate) this.publishBucket = undefined;
    this.limits = limits;
  }

  /** A publish to this channel, against its publish_rate: 0 when allowed, else the milliseconds to wait. */
  takePublish(): number {
    const rate = this.limits?.publishRate;
    if (!rate) return 0;
    this.publishBucket ??= new TokenBucket(rate, this.deps.now);
    return this.publishBucket.take();
  }

  /** Sets (or with null, clears) this socket's presence state on the channel. */
  async setPresence(state: Record<string, unknown> | null, ref: string | undefined): Promise<void> {
    const identity = this.identity;
    if (!identity) throw new WireError('UNAUTHORIZED', 'send an auth frame first');
    if (state === null) {
      await this.deps.presence.untrack(this.owner.id, [this.channel]);
      this.owner.send(serverFrame({ type: 'presence_left', channel: this.channel, ref }));
      return;
    }
    let key: string;
    try {
      key = await this.deps.presence.track(this.owner.id, identity, this.channel, state);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'LIMIT_EXCEEDED') this.deps.metrics.limitRejections.inc({ limit: 'presence_members' });
      throw e;
    }
    this.owner.send(serverFrame({ type: 'presence_updated', channel: this.channel, ref, key }));
  }

  /** Leaves the hub and the channel's presence. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.held = null;
    this.heldBytes = 0;
    this.deps.hub.remove(this);
    if (this.watching) this.deps.presence.unwatch(this.channel, this);
    this.watching = false;
  }

  /** close(), and this socket's presence on the channel leaves (the socket stays). */
  leave(): void {
    this.close();
    this.deps.presence.untrack(this.owner.id, [this.channel]).catch((err: unknown) => {
      this.deps.logger.warn({ err: errorText(err), channel: this.channel }, 'could not remove presence; retrying at the next heartbeat');
    });
  }

  /** The check, the stream position and the limits in one round trip; errors as in reauthorize(). */
  private async authorize(identity: Identity) {
    try {
      return await this.deps.db.authorizeSubscription(identity, this.channel, this.deps.presence.instance);
    } catch (err) {
      const e = wireErrorFromPg(err);
      if (e.code === 'INVALID_MESSAGE' || e.code === 'INTERNAL_ERROR') throw e;
      this.deps.logger.debug({ err: errorText(err) }, 'subscribe check failed: denied');
      throw new WireError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
    }
  }

  /** presence_state now; presence_diff frames follow as members change. */
  private async watchPresence(): Promise<void> {
    this.watching = true;
    let members: Record<string, Record<string, unknown>>;
    try {
      members = await this.deps.presence.watch(this.channel, this);
    } catch (err) {
      this.watching = false;
      throw err;
    }
    if (this.closed || this.owner.closed) {
      this.deps.presence.unwatch(this.channel, this);
      this.watching = false;
      return;
    }
    this.owner.send(serverFrame({ type: 'presence_state', channel: this.channel, members }));
  }
}
