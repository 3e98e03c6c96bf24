/** HTTP answers: JSON bodies, and the error body every route uses. */
import type { ServerResponse } from 'node:http';

import { WIRE_ERRORS, type WireError, type WireErrorCode } from '../protocol/errors.js';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * `{"error": CODE, "message": ...}` with the code's status (or the one given),
 * as docs/http.md lists; a retryAfter (milliseconds) is also a Retry-After header.
 */
export function sendError(res: ServerResponse, error: WireError | { code: WireErrorCode; message: string }, status?: number): void {
  const extra = 'extra' in error ? error.extra : {};
  const retryAfter = typeof extra['retryAfter'] === 'number' ? { 'retry-after': String(Math.ceil(extra['retryAfter'] / 1000)) } : undefined;
  sendJson(res, status ?? WIRE_ERRORS[error.code].status, { error: error.code, message: error.message, ...extra }, retryAfter);
}
