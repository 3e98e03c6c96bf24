/**
 * The options of `realtimed start` and `realtimed dev`: one row each, with
 * its flag, environment variable, default, parser and help. The commander
 * options, the typed StartConfig and START_DEFAULTS are all derived from this
 * table; checkStartConfig() then checks the options against each other.
 */
import { InvalidArgumentError, Option } from 'commander';

import { parseDatabaseUrl } from '../db/url.js';
import { RealtimedError } from './errors.js';

interface Row<T> {
  /** commander's flags: '--port <port>', '--permessage-deflate', '--no-anon'. */
  flag: string;
  env: string;
  help: string;
  /** The value when neither the flag nor the environment gives one. */
  default: T;
  /** Reads the flag's (or the variable's) text; refuses a bad one with InvalidArgumentError. */
  parse?: (text: string) => T;
  /** Leave the default out of --help (it says nothing, e.g. an empty list). */
  hideDefault?: boolean;
  /** How `realtimed dev` differs from `start`. */
  dev?: Partial<Pick<Row<T>, 'flag' | 'env' | 'help' | 'default'>>;
}

const row = <T>(r: Row<T>): Row<T> => r;

/** A whole number from min to max. */
export function integer(min: number, max: number): (text: string) => number {
  return (text) => {
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    }
    return Number(text);
  };
}

