// The time a new connection takes to its server's first byte, one connection at a time (no
// queueing behind other clients): connect, read the greeting of a server that speaks first,
// wait for its close, repeat for `seconds`. Through the mesh between nodes this is the accept,
// the detection race and, over mTLS, a new CONNECT stream in a warm tunnel (docs/identity.md).
// Prints {"connections":N,"p50Ms":X,"p99Ms":Y,"errors":E}.
//   node bench/load/conn-latency.ts --connect IP:PORT [--seconds 5]
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { connect: { type: 'string' }, seconds: { type: 'string', default: '5' } } });
const m = /^(.+):(\d+)$/.exec(values.connect ?? '');
if (!m) {
  process.stderr.write(JSON.stringify({ error: 'missing --connect IP:PORT' }) + '\n');
  process.exit(2);
}
const host = m[1]!;
const port = Number(m[2]);
const until = performance.now() + Number(values.seconds) * 1000;
const samples: number[] = [];
let errors = 0;

function one(): Promise<void> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = net.connect({ host, port });
    let first = true;
    s.on('data', () => {
      if (first) samples.push(performance.now() - t0);
      first = false;
    });
    s.once('close', () => resolve());
    s.once('error', () => {
      errors++;
      s.destroy();
    });
  });
}

while (performance.now() < until) await one();
samples.sort((a, b) => a - b);
const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
process.stdout.write(JSON.stringify({ connections: samples.length, p50Ms: q(0.5), p99Ms: q(0.99), errors }) + '\n');
