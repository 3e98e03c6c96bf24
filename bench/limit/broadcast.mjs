// The machine's floor for fan-out: a bare ws server that knows its
// subscribers and, told over IPC, sends prebuilt event frames at a rate, the
// same buffer to every subscriber of a channel. No database, no checks.
// Publishes are acked at once (the floor for client publish).
import { WebSocketServer } from 'ws';

const channels = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const msg = JSON.parse(data);
    if (msg.type === 'subscribe') {
      if (!channels.has(msg.channel)) channels.set(msg.channel, new Set());
      channels.get(msg.channel).add(ws);
      ws.send(JSON.stringify({ type: 'subscribed', channel: msg.channel, ref: msg.ref }));
    } else if (msg.type === 'publish') {
      ws.send(JSON.stringify({ type: 'published', channel: msg.channel, ref: msg.ref }));
    }
  });
  ws.on('close', () => {
    for (const set of channels.values()) set.delete(ws);
  });
});

// { cmd: 'run', channels: [...], rate, seconds }: rate messages/s round-robin over channels.
process.on('message', (msg) => {
  if (msg.cmd !== 'run') return;
  const names = msg.channels;
  const deadline = Date.now() + msg.seconds * 1000;
  const started = Date.now();
  let sent = 0;
  const tick = () => {
    const due = Math.min(Math.floor(((Date.now() - started) / 1000) * msg.rate), Math.floor(msg.seconds * msg.rate));
    for (; sent < due; sent++) {
      const channel = names[sent % names.length];
      const frame = Buffer.from(`{"type":"event","channel":${JSON.stringify(channel)},"event":"bench","payload":{"t":${Date.now()}}}`);
      for (const ws of channels.get(channel) ?? []) ws.send(frame);
    }
    if (Date.now() < deadline) setTimeout(tick, 1);
    else process.send?.({ sent });
  };
  tick();
});

wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
process.on('SIGTERM', () => process.exit(0));
