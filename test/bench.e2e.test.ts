// The benchmark harness end to end, so it cannot rot: one cheap scenario, quick, all three
// ways (direct, nginx, mesh) on a real simulated node with the real agent.
import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { collect } from '../src/sim/run.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('node bench/run.ts --quick --only http1-keepalive writes a report with positive numbers for all three paths', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root and BPF; run the suite as root: sudo ./dev test');
  const out = testTempDir(t);
  const docBefore = fs.readFileSync(path.join(ROOT, 'docs/benchmarks.md'), 'utf8');
  // A hang detector, under ava's 120 s: the quick run takes ~20 s on a quiet machine and was
  // killed at the old 28 s with a core kept busy (its node setup and three runs all slow down).
  const r = await collect(spawn(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(ROOT, 'bench/run.ts'), '--quick', '--only', 'http1-keepalive', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] }), { timeoutMs: 110_000 });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /\[1\/1\] http1-keepalive\s+direct .*req\/s/, 'a progress line per run');
  t.regex(r.stderr, /\[1\/1\] http1-keepalive\s+mesh /);

  const report = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8'));
  t.is(report.version, 1);
  t.true(report.quick);
  t.deepEqual(report.scenarios.map((s: any) => s.id), ['http1-keepalive']);
  const [sc] = report.scenarios;
  t.deepEqual(sc.metrics.map((m: any) => m.name), ['requests/s', 'p50', 'p99']);
  for (const m of sc.metrics) {
    for (const mode of ['direct', 'nginx', 'mesh']) t.true(m.values[mode] > 0, `${m.name} ${mode} = ${m.values[mode]}`);
  }
  t.true(sc.proxyCpuPercent.mesh > 0, 'the agent did work in the mesh run');
  t.true(sc.proxyCpuPercent.nginx > 0, 'nginx did work in the nginx run');
  t.true(sc.proxyStarvedPercent.mesh >= 0 && sc.proxyStarvedPercent.mesh <= 100, JSON.stringify(sc.proxyStarvedPercent));
  const target = report.targets.find((x: any) => x.id === 'http1-keepalive-vs-nginx');
  t.is(target.status, 'not judged', `a quick run judges no target: ${JSON.stringify(target)}`);
  t.is(report.targets.find((x: any) => x.id === 'memory-idle').status, 'not run');

  const md = fs.readFileSync(path.join(out, 'latest.md'), 'utf8');
  t.regex(md, /\| HTTP\/1\.1 keep-alive \| requests\/s .*\| [\d.]+× \| [\d.]+× \|/);
  t.is(fs.readFileSync(path.join(ROOT, 'docs/benchmarks.md'), 'utf8'), docBefore, 'a quick run leaves docs/benchmarks.md alone');
});
