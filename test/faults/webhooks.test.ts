/**
 * A webhook receiver down for 30 s: every delivery arrives once it is back.
 * The retry window must cover the outage: with the defaults (5 attempts from
 * 1 s, doubling) the last retry is about 15 s after the first attempt, so a
 * 30 s outage needs webhook_max_attempts of 6 or more; the case sets 8
 * (about 2 minutes) and says so in docs/RELIABILITY.md.
 */
import t from 'tap';

import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { Receiver } from '../helpers/receiver.js';
import { record } from './helpers.js';
import { spawnDaemon } from '../helpers/spawn.js';
import { settle, until } from '../helpers/wait.js';

t.test('webhook receiver down 30 s: all delivered after, each once', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const receiver = new Receiver();
  await receiver.listen();
  const port = receiver.port;
  await receiver.close(); // down: connections refused
  await db.pool.query(`insert into realtime.channels (pattern, webhook_urls) values ('orders', $1)`, [[`http://127.0.0.1:${port}/hook`]]);
  await db.pool.query('update realtime.config set webhook_max_attempts = 8');
  await spawnDaemon(t, urlFor(db.name, undefined, role), { args: ['--webhook-sweep-interval', '200', '--webhook-allow-local'] });

  const messages = 100;
  await db.pool.query(`select realtime.publish('orders', 'created', jsonb_build_object('n', i)) from generate_series(1, $1) i`, [messages]);
  await settle(30_000);
  const during = await db.pool.query<{ state: string; n: number }>(`select state, count(*)::int as n from realtime.webhook_deliveries group by state`);
  t.notOk(during.rows.some((r) => r.state === 'failed'), 'nothing given up while the receiver was down');

  const up = Date.now();
  await receiver.listen(port);
  t.teardown(() => receiver.close());
  await receiver.waitFor(messages, 90_000);
  const lagMs = Date.now() - up;
  await until('all delivered', async () => {
    const r = await db.pool.query(`select count(*)::int as n from realtime.webhook_deliveries where state = 'delivered'`);
    return r.rows[0]?.n === messages || undefined;
  });
  await settle(1000);
  const ids = receiver.received.map((r) => r.headers['x-realtime-message-id']);
  const attempts = await db.pool.query<{ max: number }>(`select max(attempts)::int as max from realtime.webhook_deliveries`);
  const ok =
    t.equal(ids.length, messages, `${messages} requests`) && t.equal(new Set(ids).size, messages, 'each message once');
  record(
    'webhook receiver down 30 s',
    `${messages} deliveries, all received once, the last ${lagMs} ms after the receiver came back (up to ${attempts.rows[0]?.max} attempts each, webhook_max_attempts = 8; the default 5 gives up after about 15 s)`,
    ok,
  );
});
