/**
 * Sealing ephemeral notifications (daemon/ephemeral.ts): only what was sealed
 * under realtime.notify_key opens, nothing in it reads in clear, and each is
 * taken once.
 */
import t from 'tap';

import { ReplayWindow, seal, unseal, type Sealed } from '../../src/daemon/ephemeral.js';
import { deriveKeys } from '../../src/daemon/keys.js';

const sealingKey = (notifyKey: string): Buffer => deriveKeys(notifyKey).sealing;

const KEY = sealingKey('k'.repeat(72));
const FRAME = JSON.stringify({ type: 'event', channel: 'room:1', event: 'typing', payload: { text: 'secret words' } });
const M: Sealed = { instance: 'i-1', seq: 7, at: 1_800_000_000_000, channel: 'room:1', frame: FRAME };

t.test('a sealed notification opens to what was sealed; neither the channel nor the frame is in clear', async (t) => {
  const text = seal(KEY, M);
  t.same(unseal(KEY, text), M);
  t.notMatch(text, /room:1|typing|secret/, 'the notification hides them');
  t.not(seal(KEY, M), text, 'a fresh nonce each time');
});

t.test('anything else does not open', async (t) => {
  const sealed = JSON.parse(seal(KEY, M)) as Record<string, unknown>;
  const flip = (b64: string): string => {
    const bytes = Buffer.from(b64, 'base64');
    bytes[0] = (bytes[0] ?? 0) ^ 1;
    return bytes.toString('base64');
  };
  const cases: [string, string][] = [
    ['another key', seal(sealingKey('x'.repeat(72)), M)],
    ['another seq (sealed with the data)', JSON.stringify({ ...sealed, s: 8 })],
    ['another time', JSON.stringify({ ...sealed, t: M.at + 1 })],
    ['another instance', JSON.stringify({ ...sealed, i: 'i-2' })],
    ['altered ciphertext', JSON.stringify({ ...sealed, d: flip(sealed['d'] as string) })],
    ['a short nonce', JSON.stringify({ ...sealed, n: 'AAAA' })],
    ['version 1 (HMAC in clear)', JSON.stringify({ v: 1, channel: 'room:1', frame: FRAME, sig: 'x' })],
    ['not JSON', 'garbage'],
  ];
  for (const [name, text] of cases) t.equal(unseal(KEY, text), null, name);
});

t.test('the replay window: each (instance, seq) once, out of order within the window, never from before it', async (t) => {
  const w = new ReplayWindow(() => 0);
  t.ok(w.take('a', 10), 'first');
  t.notOk(w.take('a', 10), 'again: refused');
  t.ok(w.take('a', 12), 'a later one');
  t.ok(w.take('a', 11), 'one that arrived late');
  t.notOk(w.take('a', 11), 'and not twice');
  t.ok(w.take('b', 10), 'another instance has its own');
  t.ok(w.take('a', 10_000), 'a jump ahead');
  t.notOk(w.take('a', 12), 'what fell out of the window is refused');
  t.ok(w.take('a', 9_999), 'inside the window still taken once');
  t.notOk(w.take('a', 9_999));
});
