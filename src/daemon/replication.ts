/**
 * delivery 'wal': logical replication of inserts into realtime.messages
 * (publication realtime_messages, pgoutput), through pg-logical-replication.
 *
 * - Each connection makes its own TEMPORARY slot on the replication connection
 *   itself: it is gone when the connection is, so a daemon that goes away
 *   never makes the server keep WAL for it.
 * - Every (re)connection: the relay holds what streams in, the slot is made,
 *   then the relay relays what committed while nothing streamed (a snapshot
 *   taken after the slot: everything that commits later streams), then what
 *   it held, skipping rows whose transaction the snapshot already saw.
 * - The frame of a plain message is built here from the row the database
 *   wrote (the same text as realtime.event_frame); a row that might be a
 *   change event of a private stream is read back for its row check.
 * - The last LSN received is acknowledged every second (keepalives included,
 *   so the slot moves while the table is idle). The stream pauses while the
 *   relay has more than MAX_BACKLOG rows waiting.
 */
import { randomBytes } from 'node:crypto';

import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import type { Logger } from 'pino';

import { PUBLICATION } from '../db/replication.js';
import { errorText } from './boundary.js';
import type { Metrics } from './metrics.js';
import type { Relay, StreamedRow } from './relay.js';

const MAX_BACKLOG = 20_000;
/** How long the stream may wait for a relay that does not catch up before the connection is dropped (its WAL with it). */
const STALL_MS = 30_000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface ReplicationSource {
  start(): Promise<void>;
  stop(): Promise<void>;
  isUp(): boolean;
}

type Row = Record<string, string | null>;

/** A timestamptz as the walsender prints it with DateStyle ISO: to the frame's "timestamp" (UTC, milliseconds, truncated). */
export function isoTimestamp(text: string): string {
  const m = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-]\d\d)(?::?(\d\d))?(?::?(\d\d))?$/.exec(text);
  if (!m) {
    // 'infinity', a BC date: whatever the server printed, rather than a thrown error.
    const d = new Date(text);
    return Number.isNaN(d.getTime()) ? text : d.toISOString();
  }
  const [, y, mo, d, h, mi, s, frac = '', oh = '+00', om = '00', os = '00'] = m;
  const ms = (frac + '000').slice(0, 3);
  if (oh === '+00' && om === '00' && os === '00') return `${y}-${mo}-${d}T${h}:${mi}:${s}.${ms}Z`;
  const sign = oh.startsWith('-') ? -1 : 1;
  const offsetMs = sign * ((Math.abs(Number(oh)) * 60 + Number(om)) * 60 + Number(os)) * 1000;
  const local = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Number(ms));
  return new Date(local - offsetMs).toISOString();
}

