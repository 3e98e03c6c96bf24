/**
 * The wire protocol's errors (docs/protocol.md, docs/http.md): one table of
 * codes, each with the HTTP status the API answers it with and, for the codes
 * that end a connection, the WebSocket close code that follows the error
 * frame. The client imports these types only (no runtime code reaches it).
 */

export const WIRE_ERRORS = {
  /** A policy or grant denies; a bad token (HTTP 401 then, see http/api.ts). */
  UNAUTHORIZED: { status: 403, close: 4003 },
  TOKEN_EXPIRED: { status: 401, close: 4001 },
  NOT_SUBSCRIBED: { status: 400 },
  INVALID_MESSAGE: { status: 400 },
  INVALID_FILTER: { status: 400 },
  NOT_FOUND: { status: 404 },
  /** HTTP only: the route exists, the method does not. */
  METHOD_NOT_ALLOWED: { status: 405 },
  CONFLICT: { status: 409 },
  PAYLOAD_TOO_LARGE: { status: 413 },
  RATE_LIMITED: { status: 429 },
  /** This instance runs with the feature switched off (--no-presence, --no-ephemeral, --no-client-publish). */
  FEATURE_DISABLED: { status: 403 },
  /** Closes only for the connection limits (this instance, this user). */
  LIMIT_EXCEEDED: { status: 429, close: 4029 },
  REPLAY_UNAVAILABLE: { status: 410 },
  /** The database is a hot standby (in recovery): presence can be neither read nor set there. */
  PRESENCE_UNAVAILABLE: { status: 503 },
  INTERNAL_ERROR: { status: 503 },
} as const satisfies Record<string, { status: number; close?: number }>;

/** Error codes of the WebSocket protocol and the HTTP API. */
export type WireErrorCode = keyof typeof WIRE_ERRORS;

/** WebSocket close codes the server uses (docs/protocol.md, "Close codes"). */
export const CloseCode = {
  SHUTDOWN: 1001,
  TOO_LARGE: 1009,
  TOKEN_EXPIRED: WIRE_ERRORS.TOKEN_EXPIRED.close,
  UNAUTHORIZED: WIRE_ERRORS.UNAUTHORIZED.close,
  SLOW_CONSUMER: 4008,
  /** No subscription for --idle-timeout. */
  IDLE_TIMEOUT: 4010,
  /** Too many connections: this instance is full, or this user has too many. */
  TOO_MANY_CONNECTIONS: WIRE_ERRORS.LIMIT_EXCEEDED.close,
} as const;

/** An error the server reports in an error frame (or an HTTP error body). */
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
