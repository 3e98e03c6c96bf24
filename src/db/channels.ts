/**
 * realtime.channels rows for the HTTP API's admin routes, read and written as
 * the caller's identity, so the table's grants, policies and CHECK
 * constraints decide. Fixed statements: a body's fields arrive as one jsonb
 * value, typed by jsonb_populate_record against the table's own row type.
 */
import type pg from 'pg';

import { asIdentity, type Identity } from './identity.js';

/** The columns of realtime.channels the API reads, as JSON fields. */
export const CHANNEL_COLUMNS = [
  'id', 'pattern', 'description', 'webhook_urls', 'enabled', 'max_subscribers', 'max_message_bytes',
  'publish_rate', 'metadata', 'created_at', 'updated_at',
] as const;
/** Those an API caller may write. */
export const WRITABLE_CHANNEL_COLUMNS: ReadonlySet<string> = new Set([
  'pattern', 'description', 'webhook_urls', 'enabled', 'max_subscribers', 'max_message_bytes', 'publish_rate', 'metadata',
]);

export type ChannelRow = Record<(typeof CHANNEL_COLUMNS)[number], unknown>;

const RETURNING = CHANNEL_COLUMNS.join(', ');

const LIST = `select ${RETURNING} from realtime.channels order by pattern`;

// A field left out takes the column's default; NULL webhook_urls or metadata means none.
const INSERT = `
  insert into realtime.channels (pattern, description, webhook_urls, enabled, max_subscribers, max_message_bytes,
                                 publish_rate, metadata)
  select r.pattern, r.description, coalesce(r.webhook_urls, '{}'), coalesce(r.enabled, true), r.max_subscribers,
         r.max_message_bytes, r.publish_rate, coalesce(r.metadata, '{}')
  from jsonb_populate_record(null::realtime.channels, $1::jsonb) r
  returning ${RETURNING}`;

// Only the fields present in the body change.
const UPDATE = `
  update realtime.channels c set
    pattern = case when $2::jsonb ? 'pattern' then r.pattern else c.pattern end,
    description = case when $2::jsonb ? 'description' then r.description else c.description end,
    webhook_urls = case when $2::jsonb ? 'webhook_urls' then coalesce(r.webhook_urls, '{}') else c.webhook_urls end,
    enabled = case when $2::jsonb ? 'enabled' then r.enabled else c.enabled end,
    max_subscribers = case when $2::jsonb ? 'max_subscribers' then r.max_subscribers else c.max_subscribers end,
    max_message_bytes = case when $2::jsonb ? 'max_message_bytes' then r.max_message_bytes else c.max_message_bytes end,
    publish_rate = case when $2::jsonb ? 'publish_rate' then r.publish_rate else c.publish_rate end,
    metadata = case when $2::jsonb ? 'metadata' then coalesce(r.metadata, '{}') else c.metadata end
  from jsonb_populate_record(null::realtime.channels, $2::jsonb) r
  where c.id = $1
  returning ${CHANNEL_COLUMNS.map((c) => `c.${c}`).join(', ')}`;

const DELETE = 'delete from realtime.channels where id = $1';

export function channelQueries(pool: pg.Pool) {
  return {
    listChannels(identity: Identity): Promise<ChannelRow[]> {
      return asIdentity(pool, identity, async (client) => (await client.query<ChannelRow>(LIST)).rows);
    },

    insertChannel(identity: Identity, fields: Record<string, unknown>): Promise<ChannelRow> {
      return asIdentity(pool, identity, async (client) => {
        const { rows } = await client.query<ChannelRow>(INSERT, [JSON.stringify(fields)]);
        return rows[0] as ChannelRow;
      });
    },

    /** null when no row has that id (or the caller cannot see it). */
    updateChannel(identity: Identity, id: string, fields: Record<string, unknown>): Promise<ChannelRow | null> {
      return asIdentity(pool, identity, async (client) => {
        const { rows } = await client.query<ChannelRow>(UPDATE, [id, JSON.stringify(fields)]);
        return rows[0] ?? null;
      });
    },

    /** Whether a row was deleted. */
    deleteChannel(identity: Identity, id: string): Promise<boolean> {
      return asIdentity(pool, identity, async (client) => ((await client.query(DELETE, [id])).rowCount ?? 0) > 0);
    },
  };
}
