/** realtime.channel_stats for the inspector, the HTTP API and `realtimed stats`. */
import type pg from 'pg';

import type { ChannelStatsReply } from '../protocol/stats.js';
import { identityParams, type Identity } from './identity.js';

const VISIBLE_CHANNELS = 'select id from realtime.channels';

const CHANNEL_STATS = `
  select pattern, enabled, messages_last_hour as last_hour, messages_total as total,
         avg_ws_audience as avg, webhook_success_rate as rate, last_message_at as last
  from realtime.channel_stats where channel_id = any($1::uuid[]) order by pattern`;

const PER_MINUTE = `
  select g.minute, coalesce(c.n, 0) as messages
  from pg_catalog.generate_series(date_trunc('minute', now()) - interval '29 minutes',
                                  date_trunc('minute', now()), interval '1 minute') as g(minute)
  left join (select date_trunc('minute', m.created_at) as minute, count(*) as n
             from realtime.messages m
             where m.created_at >= date_trunc('minute', now()) - interval '29 minutes'
               and m.channel_id = any($1::uuid[])
             group by 1) c using (minute)
  order by g.minute`;

/** What `realtimed stats` prints, one text cell per column. */
const STATS_TABLE = `
  select pattern, case when enabled then 'yes' else 'no' end as enabled,
         messages_last_hour::text as last_hour, messages_last_day::text as last_day,
         messages_total::text as total, coalesce(avg_ws_audience::text, '-') as avg_sockets,
         coalesce(to_char(webhook_success_rate * 100, 'FM990.0') || '%', '-') as webhooks_ok,
         webhooks_pending::text as pending,
         coalesce(to_char(last_message_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '-') as last_message_utc
  from realtime.channel_stats order by pattern`;

export function statsQueries(pool: pg.Pool) {
  return {
    /** Statistics of the channel rows the identity can see (its SELECT policies, no channel name set). */
    async visibleChannelStats(identity: Identity): Promise<ChannelStatsReply> {
      const client = await pool.connect();
      let ids: string[];
      try {
        // The client's own policies say which channel rows it sees; the role ends with the rollback.
        await client.query('begin');
        await client.query('select realtime.impersonate($1, $2)', identityParams(identity));
        ids = (await client.query<{ id: string }>(VISIBLE_CHANNELS)).rows.map((r) => r.id);
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
        }>(CHANNEL_STATS, [ids]);
        const minutes = await client.query<{ minute: Date; messages: string }>(PER_MINUTE, [ids]);
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

/** `realtimed stats`: realtime.channel_stats as text cells. */
export async function channelStatsTable(client: pg.ClientBase): Promise<Record<string, string | null>[]> {
  return (await client.query<Record<string, string | null>>(STATS_TABLE)).rows;
}
