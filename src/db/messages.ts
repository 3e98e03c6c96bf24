/**
 * Messages: a client publish (realtime.send), the relay's reads (relay_frames,
 * replay_relay_frames, committed_between, stream_info), the row check of
 * change events (change_audience), delivery statistics (record_ws_audience),
 * retention (prune, maintain_partitions) and the HTTP API's history. A
 * message is found by its channel and seq (the primary key of every
 * partition), never by id.
 */
import type pg from 'pg';

import { asIdentity, identityParams, type Identity } from './identity.js';

/** A stored message as the relay writes it: its prebuilt frame (realtime.event_frame). */
export interface RelayFrame {
  id: string;
  seq: string;
  channel: string;
  /** The event frame's JSON text. */
  frame: string;
  /** A change event that only subscribers realtime.change_audience admits may see. */
  rowCheck: boolean;
  /** The transaction that wrote it (xid8), when read with it: compared with each subscription's start. */
  xactId?: bigint;
}

export interface Sent {
  /** NULL for a repeat whose first message is still being written by another transaction. */
  id: string | null;
  seq: number | null;
  duplicate: boolean;
}

/** One item of a batch that failed alone: the SQLSTATE and message it would have thrown with alone. */
export class ItemError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Where a message is: its channel and seq (the primary key of realtime.messages). */
export interface MessageKey {
  channel: string;
  seq: string;
}

export interface StreamInfo {
  epoch: string;
  maxSeq: number;
  prunedThroughSeq: number;
}

/** A row of the history the HTTP API returns, read under the caller's SELECT policies. */
export interface HistoryRow {
  id: string;
  seq: string;
  channel_name: string;
  event_name: string;
  payload: unknown;
  sender_type: 'system' | 'user';
  sender_id: string | null;
  created_at: Date;
}

const HISTORY_COLUMNS = 'id, seq, channel_name, event_name, payload, sender_type, sender_id, created_at';
const HISTORY_BY_NAME = `select ${HISTORY_COLUMNS} from realtime.messages
                         where channel_name = $1 and seq > $2 order by seq limit $3`;
const HISTORY_BY_ID = `select ${HISTORY_COLUMNS} from realtime.messages
                       where channel_id = $1 and seq > $2 order by seq limit $3`;

