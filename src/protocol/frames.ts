/**
 * The wire protocol's frames (docs/protocol.md): parsing what clients send,
 * building what the server sends. The event frame of a stored message is
 * built once in SQL (realtime.event_frame) and written as it is to every
 * subscriber; eventFrame() here builds the same frame for what never passes
 * through that function: ephemeral messages and the HTTP API's history
 * (test/protocol/frames.test.ts holds the two to the same fields).
 */
import { WireError, type WireErrorCode } from './errors.js';
import { FilterError, parseFilter, type Filter } from './filter.js';

export type ClientFrame =
  | {
      type: 'subscribe';
      channel: string;
      since?: number;
      epoch?: string;
      /** The cursor the last "subscribed" frame of this channel carried: a replay needs it. */
      cursor?: string;
      /** The parsed filter, and its text (echoed in "subscribed"). */
      filter?: { text: string; conditions: Filter };
      /** Receive presence_state now and presence_diff after. */
      presence?: boolean;
      ref?: string;
    }
  | { type: 'unsubscribe'; channel: string; ref?: string }
  | {
      type: 'publish';
      channel: string;
      event: string;
      payload: Record<string, unknown>;
      dedupeKey?: string;
      /** Delivered to current subscribers only: never stored or replayed. */
      ephemeral?: boolean;
      ref?: string;
    }
  | { type: 'presence'; channel: string; state: Record<string, unknown> | null; ref?: string }
  | { type: 'auth'; token: string; ref?: string }
  | { type: 'ping'; ref?: string };

const MAX_NAME_BYTES = 255;
const MAX_TOKEN_BYTES = 16 * 1024;

function invalid(message: string, ref?: string): WireError {
  return new WireError('INVALID_MESSAGE', message, ref === undefined ? {} : { ref });
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** How deep a payload or presence state may nest (objects and arrays). */
export const MAX_JSON_DEPTH = 64;

/** Whether a parsed JSON value nests no deeper than `max` (counted without recursion). */
export function withinDepth(value: unknown, max = MAX_JSON_DEPTH): boolean {
  let level: unknown[] = [value];
  for (let depth = 0; level.length > 0; depth++) {
    const next: unknown[] = [];
    for (const v of level) {
      if (typeof v !== 'object' || v === null) continue;
      if (depth >= max) return false;
      next.push(...(Array.isArray(v) ? v : Object.values(v)));
    }
    level = next;
  }
  return true;
}

/** A JSON object's fields, or null when the text is not JSON or not an object (for notifications). */
export function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : null;
  } catch {
    return null;
  }
}

function name(frame: Record<string, unknown>, field: string, ref: string | undefined): string {
  const value = frame[field];
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value) > MAX_NAME_BYTES) {
    throw invalid(`"${field}" must be a string of 1 to ${MAX_NAME_BYTES} bytes`, ref);
  }
  return value;
}

