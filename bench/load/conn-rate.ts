// New TCP connections per second, closed loop: `concurrency` workers each connect, read the
// server's greeting until it closes, and connect again, for `seconds`. With --rate R, an open
// loop instead: R connections a second started on a 10 ms tick whatever the answers take (at
// most 4,000 in flight). Prints one JSON line {"connections":N,"seconds":S,"perSecond":R,"errors":E}.
// Node is the client here, so on a small machine the client can be what limits the direct
// baseline; run.ts reports its ratio.
//   node bench/load/conn-rate.ts --connect IP:PORT [--concurrency 50 | --rate R] [--seconds 5]
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { connect: { type: 'string' }, concurrency: { type: 'string', default: '50' }, rate: { type: 'string' }, seconds: { type: 'string', default: '5' } } });
const m = /^(.+):(\d+)$/.exec(values.connect ?? '');
if (!m) {
  process.stderr.write(JSON.stringify({ error: 'missing --connect IP:PORT' }) + '\n');
  process.exit(2);
}
const host = m[1];
const port = Number(m[2]);
const concurrency = Number(values.concurrency);
const seconds = Number(values.seconds);
let done = 0;
let errors = 0;
let running = true;
const start = performance.now();

/** A connection not done by then is an error (a dropped SYN retried for seconds, a proxy that never answered). */
const CONNECTION_TIMEOUT_MS = 10_000;

function one(): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(CONNECTION_TIMEOUT_MS, () => s.destroy(new Error('timeout')));
    s.on('data', () => {});
    s.once('end', () => {
      done++;
      s.destroy();
      resolve();
    });
    s.once('error', () => {
      errors++;
      s.destroy();
      resolve();
    });
  });
}

async function worker(): Promise<void> {
  while (running) await one();
}

const MAX_IN_FLIGHT = 4000;

async function paced(rate: number): Promise<void> {
  const inflight = new Set<Promise<void>>();
  let started = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      if (!running) {
        clearInterval(tick);
        resolve();
        return;
      }
      // As many as the rate says by now: a late tick catches up.
      const due = Math.floor(((performance.now() - start) / 1000) * rate);
      for (; started < due && inflight.size < MAX_IN_FLIGHT; started++) {
        const p = one();
        inflight.add(p);
        void p.then(() => inflight.delete(p));
      }
    }, 10);
  });
  await Promise.all(inflight);
}

setTimeout(() => (running = false), seconds * 1000);
if (values.rate !== undefined) await paced(Number(values.rate));
else await Promise.all(Array.from({ length: concurrency }, worker));
const elapsed = (performance.now() - start) / 1000;
process.stdout.write(JSON.stringify({ connections: done, seconds: elapsed, perSecond: done / elapsed, errors }) + '\n');
