/**
 * `realtimed start --workers N`: one Node process runs on one core, so N
 * processes share the port through node:cluster (the primary accepts and hands
 * connections round-robin). Each worker is a whole daemon: its own pool, its
 * own LISTEN connection and hub. That is safe because everything shared lives
 * in PostgreSQL: every worker reads each committed message, webhook claims are
 * SKIP LOCKED, statistics are added (+=), never overwritten.
 *
 * The primary only supervises: it forwards SIGTERM/SIGINT, restarts a worker
 * that dies (at most once a second) for as long as it runs, and exits when
 * all have stopped after a signal.
 */
import cluster from 'node:cluster';

export interface Supervisor {
  /** Resolves with the exit code once every worker has stopped. */
  done: Promise<number>;
}

export function superviseWorkers(count: number, log: (line: string) => void, stopSignal: () => Promise<string>): Supervisor {
  let stopping = false;
  let lastRestart = 0;
  let code = 0;
  let alive = 0;
  const fork = (): void => {
    alive++;
    cluster.fork();
  };
  for (let i = 0; i < count; i++) fork();

  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    finish = resolve;
    cluster.on('exit', (worker, exitCode, signal) => {
      alive--;
      if (stopping) {
        if (exitCode !== 0) code = 1;
        if (alive === 0) resolve(code);
        return;
      }
      log(`worker ${worker.process.pid} exited (${signal ?? exitCode}); starting another`);
      const wait = Math.max(0, lastRestart + 1000 - Date.now());
      lastRestart = Date.now() + wait;
      // Not unref'd: with every worker dead this timer is what keeps the
      // primary running until it has started another.
      setTimeout(() => {
        if (!stopping) fork();
      }, wait);
    });
  });

  void stopSignal().then((signal) => {
    stopping = true;
    if (alive === 0) finish(code); // every worker had died, a restart was pending
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal === 'SIGINT' ? 'SIGINT' : 'SIGTERM');
  });
  return { done };
}
