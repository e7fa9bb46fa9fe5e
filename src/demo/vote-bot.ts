// vote-bot: drives the web at a steady rate with the fixed mix of traffic-mix.ts, over one
// keep-alive HTTP/1.1 connection, and reports what it saw every few seconds.
//   node src/demo/vote-bot.ts --web 10.244.1.4:8080 --rps 10
import * as http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { emit, flags, peer } from './service-main.ts';
import { botRound } from './traffic-mix.ts';

const o = flags({ web: { type: 'string' }, rps: { type: 'string', default: '10' }, 'report-ms': { type: 'string', default: '5000' } }, 'vote-bot.ts --web IP:PORT [--rps N]');
const web = peer(o.web, 'web');
const rps = Number(o.rps);
if (!(rps > 0 && rps <= 1000)) throw new Error(`--rps ${o.rps}: expected a number in (0, 1000]`);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const totals = { sent: 0, ok: 0, failed: 0, errors: 0 };

function get(path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: web.host, port: web.port, path, agent, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(0));
  });
}

setInterval(() => emit({ bot: { ...totals } }), Number(o['report-ms'])).unref();
emit({ started: { web: `${web.host}:${web.port}`, rps } });
const interval = 1000 / rps;
let next = performance.now();
for (let round = 0; ; round++) {
  for (const r of botRound(round)) {
    const status = await get(r.path);
    // The demo says "running" only after this: traffic flows through the mesh, not just processes.
    if (status !== 0 && totals.ok + totals.failed === 0) emit({ firstAnswer: { path: r.path, status } });
    totals.sent++;
    if (status === 0) totals.errors++;
    else if (status < 500) totals.ok++;
    else totals.failed++;
    // Paced by schedule, not by latency, so the rate holds while responses vary.
    next += interval;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    else if (wait < -1000) next = performance.now();
  }
}
