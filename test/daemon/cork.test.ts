/**
 * Frames written to one socket within a tick leave in one write (cork.ts),
 * over a real TCP connection on 127.0.0.1: the socket's own write calls are
 * counted, and the peer reads every byte in order.
 */
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';

import t from 'tap';

import { corkForTick } from '../../src/daemon/socket/cork.js';
import { until } from '../helpers/wait.js';

/** A connected pair: the server side (written to, its writes counted) and what the client side has read. */
async function pair(t: { teardown(fn: () => unknown): void }) {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(address.port, '127.0.0.1');
  const [socket] = await accepted;
  let received = '';
  client.setEncoding('utf8');
  client.on('data', (d: string) => (received += d));
  // The stream's own calls into the handle: one per write, or one per batch of corked writes.
  const calls: number[] = [];
  const internal = socket as unknown as {
    _write: (chunk: unknown, encoding: string, cb: () => void) => void;
    _writev: (chunks: unknown[], cb: () => void) => void;
  };
  const write = internal._write.bind(socket);
  const writev = internal._writev.bind(socket);
  internal._write = (chunk, encoding, cb) => (calls.push(1), write(chunk, encoding, cb));
  internal._writev = (chunks, cb) => (calls.push(chunks.length), writev(chunks, cb));
  t.teardown(() => {
    client.destroy();
    socket.destroy();
    server.close();
  });
  return { socket, calls, received: () => received };
}

t.test('three frames in one tick: one write of three; the next tick corks again', async (t) => {
  const { socket, calls, received } = await pair(t);
  let uncorked = 0;
  for (const frame of ['a', 'b', 'c']) {
    corkForTick(socket, () => uncorked++);
    socket.write(frame);
  }
  t.equal(socket.writableCorked, 1, 'corked once, however many frames');
  await until('the peer read the first tick', () => received() === 'abc');
  t.same(calls, [3], 'the three frames left in one write');
  t.equal(socket.writableCorked, 0, 'uncorked after the tick');
  t.equal(uncorked, 1, 'its owner was told once');

  corkForTick(socket, () => uncorked++);
  socket.write('d');
  corkForTick(socket, () => uncorked++);
  socket.write('e');
  await until('the peer read the second tick', () => received() === 'abcde');
  t.same(calls, [3, 2], 'the next tick is one write of its own');
  t.equal(uncorked, 2);
});

t.test('a write without corkForTick is not held back; a destroyed socket is left alone', async (t) => {
  const { socket, calls, received } = await pair(t);
  socket.write('x');
  await until('the peer read it', () => received() === 'x');
  t.same(calls, [1]);
  socket.destroy();
  corkForTick(socket, () => t.fail('a destroyed socket is not corked'));
  t.equal(socket.writableCorked, 0, 'not corked');
});

t.test('an owner that throws after its uncork leaves no other socket corked', async (t) => {
  const first = await pair(t);
  const second = await pair(t);
  corkForTick(first.socket, () => {
    throw new Error('an owner failed');
  });
  first.socket.write('1');
  corkForTick(second.socket, () => {});
  second.socket.write('2');
  await until('both written', () => first.received() === '1' && second.received() === '2');
  t.equal(second.socket.writableCorked, 0, 'the socket after it was uncorked too');
});
