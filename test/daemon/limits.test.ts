/** The rate and connection limits (daemon/limits.ts), on a clock the test moves. */
import t from 'tap';

import { ConnectRateLimiter, TokenBucket, UserConnections } from '../../src/daemon/limits.js';

t.test('a token bucket: bursts up to its size, then refills at its rate, saying how long to wait', async (t) => {
  let now = 1_000_000;
  const bucket = new TokenBucket(10, () => now, 3);
  t.same([bucket.take(), bucket.take(), bucket.take()], [0, 0, 0], 'a burst of 3');
  t.equal(bucket.take(), 100, 'then 100 ms until the next token (10/s)');
  now += 50;
  t.equal(bucket.take(), 50, 'half way: 50 ms');
  now += 50;
  t.equal(bucket.take(), 0, 'a token after 100 ms');
  t.notOk(bucket.full(), 'not full');
  now += 10_000;
  t.ok(bucket.full(), 'full after a long pause, never above its size');
  t.same([bucket.take(), bucket.take(), bucket.take(), bucket.take() > 0], [0, 0, 0, true], 'the burst again, no more');
});

t.test('the burst defaults to the rate', async (t) => {
  const bucket = new TokenBucket(2, () => 0);
  t.same([bucket.take(), bucket.take(), bucket.take()], [0, 0, 500]);
});

t.test('connect rate per address: off at 0; each address its own bucket, bursts of twice the rate', async (t) => {
  let now = 0;
  const off = new ConnectRateLimiter(0, () => now);
  t.ok(Array.from({ length: 100 }, () => off.take('a')).every((w) => w === 0), 'off');
  const limiter = new ConnectRateLimiter(1, () => now);
  t.teardown(() => limiter.stop());
  t.same([limiter.take('a'), limiter.take('a'), limiter.take('a')], [0, 0, 1000], 'a: 2, then wait 1 s');
  t.equal(limiter.take('b'), 0, 'b is not held back by a');
  now += 1000;
  t.equal(limiter.take('a'), 0, 'a again after 1 s');
  off.stop();
});

t.test('connections per user: counted, released, unlimited at 0', async (t) => {
  const users = new UserConnections(2);
  t.ok(users.acquire('u'));
  t.ok(users.acquire('u'));
  t.notOk(users.acquire('u'), 'a third is refused');
  t.ok(users.acquire('v'), 'another user is not');
  users.release('u');
  t.ok(users.acquire('u'), 'a released slot is taken again');
  const unlimited = new UserConnections(0);
  t.ok(Array.from({ length: 1000 }, () => unlimited.acquire('u')).every(Boolean), '0 is no limit');
});
