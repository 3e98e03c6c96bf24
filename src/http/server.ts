/**
 * HTTP and WebSocket on one port: the routes (/health, /metrics, /api/,
 * /inspector) and the WebSocket endpoint (default /). Origins, paths and the
 * connect rate are checked at upgrade; tokens after it, so a browser gets an
 * error frame and a close code. Every request, upgrade and frame runs inside
 * a boundary (daemon/boundary.ts): a throw refuses that caller only.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

import type { Logger } from 'pino';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';

import { guard, requestTarget } from '../daemon/boundary.js';
import { ConnectRateLimiter } from '../daemon/limits.js';
import type { Listener } from '../daemon/listener.js';
import { Connection, type ConnectionDeps } from '../daemon/socket/connection.js';
import { CloseCode } from '../protocol/errors.js';
import { errorFrame } from '../protocol/frames.js';
import { createApi } from './api.js';
import { createHealth } from './health.js';
import { createInspector } from './inspector.js';
import { sendError, sendJson } from './respond.js';

export interface ServerDeps extends ConnectionDeps {
  listener: Listener;
}

export interface Server {
  listen(): Promise<AddressInfo>;
  /** Stops accepting, closes every socket with 1001, resolves when they are gone. */
  close(): Promise<void>;
  readonly connections: ReadonlySet<Connection>;
}

function tokenFrom(req: IncomingMessage, query: URLSearchParams): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (match?.[1]) return match[1];
  }
  const token = query.get('token');
  return token === null || token === '' ? undefined : token;
}

function refuse(socket: Duplex, status: number, reason: string, body?: { error: string; message: string; retryAfter?: number }): void {
  const text = body === undefined ? '' : JSON.stringify(body);
  const retry = body?.retryAfter === undefined ? '' : `Retry-After: ${Math.ceil(body.retryAfter / 1000)}\r\n`;
  const type = body === undefined ? '' : 'Content-Type: application/json\r\n';
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\n${type}${retry}Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
}

