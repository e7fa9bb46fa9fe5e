// A path whose load fails its error bound: run once more, then reported (no numbers, the targets
// that need it not run, the report not a full run) instead of ending the whole bench.
import test from 'ava';
import { parseH2load } from '../bench/parse.ts';
import { checkErrors, LoadFailure, runTwice } from '../bench/load-failure.ts';
import { docsRefusal, exitCodeOf, FULL_RUN_SECONDS, judgeTargets, renderMarkdown, type Mode, type PathFailure, type Report, type ScenarioResult } from '../bench/report.ts';
import { rangesRefusal } from '../bench/ranges.ts';
import { SCENARIOS } from '../bench/scenarios.ts';

// nginx's grpc_pass answering 1.8% 5xx once (the run that ended a whole bench before this).
const GRPC_5XX = `finished in 10.00s, 9823.00 req/s, 674.47KB/s
requests: 100000 total, 100000 started, 100000 done, 98230 succeeded, 1770 failed, 0 errored, 0 timeout
status codes: 98230 2xx, 0 3xx, 0 4xx, 1770 5xx
traffic: 674.47KB (690660) total, 468.75KB (480000) headers (space savings 51.02%), 29.30KB (30000) data
                     min         max         mean         sd        +/- sd
time for request:       59us      7.18ms      5.10ms       885us    77.46%
`;

const h2Check = (out: string) => {
  const h = parseH2load(out);
  checkErrors('h2load', { name: 'succeeded', n: h.succeeded }, { name: 'failed', n: h.failed }, 0.01, out);
};

test('a load over its error bound throws a LoadFailure with its counts; under it, nothing', (t) => {
  const e = t.throws(() => h2Check(GRPC_5XX), { instanceOf: LoadFailure });
  t.is(e!.message, 'h2load: 98230 succeeded, 1770 failed (1.8%, over the 1% allowed)');
  t.deepEqual(e!.counts, { succeeded: 98230, failed: 1770 });
  t.is(e!.output, GRPC_5XX);
  t.notThrows(() => h2Check(GRPC_5XX.replace('1770 failed', '982 failed')), 'exactly 1% is within the bound');
  const none = t.throws(() => checkErrors('conn-rate', { name: 'connections', n: 0 }, { name: 'errors', n: 0 }, 0.01), { instanceOf: LoadFailure });
  t.is(none!.message, 'conn-rate: 0 connections, 0 errors', 'nothing completed fails whatever the errors');
});

test('runTwice: a load failure is run once more; a second failure is returned, any other error thrown at once', async (t) => {
  const first = new LoadFailure('wrk: 100 requests, 9 errors', { requests: 100, errors: 9 });
  const second = new LoadFailure('wrk: 100 requests, 7 errors', { requests: 100, errors: 7 });
  const retries: string[] = [];
  const onRetry = (e: Error) => retries.push(e.message);
  const outcomes = (list: Array<number | Error>) => async () => {
    const next = list.shift()!;
    if (next instanceof Error) throw next;
    return next;
  };

  t.deepEqual(await runTwice(outcomes([1]), onRetry), { ok: true, value: 1 });
  t.deepEqual(retries, []);
  t.deepEqual(await runTwice(outcomes([first, 2]), onRetry), { ok: true, value: 2, retried: first });
  t.deepEqual(retries, [first.message]);
  t.deepEqual(await runTwice(outcomes([first, second, 3]), onRetry), { ok: false, failures: [first, second] });
  const broken = outcomes([new Error('wrk is not installed; run ./dev setup'), 4]);
  await t.throwsAsync(runTwice(broken, onRetry), { message: /wrk is not installed/ });
  t.is(await broken(), 4, 'a setup error is not retried: the second outcome was never taken');
});

const fail = (reason: string): PathFailure => ({ reason, counts: { succeeded: 98230, failed: 1770 } });
const scenario = (id: string, values: Partial<Record<Mode, number>>, o: Partial<ScenarioResult> = {}): ScenarioResult => ({
  id, title: `title of ${id}`, load: 'x', notes: [], proxyCpuPercent: {}, proxyStarvedPercent: {},
  metrics: [{ name: id === 'latency-1k' ? 'p99' : 'requests/s', unit: 'u', better: 'higher', values }], ...o,
});
const report = (scenarios: ScenarioResult[], o: Partial<Report> = {}): Report => ({
  version: 1, startedAt: '2026-12-01T08:00:00.000Z', finishedAt: 'now', quick: false, seconds: FULL_RUN_SECONDS, commit: 'abc1234',
  machine: { cpus: 2, cpuModel: 'cpu', kernel: 'k', node: '24', loadAvgAtStart: [0, 0, 0] }, scenarios, targets: judgeTargets(scenarios, { quick: o.quick ?? false }), ...o,
});

const nginxFailed = scenario('http1-keepalive', { direct: 100, mesh: 50 }, { failed: { nginx: [fail('h2load: first'), fail('h2load: again')] } });
const latency = scenario('latency-1k', { direct: 1, mesh: 1.5 });

