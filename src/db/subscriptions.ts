/** Who may subscribe: realtime.authorize_subscription, authorize_subscribe, match_channel, report_subscribers. */
import type pg from 'pg';

import { identityParams, type Identity } from './identity.js';
import { ItemError, type StreamInfo } from './messages.js';

/** A channel's limits (realtime.channels), null where none is set. */
export interface ChannelLimits {
  maxSubscribers: number | null;
  publishRate: number | null;
  maxMessageBytes: number | null;
}

export interface Authorization {
  /** The matched channel id when allowed, else null. */
  id: string | null;
  stream: StreamInfo;
  limits: ChannelLimits;
  /** Sockets other instances last reported on this channel (0 without max_subscribers). */
  otherSubscribers: number;
  /** pg_current_snapshot() of the check's statement: live events are those committed after it. */
  snapshot: string;
}

export function subscriptionQueries(pool: pg.Pool) {
  return {
    /** realtime.authorize_subscribe: the matched channel id when the identity may subscribe, else null. */
    async authorizeSubscribe(identity: Identity, channel: string): Promise<string | null> {
      const { rows } = await pool.query<{ id: string | null }>({
        name: 'realtimed_authorize_subscribe',
        text: 'select realtime.authorize_subscribe($1, $2, $3) as id',
        values: [...identityParams(identity), channel],
      });
      return rows[0]?.id ?? null;
    },

    /** realtime.authorize_subscription: the check, the stream position (read first) and the limits, one round trip. */
    async authorizeSubscription(identity: Identity, channel: string, instance: string): Promise<Authorization> {
      const { rows } = await pool.query<{
        channel_id: string | null; epoch: string; max_seq: string; pruned_through_seq: string;
        max_subscribers: number | null; publish_rate: number | null; max_message_bytes: number | null;
        other_subscribers: number; snapshot: string;
      }>({
        name: 'realtimed_authorize_subscription',
        text: `select channel_id, epoch, max_seq, pruned_through_seq, max_subscribers, publish_rate, max_message_bytes,
                      other_subscribers, pg_catalog.pg_current_snapshot()::text as snapshot
               from realtime.authorize_subscription($1, $2, $3, $4)`,
        values: [...identityParams(identity), channel, instance],
      });
      const row = rows[0];
      if (!row) throw new Error('realtime.authorize_subscription returned no row');
      return {
        id: row.channel_id,
        stream: { epoch: row.epoch, maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) },
        limits: { maxSubscribers: row.max_subscribers, publishRate: row.publish_rate, maxMessageBytes: row.max_message_bytes },
        otherSubscribers: row.other_subscribers,
        snapshot: row.snapshot,
      };
    },

    /**
     * realtime.authorize_subscriptions: many subscribe checks in one round
     * trip, each answered as authorize_subscription alone (each item rolled
     * back after its answer), or with the error its check failed with.
     */
    async authorizeSubscriptions(items: { identity: Identity; channel: string }[], instance: string): Promise<(Authorization | ItemError)[]> {
      const { rows } = await pool.query<{
        ord: number; channel_id: string | null; epoch: string | null; max_seq: string | null; pruned_through_seq: string | null;
        max_subscribers: number | null; publish_rate: number | null; max_message_bytes: number | null;
        other_subscribers: number | null; error_code: string | null; error_message: string | null; snapshot: string;
      }>({
        name: 'realtimed_authorize_subscriptions',
        text: `select ord, channel_id, epoch, max_seq, pruned_through_seq, max_subscribers, publish_rate, max_message_bytes,
                      other_subscribers, error_code, error_message, pg_catalog.pg_current_snapshot()::text as snapshot
               from realtime.authorize_subscriptions($1::text[], $2::jsonb[], $3::text[], $4)`,
        values: [items.map((i) => i.identity.role), items.map((i) => JSON.stringify(i.identity.claims)), items.map((i) => i.channel), instance],
      });
      const results: (Authorization | ItemError)[] = new Array(items.length);
      for (const row of rows) {
        results[row.ord - 1] = row.error_code !== null
          ? new ItemError(row.error_code, row.error_message ?? '')
          : {
              id: row.channel_id,
              stream: { epoch: row.epoch ?? '', maxSeq: Number(row.max_seq), prunedThroughSeq: Number(row.pruned_through_seq) },
              limits: { maxSubscribers: row.max_subscribers, publishRate: row.publish_rate, maxMessageBytes: row.max_message_bytes },
              otherSubscribers: row.other_subscribers ?? 0,
              snapshot: row.snapshot,
            };
      }
      if (rows.length !== items.length || results.some((r) => r === undefined)) throw new Error('realtime.authorize_subscriptions returned a row per item');
      return results;
    },

    /** realtime.report_subscribers: replaces this instance's counts of channels with a max_subscribers. */
    async reportSubscribers(instance: string, counts: Map<string, number>): Promise<void> {
      await pool.query({
        name: 'realtimed_report_subscribers',
        text: 'select realtime.report_subscribers($1, $2::text[], $3::integer[])',
        values: [instance, [...counts.keys()], [...counts.values()]],
      });
    },

    /** realtime.match_channel over many names: the channel id each matches now (null: none or disabled), with its limits. */
    async matchChannels(names: string[]): Promise<Map<string, { id: string | null; limits: ChannelLimits }>> {
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
  };
}
