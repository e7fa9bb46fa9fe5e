// The bench's pure parts: parsing wrk, h2load and iperf3 output (samples are real output of
// the installed versions) and judging the issue-6 targets.
import test from 'ava';
import { closestPhaseGapMs, durationMs, latencyFromH2loadLog, parseH2load, parseIperf3, parseVmRss, parseWrk, percentile } from '../bench/parse.ts';
import { judgeTargets, renderMarkdown, type ScenarioResult } from '../bench/report.ts';

const WRK = `Running 1s test @ http://127.0.0.1:18080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   706.37us  463.89us   5.06ms   88.24%
    Req/Sec    56.19k     3.82k   60.45k    80.00%
  Latency Distribution
     50%  642.00us
     75%  711.00us
     90%    0.87ms
     99%    3.23ms
  55904 requests in 1.00s, 8.00MB read
  Socket errors: connect 0, read 12, write 0, timeout 1
Requests/sec:  55789.52
Transfer/sec:      7.98MB
`;

const H2LOAD = `finished in 1.00s, 10000.00 req/s, 674.47KB/s
requests: 10054 total, 10090 started, 10054 done, 10000 succeeded, 54 failed, 54 errored, 0 timeout
status codes: 10000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 674.47KB (690660) total, 468.75KB (480000) headers (space savings 51.02%), 29.30KB (30000) data
                     min         max         mean         sd        +/- sd
time for request:       59us      7.18ms      2.10ms       885us    77.46%
`;

test('wrk --latency output', (t) => {
  t.deepEqual(parseWrk(WRK), { requestsPerSec: 55789.52, p50Ms: 0.642, p99Ms: 3.23, requests: 55904, errors: 13 });
  t.throws(() => parseWrk(WRK.replace(/ +99%.*\n/, '')), { message: /99% latency \(run with --latency\)/ });
});

test('durations in wrk and h2load units', (t) => {
  t.is(durationMs('642.00us'), 0.642);
  t.is(durationMs('1.5s'), 1500);
  t.throws(() => durationMs('12 parsecs'), { message: /unrecognised duration/ });
});

test('h2load summary', (t) => {
  t.deepEqual(parseH2load(H2LOAD), { requestsPerSec: 10000, succeeded: 10000, failed: 54, meanMs: 2.1 });
  t.throws(() => parseH2load('nothing'), { message: /h2load output has no "finished in" line/ });
});

test('h2load --log-file percentiles count only 2xx responses', (t) => {
  const rows = Array.from({ length: 100 }, (_, i) => `1795317563846157\t200\t${(i + 1) * 1000}`);
  rows.push('1795317563846157\t503\t999999999');
  const l = latencyFromH2loadLog(rows.join('\n') + '\n');
  t.deepEqual(l, { count: 100, p50Ms: 50, p99Ms: 99, maxMs: 100, non2xx: 1 });
  t.throws(() => latencyFromH2loadLog(''), { message: /no successful requests/ });
  t.is(percentile([5], 99), 5);
});

test('iperf3 -J and /proc status', (t) => {
  t.deepEqual(parseIperf3(JSON.stringify({ end: { sum_received: { bits_per_second: 2.5e10 }, sum_sent: { retransmits: 3 } } })), { gbitPerSec: 25, retransmits: 3 });
  t.throws(() => parseIperf3(JSON.stringify({ error: 'the server is busy running a test. try again later' })), { message: /iperf3: the server is busy/ });
  t.is(parseVmRss('Name:\tnode\nVmRSS:\t   81920 kB\n'), 81920 * 1024);
});

const scenario = (id: string, name: string, values: Record<string, number>, cpu = 50): ScenarioResult => ({
  id, title: id, load: 'x', notes: [], proxyCpuPercent: { mesh: cpu }, proxyStarvedPercent: { mesh: 30 }, metrics: [{ name, unit: 'u', better: 'higher', values }],
});

test('targets: met, missed with what limits it, and not run', (t) => {
  const targets = judgeTargets([
    scenario('latency-1k', 'p99', { direct: 1.0, mesh: 1.9 }),
    scenario('http1-keepalive', 'requests/s', { direct: 100, nginx: 30, mesh: 20 }, 99),
    scenario('opaque-throughput', 'throughput', { direct: 10, mesh: 5 }),
  ]);
  const by = Object.fromEntries(targets.map((x) => [x.id, x]));
  t.is(by['latency-1k-p99'].status, 'met');
  t.is(by['http1-keepalive-vs-nginx'].status, 'missed');
  t.regex(by['http1-keepalive-vs-nginx'].limit!, /99% of a core and waited 30% of the run for a CPU: its single event loop is the limit/);
  t.is(by['opaque-throughput-half'].status, 'met');
  t.is(by['memory-idle'].status, 'not run');
  const md = renderMarkdown({ version: 1, startedAt: 'now', finishedAt: 'now', quick: false, machine: { cpus: 2, cpuModel: 'cpu', kernel: 'k', node: '24', loadAvgAtStart: [0, 0, 0] }, scenarios: [], targets });
  t.regex(md, /\| keep-alive HTTP\/1 through the mesh reaches at least nginx's req\/s \| 20.0 vs nginx 30.0 req\/s \(67%\) \| \*\*missed\*\* \|/);
  t.regex(md, /What limits the missed targets/);
});

test('closestPhaseGapMs: how close independent fixed-rate clients came to sending together', (t) => {
  // h2load --log-file lines: start time (µs since the epoch), status, latency (µs).
  const log = (phaseUs: number) => Array.from({ length: 20 }, (_, i) => `${1_795_322_748_000_000 + i * 10_000 + phaseUs}\t200\t90`).join('\n');
  t.is(closestPhaseGapMs(Array.from({ length: 10 }, (_, i) => log(i * 1000)), 10_000), 1);
  t.is(closestPhaseGapMs([log(3000), log(3000), log(7000)], 10_000), 0);
  t.is(closestPhaseGapMs([log(9900), log(100), log(5000)], 10_000), 0.2); // across the period's wrap
  t.is(closestPhaseGapMs([log(100)], 10_000), 10);
});
