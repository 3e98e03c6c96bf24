/**
 * The notifications the SQL package sends the daemon (docs/sql.md, "The
 * notification envelope"): their channel names, and the envelope of a
 * committed message. Any role can NOTIFY any channel, so each is a hint to be
 * checked against the table, never data to relay as it stands.
 */
import { parseObject } from '../protocol/frames.js';

export const MESSAGES_CHANNEL = 'realtime_messages';
export const CHANNELS_CHANNEL = 'realtime_channels';
export const WEBHOOKS_CHANNEL = 'realtime_webhooks';
export const PRESENCE_CHANNEL = 'realtime_presence';
export const EPHEMERAL_CHANNEL = 'realtime_ephemeral';
/** realtime.rotate_notify_key() committed: re-read the key (a hint). */
export const KEYS_CHANNEL = 'realtime_keys';
export const ALL_CHANNELS = [MESSAGES_CHANNEL, CHANNELS_CHANNEL, WEBHOOKS_CHANNEL, PRESENCE_CHANNEL, EPHEMERAL_CHANNEL, KEYS_CHANNEL];

/** The notification envelope the insert trigger of realtime.messages sends (docs/sql.md). */
export interface Envelope {
  id: string;
  seq: number;
  channel: string;
  /** process.hrtime.bigint() at receipt, for the fan-out latency. */
  receivedAt: bigint;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Reads an envelope; null for anything that is not one (counted as forged). */
export function parseEnvelope(text: string | undefined, receivedAt: bigint): Envelope | null {
  if (text === undefined || text.length > 2000) return null;
  const e = parseObject(text);
  if (e === null) return null;
  if (e['v'] !== 1 || typeof e['id'] !== 'string' || !UUID.test(e['id'])) return null;
  if (typeof e['seq'] !== 'number' || !Number.isSafeInteger(e['seq']) || typeof e['channel'] !== 'string') return null;
  return { id: e['id'], seq: e['seq'], channel: e['channel'], receivedAt };
}
