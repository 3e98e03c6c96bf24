// The webhook floor: N POSTs to one receiver from one process, `concurrency`
// at a time over keep-alive connections, as fast as it answers.
//   node bench/limit/post.mjs <url> <count> <concurrency>
import { Agent, request } from 'undici';

const [url, count, concurrency] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const agent = new Agent({ connections: concurrency });
process.send?.({ ready: true });
let next = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const n = next++;
      const res = await request(url, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
      await res.body.dump();
    }
  }),
);
await agent.close();
