/**
 * From committed message to sockets, losing nothing and sending nothing twice.
 *
 * - A notification is a hint: the message is read from realtime.messages (as
 *   its prebuilt frame) and relayed only if the row agrees with the hint.
 * - Jobs run one at a time, so frames go out in the order notifications arrive
 *   (commit order).
 * - A watermark snapshot W marks what has been handled: every message whose
 *   transaction is visible in W was relayed (or had no subscriber here).
 *   Every `recoveryIntervalMs` the relay takes a snapshot and asks which
 *   messages committed between W and the previous snapshot were never notified
 *   (a lost LISTEN connection, a failed read): those are relayed late, in seq
 *   order, and W moves on. Snapshots, not seqs: a lower seq can commit after a
 *   higher one. After LISTEN reconnects, the same happens at once.
 * - Messages behind W are never relayed again (realtime.relay_frames skips
 *   them), and ids relayed since are remembered, so a repeated or forged
 *   notification changes nothing.
 * - The source of what committed follows realtime.config.delivery
 *   (delivery.ts): notifications ('notify'), rows from logical replication
 *   ('wal': `stream`, frames built here from what the database wrote, no read
 *   back unless a change event needs its row check; a row whose transaction
 *   is visible in W was already handled), or a poll every `pollIntervalMs`
 *   ('poll': what committed between W and now, then W moves to now). The
 *   recovery pass runs in every mode but poll, which is one.
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import type { Identity } from '../db/identity.js';
import type { RelayFrame } from '../db/messages.js';
import { errorText } from './boundary.js';
import type { Envelope } from './envelope.js';
import { parseSnapshot, visibleIn, type Snapshot } from './snapshot.js';
import { deliver, type Hub, type Subscriber } from './hub.js';
import type { Metrics } from './metrics.js';
import type { Stats } from './statistics.js';

const BATCH = 500;
/** Rows held while a source reconnects; past this they are dropped, and the resync finds them in the table. */
const MAX_HELD = 20_000;

/** A message as logical replication delivered it, with its frame built (delivery 'wal'). */
export interface StreamedRow {
  id: string;
  seq: string;
  channel: string;
  /** The event frame's JSON text (the same text realtime.event_frame builds). */
  frame: string;
  /** The writing transaction (xid8), to compare with the watermark. */
  xactId: bigint;
  /** Might be a change event of a private stream: read back for its row check. */
  mayNeedRowCheck: boolean;
  receivedAt: bigint;
}

export type DeliveryMode = 'notify' | 'wal' | 'poll';

