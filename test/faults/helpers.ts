/**
 * For the fault suite (npm run test:faults): realtimed as a child process, as
 * operators run it, and the figures each case reports for docs/RELIABILITY.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';

import { BIN } from '../helpers/cli.js';
import type { Teardown } from '../helpers/db.js';
import { SECRET } from '../helpers/jwt.js';

export const settle = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await settle(50);
  }
}

/** One line of docs/RELIABILITY.md: the case, what was measured, whether it held. */
export function record(name: string, figure: string, ok: boolean): void {
  const file = process.env['FAULTS_RESULTS'];
  if (file) appendFileSync(file, `${JSON.stringify({ name, figure, ok })}\n`);
}

export interface Daemon {
  child: ChildProcess;
  port: number;
  wsUrl: string;
  httpUrl: string;
  /** Everything it wrote so far (JSON log lines, and stderr). */
  output(): string;
  exited: Promise<number | null>;
  /** Current resident memory, bytes. */
  rss(): number;
}

/** `realtimed start` in a child process; resolves once it listens. */
export async function spawnDaemon(
  t: Teardown,
  databaseUrl: string,
  options: { port?: number; args?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<Daemon> {
  const child = spawn(
    process.execPath,
    [BIN, 'start', '--port', String(options.port ?? 0), '--log-level', 'info', ...(options.args ?? [])],
    {
      env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: databaseUrl, REALTIMED_JWT_SECRET: SECRET, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"msg":"realtimed listening".*?"port":(\d+)|"port":(\d+).*?"msg":"realtimed listening"/.exec(out);
      if (m) resolve(Number(m[1] ?? m[2]));
    });
    void exited.then((code) => reject(new Error(`realtimed exited ${code}: ${out.slice(-2000)}`)));
  });
  return {
    child,
    port,
    wsUrl: `ws://127.0.0.1:${port}/`,
    httpUrl: `http://127.0.0.1:${port}`,
    output: () => out,
    exited,
    rss: () => {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    },
  };
}

/** A value from GET /metrics (first sample of that name), or 0. */
export async function metric(httpUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}
