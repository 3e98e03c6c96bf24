/**
 * Replay cursors. A `subscribed` frame carries a cursor: the stream position
 * at which this identity (its role and sub) was allowed to subscribe to this
 * channel, signed with a key every instance derives from realtime.notify_key.
 * A replay (`since`) needs one: it covers only what came after a position
 * the subscriber was given, never a channel's history from before it was
 * allowed in (an order handed to a new owner does not replay the previous
 * owner's messages to them).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface CursorScope {
  channel: string;
  role: string;
  /** The token's sub ('' without one). */
  sub: string;
  epoch: string;
}

function mac(key: Buffer, scope: CursorScope, seq: number): string {
  return createHmac('sha256', key)
    .update(JSON.stringify([scope.channel, scope.role, scope.sub, scope.epoch, seq]))
    .digest('base64url')
    .slice(0, 32);
}

/** `<seq>.<mac>`: the position, and proof it was given to this scope. */
export function issueCursor(key: Buffer, scope: CursorScope, seq: number): string {
  return `${seq}.${mac(key, scope, seq)}`;
}

/** The position a cursor gives this scope, or null when it was not issued to it (or is not a cursor). */
export function readCursor(key: Buffer, scope: CursorScope, cursor: string): number | null {
  const m = /^(\d{1,16})\.([A-Za-z0-9_-]{32})$/.exec(cursor);
  if (!m?.[1] || !m[2]) return null;
  const seq = Number(m[1]);
  if (!Number.isSafeInteger(seq)) return null;
  const expected = Buffer.from(mac(key, scope, seq));
  const given = Buffer.from(m[2]);
  return expected.length === given.length && timingSafeEqual(expected, given) ? seq : null;
}
