/**
 * The HTTP API (docs/http.md, docs/openapi.yaml), on the WebSocket's port.
 * Every request acts as its token's identity (no token: anon, when allowed)
 * and the database decides: publishes go through the INSERT policies,
 * message history through the SELECT policies on realtime.messages, and
 * channel rows through the admin role's grants and policies. Errors are JSON
 * with the protocol's codes and their statuses (protocol/errors.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import { pgFields, wireErrorFromPg } from '../db/errors.js';
import type { ChangeStreamRow, EnableChanges } from '../db/changes.js';
import { CHANNEL_COLUMNS, WRITABLE_CHANNEL_COLUMNS, type ChannelRow } from '../db/channels.js';
import type { Identity } from '../db/identity.js';
import { errorText } from '../daemon/boundary.js';
import { KeyedBuckets } from '../daemon/limits.js';
import type { Connection, ConnectionDeps } from '../daemon/socket/connection.js';
import type { InstanceRow } from '../db/instances.js';
import { WIRE_ERRORS, WireError, type WireErrorCode } from '../protocol/errors.js';
import { eventFrame, isObject, MAX_JSON_DEPTH, withinDepth } from '../protocol/frames.js';
import { sendError, sendJson } from './respond.js';

export interface ApiDeps extends ConnectionDeps {
  counts: () => { connections: number; subscriptions: number };
  /** This instance's open sockets (GET /api/connections, /api/subscriptions). */
  connections: ReadonlySet<Connection>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The largest body a channel write takes. */
const MAX_CHANNEL_BODY = 64 * 1024;

/** A wire error with an HTTP status other than its code's (401 for a bad token). */
class HttpError extends WireError {
  constructor(
    code: WireErrorCode,
    message: string,
    readonly status: number = WIRE_ERRORS[code].status,
  ) {
    super(code, message);
  }
}

const invalid = (message: string): HttpError => new HttpError('INVALID_MESSAGE', message);
const notAllowed = (methods: string): HttpError => new HttpError('METHOD_NOT_ALLOWED', `use ${methods}`);

function readBody(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = (): void => {
      // Refused without reading the rest: the answer closes the connection (handle()).
      req.removeAllListeners('data');
      req.pause();
      reject(new HttpError('PAYLOAD_TOO_LARGE', `the body is over ${max} bytes`));
    };
    if (declared > max) {
      tooLarge();
      return;
    }
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        chunks.length = 0;
        tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      let value: unknown;
      try {
        value = JSON.parse(Buffer.concat(chunks).toString() || 'null');
      } catch {
        reject(invalid('the body is not JSON'));
        return;
      }
      if (!isObject(value)) {
        reject(invalid('the body must be a JSON object'));
        return;
      }
      if (!withinDepth(value, MAX_JSON_DEPTH + 1)) {
        reject(invalid(`the body nests deeper than ${MAX_JSON_DEPTH} levels`));
        return;
      }
      resolve(value);
    });
  });
}

/** Bytes of an over-large body read (and dropped) after the 413, and for how long, before the socket is closed. */
const LINGER_BYTES = 1024 * 1024;
const LINGER_MS = 1000;

/**
 * After a 413 the rest of the body is not read to its end: a little is
 * drained, so the client can read the answer before the connection closes
 * (closing with unread data in the socket would reset it), then it closes.
 */
function lingerThenClose(req: IncomingMessage): void {
  let drained = 0;
  const close = (): void => {
    clearTimeout(timer);
    req.socket.destroy();
  };
  const timer = setTimeout(close, LINGER_MS);
  timer.unref();
  req.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > LINGER_BYTES) close();
  });
  req.on('end', close);
  req.resume();
}

function str(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > 255) {
    throw invalid(`"${field}" must be a string of 1 to 255 bytes`);
  }
  return v;
}

function channelJson(row: ChannelRow): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of CHANNEL_COLUMNS) out[c] = row[c] instanceof Date ? row[c].toISOString() : row[c];
  return out;
}

type Reply = [status: number, body?: unknown];

/** The fields of POST /api/changes: the arguments of realtime.enable_changes. */
const CHANGES_FIELDS: ReadonlySet<string> = new Set(['table', 'channel', 'columns', 'operations', 'changed_only', 'public', 'row_channels']);
/** More names than a table can have columns (1600). */
const MAX_NAMES = 1600;

function names(body: Record<string, unknown>, field: string): string[] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_NAMES || !v.every((n) => typeof n === 'string' && n.length > 0 && Buffer.byteLength(n) <= 255)) {
    throw invalid(`"${field}" must be an array of names (strings of 1 to 255 bytes), at most ${MAX_NAMES}`);
  }
  return v as string[];
}

