// The naive webhook sender: LISTEN, and fetch() each notification to the URL
// as it arrives. No outbox, no retry, nothing survives a restart.
import pg from 'pg';

const url = process.argv[2];
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
client.on('notification', (n) => {
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: n.payload }).then((r) => r.arrayBuffer(), () => {});
});
await client.query('listen baseline_hooks');
process.send?.({ listening: true });
process.on('SIGTERM', () => process.exit(0));
