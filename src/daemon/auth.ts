/**
 * Client tokens: verified with --jwt-secret (HS256) or --jwks-url (RS256/ES256),
 * each becoming an Identity.
 *
 * A token that verified is remembered (a storm of reconnects carries the same
 * tokens again): the next connection with it skips the signature check, but
 * never past its `exp`, never for longer than CACHE_MS (a key taken out of the
 * JWKS stops being honoured within that), and at most CACHE_SIZE tokens, the
 * least recently used going first. A token that failed is never remembered.
 */
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

import type { Identity } from '../db/identity.js';
import { WireError } from '../protocol/errors.js';

export interface Authenticator {
  /** Verifies a token; throws WireError UNAUTHORIZED or TOKEN_EXPIRED. */
  verify(token: string): Promise<Identity>;
  /** Tokens remembered now (for tests and metrics). */
  cached(): number;
  /** The identity of a connection without a token, or null when anon is off. */
  anonymous(): Identity | null;
}

export interface AuthOptions {
  jwtSecret: string | undefined;
  jwksUrl: string | undefined;
  /** Tokens must name this audience (aud) and come from this issuer (iss), when set. */
  jwtAudience: string | undefined;
  jwtIssuer: string | undefined;
  roles: string[];
  allowAnon: boolean;
  now: () => number;
}

/** The role a verified token without a role claim gets. */
const DEFAULT_ROLE = 'authenticated';
const CACHE_SIZE = 10_000;
const CACHE_MS = 5 * 60_000;

export function createAuthenticator(options: AuthOptions): Authenticator {
  let key: Uint8Array | JWTVerifyGetKey | undefined;
  let algorithms: string[] = [];
  if (options.jwtSecret !== undefined) {
    key = new TextEncoder().encode(options.jwtSecret);
    algorithms = ['HS256'];
  } else if (options.jwksUrl !== undefined) {
    key = createRemoteJWKSet(new URL(options.jwksUrl));
    algorithms = ['RS256', 'ES256'];
  }
  const roles = new Set(options.roles);
  /** Verified tokens: their identity, and until when (ms) they may be taken from here. Insertion order is recency. */
  const cache = new Map<string, { identity: Identity; until: number }>();

  return {
    async verify(token) {
      if (key === undefined) throw new WireError('UNAUTHORIZED', 'this server accepts no tokens');
      const now = options.now();
      const hit = cache.get(token);
      if (hit) {
        cache.delete(token);
        if (now < hit.until) {
          cache.set(token, hit);
          return hit.identity;
        }
        // Expired, or remembered long enough: verified afresh (an expired one fails there, as TOKEN_EXPIRED).
      }
      let payload: JWTPayload;
      try {
        // jose refuses alg "none" and any algorithm not listed here.
        ({ payload } = await jwtVerify(token, key as Uint8Array, {
          algorithms,
          currentDate: new Date(options.now()),
          ...(options.jwtAudience === undefined ? {} : { audience: options.jwtAudience }),
          ...(options.jwtIssuer === undefined ? {} : { issuer: options.jwtIssuer }),
        }));
      } catch (err) {
        if (err instanceof errors.JWTExpired) throw new WireError('TOKEN_EXPIRED', 'the token has expired');
        throw new WireError('UNAUTHORIZED', 'the token is not valid');
      }
      const role = payload['role'] === undefined ? DEFAULT_ROLE : payload['role'];
      if (typeof role !== 'string' || !roles.has(role)) {
        throw new WireError('UNAUTHORIZED', 'the token’s role is not allowed here');
      }
      // Shared by every connection with this token: frozen.
      const identity: Identity = Object.freeze({
        role,
        claims: Object.freeze({ ...payload, role }),
        exp: typeof payload.exp === 'number' ? payload.exp : undefined,
      });
      const until = Math.min(now + CACHE_MS, identity.exp === undefined ? Infinity : identity.exp * 1000);
      if (until > now) {
        cache.set(token, { identity, until });
        if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      }
      return identity;
    },
    cached: () => cache.size,
    anonymous() {
      return options.allowAnon ? { role: 'anon', claims: { role: 'anon' }, exp: undefined } : null;
    },
  };
}