function flag(body: Record<string, unknown>, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalid(`"${field}" must be true or false`);
  return v;
}

/**
 * An error of realtime.enable_changes or disable_changes as the API answers
 * it: a table that does not exist is 404, a name that does not parse 400;
 * a lock not had within 3 s (a long transaction on the table) 409; the rest
 * as every route maps PostgreSQL's errors (RT400 is 400, 42501 403).
 */
function changesError(err: unknown): unknown {
  const { code, message } = pgFields(err);
  if (code === '42P01' || code === '3F000') return new HttpError('NOT_FOUND', message);
  if (code === '42601' || code === '42602') return invalid(`"table" is not a table name: ${message}`);
  if (code === '55P03') {
    return new HttpError('CONFLICT', 'the table is in use by a transaction that has run for over 3 s: its writes come first; try again when it has ended');
  }
  return err;
}

function streamJson(row: ChangeStreamRow): Record<string, unknown> {
  return { ...row, created_at: row.created_at.toISOString() };
}
/** limit and cursor of a paginated admin route: limit 1 to 1000 (default 100). */
function page(query: URLSearchParams): { limit: number; cursor: string | null } {
  const text = query.get('limit');
  const limit = text === null ? 100 : /^\d{1,4}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) throw invalid('"limit" must be a whole number from 1 to 1000');
  const cursor = query.get('cursor');
  if (cursor !== null && (cursor.length === 0 || cursor.length > 1024)) throw invalid('"cursor" must be the "next" of a previous page');
  return { limit, cursor };
}

/** A subscriptions cursor: the connection id and channel of the last row, base64url JSON. */
function encodeCursor(connection: string, channel: string): string {
  return Buffer.from(JSON.stringify([connection, channel])).toString('base64url');
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString());
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && UUID.test(value[0]) && typeof value[1] === 'string') {
      return [value[0], value[1]];
    }
  } catch {
    // below
  }
  throw invalid('"cursor" must be the "next" of a previous page');
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function instanceJson(row: InstanceRow, self: string): Record<string, unknown> {
  return {
    id: row.id,
    self: row.id === self,
    host: row.host,
    pid: row.pid,
    startedAt: row.started_at.toISOString(),
    heartbeatAt: row.heartbeat_at.toISOString(),
    countedSubscribers: row.counted_subscribers,
    presenceConnections: row.presence_connections,
  };
}

/** Who a socket acts as: its token's role and sub (null before an auth frame). */
function who(connection: Connection): { role: string | null; sub: string | null } {
  const identity = connection.identity;
  const sub = identity?.claims['sub'];
  return { role: identity?.role ?? null, sub: typeof sub === 'string' ? sub : null };
}

export interface Api {
  handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void>;
  stop(): void;
}

