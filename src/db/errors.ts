/**
 * What an error from PostgreSQL means: the wire code a client gets (the
 * daemon), and the fields the CLI reads (cli/errors.ts). The SQL package's
 * own SQLSTATEs are listed in docs/errors.md.
 */
import { WireError } from '../protocol/errors.js';

/** The fields of a node-postgres DatabaseError or a socket error we read. */
interface PgLikeError {
  code?: unknown;
  message?: unknown;
  hint?: unknown;
}

export function pgFields(err: unknown): { code: string; message: string; hint: string } {
  const e = (typeof err === 'object' && err !== null ? err : {}) as PgLikeError;
  return {
    code: typeof e.code === 'string' ? e.code : '',
    message: typeof e.message === 'string' ? e.message : String(err),
    hint: typeof e.hint === 'string' ? e.hint : '',
  };
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
