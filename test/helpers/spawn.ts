/** realtimed as operators run it: `realtimed start` in a child process, so a crash or an unhandled rejection ends it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { BIN } from './cli.js';
import type { Teardown } from './db.js';
import { SECRET } from './jwt.js';

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
