/**
 * Row-change streams for the HTTP API's admin routes (POST and DELETE
 * /api/changes): realtime.enable_changes and realtime.disable_changes,
 * called as the caller's identity, so the functions' own checks decide (only
 * a member of the table's owner may stream it) and their errors come back
 * as raised.
 */
import type pg from 'pg';

import { asIdentity, type Identity } from './identity.js';

/** The arguments of realtime.enable_changes; undefined takes the function's default. */
export interface EnableChanges {
  table: string;
  channel?: string | undefined;
  columns?: string[] | undefined;
  operations?: string[] | undefined;
  changed_only?: boolean | undefined;
  public?: boolean | undefined;
  row_channels?: boolean | undefined;
}

/** A realtime.change_streams row, as the API answers it. */
export interface ChangeStreamRow {
  table: string;
  channel: string;
  row_channels: boolean;
  columns: string[] | null;
  primary_key: string[];
  operations: string[];
  changed_only: boolean;
  public: boolean;
  created_at: Date;
}

// Defaults as the function declares them; a NULL channel or columns is the function's own default.
const ENABLE = `
  select realtime.enable_changes($1::regclass, $2::text, $3::text[],
                                 coalesce($4::text[], array['insert', 'update', 'delete']),
                                 coalesce($5::boolean, false), coalesce($6::boolean, false), coalesce($7::boolean, true))`;

const STREAM = `
  select cs.table_id::regclass::text as table, cs.channel, cs.row_channels, cs.columns, cs.primary_key,
         cs.operations, cs.changed_only, cs.public, cs.created_at
  from realtime.change_streams cs
  where cs.table_id = $1::regclass`;

const DISABLE = 'select realtime.disable_changes($1::regclass) as disabled';

/**
 * CREATE OR REPLACE TRIGGER (SHARE ROW EXCLUSIVE) and DROP TRIGGER (ACCESS
 * EXCLUSIVE) on the application's table wait for every transaction using it,
 * and its writes would queue behind the wait: give up after this instead
 * (SQLSTATE 55P03, answered 409), so an API call never holds the business
 * writes up for long.
 */
const LOCK_TIMEOUT = `select pg_catalog.set_config('lock_timeout', '3s', true)`;

export function changeQueries(pool: pg.Pool) {
  return {
    /** Enables (or changes) a table's stream; its row as it now is. */
    enableChanges(identity: Identity, args: EnableChanges): Promise<ChangeStreamRow> {
      return asIdentity(pool, identity, async (client) => {
        await client.query(LOCK_TIMEOUT);
        await client.query(ENABLE, [
          args.table, args.channel ?? null, args.columns ?? null, args.operations ?? null,
          args.changed_only ?? null, args.public ?? null, args.row_channels ?? null,
        ]);
        const { rows } = await client.query<ChangeStreamRow>(STREAM, [args.table]);
        return rows[0] as ChangeStreamRow;
      });
    },

    /** Whether the table had a stream. */
    disableChanges(identity: Identity, table: string): Promise<boolean> {
      return asIdentity(pool, identity, async (client) => {
        await client.query(LOCK_TIMEOUT);
        return (await client.query<{ disabled: boolean }>(DISABLE, [table])).rows[0]?.disabled === true;
      });
    },
  };
}
