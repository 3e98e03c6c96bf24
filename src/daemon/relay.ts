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
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import type { Identity } from '../db/identity.js';
import type { RelayFrame } from '../db/messages.js';
import { errorText } from './boundary.js';
import type { Envelope } from './envelope.js';
import { deliver, type Hub, type Subscriber } from './hub.js';
import type { Metrics } from './metrics.js';
import type { Stats } from './statistics.js';

const BATCH = 500;

export interface Relay {
  /** Takes the first watermark; call once LISTEN is up, before relaying. */
  start(): Promise<void>;
  enqueue(envelope: Envelope): void;
  /** LISTEN was lost: hold notifications until the gap is relayed (resync). */
  pause(): void;
  /** LISTEN came back: relay what committed while it was away, then what was held. */
  resync(): void;
  /** Resolves when every job queued so far is done (for shutdown and tests). */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

type Job = { kind: 'notified'; envelopes: Envelope[] } | { kind: 'sweep' } | { kind: 'resync' };

export function createRelay(
  deps: { db: Pick<Db, 'relayFrames' | 'committedBetween' | 'snapshot' | 'changeAudience'>; hub: Hub; metrics: Metrics; logger: Logger; stats: Pick<Stats, 'add'> },
  options: { recoveryIntervalMs: number },
): Relay {
  const { db, hub, metrics, logger, stats } = deps;
  const jobs: Job[] = [];
  /**
   * Ids handled, with when. An id stays until the watermark moves past it: a
   * message read before a snapshot was taken committed before it, so the
   * recovery passes (which look only beyond the watermark) can no longer return
   * it. Never by age alone: after a long outage the watermark is old, and
   * forgetting by age would relay the messages around it twice.
   */
  const seen = new Map<string, number>();
  let watermark: string | null = null;
  let previous: string | null = null;
  /** Date.now() just before `previous` was taken. */
  let previousAt = 0;
  let running: Promise<void> | null = null;
  /** While LISTEN is being re-established: notifications wait here, behind the gap. */
  let held: Envelope[] | null = null;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const send = async (frames: RelayFrame[], receivedAt: bigint | null): Promise<void> => {
    const audience = await rowAudience(frames);
    for (const row of frames) {
      seen.set(row.id, Date.now());
      const subscribers = hub.subscribers(row.channel);
      if (!subscribers || subscribers.size === 0) continue;
      const event = { frame: Buffer.from(row.frame), id: row.id };
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

  const notified = async (batch: Envelope[]): Promise<void> => {
    const wanted = new Map<string, Envelope>();
    for (const envelope of batch) {
      if (seen.has(envelope.id) || wanted.has(envelope.id)) {
        metrics.notificationsDropped.inc({ reason: 'repeated' });
      } else if (!hub.has(envelope.channel)) {
        // Nobody here listens to that channel: nothing to read.
        seen.set(envelope.id, Date.now());
      } else {
        wanted.set(envelope.id, envelope);
      }
    }
    if (wanted.size === 0) return;
    // A message is found by its channel and seq; its id must then agree.
    const byKey = new Map<string, Envelope>();
    for (const envelope of wanted.values()) byKey.set(`${envelope.channel}\u0000${envelope.seq}`, envelope);
    let frames: RelayFrame[];
    try {
      frames = await db.relayFrames([...byKey.values()].map((e) => ({ channel: e.channel, seq: String(e.seq) })), watermark);
    } catch (err) {
      // Not marked seen: the next recovery pass relays them.
      logger.error({ err: errorText(err), messages: wanted.size }, 'could not read messages to relay');
      return;
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
    await send(checked, batch[0]?.receivedAt ?? null);
    if (byKey.size > 0) metrics.notificationsDropped.inc({ reason: 'unknown' }, byKey.size);
  };

  /** Relays the messages committed between two snapshots that were never relayed. */
  const recover = async (low: string, high: string): Promise<void> => {
    const committed = await db.committedBetween(low, high);
    const missed = committed.filter((m) => !seen.has(m.id) && hub.has(m.channel));
    if (missed.length === 0) return;
    for (let i = 0; i < missed.length; i += BATCH) {
      const frames = await db.relayFrames(missed.slice(i, i + BATCH));
      await send(frames, null);
      metrics.messagesRecovered.inc(frames.length);
    }
    logger.warn({ messages: missed.length }, 'relayed messages that were committed without a notification reaching this daemon');
  };

  /** Forgets the ids handled before `at`, when the watermark snapshot was taken. */
  const forgetBefore = (at: number): void => {
    for (const [id, seenAt] of seen) {
      if (seenAt >= at) break;
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
      watermark = previous;
      forgetBefore(previousAt);
    } else if (watermark === null) {
      watermark = previous ?? now; // the database was away when the relay started
    }
    previous = now;
    previousAt = nowAt;
  };

  const resync = async (): Promise<void> => {
    const nowAt = Date.now();
    const now = await db.snapshot();
    if (watermark !== null) await recover(watermark, now);
    watermark = now;
    previous = now;
    previousAt = nowAt;
    forgetBefore(nowAt);
    // The gap is out: the notifications of the new LISTEN session come after it.
    const waiting = held ?? [];
    held = null;
    for (let i = 0; i < waiting.length; i += BATCH) jobs.push({ kind: 'notified', envelopes: waiting.slice(i, i + BATCH) });
  };

  const run = async (): Promise<void> => {
    while (jobs.length > 0) {
      const job = jobs.shift() as Job;
      try {
        if (job.kind === 'notified') await notified(job.envelopes);
        else if (job.kind === 'sweep') await sweep();
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
    } else if (job.kind !== 'notified' && jobs.some((j) => j.kind === job.kind)) {
      return;
    } else {
      jobs.push(job);
    }
    running ??= run();
  };

  return {
    async start() {
      // Taken before LISTEN: nothing visible in it can be notified to us later.
      try {
        previousAt = Date.now();
        watermark = await db.snapshot();
        previous = watermark;
      } catch (err) {
        logger.warn({ err: errorText(err) }, 'could not take the first snapshot; the first recovery pass will');
      }
      timer = setInterval(() => push({ kind: 'sweep' }), options.recoveryIntervalMs);
      timer.unref();
    },
    enqueue(envelope) {
      if (held) held.push(envelope);
      else push({ kind: 'notified', envelopes: [envelope] });
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
