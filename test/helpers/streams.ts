/**
 * Concurrent publishers whose seqs commit out of order, and the check that a
 * subscriber saw each message once, in each publisher's commit order (the
 * recovery and delivery suites).
 */
import type { Test } from 'tap';
import pg from 'pg';

import type { Frame } from './ws.js';
import { settle } from './wait.js';

/** Publishers in their own transactions, each holding its transaction open a moment so seqs commit out of order. */
export async function publishConcurrently(url: string, publishers: number, each: number, channel: string, retry = false): Promise<void> {
  await Promise.all(
    Array.from({ length: publishers }, async (_, p) => {
      let client: pg.Client | null = null;
      for (let i = 0; i < each; ) {
        try {
          if (!client) {
            client = new pg.Client({ connectionString: url });
            client.on('error', () => {});
            await client.connect();
          }
          await client.query('begin');
          // The dedupe key makes a retry after an ambiguous commit harmless.
          await client.query(`select realtime.publish($1, 'tick', jsonb_build_object('p', $2::int, 'i', $3::int), $4)`, [channel, p, i, `${p}-${i}`]);
          if (i % 7 === p % 7) await client.query('select pg_sleep(0.003)');
          await client.query('commit');
          i++;
        } catch (err) {
          if (!retry) throw err;
          await client?.end().catch(() => {});
          client = null;
          await settle(100);
        }
      }
      await client?.end();
    }),
  );
}

export function checkStream(t: Test, events: Frame[], publishers: number, each: number, who: string): void {
  const ids = events.map((e) => (e['meta'] as Record<string, string>)['messageId']);
  t.equal(ids.length, publishers * each, `${who}: ${publishers * each} events`);
  t.equal(new Set(ids).size, ids.length, `${who}: no duplicate`);
  const last = new Map<number, number>();
  let ordered = true;
  for (const e of events) {
    const { p, i } = e['payload'] as { p: number; i: number };
    if ((last.get(p) ?? -1) >= i) ordered = false;
    last.set(p, i);
  }
  t.ok(ordered, `${who}: each publisher's messages in the order it committed them`);
}