/** The LSN one byte before `lsn` ('X/Y' in hex). */
export function lsnBefore(lsn: string): string {
  const [hi = '0', lo = '0'] = lsn.split('/');
  let value = (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  if (value > 0n) value -= 1n;
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** realtime.event_frame(m), from a replicated row's text values. */
export function frameOfRow(row: Row): string {
  return '{"type":"event","channel":' + JSON.stringify(row['channel_name']) +
    ',"event":' + JSON.stringify(row['event_name']) +
    ',"payload":' + (row['payload'] ?? '{}') +
    ',"meta":{"messageId":"' + row['id'] +
    '","seq":' + row['seq'] +
    ',"senderType":"' + row['sender_type'] +
    '","senderId":' + (row['sender_id'] === null || row['sender_id'] === undefined ? 'null' : '"' + row['sender_id'] + '"') +
    ',"timestamp":"' + isoTimestamp(row['created_at'] ?? '') + '"}}';
}

const FRAME_COLUMNS = ['id', 'seq', 'channel_name', 'event_name', 'payload', 'sender_type', 'created_at', 'xact_id'];

/** Whether realtime.needs_row_check might say yes (a system insert or update event naming a table), or the row lacks a column the frame needs (a publication with a column list): then it is read back. */
function mayNeedRowCheck(row: Row): boolean {
  if (FRAME_COLUMNS.some((c) => row[c] === undefined) || !('sender_id' in row)) return true;
  if (row['sender_type'] !== 'system') return false;
  if (row['event_name'] !== 'insert' && row['event_name'] !== 'update') return false;
  const payload = row['payload'] ?? '';
  return payload.includes('"table"') && payload.includes('"schema"');
}

/** pgoutput, on a slot this connection makes first: a temporary one. */
class TemporarySlotPlugin extends PgoutputPlugin {
  constructor(
    private readonly onSlow: () => void,
    private readonly onSlot: (consistentPoint: string) => void,
  ) {
    super({ protoVersion: 1, publicationNames: [PUBLICATION] });
  }
  override async start(client: pg.Client, slotName: string, _lastLsn: string): Promise<unknown> {
    // The slot waits for every transaction in progress to end (a long one holds it up).
    const slow = setTimeout(this.onSlow, 10_000);
    const { rows } = await client
      .query<{ consistent_point: string }>(`CREATE_REPLICATION_SLOT "${slotName}" TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`)
      .finally(() => clearTimeout(slow));
    this.onSlot(rows[0]?.consistent_point ?? '0/0');
    return super.start(client, slotName, rows[0]?.consistent_point ?? '0/0');
  }
  override parse(buffer: Buffer): Pgoutput.Message {
    const message = super.parse(buffer);
    // Every value as the text the server sent: the frame is built from the
    // payload's own text, and nothing is parsed that is not needed.
    if (message.tag === 'relation') for (const c of message.columns) c.parser = (raw: unknown) => raw;
    return message;
  }
}

export function createReplicationSource(
  deps: { url: string; relay: Relay; logger: Logger; metrics: Metrics; instance: string; onWebhooksDue: () => void },
): ReplicationSource {
  const { relay, logger, metrics } = deps;
  let service: LogicalReplicationService | null = null;
  let stopped = false;
  let up = false;
  let attempt = 0;
  let timer: NodeJS.Timeout | undefined;
  let connections = 0;
  let markFirst = (): void => {};
  const first = new Promise<void>((resolve) => (markFirst = resolve));

  const slotName = (): string => `realtimed_${deps.instance.replace(/-/g, '').slice(0, 16)}_${(++connections).toString(36)}_${randomBytes(2).toString('hex')}`;

  const onData = async (_lsn: string, message: Pgoutput.Message): Promise<void> => {
    if (message.tag !== 'insert') return;
    const { relation } = message;
    if (relation.schema !== 'realtime' || relation.name !== 'messages') return;
    const row = message.new as Row;
    const id = row['id'];
    const seq = row['seq'];
    const channel = row['channel_name'];
    const xact = row['xact_id'];
    if (!id || !seq || !channel || !xact) return;
    const streamed: StreamedRow = {
      id,
      seq,
      channel,
      frame: frameOfRow(row),
      xactId: BigInt(xact),
      mayNeedRowCheck: mayNeedRowCheck(row),
      receivedAt: process.hrtime.bigint(),
    };
    relay.stream([streamed]);
    metrics.replicatedRows.inc();
    if (Number(row['wh_audience_count'] ?? 0) > 0) deps.onWebhooksDue();
    // Backpressure: the stream waits while the relay is behind, but not for
    // ever: a stalled relay would keep the connection, and the WAL, alive.
    if (relay.backlog() > MAX_BACKLOG) {
      const since = Date.now();
      while (relay.backlog() > MAX_BACKLOG / 2) {
        if (Date.now() - since > STALL_MS) {
          lost(new Error(`the relay did not catch up in ${STALL_MS / 1000} s; reconnecting (the recovery passes relay the rest from the table)`));
          return;
        }
        await sleep(50);
      }
    }
  };

  const retry = (): void => {
    if (stopped) return;
    attempt++;
    clearTimeout(timer);
    timer = setTimeout(() => void connect(), Math.min(250 * 2 ** attempt, 5000));
  };

  const lost = (err: unknown): void => {
    if (stopped) return;
    if (up) {
      up = false;
      metrics.replicationReconnects.inc();
      logger.warn({ err: errorText(err) }, 'replication connection lost; reconnecting');
    } else {
      logger.warn({ err: errorText(err), attempt }, 'replication connection failed; retrying');
    }
    const old = service;
    service = null;
    void old?.destroy().catch(() => {});
    retry();
  };

  const connect = async (): Promise<void> => {
    if (stopped) return;
    // What streams in waits behind the gap until the relay has caught up.
    relay.pause();
    const s = new LogicalReplicationService(
      {
        connectionString: deps.url,
        application_name: 'realtimed-wal',
        // Timestamps as the frame writes them.
        options: '-c TimeZone=UTC -c DateStyle=ISO',
      } as pg.ClientConfig,
      { acknowledge: { auto: false, timeoutSeconds: 1 }, flowControl: { enabled: true } },
    );
    service = s;
    s.on('data', onData);
    s.on('heartbeat', (lsn: string, _timestamp: number, shouldRespond: boolean) => {
      // The server asks at shutdown, and waits until we report exactly its
      // position; acknowledge() reports the position it is given plus one.
      if (shouldRespond) void s.acknowledge(lsnBefore(lsn)).catch(() => {});
    });
    s.on('error', (err: unknown) => {
      if (service === s) lost(err);
    });
    const slot = slotName();
    const plugin = new TemporarySlotPlugin(() => {
      if (service === s && !stopped) {
        logger.warn({ slot }, 'the replication slot waits for transactions in progress to end (a long transaction?); relaying from the table meanwhile');
      }
    }, (point) => {
      if (service !== s || stopped) return;
      up = true;
      attempt = 0;
      logger.info({ slot, consistentPoint: point }, 'replication connection up');
      // The snapshot is taken after the slot exists: what it does not see streams.
      relay.resync();
      deps.onWebhooksDue();
      markFirst();
    });
    s.subscribe(plugin, slot).then(
      () => {
        if (service === s) lost(new Error('replication ended'));
      },
      (err: unknown) => {
        if (service === s) lost(err);
      },
    );
  };

  return {
    async start() {
      stopped = false;
      void connect();
      // Waits a moment for the first connection, but never fails: recovery passes cover the gap.
      await Promise.race([first, new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
    },
    async stop() {
      stopped = true;
      up = false;
      clearTimeout(timer);
      const s = service;
      service = null;
      await s?.destroy().catch(() => {});
    },
    isUp: () => up,
  };
}
