/**
 * realtimed/react: React hooks over realtimed/client.
 *
 * - One client per app (RealtimeProvider makes it, or takes one), created and
 *   connected in an effect: importing or rendering (also on a server) opens
 *   nothing and touches no browser global.
 * - Subscriptions are shared by reference count: two components on one
 *   channel make one subscription, the last to unmount unsubscribes. The
 *   unsubscribe waits one macrotask, so StrictMode's unmount-and-mount again
 *   (and a component moving in the tree) keeps the subscription.
 * - Handlers are read from a ref: a new function each render changes nothing
 *   on the wire.
 *
 * TanStack Query and SWR live in their own entry points
 * (realtimed/react/query, realtimed/react/swr), so this one needs only react.
 */
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';

import {
  createClient,
  type ClientOptions,
  type ClientState,
  type EventMeta,
  type PresenceMembers,
  type RealtimeClient,
  type RealtimeError,
  type ResyncReason,
  type SubscribeOptions,
} from '../client/index.js';

export type { ClientState, EventMeta, PresenceMembers, RealtimeClient, RealtimeError, ResyncReason } from '../client/index.js';

const ClientContext = createContext<RealtimeClient | null>(null);

export interface RealtimeProviderProps {
  /** A client of your own (not disconnected on unmount). */
  client?: RealtimeClient;
  /** Else the provider makes one for this URL (and disconnects it on unmount). */
  url?: string;
  options?: ClientOptions;
  children?: ReactNode;
}

/** Makes the client available to the hooks below it. Connects it in an effect, never during render. */
export function RealtimeProvider(props: RealtimeProviderProps): ReactNode {
  const { client: given, url } = props;
  const optionsRef = useRef(props.options);
  optionsRef.current = props.options;
  const [owned, setOwned] = useState<RealtimeClient | null>(null);
  useEffect(() => {
    if (given) {
      if (given.state === 'idle' || given.state === 'closed') void given.connect().catch(() => {});
      return undefined;
    }
    if (url === undefined) return undefined;
    const client = createClient(url, optionsRef.current);
    setOwned(client);
    void client.connect().catch(() => {});
    return () => {
      client.disconnect();
      setOwned((current) => (current === client ? null : current));
    };
  }, [given, url]);
  return createElement(ClientContext.Provider, { value: given ?? owned }, props.children);
}

const noop = (): void => {};

/** The client (null until the provider's effect made it) and its connection state. */
export function useRealtime(): { client: RealtimeClient | null; state: ClientState } {
  const client = useContext(ClientContext);
  const subscribe = useCallback((notify: () => void) => (client ? client.onState(notify) : noop), [client]);
  const state = useSyncExternalStore(
    subscribe,
    () => client?.state ?? 'idle',
    () => 'idle' as ClientState,
  );
  return { client, state };
}

export type ChannelStatus = 'idle' | 'subscribing' | 'subscribed' | 'error';

interface Entry {
  count: number;
  status: ChannelStatus;
  error: RealtimeError | null;
  options: SubscribeOptions;
  listeners: Set<() => void>;
  releasing: ReturnType<typeof setTimeout> | undefined;
  /** Bumped by every subscribe sent, so an old answer does not overwrite a newer one. */
  attempt: number;
}

const registries = new WeakMap<RealtimeClient, Map<string, Entry>>();

function entries(client: RealtimeClient): Map<string, Entry> {
  let map = registries.get(client);
  if (!map) {
    map = new Map();
    registries.set(client, map);
  }
  return map;
}

function setStatus(entry: Entry, status: ChannelStatus, error: RealtimeError | null): void {
  entry.status = status;
  entry.error = error;
  for (const listener of entry.listeners) listener();
}

function send(client: RealtimeClient, channel: string, entry: Entry): void {
  const attempt = ++entry.attempt;
  setStatus(entry, 'subscribing', null);
  void client.subscribe(channel, entry.options).then((result) => {
    if (entry.attempt !== attempt || entries(client).get(channel) !== entry) return;
    setStatus(entry, result.ok ? 'subscribed' : 'error', result.error ?? null);
  });
}

/**
 * Takes a share of the channel's subscription: the first share subscribes.
 * Options are merged: presence if any share wants it; the filter of the
 * first share (a client keeps one subscription per channel).
 */
function acquire(client: RealtimeClient, channel: string, options: SubscribeOptions): Entry {
  const map = entries(client);
  let entry = map.get(channel);
  if (entry) {
    clearTimeout(entry.releasing);
    entry.releasing = undefined;
    entry.count++;
    if (options.presence && !entry.options.presence) {
      entry.options = { ...entry.options, presence: true };
      send(client, channel, entry);
    }
    return entry;
  }
  entry = { count: 1, status: 'idle', error: null, options: { ...options }, listeners: new Set(), releasing: undefined, attempt: 0 };
  map.set(channel, entry);
  send(client, channel, entry);
  return entry;
}

