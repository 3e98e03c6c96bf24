/**
 * Token verification and the cache of verified tokens: a token is checked
 * once for a reconnect storm, never accepted past its exp or once it should
 * be checked again, failures never remembered, and the cache bounded.
 */
import t from 'tap';

import { createAuthenticator } from '../../src/daemon/auth.js';
import { SECRET, sign } from '../helpers/jwt.js';

function authenticator(clock: { now: number }) {
  return createAuthenticator({
    jwtSecret: SECRET,
    jwksUrl: undefined,
    jwtAudience: undefined,
    jwtIssuer: undefined,
    roles: ['anon', 'authenticated'],
    allowAnon: true,
    now: () => clock.now,
  });
}

t.test('a verified token is remembered: the same identity for the next connection', async (t) => {
  const clock = { now: Date.now() };
  const auth = authenticator(clock);
  const token = await sign({ sub: 'u1', role: 'authenticated' });
  const first = await auth.verify(token);
  t.equal(auth.cached(), 1);
  t.equal(await auth.verify(token), first, 'the remembered identity, without a second signature check');
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.claims), 'shared between connections, so frozen');
});

t.test('never past exp: an expired token is refused, cached or not', async (t) => {
  const clock = { now: Date.now() };
  const auth = authenticator(clock);
  const token = await sign({ sub: 'u2' }, { expiresIn: 30 });
  const identity = await auth.verify(token);
  clock.now = (identity.exp as number) * 1000 + 1;
  await t.rejects(auth.verify(token), { code: 'TOKEN_EXPIRED' }, 'refused once exp has passed');
  t.equal(auth.cached(), 0, 'and forgotten');
});

t.test('remembered for 5 minutes at most, then checked again', async (t) => {
  const clock = { now: Date.now() };
  const auth = authenticator(clock);
  const token = await sign({ sub: 'u3' }, { expiresIn: 3600 });
  const first = await auth.verify(token);
  clock.now += 5 * 60_000 + 1;
  const again = await auth.verify(token);
  t.not(again, first, 'verified afresh');
  t.same(again, first, 'to the same identity');
});

t.test('failures are never remembered', async (t) => {
  const clock = { now: Date.now() };
  const auth = authenticator(clock);
  await t.rejects(auth.verify(await sign({ sub: 'x' }, { secret: 'another-secret-0123456789abcdef-0123456789' })), { code: 'UNAUTHORIZED' });
  await t.rejects(auth.verify(await sign({ sub: 'x', role: 'service_role' })), { code: 'UNAUTHORIZED' }, 'a role not allowed here');
  const early = await sign({ sub: 'x' }, { notBefore: 60 });
  await t.rejects(auth.verify(early), { code: 'UNAUTHORIZED' }, 'not valid yet');
  t.equal(auth.cached(), 0, 'none of them remembered');
  clock.now += 61_000;
  t.match(await auth.verify(early), { role: 'authenticated' }, 'valid once its nbf has passed: the refusal was not remembered');
});

t.test('bounded: at most 10,000 tokens, the least recently used going first', async (t) => {
  const clock = { now: Date.now() };
  const auth = authenticator(clock);
  const first = await sign({ sub: 'first' });
  await auth.verify(first);
  for (let i = 0; i < 10_050; i++) await auth.verify(await sign({ sub: `u${i}` }));
  t.equal(auth.cached(), 10_000);
  const identity = await auth.verify(first);
  t.match(identity, { claims: { sub: 'first' } }, 'an evicted token still verifies (again)');
});
