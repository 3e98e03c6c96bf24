/**
 * realtimed/client for browsers: it bundles for the browser platform with no
 * Node-only import, its minified size is reported, and its typed API compiles
 * in an application under tsc --strict.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import t from 'tap';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

t.test('bundles for browsers without Node-only imports; minified size', async (t) => {
  const result = await build({
    entryPoints: [`${ROOT}src/client/index.ts`],
    bundle: true,
    minify: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
  });
  const code = result.outputFiles[0]?.text ?? '';
  t.notMatch(code, /["']node:/, 'no node: imports');
  t.notMatch(code, /require\(/, 'no require()');
  const { gzipSync } = await import('node:zlib');
  const bytes = Buffer.byteLength(code);
  const gzipped = gzipSync(code).length;
  t.comment(`realtimed/client: ${bytes} bytes minified, ${gzipped} bytes gzipped`);
  t.ok(bytes < 12 * 1024, `under 12 KiB minified (${bytes} bytes)`);
});

t.test('realtimed/react bundles for browsers; its own size, react and the query libraries left out', async (t) => {
  for (const entry of ['index', 'query', 'swr']) {
    const result = await build({
      entryPoints: [`${ROOT}src/react/${entry}.ts`],
      bundle: true,
      minify: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
      // Peer dependencies: the application's own copies.
      external: ['react', '@tanstack/react-query', 'swr'],
    });
    const code = result.outputFiles[0]?.text ?? '';
    t.notMatch(code, /["']node:/, `${entry}: no node: imports`);
    t.notMatch(code, /\b(window|document)\b/, `${entry}: no browser global at import (server rendering)`);
    const { gzipSync } = await import('node:zlib');
    t.comment(`realtimed/react${entry === "index" ? "" : `/${entry}`} (bundled alone, peers left out): ${Buffer.byteLength(code)} bytes minified, ${gzipSync(code).length} gzipped`);
  }
  // Importable where there is no DOM (server rendering): nothing runs a socket at import.
  const mod = await import('../../src/react/index.js');
  t.type(mod.RealtimeProvider, 'function');
});

t.test('an application using the typed API compiles under tsc --strict', async (t) => {
  const tsc = `${ROOT}node_modules/.bin/tsc`;
  const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(tsc, ['-p', `${ROOT}test/fixtures/consumer/tsconfig.json`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve({ code, out }));
  });
  t.equal(result.code, 0, result.out || 'tsc --strict: no errors');
});
