/**
 * No request stops the process. realtimed runs as operators run it (a child
 * process, so a throw that escaped a handler would end it), and raw requests
 * with hostile request lines, headers and paths go to the HTTP and the upgrade
 * path alike. After each one the process is alive and /health answers 200.
 * Bounded: a fixed list plus 200 seeded random combinations, on 127.0.0.1.
 */
import { connect } from 'node:net';

import t from 'tap';

import { createDatabase, createLoginRole, urlFor } from '../helpers/db.js';
import { spawnDaemon } from '../helpers/spawn.js';

const TARGETS = [
  '/', '//', '///', '//x', '//api/stats', '//127.0.0.1:1/', '/api//stats', '/api/stats', '/api/channels/%',
  '/api/channels/%E0%A4%A/messages', '/api/channels/x/messages?since=-1&limit=1e400', '/api/channels/x/presence/y',
  '/api/broadcast?x=%', '*', 'http://x/health', 'http://[', 'HTTP://localhost:1/', 'ws://x/', '/?token=%',
  '/?token=' + 'a'.repeat(5000), '/' + 'a'.repeat(7000), '/\u00ff', '/inspector/../../etc/passwd', '..', '/%00',
  '/api/%2e%2e/health', '/health?', '/health#x', '/metrics/', '/\\\\x', 'x', '',
];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'CONNECT', 'BREW', 'G ET'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', '', 'HTTP/1.1 x'];
const UPGRADE = [
  'Connection: Upgrade',
  'Upgrade: websocket',
  'Sec-WebSocket-Version: 13',
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
];
const EXTRA_HEADERS = [
  'Authorization: Bearer',
  'Authorization: Bearer a.b.c',
  'Authorization: Basic eDp5',
  'Authorization: Bearer ' + 'x'.repeat(9000),
  'Origin: null',
  'Origin: http://[',
  'Sec-WebSocket-Key: short',
  'Sec-WebSocket-Version: 99',
  'Sec-WebSocket-Protocol: a,,b',
  'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99',
  'Content-Length: 5',
  'Content-Length: -1',
  'Transfer-Encoding: chunked',
  'Host: a',
  'NoColonHere',
  'X-Long: ' + 'y'.repeat(12_000),
  'Upgrade: h2c',
  'Connection: keep-alive, Upgrade',
];

/** A small seeded generator, so a failure names the request that caused it. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes raw bytes; resolves once the server answered or closed (bounded by a timeout). */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, 3000);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) done();
    });
    socket.on('close', done);
    socket.on('error', done);
    socket.write(text, 'latin1');
  });
}

function request(method: string, target: string, version: string, headers: string[], body = ''): string {
  const line = [method, target, version].filter((p) => p !== '').join(' ');
  return `${line}\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n${body}`;
}

t.test('hostile request lines, headers and paths on the HTTP and upgrade paths: the process lives, /health is 200', async (t) => {
  const db = await createDatabase(t);
  const role = await createLoginRole(t, ['anon', 'authenticated', 'service_role']);
  const daemon = await spawnDaemon(t, urlFor(db.name, undefined, role), { args: ['--inspector'] });

  const cases: { name: string; text: string }[] = [];
  for (const target of TARGETS) {
    cases.push({ name: `GET ${target.slice(0, 40)}`, text: request('GET', target, 'HTTP/1.1', []) });
    cases.push({ name: `upgrade ${target.slice(0, 40)}`, text: request('GET', target, 'HTTP/1.1', UPGRADE) });
  }
  const seed = 20261202;
  const next = random(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(next() * items.length)] as T;
  for (let i = 0; i < 200; i++) {
    const headers = [...(next() < 0.6 ? UPGRADE : [])];
    for (let h = Math.floor(next() * 3); h > 0; h--) headers.push(pick(EXTRA_HEADERS));
    const body = next() < 0.2 ? '{"channel":' : '';
    cases.push({
      name: `random #${i} (seed ${seed})`,
      text: request(pick(METHODS), pick(TARGETS), pick(VERSIONS), headers, body),
    });
  }

  const failures: string[] = [];
  let upgradeSlashes = '';
  for (const c of cases) {
    const reply = await raw(daemon.port, c.text);
    if (c.name === 'upgrade //') upgradeSlashes = reply.split('\r\n')[0] ?? '';
    const alive = daemon.child.exitCode === null && daemon.child.signalCode === null;
    const health = alive ? await fetch(`${daemon.httpUrl}/health`).then((r) => r.status, () => 0) : 0;
    if (!alive || health !== 200) {
      failures.push(`${c.name}: alive=${alive} health=${health}`);
      break;
    }
  }
  t.same(failures, [], `the process lived and /health was 200 after each of ${cases.length} requests`);
  t.match(upgradeSlashes, /^HTTP\/1\.1 400 /, 'an upgrade to "//" is refused with 400');
  t.notMatch(daemon.output(), /"level":60/, 'nothing fatal was logged');
});
