/** The hub (which subscriptions this instance holds) and deliver(): one frame to the right ones, once. */
import t from 'tap';

import type { Identity } from '../../src/db/identity.js';
import { deliver, Hub, type Subscriber } from '../../src/daemon/hub.js';
import { parseFilter, type Filter } from '../../src/protocol/filter.js';

class FakeSubscriber implements Subscriber {
  readonly got: string[] = [];
  constructor(
    readonly channel: string,
    readonly filter: Filter | undefined = undefined,
    readonly identity: Identity | null = null,
    private readonly accepts = true,
  ) {}

  sendEvent(frame: Buffer, id: string): boolean {
    if (!this.accepts) return false;
    this.got.push(`${id}:${frame.toString()}`);
    return true;
  }
}

const frame = (payload: unknown): Buffer => Buffer.from(JSON.stringify({ type: 'event', channel: 'c', event: 'e', payload }));

t.test('add, remove and count by channel', async (t) => {
  const hub = new Hub<FakeSubscriber>();
  const a = new FakeSubscriber('c');
  const b = new FakeSubscriber('c');
  const d = new FakeSubscriber('d');
  hub.add(a);
  hub.add(a);
  hub.add(b);
  hub.add(d);
  t.equal(hub.size, 3, 'adding twice counts once');
  t.equal(hub.countOf('c'), 2);
  t.same(hub.channelNames().sort(), ['c', 'd']);
  hub.remove(a);
  hub.remove(a);
  t.equal(hub.size, 2, 'removing twice counts once');
  hub.remove(d);
  t.notOk(hub.has('d'), 'an empty channel is forgotten');
  t.equal(hub.countOf('d'), 0);
});

t.test('deliver: to every subscriber once, through each filter, and only where visible', async (t) => {
  const alice: Identity = { role: 'authenticated', claims: { sub: 'a' }, exp: undefined };
  const plain = new FakeSubscriber('c');
  const paid = new FakeSubscriber('c', parseFilter('status=eq.paid'));
  const open = new FakeSubscriber('c', parseFilter('status=eq.open'));
  const hidden = new FakeSubscriber('c', undefined, alice);
  const gone = new FakeSubscriber('c', undefined, null, false);
  const all = [plain, paid, open, hidden, gone];
  const written = deliver(all, { frame: frame({ new: { status: 'paid' } }), id: 'm1' }, (s) => s.identity !== alice);
  t.equal(written, 2, 'counted: the sockets it was written to');
  t.equal(plain.got.length, 1);
  t.equal(paid.got.length, 1, 'the filter matched payload.new');
  t.equal(open.got.length, 0, 'the other filter did not');
  t.equal(hidden.got.length, 0, 'not visible to that identity');
  t.match(plain.got[0], /^m1:/, 'with its id');
  t.equal(deliver([paid], { frame: Buffer.from('not json'), id: 'm2' }), 0, 'a filter never matches what does not parse');
});
