/**
 * The daemon's queries: each one statement, one round trip, and the SQL
 * package decides (docs/sql.md). A statement that impersonates a client ends
 * its role with its own implicit transaction, so the pooled connection comes
 * back clean.
 */
import type pg from 'pg';

import type { Identity } from './auth.js';

export interface EventFrame {
  id: string;
  seq: string;
  channel: string;
  /** The event frame's JSON text, built by realtime.event_frames(). */
  frame: string;
}

export interface Sent {
  id: string;
  seq: number;
  duplicate: boolean;
}

export interface Db {
  /** The matched channel id when the identity may subscribe, else null. */
  authorizeSubscribe(identity: Identity, channel: string): Promise<string | null>;
  send(identity: Identity, message: { channel: string; event: string; payload: unknown; dedupeKey?: string }): Promise<Sent>;
  eventFrames(ids: string[]): Promise<EventFrame[]>;
  /** The channel id each name matches now (null when none or disabled). */
  matchChannels(names: string[]): Promise<Map<string, string | null>>;
  ping(): Promise<void>;
}

export function createDb(pool: pg.Pool): Db {
  return {
    async authorizeSubscribe(identity, channel) {
      const { rows } = await pool.query<{ id: string | null }>({
        name: 'realtimed_authorize_subscribe',
        text: 'select realtime.authorize_subscribe($1, $2, $3) as id',
        values: [identity.role, JSON.stringify(identity.claims), channel],
      });
      return rows[0]?.id ?? null;
    },
    async send(identity, message) {
      const { rows } = await pool.query<{ id: string; seq: string; duplicate: boolean }>({
        name: 'realtimed_send',
        text: 'select id, seq, duplicate from realtime.send($1, $2, $3, $4, $5, $6)',
        values: [
          identity.role,
          JSON.stringify(identity.claims),
          message.channel,
          message.event,
          JSON.stringify(message.payload),
          message.dedupeKey ?? null,
        ],
      });
      const row = rows[0];
      if (!row) throw new Error('realtime.send returned no row');
      return { id: row.id, seq: Number(row.seq), duplicate: row.duplicate };
    },
    async eventFrames(ids) {
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string; frame: string }>({
        name: 'realtimed_event_frames',
        text: 'select id, seq, channel_name, frame from realtime.event_frames($1::uuid[])',
        values: [ids],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name, frame: r.frame }));
    },
    async matchChannels(names) {
      const { rows } = await pool.query<{ name: string; id: string | null }>({
        name: 'realtimed_match_channels',
        text: 'select n.name, realtime.match_channel(n.name) as id from unnest($1::text[]) as n(name)',
        values: [names],
      });
      return new Map(rows.map((r) => [r.name, r.id]));
    },
    async ping() {
      await pool.query('select 1');
    },
  };
}
