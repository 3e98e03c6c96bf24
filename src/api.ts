/**
 * The HTTP API (docs/http.md, docs/openapi.yaml), on the WebSocket's port.
 * Every request acts as its token's identity (no token: anon, when allowed)
 * and the database decides: publishes go through the INSERT policies,
 * message history through the SELECT policies on realtime.messages, and
 * channel rows through the admin role's grants and policies. Errors are JSON
 * with the protocol's codes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import type { Identity } from './auth.js';
import type { ConnectionDeps } from './connection.js';
import { ephemeralFrame, signNotification } from './ephemeral.js';
import { WireError, wireErrorFromPg, type WireErrorCode } from './errors.js';
import type { Presence } from './presence.js';

export interface ApiDeps extends ConnectionDeps {
  presence: Presence;
  counts: () => { connections: number; subscriptions: number };
}

/** HTTP status of each error code. */
const STATUS: Record<WireErrorCode, number> = {
  UNAUTHORIZED: 403,
  TOKEN_EXPIRED: 401,
  NOT_SUBSCRIBED: 400,
  INVALID_MESSAGE: 400,
  INVALID_FILTER: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  LIMIT_EXCEEDED: 429,
  REPLAY_UNAVAILABLE: 410,
  INTERNAL_ERROR: 503,
};

/** The columns of realtime.channels the API reads and writes, as JSON fields. */
const CHANNEL_COLUMNS = [
  'id', 'pattern', 'description', 'webhook_urls', 'enabled', 'max_subscribers', 'max_message_bytes',
  'publish_rate', 'metadata', 'created_at', 'updated_at',
] as const;
const WRITABLE = new Set(['pattern', 'description', 'webhook_urls', 'enabled', 'max_subscribers', 'max_message_bytes',
  'publish_rate', 'metadata']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

class HttpError extends WireError {
  constructor(
    readonly status: number,
    code: WireErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      if (tooLarge) return; // drained, so the client reads the 413
      size += chunk.length;
      if (size > max) {
        tooLarge = true;
        chunks.length = 0;
        reject(new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is over ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (tooLarge) return;
      let value: unknown;
      try {
        value = JSON.parse(Buffer.concat(chunks).toString() || 'null');
      } catch {
        reject(new HttpError(400, 'INVALID_MESSAGE', 'the body is not JSON'));
        return;
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        reject(new HttpError(400, 'INVALID_MESSAGE', 'the body must be a JSON object'));
        return;
      }
      resolve(value as Record<string, unknown>);
    });
  });
}

function str(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > 255) {
    throw new HttpError(400, 'INVALID_MESSAGE', `"${field}" must be a string of 1 to 255 bytes`);
  }
  return v;
}

function channelRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of CHANNEL_COLUMNS) out[c] = row[c] instanceof Date ? (row[c] as Date).toISOString() : row[c];
  return out;
}