/** Gives a share back; the last one unsubscribes after a macrotask unless taken again. */
function release(client: RealtimeClient, channel: string, entry: Entry): void {
  entry.count--;
  if (entry.count > 0) return;
  entry.releasing = setTimeout(() => {
    if (entry.count > 0 || entries(client).get(channel) !== entry) return;
    entries(client).delete(channel);
    void client.unsubscribe(channel);
  }, 0);
}

export interface ChannelOptions {
  /** Replay what came after this seq (first share only). */
  since?: number;
  /** Only events whose record matches, e.g. "status=eq.paid" (first share only). */
  filter?: string;
  /** Receive presence for this channel. */
  presence?: boolean;
}

/** Subscribes while mounted (shared); its status and the error a refusal carried. */
export function useChannel(channel: string | null, options: ChannelOptions = {}): { status: ChannelStatus; error: RealtimeError | null } {
  const { client } = useRealtime();
  const [entry, setEntry] = useState<Entry | null>(null);
  const { since, filter, presence } = options;
  useEffect(() => {
    if (!client || channel === null) return undefined;
    const subscribeOptions: SubscribeOptions = {
      ...(since === undefined ? {} : { since }),
      ...(filter === undefined ? {} : { filter }),
      ...(presence ? { presence: true } : {}),
    };
    const taken = acquire(client, channel, subscribeOptions);
    setEntry(taken);
    return () => {
      release(client, channel, taken);
      setEntry((current) => (current === taken ? null : current));
    };
  }, [client, channel, since, filter, presence]);
  const subscribe = useCallback(
    (notify: () => void) => {
      if (!entry) return noop;
      entry.listeners.add(notify);
      return () => entry.listeners.delete(notify);
    },
    [entry],
  );
  const status = useSyncExternalStore(subscribe, () => entry?.status ?? 'idle', () => 'idle' as ChannelStatus);
  const error = useSyncExternalStore(subscribe, () => entry?.error ?? null, () => null);
  return { status, error };
}

/** The latest value of `value`, for handlers called later (their identity changing costs nothing). */
function useLatest<T>(value: T): { readonly current: T } {
  const ref = useRef(value);
  ref.current = value;
  return ref;
}

/**
 * Calls `handler` for each `event` (or every event, '*') on `channel`, once
 * per event, in order, while mounted; subscribes (shared) meanwhile.
 * `P` is the payload's type (not checked at run time).
 */
export function useEvent<P = Record<string, unknown>>(
  channel: string | null,
  event: string,
  handler: (payload: P, meta: EventMeta) => void,
  options: ChannelOptions = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  const state = useChannel(channel, options);
  const { client } = useRealtime();
  const latest = useLatest(handler);
  useEffect(() => {
    if (!client || channel === null) return undefined;
    return client.on(event, (payload, meta) => {
      if (meta.channel === channel) latest.current(payload as P, meta);
    });
  }, [client, channel, event, latest]);
  return state;
}

/** Calls `handler` when the client reports that `channel` must be refetched (a gap replay cannot fill). */
export function useResync(channel: string | null, handler: (reason: ResyncReason) => void): void {
  const { client } = useRealtime();
  const latest = useLatest(handler);
  useEffect(() => {
    if (!client || channel === null) return undefined;
    return client.onResync((resynced, reason) => {
      if (resynced === channel) latest.current(reason);
    });
  }, [client, channel, latest]);
}

/** Who is present on `channel` (subscribed with presence while mounted), and a setter for this client's own state. */
export function usePresence(channel: string | null): {
  members: PresenceMembers;
  setPresence: (state: Record<string, unknown> | null) => Promise<void>;
  status: ChannelStatus;
  error: RealtimeError | null;
} {
  const state = useChannel(channel, { presence: true });
  const { client } = useRealtime();
  const [members, setMembers] = useState<PresenceMembers>({});
  useEffect(() => {
    if (!client || channel === null) return undefined;
    return client.onPresence((changed, all) => {
      if (changed === channel) setMembers({ ...all });
    });
  }, [client, channel]);
  const setPresence = useCallback(
    async (value: Record<string, unknown> | null) => {
      if (!client || channel === null) throw new Error('realtimed/react: no client or channel yet');
      await client.setPresence(channel, value);
    },
    [client, channel],
  );
  return { members, setPresence, ...state };
}

/**
 * Calls `fire` once after a burst of `events` on `channel` ends (no event for
 * `debounceMs`), and at once when the channel must be resynced. The base of
 * useInvalidateOn in realtimed/react/query and realtimed/react/swr.
 */
