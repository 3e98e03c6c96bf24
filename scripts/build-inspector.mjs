#!/usr/bin/env node
// Bundles the inspector page (src/inspector/) into dist/inspector/: app.js,
// which includes realtimed/client, and index.html. Part of `npm run build`.
import { copyFile, mkdir } from 'node:fs/promises';

import { build } from 'esbuild';

await mkdir('dist/inspector', { recursive: true });
await build({
  entryPoints: ['src/inspector/app.ts'],
  outfile: 'dist/inspector/app.js',
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  logLevel: 'warning',
});
await copyFile('src/inspector/index.html', 'dist/inspector/index.html');
