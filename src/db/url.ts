/** Database URLs: checked before anything connects with them, and named without their password. */
import { RealtimedError } from '../cli/errors.js';

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
