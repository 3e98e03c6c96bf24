/**
 * Ephemeral messages (typing indicators, cursors), both directions:
 *
 * - publish(): checked against the INSERT policies like any publish, then
 *   sent to every instance as a NOTIFY (realtime.send_ephemeral); never
 *   stored or replayed. Used by sockets and by POST /api/broadcast.
 * - onNotification(): a NOTIFY realtime_ephemeral, opened and checked, then
 *   written to this instance's subscribers of its channel.
 *
 * Any database role may LISTEN and NOTIFY on any channel. So the frame is
 * sealed with AES-256-GCM under a key derived from realtime.notify_key (which
 * only service_role can read): another role can neither read it nor forge
 * one. Each sealed notification names its sending instance, a sequence number
 * and a time; a receiver takes it once (ReplayWindow) and only within
 * WINDOW_MS of its time, so a captured one sent again is dropped.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

import type { Db } from '../db/index.js';
import type { Identity } from '../db/identity.js';
import type { ChannelLimits } from '../db/subscriptions.js';
import { WireError } from '../protocol/errors.js';
import { eventFrame, parseObject } from '../protocol/frames.js';
import { deliver, type Hub } from './hub.js';
import type { Keys } from './keys.js';
import type { Metrics } from './metrics.js';

/** How far a notification's time may be from the receiver's clock (both ways: instances' clocks differ). */
export const WINDOW_MS = 10_000;
/** Unopened notifications held while the key is re-read (each at most one notification, 8 KB). */
const MAX_DEFERRED = 256;
/** Sequence numbers a receiver remembers per sending instance. */
const SEQ_WINDOW = 4096;
/** NOTIFY carries at most 8000 bytes; realtime.send_ephemeral refuses over 7900. */
const MAX_NOTIFICATION_BYTES = 7900;

export interface Sealed {
  /** The sending instance. */
  instance: string;
  seq: number;
  /** Milliseconds since the epoch when it was sealed. */
  at: number;
  channel: string;
  frame: string;
}

/** The NOTIFY payload: {v:2, i, s, t, n, d}; channel and frame only inside d. */
export function seal(key: Buffer, m: Sealed): string {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(`${m.instance}.${m.seq}.${m.at}`));
  const sealed = Buffer.concat([cipher.update(JSON.stringify({ c: m.channel, f: m.frame })), cipher.final(), cipher.getAuthTag()]);
  return JSON.stringify({ v: 2, i: m.instance, s: m.seq, t: m.at, n: nonce.toString('base64'), d: sealed.toString('base64') });
}

/** What a notification sealed with this key says, or null (not ours, altered, or not one). */
export function unseal(key: Buffer, text: string): Sealed | null {
  const n = parseObject(text);
  if (n === null || n['v'] !== 2) return null;
  const { i, s, t, n: nonce, d } = n;
  if (typeof i !== 'string' || i.length > 64 || typeof s !== 'number' || !Number.isSafeInteger(s) || typeof t !== 'number') return null;
  if (typeof nonce !== 'string' || typeof d !== 'string') return null;
  const iv = Buffer.from(nonce, 'base64');
  const data = Buffer.from(d, 'base64');
  if (iv.length !== 12 || data.length < 17) return null;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAAD(Buffer.from(`${i}.${s}.${t}`));
    decipher.setAuthTag(data.subarray(data.length - 16));
    const plain = Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]);
    const body = parseObject(plain.toString());
    if (body === null || typeof body['c'] !== 'string' || typeof body['f'] !== 'string') return null;
    return { instance: i, seq: s, at: t, channel: body['c'], frame: body['f'] };
  } catch {
    return null;
  }
}

/**
 * Takes each (instance, seq) once: per sending instance the highest seq seen
 * and which of the SEQ_WINDOW before it were. Older ones are refused (they
 * are past WINDOW_MS too); instances silent for WINDOW_MS are forgotten.
 */
export class ReplayWindow {
  private readonly senders = new Map<string, { top: number; seen: Uint8Array; last: number }>();

  constructor(private readonly now: () => number) {}

  /** True the first time (instance, seq) is offered, false after. */
  take(instance: string, seq: number): boolean {
    const now = this.now();
    let sender = this.senders.get(instance);
    if (!sender) {
      if (this.senders.size > 1000) this.forget(now);
      sender = { top: seq, seen: new Uint8Array(SEQ_WINDOW / 8), last: now };
      this.senders.set(instance, sender);
      this.mark(sender, seq);
      return true;
    }
    sender.last = now;
    if (seq > sender.top) {
      // Slide: clear the slots the new top reuses.
      for (let k = sender.top + 1; k <= Math.min(seq, sender.top + SEQ_WINDOW); k++) this.clear(sender, k);
      sender.top = seq;
    } else if (seq <= sender.top - SEQ_WINDOW || this.has(sender, seq)) {
      return false;
    }
    this.mark(sender, seq);
    return true;
  }

  /** Drops the senders silent for WINDOW_MS. */
  forget(now = this.now()): void {
    for (const [instance, sender] of this.senders) if (now - sender.last > WINDOW_MS) this.senders.delete(instance);
  }

