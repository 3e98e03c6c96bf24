/**
 * A subscribe with `since`: what is replayed, or why nothing can be
 * (REPLAY_UNAVAILABLE, and the client resyncs). Replayed events pass the
 * same checks as live ones: the row check of change events, then the filter.
 *
 * Bounded by what will be sent: the rows past `since` are counted first (one
 * index-only range of at most --max-replay + 1 entries), and a replay over
 * the limit reads no frame. Frames are read a page at a time, each page at
 * most REPLAY_PAGE_BYTES (after the first row), and the next page waits
 * until the socket has read most of the last one.
 */
import type { Db } from '../../db/index.js';
import type { Identity } from '../../db/identity.js';
import type { RelayFrame, StreamInfo } from '../../db/messages.js';
import { matches, recordOf, type Filter } from '../../protocol/filter.js';

/** Rows in the first page; later pages shrink to stay near REPLAY_PAGE_BYTES. */
const REPLAY_PAGE_ROWS = 100;
const REPLAY_PAGE_BYTES = 256 * 1024;

type ReplayDb = Pick<Db, 'replayCount' | 'replayRelayFrames' | 'changeAudience'>;

/** Why `since` cannot be replayed (the REPLAY_UNAVAILABLE message), or null when it can. */
export async function replayUnavailable(
  deps: { db: ReplayDb; maxReplay: number },
  channel: string,
  request: { since: number; epoch: string | undefined },
  stream: StreamInfo,
): Promise<string | null> {
  const { since, epoch } = request;
  if (epoch !== undefined && epoch !== stream.epoch) return 'the message stream was reset (another epoch): resync';
  if (since > stream.maxSeq) return 'that seq is ahead of this stream: resync';
  if (since < stream.prunedThroughSeq) return 'messages after that seq were pruned: resync';
  const max = deps.maxReplay;
  if ((await deps.db.replayCount(channel, since, max + 1)) > max) return `more than ${max} messages to replay: resync`;
  return null;
}

/**
 * Sends the messages from range.since (exclusive) to range.through (the
 * stream position read at subscribe) that this identity may see, page by page,
 * through `write`; `drained` resolves false when the socket is gone or too
 * slow (the replay stops). Returns the ids it sent.
 */
export async function replay(
  deps: { db: ReplayDb },
  identity: Identity,
  channel: string,
  filter: Filter | undefined,
  range: { since: number; through: number },
  socket: { write(frame: Buffer): boolean; drained(): Promise<boolean> },
): Promise<Set<string>> {
  const sent = new Set<string>();
  let after = range.since;
  let rows = REPLAY_PAGE_ROWS;
  for (;;) {
    const page = await deps.db.replayRelayFrames(channel, after, rows);
    let bytes = 0;
    for (const row of await visible(deps.db, identity, filter, page)) {
      if (!socket.write(Buffer.from(row.frame))) return sent;
      sent.add(row.id);
    }
    for (const row of page) bytes += row.frame.length;
    const last = page[page.length - 1];
    if (last === undefined || page.length < rows) return sent;
    after = Number(last.seq);
    // Past the stream position the subscribe read, live events (held meanwhile) take over.
    if (after >= range.through) return sent;
    rows = Math.max(1, Math.min(REPLAY_PAGE_ROWS, Math.floor((page.length * REPLAY_PAGE_BYTES) / Math.max(bytes, 1))));
    if (!(await socket.drained())) return sent;
  }
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
    allowed = await db.changeAudience(checked, [identity]);
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
