/**
 * The inspector page in a real browser (playwright-core driving Debian's
 * chromium): connect with a token, subscribe, see an event published from SQL,
 * publish from the page and see it reach a second WebSocket client; the
 * statistics endpoint shows a token only what its policies let it see.
 * Skipped, saying why, where chromium is missing; .ci/run installs it.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import { createDatabase, type Teardown } from '../helpers/db.js';
import { startDaemon } from '../helpers/daemon.js';
import { SECRET, sign, userToken, ALICE } from '../helpers/jwt.js';
import { TestClient } from '../helpers/ws.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const SHOTS = fileURLToPath(new URL('../../.tap/screenshots/', import.meta.url));

async function demoDaemon(t: Teardown, inspector = true) {
  const db = await createDatabase(t);
  await db.pool.query(await readFile(new URL('../../sql/demo.sql', import.meta.url), 'utf8'));
  return { db, ...(await startDaemon(t, db, { inspector, jwtSecret: SECRET })) };
}

t.test('GET /inspector/stats: what the token’s policies show, and nothing without --inspector', async (t) => {
  const { db, httpUrl } = await demoDaemon(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('secret:%');
    select realtime.publish('demo:a', 'e', '{}'); select realtime.publish('demo:a', 'e', '{}');
    select realtime.publish('secret:1', 'e', '{}');`);
  const asUser = await fetch(`${httpUrl}/inspector/stats`, { headers: { authorization: `Bearer ${await userToken(ALICE)}` } });
  t.equal(asUser.status, 200);
  const body = (await asUser.json()) as { channels: { pattern: string; messagesTotal: number }[]; perMinute: { messages: number }[] };
  t.same(body.channels.map((c) => [c.pattern, c.messagesTotal]), [['demo:%', 2]], 'only the demo channel: no policy shows secret:%');
  t.equal(body.perMinute.length, 30, 'thirty minutes');
  t.equal(body.perMinute.reduce((n, p) => n + p.messages, 0), 2, 'per-minute counts cover only the visible channels');

  const admin = await fetch(`${httpUrl}/inspector/stats`, { headers: { authorization: `Bearer ${await sign({ role: 'service_role' })}` } });
  t.equal(admin.status, 401, 'service_role is not among --roles: refused');
  const forged = await fetch(`${httpUrl}/inspector/stats`, { headers: { authorization: `Bearer ${await sign({ role: 'authenticated' }, { secret: 'x'.repeat(40) })}` } });
  t.same([forged.status, ((await forged.json()) as { error: string }).error], [401, 'UNAUTHORIZED'], 'a forged token: 401 UNAUTHORIZED');
  const expired = await fetch(`${httpUrl}/inspector/stats`, { headers: { authorization: `Bearer ${await sign({ role: 'authenticated' }, { expiresIn: -60 })}` } });
  t.same(((await expired.json()) as { error: string }).error, 'TOKEN_EXPIRED');
  const anon = await fetch(`${httpUrl}/inspector/stats`);
  t.equal(anon.status, 200, 'anon sees what anon policies show');

  const page = await fetch(`${httpUrl}/inspector`);
  t.equal(page.status, 200);
  const csp = page.headers.get('content-security-policy') ?? '';
  t.match(csp, /default-src 'none'/, 'a Content-Security-Policy: nothing by default (finding 8g) ...');
  t.match(csp, /script-src 'self'/, '... its own script ...');
  t.match(csp, /frame-ancestors 'none'/, '... and no framing by another page');
  t.equal(page.headers.get('x-frame-options'), 'DENY');
  t.match(await page.text(), '<meta name="realtimed-path" content="/">', 'the page knows the WebSocket path');
  t.equal((await fetch(`${httpUrl}/inspector/app.js`)).headers.get('content-type'), 'text/javascript; charset=utf-8');

  const off = await demoDaemon(t, false);
  t.equal((await fetch(`${off.httpUrl}/inspector`)).status, 404, 'start without --inspector serves no page');
  t.equal((await fetch(`${off.httpUrl}/inspector/stats`)).status, 404, 'nor statistics');
});

t.test('in a real browser: subscribe, an event from SQL, publish to a second client', { skip: existsSync(CHROMIUM) || process.env['CI'] ? false : `no chromium at ${CHROMIUM}: apt-get install chromium` }, async (t) => {
  const { chromium } = await import('playwright-core');
  const { db, httpUrl, wsUrl } = await demoDaemon(t);
  const token = await userToken(ALICE);

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  await page.goto(`${httpUrl}/inspector#token=${token}`);
  await page.locator('#state[data-state="open"]').waitFor({ timeout: 10_000 });

  await page.fill('#channel', 'demo:hello');
  await page.click('#subscribe-form button');
  await page.locator('#subscriptions li[data-channel="demo:hello"]').waitFor();
  t.match(await page.textContent('#subscribe-result'), 'subscribed to demo:hello');

  const { rows } = await db.pool.query<{ id: string }>(`select realtime.publish('demo:hello', 'greeting', '{"text": "from SQL"}') as id`);
  t.ok(rows[0]?.id, 'published from SQL');
  const fromSql = page.locator('#events tr', { hasText: 'from SQL' });
  await fromSql.waitFor({ timeout: 5000 });
  t.match(await fromSql.textContent(), /demo:hellogreeting\d+system/, 'the event appears with its meta (channel, event, seq, sender)');

  const other = await TestClient.connect(t, wsUrl);
  await other.subscribe('demo:hello');
  await page.fill('#publish-channel', 'demo:hello');
  await page.fill('#publish-event', 'message');
  await page.fill('#publish-payload', '{"text": "from the page"}');
  await page.click('#publish-form button');
  await page.locator('#publish-result', { hasText: 'published: seq' }).waitFor();
  const received = await other.next((f) => f.type === 'event' && (f['payload'] as { text?: string }).text === 'from the page', 5000);
  t.match(received, { channel: 'demo:hello', event: 'message', meta: { senderType: 'user', senderId: ALICE } }, 'the second client gets it, sent by alice');
  await page.locator('#events tr', { hasText: 'from the page' }).waitFor();

  await page.click('#connect'); // reconnect: the stats refresh too
  await page.locator('#stats tr', { hasText: 'demo:%' }).waitFor({ timeout: 10_000 });
  t.equal(await page.locator('#chart rect').count(), 30, 'a bar per minute');

  await mkdir(SHOTS, { recursive: true });
  const shot = `${SHOTS}inspector.png`;
  await page.screenshot({ path: shot, fullPage: true });
  t.comment(`screenshot: ${shot}`);
  t.same(problems, [], 'no script errors on the page, and nothing its Content-Security-Policy refused');
});
