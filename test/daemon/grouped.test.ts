/**
 * Grouped client statements (src/daemon/grouped.ts) against a real database:
 * publishes submitted together are committed together and each answered as
 * alone; subscribe checks asked together answer as alone; a batch statement
 * that fails as a whole falls back to each item alone.
 */
import pg from 'pg';
import t from 'tap';

import { createDb } from '../../src/db/index.js';
import type { Identity } from '../../src/db/identity.js';
import { wireErrorFromPg } from '../../src/db/errors.js';
import { groupedDb } from '../../src/daemon/grouped.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { createDatabase, createLoginRole, urlFor, type Teardown } from '../helpers/db.js';
import { loadExamples } from '../helpers/daemon.js';

const ALICE: Identity = { role: 'authenticated', claims: { sub: 'a11ce000-0000-4000-8000-000000000001', role: 'authenticated' }, exp: undefined };
const BOB: Identity = { role: 'authenticated', claims: { sub: 'b0b00000-0000-4000-8000-000000000002', role: 'authenticated' }, exp: undefined };
const ANON: Identity = { role: 'anon', claims: { role: 'anon' }, exp: undefined };
const INSTANCE = '00000000-0000-4000-8000-000000000000';

async function setup(t: Teardown, options: { statementTimeout?: number } = {}) {
  const db = await createDatabase(t);
  await loadExamples(db);
  // A second policy for a second role: anyone may publish to lobby:%.
  await db.pool.query(`insert into realtime.channels (pattern) values ('lobby:%');
    create policy lobby_anyone on realtime.messages for insert to anon with check (realtime.channel_name() like 'lobby:%');
    create policy lobby_subscribe on realtime.channels for select to anon using (pattern = 'lobby:%')`);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const pool = new pg.Pool({
    connectionString: urlFor(db.name, undefined, role),
    max: 4,
    ...(options.statementTimeout === undefined ? {} : { options: `-c statement_timeout=${options.statementTimeout}` }),
  });
  pool.on('error', () => {}); // the final DROP DATABASE ... WITH (FORCE)
  t.teardown(() => pool.end());
  const metrics = createMetrics({ connections: () => 0, subscriptions: () => 0 });
  const plain = createDb(pool);
  // One batch at a time: everything submitted while it runs forms the next.
  const grouped = groupedDb(plain, { metrics }, { concurrency: 1 });
  const batches = async (name: string): Promise<{ count: number; sum: number }> => {
    const m = (await metrics.registry.getSingleMetric(name)?.get()) as { values: { metricName?: string; value: number }[] };
    const pick = (suffix: string) => m.values.find((v) => v.metricName === `${name}${suffix}`)?.value ?? 0;
    return { count: pick('_count'), sum: pick('_sum') };
  };
  return { db, plain, grouped, batches };
}

type Outcome = { ok: true; id: string | null; seq: number | null; duplicate: boolean } | { ok: false; code: string; message: string };

async function outcome(p: Promise<{ id: string | null; seq: number | null; duplicate: boolean }>): Promise<Outcome> {
  try {
    return { ok: true, ...(await p) };
  } catch (err) {
    const wire = wireErrorFromPg(err);
    return { ok: false, code: wire.code, message: wire.message };
  }
}

/** A publish's answer without what differs between two runs (ids, seqs). */
function shape(o: Outcome): unknown {
  return o.ok ? { ok: true, duplicate: o.duplicate, stored: o.id !== null } : o;
}

const MIXED: [Identity, string, string | undefined][] = [
  [ALICE, 'chat:7', undefined], // a member: allowed
  [BOB, 'chat:7', undefined], // not a member: denied by the INSERT policy
  [ANON, 'lobby:1', undefined], // another role, another policy: allowed
  [ALICE, 'nowhere:1', undefined], // no channel
  [ANON, 'lobby:1', 'k'], // an anonymous dedupe key
  [ALICE, 'chat:7', 'k1'], // a key ...
  [ALICE, 'chat:7', 'k1'], // ... and its repeat
  [ANON, 'chat:7', undefined], // anon may not publish to chat
];

t.test('publishes submitted together: one batch, each answered exactly as alone', async (t) => {
  const { db, plain, grouped, batches } = await setup(t);
  // Alone, one at a time, on the plain statement: the reference answers.
  const alone: Outcome[] = [];
  for (const [who, channel, key] of MIXED) {
    alone.push(await outcome(plain.send(who, { channel, event: 'm', payload: { n: 1 }, ...(key ? { dedupeKey: `${key}-alone` } : {}) })));
  }
  // Together: submitted in one tick, so all but the first wait and go as one batch.
  const together = await Promise.all(
    MIXED.map(([who, channel, key]) => outcome(grouped.send(who, { channel, event: 'm', payload: { n: 2 }, ...(key ? { dedupeKey: key } : {}) }))),
  );
  t.same(together.map(shape), alone.map(shape), 'the same acks and refusals, item by item');
  t.same(together.map((o) => (o.ok ? 'ok' : o.code)), ['ok', 'UNAUTHORIZED', 'ok', 'UNAUTHORIZED', 'INVALID_MESSAGE', 'ok', 'ok', 'UNAUTHORIZED']);
  const [first, , , , , keyed, repeat] = together;
  t.ok(first?.ok && repeat?.ok && keyed?.ok && repeat.id === keyed.id && repeat.duplicate, 'the repeated key answers with the first message');
  t.same(await batches('realtimed_publish_batch_items'), { count: 2, sum: MIXED.length }, 'the first alone, the other seven in one batch');
  const { rows } = await db.pool.query(`select payload ->> 'n' as n, count(*)::int as c from realtime.messages group by 1 order by 1`);
  t.same(rows, [{ n: '1', c: 3 }, { n: '2', c: 3 }], 'the same three messages stored each way: the refused ones rolled back alone');
});

