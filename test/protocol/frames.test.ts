/**
 * The frame parser (protocol/frames.ts): what a client may send, and the
 * error each malformed frame gets; and eventFrame(), which builds for
 * ephemeral messages and the HTTP history the same frame realtime.event_frame
 * builds in SQL for stored messages.
 */
import t from 'tap';

import { WireError } from '../../src/protocol/errors.js';
import { eventFrame, parseClientFrame, parseObject } from '../../src/protocol/frames.js';
import { createDatabase } from '../helpers/db.js';

function refused(text: string): { code: string; message: string; ref?: unknown } {
  try {
    parseClientFrame(text);
  } catch (err) {
    if (err instanceof WireError) return { code: err.code, message: err.message, ...err.extra };
    throw err;
  }
  throw new Error(`accepted: ${text}`);
}

t.test('each frame type parses, keeping only what the protocol knows', async (t) => {
  t.same(parseClientFrame('{"type":"subscribe","channel":"order:1","ref":"1"}'), { type: 'subscribe', channel: 'order:1', ref: '1' });
  t.same(parseClientFrame('{"type":"subscribe","channel":"c","since":0,"epoch":"e","presence":true,"extra":1}'), {
    type: 'subscribe', channel: 'c', since: 0, epoch: 'e', presence: true,
  });
  t.same(parseClientFrame('{"type":"subscribe","channel":"c","filter":"status=eq.paid"}'), {
    type: 'subscribe', channel: 'c', filter: { text: 'status=eq.paid', conditions: [{ column: 'status', op: 'eq', values: ['paid'] }] },
  });
  t.same(parseClientFrame('{"type":"unsubscribe","channel":"c"}'), { type: 'unsubscribe', channel: 'c' });
  t.same(parseClientFrame('{"type":"publish","channel":"c","event":"e"}'), { type: 'publish', channel: 'c', event: 'e', payload: {} });
  t.same(parseClientFrame('{"type":"publish","channel":"c","event":"e","payload":{"a":1},"dedupeKey":"k"}'), {
    type: 'publish', channel: 'c', event: 'e', payload: { a: 1 }, dedupeKey: 'k',
  });
  t.same(parseClientFrame('{"type":"publish","channel":"c","event":"e","ephemeral":true}'), {
    type: 'publish', channel: 'c', event: 'e', payload: {}, ephemeral: true,
  });
  t.same(parseClientFrame('{"type":"presence","channel":"c","state":null}'), { type: 'presence', channel: 'c', state: null });
  t.same(parseClientFrame('{"type":"auth","token":"x.y.z","ref":"a"}'), { type: 'auth', token: 'x.y.z', ref: 'a' });
  t.same(parseClientFrame('{"type":"ping"}'), { type: 'ping' });
});

t.test('malformed frames: INVALID_MESSAGE (INVALID_FILTER for a filter), with the ref when it could be read', async (t) => {
  const cases: [string, string][] = [
    ['not json', 'the frame is not JSON'],
    ['[1]', 'the frame must be a JSON object'],
    ['{"type":"subscribe"}', '"channel" must be a string of 1 to 255 bytes'],
    [`{"type":"subscribe","channel":"${'x'.repeat(256)}"}`, '"channel" must be a string of 1 to 255 bytes'],
    ['{"type":"subscribe","channel":"c","since":-1}', '"since" must be a seq: a whole number from 0'],
    ['{"type":"subscribe","channel":"c","since":1.5}', '"since" must be a seq: a whole number from 0'],
    ['{"type":"subscribe","channel":"c","epoch":""}', '"epoch" must be the string a "subscribed" frame carried'],
    ['{"type":"subscribe","channel":"c","filter":1}', '"filter" must be a string such as "status=eq.paid"'],
    ['{"type":"subscribe","channel":"c","presence":"yes"}', '"presence" must be true or false'],
    ['{"type":"publish","channel":"c","event":"e","payload":[]}', '"payload" must be a JSON object'],
    ['{"type":"publish","channel":"c","event":"e","ephemeral":true,"dedupeKey":"k"}', 'an ephemeral message is never stored: it takes no "dedupeKey"'],
    ['{"type":"presence","channel":"c","state":"here"}', '"state" must be a JSON object, or null to leave'],
    ['{"type":"auth","token":""}', '"token" must be a non-empty string'],
    ['{"type":"nope"}', 'unknown frame type "nope"'],
    ['{}', '"type" is missing'],
    ['{"type":"ping","ref":5}', '"ref" must be a string of at most 255 characters'],
  ];
  for (const [text, message] of cases) t.same(refused(text), { code: 'INVALID_MESSAGE', message }, text.slice(0, 60));
  t.match(refused('{"type":"subscribe","channel":"c","filter":"bad","ref":"r"}'), { code: 'INVALID_FILTER', ref: 'r' });
  t.match(refused('{"type":"subscribe","ref":"r9"}'), { code: 'INVALID_MESSAGE', ref: 'r9' }, 'the ref comes back');
});

t.test('parseObject: an object, or null', async (t) => {
  t.same(parseObject('{"a":1}'), { a: 1 });
  t.equal(parseObject('[1]'), null);
  t.equal(parseObject('"x"'), null);
  t.equal(parseObject('{'), null);
});

t.test('eventFrame() is realtime.event_frame() field for field', async (t) => {
  const db = await createDatabase(t);
  await db.pool.query(`insert into realtime.channels (pattern) values ('room:%')`);
  await db.pool.query(`select realtime.publish('room:"1"', 'said', '{"text":"h\\u00e9 \\"you\\"","n":[1,2.5,null]}')`);
  const { rows } = await db.pool.query<{
    frame: string; id: string; seq: string; channel_name: string; event_name: string; payload: unknown;
    sender_type: 'system' | 'user'; sender_id: string | null; created_at: Date;
  }>(`select realtime.event_frame(m) as frame, m.* from realtime.messages m`);
  const row = rows[0];
  if (!row) throw new Error('no message');
  const built = eventFrame(row.channel_name, row.event_name, row.payload, {
    messageId: row.id,
    seq: Number(row.seq),
    senderType: row.sender_type,
    senderId: row.sender_id,
    timestamp: row.created_at.toISOString(),
  });
  const sql = JSON.parse(row.frame) as unknown;
  t.same(built, sql, 'the same fields and values');
  t.same(Object.keys(built), Object.keys(sql as object), 'in the same order');
  t.same(Object.keys(built.meta), Object.keys((sql as { meta: object }).meta), 'meta in the same order');
});
