/**
 * The inspector's HTTP side (with --inspector): the page, its script, and
 * GET /inspector/stats, which shows a token only the channels its own SELECT
 * policies let it see. A development tool: `start` leaves it off.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';

import { wireErrorFromPg } from '../db/errors.js';
import { errorText } from '../daemon/boundary.js';
import type { ConnectionDeps } from '../daemon/socket/connection.js';
import { WireError } from '../protocol/errors.js';

// Built by scripts/build-inspector.mjs; found the same way from src/http/ (tests) and dist/http/.
const FILES = {
  page: new URL('../../dist/inspector/index.html', import.meta.url),
  script: new URL('../../dist/inspector/app.js', import.meta.url),
};

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(body);
}

/**
 * The page's Content-Security-Policy: its own script and its one inline style
 * (by hash), sockets and requests to this host only, and no framing by
 * another page (X-Frame-Options for older browsers).
 */
function pageHeaders(page: string, host: string | undefined): Record<string, string> {
  const style = /<style>([\s\S]*?)<\/style>/.exec(page)?.[1] ?? '';
  const hash = createHash('sha256').update(style).digest('base64');
  const here = host !== undefined && /^[A-Za-z0-9.:[\]-]+$/.test(host) ? ` ws://${host} wss://${host}` : '';
  return {
    'content-security-policy': [
      "default-src 'none'",
      "script-src 'self'",
      `style-src 'sha256-${hash}'`,
      `connect-src 'self'${here}`,
      "img-src 'self' data:",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
  };
}

const json = (res: ServerResponse, status: number, body: unknown): void =>
  send(res, status, 'application/json', JSON.stringify(body));

export function createInspector(deps: Pick<ConnectionDeps, 'config' | 'db' | 'auth' | 'logger'>) {
  const { config, db, auth, logger } = deps;
  let files: Promise<{ page: string; script: string }> | null = null;
  const load = () =>
    (files ??= Promise.all([readFile(FILES.page, 'utf8'), readFile(FILES.script, 'utf8')]).then(([page, script]) => ({
      page: page.replace('__REALTIMED_PATH__', config.path.replace(/[^A-Za-z0-9/_.~-]/g, '')),
      script,
    })));

  const stats = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const header = req.headers.authorization;
    const token = header === undefined ? undefined : /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    try {
      const identity = token === undefined ? auth.anonymous() : await auth.verify(token);
      if (identity === null) throw new WireError('UNAUTHORIZED', 'a token is required');
      json(res, 200, await db.visibleChannelStats(identity));
    } catch (err) {
      const wire = wireErrorFromPg(err);
      const status = wire.code === 'INTERNAL_ERROR' ? 503 : 401;
      if (status === 503) logger.warn({ err: errorText(err) }, 'inspector stats failed');
      json(res, status, { error: wire.code, message: wire.message });
    }
  };

  return async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    try {
      if (path === '/inspector' || path === '/inspector/') {
        const { page } = await load();
        send(res, 200, 'text/html; charset=utf-8', page, pageHeaders(page, req.headers.host));
      }
      else if (path === '/inspector/app.js') send(res, 200, 'text/javascript; charset=utf-8', (await load()).script);
      else if (path === '/inspector/stats') await stats(req, res);
      else json(res, 404, { error: 'NOT_FOUND', message: `no ${path} here` });
    } catch (err) {
      logger.error({ err: errorText(err) }, 'inspector failed');
      json(res, 500, { error: 'INTERNAL_ERROR', message: 'the inspector is not built (npm run build)' });
    }
  };
}
