/**
 * Who a socket acts as: its verified token (or anon), the token's expiry, and
 * the user's slot under --max-connections-per-user. A failure is a WireError
 * the connection turns into an error frame and its close code.
 */
import type { Identity } from '../../db/identity.js';
import { WireError } from '../../protocol/errors.js';
import type { Authenticator } from '../auth.js';
import type { UserConnections } from '../limits.js';
import type { Metrics } from '../metrics.js';

/** Longest a timer may be (setTimeout's limit); later expiries are checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SessionDeps {
  auth: Authenticator;
  users: UserConnections;
  metrics: Metrics;
  now: () => number;
  config: { maxConnectionsPerUser: number; authTimeoutMs: number };
}

export class Session {
  /** Null until a token is verified (or anon is allowed). */
  identity: Identity | null = null;
  /** The user counted against --max-connections-per-user: the token's role and sub. */
  private user: string | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private authTimer: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly deps: SessionDeps,
    /** The token in use expired (and no fresh one came in an auth frame). */
    private readonly onExpired: () => void,
  ) {}

  /** A socket without a token: anon, or with --no-anon a deadline for an auth frame. */
  startWithoutToken(onAuthTimeout: () => void): void {
    this.identity = this.deps.auth.anonymous();
    if (this.identity === null) this.authTimer = setTimeout(onAuthTimeout, this.deps.config.authTimeoutMs);
  }

  /**
   * Verifies a token and takes (or moves) the user's connection slot.
   * Throws WireError UNAUTHORIZED, TOKEN_EXPIRED or LIMIT_EXCEEDED; false when
   * the session ended meanwhile.
   */
  async authenticate(token: string): Promise<boolean> {
    let identity: Identity;
    try {
      identity = await this.deps.auth.verify(token);
    } catch (err) {
      throw err instanceof WireError ? err : new WireError('UNAUTHORIZED', 'the token is not valid');
    }
    if (this.ended) return false;
    const sub = identity.claims['sub'];
    const user = typeof sub === 'string' && sub !== '' ? `${identity.role}:${sub}` : undefined;
    if (user !== this.user) {
      if (user !== undefined && !this.deps.users.acquire(user)) {
        this.deps.metrics.limitRejections.inc({ limit: 'user_connections' });
        throw new WireError('LIMIT_EXCEEDED', `at most ${this.deps.config.maxConnectionsPerUser} connections per user`);
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

  /** Stops the timers and gives the user's slot back. */
  end(): void {
    this.ended = true;
    clearTimeout(this.expiryTimer);
    clearTimeout(this.authTimer);
    if (this.user !== undefined) this.deps.users.release(this.user);
    this.user = undefined;
  }

  private scheduleExpiry(exp: number): void {
    const ms = exp * 1000 - this.deps.now();
    this.expiryTimer = setTimeout(
      () => {
        if (exp * 1000 - this.deps.now() > 0) this.scheduleExpiry(exp);
        else this.onExpired();
      },
      Math.max(0, Math.min(ms, MAX_TIMER_MS)),
    );
  }
}