export function messageQueries(pool: pg.Pool) {
  return {
    /** realtime.send: a client publish under its INSERT policies; with a used dedupe key, the first message. */
    async send(identity: Identity, message: { channel: string; event: string; payload: unknown; dedupeKey?: string }): Promise<Sent> {
      const { rows } = await pool.query<{ id: string | null; seq: string | null; duplicate: boolean }>({
        name: 'realtimed_send',
        text: 'select id, seq, duplicate from realtime.send($1, $2, $3, $4, $5, $6)',
        values: [
          ...identityParams(identity),
          message.channel,
          message.event,
          JSON.stringify(message.payload),
          message.dedupeKey ?? null,
        ],
      });
      const row = rows[0];
      if (!row) throw new Error('realtime.send returned no row');
      return { id: row.id, seq: row.seq === null ? null : Number(row.seq), duplicate: row.duplicate };
    },

    /**
     * realtime.send_batch: up to 64 client publishes in one statement and one
     * commit, each as realtime.send alone; per item its Sent, or the error it
     * failed with (only it rolled back).
     */
    async sendBatch(items: { identity: Identity; channel: string; event: string; payload: unknown; dedupeKey?: string }[]): Promise<(Sent | ItemError)[]> {
      const { rows } = await pool.query<{ ord: number; id: string | null; seq: string | null; duplicate: boolean | null; error_code: string | null; error_message: string | null }>({
        name: 'realtimed_send_batch',
        text: `select ord, id, seq, duplicate, error_code, error_message
               from realtime.send_batch($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::jsonb[], $6::text[])`,
        values: [
          items.map((i) => i.identity.role),
          items.map((i) => JSON.stringify(i.identity.claims)),
          items.map((i) => i.channel),
          items.map((i) => i.event),
          items.map((i) => JSON.stringify(i.payload)),
          items.map((i) => i.dedupeKey ?? null),
        ],
      });
      const results: (Sent | ItemError)[] = new Array(items.length);
      for (const r of rows) {
        results[r.ord - 1] = r.error_code !== null
          ? new ItemError(r.error_code, r.error_message ?? '')
          : { id: r.id, seq: r.seq === null ? null : Number(r.seq), duplicate: r.duplicate === true };
      }
      if (rows.length !== items.length || results.some((r) => r === undefined)) throw new Error('realtime.send_batch returned a row per item');
      return results;
    },

    /** realtime.relay_messages: frames of the given messages with their transactions, skipping those already behind `after` (a pg_snapshot). */
    async relayFrames(keys: MessageKey[], after: string | null = null): Promise<RelayFrame[]> {
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string; frame: string; row_check: boolean; xact_id: string }>({
        name: 'realtimed_relay_messages',
        text: 'select id, seq, channel_name, frame, row_check, xact_id::text from realtime.relay_messages($1::text[], $2::bigint[], $3::pg_snapshot)',
        values: [keys.map((k) => k.channel), keys.map((k) => k.seq), after],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name, frame: r.frame, rowCheck: r.row_check, xactId: BigInt(r.xact_id) }));
    },

    /** realtime.replay_relay_frames: a channel's messages with seq > since, at most maxCount. */
    async replayRelayFrames(channel: string, since: number, maxCount: number): Promise<RelayFrame[]> {
      const { rows } = await pool.query<{ id: string; seq: string; frame: string; row_check: boolean }>({
        name: 'realtimed_replay_relay_frames',
        text: 'select id, seq, frame, row_check from realtime.replay_relay_frames($1, $2, $3)',
        values: [channel, since, maxCount],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel, frame: r.frame, rowCheck: r.row_check }));
    },

    /** How many messages of a channel follow a seq, counting no further than `atMost` (an index-only range). */
    async replayCount(channel: string, since: number, atMost: number): Promise<number> {
      const { rows } = await pool.query<{ n: number }>({
        name: 'realtimed_replay_count',
        text: `select count(*)::int as n
               from (select from realtime.messages m where m.channel_name = $1 and m.seq > $2 limit $3) x`,
        values: [channel, since, atMost],
      });
      return rows[0]?.n ?? 0;
    },

    /** realtime.stream_info: the epoch, the highest seq allocated, how far prune went. */
    async streamInfo(): Promise<StreamInfo> {
      const { rows } = await pool.query<{ epoch: string; max_seq: string; pruned_through_seq: string }>(
        'select epoch, max_seq, pruned_through_seq from realtime.stream_info()',
      );
      const row = rows[0];
      if (!row) throw new Error('realtime.stream_info returned no row');
      return { epoch: row.epoch, maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) };
    },

    /** pg_current_snapshot(), as text: the relay's watermarks. */
    async snapshot(): Promise<string> {
      const { rows } = await pool.query<{ s: string }>('select pg_current_snapshot()::text as s');
      return rows[0]?.s ?? '';
    },

    /** realtime.committed_between: messages whose transactions committed between two snapshots, in seq order. */
    async committedBetween(low: string, high: string): Promise<{ id: string; seq: string; channel: string }[]> {
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string }>({
        name: 'realtimed_committed_between',
        text: 'select id, seq, channel_name from realtime.committed_between($1::pg_snapshot, $2::pg_snapshot)',
        values: [low, high],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name }));
    },

    /**
     * One poll in one round trip: a snapshot taken now, and the messages
     * committed between `low` and it (realtime.committed_between).
     */
    async committedSince(low: string): Promise<{ snapshot: string; committed: { id: string; seq: string; channel: string }[] }> {
      const { rows } = await pool.query<{ s: string; id: string | null; seq: string | null; channel_name: string | null }>({
        name: 'realtimed_committed_since',
        text: `select s::text as s, c.id, c.seq, c.channel_name
               from pg_catalog.pg_current_snapshot() s
               left join lateral realtime.committed_between($1::pg_snapshot, s) c on true`,
        values: [low],
      });
      const committed: { id: string; seq: string; channel: string }[] = [];
      for (const r of rows) if (r.id !== null) committed.push({ id: r.id, seq: r.seq ?? '', channel: r.channel_name ?? '' });
      return { snapshot: rows[0]?.s ?? '', committed };
    },

    /** realtime.version(): the installed schema version. */
    async schemaVersion(): Promise<number> {
      const { rows } = await pool.query<{ v: number }>('select realtime.version() as v');
      return rows[0]?.v ?? 0;
    },

    /** realtime.config.delivery: notify, wal or poll. */
    async deliveryMode(): Promise<string> {
      const { rows } = await pool.query<{ mode: string }>('select realtime.delivery_mode() as mode');
      return rows[0]?.mode ?? 'notify';
    },

    /** realtime.summarize_messages(): BRIN upkeep for polling (fails fast when another daemon holds the lock). */
    async summarizeMessages(): Promise<number> {
      const { rows } = await pool.query<{ n: number }>('select realtime.summarize_messages() as n');
      return rows[0]?.n ?? 0;
    },

    /** realtime.change_audience: for each row-checked message, the indexes (into identities) that may see it now. */
    async changeAudience(keys: MessageKey[], identities: Identity[]): Promise<Map<string, Set<number>>> {
      const { rows } = await pool.query<{ id: string; identity: number }>({
        name: 'realtimed_change_audience',
        text: 'select id, identity from realtime.change_audience($1::text[], $2::bigint[], $3::jsonb)',
        values: [
          keys.map((k) => k.channel),
          keys.map((k) => k.seq),
          JSON.stringify(identities.map((i) => ({ role: i.role, claims: i.claims }))),
        ],
      });
      const audience = new Map<string, Set<number>>();
      for (const row of rows) {
        let set = audience.get(row.id);
        if (!set) audience.set(row.id, (set = new Set()));
        set.add(row.identity - 1);
      }
      return audience;
    },

    /** realtime.record_ws_audience: the sockets each message was written to, as one row. */
    async recordWsAudience(counts: { channel: string; seq: string; sockets: number }[]): Promise<void> {
      await pool.query({
        name: 'realtimed_record_ws_audience',
        text: 'select realtime.record_ws_audience($1::text[], $2::bigint[], $3::int[])',
        values: [counts.map((c) => c.channel), counts.map((c) => c.seq), counts.map((c) => c.sockets)],
      });
    },

    /** realtime.maintain_partitions: partitions ahead, the open one rolled, old ones dropped; what it did. */
    async maintainPartitions(): Promise<string> {
      const { rows } = await pool.query<{ done: string }>('select realtime.maintain_partitions() as done');
      return rows[0]?.done ?? '';
    },

    /** realtime.prune: deletes up to maxRows messages past the retention; returns how many. */
    async prune(maxRows: number): Promise<number> {
      const { rows } = await pool.query<{ n: string }>({
        name: 'realtimed_prune',
        text: 'select realtime.prune(null, $1) as n',
        values: [maxRows],
      });
      return Number(rows[0]?.n ?? 0);
    },

    /**
     * A channel's messages after a seq, as the identity: its SELECT policies on
     * realtime.messages decide which rows come back. `channel` is a name, or a
     * channel id when byId.
     */
    history(identity: Identity, channel: string, byId: boolean, since: number, limit: number): Promise<HistoryRow[]> {
      return asIdentity(pool, identity, async (client) => {
        if (!byId) await client.query(`select set_config('realtime.channel_name', $1, true)`, [channel]);
        const { rows } = await client.query<HistoryRow>(byId ? HISTORY_BY_ID : HISTORY_BY_NAME, [channel, since, limit]);
        return rows;
      });
    },
  };
}
