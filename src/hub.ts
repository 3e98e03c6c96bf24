/** Which sockets are subscribed to which channel name, on this instance. */
export interface Subscriber {
  /**
   * Writes one prebuilt event frame (the same buffer for every subscriber);
   * false if it could not. `channel` and `id` let a subscription that is
   * replaying hold live events back until its replay is sent.
   */
  sendEvent(frame: Buffer, channel: string, id: string): boolean;
}

export class Hub<S extends Subscriber = Subscriber> {
  private readonly channels = new Map<string, Set<S>>();
  private count = 0;

  add(channel: string, subscriber: S): void {
    let set = this.channels.get(channel);
    if (!set) {
      set = new Set();
      this.channels.set(channel, set);
    }
    if (!set.has(subscriber)) {
      set.add(subscriber);
      this.count++;
    }
  }

  remove(channel: string, subscriber: S): void {
    const set = this.channels.get(channel);
    if (set?.delete(subscriber)) {
      this.count--;
      if (set.size === 0) this.channels.delete(channel);
    }
  }

  subscribers(channel: string): ReadonlySet<S> | undefined {
    return this.channels.get(channel);
  }

  has(channel: string): boolean {
    return this.channels.has(channel);
  }

  channelNames(): string[] {
    return [...this.channels.keys()];
  }

  /** Subscriptions over all channels. */
  get size(): number {
    return this.count;
  }
}
