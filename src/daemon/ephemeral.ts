/**
 * Ephemeral messages (typing indicators, cursors), both directions:
 *
 * - publish(): checked against the INSERT policies like any publish, then
 *   sent to every instance as a NOTIFY (realtime.send_ephemeral); never
 *   stored or replayed. Used by sockets and by POST /api/broadcast.
 * - onNotification(): a NOTIFY realtime_ephemeral, verified, then written
 *   to this instance's subscribers of its channel.
 *
 * Any database role may NOTIFY, so each notification carries an HMAC-SHA256
 * under realtime.notify_key, which only service_role can read; a
 * notification that does not verify is dropped and counted.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import type { Identity } from '../db/identity.js';
import type { ChannelLimits } from '../db/subscriptions.js';
import { WireError } from '../protocol/errors.js';
import { eventFrame, parseObject } from '../protocol/frames.js';
import { errorText } from './boundary.js';
import { deliver, type Hub } from './hub.js';
import type { Metrics } from './metrics.js';

function mac(key: string, channel: string, frame: string): string {
  return createHmac('sha256', key).update(channel).update('\n').update(frame).digest('base64url');
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

export interface Ephemeral {
  /** Reads realtime.notify_key; until it has, publish() refuses and notifications are dropped. */
  load(): Promise<void>;
  readonly ready: boolean;
  /**
   * Publishes as the identity: the channel's payload cap (limits, when the
   * caller has them; else read now), the INSERT policies, then the NOTIFY.
   */
  publish(identity: Identity, m: { channel: string; event: string; payload: Record<string, unknown> }, limits?: ChannelLimits): Promise<void>;
  /** A NOTIFY realtime_ephemeral arrived. */
  onNotification(payload: string | undefined): void;
}

export function createEphemeral(deps: { db: Db; hub: Hub; metrics: Metrics; logger: Logger; now: () => number }): Ephemeral {
  const { db, hub, metrics, logger } = deps;
  let key: string | null = null;
  let seq = 0;

  return {
    async load() {
      try {
        key = await db.notifyKey();
      } catch (err) {
        logger.warn({ err: errorText(err) }, 'could not read realtime.notify_key: ephemeral messages wait for the database');
      }
    },
    get ready() {
      return key !== null;
    },
    async publish(identity, m, limits) {
      if (key === null) throw new WireError('INTERNAL_ERROR', 'ephemeral messages are not available yet');
      const cap = (limits ?? (await db.matchChannels([m.channel])).get(m.channel)?.limits)?.maxMessageBytes ?? null;
      const bytes = Buffer.byteLength(JSON.stringify(m.payload));
      if (cap !== null && bytes > cap) {
        throw new WireError('PAYLOAD_TOO_LARGE', `payload is ${bytes} bytes, over this channel's limit of ${cap} bytes`);
      }
      const sub = identity.claims['sub'];
      const frame = JSON.stringify(
        eventFrame(m.channel, m.event, m.payload, {
          ephemeral: true,
          senderType: 'user',
          senderId: typeof sub === 'string' ? sub : null,
          timestamp: new Date(deps.now()).toISOString(),
        }),
      );
      await db.sendEphemeral(identity, m.channel, m.event, signNotification(key, m.channel, frame));
    },
    onNotification(payload) {
      const verified = key !== null && payload !== undefined ? verifyNotification(key, payload) : null;
      if (!verified) {
        metrics.notificationsDropped.inc({ reason: 'forged' });
        return;
      }
      const subscribers = hub.subscribers(verified.channel);
      if (!subscribers) return;
      const written = deliver(subscribers, { frame: Buffer.from(verified.frame), id: `e${++seq}` });
      if (written > 0) {
        metrics.ephemeralRelayed.inc();
        metrics.framesSent.inc(written);
      }
    },
  };
}
