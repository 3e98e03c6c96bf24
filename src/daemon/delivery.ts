/**
 * realtime.config.delivery, followed: which source tells the relay what
 * committed (docs/delivery.md).
 *
 * - 'notify': the LISTEN connection's notifications (listener.ts).
 * - 'wal': logical replication (replication.ts). Its prerequisites are checked
 *   first: at start a missing one is a RealtimedError naming the fix (exit 2);
 *   when a DBA switches a running daemon to 'wal' without them, it logs that
 *   line and polls instead, so nothing waits on a source that cannot come.
 * - 'poll': the relay polls every --poll-interval ms, and once a second this
 *   daemon summarizes the open partition's new BRIN ranges so a poll reads
 *   a second of messages, not everything since the last VACUUM.
 *
 * The mode is read at start, after every notification on realtime_channels
 * (realtime.config's trigger sends one when delivery changes) and every ten
 * seconds, so a daemon that missed the notification still follows.
 */
import type { Logger } from 'pino';

import { RealtimedError } from '../cli/errors.js';
import type { Db } from '../db/index.js';
import { walProblem } from '../db/replication.js';
import { errorText } from './boundary.js';
import type { Metrics } from './metrics.js';
import { createReplicationSource, type ReplicationSource } from './replication.js';
import type { DeliveryMode, Relay } from './relay.js';

const MODES: readonly DeliveryMode[] = ['notify', 'wal', 'poll'];
const RECHECK_MS = 10_000;
const SUMMARIZE_MS = 1_000;

export interface Delivery {
  start(): Promise<void>;
  /** realtime_channels was notified (the mode may have changed). */
  changed(): void;
  stop(): Promise<void>;
  mode(): DeliveryMode;
  /** The mode the database asks for, when this daemon could not follow it ('wal' without its prerequisites). */
  refused(): string | null;
}

export function createDelivery(deps: {
  db: Pick<Db, 'deliveryMode' | 'summarizeMessages'>;
  relay: Relay;
  logger: Logger;
  metrics: Metrics;
  /** The direct connection (--listen-url): replication needs one. */
  listenUrl: string;
  instance: string;
  onWebhooksDue: () => void;
}): Delivery {
  const { db, relay, logger, metrics } = deps;
  let current: DeliveryMode = 'notify';
  let refused: string | null = null;
  let wal: ReplicationSource | null = null;
  let stopped = false;
  let recheck: NodeJS.Timeout | undefined;
  let summarize: NodeJS.Timeout | undefined;
  let checking: Promise<void> | null = null;
  let again = false;

  const show = (): void => {
    for (const m of MODES) metrics.deliveryMode.set({ mode: m }, m === current ? 1 : 0);
  };

  const use = async (next: DeliveryMode): Promise<void> => {
    if (next === current && (next !== 'wal' || wal !== null)) return;
    if (current === 'wal' && wal) {
      await wal.stop();
      wal = null;
    }
    clearInterval(summarize);
    summarize = undefined;
    const was = current;
    current = next;
    relay.setMode(next);
    if (next === 'wal') {
      wal = createReplicationSource({
        url: deps.listenUrl, relay, logger, metrics, instance: deps.instance, onWebhooksDue: deps.onWebhooksDue,
      });
      await wal.start();
    } else if (next === 'poll') {
      summarize = setInterval(() => {
        db.summarizeMessages().catch(() => {}); // another daemon or VACUUM has it: the next call catches up
      }, SUMMARIZE_MS);
      summarize.unref();
    }
    show();
    if (was !== next) logger.info({ delivery: next, was }, 'delivery mode');
  };

  /** Reads the mode and follows it; at start a 'wal' it cannot follow throws. */
  const follow = async (atStart: boolean): Promise<void> => {
    let asked: string;
    try {
      asked = await db.deliveryMode();
    } catch (err) {
      // At start the database may be away: relay as notified (the recovery
      // passes find the rest) and follow the mode once it answers.
      if (!atStart) throw err;
      logger.warn({ err: errorText(err) }, 'could not read realtime.config.delivery; following it once the database answers');
      return;
    }
    const wanted: DeliveryMode = (MODES as readonly string[]).includes(asked) ? (asked as DeliveryMode) : 'notify';
    if (wanted === 'wal' && (current !== 'wal' || wal === null)) {
      let problem: string | null = null;
      try {
        problem = await walProblem(deps.listenUrl);
      } catch (err) {
        // Unreachable now: the replication source retries until it is not.
        logger.warn({ err: errorText(err) }, 'could not check the prerequisites of delivery wal');
      }
      if (problem) {
        if (atStart) throw new RealtimedError('RT_ERR_DELIVERY', problem);
        if (refused !== problem) logger.error({ fallback: 'poll' }, problem);
        refused = problem;
        await use('poll');
        return;
      }
    }
    refused = null;
    await use(wanted);
  };

  const check = (): void => {
    if (stopped) return;
    if (checking) {
      again = true;
      return;
    }
    checking = follow(false)
      .catch((err: unknown) => logger.warn({ err: errorText(err) }, 'could not read realtime.config.delivery'))
      .finally(() => {
        checking = null;
        if (again) {
          again = false;
          check();
        }
      });
  };

  return {
    async start() {
      stopped = false;
      show();
      await follow(true);
      recheck = setInterval(check, RECHECK_MS);
      recheck.unref();
    },
    changed: check,
    async stop() {
      stopped = true;
      clearInterval(recheck);
      clearInterval(summarize);
      while (checking) await checking;
      await wal?.stop();
      wal = null;
    },
    mode: () => current,
    refused: () => refused,
  };
}
