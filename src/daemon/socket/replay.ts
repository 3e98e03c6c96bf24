/**
 * A subscribe with `since`: what is replayed, or why nothing can be
 * (REPLAY_UNAVAILABLE, and the client resyncs). Replayed events pass the
 * same checks as live ones: the row check of change events, then the filter.
 */
import type { Db } from '../../db/index.js';
import type { Identity } from '../../db/identity.js';
import type { RelayFrame, StreamInfo } from '../../db/messages.js';
import { matches, recordOf, type Filter } from '../../protocol/filter.js';

export interface Replay {
  frames: RelayFrame[];
  /** Why nothing was replayed, for the REPLAY_UNAVAILABLE frame; null when replayed. */
  unavailable: string | null;
}

export async function readReplay(
  deps: { db: Pick<Db, 'replayRelayFrames' | 'changeAudience'>; maxReplay: number },
  identity: Identity,
  channel: string,
  filter: Filter | undefined,
  request: { since: number; epoch: string | undefined },
  stream: StreamInfo,
): Promise<Replay> {
  const { since, epoch } = request;
  if (epoch !== undefined && epoch !== stream.epoch) {
    return { frames: [], unavailable: 'the message stream was reset (another epoch): resync' };
  }
  if (since > stream.maxSeq) return { frames: [], unavailable: 'that seq is ahead of this stream: resync' };
  if (since < stream.prunedThroughSeq) return { frames: [], unavailable: 'messages after that seq were pruned: resync' };
  const max = deps.maxReplay;
  const rows = await deps.db.replayRelayFrames(channel, since, max + 1);
  if (rows.length > max) return { frames: [], unavailable: `more than ${max} messages to replay: resync` };
  return { frames: await visible(deps.db, identity, filter, rows), unavailable: null };
}

/** Replayed events this identity may see: the row check for change events, then its filter. */
async function visible(
  db: Pick<Db, 'changeAudience'>,
  identity: Identity,
  filter: Filter | undefined,
  rows: RelayFrame[],
): Promise<RelayFrame[]> {
  const checked = rows.filter((r) => r.rowCheck);
  let allowed = new Map<string, Set<number>>();
  if (checked.length > 0) {
    allowed = await db.changeAudience(checked.map((r) => r.id), [identity]);
  }
  return rows.filter((r) => {
    if (r.rowCheck && !allowed.get(r.id)?.has(0)) return false;
    if (!filter) return true;
    try {
      return matches(filter, recordOf((JSON.parse(r.frame) as { payload?: unknown }).payload));
    } catch {
      return false;
    }
  });
}
