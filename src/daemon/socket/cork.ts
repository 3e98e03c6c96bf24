/**
 * Frames written to one socket within a tick leave in one write: the first
 * write of a tick corks the socket, and one shared process.nextTick uncorks
 * every socket corked in it, then tells its owner (which then checks what the
 * peer has left unread). A relay batch that carries several events to a
 * socket costs it one writev instead of one per frame.
 */
import type { Duplex } from 'node:stream';

/** Sockets corked in this tick, with what to call once each is uncorked. */
const corked = new Map<Duplex, () => void>();
let scheduled = false;

function uncorkAll(): void {
  scheduled = false;
  const sockets = [...corked];
  corked.clear();
  // Every socket is uncorked whatever happens to another: a cork left behind
  // would hold that socket's frames until it is closed. Owners handle (and
  // log) their own errors in `uncorked`; nothing may escape a bare nextTick.
  for (const [socket, uncorked] of sockets) {
    try {
      socket.uncork();
    } catch {
      // a socket torn down meanwhile: nothing to write
    }
    try {
      uncorked();
    } catch {
      // see above
    }
  }
}

/**
 * Corks `socket` until the end of this tick, unless this tick corked it
 * already; `uncorked` runs after. Whoever corks again in the tick (to write
 * out early) keeps the count balanced: this uncorks once. False when the
 * socket is not corked for this tick (it is destroyed): a write goes out as is.
 */
export function corkForTick(socket: Duplex, uncorked: () => void): boolean {
  if (corked.has(socket)) return true;
  if (socket.destroyed) return false;
  socket.cork();
  corked.set(socket, uncorked);
  if (!scheduled) {
    scheduled = true;
    process.nextTick(uncorkAll);
  }
  return true;
}
