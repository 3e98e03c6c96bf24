/** The notification envelope (daemon/envelope.ts): a hint, read strictly; anything else is dropped as forged. */
import t from 'tap';

import { parseEnvelope } from '../../src/daemon/envelope.js';

const ID = '0b3f7a52-8c1e-4b8e-9f0a-2a6c1d4e5f60';

t.test('an envelope', async (t) => {
  t.same(parseEnvelope(JSON.stringify({ v: 1, id: ID, seq: 42, channel: 'order:1' }), 7n), { id: ID, seq: 42, channel: 'order:1', receivedAt: 7n });
});

t.test('not an envelope: null', async (t) => {
  const cases: [string, string | undefined][] = [
    ['no payload', undefined],
    ['not JSON', '{'],
    ['an array', '[]'],
    ['another version', JSON.stringify({ v: 2, id: ID, seq: 1, channel: 'c' })],
    ['an id that is not a uuid', JSON.stringify({ v: 1, id: 'x', seq: 1, channel: 'c' })],
    ['an upper-case uuid (SQL sends lower case)', JSON.stringify({ v: 1, id: ID.toUpperCase(), seq: 1, channel: 'c' })],
    ['a seq that is text', JSON.stringify({ v: 1, id: ID, seq: '1', channel: 'c' })],
    ['a seq past 2^53', `{"v":1,"id":"${ID}","seq":9007199254740993,"channel":"c"}`],
    ['no channel', JSON.stringify({ v: 1, id: ID, seq: 1 })],
    ['over 2,000 characters', JSON.stringify({ v: 1, id: ID, seq: 1, channel: 'c'.repeat(2000) })],
  ];
  for (const [name, text] of cases) t.equal(parseEnvelope(text, 0n), null, name);
});
