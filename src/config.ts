import { RealtimedError } from './errors.js';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

export interface DatabaseTarget {
  /** The URL as given, for node-postgres. */
  url: string;
  /** host:port/database, never the password: safe for logs and errors. */
  where: string;
  database: string;
}

/**
 * Checks a PostgreSQL connection URL before anything connects with it, so a
 * typo is reported as a bad URL rather than as a strange network error.
 */
export function parseDatabaseUrl(raw: string | undefined, source = '--database-url'): DatabaseTarget {
  if (raw === undefined || raw.trim() === '') {
    throw new RealtimedError('RT_ERR_DB_URL', `no database URL: pass ${source} or set DATABASE_URL`);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RealtimedError('RT_ERR_DB_URL', `${source} is not a URL (expected postgres://user@host:5432/database)`);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new RealtimedError(
      'RT_ERR_DB_URL',
      `${source} must start with postgres:// or postgresql://, not ${url.protocol}//`,
    );
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (database === '') {
    throw new RealtimedError('RT_ERR_DB_URL', `${source} names no database (expected postgres://user@host:5432/database)`);
  }
  const host = url.hostname || url.searchParams.get('host') || 'localhost';
  const port = url.port || '5432';
  return { url: raw, where: `${host}:${port}/${database}`, database };
}

/** Everything `realtimed start` is configured with (flags, else environment). */
export interface StartConfig {
  databaseUrl: string;
  /** A direct connection for LISTEN (not through a transaction pooler). */
  listenUrl: string;
  host: string;
  port: number;
  /** WebSocket endpoint path. */
  path: string;
  jwtSecret: string | undefined;
  jwksUrl: string | undefined;
  /** Roles a token may carry (and the daemon may SET ROLE to). */
  roles: string[];
  /** Connections without a token act as `anon`. */
  allowAnon: boolean;
  /** Origins allowed to open a WebSocket; empty allows any. */
  allowedOrigins: string[];
  logLevel: string;
  /** Serve the inspector page at /inspector (a development tool; off in `start`). */
  inspector: boolean;
  maxFrameBytes: number;
  maxSubscriptions: number;
  /** Client publishes per second per connection (token bucket, burst the same). */
  publishRate: number;
  pingIntervalMs: number;
  /** A socket with more unsent bytes than this is closed with 4008. */
  maxBufferedBytes: number;
  /** Time a connection without a token has to send an `auth` frame when anon is off. */
  authTimeoutMs: number;
  poolSize: number;
  perMessageDeflate: boolean;
  /** Deliver webhooks from this instance. */
  webhooks: boolean;
  webhookSecret: string | undefined;
  webhookTimeoutMs: number;
  /** Requests in flight to one URL (per instance). */
  webhookConcurrency: number;
  webhookMaxInFlight: number;
  webhookSweepMs: number;
  /** How often delivery statistics are written. */
  statsIntervalMs: number;
  /** How often to run realtime.prune(); 0 is off. */
  pruneIntervalMs: number;
  /** Events a `since` subscribe may replay before REPLAY_UNAVAILABLE. */
  maxReplay: number;
  /** How often the relay checks for committed messages it was never notified of. */
  recoveryIntervalMs: number;
  /** Open sockets on this instance (0: no limit). */
  maxConnections: number;
  /** Open sockets per user, the token's role and sub (0: no limit). */
  maxConnectionsPerUser: number;
  /** New connections per second per client address (0: off). */
  connectRate: number;
  /** Ephemeral messages per second per connection. */
  ephemeralRate: number;
  /** Members one channel's presence may hold. */
  maxPresenceMembers: number;
  /** Bytes of one socket's presence state (as JSON text). */
  maxPresenceBytes: number;
  /** At most one presence read and presence_diff per channel per this period. */
  presenceThrottleMs: number;
  presenceHeartbeatMs: number;
  /** An instance silent this long is removed, with its presence members. */
  presenceTimeoutMs: number;
  /** The role of tokens the HTTP API treats as admin (channels CRUD). */
  adminRole: string;
}

export const START_DEFAULTS = {
  host: '127.0.0.1',
  port: 4000,
  path: '/',
  roles: ['anon', 'authenticated'],
  logLevel: 'info',
  inspector: false,
  maxFrameBytes: 128 * 1024,
  maxSubscriptions: 100,
  publishRate: 20,
  pingIntervalMs: 30_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  authTimeoutMs: 10_000,
  poolSize: 10,
  webhookTimeoutMs: 10_000,
  webhookConcurrency: 4,
  webhookMaxInFlight: 64,
  webhookSweepMs: 1000,
  statsIntervalMs: 1000,
  pruneIntervalMs: 0,
  maxReplay: 1000,
  recoveryIntervalMs: 1000,
  maxConnections: 10_000,
  maxConnectionsPerUser: 100,
  connectRate: 0,
  ephemeralRate: 50,
  maxPresenceMembers: 1000,
  maxPresenceBytes: 2048,
  presenceThrottleMs: 100,
  presenceHeartbeatMs: 5000,
  presenceTimeoutMs: 15_000,
  adminRole: 'service_role',
} as const;

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function usage(message: string): RealtimedError {
  return new RealtimedError('RT_ERR_USAGE', message);
}

/** Checks a start configuration as a whole: missing or contradictory options. */
export function checkStartConfig(config: StartConfig): StartConfig {
  parseDatabaseUrl(config.databaseUrl, '--database-url');
  parseDatabaseUrl(config.listenUrl, '--listen-url');
  if (config.jwtSecret !== undefined && config.jwksUrl !== undefined) {
    throw usage('--jwt-secret and --jwks-url are contradictory: tokens are verified with one or the other');
  }
  if (config.jwtSecret !== undefined && config.jwtSecret.length < 32) {
    throw usage('--jwt-secret must be at least 32 characters (HS256 needs a long random secret)');
  }
  if (config.jwksUrl !== undefined) {
    let url: URL;
    try {
      url = new URL(config.jwksUrl);
    } catch {
      throw usage('--jwks-url is not a URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw usage('--jwks-url must be an http(s) URL');
  }
  if (config.roles.length === 0) throw usage('--roles names no role');
  for (const role of config.roles) {
    if (!ROLE_NAME.test(role)) throw usage(`--roles: "${role}" is not a plain role name (lowercase letters, digits, _)`);
  }
  if (config.allowAnon && !config.roles.includes('anon')) {
    throw usage('--roles leaves out anon while connections without a token are allowed: add anon or pass --no-anon');
  }
  if (!config.allowAnon && config.jwtSecret === undefined && config.jwksUrl === undefined) {
    throw usage('--no-anon without --jwt-secret or --jwks-url: no connection could ever authenticate');
  }
  if (!LOG_LEVELS.includes(config.logLevel)) throw usage(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  if (!config.path.startsWith('/')) throw usage('--path must start with /');
  if (config.port < 0 || config.port > 65535) throw usage('--port must be between 0 and 65535');
  if (!ROLE_NAME.test(config.adminRole)) throw usage('--admin-role is not a plain role name');
  if (config.presenceTimeoutMs < 2 * config.presenceHeartbeatMs) {
    throw usage('--presence-timeout must be at least twice --presence-heartbeat, or live instances would be taken for dead');
  }
  if (config.webhookSecret !== undefined && config.webhookSecret.length < 16) {
    throw usage('--webhook-secret must be at least 16 characters');
  }
  return config;
}