export interface Relay {
  /** Takes the first watermark; call once LISTEN is up, before relaying. */
  start(): Promise<void>;
  enqueue(envelope: Envelope): void;
  /** Rows from logical replication, in commit order. */
  stream(rows: StreamedRow[]): void;
  /** Jobs waiting (a replication source slows down above a bound). */
  backlog(): number;
  /** Which source feeds it: 'poll' polls, the others sweep for what was never notified or streamed. */
  setMode(mode: DeliveryMode): void;
  /** LISTEN was lost: hold notifications until the gap is relayed (resync). */
  pause(): void;
  /** LISTEN came back: relay what committed while it was away, then what was held. */
  resync(): void;
  /** Resolves when every job queued so far is done (for shutdown and tests). */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

type Job =
  | { kind: 'notified'; envelopes: Envelope[] }
  | { kind: 'streamed'; rows: StreamedRow[] }
  | { kind: 'sweep' }
  | { kind: 'resync' }
  | { kind: 'poll' };

export function createRelay(
  deps: {
    db: Pick<Db, 'relayFrames' | 'committedBetween' | 'committedSince' | 'snapshot' | 'changeAudience'>;
    hub: Hub;
    metrics: Metrics;
    logger: Logger;
    stats: Pick<Stats, 'add'>;
    /** A poll found committed messages: some may have webhook deliveries. */
    onCommitted?: () => void;
  },
  options: { recoveryIntervalMs: number; pollIntervalMs?: number },
): Relay {
  const { db, hub, metrics, logger, stats } = deps;
  const pollIntervalMs = options.pollIntervalMs ?? 20;
  let mode: DeliveryMode = 'notify';
  const jobs: Job[] = [];
  /**
   * Ids handled, with when. An id stays until the watermark moves past it: a
   * message read before a snapshot was taken committed before it, so the
   * recovery passes (which look only beyond the watermark) can no longer return
   * it. Never by age alone: after a long outage the watermark is old, and
   * forgetting by age would relay the messages around it twice.
   */
  const seen = new Map<string, { at: number; xact: bigint | undefined }>();
  const markSeen = (id: string, xact?: bigint): void => {
    seen.set(id, { at: Date.now(), xact });
  };
  let watermark: string | null = null;
  /** The watermark, parsed (for rows from logical replication). */
  let watermarkSnapshot: Snapshot | null = null;
  const setWatermark = (snapshot: string): void => {
    watermark = snapshot;
    watermarkSnapshot = parseSnapshot(snapshot);
  };
  let previous: string | null = null;
  /** Date.now() just before `previous` was taken. */
  let previousAt = 0;
  let running: Promise<void> | null = null;
  /** While LISTEN (or replication) is being re-established: what arrives waits here, behind the gap. */
  let held: Job[] | null = null;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let releasedAt = 0;
  /** At most once a second: subscriptions let go of start snapshots the watermark has passed. */
  const releaseStarts = (): void => {
    const floor = watermarkSnapshot?.xmin;
    if (floor === undefined || Date.now() - releasedAt < 1000) return;
    releasedAt = Date.now();
    for (const s of hub.all()) s.releaseStart?.(floor);
  };

  const send = async (frames: RelayFrame[], receivedAt: bigint | null): Promise<void> => {
    const audience = await rowAudience(frames);
    for (const row of frames) {
      markSeen(row.id, row.xactId);
      const subscribers = hub.subscribers(row.channel);
      if (!subscribers || subscribers.size === 0) continue;
      const event = { frame: Buffer.from(row.frame), id: row.id, xact: row.xactId, floor: watermarkSnapshot?.xmin };
      let visible: ((s: Subscriber) => boolean) | undefined;
      if (row.rowCheck) {
        const allowed = audience?.allowed.get(row.id);
        visible = (s) => {
          const index = s.identity ? audience?.index.get(s.identity) : undefined;
          return index !== undefined && allowed !== undefined && allowed.has(index);
        };
      }
      const written = deliver(subscribers, event, visible);
      stats.add(row, written);
      metrics.messagesRelayed.inc();
      metrics.framesSent.inc(written);
      if (receivedAt !== null) metrics.fanoutSeconds.observe(Number(process.hrtime.bigint() - receivedAt) / 1e9);
    }
  };

  /**
   * The row check of change events, one round trip for the batch: which
   * subscriber identities may SELECT each event's row now, under the source
   * table's row-level security. Identities are compared by role and claims,
   * so the tabs of one user are asked about once. Fails closed: on an error,
   * nobody gets the checked events (counted, logged).
   */
  const rowAudience = async (
    frames: RelayFrame[],
  ): Promise<{ index: Map<Identity, number>; allowed: Map<string, Set<number>> } | null> => {
    const checked = frames.filter((f) => f.rowCheck && hub.has(f.channel));
    if (checked.length === 0) return null;
    const byKey = new Map<string, number>();
    const identities: Identity[] = [];
    const index = new Map<Identity, number>();
    for (const f of checked) {
      for (const s of hub.subscribers(f.channel) ?? []) {
        const identity = s.identity;
        if (!identity || index.has(identity)) continue;
        const key = identity.role + '\u0000' + JSON.stringify(identity.claims);
        let i = byKey.get(key);
        if (i === undefined) {
          i = identities.length;
          identities.push(identity);
          byKey.set(key, i);
        }
        index.set(identity, i);
      }
    }
    const started = process.hrtime.bigint();
    try {
      const allowed = await db.changeAudience(checked, identities);
      metrics.rowCheckSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      metrics.rowChecks.inc(checked.length * identities.length);
      return { index, allowed };
    } catch (err) {
      metrics.rowCheckFailures.inc(checked.length);
      logger.error({ err: errorText(err), messages: checked.length }, 'row check failed: change events withheld');
      return { index, allowed: new Map() };
    }
  };

  /**
   * Ids of notified messages being read or sent now: a repeated notification
   * in the batch read ahead (below) is not read a second time.
   */
  const inFlight = new Set<string>();

  /**
   * The read of a notified batch; resolves to the step that sends it. The run
   * loop starts the read of the next notified batch before sending this one
   * (pipelining: the round trip overlaps the writes to sockets), and sends
   * batches in the order they were notified.
   */
  const readNotified = async (batch: Envelope[]): Promise<() => Promise<void>> => {
    const wanted = new Map<string, Envelope>();
    for (const envelope of batch) {
      if (seen.has(envelope.id) || wanted.has(envelope.id) || inFlight.has(envelope.id)) {
        metrics.notificationsDropped.inc({ reason: 'repeated' });
      } else if (!hub.has(envelope.channel)) {
        // Nobody here listens to that channel: nothing to read.
        markSeen(envelope.id);
      } else {
        wanted.set(envelope.id, envelope);
      }
    }
    if (wanted.size === 0) return async () => {};
    for (const id of wanted.keys()) inFlight.add(id);
    const release = (): void => {
      for (const id of wanted.keys()) inFlight.delete(id);
    };
    // A message is found by its channel and seq; its id must then agree.
    const byKey = new Map<string, Envelope>();
    for (const envelope of wanted.values()) byKey.set(`${envelope.channel}\u0000${envelope.seq}`, envelope);
    let frames: RelayFrame[];
    try {
      frames = await db.relayFrames([...byKey.values()].map((e) => ({ channel: e.channel, seq: String(e.seq) })), watermark);
    } catch (err) {
      // Not marked seen: the next recovery pass relays them.
      release();
      logger.error({ err: errorText(err), messages: wanted.size }, 'could not read messages to relay');
      return async () => {};
    }
    const checked: RelayFrame[] = [];
    for (const row of frames) {
      const key = `${row.channel}\u0000${row.seq}`;
      const envelope = byKey.get(key);
      byKey.delete(key);
      if (!envelope || envelope.id !== row.id) {
        metrics.notificationsDropped.inc({ reason: 'mismatched' });
        continue;
      }
      checked.push(row);
    }
    if (byKey.size > 0) metrics.notificationsDropped.inc({ reason: 'unknown' }, byKey.size);
    return async () => {
      try {
        await send(checked, batch[0]?.receivedAt ?? null);
      } finally {
        release();
      }
    };
  };

  /** Relays the committed messages not relayed yet; how many it relayed. */
  const relayCommitted = async (committed: { id: string; seq: string; channel: string }[]): Promise<number> => {
    const missed = committed.filter((m) => !seen.has(m.id) && hub.has(m.channel));
    for (let i = 0; i < missed.length; i += BATCH) {
      const frames = await db.relayFrames(missed.slice(i, i + BATCH));
      await send(frames, null);
    }
    return missed.length;
  };

  /** Relays the messages committed between two snapshots that were never relayed. */
  const recover = async (low: string, high: string): Promise<void> => {
    const relayed = await relayCommitted(await db.committedBetween(low, high));
    if (relayed === 0) return;
    metrics.messagesRecovered.inc(relayed);
    logger.warn({ messages: relayed, delivery: mode }, 'relayed messages that were committed without a notification or a replicated row reaching this daemon');
  };

  /** Rows from logical replication: relayed without reading them back, but change events with a row check. */
  const streamed = async (rows: StreamedRow[]): Promise<void> => {
    const keep: StreamedRow[] = [];
    for (const row of rows) {
      if (seen.has(row.id)) {
        metrics.notificationsDropped.inc({ reason: 'repeated' });
      } else if (watermarkSnapshot !== null && visibleIn(row.xactId, watermarkSnapshot)) {
        // Committed before the watermark: a recovery pass handled it.
      } else if (!hub.has(row.channel)) {
        markSeen(row.id, row.xactId);
      } else {
        keep.push(row);
      }
    }
    if (keep.length === 0) return;
    const checked = new Map<string, RelayFrame>();
    const toCheck = keep.filter((r) => r.mayNeedRowCheck);
    if (toCheck.length > 0) {
      try {
        for (const f of await db.relayFrames(toCheck.map((r) => ({ channel: r.channel, seq: r.seq })), watermark)) checked.set(f.id, f);
      } catch (err) {
        // Not marked seen: the next recovery pass relays them.
        logger.error({ err: errorText(err), messages: toCheck.length }, 'could not read change events to relay');
        return;
      }
    }
    const frames: RelayFrame[] = [];
    for (const r of keep) {
      if (!r.mayNeedRowCheck) frames.push({ id: r.id, seq: r.seq, channel: r.channel, frame: r.frame, rowCheck: false, xactId: r.xactId });
      else {
        const f = checked.get(r.id);
        if (f) frames.push(f);
      }
    }
    await send(frames, keep[0]?.receivedAt ?? null);
  };

  /** delivery 'poll': what committed since the watermark, in one round trip; the watermark moves to now. */
  const poll = async (): Promise<void> => {
    const nowAt = Date.now();
    if (watermark === null) {
      setWatermark(await db.snapshot());
      previous = watermark;
      previousAt = nowAt;
      return;
    }
    const { snapshot, committed } = await db.committedSince(watermark);
    await relayCommitted(committed);
    setWatermark(snapshot);
    previous = snapshot;
    previousAt = nowAt;
    forgetBefore(nowAt);
    releaseStarts();
    if (committed.length > 0) deps.onCommitted?.();
  };

  /**
   * Forgets the ids handled before `at`, when the watermark snapshot was
   * taken: read before it, they committed before it. Not a row from logical
   * replication whose transaction the watermark does not see yet: the WAL is
   * decoded before a commit becomes visible (a synchronous standby can hold
   * that for seconds), so it is kept until the watermark sees it.
   */
  const forgetBefore = (at: number): void => {
    for (const [id, entry] of seen) {
      if (entry.at >= at) break;
      if (entry.xact !== undefined && watermarkSnapshot !== null && !visibleIn(entry.xact, watermarkSnapshot)) continue;
      seen.delete(id);
    }
  };

  const sweep = async (): Promise<void> => {
    const nowAt = Date.now();
    const now = await db.snapshot();
    // Messages visible in `previous` committed at least one period ago: their
    // notifications had time to arrive; any still unseen were lost.
    if (watermark !== null && previous !== null) {
      await recover(watermark, previous);
      setWatermark(previous);
      forgetBefore(previousAt);
    } else if (watermark === null) {
      setWatermark(previous ?? now); // the database was away when the relay started
    }
    previous = now;
    previousAt = nowAt;
    releaseStarts();
  };

  const resync = async (): Promise<void> => {
    const nowAt = Date.now();
    const now = await db.snapshot();
    if (watermark !== null) await recover(watermark, now);
    setWatermark(now);
    previous = now;
    previousAt = nowAt;
    forgetBefore(nowAt);
    // The gap is out: what the new session delivered comes after it.
    const waiting = held ?? [];
    held = null;
    heldRows = 0;
    jobs.push(...waiting);
  };

  /**
   * Notified batches back to back: while one is sent, the next one queued is
   * already being read. Only notified jobs overlap (a recovery pass or a mode
   * switch waits for the batch before it, and the batch after waits for it),
   * so the watermark a read skips by is the one it would have seen in turn.
   */
  const notifiedInOrder = async (first: Envelope[]): Promise<void> => {
    let reading: Promise<() => Promise<void>> | null = readNotified(first);
    while (reading !== null) {
      const sendIt = await reading;
      const next = jobs[0];
      reading = null;
      if (next?.kind === 'notified' && !stopped) {
        jobs.shift();
        // Handled now, not when awaited: it may settle while this batch is sent.
        reading = readNotified(next.envelopes).catch((err: unknown) => {
          logger.warn({ err: errorText(err), job: 'notified' }, 'relay job failed');
          return async () => {};
        });
      }
      try {
        await sendIt();
      } catch (err) {
        // The next read is in flight: it is still sent after this one.
        logger.warn({ err: errorText(err), job: 'notified' }, 'relay job failed');
      }
    }
  };

  const run = async (): Promise<void> => {
    while (jobs.length > 0) {
      const job = jobs.shift() as Job;
      try {
        if (job.kind === 'notified') await notifiedInOrder(job.envelopes);
        else if (job.kind === 'streamed') await streamed(job.rows);
        else if (job.kind === 'sweep') await sweep();
        else if (job.kind === 'poll') await poll();
        else await resync();
      } catch (err) {
        // A recovery pass that failed (the database is away) is tried again later.
        logger.warn({ err: errorText(err), job: job.kind }, 'relay job failed');
        if (job.kind === 'resync' && !stopped) {
          setTimeout(() => push({ kind: 'resync' }), 500).unref();
        }
      }
    }
    running = null;
  };
  const push = (job: Job): void => {
    if (stopped) return;
    const last = jobs[jobs.length - 1];
    if (job.kind === 'notified' && last?.kind === 'notified' && last.envelopes.length < BATCH) {
      last.envelopes.push(...job.envelopes);
    } else if (job.kind === 'streamed' && last?.kind === 'streamed' && last.rows.length < BATCH) {
      last.rows.push(...job.rows);
    } else if (job.kind !== 'notified' && job.kind !== 'streamed' && jobs.some((j) => j.kind === job.kind)) {
      return;
    } else {
      jobs.push(job);
    }
    running ??= run();
  };

  const arm = (): void => {
    clearInterval(timer);
    if (stopped) return;
    timer = mode === 'poll'
      ? setInterval(() => push({ kind: 'poll' }), pollIntervalMs)
      : setInterval(() => push({ kind: 'sweep' }), options.recoveryIntervalMs);
    timer.unref();
  };
  let heldRows = 0;
  const hold = (job: Job): void => {
    heldRows += job.kind === 'notified' ? job.envelopes.length : job.kind === 'streamed' ? job.rows.length : 1;
    if (heldRows > MAX_HELD) {
      // Bounded: what is dropped here committed after the watermark, and the
      // resync (or the next recovery pass) relays it from the table.
      if (held && held.length > 0) logger.warn({ rows: heldRows }, 'too much arrived while the source reconnected: relaying it from the table instead');
      held = [];
      heldRows = 0;
      return;
    }
    const last = held?.[held.length - 1];
    if (job.kind === 'streamed' && last?.kind === 'streamed' && last.rows.length < BATCH) last.rows.push(...job.rows);
    else if (job.kind === 'notified' && last?.kind === 'notified' && last.envelopes.length < BATCH) last.envelopes.push(...job.envelopes);
    else held?.push(job);
  };

  return {
    async start() {
      // Taken before LISTEN: nothing visible in it can be notified to us later.
      try {
        previousAt = Date.now();
        setWatermark(await db.snapshot());
        previous = watermark;
      } catch (err) {
        logger.warn({ err: errorText(err) }, 'could not take the first snapshot; the first recovery pass will');
      }
      arm();
    },
    enqueue(envelope) {
      const job: Job = { kind: 'notified', envelopes: [envelope] };
      if (held) hold(job);
      else push(job);
    },
    stream(rows) {
      const job: Job = { kind: 'streamed', rows };
      if (held) hold(job);
      else push(job);
    },
    backlog() {
      let n = 0;
      for (const j of jobs) n += j.kind === 'notified' ? j.envelopes.length : j.kind === 'streamed' ? j.rows.length : 1;
      for (const j of held ?? []) n += j.kind === 'notified' ? j.envelopes.length : j.kind === 'streamed' ? j.rows.length : 1;
      return n;
    },
    setMode(next) {
      if (next === mode) return;
      mode = next;
      arm();
      // Whatever the old source had not delivered yet is found from the table.
      push({ kind: 'resync' });
    },
    pause() {
      held ??= [];
    },
    resync() {
      push({ kind: 'resync' });
    },
    async idle() {
      while (running) await running;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      while (running) await running;
    },
  };

}
