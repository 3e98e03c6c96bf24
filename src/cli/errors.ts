/**
 * Errors of the command line and of installing the SQL package: a code, an
 * exit status, and one line an operator can act on (docs/errors.md). The wire
 * protocol's codes are in protocol/errors.ts. Tests match codes, never messages.
 */
import { pgFields } from '../db/errors.js';

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
  | 'RT_ERR_VERSION'
  | 'RT_ERR_MIGRATION'
  | 'RT_ERR_EMBEDDED'
  | 'RT_ERR_BUSY'
  | 'RT_ERR_LISTEN'
  | 'RT_ERR_DELIVERY'
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
  RT_ERR_VERSION: 2,
  RT_ERR_MIGRATION: 2,
  RT_ERR_EMBEDDED: 2,
  RT_ERR_BUSY: 2,
  RT_ERR_LISTEN: 2,
  RT_ERR_DELIVERY: 2,
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
