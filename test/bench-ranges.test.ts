// Ranges over several full runs: what the README states is every run's number, not the best one's.
import test from 'ava';
import { FULL_RUN_SECONDS, type Report, type ScenarioResult } from '../bench/report.ts';
import { rangesRefusal, renderRanges, summarize, verdict } from '../bench/ranges.ts';

const ids = ['http1-keepalive'];
const keepalive = (direct: number, nginx: number, mesh: number): ScenarioResult => ({
  id: 'http1-keepalive', title: 'HTTP/1.1 keep-alive', load: 'wrk', notes: [], proxyCpuPercent: { mesh: 50 }, proxyStarvedPercent: { mesh: 0 },
  metrics: [{ name: 'requests/s', unit: 'req/s', better: 'higher', values: { direct, nginx, mesh } }],
});
const run = (startedAt: string, s: ScenarioResult, status: 'met' | 'missed', o: Partial<Report> = {}): Report => ({
  version: 1, startedAt, finishedAt: startedAt, quick: false, seconds: FULL_RUN_SECONDS, commit: 'abc1234',
  machine: { cpus: 2, cpuModel: 'cpu', kernel: 'k', node: '24', loadAvgAtStart: [0.5, 0, 0] }, scenarios: [s],
  targets: [{ id: 'http1-keepalive-vs-nginx', target: 'at least nginx', measured: `${s.metrics[0]!.values.mesh}`, status }], ...o,
});

test('each cell is the lowest and highest of the runs, ratios taken within each run', (t) => {
  const s = summarize([
    run('2026-11-30T19:00:00Z', keepalive(100, 50, 30), 'missed'),
    run('2026-11-30T19:20:00Z', keepalive(80, 40, 40), 'missed'),
    run('2026-11-30T19:40:00Z', keepalive(90, 45, 36), 'missed'),
  ]);
  const m = s.metrics[0]!;
  t.deepEqual(m.values.direct, [80, 100]);
  t.deepEqual(m.values.mesh, [30, 40]);
  // 30/100 and 40/80: the ratio's range is not max/min of the value ranges.
  t.deepEqual(m.ratios.mesh, [0.3, 0.5]);
  t.deepEqual(m.ratios.nginx, [0.5, 0.5]);
  t.deepEqual(s.targets[0]!.statuses, ['missed', 'missed', 'missed']);
  const md = renderRanges(s);
  t.regex(md, /\| http1-keepalive \| requests\/s \(req\/s\) \| 80.0-100 \| 40.0-50.0 \| 30.0-40.0 \| - \| 0.30-0.50× \| 0.50× \|/);
  t.regex(md, /\| at least nginx \| \*\*missed\*\* \| 30; 40; 36 \|/);
});

test('a target is met only when every run met it', (t) => {
  t.is(verdict(['met', 'met', 'met']), 'met');
  t.is(verdict(['met', 'missed', 'met']), '**met in 2 of 3 runs**');
  t.is(verdict(['missed', 'missed', 'missed']), '**missed**');
  t.is(verdict(['met', 'not run', 'met']), '**met in 2 of 3 runs**');
  t.is(verdict(['not judged', 'not judged', 'not judged']), 'not judged');
});

test('refused: fewer than three runs, a quick or partial run, mixed or uncommitted commits', (t) => {
  const ok = (at: string, o: Partial<Report> = {}) => run(at, keepalive(100, 50, 30), 'missed', o);
  t.is(rangesRefusal([ok('a'), ok('b'), ok('c')], ids), null);
  t.regex(rangesRefusal([ok('a'), ok('b')], ids)!, /at least 3 full runs/);
  t.regex(rangesRefusal([ok('a'), ok('b'), ok('c', { quick: true })], ids)!, /run of c is not a full run: it is a --quick run/);
  t.regex(rangesRefusal([ok('a'), ok('b'), ok('c')], [...ids, 'opaque-throughput'])!, /partial run \(no opaque-throughput\)/);
  t.regex(rangesRefusal([ok('a'), ok('b'), ok('c', { commit: 'def5678' })], ids)!, /different commits \(abc1234, def5678\)/);
  t.regex(rangesRefusal([ok('a', { commit: 'abc1234+dirty' }), ok('b', { commit: 'abc1234+dirty' }), ok('c', { commit: 'abc1234+dirty' })], ids)!, /uncommitted changes/);
});
