// The naive relay a user would write: one pg LISTEN, JSON.parse per
// notification, Map<channel, Set<socket>>, JSON.stringify per socket. No
// authorization, no recovery, and NOTIFY carries the whole message (so it
// breaks past 8000 bytes). The baseline of bench/run.mjs.
import pg from 'pg';
import { WebSocketServer } from 'ws';

const url = process.env.DATABASE_URL;
const listener = new pg.Client({ connectionString: url });
const pool = new pg.Pool({ connectionString: url, max: 10 });
await listener.connect();
await listener.query('listen baseline');

const channels = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });

wss.on('connection', (ws) => {
  const mine = new Set();
  ws.on('message', async (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return ws.send(JSON.stringify({ type: 'error', code: 'INVALID_MESSAGE' }));
    }
    if (msg.type === 'subscribe') {
      if (!channels.has(msg.channel)) channels.set(msg.channel, new Set());
      channels.get(msg.channel).add(ws);
      mine.add(msg.channel);
      ws.send(JSON.stringify({ type: 'subscribed', channel: msg.channel, ref: msg.ref }));
    } else if (msg.type === 'publish') {
      const { rows } = await pool.query(
        'insert into bench.baseline_messages (channel, event, payload) values ($1, $2, $3) returning id',
        [msg.channel, msg.event, msg.payload],
      );
      ws.send(JSON.stringify({ type: 'published', channel: msg.channel, ref: msg.ref, id: rows[0].id }));
    }
  });
  ws.on('close', () => {
    for (const channel of mine) channels.get(channel)?.delete(ws);
  });
});

listener.on('notification', (n) => {
  const msg = JSON.parse(n.payload);
  const sockets = channels.get(msg.channel);
  if (!sockets) return;
  for (const ws of sockets) {
    ws.send(JSON.stringify({ type: 'event', channel: msg.channel, event: msg.event, payload: msg.payload, id: msg.id }));
  }
});

wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
process.on('SIGTERM', () => process.exit(0));