export function useCoalesced(
  channel: string | null,
  events: string | string[],
  fire: () => void,
  options: { debounceMs?: number } = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  const debounceMs = options.debounceMs ?? 100;
  const latest = useLatest(fire);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const list = Array.isArray(events) ? events : [events];
  const wanted = list.join('\u0000');
  const state = useEvent(channel, '*', (_payload, meta) => {
    if (!wanted.split('\u0000').some((e) => e === '*' || e === meta.event)) return;
    clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      timer.current = undefined;
      latest.current();
    }, debounceMs);
  });
  useResync(channel, () => {
    clearTimeout(timer.current);
    timer.current = undefined;
    latest.current();
  });
  useEffect(() => () => clearTimeout(timer.current), []);
  return state;
}

/** A change stream event (realtime.enable_changes): `new` on insert and update, `old` on update and delete. */
export interface ChangeEvent<T> {
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  schema: string;
  table: string;
  new?: T;
  old?: Partial<T>;
}

export type ChangeHandler<T, D> = (data: D | undefined, change: ChangeEvent<T>, meta: EventMeta) => D | undefined;

export interface LiveListOptions<T> {
  /** A row's identity (default: its `id`). */
  getId?: (row: Partial<T>) => unknown;
  onInsert?: ChangeHandler<T, T[]>;
  onUpdate?: ChangeHandler<T, T[]>;
  onDelete?: ChangeHandler<T, T[]>;
  /** Only events whose record matches, e.g. "status=eq.paid". */
  filter?: string;
}

/** Seqs remembered per live list to apply each once. */
const SEEN_SEQS = 10_000;

const defaultId = (row: Partial<unknown>): unknown => (row as { id?: unknown }).id;

/**
 * The default handlers of useLiveQuery and useLiveSWR, over a list: insert
 * adds (or replaces the row with its id: applying one twice changes
 * nothing), update merges into the row with its id (adds it if missing: it
 * may have just become visible), delete removes by id. No data yet: left as
 * is (the fetch under way brings the rows).
 */
export function applyChange<T>(data: T[] | undefined, change: ChangeEvent<T>, options: Pick<LiveListOptions<T>, 'getId'> = {}): T[] | undefined {
  if (data === undefined) return data;
  const getId = options.getId ?? (defaultId as (row: Partial<T>) => unknown);
  const row = change.op === 'DELETE' ? change.old : change.new;
  if (!row) return data;
  const id = getId(row);
  const index = data.findIndex((r) => getId(r) === id);
  if (change.op === 'DELETE') return index === -1 ? data : data.filter((_, i) => i !== index);
  if (index === -1) return [...data, row as T];
  const merged = change.op === 'UPDATE' ? { ...data[index], ...row } : (row as T);
  return data.map((r, i) => (i === index ? (merged as T) : r));
}

/**
 * Change events of `channel` to `apply`, each once (by seq), in order; the
 * shared core of useLiveQuery and useLiveSWR. `refetch` runs when the
 * client reports a gap it cannot replay.
 */
export function useChangeStream<T>(
  channel: string | null,
  apply: (change: ChangeEvent<T>, meta: EventMeta) => void,
  refetch: () => void,
  options: { filter?: string } = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  // Seqs applied, the latest SEEN_SEQS: a seq is applied once. Not "only
  // above the last": transactions commit out of seq order, and events arrive
  // in commit order.
  const applied = useRef(new Set<number>());
  useEffect(() => {
    applied.current = new Set();
  }, [channel]);
  const latest = useLatest(apply);
  const state = useEvent<ChangeEvent<T>>(
    channel,
    '*',
    (payload, meta) => {
      if (meta.seq !== 0) {
        const seen = applied.current;
        if (seen.has(meta.seq)) return;
        seen.add(meta.seq);
        if (seen.size > SEEN_SEQS) seen.delete(seen.values().next().value as number);
      }
      if (payload.op !== 'INSERT' && payload.op !== 'UPDATE' && payload.op !== 'DELETE') return;
      latest.current(payload, meta);
    },
    options.filter === undefined ? {} : { filter: options.filter },
  );
  useResync(channel, () => refetch());
  return state;
}

/** Picks the handler for a change: the caller's, else applyChange. */
export function handlerFor<T>(options: LiveListOptions<T>, change: ChangeEvent<T>): ChangeHandler<T, T[]> {
  const custom = change.op === 'INSERT' ? options.onInsert : change.op === 'UPDATE' ? options.onUpdate : options.onDelete;
  return custom ?? ((data, c) => applyChange(data, c, options.getId ? { getId: options.getId } : {}));
}