  private slot(seq: number): [number, number] {
    const i = ((seq % SEQ_WINDOW) + SEQ_WINDOW) % SEQ_WINDOW;
    return [i >> 3, 1 << (i & 7)];
  }
  private has(sender: { seen: Uint8Array }, seq: number): boolean {
    const [byte, bit] = this.slot(seq);
    return ((sender.seen[byte] ?? 0) & bit) !== 0;
  }
  private mark(sender: { seen: Uint8Array }, seq: number): void {
    const [byte, bit] = this.slot(seq);
    sender.seen[byte] = (sender.seen[byte] ?? 0) | bit;
  }
  private clear(sender: { seen: Uint8Array }, seq: number): void {
    const [byte, bit] = this.slot(seq);
    sender.seen[byte] = (sender.seen[byte] ?? 0) & ~bit;
  }
}

export interface Ephemeral {
  /**
   * Publishes as the identity: the channel's payload cap (limits, when the
   * caller has them; else read now), the INSERT policies, then the NOTIFY.
   */
  publish(identity: Identity, m: { channel: string; event: string; payload: Record<string, unknown> }, limits?: ChannelLimits): Promise<void>;
  /** A NOTIFY realtime_ephemeral arrived. */
  onNotification(payload: string | undefined): void;
  stop(): void;
}

export function createEphemeral(deps: {
  db: Db;
  hub: Hub;
  metrics: Metrics;
  now: () => number;
  /** Until realtime.notify_key is read, publish() refuses and notifications are dropped. */
  keys: Keys;
  /** This instance, named in what it seals. */
  instance: string;
}): Ephemeral {
  const { db, hub, metrics } = deps;
  let sent = 0;
  let delivered = 0;
  /** Notifications waiting for a key read to open them (MAX_DEFERRED at most). */
  let deferred = 0;
  const window = new ReplayWindow(deps.now);
  const sweeper = setInterval(() => window.forget(), WINDOW_MS);
  sweeper.unref();

  return {
    async publish(identity, m, limits) {
      const key = deps.keys.current?.sealing ?? null;
      if (key === null) throw new WireError('INTERNAL_ERROR', 'ephemeral messages are not available yet');
      const cap = (limits ?? (await db.matchChannels([m.channel])).get(m.channel)?.limits)?.maxMessageBytes ?? null;
      const bytes = Buffer.byteLength(JSON.stringify(m.payload));
      if (cap !== null && bytes > cap) {
        throw new WireError('PAYLOAD_TOO_LARGE', `payload is ${bytes} bytes, over this channel's limit of ${cap} bytes`);
      }
      const sub = identity.claims['sub'];
      const at = deps.now();
      const frame = JSON.stringify(
        eventFrame(m.channel, m.event, m.payload, {
          ephemeral: true,
          senderType: 'user',
          senderId: typeof sub === 'string' ? sub : null,
          timestamp: new Date(at).toISOString(),
        }),
      );
      const notification = seal(key, { instance: deps.instance, seq: ++sent, at, channel: m.channel, frame });
      if (Buffer.byteLength(notification) > MAX_NOTIFICATION_BYTES) {
        throw new WireError('PAYLOAD_TOO_LARGE', 'an ephemeral message must fit in one notification: keep its payload under about 5,500 bytes');
      }
      await db.sendEphemeral(identity, m.channel, m.event, notification);
    },
    onNotification(payload) {
      const open = (text: string): Sealed | null => {
        for (const k of deps.keys.accepted()) {
          const opened = unseal(k.sealing, text);
          if (opened) return opened;
        }
        return null;
      };
      const relay = (opened: Sealed | null): void => {
        if (!opened) {
          metrics.notificationsDropped.inc({ reason: 'forged' });
          return;
        }
        if (Math.abs(deps.now() - opened.at) > WINDOW_MS || !window.take(opened.instance, opened.seq)) {
          metrics.notificationsDropped.inc({ reason: 'replayed' });
          return;
        }
        const subscribers = hub.subscribers(opened.channel);
        if (!subscribers) return;
        const written = deliver(subscribers, { frame: Buffer.from(opened.frame), id: `e${++delivered}` });
        if (written > 0) {
          metrics.ephemeralRelayed.inc();
          metrics.framesSent.inc(written);
        }
      };
      if (payload === undefined) return relay(null);
      const opened = open(payload);
      const loading = deps.keys.loading;
      if (opened || !loading) return relay(opened);
      // Sealed under a key this instance is still reading: one LISTEN
      // connection delivers in commit order, so a rotation's NOTIFY
      // realtime_keys (which started the read) came before anything another
      // instance sealed with the new key. Open it once the read is done.
      // Bounded: past MAX_DEFERRED waiting, an unopened one is dropped as forged.
      if (deferred >= MAX_DEFERRED) {
        metrics.notificationsDropped.inc({ reason: 'forged' });
        return;
      }
      deferred++;
      void loading.then(() => {
        deferred--;
        relay(open(payload));
      });
    },
    stop() {
      clearInterval(sweeper);
    },
  };
}
