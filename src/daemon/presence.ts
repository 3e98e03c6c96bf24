/**
 * Presence across instances. The database holds the members
 * (realtime.presence, one row per socket and channel); each instance keeps,
 * for the channels its sockets watch, the member map it last read, and on a
 * hint (NOTIFY realtime_presence, only a channel name) reads it again and
 * sends the difference. Re-reads of one channel are throttled, so churn
 * costs at most one read and one presence_diff per channel per throttle
 * period, whatever the number of joins and leaves.
 *
 * Crash bound: every instance heartbeats each heartbeatMs; one silent for
 * timeoutMs is removed, with its members, by the next heartbeat of any other
 * instance. Its members leave within timeoutMs + heartbeatMs + throttleMs.
 *
 * The database losing presence: realtime.presence is unlogged, so a crash of
 * PostgreSQL or a failover to a standby empties it while every socket stays
 * up. Each heartbeat compares the rows the database holds for this instance
 * with what its sockets set, and writes back the missing ones (also when
 * another instance removed this one for missed heartbeats). When LISTEN comes
 * back (it does after any crash), the heartbeat runs at once and the watched
 * channels are read again only 1.5 heartbeat periods later, when every
 * instance has put its members back: watchers get one presence_diff of what
 * really changed, not every member leaving and joining again (diffs wait that
 * long after any LISTEN reconnection, and a failed read is retried that late).
 *
 * On a hot standby (pg_is_in_recovery()) unlogged tables can be neither read
 * nor written: presence is refused with PRESENCE_UNAVAILABLE, logged once,
 * and refused without a round trip until a heartbeat succeeds (promotion).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import type { Identity } from '../db/identity.js';
import type { PresenceMember } from '../db/presence.js';
import { pgFields } from '../db/errors.js';
import { WireError } from '../protocol/errors.js';
import { parseObject } from '../protocol/frames.js';
import type { Metrics } from './metrics.js';


export interface PresenceOptions {
  maxMembers: number;
  maxStateBytes: number;
  throttleMs: number;
  heartbeatMs: number;
  timeoutMs: number;
}

/** A socket that asked for presence on a channel. */
export interface PresenceWatcher {
  sendText(text: string): void;
}

type Members = Map<string, { state: Record<string, unknown>; connections: number }>;

interface Watched {
  members: Members;
  watchers: Set<PresenceWatcher>;
  /** The read in progress, if any; `again` asks for another after it. */
  running: Promise<void> | null;
  again: boolean;
  timer: NodeJS.Timeout | undefined;
  lastRead: number;
}

export interface Presence {
  readonly instance: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Starts watching a channel for a socket; resolves with the current members (presence_state). */
  watch(channel: string, watcher: PresenceWatcher): Promise<Record<string, Record<string, unknown>>>;
  unwatch(channel: string, watcher: PresenceWatcher): void;
  /** Sets a socket's state on a channel (authorized in SQL like a publish). */
  track(connection: string, identity: Identity, channel: string, state: Record<string, unknown>): Promise<string>;
  /** A socket leaves presence on these channels (all when null). */
  untrack(connection: string, channels: string[] | null): Promise<void>;
  /** A NOTIFY realtime_presence arrived. */
  hint(payload: string | undefined): void;
  /** LISTEN went away: reads in progress are discarded, and the next waits (see resync). */
  disconnected(): void;
  /** LISTEN came back: hints may have been lost, read every watched channel again. */
  resync(): void;
  members(channel: string): Promise<PresenceMember[]>;
}

/** Refused while the database is a hot standby (docs/errors.md). */
function unavailable(): WireError {
  return new WireError('PRESENCE_UNAVAILABLE', 'presence is unavailable: the database is a hot standby (in recovery)');
}

/** SQLSTATEs a server in recovery answers presence with: an unlogged relation read (0A000), a write (25006). */
const RECOVERY_CODES = new Set(['0A000', '25006']);

/** What presence_track refuses for good (docs/errors.md); anything else is tried again. */
const REFUSALS = new Set(['42501', 'RT400', 'RT404', 'RT413', 'RT429', '23514']);