/** A comma-separated list. */
export function list(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

const text = (value: string): string => value;
const optionalText = (value: string): string | undefined => value;

export const OPTIONS = {
  listenUrl: row<string | undefined>({
    flag: '--listen-url <url>', env: 'REALTIMED_LISTEN_URL', default: undefined, parse: optionalText,
    help: 'direct PostgreSQL URL for LISTEN (default: --database-url)',
  }),
  host: row({ flag: '--host <host>', env: 'REALTIMED_HOST', default: '127.0.0.1', parse: text, help: 'address to listen on' }),
  port: row({ flag: '--port <port>', env: 'REALTIMED_PORT', default: 4000, parse: integer(0, 65535), help: 'port to listen on' }),
  path: row({ flag: '--path <path>', env: 'REALTIMED_PATH', default: '/', parse: text, help: 'WebSocket endpoint path' }),
  jwtSecret: row<string | undefined>({
    flag: '--jwt-secret <secret>', env: 'REALTIMED_JWT_SECRET', default: undefined, parse: optionalText,
    help: 'HS256 secret that signs client tokens (32+ characters)',
  }),
  jwksUrl: row<string | undefined>({
    flag: '--jwks-url <url>', env: 'REALTIMED_JWKS_URL', default: undefined, parse: optionalText,
    help: 'JWKS URL for RS256/ES256 client tokens',
  }),
  jwtAudience: row<string | undefined>({
    flag: '--jwt-audience <aud>', env: 'REALTIMED_JWT_AUDIENCE', default: undefined, parse: optionalText,
    help: 'accept only tokens whose aud claim names this audience',
  }),
  jwtIssuer: row<string | undefined>({
    flag: '--jwt-issuer <iss>', env: 'REALTIMED_JWT_ISSUER', default: undefined, parse: optionalText,
    help: 'accept only tokens whose iss claim is this issuer',
  }),
  roles: row({
    flag: '--roles <list>', env: 'REALTIMED_ROLES', default: ['anon', 'authenticated'], parse: list,
    help: 'roles a token may carry, comma-separated',
  }),
  allowAnon: row({
    flag: '--no-anon', env: 'REALTIMED_NO_ANON', default: true,
    help: 'refuse connections without a token (they must send an auth frame)',
  }),
  allowedOrigins: row<string[]>({
    flag: '--allowed-origins <list>', env: 'REALTIMED_ALLOWED_ORIGINS', default: [], parse: list, hideDefault: true,
    help: 'browser origins allowed to connect, comma-separated (default: any)',
  }),
  logLevel: row({
    flag: '--log-level <level>', env: 'REALTIMED_LOG_LEVEL', default: 'info', parse: text,
    help: 'fatal, error, warn, info, debug, trace or silent', dev: { default: 'warn' },
  }),
  inspector: row({
    flag: '--inspector', env: 'REALTIMED_INSPECTOR', default: false,
    help: 'serve the inspector page at /inspector (a development tool)',
    dev: { flag: '--no-inspector', env: 'REALTIMED_NO_INSPECTOR', default: true, help: 'do not serve the inspector page at /inspector' },
  }),
  maxFrameBytes: row({
    flag: '--max-frame-bytes <n>', env: 'REALTIMED_MAX_FRAME_BYTES', default: 128 * 1024, parse: integer(1024, 64 * 1024 * 1024),
    help: 'largest client frame; bigger closes with 1009',
  }),
  maxSubscriptions: row({
    flag: '--max-subscriptions <n>', env: 'REALTIMED_MAX_SUBSCRIPTIONS', default: 100, parse: integer(1, 100_000),
    help: 'subscriptions per connection',
  }),
  publishRate: row({
    flag: '--publish-rate <n>', env: 'REALTIMED_PUBLISH_RATE', default: 20, parse: integer(1, 1_000_000),
    help: 'client publishes per second per connection',
  }),
  idleTimeoutMs: row({
    flag: '--idle-timeout <ms>', env: 'REALTIMED_IDLE_TIMEOUT', default: 0, parse: integer(0, 86_400_000),
    help: 'close a connection with no subscription for this long with 4010; 0 is off',
  }),
  allowPresence: row({
    flag: '--no-presence', env: 'REALTIMED_NO_PRESENCE', default: true,
    help: 'refuse presence frames (FEATURE_DISABLED): clients cannot set presence state',
  }),
  allowEphemeral: row({
    flag: '--no-ephemeral', env: 'REALTIMED_NO_EPHEMERAL', default: true,
    help: 'refuse ephemeral publishes from sockets and from non-admin tokens on POST /api/broadcast (FEATURE_DISABLED)',
  }),
  allowClientPublish: row({
    flag: '--no-client-publish', env: 'REALTIMED_NO_CLIENT_PUBLISH', default: true,
    help: 'refuse stored publishes from sockets and from non-admin tokens on POST /api/broadcast (FEATURE_DISABLED)',
  }),
  pingIntervalMs: row({
    flag: '--ping-interval <ms>', env: 'REALTIMED_PING_INTERVAL', default: 30_000, parse: integer(100, 3_600_000),
    help: 'WebSocket ping interval; a socket that misses one is dropped',
  }),
  maxBufferedBytes: row({
    flag: '--max-buffered-bytes <n>', env: 'REALTIMED_MAX_BUFFERED_BYTES', default: 4 * 1024 * 1024, parse: integer(1024, 2 ** 31 - 1),
    help: 'unsent bytes after which a slow socket is closed with 4008',
  }),
  authTimeoutMs: row({
    flag: '--auth-timeout <ms>', env: 'REALTIMED_AUTH_TIMEOUT', default: 10_000, parse: integer(100, 3_600_000),
    help: 'with --no-anon: time to send an auth frame',
  }),
  poolSize: row({
    flag: '--pool-size <n>', env: 'REALTIMED_POOL_SIZE', default: 10, parse: integer(1, 1000), help: 'pooled database connections',
  }),
  perMessageDeflate: row({
    flag: '--permessage-deflate', env: 'REALTIMED_PERMESSAGE_DEFLATE', default: false,
    help: 'compress frames (costs CPU and memory per socket)',
  }),
  webhooks: row({ flag: '--no-webhooks', env: 'REALTIMED_NO_WEBHOOKS', default: true, help: 'do not deliver webhooks from this instance' }),
  webhookSecret: row<string | undefined>({
    flag: '--webhook-secret <secret>', env: 'REALTIMED_WEBHOOK_SECRET', default: undefined, parse: optionalText,
    help: 'sign webhooks: X-Realtime-Signature (16+ characters)',
  }),
  webhookAllowLocal: row({
    flag: '--webhook-allow-local', env: 'REALTIMED_WEBHOOK_ALLOW_LOCAL', default: false,
    help: 'let webhooks reach loopback and link-local addresses (refused by default: 127.0.0.1, 169.254.169.254)',
    dev: { default: true },
  }),
  webhookTimeoutMs: row({
    flag: '--webhook-timeout <ms>', env: 'REALTIMED_WEBHOOK_TIMEOUT', default: 10_000, parse: integer(100, 600_000),
    help: 'give up on a webhook request after this long',
  }),
  webhookConcurrency: row({
    flag: '--webhook-concurrency <n>', env: 'REALTIMED_WEBHOOK_CONCURRENCY', default: 4, parse: integer(1, 1000),
    help: 'requests in flight to one URL',
  }),
  webhookMaxInFlight: row({
    flag: '--webhook-max-in-flight <n>', env: 'REALTIMED_WEBHOOK_MAX_IN_FLIGHT', default: 64, parse: integer(1, 10_000),
    help: 'webhook requests in flight in all',
  }),
  webhookSweepMs: row({
    flag: '--webhook-sweep-interval <ms>', env: 'REALTIMED_WEBHOOK_SWEEP_INTERVAL', default: 1000, parse: integer(50, 3_600_000),
    help: 'how often to look for retries that fell due',
  }),
  statsIntervalMs: row({
    flag: '--stats-interval <ms>', env: 'REALTIMED_STATS_INTERVAL', default: 1000, parse: integer(50, 3_600_000),
    help: 'how often delivery statistics are written',
  }),
  maxReplay: row({
    flag: '--max-replay <n>', env: 'REALTIMED_MAX_REPLAY', default: 1000, parse: integer(0, 1_000_000),
    help: 'events a subscribe with since may replay before REPLAY_UNAVAILABLE',
  }),
  recoveryIntervalMs: row({
    flag: '--recovery-interval <ms>', env: 'REALTIMED_RECOVERY_INTERVAL', default: 1000, parse: integer(50, 3_600_000),
    help: 'how often to look for committed messages never notified',
  }),
  pollIntervalMs: row({
    flag: '--poll-interval <ms>', env: 'REALTIMED_POLL_INTERVAL', default: 20, parse: integer(5, 60_000),
    help: "with realtime.config.delivery = 'poll': how often to read what committed",
  }),
  pruneIntervalMs: row({
    flag: '--prune-interval <ms>', env: 'REALTIMED_PRUNE_INTERVAL', default: 0, parse: integer(0, 86_400_000),
    help: 'run realtime.prune() this often; 0 is off',
  }),
  maxConnections: row({
    flag: '--max-connections <n>', env: 'REALTIMED_MAX_CONNECTIONS', default: 10_000, parse: integer(0, 10_000_000),
    help: 'open sockets on this instance; 0 is no limit',
  }),
  maxConnectionsPerUser: row({
    flag: '--max-connections-per-user <n>', env: 'REALTIMED_MAX_CONNECTIONS_PER_USER', default: 100, parse: integer(0, 10_000_000),
    help: 'open sockets per user (token role and sub); 0 is no limit',
  }),
  connectRate: row({
    flag: '--connect-rate <n>', env: 'REALTIMED_CONNECT_RATE', default: 0, parse: integer(0, 1_000_000),
    help: 'new connections per second per client address (bursts of twice that); 0 is off',
  }),
  ephemeralRate: row({
    flag: '--ephemeral-rate <n>', env: 'REALTIMED_EPHEMERAL_RATE', default: 50, parse: integer(1, 1_000_000),
    help: 'ephemeral messages per second per connection',
  }),
  maxPresenceMembers: row({
    flag: '--max-presence-members <n>', env: 'REALTIMED_MAX_PRESENCE_MEMBERS', default: 1000, parse: integer(1, 1_000_000),
    help: 'members in one channel\'s presence',
  }),
  maxPresenceBytes: row({
    flag: '--max-presence-bytes <n>', env: 'REALTIMED_MAX_PRESENCE_BYTES', default: 2048, parse: integer(2, 1_000_000),
    help: 'bytes of one socket\'s presence state',
  }),
  presenceThrottleMs: row({
    flag: '--presence-throttle <ms>', env: 'REALTIMED_PRESENCE_THROTTLE', default: 100, parse: integer(0, 60_000),
    help: 'at most one presence_diff per channel per this period',
  }),
  presenceHeartbeatMs: row({
    flag: '--presence-heartbeat <ms>', env: 'REALTIMED_PRESENCE_HEARTBEAT', default: 5000, parse: integer(100, 600_000),
    help: 'how often this instance tells the database it is alive',
  }),
  presenceTimeoutMs: row({
    flag: '--presence-timeout <ms>', env: 'REALTIMED_PRESENCE_TIMEOUT', default: 15_000, parse: integer(200, 3_600_000),
    help: 'an instance silent this long is removed with its presence members',
  }),
  metricsToken: row<string | undefined>({
    flag: '--metrics-token <token>', env: 'REALTIMED_METRICS_TOKEN', default: undefined, parse: optionalText,
    help: 'GET /metrics needs "Authorization: Bearer <token>" (default: open; keep the port off public networks)',
  }),
  adminRole: row({
    flag: '--admin-role <role>', env: 'REALTIMED_ADMIN_ROLE', default: 'service_role', parse: text,
    help: 'token role the HTTP API treats as admin (/api/channels, /api/changes, /api/connections, /api/subscriptions)',
  }),
};

type Options = typeof OPTIONS;
export type OptionName = keyof Options;
type ValueOf<R> = R extends Row<infer T> ? T : never;

/** Everything `realtimed start` is configured with (flags, else environment, else defaults). */
export type StartConfig = { [K in Exclude<OptionName, 'listenUrl'>]: ValueOf<Options[K]> } & {
  databaseUrl: string;
  /** A direct connection for LISTEN (not through a transaction pooler); --database-url unless given. */
  listenUrl: string;
};

/** The defaults of `start` (for library users and tests). */
export const START_DEFAULTS = Object.fromEntries(
  Object.entries(OPTIONS).map(([name, r]: [string, Row<unknown>]) => [name, r.default]),
) as { readonly [K in OptionName]: ValueOf<Options[K]> };

type Command = 'start' | 'dev';

function rowFor(name: OptionName, command: Command): Row<unknown> {
  const r = OPTIONS[name] as Row<unknown>;
  return command === 'dev' && r.dev ? { ...r, ...r.dev } : r;
}

/** The commander Option of one row, as `start` or `dev` has it. */
export function commanderOption(name: OptionName, command: Command = 'start'): Option {
  const r = rowFor(name, command);
  const option = new Option(r.flag, r.help).env(r.env);
  if (r.parse) option.argParser(r.parse);
  // Negated flags (--no-anon) default to true by themselves.
  if (r.default !== undefined && !r.hideDefault && !option.negate) {
    option.default(r.default, Array.isArray(r.default) ? JSON.stringify(r.default.join(',')) : undefined);
  }
  return option;
}

/** Every row's commander option, in table order. */
export function commanderOptions(command: Command): Option[] {
  return (Object.keys(OPTIONS) as OptionName[]).map((name) => commanderOption(name, command));
}

/** The configuration commander parsed, checked (shared by `start` and `dev`). */
export function startConfigFrom(
  opts: Record<string, unknown>,
  command: Command,
  given: { databaseUrl: string; jwtSecret?: string | undefined },
): StartConfig {
  const values: Record<string, unknown> = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const r = rowFor(name, command);
    const value = opts[commanderOption(name, command).attributeName()];
    values[name] = value === undefined ? r.default : value;
  }
  const config = {
    ...(values as { [K in OptionName]: ValueOf<Options[K]> }),
    databaseUrl: given.databaseUrl,
    listenUrl: (values['listenUrl'] as string | undefined) ?? given.databaseUrl,
    jwtSecret: 'jwtSecret' in given ? given.jwtSecret : (values['jwtSecret'] as string | undefined),
  };
  return checkStartConfig(config);
}

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
  if (config.metricsToken !== undefined && config.metricsToken.length < 16) {
    throw usage('--metrics-token must be at least 16 characters');
  }
  if (config.webhookSecret !== undefined && config.webhookSecret.length < 16) {
    throw usage('--webhook-secret must be at least 16 characters');
  }
  return config;
}
