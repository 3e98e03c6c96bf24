/**
 * GET /health (200 while the LISTEN connection and the pool are up, else 503)
 * and GET /metrics (Prometheus text; with --metrics-token, for that bearer only).
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

import type { Db } from '../db/index.js';
import type { Listener } from '../daemon/listener.js';
import type { Metrics } from '../daemon/metrics.js';
import { sendError, sendJson } from './respond.js';

/** How long /health waits for the database before it says it is down. */
const PING_TIMEOUT_MS = 2000;

/** Whether the request carries `Authorization: Bearer <token>` (compared in constant time). */
function bearerIs(req: IncomingMessage, token: string): boolean {
  const given = Buffer.from(/^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '');
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function createHealth(deps: {
  db: Pick<Db, 'ping'>;
  listener: Listener;
  metrics: Metrics;
  connections: () => number;
  metricsToken: string | undefined;
}) {
  return {
    async health(res: ServerResponse): Promise<void> {
      const listening = deps.listener.isUp();
      const database = await Promise.race([
        deps.db.ping().then(() => true, () => false),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), PING_TIMEOUT_MS).unref()),
      ]);
      const ok = listening && database;
      sendJson(res, ok ? 200 : 503, {
        status: ok ? 'ok' : 'unavailable',
        listener: listening ? 'up' : 'down',
        database: database ? 'up' : 'down',
        connections: deps.connections(),
      });
    },
    async metrics(req: IncomingMessage, res: ServerResponse): Promise<void> {
      if (deps.metricsToken !== undefined && !bearerIs(req, deps.metricsToken)) {
        sendError(res, { code: 'UNAUTHORIZED', message: 'GET /metrics needs the metrics token: Authorization: Bearer <token>' }, 401);
        return;
      }
      const text = await deps.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
      res.end(text);
    },
  };
}
