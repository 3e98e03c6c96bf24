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
  for (const [socket, uncorked] of sockets) {
    socket.uncork();
    uncorked();
  }
}

/**
 * Corks `socket` until the end of this tick, unless this tick corked it
 * already; `uncorked` runs after. Whoever corks again in the tick (to write
 * out early) keeps the count balanced: this uncorks once.
 */
export function corkForTick(socket: Duplex, uncorked: () => void): void {
  if (corked.has(socket) || socket.destroyed) return;
  socket.cork();
  corked.set(socket, uncorked);
  if (!scheduled) {
    scheduled = true;
    process.nextTick(uncorkAll);
  }
}
