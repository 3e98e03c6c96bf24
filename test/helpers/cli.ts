import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { main } from '../../src/cli/index.js';

export const BIN = fileURLToPath(new URL('../../bin/realtimed.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI in this process (fast; same code path as the binary after argv). */
export async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await main(['node', 'realtimed', ...args], {
    out: (text) => (stdout += text),
    err: (text) => (stderr += text),
    env,
  });
  return { code, stdout, stderr };
}

/** The built binary in a child process, as a user runs it (needs `npm run build`). */
export function runBin(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env['PATH'] ?? '', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}
