/**
 * The benchmark at smoke sizes (npm run bench -- --smoke), so it never rots:
 * every scenario runs on every system (realtimed in each delivery mode where
 * the mode matters), and realtimed loses nothing. No
 * speed is asserted here: speed targets are the benchmark's, with figures.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import t from 'tap';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
t.setTimeout(480_000); // about a minute alone (both benches); longer beside the other files on 2 cores

t.test('npm run bench -- --smoke: every scenario, every system, nothing lost', async (t) => {
  const run = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['bench/run.mjs', '--smoke', '--no-docs'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
  t.equal(run.code, 0, run.err.slice(-2000));
  const line = run.out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  t.ok(line, 'the run reports JSON');
  const json = JSON.parse(line?.slice('BENCH_JSON '.length) ?? '{}') as {
    results: { scenario: string; name: string; systems: Record<string, { error?: string; lost?: number }> }[];
  };
  t.same(
    [...new Set(json.results.map((r) => r.scenario))],
    ['path', 'fanout', 'spread', 'storm', 'subscribes', 'idle', 'publish', 'webhooks'],
    'every scenario ran',
  );
  for (const row of json.results) {
    const systems = Object.keys(row.systems);
    // Smoke sizes compare the delivery modes on the publish path only (test/e2e/delivery.test.ts covers the rest).
    const want = row.scenario === 'path' ? ['plain', 'limit', 'realtimed', 'realtimed-poll'] : ['limit', 'baseline', 'realtimed'];
    t.same(systems.filter((s) => s !== 'realtimed-wal'), want, `${row.name}: ${want.join(', ')} (and realtimed-wal on a logical server)`);
    for (const [system, result] of Object.entries(row.systems)) t.notOk(result.error, `${row.name}: ${system} ran`);
    for (const system of systems.filter((s) => s.startsWith('realtimed'))) t.equal(row.systems[system]?.lost, 0, `${row.name}: ${system} lost nothing`);
  }
  t.match(run.out, '| target | figure | holds |', 'the table of targets is printed');
});

t.test('npm run bench:changes -- --smoke: the row check, end to end and a burst, nothing lost', async (t) => {
  const run = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['bench/changes.mjs', '--smoke'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
  t.equal(run.code, 0, `exit 0: every event delivered (${run.err.slice(-1500)})`);
  for (const part of ['A. realtime.change_audience', 'B. INSERT → event', 'C. one UPDATE of']) t.match(run.out, part, `prints ${part}`);
  t.match(run.out, /\| private \(row check\) \| (\d+)\/\1 \|/, 'the private stream delivered everything it should');
});
