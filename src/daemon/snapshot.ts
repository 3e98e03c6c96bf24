/**
 * pg_snapshot as the relay compares it: `xmin:xmax:xip,...` (xid8 values).
 * A transaction is visible in a snapshot (it had committed, or aborted, when
 * the snapshot was taken) when its id is below xmin, or below xmax and not
 * among those in progress: pg_visible_in_snapshot(), without a round trip.
 */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: Set<bigint>;
}

const SNAPSHOT = /^(\d+):(\d+):((?:\d+(?:,\d+)*)?)$/;

/** Reads pg_snapshot's text; null for anything else. */
export function parseSnapshot(text: string): Snapshot | null {
  const m = SNAPSHOT.exec(text);
  if (!m) return null;
  const xip = new Set<bigint>();
  if (m[3]) for (const x of m[3].split(',')) xip.add(BigInt(x));
  return { xmin: BigInt(m[1] ?? '0'), xmax: BigInt(m[2] ?? '0'), xip };
}

export function visibleIn(xid: bigint, snapshot: Snapshot): boolean {
  return xid < snapshot.xmin || (xid < snapshot.xmax && !snapshot.xip.has(xid));
}