t.test('a denied publish in a batch of allowed ones fails alone; seqs follow the order submitted', async (t) => {
  const { db, grouped, batches } = await setup(t);
  const items = Array.from({ length: 70 }, (_, i) => (i % 10 === 5 ? BOB : ALICE));
  const results = await Promise.all(items.map((who, i) => outcome(grouped.send(who, { channel: 'chat:7', event: 'm', payload: { i } }))));
  t.same(results.map((r) => r.ok), items.map((who) => who === ALICE), 'every allowed one acked, every denied one refused');
  const seqs = results.flatMap((r) => (r.ok && r.seq !== null ? [r.seq] : []));
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'acked seqs increase in the order submitted');
  const stats = await batches('realtimed_publish_batch_items');
  t.equal(stats.sum, 70);
  t.equal(stats.count, 4, 'alone, then at most 32 a batch: 1 + 32 + 32 + 5');
  const { rows } = await db.pool.query(`select (payload ->> 'i')::int as i from realtime.messages order by seq`);
  t.same(rows.map((r) => r['i']), items.flatMap((who, i) => (who === ALICE ? [i] : [])), 'stored in the order submitted');
});

t.test('a batch statement that fails as a whole (a statement timeout): each item tried again alone', async (t) => {
  const { db, grouped } = await setup(t, { statementTimeout: 1000 });
  // One channel whose INSERT policy takes 2 s: the batch statement is cancelled, which no item can catch.
  await db.pool.query(`insert into realtime.channels (pattern) values ('slow:%');
    create policy slow_publish on realtime.messages for insert to authenticated
      with check (realtime.channel_name() like 'slow:%' and pg_sleep(2) is not null)`);
  const first = grouped.send(ALICE, { channel: 'chat:7', event: 'm', payload: { first: true } });
  const rest = [
    grouped.send(ALICE, { channel: 'chat:7', event: 'm', payload: { n: 1 } }),
    grouped.send(ALICE, { channel: 'slow:1', event: 'm', payload: { n: 2 } }),
    grouped.send(ALICE, { channel: 'chat:7', event: 'm', payload: { n: 3 } }),
  ].map(outcome);
  t.ok((await outcome(first)).ok);
  const [a, slow, b] = await Promise.all(rest);
  t.ok(a?.ok && b?.ok, 'the others were acked (alone, after the batch was cancelled)');
  t.same(slow, { ok: false, code: 'INTERNAL_ERROR', message: 'the server could not reach its database' }, 'the slow one failed as it does alone');
  const { rows } = await db.pool.query(`select count(*)::int as n from realtime.messages`);
  t.equal(rows[0]?.n, 3, 'nothing written twice, nothing of the cancelled batch kept');
});

t.test('subscribe checks asked together: each answered exactly as alone', async (t) => {
  const { plain, grouped, batches } = await setup(t);
  const checks: [Identity, string][] = [
    [ANON, 'orders'], [ALICE, 'chat:7'], [BOB, 'chat:7'], [ALICE, 'order:1'], [BOB, 'order:1'], [BOB, 'order:2'],
    [ANON, 'order:1'], [ANON, 'lobby:3'], [ALICE, 'lobby:3'], [ANON, 'nowhere:1'], [{ ...ANON, role: 'nosuchrole' }, 'orders'],
  ];
  const answer = async (p: Promise<{ id: string | null; limits: unknown; otherSubscribers: number; stream: { epoch: string } }>) => {
    try {
      const a = await p;
      return { id: a.id, limits: a.limits, others: a.otherSubscribers, epoch: a.stream.epoch };
    } catch (err) {
      return { error: wireErrorFromPg(err).code };
    }
  };
  const alone = [];
  for (const [who, channel] of checks) alone.push(await answer(plain.authorizeSubscription(who, channel, INSTANCE)));
  const together = await Promise.all(checks.map(([who, channel]) => answer(grouped.authorizeSubscription(who, channel, INSTANCE))));
  t.same(together, alone, 'the same answers, item by item');
  t.same(together.map((a) => ('error' in a ? a.error : a.id !== null)), [true, true, false, true, false, true, false, true, false, false, 'UNAUTHORIZED']);
  t.same(await batches('realtimed_subscribe_batch_items'), { count: 2, sum: checks.length }, 'the first alone, the other ten together');
});

t.test('a batch of one goes through the plain statement: nothing waits when idle', async (t) => {
  const { grouped, batches } = await setup(t);
  for (let i = 0; i < 3; i++) t.ok((await outcome(grouped.send(ALICE, { channel: 'chat:7', event: 'm', payload: {} }))).ok);
  t.same(await batches('realtimed_publish_batch_items'), { count: 3, sum: 3 }, 'three publishes one after another: three batches of one');
});