/** Parses one text frame; throws WireError INVALID_MESSAGE (with the ref when it could be read). */
export function parseClientFrame(text: string): ClientFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('the frame is not JSON');
  }
  if (!isObject(value)) throw invalid('the frame must be a JSON object');
  if (!withinDepth(value, MAX_JSON_DEPTH + 2)) throw invalid(`the frame nests deeper than ${MAX_JSON_DEPTH} levels`);
  const rawRef = value['ref'];
  if (rawRef !== undefined && (typeof rawRef !== 'string' || rawRef.length > 255)) {
    throw invalid('"ref" must be a string of at most 255 characters');
  }
  const ref = rawRef;
  const withRef = <T extends object>(frame: T): T & { ref?: string } => (ref === undefined ? frame : { ...frame, ref });
  switch (value['type']) {
    case 'subscribe': {
      const channel = name(value, 'channel', ref);
      const since = value['since'];
      const epoch = value['epoch'];
      if (since !== undefined && (typeof since !== 'number' || !Number.isSafeInteger(since) || since < 0)) {
        throw invalid('"since" must be a seq: a whole number from 0', ref);
      }
      if (epoch !== undefined && (typeof epoch !== 'string' || epoch.length === 0 || epoch.length > 64)) {
        throw invalid('"epoch" must be the string a "subscribed" frame carried', ref);
      }
      const cursor = value['cursor'];
      if (cursor !== undefined && (typeof cursor !== 'string' || cursor.length === 0 || cursor.length > 64)) {
        throw invalid('"cursor" must be the string a "subscribed" frame carried', ref);
      }
      const filter = value['filter'];
      let conditions: Filter | undefined;
      if (filter !== undefined) {
        if (typeof filter !== 'string') throw invalid('"filter" must be a string such as "status=eq.paid"', ref);
        try {
          conditions = parseFilter(filter);
        } catch (err) {
          if (err instanceof FilterError) throw new WireError('INVALID_FILTER', `filter: ${err.message}`, ref === undefined ? {} : { ref });
          throw err;
        }
      }
      const presence = value['presence'];
      if (presence !== undefined && typeof presence !== 'boolean') throw invalid('"presence" must be true or false', ref);
      return withRef({
        type: 'subscribe',
        channel,
        ...(since === undefined ? {} : { since }),
        ...(epoch === undefined ? {} : { epoch }),
        ...(cursor === undefined ? {} : { cursor }),
        ...(conditions === undefined ? {} : { filter: { text: filter as string, conditions } }),
        ...(presence === true ? { presence: true } : {}),
      });
    }
    case 'unsubscribe':
      return withRef({ type: 'unsubscribe', channel: name(value, 'channel', ref) });
    case 'publish': {
      const channel = name(value, 'channel', ref);
      const event = name(value, 'event', ref);
      const payload = value['payload'] === undefined ? {} : value['payload'];
      if (!isObject(payload)) throw invalid('"payload" must be a JSON object', ref);
      const dedupeKey = value['dedupeKey'];
      const ephemeral = value['ephemeral'];
      if (ephemeral !== undefined && typeof ephemeral !== 'boolean') throw invalid('"ephemeral" must be true or false', ref);
      if (ephemeral === true) {
        if (dedupeKey !== undefined) throw invalid('an ephemeral message is never stored: it takes no "dedupeKey"', ref);
        return withRef({ type: 'publish', channel, event, payload, ephemeral: true });
      }
      if (dedupeKey !== undefined) {
        const key = name(value, 'dedupeKey', ref);
        return withRef({ type: 'publish', channel, event, payload, dedupeKey: key });
      }
      return withRef({ type: 'publish', channel, event, payload });
    }
    case 'presence': {
      const channel = name(value, 'channel', ref);
      const state = value['state'];
      if (state !== null && !isObject(state)) throw invalid('"state" must be a JSON object, or null to leave', ref);
      return withRef({ type: 'presence', channel, state });
    }
    case 'auth': {
      const token = value['token'];
      if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_BYTES) {
        throw invalid('"token" must be a non-empty string', ref);
      }
      return withRef({ type: 'auth', token });
    }
    case 'ping':
      return withRef({ type: 'ping' });
    default:
      throw invalid(
        typeof value['type'] === 'string' ? `unknown frame type "${value['type'].slice(0, 64)}"` : '"type" is missing',
        ref,
      );
  }
}

/** A server frame other than an event, as JSON text. */
export function serverFrame(frame: { type: string; ref?: string | undefined; [key: string]: unknown }): string {
  return JSON.stringify(frame);
}

export function errorFrame(
  code: WireErrorCode,
  message: string,
  extra: { ref?: string | undefined; channel?: string | undefined; [key: string]: unknown } = {},
): string {
  return JSON.stringify({ type: 'error', code, message, ...extra });
}

/** meta of an event frame: a stored message has an id and a seq, an ephemeral one neither. */
export type EventMeta =
  | { messageId: string; seq: number; senderType: 'system' | 'user'; senderId: string | null; timestamp: string }
  | { ephemeral: true; senderType: 'user'; senderId: string | null; timestamp: string };

export interface EventFrame {
  type: 'event';
  channel: string;
  event: string;
  payload: unknown;
  meta: EventMeta;
}

/** An event frame, fields in the documented order (the same as realtime.event_frame's). */
export function eventFrame(channel: string, event: string, payload: unknown, meta: EventMeta): EventFrame {
  return { type: 'event', channel, event, payload, meta };
}
