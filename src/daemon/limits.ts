/**
 * Limits (docs/protocol.md, "Limits"): token buckets, alone and by key;
 * new connections per second per client address; sockets per user (the
 * token's sub). Per-channel limits live on realtime.channels and are applied
 * where the channel is known (socket/subscription.ts, http/api.ts).
 */

/** A token bucket: `rate` per second, bursts up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    private readonly now: () => number,
    private readonly burst = rate,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** 0 when a token was taken, else the milliseconds until one is due. */
  take(): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }

  /** Full again: an idle bucket can be forgotten. */
  full(): boolean {
    const now = this.now();
    return Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate) >= this.burst;
  }
}

/**
 * Token buckets by key (an address, an identity, an identity and a channel),
 * made on first use and forgotten once full again, so memory follows the
 * keys active in the last few seconds.
 */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number) {
    this.sweeper = setInterval(() => {
      for (const [key, bucket] of this.buckets) if (bucket.full()) this.buckets.delete(key);
    }, 10_000);
    this.sweeper.unref();
  }

  /** 0 when `key` may act now at `rate` per second (bursts of `burst`), else the milliseconds to wait. */
  take(key: string, rate: number, burst = rate): number {
    let bucket = this.buckets.get(key);
    if (!bucket || bucket.rate !== rate) {
      bucket = new TokenBucket(rate, this.now, burst);
      this.buckets.set(key, bucket);
    }
    return bucket.take();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }
}

/** New connections per second per client address (0: off), bursts of twice that. */
export class ConnectRateLimiter {
  private readonly buckets: KeyedBuckets;

  constructor(
    private readonly rate: number,
    now: () => number,
  ) {
    this.buckets = new KeyedBuckets(now);
  }

  /** 0 when this address may connect now, else the milliseconds to wait. */
  take(address: string): number {
    if (this.rate <= 0) return 0;
    return this.buckets.take(address, this.rate, this.rate * 2);
  }

  stop(): void {
    this.buckets.stop();
  }
}

/** Open connections per user (the token's sub); 0: no limit. */
export class UserConnections {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  acquire(user: string): boolean {
    const n = this.counts.get(user) ?? 0;
    if (this.max > 0 && n >= this.max) return false;
    this.counts.set(user, n + 1);
    return true;
  }

  release(user: string): void {
    const n = (this.counts.get(user) ?? 0) - 1;
    if (n <= 0) this.counts.delete(user);
    else this.counts.set(user, n);
  }
}