export function createApi(deps: ApiDeps): (req: IncomingMessage, res: ServerResponse, path: string) => Promise<void> {
  const { db, auth, config, logger, metrics, presence } = deps;

  const identify = async (req: IncomingMessage): Promise<Identity> => {
    const header = req.headers.authorization;
    if (header === undefined) {
      const anon = auth.anonymous();
      if (!anon) throw new HttpError(401, 'UNAUTHORIZED', 'send a token: Authorization: Bearer <JWT>');
      return anon;
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) throw new HttpError(401, 'UNAUTHORIZED', 'the Authorization header must be "Bearer <JWT>"');
    try {
      return await auth.verify(match[1]);
    } catch (err) {
      const e = err instanceof WireError ? err : new WireError('UNAUTHORIZED', 'the token is not valid');
      throw new HttpError(401, e.code, e.message);
    }
  };

  const admin = (identity: Identity): void => {
    if (identity.role !== config.adminRole) {
      throw new HttpError(403, 'UNAUTHORIZED', `channels are managed by the ${config.adminRole} role`);
    }
  };

  const broadcast = async (req: IncomingMessage, identity: Identity): Promise<[number, unknown]> => {
    const body = await readBody(req, config.maxFrameBytes);
    const channel = str(body, 'channel');
    const event = str(body, 'event');
    const payload = body['payload'] ?? {};
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new HttpError(400, 'INVALID_MESSAGE', '"payload" must be a JSON object');
    }
    if (body['ephemeral'] === true) {
      const key = deps.notifyKey();
      if (key === null) throw new HttpError(503, 'INTERNAL_ERROR', 'ephemeral messages are not available yet');
      const limits = (await db.matchChannels([channel])).get(channel)?.limits;
      const bytes = Buffer.byteLength(JSON.stringify(payload));
      if (limits?.maxMessageBytes != null && bytes > limits.maxMessageBytes) {
        throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `payload is ${bytes} bytes, over this channel's limit of ${limits.maxMessageBytes} bytes`);
      }
      const frame = ephemeralFrame({ channel, event, payload: payload as Record<string, unknown> }, identity, deps.now());
      await db.sendEphemeral(identity, channel, event, signNotification(key, channel, frame));
      return [202, { channel, ephemeral: true }];
    }
    const dedupeKey = body['dedupeKey'] === undefined ? undefined : str(body, 'dedupeKey');
    const sent = await db.send(identity, { channel, event, payload, ...(dedupeKey === undefined ? {} : { dedupeKey }) });
    return [sent.duplicate ? 200 : 201, { channel, messageId: sent.id, seq: sent.seq, ...(sent.duplicate ? { duplicate: true } : {}) }];
  };

  const listChannels = (identity: Identity): Promise<[number, unknown]> =>
    db.asIdentity(identity, async (client) => {
      const { rows } = await client.query(`select ${CHANNEL_COLUMNS.join(', ')} from realtime.channels order by pattern`);
      return [200, { channels: rows.map(channelRow) }];
    });

  const writeChannel = async (req: IncomingMessage, identity: Identity, id: string | null): Promise<[number, unknown]> => {
    const body = await readBody(req, 64 * 1024);
    const fields = Object.keys(body);
    const unknown = fields.filter((f) => !WRITABLE.has(f));
    if (unknown.length > 0) throw new HttpError(400, 'INVALID_MESSAGE', `unknown fields: ${unknown.join(', ')}`);
    if (id === null && typeof body['pattern'] !== 'string') throw new HttpError(400, 'INVALID_MESSAGE', '"pattern" is required');
    if (fields.length === 0) throw new HttpError(400, 'INVALID_MESSAGE', 'nothing to change');
    // Objects and arrays go as JSON text: node-postgres would send a JS array as a text[] literal.
    const values = fields.map((f) => (f === 'metadata' ? JSON.stringify(body[f]) : body[f]));
    return db.asIdentity(identity, async (client) => {
      if (id === null) {
        const { rows } = await client.query(
          `insert into realtime.channels (${fields.join(', ')}) values (${fields.map((_, i) => `$${i + 1}`).join(', ')})
           returning ${CHANNEL_COLUMNS.join(', ')}`,
          values,
        );
        return [201, channelRow(rows[0] as Record<string, unknown>)];
      }
      const { rows } = await client.query(
        `update realtime.channels set ${fields.map((f, i) => `${f} = $${i + 2}`).join(', ')} where id = $1
         returning ${CHANNEL_COLUMNS.join(', ')}`,
        [id, ...values],
      );
      if (rows.length === 0) throw new HttpError(404, 'NOT_FOUND', 'no such channel');
      return [200, channelRow(rows[0] as Record<string, unknown>)];
    });
  };

  const deleteChannel = (identity: Identity, id: string): Promise<[number, unknown]> =>
    db.asIdentity(identity, async (client) => {
      const { rowCount } = await client.query('delete from realtime.channels where id = $1', [id]);
      if (!rowCount) throw new HttpError(404, 'NOT_FOUND', 'no such channel');
      return [204, undefined];
    });

  const history = (identity: Identity, channel: string, url: URL): Promise<[number, unknown]> => {
    const since = Number(url.searchParams.get('since') ?? '0');
    const limit = Number(url.searchParams.get('limit') ?? '100');
    if (!Number.isSafeInteger(since) || since < 0) throw new HttpError(400, 'INVALID_MESSAGE', '"since" must be a seq: a whole number from 0');
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) throw new HttpError(400, 'INVALID_MESSAGE', '"limit" must be 1 to 1000');
    const byId = UUID.test(channel);
    return db.asIdentity(identity, async (client) => {
      if (!byId) await client.query(`select set_config('realtime.channel_name', $1, true)`, [channel]);
      // The SELECT policies on realtime.messages decide which rows come back.
      const { rows } = await client.query<{
        id: string; seq: string; channel_name: string; event_name: string; payload: unknown;
        sender_type: string; sender_id: string | null; created_at: Date;
      }>(
        `select id, seq, channel_name, event_name, payload, sender_type, sender_id, created_at
         from realtime.messages where ${byId ? 'channel_id' : 'channel_name'} = $1 and seq > $2
         order by seq limit $3`,
        [channel, since, limit],
      );
      const messages = rows.map((r) => ({
        channel: r.channel_name,
        event: r.event_name,
        payload: r.payload,
        meta: { messageId: r.id, seq: Number(r.seq), senderType: r.sender_type, senderId: r.sender_id, timestamp: r.created_at.toISOString() },
      }));
      return [200, { messages, next: messages.length > 0 ? messages[messages.length - 1]?.meta.seq : since }];
    });
  };

  const members = async (identity: Identity, channel: string): Promise<[number, unknown]> => {
    const allowed = await db.authorizeSubscribe(identity, channel);
    if (allowed === null) throw new HttpError(403, 'UNAUTHORIZED', 'not allowed to subscribe to this channel');
    const rows = await presence.members(channel);
    const out: Record<string, { state: Record<string, unknown>; connections: number }> = {};
    for (const r of rows) out[r.key] = { state: r.state, connections: r.connections };
    return [200, { channel, members: out }];
  };

  const stats = async (identity: Identity): Promise<[number, unknown]> => {
    const visible = await db.visibleChannelStats(identity);
    return [200, { instance: { id: presence.instance, ...deps.counts() }, ...visible }];
  };

  const route = async (req: IncomingMessage, path: string, url: URL): Promise<[string, () => Promise<[number, unknown]>]> => {
    const method = req.method ?? 'GET';
    const parts = path.split('/').slice(2).map((p) => decodeURIComponent(p));
    const [resource, name, sub, extra] = parts;
    if (extra !== undefined) throw new HttpError(404, 'NOT_FOUND', `no ${method} ${path} here`);
    const identity = await identify(req);
    if (resource === 'broadcast' && name === undefined) {
      if (method !== 'POST') throw new HttpError(405, 'INVALID_MESSAGE', 'use POST');
      return ['broadcast', () => broadcast(req, identity)];
    }
    if (resource === 'stats' && name === undefined) {
      if (method !== 'GET') throw new HttpError(405, 'INVALID_MESSAGE', 'use GET');
      return ['stats', () => stats(identity)];
    }
    if (resource === 'channels') {
      if (name === undefined || name === '') {
        admin(identity);
        if (method === 'GET') return ['channels', () => listChannels(identity)];
        if (method === 'POST') return ['channels', () => writeChannel(req, identity, null)];
        throw new HttpError(405, 'INVALID_MESSAGE', 'use GET or POST');
      }
      if (sub === 'messages') {
        if (method !== 'GET') throw new HttpError(405, 'INVALID_MESSAGE', 'use GET');
        return ['messages', () => history(identity, name, url)];
      }
      if (sub === 'presence') {
        if (method !== 'GET') throw new HttpError(405, 'INVALID_MESSAGE', 'use GET');
        return ['presence', () => members(identity, name)];
      }
      if (sub === undefined) {
        admin(identity);
        if (!UUID.test(name)) throw new HttpError(404, 'NOT_FOUND', 'no such channel (address a channel row by its id)');
        if (method === 'PATCH') return ['channel', () => writeChannel(req, identity, name)];
        if (method === 'DELETE') return ['channel', () => deleteChannel(identity, name)];
        if (method === 'GET') {
          return ['channel', async () => {
            const [, body] = await listChannels(identity);
            const row = (body as { channels: Record<string, unknown>[] }).channels.find((c) => c['id'] === name);
            if (!row) throw new HttpError(404, 'NOT_FOUND', 'no such channel');
            return [200, row];
          }];
        }
        throw new HttpError(405, 'INVALID_MESSAGE', 'use GET, PATCH or DELETE');
      }
    }
    throw new HttpError(404, 'NOT_FOUND', `no ${method} ${path} here`);
  };

  return async (req, res, path) => {
    let name = 'unknown';
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const [routeName, handler] = await route(req, path, url);
      name = routeName;
      const [code, body] = await handler();
      status = code;
      send(res, code, body);
    } catch (err) {
      let e: WireError;
      let code: number;
      if (err instanceof HttpError) {
        e = err;
        code = err.status;
      } else {
        e = wireErrorFromPg(err);
        code = STATUS[e.code];
        if (e.code === 'INTERNAL_ERROR') logger.warn({ err: (err as Error).message }, 'HTTP API request failed');
      }
      status = code;
      if (!res.headersSent) send(res, code, { error: e.code, message: e.message, ...e.extra });
    } finally {
      metrics.httpRequests.inc({ route: name, status: String(status) });
    }
  };
}
