/**
 * One table of wire errors (protocol/errors.ts): every code has an HTTP
 * status, the codes that end a connection have a close code, and the docs
 * list each one. The client's ErrorCode is the table's codes plus its own
 * (checked by the compiler: test/fixtures/consumer, test/client/bundle.test.ts).
 */
import { readFile } from 'node:fs/promises';

import t from 'tap';

import type { ErrorCode } from '../../src/client/index.js';
import { CloseCode, WIRE_ERRORS, type WireErrorCode } from '../../src/protocol/errors.js';

const doc = (name: string): Promise<string> => readFile(new URL(`../../docs/${name}`, import.meta.url), 'utf8');

t.test('every code has a status; closing codes have a close code in the 4000 range', async (t) => {
  for (const [code, info] of Object.entries(WIRE_ERRORS) as [WireErrorCode, { status: number; close?: number }][]) {
    t.ok(info.status >= 400 && info.status < 600, `${code}: HTTP ${info.status}`);
    if (info.close !== undefined) t.ok(info.close >= 4000 && info.close < 5000, `${code}: close ${info.close}`);
  }
  t.equal(CloseCode.UNAUTHORIZED, 4003);
  t.equal(CloseCode.TOKEN_EXPIRED, 4001);
  t.equal(CloseCode.TOO_MANY_CONNECTIONS, 4029);
  t.equal(CloseCode.SLOW_CONSUMER, 4008);
});

t.test('docs/errors.md has the same table; docs/protocol.md names every close code', async (t) => {
  const errors = await doc('errors.md');
  const rows = new Map(
    [...errors.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \| (\d{4}|) \|/gm)].map((m) => [m[1], { status: Number(m[2]), close: m[3] === '' ? undefined : Number(m[3]) }]),
  );
  t.same([...rows.keys()].sort(), Object.keys(WIRE_ERRORS).sort(), 'one row per code');
  for (const [code, info] of Object.entries(WIRE_ERRORS) as [WireErrorCode, { status: number; close?: number }][]) {
    t.same(rows.get(code), { status: info.status, close: info.close }, `${code}: status and close code as in the table`);
  }
  const protocol = await doc('protocol.md');
  for (const close of Object.values(CloseCode)) t.ok(protocol.includes(String(close)), `docs/protocol.md names close code ${close}`);
});

t.test("the client's ErrorCode covers the table", async (t) => {
  const codes: ErrorCode[] = Object.keys(WIRE_ERRORS) as WireErrorCode[];
  t.ok(codes.length > 0);
});
