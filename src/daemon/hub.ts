/**
 * Which subscriptions this instance holds, by channel name, and deliver():
 * one prebuilt event frame to the subscriptions of its channel.
 */
import type { Identity } from '../db/identity.js';
import { matches, recordOf, type Filter } from '../protocol/filter.js';

/** One socket's subscription to one channel, as the hub and deliver() see it. */
export interface Subscriber {
  readonly channel: string;
  /** Who the socket acts as (for the row check of change events); null before it authenticates. */
  readonly identity: Identity | null;
  /** The subscription's filter, if it has one. */
  readonly filter: Filter | undefined;
  /**
   * Writes one prebuilt event frame (the same buffer for every subscriber);
   * false if it could not, or if the event is not for it. `id` lets a
   * subscription that is replaying hold live events back until its replay is
   * sent, and skip what it replayed. `xact` (the writing transaction) and
   * `floor` (the relay watermark's xmin) let a new subscription skip what
   * committed before it was authorized.
   */
  sendEvent(frame: Buffer, id: string, xact?: bigint, floor?: bigint): boolean;
  /** The relay's watermark has xmin `floor`: a start snapshot it has passed can go (memory of quiet channels). */
  releaseStart?(floor: bigint): void;
}

export class Hub<S extends Subscriber = Subscriber> {
  private readonly channels = new Map<string, Set<S>>();
  private count = 0;

  add(subscriber: S): void {
    let set = this.channels.get(subscriber.channel);
    if (!set) {
      set = new Set();
      this.channels.set(subscriber.channel, set);
    }
    if (!set.has(subscriber)) {
      set.add(subscriber);
      this.count++;
    }
  }

  remove(subscriber: S): void {
    const set = this.channels.get(subscriber.channel);
    if (set?.delete(subscriber)) {
      this.count--;
      if (set.size === 0) this.channels.delete(subscriber.channel);
    }
  }

  subscribers(channel: string): ReadonlySet<S> | undefined {
    return this.channels.get(channel);
  }

  has(channel: string): boolean {
    return this.channels.has(channel);
  }

  /** Subscribers of one channel here. */
  countOf(channel: string): number {
    return this.channels.get(channel)?.size ?? 0;
  }

  /** Every subscription here. */
  *all(): Generator<S> {
    for (const set of this.channels.values()) yield* set;
  }

  channelNames(): string[] {
    return [...this.channels.keys()];
  }

  /** Subscriptions over all channels. */
  get size(): number {
    return this.count;
  }
}

/**
 * Writes one event frame to the subscribers that `visible` admits (default
 * all) and whose filter its record matches. The frame is parsed at most once,
 * and only when some subscriber has a filter. Returns how many sockets it was
 * written to.
 */
export function deliver(
  subscribers: Iterable<Subscriber>,
  event: { frame: Buffer; id: string; xact?: bigint; floor?: bigint },
  visible?: (s: Subscriber) => boolean,
): number {
  let record: Record<string, unknown> | null | undefined;
  let written = 0;
  for (const s of subscribers) {
    if (visible && !visible(s)) continue;
    const filter = s.filter;
    if (filter) {
      if (record === undefined) {
        try {
          record = recordOf((JSON.parse(event.frame.toString()) as { payload?: unknown }).payload);
        } catch {
          record = null;
        }
      }
      if (!matches(filter, record)) continue;
    }
    if (s.sendEvent(event.frame, event.id, event.xact, event.floor)) written++;
  }
  return written;
}
