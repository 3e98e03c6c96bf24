#!/usr/bin/env node
// The CLI lives in src/cli/ (built to dist/ by `npm run build`, run on `npm ci`).
import { main } from '../dist/cli/index.js';

process.exitCode = await main(process.argv);
