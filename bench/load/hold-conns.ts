// Opens `count` TCP connections and keeps them open and silent until stdin closes (or the
// process is killed): the idle connections whose cost the memory scenario measures.
// Prints {"open":N,"failed":F} once all attempts settled. Needs RLIMIT_NOFILE above count.
//   node bench/load/hold-conns.ts --connect IP:PORT --count 10000 [--parallel 200]
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { connect: { type: 'string' }, count: { type: 'string' }, parallel: { type: 'string', default: '200' } } });
const m = /^(.+):(\d+)$/.exec(values.connect ?? '');
if (!m || !values.count) {
  process.stderr.write(JSON.stringify({ error: 'usage: --connect IP:PORT --count N' }) + '\n');
  process.exit(2);
}
const host = m[1];
const port = Number(m[2]);
const count = Number(values.count);
const parallel = Number(values.parallel);
const held: net.Socket[] = [];
let failed = 0;
let firstError = '';
let next = 0;

function open(): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      held.push(s);
      resolve();
    });
    s.once('error', (e) => {
      failed++;
      firstError ||= e.message;
      resolve();
    });
  });
}

async function worker(): Promise<void> {
  while (next < count) {
    next++;
    await open();
  }
}

await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
let closedEarly = 0;
for (const s of held) s.once('close', () => closedEarly++);
process.stdout.write(JSON.stringify({ open: held.length, failed, firstError }) + '\n');
process.stdin.resume();
process.stdin.once('end', () => {
  process.stdout.write(JSON.stringify({ closedEarly }) + '\n');
  for (const s of held) s.destroy();
  process.exit(0);
});
