/**
 * Connection limits (docs/protocol.md, "Limits"): sockets per instance, per
 * user (the token's sub) and new connections per second per client address.
 * Per-channel limits live on realtime.channels and are applied where the
 * channel is known (connection.ts).
 */

/** A token bucket: `rate` per second, bursts up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
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

/** New connections per second per client address (0: off). */
export class ConnectRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly rate: number,
    private readonly now: () => number,
  ) {
    if (rate > 0) {
      this.sweeper = setInterval(() => {
        for (const [address, bucket] of this.buckets) if (bucket.full()) this.buckets.delete(address);
      }, 10_000);
      this.sweeper.unref();
    }
  }

  /** 0 when this address may connect now, else the milliseconds to wait. */
  take(address: string): number {
    if (this.rate <= 0) return 0;
    let bucket = this.buckets.get(address);
    if (!bucket) this.buckets.set(address, (bucket = new TokenBucket(this.rate, this.now, this.rate * 2)));
    return bucket.take();
  }

  stop(): void {
    clearInterval(this.sweeper);
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