export function createServer(deps: ServerDeps): Server {
  const { config, logger, metrics, db, listener } = deps;
  const connections = new Set<Connection>();
  const origins = new Set(config.allowedOrigins);

  const routes = createHealth({ db, listener, metrics, connections: () => connections.size, metricsToken: config.metricsToken });
  const inspector = config.inspector ? createInspector(deps) : null;
  const api = createApi({ ...deps, connections, counts: () => ({ connections: connections.size, subscriptions: deps.hub.size }) });
  const connectRate = new ConnectRateLimiter(config.connectRate, deps.now);

  const onRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (requestTarget(req.url) === null) {
      sendError(res, { code: 'INVALID_MESSAGE', message: 'the request target must be a path such as /health' });
      return;
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method === 'GET' && path === '/health') {
      await routes.health(res);
    } else if (path.startsWith('/api/')) {
      await api.handle(req, res, path);
    } else if (inspector && req.method === 'GET' && path.startsWith('/inspector')) {
      await inspector(req, res, path);
    } else if (req.method === 'GET' && path === '/metrics') {
      await routes.metrics(req, res);
    } else {
      sendError(res, { code: 'NOT_FOUND', message: `no ${req.method ?? ''} ${path} here` });
    }
  };
  // A request that throws gets a 500 (or loses its connection), and nothing else does.
  const http = createHttpServer(
    guard(logger, 'http request', onRequest, (_err, _req, res) => {
      if (!res.headersSent) sendJson(res, 500, { error: 'INTERNAL_ERROR', message: 'the server failed to handle this request' });
      else res.destroy();
    }),
  );

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxFrameBytes,
    perMessageDeflate: config.perMessageDeflate,
    clientTracking: false,
  });

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const url = requestTarget(req.url);
    if (url === null) {
      refuse(socket, 400, 'Bad Request');
      return;
    }
    if (url.pathname !== config.path) {
      refuse(socket, 404, 'Not Found');
      return;
    }
    const origin = req.headers.origin;
    if (origins.size > 0 && origin !== undefined && !origins.has(origin)) {
      metrics.authFailures.inc({ code: 'ORIGIN' });
      refuse(socket, 403, 'Forbidden');
      return;
    }
    // Refused before the upgrade, cheaply: a flood from one address costs no socket.
    const wait = connectRate.take(req.socket.remoteAddress ?? '');
    if (wait > 0) {
      metrics.limitRejections.inc({ limit: 'connect_rate' });
      refuse(socket, 429, 'Too Many Requests', { error: 'RATE_LIMITED', message: 'too many new connections from this address', retryAfter: wait });
      return;
    }
    const token = tokenFrom(req, url.searchParams);
    wss.handleUpgrade(req, socket, head, guard(logger, 'websocket accept', (ws: WebSocket) => accept(ws, token, socket), (_err, ws) => ws.terminate()));
  };
  http.on(
    'upgrade',
    guard(logger, 'upgrade', onUpgrade, (_err, _req, socket) => {
      if (socket.writable) refuse(socket, 500, 'Internal Server Error');
      socket.destroy();
    }),
  );

  // Outside the upgrade handler, so a connection's listeners do not keep the
  // upgrade request (headers, head buffer) alive for the life of the socket.
  const accept = (ws: WebSocket, token: string | undefined, socket: Duplex): void => {
    if (config.maxConnections > 0 && connections.size >= config.maxConnections) {
      // After the upgrade, so a browser learns why (it never sees an HTTP status).
      metrics.limitRejections.inc({ limit: 'connections' });
      ws.send(errorFrame('LIMIT_EXCEEDED', `this instance is full (${config.maxConnections} connections): try another or later`, { limit: 'connections' }));
      ws.close(CloseCode.TOO_MANY_CONNECTIONS, 'LIMIT_EXCEEDED');
      setTimeout(() => ws.terminate(), 3000).unref();
      return;
    }
    const connection = new Connection(ws, deps, token, socket);
    connections.add(connection);
    ws.on(
      'message',
      guard(logger, 'websocket frame', (data: RawData, isBinary: boolean) => connection.onMessage(data, isBinary), () =>
        connection.internalError(),
      ),
    );
    ws.on('pong', () => {
      connection.alive = true;
    });
    ws.on('error', (err) => logger.debug({ err: err.message }, 'socket error'));
    ws.on(
      'close',
      guard(logger, 'websocket close', () => {
        connections.delete(connection);
        connection.dispose();
      }),
    );
  };

  // Protocol-level pings find dead peers; a socket that missed one is dropped
  // (or closed with 4008 when it has bytes it has not read: the ping waits behind them).
  const pinger = setInterval(() => {
    for (const connection of connections) {
      guard(logger, 'ping', () => {
        if (!connection.alive) {
          connection.missedPing();
          return;
        }
        connection.alive = false;
        connection.ws.ping();
      })();
    }
  }, config.pingIntervalMs);
  pinger.unref();

  return {
    connections,
    listen() {
      return new Promise((resolve, reject) => {
        http.once('error', reject);
        http.listen(config.port, config.host, () => {
          http.off('error', reject);
          resolve(http.address() as AddressInfo);
        });
      });
    },
    async close() {
      clearInterval(pinger);
      connectRate.stop();
      api.stop();
      const closed = new Promise<void>((resolve) => http.close(() => resolve()));
      const gone = [...connections].map(
        (connection) =>
          new Promise<void>((resolve) => {
            connection.dispose();
            if (connection.ws.readyState === connection.ws.CLOSED) return resolve();
            connection.ws.once('close', () => resolve());
            connection.ws.close(CloseCode.SHUTDOWN, 'server shutdown');
            setTimeout(() => connection.ws.terminate(), 3000).unref();
          }),
      );
      await Promise.all(gone);
      http.closeAllConnections();
      await closed;
    },
  };
}
