// Opens N sockets subscribed to 'orders' and 'bulk', then stops reading from
// them (the TCP receive window fills and the server's unsent bytes grow).
// For slow.test.ts.
import WebSocket from 'ws';

const [url, count] = [process.argv[2], Number(process.argv[3])];
const sockets = [];
for (let i = 0; i < count; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  await new Promise((resolve) => ws.once('open', resolve));
  for (const channel of ['orders', 'bulk']) {
    await new Promise((resolve) => {
      ws.once('message', (d) => {
        if (!String(d).includes('"subscribed"')) process.stderr.write(`slow consumer: ${d}\n`);
        resolve();
      });
      ws.send(JSON.stringify({ type: 'subscribe', channel, ref: channel }));
    });
  }
  ws._socket.pause();
  sockets.push(ws);
}
process.send?.({ ready: true });
// Paused sockets do not keep a process alive: stay until killed.
setInterval(() => {}, 60_000);
