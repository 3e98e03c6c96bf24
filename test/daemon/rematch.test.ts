/**
 * Re-matching (daemon/rematch.ts): hints are coalesced, never postponed, so
 * a flood of NOTIFYs on the channel-change channel (any role can send them)
 * cannot keep a deleted channel's subscribers subscribed (finding 7b).
 */
import { pino } from 'pino';
import t from 'tap';

import { Hub } from '../../src/daemon/hub.js';
import { createRematch } from '../../src/daemon/rematch.js';
import type { Subscription } from '../../src/daemon/socket/subscription.js';
import { until } from '../helpers/wait.js';

t.test('under a flood of hints a pass still runs every 50 ms, and a closed channel is dropped', async (t) => {
  let passes = 0;
  const dropped: string[] = [];
  const subscription = {
    channel: 'order:1',
    channelId: 'c1',
    identity: null,
    filter: undefined,
    sendEvent: () => true,
    setLimits: () => {},
    owner: { drop: (channel: string) => dropped.push(channel), reauthorize: () => {} },
  } as unknown as Subscription;
  const hub = new Hub<Subscription>();
  hub.add(subscription);
  const rematch = createRematch({
    db: {
      matchChannels: async (names: string[]) => {
        passes++;
        return new Map(names.map((n) => [n, { id: null, limits: { maxSubscribers: null, publishRate: null, maxMessageBytes: null } }]));
      },
    },
    hub,
    logger: pino({ level: 'silent' }),
  });
  t.teardown(() => rematch.stop());
  const flood = setInterval(() => rematch.schedule(), 2);
  t.teardown(() => clearInterval(flood));
  await until('a pass during the flood', () => passes > 0, 2000);
  clearInterval(flood);
  t.same(dropped, ['order:1'], 'the subscription of the closed channel was dropped');
  const before = passes;
  rematch.schedule();
  rematch.schedule();
  await until('one more pass', () => passes > before, 2000);
  t.equal(passes, before + 1, 'hints that come together make one pass');
});
