import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

import WebSocket from 'ws';

import type { Teardown } from './db.js';

export type Frame = Record<string, unknown> & { type: string };

/** A real `ws` client that records every frame and how the socket closed. */
export class TestClient {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];
  private refs = 0;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()) as Frame);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        for (const wake of this.waiters.splice(0)) wake();
      });
    });
    ws.on('error', () => {});
  }

  static async connect(
    t: Teardown,
    url: string,
    options: { token?: string; headers?: Record<string, string>; query?: string } = {},
  ): Promise<TestClient> {
    const target = new URL(url);
    if (options.token !== undefined) target.searchParams.set('token', options.token);
    const ws = new WebSocket(target, { headers: options.headers ?? {} });
    const client = new TestClient(ws);
    t.teardown(() => client.ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
    return client;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Sends a frame with a fresh ref and waits for the reply carrying it. */
  async request(frame: Record<string, unknown>, timeoutMs = 3000): Promise<Frame> {
    const ref = `r${++this.refs}`;
    this.send({ ...frame, ref });
    return this.next((f) => f['ref'] === ref, timeoutMs);
  }

  /** The first frame matching `match` (taken out of `frames`), waiting if needed. */
  async next(match: (frame: Frame) => boolean = () => true, timeoutMs = 3000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.frames.findIndex(match);
      if (index >= 0) return this.frames.splice(index, 1)[0] as Frame;
      const left = deadline - Date.now();
      if (left <= 0 || this.ws.readyState === WebSocket.CLOSED) {
        throw new Error(`no matching frame within ${timeoutMs} ms; have ${JSON.stringify(this.frames).slice(0, 500)}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  events(): Frame[] {
    return this.frames.filter((f) => f.type === 'event');
  }

  subscribe(channel: string): Promise<Frame> {
    return this.request({ type: 'subscribe', channel });
  }

  /**
   * The position a replay may start from, as a client keeps it: subscribe,
   * take seq, epoch and cursor from "subscribed", and unsubscribe again.
   */
  async position(channel: string): Promise<{ since: number; epoch: string; cursor: string }> {
    const reply = await this.subscribe(channel);
    await this.request({ type: 'unsubscribe', channel });
    return { since: reply['seq'] as number, epoch: reply['epoch'] as string, cursor: reply['cursor'] as string };
  }
}

/** A WebSocket that completes the handshake, then never reads another byte. */
export async function deafSocket(t: { teardown(fn: () => unknown): void }, wsUrl: string): Promise<{ socket: Socket; send(text: string): void }> {
  const url = new URL(wsUrl);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  t.teardown(() => socket.destroy());
  const key = randomBytes(16).toString('base64');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () =>
      socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`),
    );
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause(); // from here on, nothing is read
      if (head.startsWith('HTTP/1.1 101')) resolve();
      else reject(new Error(head.split('\r\n')[0]));
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  const send = (text: string): void => {
    const payload = Buffer.from(text);
    const mask = randomBytes(4);
    const length = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 255]);
    const masked = Buffer.from(payload.map((b, i) => b ^ (mask[i % 4] as number)));
    socket.write(Buffer.concat([Buffer.from([0x81]), length, mask, masked]));
  };
  return { socket, send };
}

