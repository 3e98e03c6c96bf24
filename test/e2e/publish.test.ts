/**
 * What pgTAP cannot see of realtime.publish(): the WARNING a DBA's client
 * receives when a message is dropped, with the caller's transaction going on.
 */
import t from 'tap';
import pg from 'pg';

import { createDatabase } from '../helpers/db.js';

t.test('a dropped publish warns, returns NULL and leaves the transaction usable', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('order:%')`);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  t.teardown(() => client.end());
  const notices: { severity?: string; message?: string; hint?: string }[] = [];
  client.on('notice', (n) => notices.push(n));

  await client.query('begin');
  const dropped = await client.query<{ id: string | null }>(`select realtime.publish('nowhere:1', 'created', '{}') as id`);
  await client.query(`update realtime.config set max_payload_bytes = 10`);
  const big = await client.query<{ id: string | null }>(`select realtime.publish('order:1', 'created', '{"text": "0123456789"}') as id`);
  const ok = await client.query<{ id: string | null }>(`select realtime.publish('order:1', 'created', '{}') as id`);
  await client.query('commit');

  t.equal(dropped.rows[0]?.id, null, 'no channel: NULL');
  t.equal(big.rows[0]?.id, null, 'over the cap: NULL');
  t.type(ok.rows[0]?.id, 'string', 'the transaction went on and published');
  t.same(
    notices.map((n) => [n.severity, n.message]),
    [
      ['WARNING', 'realtime.publish: message to channel "nowhere:1" dropped: no_channel'],
      ['WARNING', 'realtime.publish: message to channel "order:1" dropped: payload_too_large'],
    ],
    'each drop raised a WARNING naming channel and reason',
  );
  t.match(notices[0]?.hint, 'realtime.dropped_messages');
  const log = await db.pool.query<{ reason: string }>('select reason from realtime.dropped_messages order by id');
  t.same(log.rows.map((r) => r.reason), ['no_channel', 'payload_too_large'], 'and was recorded');
});
