/**
 * Ephemeral messages (typing indicators, cursors): checked against the INSERT
 * policies like any publish, then sent to every instance as a NOTIFY and never
 * stored. Any database role may NOTIFY, so each notification carries an
 * HMAC-SHA256 under realtime.notify_key, which only service_role can read;
 * a notification that does not verify is dropped and counted.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

import type { Identity } from './auth.js';
import { parseObject } from './protocol.js';


function mac(key: string, channel: string, frame: string): string {
  return createHmac('sha256', key).update(channel).update('\n').update(frame).digest('base64url');
}

/** The event frame of an ephemeral message (docs/protocol.md). */
export function ephemeralFrame(
  m: { channel: string; event: string; payload: Record<string, unknown> },
  identity: Identity,
  now: number,
): string {
  const sub = identity.claims['sub'];
  return JSON.stringify({
    type: 'event',
    channel: m.channel,
    event: m.event,
    payload: m.payload,
    meta: {
      ephemeral: true,
      senderType: 'user',
      senderId: typeof sub === 'string' ? sub : null,
      timestamp: new Date(now).toISOString(),
    },
  });
}

/** The NOTIFY payload: the frame and its signature. */
export function signNotification(key: string, channel: string, frame: string): string {
  return JSON.stringify({ v: 1, channel, frame, sig: mac(key, channel, frame) });
}

/** The channel and frame of a notification whose signature holds, else null. */
export function verifyNotification(key: string, text: string): { channel: string; frame: string } | null {
  const n = parseObject(text);
  if (n === null) return null;
  if (n['v'] !== 1 || typeof n['channel'] !== 'string' || typeof n['frame'] !== 'string' || typeof n['sig'] !== 'string') {
    return null;
  }
  const expected = Buffer.from(mac(key, n['channel'], n['frame']));
  const given = Buffer.from(n['sig']);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
  return { channel: n['channel'], frame: n['frame'] };
}
