/**
 * What the database holds about every instance serving it, for the admin
 * routes GET /api/connections and /api/subscriptions: realtime.instances
 * (heartbeats), with each one's reported subscriber counts
 * (realtime.channel_subscribers: channels with a max_subscribers only) and
 * its sockets that set presence (realtime.presence). Read as the caller, so
 * the grants and policies on those tables decide. Per-socket detail of other
 * instances is not in the database (docs/http.md).
 */
import type pg from 'pg';

import { asIdentity, type Identity } from './identity.js';

export interface InstanceRow {
  id: string;
  host: string | null;
  pid: number | null;
  started_at: Date;
  heartbeat_at: Date;
  /** Sum of its realtime.channel_subscribers reports. */
  counted_subscribers: number;
  /** Its sockets with a presence row. */
  presence_connections: number;
}

const LIST = `
  select i.id, i.host, i.pid, i.started_at, i.heartbeat_at,
         coalesce((select sum(s.subscribers)::int from realtime.channel_subscribers s where s.instance_id = i.id), 0)
           as counted_subscribers,
         (select count(distinct p.connection_id)::int from realtime.presence p where p.instance_id = i.id)
           as presence_connections
  from realtime.instances i
  order by i.started_at, i.id`;

export function instanceQueries(pool: pg.Pool) {
  return {
    listInstances(identity: Identity): Promise<InstanceRow[]> {
      return asIdentity(pool, identity, async (client) => (await client.query<InstanceRow>(LIST)).rows);
    },
  };
}
