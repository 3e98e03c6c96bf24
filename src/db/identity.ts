/**
 * Acting as a client: every statement that asks the policies runs as the
 * client's role with its verified claims (realtime.impersonate), inside a
 * transaction whose end ends the role, so a pooled connection comes back clean.
 */
import type pg from 'pg';

/** Who a connection acts as in the database. */
export interface Identity {
  role: string;
  /** The verified claims, set as request.jwt.claims. */
  claims: Record<string, unknown>;
  /** Expiry in seconds since the epoch, when the token has one. */
  exp: number | undefined;
}

/** role and claims as the SQL functions take them ($n::text, $n::jsonb). */
export function identityParams(identity: Identity): [string, string] {
  return [identity.role, JSON.stringify(identity.claims)];
}

/**
 * Runs fn in a transaction acting as the identity (realtime.impersonate), so
 * its grants and policies decide; committed if fn resolves, else rolled back.
 */
export async function asIdentity<T>(pool: pg.Pool, identity: Identity, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query('select realtime.impersonate($1, $2)', identityParams(identity));
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