/** A read that LISTEN going away or coming back overtook: discarded. */
const STALE = new Error('presence read overtaken by a LISTEN reconnection');

/** After LISTEN comes back or a read fails, watched channels are read again this many heartbeat periods later. */
const REREAD_AFTER_RECONNECT = 1.5;

function toObject(members: Members): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [key, m] of members) out[key] = m.state;
  return out;
}

export function createPresence(deps: { db: Db; logger: Logger; metrics: Metrics; now: () => number }, options: PresenceOptions): Presence {
  const { db, logger, metrics } = deps;
  const instance = randomUUID();
  const watched = new Map<string, Watched>();
  /** What this instance's sockets set, to write back if the database lost it (restore). */
  const tracked = new Map<string, Map<string, { identity: Identity; state: Record<string, unknown> }>>();
  /** Leaves the database did not take (it was away): tried again each heartbeat. */
  const pendingLeaves: { connection: string; channels: string[] | null }[] = [];
  let heartbeat: NodeJS.Timeout | undefined;
  let beats = 0;
  let stopped = false;
  /** Bumped when LISTEN goes away or comes back: a read that spans it is discarded. */
  let generation = 0;
  /** LISTEN is away: no channel is read again until it is back (resync defers the reads). */
  let away = false;
  /** The heartbeat in progress: resync() and the interval share it. */
  let beating: Promise<void> | null = null;
  /** The database is a hot standby: presence is refused until a heartbeat succeeds. */
  let standby = false;

  /**
   * Whether err means the database is a hot standby. The first time, it is
   * logged and reported (realtimed_presence_unavailable); while it lasts,
   * presence calls are refused before they reach the database.
   */
  const isStandby = async (err: unknown): Promise<boolean> => {
    if (standby) return true;
    if (!RECOVERY_CODES.has(pgFields(err).code)) return false;
    if (!(await db.inRecovery().catch(() => false))) return false;
    if (!standby) {
      standby = true;
      metrics.presenceUnavailable.set(1);
      logger.error('the database is a hot standby (in recovery): presence is refused (PRESENCE_UNAVAILABLE) until it accepts writes');
    }
    return true;
  };

  /** err as a client should see it: PRESENCE_UNAVAILABLE on a standby, else unchanged. */
  const refusal = async (err: unknown): Promise<unknown> => ((await isStandby(err)) ? unavailable() : err);

  const read = async (channel: string, w: Watched): Promise<void> => {
    w.lastRead = deps.now();
    const started = generation;
    const rows = await db.presenceMembers([channel]);
    // LISTEN went away meanwhile: this may be a database that just came back
    // from a crash without its presence. The deferred read decides.
    if (started !== generation) throw STALE;
    const next: Members = new Map(rows.map((r) => [r.key, { state: r.state, connections: r.connections }]));
    const joins: Record<string, Record<string, unknown>> = {};
    const leaves: Record<string, Record<string, unknown>> = {};
    let changed = false;
    for (const [key, m] of next) {
      const before = w.members.get(key);
      if (!before || JSON.stringify(before.state) !== JSON.stringify(m.state)) {
        joins[key] = m.state;
        changed = true;
      }
    }
    for (const [key, m] of w.members) {
      if (!next.has(key)) {
        leaves[key] = m.state;
        changed = true;
      }
    }
    w.members = next;
    if (!changed || w.watchers.size === 0) return;
    const frame = JSON.stringify({ type: 'presence_diff', channel, joins, leaves });
    for (const watcher of w.watchers) watcher.sendText(frame);
    metrics.presenceDiffs.inc(w.watchers.size);
  };

  /**
   * Reads a channel again only REREAD_AFTER_RECONNECT heartbeat periods from
   * now (hints meanwhile wait for that read): after LISTEN came back or a read
   * failed, the database may have just lost its presence in a crash, and
   * every instance needs a heartbeat to put its members back.
   */
  const defer = (channel: string, w: Watched): void => {
    clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = undefined;
      if (watched.get(channel) === w && !stopped && !away) schedule(channel);
    }, REREAD_AFTER_RECONNECT * options.heartbeatMs);
    w.timer.unref();
  };

  /** Reads a channel again now, or once the throttle period has passed. */
  const schedule = (channel: string): void => {
    const w = watched.get(channel);
    if (!w || w.timer || away) return;
    if (w.running) {
      w.again = true;
      return;
    }
    const delay = Math.max(0, w.lastRead + options.throttleMs - deps.now());
    w.timer = setTimeout(() => {
      w.timer = undefined;
      let failed = false;
      w.running = read(channel, w)
        .catch(async (err: unknown) => {
          // On a standby, read again once it accepts writes (the heartbeat does).
          if (await isStandby(err)) return;
          if (err !== STALE) logger.warn({ err: (err as Error).message, channel }, 'could not read presence; trying again later');
          failed = true;
        })
        .finally(() => {
          w.running = null;
          if (watched.get(channel) !== w || stopped) return;
          if (failed) {
            // Not at once: a read that succeeds as soon as PostgreSQL is back
            // from a crash finds its presence empty (every member would leave).
            w.again = false;
            defer(channel, w);
          } else if (w.again) {
            w.again = false;
            schedule(channel);
          }
        });
    }, delay);
    w.timer.unref();
  };

  /**
   * Writes back what this instance's sockets set and the database lacks: all
   * of it when this instance had been removed, else the rows a crash or a
   * failover lost (one count per heartbeat; the rows are read only when it is
   * short).
   */
  const restore = async (removed: boolean): Promise<void> => {
    let held = 0;
    for (const channels of tracked.values()) held += channels.size;
    if (held === 0) return;
    if (!removed && (await db.instancePresenceCount(instance)) >= held) return;
    const present = removed ? new Set<string>() : await db.instancePresenceRows(instance);
    const missing: { connection: string; channel: string }[] = [];
    for (const [connection, channels] of tracked) {
      for (const channel of channels.keys()) if (!present.has(`${channel} ${connection}`)) missing.push({ connection, channel });
    }
    if (missing.length === 0) return;
    logger.warn(
      { rows: missing.length },
      removed
        ? 'this instance had been removed for missing heartbeats; restoring its presence'
        : 'the database lost this instance\'s presence (a crash or failover empties the unlogged realtime.presence); restoring it',
    );
    const limits = { maxMembers: options.maxMembers, maxStateBytes: options.maxStateBytes };
    for (const { connection, channel } of missing) {
      let t = tracked.get(connection)?.get(channel);
      // Each write is checked again afterwards: the socket may have left, or
      // set another state, while it was on its way.
      while (t) {
        try {
          await db.presenceTrack({ instance, connection, identity: t.identity, channel, state: t.state }, limits);
        } catch (err) {
          const { code } = pgFields(err);
          if (REFUSALS.has(code)) {
            // Refused now (a policy changed, the channel is full): it stays out.
            tracked.get(connection)?.delete(channel);
            if (tracked.get(connection)?.size === 0) tracked.delete(connection);
            logger.warn({ err: (err as Error).message, channel }, 'could not restore presence: refused; the socket\'s state is dropped');
          } else {
            logger.warn({ err: (err as Error).message, channel }, 'could not restore presence; trying again at the next heartbeat');
          }
          break;
        }
        metrics.presenceRestored.inc();
        const now = tracked.get(connection)?.get(channel);
        if (!now) await db.presenceUntrack(connection, [channel]).catch(() => pendingLeaves.push({ connection, channels: [channel] }));
        t = now === t ? undefined : now;
      }
    }
  };

  const heartbeatOnce = async (): Promise<void> => {
    let registered: boolean;
    try {
      ({ registered } = await db.instanceHeartbeat(instance, options.timeoutMs, hostname(), process.pid));
    } catch (err) {
      if (await isStandby(err)) return; // logged once, when it began
      throw err;
    }
    beats++;
    const promoted = standby;
    if (promoted) {
      standby = false;
      metrics.presenceUnavailable.set(0);
      logger.warn('the database accepts writes again: presence is available');
    }
    while (pendingLeaves.length > 0) {
      const leave = pendingLeaves[0] as { connection: string; channels: string[] | null };
      await db.presenceUntrack(leave.connection, leave.channels);
      pendingLeaves.shift();
    }
    await restore(registered && beats > 1);
    if (promoted) for (const channel of watched.keys()) schedule(channel);
  };

  const beat = (): Promise<void> => {
    beating ??= heartbeatOnce().finally(() => {
      beating = null;
    });
    return beating;
  };

  return {
    instance,
    async start() {
      await beat().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'presence heartbeat failed'));
      heartbeat = setInterval(() => {
        beat().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'presence heartbeat failed'));
      }, options.heartbeatMs);
      heartbeat.unref();
    },
    async stop() {
      stopped = true;
      clearInterval(heartbeat);
      for (const w of watched.values()) clearTimeout(w.timer);
      await db.instanceStop(instance).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'could not remove this instance'));
    },
    async watch(channel, watcher) {
      if (standby) throw unavailable();
      let w = watched.get(channel);
      if (!w) {
        w = { members: new Map(), watchers: new Set(), running: null, again: false, timer: undefined, lastRead: 0 };
        watched.set(channel, w);
        w.watchers.add(watcher);
        // The first watcher here: read the members (no diff goes out for them).
        const first = w;
        first.running = (async () => {
          first.lastRead = deps.now();
          const rows = await db.presenceMembers([channel]);
          first.members = new Map(rows.map((r) => [r.key, { state: r.state, connections: r.connections }]));
        })().finally(() => {
          first.running = null;
          if (first.again && watched.get(channel) === first) {
            first.again = false;
            schedule(channel);
          }
        });
        try {
          await first.running;
        } catch (err) {
          first.watchers.delete(watcher);
          if (first.watchers.size === 0) watched.delete(channel);
          throw await refusal(err);
        }
        return toObject(first.members);
      }
      w.watchers.add(watcher);
      if (w.running) await w.running.catch(() => {});
      return toObject(w.members);
    },
    unwatch(channel, watcher) {
      const w = watched.get(channel);
      if (!w) return;
      w.watchers.delete(watcher);
      if (w.watchers.size === 0) {
        clearTimeout(w.timer);
        watched.delete(channel);
      }
    },
    async track(connection, identity, channel, state) {
      if (standby) throw unavailable();
      const key = await db
        .presenceTrack({ instance, connection, identity, channel, state }, { maxMembers: options.maxMembers, maxStateBytes: options.maxStateBytes })
        .catch(async (err: unknown) => {
          throw await refusal(err);
        });
      let channels = tracked.get(connection);
      if (!channels) tracked.set(connection, (channels = new Map()));
      channels.set(channel, { identity, state });
      return key;
    },
    async untrack(connection, channels) {
      const mine = tracked.get(connection);
      if (!mine) return;
      const leaving = channels === null ? [...mine.keys()] : channels.filter((c) => mine.has(c));
      if (leaving.length === 0) return;
      for (const c of leaving) mine.delete(c);
      if (mine.size === 0) tracked.delete(connection);
      const leave = { connection, channels: channels === null ? null : leaving };
      if (standby) {
        // Nothing can be written now; a promoted standby starts with no presence.
        pendingLeaves.push(leave);
        return;
      }
      try {
        await db.presenceUntrack(leave.connection, leave.channels);
      } catch (err) {
        pendingLeaves.push(leave);
        if (await isStandby(err)) return;
        throw err;
      }
    },
    hint(payload) {
      if (payload === undefined || payload.length > 1000) return;
      const channel = parseObject(payload)?.['channel'];
      if (typeof channel === 'string') schedule(channel);
    },
    disconnected() {
      away = true;
      generation++;
      for (const [channel, w] of watched) defer(channel, w);
    },
    resync() {
      // LISTEN came back, perhaps after a crash that emptied realtime.presence:
      // put this instance's members back now, and read the watched channels
      // one and a half heartbeat periods later, when every other instance has
      // had a heartbeat since the database came back, and so has put its
      // members back too. Hints meanwhile wait for that read (the timer is set).
      if (stopped) return;
      away = false;
      generation++;
      beat().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'presence heartbeat failed'));
      for (const [channel, w] of watched) defer(channel, w);
    },
    async members(channel) {
      if (standby) throw unavailable();
      return db.presenceMembers([channel]).catch(async (err: unknown) => {
        throw await refusal(err);
      });
    },
  };
}
