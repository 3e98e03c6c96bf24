/**
 * What delivery 'wal' needs of the server and of the daemon's role (for the
 * daemon at start and for `realtimed doctor`), and the slots it leaves.
 */
import pg from 'pg';

/** The publication migration 000014 creates (or a DBA, when the installing role could not). */
export const PUBLICATION = 'realtime_messages';

/** What keeps delivery 'wal' from working for the role of `url`, as one line naming the fix; null when nothing does. */
export async function walProblem(url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, application_name: 'realtimed-check' });
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ wal_level: string; published: boolean; publication: boolean; replication: boolean; role: string }>(
      `select pg_catalog.current_setting('wal_level') as wal_level,
              exists (select from pg_catalog.pg_publication where pubname = $1 and pubinsert and pubviaroot) as publication,
              exists (select from pg_catalog.pg_publication_tables
                      where pubname = $1 and schemaname = 'realtime' and tablename = 'messages') as published,
              coalesce((select r.rolreplication or r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user), false)
                or coalesce(pg_catalog.pg_has_role(current_user, (select oid from pg_catalog.pg_roles where rolname = 'rds_replication'), 'MEMBER'), false)
                as replication,
              current_user as role`,
      [PUBLICATION],
    );
    const r = rows[0];
    if (!r) return 'could not read the server settings';
    if (r.wal_level !== 'logical') {
      return `realtime.config.delivery is 'wal' but wal_level is ${r.wal_level}: set wal_level = logical and restart PostgreSQL ` +
        `(RDS: rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on; Azure: azure.replication_support = logical), ` +
        `or choose another mode: update realtime.config set delivery = 'poll'`;
    }
    if (!r.publication || !r.published) {
      return `realtime.config.delivery is 'wal' but publication ${PUBLICATION} is missing, or does not publish the inserts of realtime.messages under its own name: ` +
        `a DBA runs: drop publication if exists ${PUBLICATION}; create publication ${PUBLICATION} for table realtime.messages with (publish = 'insert', publish_via_partition_root = true)`;
    }
    if (!r.replication) {
      return `realtime.config.delivery is 'wal' but role ${r.role} may not replicate: a DBA runs: alter role ${pg.escapeIdentifier(r.role)} replication` +
        ` (RDS: grant rds_replication to ${pg.escapeIdentifier(r.role)})`;
    }
    return null;
  } finally {
    await client.end().catch(() => {});
  }
}

/** realtimed's replication slots (named realtimed_...): whether each is active, and the WAL it keeps. */
export async function realtimedSlots(
  client: pg.ClientBase,
): Promise<{ name: string; active: boolean; temporary: boolean; retainedBytes: number; walStatus: string | null }[]> {
  // WAL is kept from restart_lsn (a long transaction anywhere holds it back), not from what was confirmed.
  const { rows } = await client.query<{ name: string; active: boolean; temporary: boolean; retained: string | null; wal_status: string | null }>(
    `select slot_name as name, active, temporary, wal_status,
            pg_catalog.pg_wal_lsn_diff(
              case when pg_catalog.pg_is_in_recovery() then pg_catalog.pg_last_wal_receive_lsn() else pg_catalog.pg_current_wal_lsn() end,
              restart_lsn)::text as retained
     from pg_catalog.pg_replication_slots where slot_name like 'realtimed\\_%' order by slot_name`,
  );
  return rows.map((r) => ({ name: r.name, active: r.active, temporary: r.temporary, retainedBytes: Number(r.retained ?? 0), walStatus: r.wal_status }));
}

/** How full the NOTIFY queue is, 0 to 1 (pg_notification_queue_usage). */
export async function notifyQueueUsage(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ u: number }>('select pg_catalog.pg_notification_queue_usage() as u');
  return rows[0]?.u ?? 0;
}

/** realtime.config.delivery, read as the login (null when it may not: not a member of service_role, or before version 14). */
export async function deliveryMode(client: pg.ClientBase): Promise<string | null> {
  try {
    const { rows } = await client.query<{ mode: string }>('select realtime.delivery_mode() as mode');
    return rows[0]?.mode ?? null;
  } catch {
    return null;
  }
}
