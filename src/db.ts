/**
 * The daemon's queries: each one statement, one round trip, and the SQL
 * package decides (docs/sql.md). A statement that impersonates a client ends
 * its role with its own implicit transaction, so the pooled connection comes
 * back clean.
 */
import type pg from 'pg';

import type { Identity } from './auth.js';
import type { ChannelStatsReply } from './inspectorStats.js';

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

export interface StreamInfo {
  epoch: string;
  maxSeq: number;
  prunedThroughSeq: number;
}

export interface Db {
  /** The matched channel id when the identity may subscribe, else null. */
  authorizeSubscribe(identity: Identity, channel: string): Promise<string | null>;
  /** authorizeSubscribe and streamInfo in one round trip (the stream position is read first). */
  authorizeSubscribeStream(identity: Identity, channel: string): Promise<{ id: string | null; stream: StreamInfo }>;
  send(identity: Identity, message: { channel: string; event: string; payload: unknown; dedupeKey?: string }): Promise<Sent>;
  /** Frames of the given messages, skipping those already behind `after` (a pg_snapshot). */
  eventFrames(ids: string[], after?: string | null): Promise<EventFrame[]>;
  replayFrames(channel: string, since: number, maxCount: number): Promise<EventFrame[]>;
  streamInfo(): Promise<StreamInfo>;
  snapshot(): Promise<string>;
  committedBetween(low: string, high: string): Promise<{ id: string; seq: string; channel: string }[]>;
  /** The channel id each name matches now (null when none or disabled). */
  matchChannels(names: string[]): Promise<Map<string, string | null>>;
  ping(): Promise<void>;
  /** For the inspector: statistics of the channel rows the identity can see (its SELECT policies, no channel name set). */
  visibleChannelStats(identity: Identity): Promise<ChannelStatsReply>;
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
    async authorizeSubscribeStream(identity, channel) {
      const { rows } = await pool.query<{ channel_id: string | null; epoch: string; max_seq: string; pruned_through_seq: string }>({
        name: 'realtimed_authorize_subscribe_stream',
        text: 'select channel_id, epoch, max_seq, pruned_through_seq from realtime.authorize_subscribe_stream($1, $2, $3)',
        values: [identity.role, JSON.stringify(identity.claims), channel],
      });
      const row = rows[0];
      if (!row) throw new Error('realtime.authorize_subscribe_stream returned no row');
      return {
        id: row.channel_id,
        stream: { epoch: row.epoch, maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) },
      };
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
    async eventFrames(ids, after = null) {
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string; frame: string }>({
        name: 'realtimed_event_frames',
        text: 'select id, seq, channel_name, frame from realtime.event_frames($1::uuid[], $2::pg_snapshot)',
        values: [ids, after],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name, frame: r.frame }));
    },
    async replayFrames(channel, since, maxCount) {
      const { rows } = await pool.query<{ id: string; seq: string; frame: string }>({
        name: 'realtimed_replay_frames',
        text: 'select id, seq, frame from realtime.replay_frames($1, $2, $3)',
        values: [channel, since, maxCount],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel, frame: r.frame }));
    },
    async streamInfo() {
      const { rows } = await pool.query<{ epoch: string; max_seq: string; pruned_through_seq: string }>(
        'select epoch, max_seq, pruned_through_seq from realtime.stream_info()',
      );
      const row = rows[0];
      if (!row) throw new Error('realtime.stream_info returned no row');
      return { epoch: row.epoch, maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) };
    },
    async snapshot() {
      const { rows } = await pool.query<{ s: string }>('select pg_current_snapshot()::text as s');
      return rows[0]?.s ?? '';
    },
    async committedBetween(low, high) {
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string }>({
        name: 'realtimed_committed_between',
        text: 'select id, seq, channel_name from realtime.committed_between($1::pg_snapshot, $2::pg_snapshot)',
        values: [low, high],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name }));
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
    async visibleChannelStats(identity) {
      const client = await pool.connect();
      let ids: string[];
      try {
        // The client's own policies say which channel rows it sees; the role ends with the rollback.
        await client.query('begin');
        await client.query('select realtime.impersonate($1, $2)', [identity.role, JSON.stringify(identity.claims)]);
        ids = (await client.query<{ id: string }>('select id from realtime.channels')).rows.map((r) => r.id);
        await client.query('rollback');
      } catch (err) {
        await client.query('rollback').catch(() => {});
        client.release();
        throw err;
      }
      try {
        const channels = await client.query<{
          pattern: string; enabled: boolean; last_hour: string; total: string;
          avg: string | null; rate: string | null; last: Date | null;
        }>(
          `select pattern, enabled, messages_last_hour as last_hour, messages_total as total,
                  avg_ws_audience as avg, webhook_success_rate as rate, last_message_at as last
           from realtime.channel_stats where channel_id = any($1::uuid[]) order by pattern`,
          [ids],
        );
        const minutes = await client.query<{ minute: Date; messages: string }>(
          `select g.minute, coalesce(c.n, 0) as messages
           from pg_catalog.generate_series(date_trunc('minute', now()) - interval '29 minutes',
                                           date_trunc('minute', now()), interval '1 minute') as g(minute)
           left join (select date_trunc('minute', m.created_at) as minute, count(*) as n
                      from realtime.messages m
                      where m.created_at >= date_trunc('minute', now()) - interval '29 minutes'
                        and m.channel_id = any($1::uuid[])
                      group by 1) c using (minute)
           order by g.minute`,
          [ids],
        );
        return {
          channels: channels.rows.map((r) => ({
            pattern: r.pattern,
            enabled: r.enabled,
            messagesLastHour: Number(r.last_hour),
            messagesTotal: Number(r.total),
            avgWsAudience: r.avg === null ? null : Number(r.avg),
            webhookSuccessRate: r.rate === null ? null : Number(r.rate),
            lastMessageAt: r.last?.toISOString() ?? null,
          })),
          perMinute: minutes.rows.map((r) => ({ minute: r.minute.toISOString(), messages: Number(r.messages) })),
        };
      } finally {
        client.release();
      }
    },
  };
}
