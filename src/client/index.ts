/**
 * realtimed/client: the TypeScript client for browsers and Node 20+.
 *
 * It reconnects with backoff and jitter, refreshes its token through
 * getToken, and resubscribes each channel with `since` = the last seq it saw,
 * so an application sees every message once across reconnects (events are
 * deduplicated by seq). No Node-only imports: in Node without a global
 * WebSocket it loads `ws` at run time.
 */
import type { WireErrorCode } from '../protocol/errors.js';

/** Error codes of the protocol (docs/protocol.md), and the client's own. */
export type ErrorCode = WireErrorCode | 'DISCONNECTED' | 'TIMEOUT';

export class RealtimeError extends Error {
  readonly code: ErrorCode;
  readonly channel: string | undefined;
  /** For RATE_LIMITED: milliseconds to wait. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, channel?: string, retryAfter?: number) {
    super(message);
    this.name = 'RealtimeError';
    this.code = code;
    this.channel = channel;
    this.retryAfter = retryAfter;
  }
}

export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface EventMeta {
  channel: string;
  event: string;
  /** Empty for an ephemeral event (never stored). */
  messageId: string;
  /** 0 for an ephemeral event (it has no place in the stream). */
  seq: number;
  ephemeral: boolean;
  senderType: 'system' | 'user';
  senderId: string | null;
  timestamp: string;
}

export type EventHandler = (payload: Record<string, unknown>, meta: EventMeta) => void;

export interface PublishAck {
  channel: string;
  messageId: string;
  seq: number;
  /** The publish repeated a dedupeKey: this is the first message's ack. */
  duplicate: boolean;
}

export interface SubscribeResult {
  ok: boolean;
  channel: string;
  error?: RealtimeError;
}

/** A channel's presence: member key (the token's sub) → the state it set. */
export type PresenceMembers = Record<string, Record<string, unknown>>;
export type PresenceHandler = (
  channel: string,
  members: PresenceMembers,
  diff: { joins: PresenceMembers; leaves: PresenceMembers } | null,
) => void;

export interface SubscribeOptions {
  /** Replay what came after this seq. */
  since?: number;
  /** Only events whose record matches (docs/protocol.md, "Filters"), e.g. "status=eq.paid". */
  filter?: string;
  /** Receive presence (onPresence) for this channel. */
  presence?: boolean;
}

/** Why a channel needs resyncing from the application's own source of truth. */
export type ResyncReason = 'REPLAY_UNAVAILABLE' | 'CHANNEL_CLOSED' | 'UNAUTHORIZED';

/** Keeps the last seq per channel across page reloads or app restarts (e.g. localStorage). */
export interface StorageAdapter {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
}

/** The part of the WebSocket API the client uses (browsers' and `ws`'s). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  token?: string;
  /** Called before every connection (and before the token expires) for a fresh token. */
  getToken?: () => string | Promise<string>;
  /** A WebSocket implementation; default: the global one, else `ws` in Node. */
  WebSocket?: WebSocketConstructor;
  storage?: StorageAdapter;
  /** Reconnect delays: initialMs doubling to maxMs (defaults 1000 and 30000), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** How long to wait for a reply (default 10000 ms). */
  requestTimeoutMs?: number;
  /** Reconnect after an unexpected close (default true). */
  reconnect?: boolean;
  random?: () => number;
}

/**
 * The delay before reconnection attempt `attempt` (1, 2, ...): initialMs
 * doubling up to maxMs, then between half and all of it ("equal jitter"),
 * so a fleet of clients does not reconnect in step.
 */
