/**
 * The daemon's queries: each one statement, one round trip, and the SQL
 * package decides (docs/sql.md). A statement that impersonates a client ends
 * its role with its own implicit transaction, so the pooled connection comes
 * back clean.
 */
import { hostname } from 'node:os';

import type pg from 'pg';

import type { Identity } from './auth.js';
import type { ChannelStatsReply } from './inspectorStats.js';

export interface EventFrame {
  id: string;
  seq: string;
  channel: string;
  /** The event frame's JSON text, built by realtime.event_frame(). */
  frame: string;
  /** A change event that only subscribers realtime.change_audience admits may see. */
  rowCheck: boolean;
}

/** A channel's limits (realtime.channels), null where none is set. */
export interface ChannelLimits {
  maxSubscribers: number | null;
  publishRate: number | null;
  maxMessageBytes: number | null;
}

export interface PresenceMember {
  channel: string;
  key: string;
  state: Record<string, unknown>;
  connections: number;
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
  /** authorizeSubscribe, streamInfo and the channel's limits in one round trip (the stream position is read first). */
  authorizeSubscribeStream(
    identity: Identity,
    channel: string,
    instance: string,
  ): Promise<{ id: string | null; stream: StreamInfo; limits: ChannelLimits; otherSubscribers: number }>;
  /** Replaces this instance's subscriber counts of channels with a max_subscribers. */
  reportSubscribers(instance: string, counts: Map<string, number>): Promise<void>;
  /** For each message needing a row check, the indexes (into identities) that may see it now. */
  changeAudience(ids: string[], identities: Identity[]): Promise<Map<string, Set<number>>>;
  /** Registers or refreshes this instance; registered is true when its row was new. */
  instanceHeartbeat(instance: string, timeoutMs: number): Promise<{ registered: boolean; removed: number }>;
  instanceStop(instance: string): Promise<void>;
  presenceTrack(
    p: { instance: string; connection: string; identity: Identity; channel: string; state: Record<string, unknown> },
    limits: { maxMembers: number; maxStateBytes: number },
  ): Promise<string>;
  presenceUntrack(connection: string, channels: string[] | null): Promise<void>;
  presenceMembers(channels: string[]): Promise<PresenceMember[]>;
  /** Checks the INSERT policies as the identity and NOTIFYs realtime_ephemeral; nothing is stored. */
  sendEphemeral(identity: Identity, channel: string, event: string, notification: string): Promise<void>;
  /** The key ephemeral notifications are signed with (realtime.notify_key). */
  notifyKey(): Promise<string>;
  /**
   * Runs fn in a transaction acting as the identity (realtime.impersonate), so
   * its grants and policies decide; committed if fn resolves, else rolled back.
   */
  asIdentity<T>(identity: Identity, fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  send(identity: Identity, message: { channel: string; event: string; payload: unknown; dedupeKey?: string }): Promise<Sent>;
  /** Frames of the given messages, skipping those already behind `after` (a pg_snapshot). */
  eventFrames(ids: string[], after?: string | null): Promise<EventFrame[]>;
  replayFrames(channel: string, since: number, maxCount: number): Promise<EventFrame[]>;
  streamInfo(): Promise<StreamInfo>;
  snapshot(): Promise<string>;
  committedBetween(low: string, high: string): Promise<{ id: string; seq: string; channel: string }[]>;
  /** The channel id each name matches now (null when none or disabled), with its limits. */
  matchChannels(names: string[]): Promise<Map<string, { id: string | null; limits: ChannelLimits }>>;
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
    async authorizeSubscribeStream(identity, channel, instance) {
      const { rows } = await pool.query<{
        channel_id: string | null; epoch: string; max_seq: string; pruned_through_seq: string;
        max_subscribers: number | null; publish_rate: number | null; max_message_bytes: number | null;
        other_subscribers: number;
      }>({
        name: 'realtimed_authorize_subscription',
        text: `select channel_id, epoch, max_seq, pruned_through_seq, max_subscribers, publish_rate, max_message_bytes,
                      other_subscribers
               from realtime.authorize_subscription($1, $2, $3, $4)`,
        values: [identity.role, JSON.stringify(identity.claims), channel, instance],
      });
      const row = rows[0];
      if (!row) throw new Error('realtime.authorize_subscription returned no row');
      return {
        id: row.channel_id,
        stream: { epoch: row.epoch, maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) },
        limits: { maxSubscribers: row.max_subscribers, publishRate: row.publish_rate, maxMessageBytes: row.max_message_bytes },
        otherSubscribers: row.other_subscribers,
      };
    },
    async reportSubscribers(instance, counts) {
      await pool.query({
        name: 'realtimed_report_subscribers',
        text: 'select realtime.report_subscribers($1, $2::text[], $3::integer[])',
        values: [instance, [...counts.keys()], [...counts.values()]],
      });
    },
    async changeAudience(ids, identities) {
      const { rows } = await pool.query<{ id: string; identity: number }>({
        name: 'realtimed_change_audience',
        text: 'select id, identity from realtime.change_audience($1::uuid[], $2::jsonb)',
        values: [ids, JSON.stringify(identities.map((i) => ({ role: i.role, claims: i.claims })))],
      });
      const audience = new Map<string, Set<number>>();
      for (const row of rows) {
        let set = audience.get(row.id);
        if (!set) audience.set(row.id, (set = new Set()));
        set.add(row.identity - 1);
      }
      return audience;
    },
    async instanceHeartbeat(instance, timeoutMs) {
      const { rows } = await pool.query<{ registered: boolean; removed_instances: number }>(
        `select registered, removed_instances
         from realtime.instance_heartbeat($1, make_interval(secs => $2::double precision / 1000), $3, $4)`,
        [instance, timeoutMs, hostname(), process.pid],
      );
      return { registered: rows[0]?.registered ?? false, removed: rows[0]?.removed_instances ?? 0 };
    },
    async instanceStop(instance) {
      await pool.query('select realtime.instance_stop($1)', [instance]);
    },
    async presenceTrack(p, limits) {
      const { rows } = await pool.query<{ key: string }>({
        name: 'realtimed_presence_track',
        text: 'select realtime.presence_track($1, $2, $3, $4, $5, $6, $7, $8) as key',
        values: [p.instance, p.connection, p.identity.role, JSON.stringify(p.identity.claims), p.channel,
          JSON.stringify(p.state), limits.maxMembers, limits.maxStateBytes],
      });
      return rows[0]?.key ?? '';
    },
    async presenceUntrack(connection, channels) {
      await pool.query({
        name: 'realtimed_presence_untrack',
        text: 'select realtime.presence_untrack($1, $2::text[])',
        values: [connection, channels],
      });
    },
    async presenceMembers(channels) {
      const { rows } = await pool.query<{ channel_name: string; member_key: string; state: Record<string, unknown>; connections: number }>({
        name: 'realtimed_presence_members',
        text: 'select channel_name, member_key, state, connections from realtime.presence_members($1::text[])',
        values: [channels],
      });
      return rows.map((r) => ({ channel: r.channel_name, key: r.member_key, state: r.state, connections: r.connections }));
    },
    async sendEphemeral(identity, channel, event, notification) {
      await pool.query({
        name: 'realtimed_send_ephemeral',
        text: 'select realtime.send_ephemeral($1, $2, $3, $4, $5)',
        values: [identity.role, JSON.stringify(identity.claims), channel, event, notification],
      });
    },
    async asIdentity(identity, fn) {
      const client = await pool.connect();
      try {
        await client.query('begin');
        await client.query('select realtime.impersonate($1, $2)', [identity.role, JSON.stringify(identity.claims)]);
        const result = await fn(client);
        await client.query('commit');
        return result;
      } catch (err) {
        await client.query('rollback').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    async notifyKey() {
      const { rows } = await pool.query<{ key: string }>('select key from realtime.notify_key');
      const key = rows[0]?.key;
      if (!key) throw new Error('realtime.notify_key is empty');
      return key;
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
      const { rows } = await pool.query<{ id: string; seq: string; channel_name: string; frame: string; row_check: boolean }>({
        name: 'realtimed_relay_frames',
        text: 'select id, seq, channel_name, frame, row_check from realtime.relay_frames($1::uuid[], $2::pg_snapshot)',
        values: [ids, after],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel: r.channel_name, frame: r.frame, rowCheck: r.row_check }));
    },
    async replayFrames(channel, since, maxCount) {
      const { rows } = await pool.query<{ id: string; seq: string; frame: string; row_check: boolean }>({
        name: 'realtimed_replay_relay_frames',
        text: 'select id, seq, frame, row_check from realtime.replay_relay_frames($1, $2, $3)',
        values: [channel, since, maxCount],
      });
      return rows.map((r) => ({ id: r.id, seq: r.seq, channel, frame: r.frame, rowCheck: r.row_check }));
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
      const { rows } = await pool.query<{
        name: string; id: string | null; max_subscribers: number | null; publish_rate: number | null; max_message_bytes: number | null;
      }>({
        name: 'realtimed_match_channel_limits',
        text: `select n.name, c.id, c.max_subscribers, c.publish_rate, c.max_message_bytes
               from unnest($1::text[]) as n(name)
               left join realtime.channels c on c.id = realtime.match_channel(n.name)`,
        values: [names],
      });
      return new Map(
        rows.map((r) => [
          r.name,
          { id: r.id, limits: { maxSubscribers: r.max_subscribers, publishRate: r.publish_rate, maxMessageBytes: r.max_message_bytes } },
        ]),
      );
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
