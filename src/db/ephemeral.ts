/** Ephemeral messages: realtime.send_ephemeral and the key they are signed with (realtime.notify_key). */
import type pg from 'pg';

import { identityParams, type Identity } from './identity.js';

export function ephemeralQueries(pool: pg.Pool) {
  return {
    /** Checks the INSERT policies as the identity and NOTIFYs realtime_ephemeral; nothing is stored. */
    async sendEphemeral(identity: Identity, channel: string, event: string, notification: string): Promise<void> {
      await pool.query({
        name: 'realtimed_send_ephemeral',
        text: 'select realtime.send_ephemeral($1, $2, $3, $4, $5)',
        values: [...identityParams(identity), channel, event, notification],
      });
    },

    /**
     * realtime.notify_key: what ephemeral notifications are sealed with, and
     * (schema 18+) the key before the last rotation with how many more
     * milliseconds it is accepted. to_jsonb reads a schema 17 row too.
     */
    async notifyKey(): Promise<{ key: string; previous: string | null; previousMs: number }> {
      const { rows } = await pool.query<{ k: { key?: string; previous_key?: string | null }; ms: number | null }>(
        `select to_jsonb(k) as k,
                (extract(epoch from (to_jsonb(k) ->> 'previous_valid_until')::timestamptz - now()) * 1000)::float8 as ms
         from realtime.notify_key k`);
      const key = rows[0]?.k.key;
      if (!key) throw new Error('realtime.notify_key is empty');
      return { key, previous: rows[0]?.k.previous_key ?? null, previousMs: Math.max(0, rows[0]?.ms ?? 0) };
    },
  };
}