export function backoffDelay(attempt: number, initialMs = 1000, maxMs = 30_000, random: () => number = Math.random): number {
  const nominal = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(nominal / 2 + (nominal / 2) * random());
}

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (err: RealtimeError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface ChannelState {
  lastSeq: number | null;
  epoch: string | null;
  /** What the last "subscribed" carried: a replay from lastSeq needs it. */
  cursor: string | null;
  /** Seqs seen recently: an event replayed and delivered live is dispatched once. */
  seen: Set<number>;
  waiters: ((result: SubscribeResult) => void)[];
  subscribed: boolean;
  filter: string | undefined;
  presence: boolean;
  /** The presence state this client set here, sent again after a reconnect. */
  mine: Record<string, unknown> | null;
  members: PresenceMembers;
}

type Frame = Record<string, unknown> & { type: string };

const OPEN = 1;
const SEEN_WINDOW = 2000;

export class RealtimeClient {
  private ws: WebSocketLike | null = null;
  private stateValue: ClientState = 'idle';
  private readonly channels = new Map<string, ChannelState>();
  private readonly handlers = new Map<string, Set<EventHandler>>();
  private readonly stateHandlers = new Set<(state: ClientState) => void>();
  private readonly resyncHandlers = new Set<(channel: string, reason: ResyncReason) => void>();
  private readonly errorHandlers = new Set<(error: RealtimeError) => void>();
  private readonly presenceHandlers = new Set<PresenceHandler>();
  private readonly pending = new Map<string, Pending>();
  private refs = 0;
  private attempt = 0;
  private token: string | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private wanted = false;
  private connecting: Promise<void> | null = null;

  constructor(
    private readonly url: string,
    private readonly options: ClientOptions = {},
  ) {
    this.token = options.token;
  }

  get state(): ClientState {
    return this.stateValue;
  }

  /** Channels this client keeps subscribed (across reconnects). */
  get subscriptions(): string[] {
    return [...this.channels.keys()];
  }

  /** Opens the connection; resolves when it is open (subscriptions are restored then). */
  connect(): Promise<void> {
    this.wanted = true;
    if (this.stateValue === 'open') return Promise.resolve();
    this.connecting ??= this.open().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  disconnect(): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'client disconnect');
    this.failPending('disconnected');
    this.setState('closed');
  }

  /** Subscribes (now, or as soon as connected); `since` replays what came after that seq. */
  async subscribe(channel: string, options: SubscribeOptions = {}): Promise<SubscribeResult> {
    let state = this.channels.get(channel);
    if (!state) {
      state = {
        lastSeq: null, epoch: null, cursor: null, seen: new Set(), waiters: [], subscribed: false,
        filter: undefined, presence: false, mine: null, members: {},
      };
      const stored = await this.load(channel);
      if (stored) {
        state.lastSeq = stored.seq;
        state.epoch = stored.epoch;
        state.cursor = stored.cursor;
      }
      this.channels.set(channel, state);
    }
    if (options.since !== undefined) state.lastSeq = options.since;
    state.filter = options.filter;
    state.presence = options.presence === true;
    const result = new Promise<SubscribeResult>((resolve) => state.waiters.push(resolve));
    if (this.stateValue === 'open') this.sendSubscribe(channel, state);
    else if (this.wanted && this.stateValue === 'idle') this.connect().catch(() => undefined);
    return result;
  }

  async unsubscribe(channel: string): Promise<void> {
    const state = this.channels.get(channel);
    this.channels.delete(channel);
    state?.waiters.splice(0).forEach((w) => w({ ok: false, channel, error: new RealtimeError('DISCONNECTED', 'unsubscribed', channel) }));
    if (this.stateValue === 'open') await this.request({ type: 'unsubscribe', channel }).catch(() => undefined);
  }

  async publish(
    channel: string,
    event: string,
    payload: Record<string, unknown> = {},
    options: { dedupeKey?: string } = {},
  ): Promise<PublishAck> {
    const frame = await this.request({
      type: 'publish',
      channel,
      event,
      payload,
      ...(options.dedupeKey === undefined ? {} : { dedupeKey: options.dedupeKey }),
    });
    return {
      channel,
      messageId: String(frame['messageId']),
      seq: Number(frame['seq']),
      duplicate: frame['duplicate'] === true,
    };
  }

  /** Sends to the channel's current subscribers on every instance; never stored or replayed (typing, cursors). */
  async publishEphemeral(channel: string, event: string, payload: Record<string, unknown> = {}): Promise<void> {
    await this.request({ type: 'publish', channel, event, payload, ephemeral: true });
  }

  /** Sets this client's presence state on a subscribed channel (null: leave); kept across reconnects. */
  async setPresence(channel: string, state: Record<string, unknown> | null): Promise<void> {
    const channelState = this.channels.get(channel);
    if (channelState) channelState.mine = state;
    await this.request({ type: 'presence', channel, state });
  }

  /** Presence of channels subscribed with `presence: true`: the members, and what changed (null on a full state). */
  onPresence(handler: PresenceHandler): () => void {
    this.presenceHandlers.add(handler);
    return () => this.presenceHandlers.delete(handler);
  }

  /** Handlers for an application event name, or '*' for all. Returns a function that removes it. */
  on(event: string, handler: EventHandler): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }

  off(event: string, handler: EventHandler): void {
    this.handlers.get(event)?.delete(handler);
  }

  /** The client's own events live here, apart from application event names. */
  onState(handler: (state: ClientState) => void): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** A channel must be resynced: replay was unavailable, or the server ended the subscription. */
  onResync(handler: (channel: string, reason: ResyncReason) => void): () => void {
    this.resyncHandlers.add(handler);
    return () => this.resyncHandlers.delete(handler);
  }

  onError(handler: (error: RealtimeError) => void): () => void {
    this.errorHandlers.add(handler);
    return () => this.errorHandlers.delete(handler);
  }

  private setState(state: ClientState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    for (const handler of this.stateHandlers) handler(state);
  }

  private async socketClass(): Promise<WebSocketConstructor> {
    if (this.options.WebSocket) return this.options.WebSocket;
    const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (global) return global;
    // Node without a global WebSocket: load `ws` at run time (kept out of browser bundles).
    const name = 'ws';
    const mod = (await import(name)) as { default: WebSocketConstructor };
    return mod.default;
  }

  private async open(): Promise<void> {
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    if (this.options.getToken) this.token = await this.options.getToken();
    const Socket = await this.socketClass();
    // The token goes in the first frame, never in the URL (which proxies and servers log).
    const ws = new Socket(this.url);
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        this.attempt = 0;
        this.setState('open');
        // Frames are handled in order: the subscribes act as this token.
        if (this.token !== undefined) this.request({ type: 'auth', token: this.token }).catch(() => undefined);
        this.scheduleRefresh();
        for (const [channel, state] of this.channels) this.sendSubscribe(channel, state);
        resolve();
      };
      ws.onmessage = (event) => this.receive(typeof event.data === 'string' ? event.data : String(event.data));
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.failPending(`connection closed (${event.code})`);
        for (const state of this.channels.values()) state.subscribed = false;
        reject(new RealtimeError('DISCONNECTED', `connection closed (${event.code})`));
        this.closed(event.code);
      };
    });
  }

  private closed(code: number): void {
    clearTimeout(this.refreshTimer);
    // 4003: this token will not do; without getToken, retrying cannot help.
    const hopeless = code === 4003 && !this.options.getToken;
    // 4010: the server closes a socket with no subscription (--idle-timeout):
    // reconnecting now would only be closed again; the next subscribe reconnects.
    if (code === 4010 && this.channels.size === 0 && this.wanted && this.options.reconnect !== false) {
      this.setState('idle');
      return;
    }
    if (!this.wanted || this.options.reconnect === false || hopeless) {
      this.setState('closed');
      return;
    }
    this.attempt++;
    this.setState('reconnecting');
    const delay = backoffDelay(this.attempt, this.options.backoff?.initialMs, this.options.backoff?.maxMs, this.options.random);
    this.reconnectTimer = setTimeout(() => {
      if (!this.wanted) return;
      this.connect().catch(() => undefined);
    }, delay);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = this.token === undefined ? undefined : tokenExpiry(this.token);
    if (exp === undefined || !this.options.getToken) return;
    const getToken = this.options.getToken;
    // Refresh a minute before expiry (or half-way for short tokens).
    const left = exp * 1000 - Date.now();
    const at = Math.max(0, Math.min(left - 60_000, left / 2));
    this.refreshTimer = setTimeout(() => {
      void (async () => {
        try {
          this.token = await getToken();
          await this.request({ type: 'auth', token: this.token });
          this.scheduleRefresh();
        } catch (err) {
          this.emitError(err instanceof RealtimeError ? err : new RealtimeError('UNAUTHORIZED', String(err)));
        }
      })();
    }, at);
  }

  private sendSubscribe(channel: string, state: ChannelState): void {
    const frame: Record<string, unknown> = { type: 'subscribe', channel };
    if (state.lastSeq !== null) frame['since'] = state.lastSeq;
    if (state.epoch !== null) frame['epoch'] = state.epoch;
    if (state.lastSeq !== null && state.cursor !== null) frame['cursor'] = state.cursor;
    if (state.filter !== undefined) frame['filter'] = state.filter;
    if (state.presence) frame['presence'] = true;
    this.request(frame).then(
      (reply) => {
        state.subscribed = true;
        // A new socket holds no presence: set ours again.
        if (state.mine !== null) this.request({ type: 'presence', channel, state: state.mine }).catch(() => undefined);
        if (typeof reply['epoch'] === 'string') state.epoch = reply['epoch'];
        if (typeof reply['cursor'] === 'string') state.cursor = reply['cursor'];
        if (state.lastSeq === null && typeof reply['seq'] === 'number') state.lastSeq = reply['seq'];
        void this.store(channel, state);
        state.waiters.splice(0).forEach((w) => w({ ok: true, channel }));
      },
      (err: RealtimeError) => {
        if (err.code === 'DISCONNECTED' || err.code === 'TIMEOUT') return; // retried on reconnect
        this.channels.delete(channel);
        state.waiters.splice(0).forEach((w) => w({ ok: false, channel, error: err }));
      },
    );
  }

  private request(frame: Record<string, unknown>): Promise<Frame> {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || this.stateValue !== 'open') {
      return Promise.reject(new RealtimeError('DISCONNECTED', 'not connected'));
    }
    const ref = `c${++this.refs}`;
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RealtimeError('TIMEOUT', `no reply to ${String(frame['type'])} in time`));
      }, this.options.requestTimeoutMs ?? 10_000);
      this.pending.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  private failPending(message: string): void {
    for (const [ref, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new RealtimeError('DISCONNECTED', message));
      this.pending.delete(ref);
    }
  }

  private receive(text: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(text) as Frame;
    } catch {
      return;
    }
    if (frame.type === 'event') {
      this.dispatch(frame);
      return;
    }
    const channel = typeof frame['channel'] === 'string' ? frame['channel'] : undefined;
    if ((frame.type === 'presence_state' || frame.type === 'presence_diff') && channel) {
      this.presence(channel, frame);
      return;
    }
    if (frame.type === 'error' && frame['code'] === 'REPLAY_UNAVAILABLE' && channel) {
      const state = this.channels.get(channel);
      if (state) {
        state.lastSeq = null;
        state.seen.clear();
      }
      this.emitResync(channel, 'REPLAY_UNAVAILABLE');
      return; // the `subscribed` that follows answers the request
    }
    if (frame.type === 'unsubscribed' && frame['ref'] === undefined && channel) {
      this.channels.delete(channel);
      const reason = frame['reason'] === 'UNAUTHORIZED' ? 'UNAUTHORIZED' : 'CHANNEL_CLOSED';
      this.emitResync(channel, reason);
      return;
    }
    const ref = frame['ref'];
    const pending = typeof ref === 'string' ? this.pending.get(ref) : undefined;
    if (pending && typeof ref === 'string') {
      this.pending.delete(ref);
      clearTimeout(pending.timer);
      if (frame.type === 'error') {
        pending.reject(
          new RealtimeError(
            frame['code'] as ErrorCode,
            String(frame['message'] ?? ''),
            channel,
            typeof frame['retryAfter'] === 'number' ? frame['retryAfter'] : undefined,
          ),
        );
      } else {
        pending.resolve(frame);
      }
      return;
    }
    if (frame.type === 'error') {
      this.emitError(new RealtimeError(frame['code'] as ErrorCode, String(frame['message'] ?? ''), channel));
    }
  }

  private dispatch(frame: Frame): void {
    const channel = String(frame['channel']);
    const state = this.channels.get(channel);
    if (!state) return;
    const raw = (frame['meta'] ?? {}) as Record<string, unknown>;
    const ephemeral = raw['ephemeral'] === true;
    const seq = ephemeral ? 0 : Number(raw['seq']);
    if (!ephemeral) {
      if (state.seen.has(seq)) return;
      state.seen.add(seq);
      if (state.seen.size > SEEN_WINDOW) {
        const oldest = state.seen.values().next().value;
        if (oldest !== undefined) state.seen.delete(oldest);
      }
      if (state.lastSeq === null || seq > state.lastSeq) {
        state.lastSeq = seq;
        void this.store(channel, state);
      }
    }
    const meta: EventMeta = {
      channel,
      event: String(frame['event']),
      messageId: ephemeral ? '' : String(raw['messageId']),
      seq,
      ephemeral,
      senderType: raw['senderType'] === 'system' ? 'system' : 'user',
      senderId: typeof raw['senderId'] === 'string' ? raw['senderId'] : null,
      timestamp: String(raw['timestamp']),
    };
    const payload = (frame['payload'] ?? {}) as Record<string, unknown>;
    for (const handler of this.handlers.get(meta.event) ?? []) handler(payload, meta);
    for (const handler of this.handlers.get('*') ?? []) handler(payload, meta);
  }

  private presence(channel: string, frame: Frame): void {
    const state = this.channels.get(channel);
    if (!state) return;
    let diff: { joins: PresenceMembers; leaves: PresenceMembers } | null = null;
    if (frame.type === 'presence_state') {
      state.members = { ...(frame['members'] as PresenceMembers) };
    } else {
      diff = { joins: frame['joins'] as PresenceMembers, leaves: frame['leaves'] as PresenceMembers };
      for (const key of Object.keys(diff.leaves)) delete state.members[key];
      Object.assign(state.members, diff.joins);
    }
    for (const handler of this.presenceHandlers) handler(channel, { ...state.members }, diff);
  }

  private emitResync(channel: string, reason: ResyncReason): void {
    for (const handler of this.resyncHandlers) handler(channel, reason);
  }

  private emitError(error: RealtimeError): void {
    for (const handler of this.errorHandlers) handler(error);
  }

  private key(channel: string): string {
    return `realtimed:${this.url}:${channel}`;
  }

  private async load(channel: string): Promise<{ seq: number; epoch: string | null; cursor: string | null } | null> {
    if (!this.options.storage) return null;
    try {
      const text = await this.options.storage.get(this.key(channel));
      if (!text) return null;
      const value = JSON.parse(text) as { seq?: unknown; epoch?: unknown; cursor?: unknown };
      if (typeof value.seq !== 'number') return null;
      return {
        seq: value.seq,
        epoch: typeof value.epoch === 'string' ? value.epoch : null,
        cursor: typeof value.cursor === 'string' ? value.cursor : null,
      };
    } catch {
      return null;
    }
  }

  private async store(channel: string, state: ChannelState): Promise<void> {
    if (!this.options.storage || state.lastSeq === null) return;
    try {
      await this.options.storage.set(this.key(channel), JSON.stringify({ seq: state.lastSeq, epoch: state.epoch, cursor: state.cursor }));
    } catch {
      // Storage is a convenience: a failing one costs a replay, not a message.
    }
  }
}

/** The `exp` claim of a JWT (not verified: only to know when to refresh). */
function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

export function createClient(url: string, options: ClientOptions = {}): RealtimeClient {
  return new RealtimeClient(url, options);
}
