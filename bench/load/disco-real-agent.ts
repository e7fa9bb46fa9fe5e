// One real agent's discovery link for the discovery-scale bench: the agent's DiscoveryClient
// feeding a DiscoveryStore, alone in its process, so its cost can be read: the heap the world
// takes in the store (after a full GC, against the same before connecting) and how long the
// snapshot took to arrive and apply. Run with --expose-gc. Prints one JSON line once synced:
//   {"heapMB":N,"rssMB":N,"syncMs":N,"services":N,"endpoints":N,"pods":N}
// then stays connected until stdin closes.
//   node --expose-gc bench/load/disco-real-agent.ts --url http://127.0.0.1:PORT
import { parseArgs } from 'node:util';
import { DiscoveryClient } from '../../src/discovery/client.ts';
import { DiscoveryStore } from '../../src/discovery/store.ts';

const { values } = parseArgs({ options: { url: { type: 'string' } } });
const gc = (globalThis as { gc?: () => void }).gc;
if (!values.url || !gc) {
  process.stderr.write('usage: node --expose-gc disco-real-agent.ts --url http://HOST:PORT\n');
  process.exit(2);
}
gc();
const heap0 = process.memoryUsage().heapUsed;
const store = new DiscoveryStore();
const t0 = performance.now();
const client = new DiscoveryClient({
  url: values.url, node: 'real-agent', agentId: 'bench-real-agent', store,
  log: () => {},
  onError: (m) => process.stderr.write(`${m}\n`),
});
const off = store.onChange((keys) => {
  if (keys !== 'all') return;
  off();
  const syncMs = performance.now() - t0;
  gc();
  const m = process.memoryUsage();
  process.stdout.write(JSON.stringify({ heapMB: (m.heapUsed - heap0) / 2 ** 20, rssMB: m.rss / 2 ** 20, syncMs, ...store.counts() }) + '\n');
});
client.start();
process.stdin.on('end', () => {
  client.stop();
  process.exit(0);
});
process.stdin.resume();
