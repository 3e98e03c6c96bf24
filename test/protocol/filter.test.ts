/**
 * The filter grammar of docs/protocol.md, "Filters": what parses, what does
 * not, and what each operator matches. (End to end, with real sockets and
 * change events: test/e2e/changes.test.ts.)
 */
import t from 'tap';

import { FilterError, matches, parseFilter, recordOf } from '../../src/protocol/filter.js';

t.test('parses', async (t) => {
  t.same(parseFilter('status=eq.paid'), [{ column: 'status', op: 'eq', values: ['paid'] }]);
  t.same(parseFilter('id=in.(1,2,3)&total=gt.10'), [
    { column: 'id', op: 'in', values: ['1', '2', '3'] },
    { column: 'total', op: 'gt', values: ['10'] },
  ]);
  t.same(parseFilter('note=eq.a.b=c'), [{ column: 'note', op: 'eq', values: ['a.b=c'] }], 'the value is everything after the first dot');
  t.same(parseFilter('note=eq.'), [{ column: 'note', op: 'eq', values: [''] }], 'an empty value');
});

t.test('refuses, saying why', async (t) => {
  for (const [text, why] of [
    ['', 'empty'],
    ['status', 'no ='],
    ['status=paid', 'no operator'],
    ['status=like.paid', 'unknown operator'],
    ['status=eq', 'no value'],
    ['1st=eq.1', 'column starts with a digit'],
    ['a-b=eq.1', 'column with a dash'],
    ['id=in.1,2', 'in without parentheses'],
    ['id=in.()', 'in with an empty list'],
    [Array.from({ length: 9 }, () => 'a=eq.1').join('&'), 'more than 8 conditions'],
    [`id=in.(${Array.from({ length: 101 }, (_, i) => i).join(',')})`, 'in with more than 100 values'],
    ['a=eq.' + 'x'.repeat(1100), 'over 1,024 bytes'],
  ] as const) {
    let error: unknown;
    try {
      parseFilter(text);
    } catch (err) {
      error = err;
    }
    t.ok(error instanceof FilterError && error.message.length > 0, `${why}: ${(error as Error | undefined)?.message ?? 'accepted'}`);
  }
});

t.test('matches', async (t) => {
  const row = { id: 7, status: 'paid', total: 12.5, note: null, vip: true };
  const cases: [string, boolean][] = [
    ['status=eq.paid', true],
    ['status=eq.new', false],
    ['status=neq.new', true],
    ['id=eq.7', true],
    ['id=eq.7.0', true],
    ['total=gt.10', true],
    ['total=lt.10', false],
    ['total=gt.9', true],
    ['id=in.(1,7)', true],
    ['id=in.(1,2)', false],
    ['vip=eq.true', true],
    ['note=eq.null', true],
    ['note=lt.z', false],
    ['missing=neq.x', false],
    ['status=eq.paid&id=gt.10', false],
    ['status=eq.paid&id=lt.10', true],
    ['status=gt.a', true],
  ];
  for (const [filter, expected] of cases) t.equal(matches(parseFilter(filter), row), expected, filter);
});

t.test('the record of an event: new, else old, else the payload', async (t) => {
  t.same(recordOf({ op: 'UPDATE', new: { a: 1 }, old: { a: 0 } }), { a: 1 });
  t.same(recordOf({ op: 'DELETE', new: null, old: { id: 3 } }), { id: 3 });
  t.same(recordOf({ a: 2 }), { a: 2 });
  t.equal(recordOf([1]), null);
  t.equal(matches(parseFilter('a=eq.1'), null), false, 'nothing to look at matches nothing');
});
