/** Signing ephemeral notifications (daemon/ephemeral.ts): only what realtime.notify_key signed verifies. */
import t from 'tap';

import { signNotification, verifyNotification } from '../../src/daemon/ephemeral.js';

const KEY = 'k'.repeat(72);
const FRAME = JSON.stringify({ type: 'event', channel: 'room:1', event: 'typing', payload: {} });

t.test('a signed notification verifies and gives back its channel and frame', async (t) => {
  t.same(verifyNotification(KEY, signNotification(KEY, 'room:1', FRAME)), { channel: 'room:1', frame: FRAME });
});

t.test('anything else does not verify', async (t) => {
  const signed = JSON.parse(signNotification(KEY, 'room:1', FRAME)) as Record<string, unknown>;
  const cases: [string, string][] = [
    ['another key', signNotification('x'.repeat(72), 'room:1', FRAME)],
    ['another channel', JSON.stringify({ ...signed, channel: 'room:2' })],
    ['another frame', JSON.stringify({ ...signed, frame: FRAME.replace('typing', 'stopped') })],
    ['no signature', JSON.stringify({ ...signed, sig: undefined })],
    ['a short signature', JSON.stringify({ ...signed, sig: 'abc' })],
    ['another version', JSON.stringify({ ...signed, v: 2 })],
    ['not JSON', 'garbage'],
  ];
  for (const [name, text] of cases) t.equal(verifyNotification(KEY, text), null, name);
});
