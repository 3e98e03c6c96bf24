/**
 * Every error realtimed reports carries a code from this file; docs/errors.md
 * lists them. Tests match the code, never the message.
 */

/** Errors of the command line and of installing the SQL package. */
export type CliErrorCode =
  | 'RT_ERR_USAGE'
  | 'RT_ERR_DB_URL'
  | 'RT_ERR_DB_UNREACHABLE'
  | 'RT_ERR_DB_AUTH'
  | 'RT_ERR_DB_MISSING'
  | 'RT_ERR_DB_PRIVILEGE'
  | 'RT_ERR_DB'
  | 'RT_ERR_FOREIGN_SCHEMA'
  | 'RT_ERR_FOREIGN_CHAIN'
  | 'RT_ERR_SCRIPT_INSTALLED'
  | 'RT_ERR_VERSION'
  | 'RT_ERR_MIGRATION'
  | 'RT_ERR_EMBEDDED'
  | 'RT_ERR_BUSY'
  | 'RT_ERR_DOCTOR'
  | 'RT_ERR_WORKERS';

/** Shell exit code of each CLI error: 2 for what the operator can fix. */
const EXIT_CODES: Record<CliErrorCode, number> = {
  RT_ERR_USAGE: 2,
  RT_ERR_DB_URL: 2,
  RT_ERR_DB_UNREACHABLE: 2,
  RT_ERR_DB_AUTH: 2,
  RT_ERR_DB_MISSING: 2,
  RT_ERR_DB_PRIVILEGE: 2,
  RT_ERR_DB: 2,
  RT_ERR_FOREIGN_SCHEMA: 2,
  RT_ERR_FOREIGN_CHAIN: 2,
  RT_ERR_SCRIPT_INSTALLED: 2,
  RT_ERR_VERSION: 2,
  RT_ERR_MIGRATION: 2,
  RT_ERR_EMBEDDED: 2,
  RT_ERR_BUSY: 2,
  RT_ERR_DOCTOR: 1,
  RT_ERR_WORKERS: 1,
};

export class RealtimedError extends Error {
  readonly code: CliErrorCode;
  readonly exitCode: number;

  constructor(code: CliErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RealtimedError';
    this.code = code;
    this.exitCode = EXIT_CODES[code];
  }
}

/** The fields of a node-postgres DatabaseError or a socket error we read. */
interface PgLikeError {
  code?: unknown;
  message?: unknown;
  hint?: unknown;
}

function pgFields(err: unknown): { code: string; message: string; hint: string } {
  const e = (typeof err === 'object' && err !== null ? err : {}) as PgLikeError;
  return {
    code: typeof e.code === 'string' ? e.code : '',
    message: typeof e.message === 'string' ? e.message : String(err),
    hint: typeof e.hint === 'string' ? e.hint : '',
  };
}

/**
 * Turns an error from connecting to or querying PostgreSQL into one line an
 * operator can act on. `where` names the server (host:port/db, no password).
 */
export function fromPgError(err: unknown, where: string): RealtimedError {
  if (err instanceof RealtimedError) return err;
  const { code, message, hint } = pgFields(err);
  const withHint = hint ? `${message} (${hint})` : message;
  switch (code) {
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
      return new RealtimedError('RT_ERR_DB_UNREACHABLE', `cannot reach PostgreSQL at ${where}: ${code}`, { cause: err });
    case '28P01':
    case '28000':
      return new RealtimedError('RT_ERR_DB_AUTH', `PostgreSQL at ${where} refused the login: ${message}`, { cause: err });
    case '3D000':
      return new RealtimedError('RT_ERR_DB_MISSING', `PostgreSQL at ${where}: ${message}`, { cause: err });
    case '42501':
      return new RealtimedError('RT_ERR_DB_PRIVILEGE', `missing privileges on ${where}: ${withHint}`, { cause: err });
    default:
      if (/timeout|terminated|Connection terminated/i.test(message) && !code) {
        return new RealtimedError('RT_ERR_DB_UNREACHABLE', `cannot reach PostgreSQL at ${where}: ${message}`, { cause: err });
      }
      return new RealtimedError('RT_ERR_DB', `PostgreSQL at ${where}: ${withHint}${code ? ` [${code}]` : ''}`, { cause: err });
  }
}

/** Error codes of the WebSocket protocol (docs/protocol.md). */
export type WireErrorCode =
  | 'UNAUTHORIZED'
  | 'NOT_SUBSCRIBED'
  | 'INVALID_MESSAGE'
  | 'INVALID_FILTER'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'RATE_LIMITED'
  | 'LIMIT_EXCEEDED'
  | 'TOKEN_EXPIRED'
  | 'REPLAY_UNAVAILABLE'
  | 'INTERNAL_ERROR';

/** WebSocket close codes the server uses. */
export const CloseCode = {
  SHUTDOWN: 1001,
  TOO_LARGE: 1009,
  TOKEN_EXPIRED: 4001,
  UNAUTHORIZED: 4003,
  SLOW_CONSUMER: 4008,
  /** Too many connections: this instance is full, or this user has too many. */
  TOO_MANY_CONNECTIONS: 4029,
} as const;

/** An error the server reports in an error frame. */
export class WireError extends Error {
  readonly code: WireErrorCode;
  readonly extra: Record<string, unknown>;

  constructor(code: WireErrorCode, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'WireError';
    this.code = code;
    this.extra = extra;
  }
}

/**
 * The wire code for an error from the database: what the SQL package raises
 * (docs/sql.md, "Errors"), a policy's own error (a denial), or the database
 * being unreachable (INTERNAL_ERROR; still a denial).
 */
export function wireErrorFromPg(err: unknown): WireError {
  if (err instanceof WireError) return err;
  const { code, message } = pgFields(err);
  if (code === '42501' || code === 'RT404') return new WireError('UNAUTHORIZED', 'not allowed');
  if (code === 'RT413') return new WireError('PAYLOAD_TOO_LARGE', message.replace(/^realtime: /, ''));
  if (code === 'RT429') return new WireError('LIMIT_EXCEEDED', message.replace(/^realtime: /, ''));
  if (code === '23505') return new WireError('CONFLICT', 'it exists already');
  if (code === 'RT400' || code === '23514' || code === '22P02' || code === '22023') {
    return new WireError('INVALID_MESSAGE', message.replace(/^realtime: /, ''));
  }
  // Any other SQLSTATE comes from a policy or function that failed: deny.
  if (/^[0-9A-Z]{5}$/.test(code) && !code.startsWith('08') && !code.startsWith('57') && !code.startsWith('53')) {
    return new WireError('UNAUTHORIZED', 'not allowed');
  }
  return new WireError('INTERNAL_ERROR', 'the server could not reach its database');
}
