/** Client tokens: verified with --jwt-secret (HS256) or --jwks-url (RS256/ES256), each becoming an Identity. */
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

import type { Identity } from '../db/identity.js';
import { WireError } from '../protocol/errors.js';

export interface Authenticator {
  /** Verifies a token; throws WireError UNAUTHORIZED or TOKEN_EXPIRED. */
  verify(token: string): Promise<Identity>;
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

  return {
    async verify(token) {
      if (key === undefined) throw new WireError('UNAUTHORIZED', 'this server accepts no tokens');
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
      return { role, claims: { ...payload, role }, exp: typeof payload.exp === 'number' ? payload.exp : undefined };
    },
    anonymous() {
      return options.allowAnon ? { role: 'anon', claims: { role: 'anon' }, exp: undefined } : null;
    },
  };
}