export function createApi(deps: ApiDeps): Api {
  const { db, auth, config, logger, metrics, presence, ephemeral } = deps;
  const rates = new KeyedBuckets(deps.now);

  const identify = async (req: IncomingMessage): Promise<Identity> => {
    const header = req.headers.authorization;
    if (header === undefined) {
      const anon = auth.anonymous();
      if (!anon) throw new HttpError('UNAUTHORIZED', 'send a token: Authorization: Bearer <JWT>', 401);
      return anon;
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) throw new HttpError('UNAUTHORIZED', 'the Authorization header must be "Bearer <JWT>"', 401);
    try {
      return await auth.verify(match[1]);
    } catch (err) {
      const e = err instanceof WireError ? err : new WireError('UNAUTHORIZED', 'the token is not valid');
      throw new HttpError(e.code, e.message, 401);
    }
  };

  const admin = (identity: Identity, what = 'channels are managed'): void => {
    if (identity.role !== config.adminRole) {
      throw new HttpError('UNAUTHORIZED', `${what} by the ${config.adminRole} role`);
    }
  };

  /**
   * The rates a socket has, per token identity (its role and sub; without a
   * sub, its role and address): --publish-rate or --ephemeral-rate, and the
   * channel's publish_rate. Throws RATE_LIMITED with retryAfter (milliseconds).
   */
  const takeRate = (req: IncomingMessage, identity: Identity, channel: string, ephemeral: boolean, channelRate: number | null): void => {
    const sub = identity.claims['sub'];
    const who = `${identity.role}\n${typeof sub === 'string' && sub !== '' ? `sub:${sub}` : `addr:${req.socket.remoteAddress ?? ''}`}`;
    const checks: [string, number, string, string][] = ephemeral
      ? [[`e\n${who}`, config.ephemeralRate, 'ephemeral_rate', 'too many ephemeral messages']]
      : [[`p\n${who}`, config.publishRate, 'publish_rate', 'too many publishes']];
    if (!ephemeral && channelRate) {
      checks.push([`c\n${who}\n${channel}`, channelRate, 'channel_publish_rate', `this channel takes at most ${channelRate} publishes per second per client`]);
    }
    for (const [key, rate, limit, message] of checks) {
      const wait = rates.take(key, rate);
      if (wait > 0) {
        metrics.limitRejections.inc({ limit });
        throw new WireError('RATE_LIMITED', message, { retryAfter: wait });
      }
    }
  };

  const broadcast = async (req: IncomingMessage, identity: Identity): Promise<Reply> => {
    const body = await readBody(req, config.maxFrameBytes);
    const channel = str(body, 'channel');
    const event = str(body, 'event');
    const payload = body['payload'] ?? {};
    if (!isObject(payload)) throw invalid('"payload" must be a JSON object');
    const ephemeralMessage = body['ephemeral'] === true;
    // The same switches as a socket's frames; the admin role is a server, not a client.
    const client = identity.role !== config.adminRole;
    if (ephemeralMessage && !config.allowEphemeral && client) {
      throw new WireError('FEATURE_DISABLED', 'ephemeral is switched off on this server', { channel, feature: 'ephemeral' });
    }
    if (!ephemeralMessage && !config.allowClientPublish && client) {
      throw new WireError('FEATURE_DISABLED', 'client publish is switched off on this server', { channel, feature: 'client_publish' });
    }
    const limits = (await db.matchChannels([channel])).get(channel)?.limits;
    takeRate(req, identity, channel, ephemeralMessage, limits?.publishRate ?? null);
    if (ephemeralMessage) {
      await ephemeral.publish(identity, { channel, event, payload }, limits);
      return [202, { channel, ephemeral: true }];
    }
    const dedupeKey = body['dedupeKey'] === undefined ? undefined : str(body, 'dedupeKey');
    const sent = await db.send(identity, { channel, event, payload, ...(dedupeKey === undefined ? {} : { dedupeKey }) });
    return [sent.duplicate ? 200 : 201, { channel, messageId: sent.id, seq: sent.seq, ...(sent.duplicate ? { duplicate: true } : {}) }];
  };

  const listChannels = async (identity: Identity): Promise<Reply> => [
    200,
    { channels: (await db.listChannels(identity)).map(channelJson) },
  ];

  const getChannel = async (identity: Identity, id: string): Promise<Reply> => {
    const row = (await db.listChannels(identity)).find((c) => c.id === id);
    if (!row) throw new HttpError('NOT_FOUND', 'no such channel');
    return [200, channelJson(row)];
  };

  const writeChannel = async (req: IncomingMessage, identity: Identity, id: string | null): Promise<Reply> => {
    const body = await readBody(req, MAX_CHANNEL_BODY);
    const fields = Object.keys(body);
    const unknown = fields.filter((f) => !WRITABLE_CHANNEL_COLUMNS.has(f));
    if (unknown.length > 0) throw invalid(`unknown fields: ${unknown.join(', ')}`);
    if (id === null && typeof body['pattern'] !== 'string') throw invalid('"pattern" is required');
    if (fields.length === 0) throw invalid('nothing to change');
    if (id === null) return [201, channelJson(await db.insertChannel(identity, body))];
    const row = await db.updateChannel(identity, id, body);
    if (!row) throw new HttpError('NOT_FOUND', 'no such channel');
    return [200, channelJson(row)];
  };

  const deleteChannel = async (identity: Identity, id: string): Promise<Reply> => {
    if (!(await db.deleteChannel(identity, id))) throw new HttpError('NOT_FOUND', 'no such channel');
    return [204];
  };

  const history = async (identity: Identity, channel: string, query: URLSearchParams): Promise<Reply> => {
    const since = Number(query.get('since') ?? '0');
    const limit = Number(query.get('limit') ?? '100');
    if (!Number.isSafeInteger(since) || since < 0) throw invalid('"since" must be a seq: a whole number from 0');
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) throw invalid('"limit" must be 1 to 1000');
    const rows = await db.history(identity, channel, UUID.test(channel), since, limit);
    // Each message is the event frame a subscriber received, without its "type".
    const messages = rows.map((r) => {
      const { type: _type, ...message } = eventFrame(r.channel_name, r.event_name, r.payload, {
        messageId: r.id,
        seq: Number(r.seq),
        senderType: r.sender_type,
        senderId: r.sender_id,
        timestamp: r.created_at.toISOString(),
      });
      return message;
    });
    const last = rows[rows.length - 1];
    return [200, { messages, next: last === undefined ? since : Number(last.seq) }];
  };

  const members = async (identity: Identity, channel: string): Promise<Reply> => {
    const allowed = await db.authorizeSubscribe(identity, channel);
    if (allowed === null) throw new HttpError('UNAUTHORIZED', 'not allowed to subscribe to this channel');
    const out: Record<string, { state: Record<string, unknown>; connections: number }> = {};
    for (const r of await presence.members(channel)) out[r.key] = { state: r.state, connections: r.connections };
    return [200, { channel, members: out }];
  };

  /** The channels the caller's SELECT policies show; this instance's id and counts for the admin role only. */
  const stats = async (identity: Identity): Promise<Reply> => {
    const visible = await db.visibleChannelStats(identity);
    const instance = identity.role === config.adminRole ? { instance: { id: presence.instance, ...deps.counts() } } : {};
    return [200, { ...instance, ...visible }];
  };

  const enableChanges = async (req: IncomingMessage, identity: Identity): Promise<Reply> => {
    const body = await readBody(req, MAX_CHANNEL_BODY);
    const unknown = Object.keys(body).filter((f) => !CHANGES_FIELDS.has(f));
    if (unknown.length > 0) throw invalid(`unknown fields: ${unknown.join(', ')}`);
    const channel = body['channel'] === undefined || body['channel'] === null ? undefined : str(body, 'channel');
    const args: EnableChanges = {
      table: str(body, 'table'),
      channel,
      columns: names(body, 'columns'),
      operations: names(body, 'operations'),
      changed_only: flag(body, 'changed_only'),
      public: flag(body, 'public'),
      row_channels: flag(body, 'row_channels'),
    };
    try {
      return [200, streamJson(await db.enableChanges(identity, args))];
    } catch (err) {
      throw changesError(err);
    }
  };

  const disableChanges = async (identity: Identity, table: string): Promise<Reply> => {
    if (table === '' || Buffer.byteLength(table) > 255) throw invalid('the table name must be 1 to 255 bytes');
    let disabled: boolean;
    try {
      disabled = await db.disableChanges(identity, table);
    } catch (err) {
      throw changesError(err);
    }
    if (!disabled) throw new HttpError('NOT_FOUND', 'that table has no change stream');
    return [204];
  };

  /** This instance's sockets by id, after the cursor's. */
  const socketsAfter = (after: string | null): Connection[] =>
    [...deps.connections].filter((c) => !c.closed && (after === null || c.id >= after)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  /** This instance's sockets, paginated by id; every instance the database knows. */
  const listConnections = async (identity: Identity, query: URLSearchParams): Promise<Reply> => {
    const { limit, cursor } = page(query);
    if (cursor !== null && !UUID.test(cursor)) throw invalid('"cursor" must be the "next" of a previous page');
    const instances = await db.listInstances(identity);
    const sockets = socketsAfter(cursor).filter((c) => c.id !== cursor);
    const rows = sockets.slice(0, limit).map((c) => ({
      id: c.id,
      instance: presence.instance,
      ...who(c),
      connectedAt: iso(c.connectedAt),
      lastFrameAt: iso(c.lastFrameAt),
      subscriptions: c.subscriptions.size,
      bufferedBytes: c.ws.bufferedAmount,
    }));
    const next = sockets.length > limit ? (rows[rows.length - 1]?.id ?? null) : null;
    return [200, { instance: presence.instance, connections: rows, next, instances: instances.map((i) => instanceJson(i, presence.instance)) }];
  };

  /** This instance's subscriptions, paginated by socket id and channel; every instance the database knows. */
  const listSubscriptions = async (identity: Identity, query: URLSearchParams): Promise<Reply> => {
    const { limit, cursor } = page(query);
    const [afterSocket, afterChannel] = cursor === null ? [null, null] : decodeCursor(cursor);
    const instances = await db.listInstances(identity);
    const rows: Record<string, unknown>[] = [];
    let next: string | null = null;
    outer: for (const c of socketsAfter(afterSocket)) {
      const channels = [...c.subscriptions.keys()].filter((ch) => c.id !== afterSocket || ch > (afterChannel as string)).sort();
      for (const channel of channels) {
        const s = c.subscriptions.get(channel);
        if (!s || s.channelId === null) continue;
        if (rows.length === limit) {
          const last = rows[rows.length - 1] as { connection: string; channel: string };
          next = encodeCursor(last.connection, last.channel);
          break outer;
        }
        rows.push({
          channel,
          connection: c.id,
          instance: presence.instance,
          ...who(c),
          since: iso(s.since),
          lastEventAt: iso(s.lastEventAt),
          eventsDelivered: s.delivered,
        });
      }
    }
    return [200, { instance: presence.instance, subscriptions: rows, next, instances: instances.map((i) => instanceJson(i, presence.instance)) }];
  };

  /** The route's name (for the metric) and its handler, or an HttpError. */
  const route = async (req: IncomingMessage, path: string, query: URLSearchParams): Promise<[string, () => Promise<Reply>]> => {
    const method = req.method ?? 'GET';
    let parts: string[];
    try {
      parts = path.split('/').slice(2).map((p) => decodeURIComponent(p));
    } catch {
      throw invalid('the path is not valid percent-encoding');
    }
    const [resource, name, sub, extra] = parts;
    if (extra !== undefined) throw new HttpError('NOT_FOUND', `no ${method} ${path} here`);
    const identity = await identify(req);
    if (resource === 'broadcast' && name === undefined) {
      if (method !== 'POST') throw notAllowed('POST');
      return ['broadcast', () => broadcast(req, identity)];
    }
    if ((resource === 'connections' || resource === 'subscriptions') && name === undefined) {
      admin(identity, `${resource} are listed`);
      if (method !== 'GET') throw notAllowed('GET');
      return resource === 'connections'
        ? ['connections', () => listConnections(identity, query)]
        : ['subscriptions', () => listSubscriptions(identity, query)];
    }
    if (resource === 'changes' && sub === undefined) {
      admin(identity, 'change streams are managed');
      if (name === undefined || name === '') {
        if (method !== 'POST') throw notAllowed('POST');
        return ['changes', () => enableChanges(req, identity)];
      }
      if (method !== 'DELETE') throw notAllowed('DELETE');
      return ['changes', () => disableChanges(identity, name)];
    }
    if (resource === 'stats' && name === undefined) {
      if (method !== 'GET') throw notAllowed('GET');
      return ['stats', () => stats(identity)];
    }
    if (resource === 'channels') {
      if (name === undefined || name === '') {
        admin(identity);
        if (method === 'GET') return ['channels', () => listChannels(identity)];
        if (method === 'POST') return ['channels', () => writeChannel(req, identity, null)];
        throw notAllowed('GET or POST');
      }
      if (sub === 'messages') {
        if (method !== 'GET') throw notAllowed('GET');
        return ['messages', () => history(identity, name, query)];
      }
      if (sub === 'presence') {
        if (method !== 'GET') throw notAllowed('GET');
        return ['presence', () => members(identity, name)];
      }
      if (sub === undefined) {
        admin(identity);
        if (!UUID.test(name)) throw new HttpError('NOT_FOUND', 'no such channel (address a channel row by its id)');
        if (method === 'PATCH') return ['channel', () => writeChannel(req, identity, name)];
        if (method === 'DELETE') return ['channel', () => deleteChannel(identity, name)];
        if (method === 'GET') return ['channel', () => getChannel(identity, name)];
        throw notAllowed('GET, PATCH or DELETE');
      }
    }
    throw new HttpError('NOT_FOUND', `no ${method} ${path} here`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    let name = 'unknown';
    let status = 500;
    try {
      const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
      const [routeName, handler] = await route(req, path, query);
      name = routeName;
      const [code, body] = await handler();
      status = code;
      if (body === undefined) {
        res.writeHead(code);
        res.end();
      } else {
        sendJson(res, code, body);
      }
    } catch (err) {
      const e = err instanceof WireError ? err : wireErrorFromPg(err);
      status = err instanceof HttpError ? err.status : WIRE_ERRORS[e.code].status;
      if (e.code === 'INTERNAL_ERROR') logger.warn({ err: errorText(err) }, 'HTTP API request failed');
      if (e.code === 'PAYLOAD_TOO_LARGE' && !req.complete) {
        res.setHeader('connection', 'close');
        res.once('finish', () => lingerThenClose(req));
      }
      if (!res.headersSent) sendError(res, e, status);
    } finally {
      metrics.httpRequests.inc({ route: name, status: String(status) });
    }
  };

  return { handle, stop: () => rates.stop() };
}
