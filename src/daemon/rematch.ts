/**
 * A channel row was added, changed or deleted (NOTIFY realtime_channels, a
 * hint): match every channel name this instance serves again. A name that
 * now matches no enabled channel is closed for its subscribers; one that
 * matches another row is authorized again; every one takes its row's current
 * limits. Hints are coalesced: one pass per 50 ms at most.
 */
import type { Logger } from 'pino';

import type { Db } from '../db/index.js';
import { errorText } from './boundary.js';
import type { Hub } from './hub.js';
import type { Subscription } from './socket/subscription.js';

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

  return {
    schedule() {
      clearTimeout(timer);
      timer = setTimeout(() => {
        rematch().catch((err: unknown) => logger.error({ err: errorText(err) }, 'could not re-match channels'));
      }, 50);
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
