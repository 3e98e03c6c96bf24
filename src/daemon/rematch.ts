/**
 * A channel row was added, changed or deleted (NOTIFY realtime_channels, a
 * hint): match every channel name this instance serves again. A name that
 * now matches no enabled channel is closed for its subscribers; one that
 * matches another row is authorized again; every one takes its row's current
 * limits. Hints are coalesced, never postponed: the first hint starts a pass
 * 50 ms later, hints meanwhile join it, and a hint during a pass asks for
 * one more after it. A flood of hints (any role can NOTIFY) costs at most one
 * pass per 50 ms and cannot keep the pass from running.
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';
import type { Hub } from './hub.js';
import type { Subscription } from './socket/subscription.js';

/** How long after the first hint a pass starts (hints meanwhile join it). */
const PASS_DELAY_MS = 50;

export interface Rematch {
  /** A hint arrived (or LISTEN came back): re-match soon. */
  schedule(): void;
  stop(): void;
}

export function createRematch(deps: {
  db: Pick<Db, 'matchChannels'>;
  hub: Hub<Subscription>;
  logger: Logger;
}): Rematch {
  const { db, hub, logger } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let again = false;
  let stopped = false;

  const rematch = async (): Promise<void> => {
    const names = hub.channelNames();
    if (names.length === 0) return;
    const matches = await db.matchChannels(names);
    for (const name of names) {
      const match = matches.get(name);
      const id = match?.id ?? null;
      for (const subscription of [...(hub.subscribers(name) ?? [])]) {
        if (subscription.channelId === null) continue; // still being authorized
        if (id === null) subscription.owner.drop(name, 'CHANNEL_CLOSED');
        else if (subscription.channelId !== id) subscription.owner.reauthorize(name);
        if (id !== null && match) subscription.setLimits(match.limits);
      }
    }
  };

  const run = (): void => {
    timer = undefined;
    if (running) {
      again = true;
      return;
    }
    running = true;
    rematch()
      .catch((err: unknown) => logger.error({ err: errorText(err) }, 'could not re-match channels'))
      .finally(() => {
        running = false;
        if (again && !stopped) {
          again = false;
          schedule();
        }
      });
  };

  const schedule = (): void => {
    if (timer || stopped) return;
    timer = setTimeout(run, PASS_DELAY_MS);
  };

  return {
    schedule,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
