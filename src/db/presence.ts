/**
 * Instances and presence: realtime.instance_heartbeat, instance_stop,
 * presence_track, presence_untrack, presence_members; and two reads of
 * realtime.presence itself that tell whether the database still holds this
 * instance's rows (it is unlogged: a crash or a failover empties it).
 */
import type pg from 'pg';

import { identityParams, type Identity } from './identity.js';

export interface PresenceMember {
  channel: string;
  key: string;
  state: Record<string, unknown>;
  connections: number;
}

export function presenceQueries(pool: pg.Pool) {
  return {
    /** Registers or refreshes this instance (registered: its row was new) and removes silent ones. */
    async instanceHeartbeat(
      instance: string,
      timeoutMs: number,
      host: string,
      pid: number,
    ): Promise<{ registered: boolean; removed: number }> {
      const { rows } = await pool.query<{ registered: boolean; removed_instances: number }>({
        name: 'realtimed_instance_heartbeat',
        text: `select registered, removed_instances
               from realtime.instance_heartbeat($1, make_interval(secs => $2::double precision / 1000), $3, $4)`,
        values: [instance, timeoutMs, host, pid],
      });
      return { registered: rows[0]?.registered ?? false, removed: rows[0]?.removed_instances ?? 0 };
    },

    async instanceStop(instance: string): Promise<void> {
      await pool.query({ name: 'realtimed_instance_stop', text: 'select realtime.instance_stop($1)', values: [instance] });
    },

    /** Sets a socket's state on a channel, authorized like a publish; returns the member key. */
    async presenceTrack(
      p: { instance: string; connection: string; identity: Identity; channel: string; state: Record<string, unknown> },
      limits: { maxMembers: number; maxStateBytes: number },
    ): Promise<string> {
      const { rows } = await pool.query<{ key: string }>({
        name: 'realtimed_presence_track',
        text: 'select realtime.presence_track($1, $2, $3, $4, $5, $6, $7, $8) as key',
        values: [p.instance, p.connection, ...identityParams(p.identity), p.channel,
          JSON.stringify(p.state), limits.maxMembers, limits.maxStateBytes],
      });
      return rows[0]?.key ?? '';
    },

    /** A socket leaves presence on these channels (all when null). */
    async presenceUntrack(connection: string, channels: string[] | null): Promise<void> {
      await pool.query({
        name: 'realtimed_presence_untrack',
        text: 'select realtime.presence_untrack($1, $2::text[])',
        values: [connection, channels],
      });
    },

    /** How many presence rows this instance has in the database. */
    async instancePresenceCount(instance: string): Promise<number> {
      const { rows } = await pool.query<{ n: number }>({
        name: 'realtimed_instance_presence_count',
        text: 'select count(*)::integer as n from realtime.presence where instance_id = $1',
        values: [instance],
      });
      return rows[0]?.n ?? 0;
    },

    /** This instance's presence rows, as "channel connection" pairs. */
    async instancePresenceRows(instance: string): Promise<Set<string>> {
      const { rows } = await pool.query<{ channel_name: string; connection_id: string }>({
        name: 'realtimed_instance_presence_rows',
        text: 'select channel_name, connection_id from realtime.presence where instance_id = $1',
        values: [instance],
      });
      return new Set(rows.map((r) => `${r.channel_name} ${r.connection_id}`));
    },

    /** pg_is_in_recovery(): a hot standby, where unlogged tables cannot be read and nothing written. */
    async inRecovery(): Promise<boolean> {
      const { rows } = await pool.query<{ r: boolean }>({ name: 'realtimed_in_recovery', text: 'select pg_is_in_recovery() as r' });
      return rows[0]?.r === true;
    },

    async presenceMembers(channels: string[]): Promise<PresenceMember[]> {
      const { rows } = await pool.query<{ channel_name: string; member_key: string; state: Record<string, unknown>; connections: number }>({
        name: 'realtimed_presence_members',
        text: 'select channel_name, member_key, state, connections from realtime.presence_members($1::text[])',
        values: [channels],
      });
      return rows.map((r) => ({ channel: r.channel_name, key: r.member_key, state: r.state, connections: r.connections }));
    },
  };
}
