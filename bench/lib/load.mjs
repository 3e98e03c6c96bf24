// A load client, forked by bench/run.mjs: opens sockets to one server, each
// subscribed to its channels, and counts what arrives. Every 16th frame of a
// socket is sampled for latency: now - the publisher's "t" in the payload
// (found by indexOf, not JSON.parse, so the load client stays cheap).
// Commands arrive over IPC: connect, publish (max-rate acked publishes), report, close.
import WebSocket from 'ws';

const sockets = [];
let frames = 0;
let closedEarly = 0;
const closeCodes = {};
const latencies = [];
const subscribeMs = [];
const ackMs = [];
let acks = 0;
let publishErrors = 0;
const T = Buffer.from('"t":');

function sample(data) {
  const at = data.indexOf(T);
  if (at < 0) return;
  let t = 0;
  let i = at + 4;
  while (data[i] === 32) i++; // jsonb text puts a space after the colon
  for (; i < data.length; i++) {
    const c = data[i];
    if (c < 48 || c > 57) break;
    t = t * 10 + (c - 48);
  }
  latencies.push(Date.now() - t);
}

function open(url, channels, protocol) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const state = { ws, pending: new Map(), refs: 0, open: false };
    sockets.push(state);
    ws.on('error', () => {});
    ws.on('close', (code) => {
      if (state.open && !closing) {
        closedEarly++;
        closeCodes[code] = (closeCodes[code] ?? 0) + 1;
      }
      resolve(false);
    });
    ws.on('message', (data) => {
      // Every system's events start with {"type":"event" (byte 9 'e', 10 'v'); anything else is a reply.
      if (!(data[9] === 101 && data[10] === 118)) {
        const text = data.toString();
        const ref = /"ref":"([^"]+)"/.exec(text)?.[1];
        const waiter = ref && state.pending.get(ref);
        if (waiter) {
          state.pending.delete(ref);
          waiter(text);
          return;
        }
      }
      if ((++frames & 15) === 0) sample(data);
    });
    ws.on('open', async () => {
      state.open = true;
      for (const channel of channels) {
        if (protocol === 'none') continue;
        const started = performance.now();
        const reply = await request(state, { type: 'subscribe', channel });
        if (!reply.includes('"subscribed"')) {
          process.send?.({ error: `subscribe ${channel}: ${reply.slice(0, 200)}` });
          return resolve(false);
        }
        subscribeMs.push(performance.now() - started);
      }
      resolve(true);
    });
  });
}

function request(state, frame) {
  const ref = `r${++state.refs}`;
  return new Promise((resolve) => {
    state.pending.set(ref, resolve);
    state.ws.send(JSON.stringify({ ...frame, ref }));
  });
}

let closing = false;

process.on('message', async (msg) => {
  if (msg.cmd === 'connect') {
    // { url, plan: [[channel, ...] per socket], protocol, concurrency }
    let ok = 0;
    const started = performance.now();
    const queue = msg.plan.map((channels, i) => ({ channels, i }));
    const workers = Array.from({ length: msg.concurrency ?? 50 }, async () => {
      while (queue.length > 0) {
        const job = queue.shift();
        if (await open(msg.url, job.channels, msg.protocol)) ok++;
      }
    });
    await Promise.all(workers);
    process.send?.({ connected: ok, seconds: (performance.now() - started) / 1000 });
  } else if (msg.cmd === 'subscribe') {
    // Sockets already open subscribe to their channels one after another: RLS checks/s.
    const started = performance.now();
    await Promise.all(
      sockets.map(async (state, i) => {
        for (const channel of msg.plan[i] ?? []) {
          const t0 = performance.now();
          const reply = await request(state, { type: 'subscribe', channel });
          if (reply.includes('"subscribed"')) subscribeMs.push(performance.now() - t0);
        }
      }),
    );
    process.send?.({ subscribed: true, seconds: (performance.now() - started) / 1000 });
  } else if (msg.cmd === 'reset') {
    frames = 0;
    latencies.length = 0;
    process.send?.({ reset: true });
  } else if (msg.cmd === 'publish') {
    // Every socket publishes to its first channel, one at a time, until the deadline.
    const deadline = Date.now() + msg.seconds * 1000;
    await Promise.all(
      sockets.map(async (state, i) => {
        const channel = msg.plan[i]?.[0];
        while (Date.now() < deadline && state.ws.readyState === WebSocket.OPEN) {
          const started = performance.now();
          const reply = await request(state, { type: 'publish', channel, event: 'bench', payload: { t: Date.now() } });
          if (reply.includes('"published"')) {
            acks++;
            ackMs.push(performance.now() - started);
          } else publishErrors++;
        }
      }),
    );
    process.send?.({ published: true });
  } else if (msg.cmd === 'report') {
    process.send?.({ report: { frames, latencies, subscribeMs, ackMs, acks, publishErrors, closedEarly, closeCodes, open: sockets.filter((s) => s.ws.readyState === WebSocket.OPEN).length } });
  } else if (msg.cmd === 'close') {
    closing = true;
    for (const s of sockets) s.ws.terminate();
    process.send?.({ closed: true }, () => process.exit(0));
  }
});
process.send?.({ ready: true });