test('a failed baseline: its targets are not run with the reason, the others judged; the table says failed, the run exits 0', (t) => {
  const r = report([nginxFailed, latency]);
  const by = Object.fromEntries(r.targets.map((x) => [x.id, x]));
  t.like(by['http1-keepalive-vs-nginx'], { status: 'not run', measured: '-', reason: 'a path it needs failed its load twice (http1-keepalive nginx: h2load: again)' });
  t.like(by['latency-1k-p99'], { status: 'met' });
  t.is(by['memory-idle']!.reason, undefined, 'a scenario left out is not run without a reason');
  t.is(exitCodeOf(r), 0);

  const md = renderMarkdown(r);
  t.regex(md, /\| title of http1-keepalive \| requests\/s \(u, higher is better\) \| 100 \| 50\.0 \| failed \| 0\.50× \| - \|/);
  t.regex(md, /Paths that failed: .*\n\n- title of http1-keepalive \(http1-keepalive\), nginx: h2load: first; then h2load: again\.\n/);
  t.regex(md, /\| keep-alive HTTP\/1 through the mesh reaches at least nginx's req\/s \| - \| not run: a path it needs failed its load twice \(http1-keepalive nginx: h2load: again\) \|/);
  t.notRegex(md, /The mesh failed/);
  t.regex(renderMarkdown(report([nginxFailed], { quick: true })), /\| not run: a path it needs failed/, 'a quick run keeps the reason');
});

test('a failed direct path: no ratio is computed against it', (t) => {
  const md = renderMarkdown(report([scenario('http1-keepalive', { nginx: 80, mesh: 50 }, { failed: { direct: [fail('wrk: a'), fail('wrk: b')] } })]));
  t.regex(md, /\| title of http1-keepalive \| requests\/s \(u, higher is better\) \| failed \| 50\.0 \| 80\.0 \| - \| - \|/);
});

test('a failed mesh or mTLS path stands out and gives exit 3; the targets that need it are not run', (t) => {
  const meshFailed = scenario('latency-1k', { direct: 1 }, { failed: { mesh: [fail('the fixed-rate run reached 850 req/s'), fail('the fixed-rate run reached 870 req/s')] } });
  const r = report([meshFailed]);
  t.is(exitCodeOf(r), 3);
  t.like(r.targets.find((x) => x.id === 'latency-1k-p99'), { status: 'not run', reason: 'a path it needs failed its load twice (latency-1k mesh: the fixed-rate run reached 870 req/s)' });
  const md = renderMarkdown(r);
  t.regex(md, /^Run .*\n\n\*\*The mesh failed its load in title of latency-1k \(latency-1k\), mesh\*\*: see "Paths that failed" below\.\n/);
  t.regex(md, /\| title of latency-1k \| p99 \(u, higher is better\) \| 1\.00 \| \*\*failed\*\* \| - \| - \| - \|/);
  t.regex(md, /\n- \*\*the mesh\*\*, title of latency-1k \(latency-1k\), mesh: /);

  const mtls = scenario('http1-cross', { direct: 100, mesh: 30 }, { failed: { mtls: [fail('wrk: a'), fail('wrk: b')] } });
  const cross = report([mtls]);
  t.is(exitCodeOf(cross), 3);
  t.like(cross.targets.find((x) => x.id === 'http1-cross-mtls'), { status: 'not run', reason: 'a path it needs failed its load twice (http1-cross mtls: wrk: b)' });
  t.regex(renderMarkdown(cross), /\| title of http1-cross \| requests\/s \(u, higher is better\) \| 100 \| 30\.0 \| \*\*failed\*\* \| - \| - \|/);
  t.true(judgeTargets([], { quick: false }).some((x) => x.id === 'http1-cross-mtls'), 'not run under the same id as when judged');
});

test('a path that passed on its retry keeps the retry\'s numbers and says so', (t) => {
  const r = report([scenario('http1-keepalive', { direct: 100, nginx: 80, mesh: 50 }, { retried: { nginx: fail('h2load: 98230 succeeded, 1770 failed (1.8%, over the 1% allowed)') } })]);
  t.is(exitCodeOf(r), 0);
  const md = renderMarkdown(r);
  t.regex(md, /- \*\*title of http1-keepalive\*\*: `x`\. nginx ran twice: its first run failed its error bound \(h2load: 98230 succeeded, 1770 failed \(1\.8%, over the 1% allowed\)\), the numbers are the retry's\./);
  t.notRegex(md, /Paths that failed/);
  t.is(r.targets.find((x) => x.id === 'http1-keepalive-vs-nginx')!.status, 'missed');
});

test('a run with a failed path is not a full run: docs/benchmarks.md and --ranges refuse it and say which path and why', (t) => {
  const ids = SCENARIOS.map((s) => s.id);
  const all = ids.map((id) => scenario(id, { mesh: 1 }));
  t.is(docsRefusal(report(all), ids), null);
  const baseline = report(all.map((s) => (s.id === 'grpc' ? { ...s, failed: { nginx: [fail('h2load: a'), fail('h2load: b')] } } : s)));
  t.is(docsRefusal(baseline, ids), 'a path failed its load\'s error bound twice (grpc nginx: h2load: b), so it has no numbers for that path and the targets that need them are not run; run the full bench again for the docs');
  const ours = report(all.map((s) => (s.id === 'grpc' ? { ...s, failed: { mesh: [fail('h2load: a'), fail('h2load: b')] } } : s)));
  t.regex(docsRefusal(ours, ids)!, /\(grpc mesh: h2load: b\).*run the full bench again for the docs \(a failed mesh path is a fault of the mesh: find it first\)$/);
  t.is(rangesRefusal([report(all), baseline, report(all)], ids), `the run of ${baseline.startedAt} is not a full run: ${docsRefusal(baseline, ids)}`);
});
