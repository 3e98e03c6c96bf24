import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';

import type { Teardown } from './db.js';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  /** Never answer (to test timeouts). */
  hang?: boolean;
}

/** A real HTTP webhook receiver on 127.0.0.1 that records every request. */
export class Receiver {
  readonly received: Received[] = [];
  private server: Server | null = null;
  private waiters: (() => void)[] = [];

  constructor(private reply: (request: Received, index: number) => Reply = () => ({ status: 200 })) {}

  static async start(t: Teardown, reply?: (request: Received, index: number) => Reply, port = 0): Promise<Receiver> {
    const receiver = new Receiver(reply);
    await receiver.listen(port);
    t.teardown(() => receiver.close());
    return receiver;
  }

  async listen(port = 0): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const request = { headers: req.headers, body: Buffer.concat(chunks).toString(), at: Date.now() };
        this.received.push(request);
        for (const wake of this.waiters.splice(0)) wake();
        const reply = this.reply(request, this.received.length - 1);
        if (reply.hang) return;
        res.writeHead(reply.status, reply.headers ?? {});
        res.end();
      });
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  }

  get port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async waitFor(count: number, timeoutMs = 10_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`received ${this.received.length} of ${count} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
