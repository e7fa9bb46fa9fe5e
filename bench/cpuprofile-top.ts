// Self time by function from a V8 .cpuprofile (node --cpu-prof), over its busiest window:
//   node bench/cpuprofile-top.ts PROFILE [--last SECONDS] [--top N]
// The window is the last SECONDS (default 6) before the last non-idle sample, so a bench run's
// profile is read where the proxy was under load, not during set-up or the idle tail.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { last: { type: 'string', default: '6' }, top: { type: 'string', default: '30' } },
});
if (positionals.length !== 1) {
  process.stderr.write('usage: node bench/cpuprofile-top.ts PROFILE [--last SECONDS] [--top N]\n');
  process.exit(2);
}
const p = JSON.parse(fs.readFileSync(positionals[0]!, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const times: number[] = [];
let t = 0;
for (const d of p.timeDeltas) times.push((t += d));
let lastBusy = times.length - 1;
while (lastBusy > 0 && byId.get(p.samples[lastBusy]!)!.callFrame.functionName === '(idle)') lastBusy--;
const from = times[lastBusy]! - Number(values.last) * 1e6;

const self = new Map<string, number>();
let total = 0;
let idle = 0;
for (let i = 1; i <= lastBusy; i++) {
  if (times[i]! < from) continue;
  const dt = times[i]! - times[i - 1]!;
  const f = byId.get(p.samples[i]!)!.callFrame;
  if (f.functionName === '(idle)') {
    idle += dt;
    continue;
  }
  const file = f.url.replace(/^.*\/(src|lib|node_modules)\//, '$1/').replace(/^node:/, '');
  const key = `${f.functionName || '(anonymous)'} ${file}${file ? ':' + (f.lineNumber + 1) : ''}`;
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
}
const pct = (x: number) => ((100 * x) / total).toFixed(1).padStart(5);
process.stdout.write(`window ${(Number(values.last)).toFixed(1)} s: busy ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s\n`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
  process.stdout.write(`${pct(v)}%  ${k}\n`);
}
