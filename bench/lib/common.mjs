// What every benchmark script shares: its own throwaway database and login
// role on DATABASE_URL's server, progress lines on stderr, and medians.
import { randomBytes } from 'node:crypto';

export const SERVER = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Names for a run's database and daemon role, and a URL to it (as `user` when given). */
export function benchDatabase(prefix) {
  const id = randomBytes(3).toString('hex');
  const DB = `${prefix}_${id}`;
  const ROLE = `${prefix}_${id}_daemon`;
  const dbUrl = (user) => {
    const u = new URL(SERVER);
    u.pathname = `/${DB}`;
    if (user) {
      u.username = user;
      u.password = '';
    }
    return u.toString();
  };
  return { DB, ROLE, SECRET: randomBytes(32).toString('hex'), dbUrl };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const T0 = Date.now();
export const log = (line) => process.stderr.write(`bench: [${((Date.now() - T0) / 1000).toFixed(1)} s] ${line}\n`);

/** The p-quantile (0..1) of values; null when there are none. */
export function quantile(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}
export const median = (values) => quantile(values, 0.5);

/** The port a spawned server logs as `"port":N` on stdout (realtimed's start line); rejects if it exits first. */
export function listeningPort(child, name) {
  const port = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
      if (out.length > 100_000) out = out.slice(-10_000);
    });
    child.once('exit', (code) => reject(new Error(`${name} exited ${code}`)));
  });
  return port.finally(() => child.stdout.resume());
}
