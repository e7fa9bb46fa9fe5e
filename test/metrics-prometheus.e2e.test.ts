// The agent's /metrics scraped by Debian's real Prometheus on a simulated node, queried with
// the PromQL a Linkerd user writes. A client pod (deployment web) sends a known mix to a
// server pod (deployment api): one request in four answered 500 after ~0 ms, the rest 200
// after 120 ms. Mid-test the agent is restarted (SIGTERM, start again): its counters start
// from zero and Prometheus's increase()/rate() still count every request across the reset.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';
import { until as untilWith } from './helpers/until.ts';
import { LATENCY_BUCKETS } from '../src/telemetry/metrics.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 20000, intervalMs: 250, context: () => `agent log: ${agentLog.slice(-1500)}; prometheus log: ${promLog.slice(-1500)}` });

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = meshBin();
const SERVER = path.join(ROOT, 'test/fixtures/http-status-server.ts');
const PROMETHEUS = '/usr/bin/prometheus';
const AUTHORITY = 'api.shop.svc.cluster.local:8080';
// Bucket (100, 200]: 80 ms of headroom, because p99 of 80 samples is nearly the maximum and a
// loaded 2-core machine delays an odd answer by tens of ms (60 ms once read 116 ms).
const OK_DELAY_MS = 120;
const FAIL_DELAY_MS = 0;

let node: SimNode;
let web: SimPod;
let api: SimPod;
let agent: ChildProcess;
let prom: ChildProcess;
let agentLog = '';
let promLog = '';
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.json');
const promData = path.join(tmp, 'prometheus-data');

const owned = (name: string, hash: string) => ({
  labels: { app: name, 'pod-template-hash': hash },
  ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-${hash}`, uid: '00000000-0000-4000-8000-00000000000' + (name === 'web' ? '1' : '2'), controller: true }],
});

function startAgent(): ChildProcess {
  const a = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--drain', '2000', '-q']);
  a.stderr!.on('data', (d) => (agentLog += d));
  a.stdout!.on('data', (d) => (agentLog += d));
  return a;
}

/** Prometheus listens on the node namespace's loopback: query it from there. */
async function promql(query: string, time?: number): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const args = ['-sS', '--fail-with-body', 'http://127.0.0.1:9090/api/v1/query', '--data-urlencode', `query=${query}`];
  if (time !== undefined) args.push('--data-urlencode', `time=${time}`);
  const r = await node.execInNode('curl', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`query ${query}: curl exited ${r.code}: ${r.stdout}${r.stderr}`);
  const body = JSON.parse(r.stdout);
  if (body.status !== 'success' || body.data.resultType !== 'vector') throw new Error(`query ${query}: ${r.stdout.slice(0, 500)}`);
  return body.data.result;
}

/** One series' samples [time (s), value], from a range selector. */
async function samples(selector: string, time: number): Promise<Array<[number, number]>> {
  const r = await node.execInNode('curl', ['-sS', '--fail-with-body', 'http://127.0.0.1:9090/api/v1/query', '--data-urlencode', `query=${selector}`, '--data-urlencode', `time=${time}`], { timeoutMs: 10_000 });
  const body = JSON.parse(r.stdout);
  // More than one series here means the restart split the series (a label that differs
  // per process): then Prometheus could not see the reset and would lose counts.
  if (body.status !== 'success' || body.data.resultType !== 'matrix' || body.data.result.length !== 1) throw new Error(`query ${selector} should return one series across the restart: ${r.stdout.slice(0, 800)}`);
  return body.data.result[0].values.map((v: [number, string]) => [v[0], Number(v[1])]);
}

/** The single value of an aggregating query; NaN when it has no result. */
async function scalar(query: string, time?: number): Promise<number> {
  const r = await promql(query, time);
  if (r.length > 1) throw new Error(`query ${query} returned ${r.length} series, expected one`);
  return r.length === 0 ? NaN : Number(r[0]!.value[1]);
}

async function scrapeAgent() {
  const r = await node.execInNode('curl', ['-sS', '--fail-with-body', '-D', '-', 'http://127.0.0.1:4191/metrics']);
  if (r.code !== 0) throw new Error(`/metrics: curl exited ${r.code}: ${r.stdout}${r.stderr}`);
  const [head, body] = r.stdout.split('\r\n\r\n', 2) as [string, string];
  return { head, e: parseExposition(body) };
}

/**
 * Sends `rounds` x (one 500, three 200) over one keep-alive connection; returns the status
 * codes curl saw and, per code, the longest a request took as curl saw it (no proxy can
 * measure more).
 */
async function traffic(rounds: number): Promise<{ codes: Record<string, number>; slowest: Record<string, number> }> {
  const urls: string[] = [];
  for (let i = 0; i < rounds; i++) {
    urls.push(`http://${api.ip}:8080/status/500?delay=${FAIL_DELAY_MS}`);
    for (let j = 0; j < 3; j++) urls.push(`http://${api.ip}:8080/status/200?delay=${OK_DELAY_MS}`);
  }
  // -o pairs with one URL each: every body is discarded, only the -w status lines remain.
  const args = urls.flatMap((u) => ['-o', '/dev/null', u]);
  const r = await web.exec('curl', ['-sS', '-w', '%{http_code} %{time_total}\\n', '-H', `Host: ${AUTHORITY}`, ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`curl from web failed (${r.code}): ${r.stderr}`);
  const codes: Record<string, number> = {};
  const slowest: Record<string, number> = {};
  for (const line of r.stdout.trim().split('\n')) {
    const [c, seconds] = line.split(' ') as [string, string];
    codes[c] = (codes[c] ?? 0) + 1;
    slowest[c] = Math.max(slowest[c] ?? 0, Number(seconds) * 1000);
  }
  return { codes, slowest };
}

/** The upper edge of the latency bucket a time in ms falls in (+Inf past the last). */
const bucketCeiling = (ms: number) => LATENCY_BUCKETS.find((le) => le >= ms) ?? Infinity;

const OUT = 'direction="outbound"';
const total = (sel = OUT) => `sum(response_total{${sel}})`;

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the metrics e2e test needs root and BPF; run the suite as root: sudo ./dev test');
  if (!fs.existsSync(PROMETHEUS)) throw new Error(`${PROMETHEUS} is missing; install Debian's prometheus package (./dev installs it)`);
  node = await createNode({ driver: 'systemd' });
  web = await node.addPod({ name: 'web-7d9f8-abcde', namespace: 'shop', ...owned('web', '7d9f8') });
  api = await node.addPod({ name: 'api-5c4b6-xyz12', namespace: 'shop', ...owned('api', '5c4b6') });
  const objs = [web, api].map((p) => {
    const o = p.toPodObject(node.name) as any;
    return { ...o, metadata: { ...o.metadata, annotations: { ...o.metadata.annotations, 'mesh-agent.io/inject': 'enabled' } } };
  });
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: objs }));

  const srv = new JsonLines(api.spawn(process.execPath, [SERVER, '8080']));
  await srv.waitFor((o) => o.listening, 10_000, 'http server listening');
  agent = startAgent();
  await until(async () => JSON.parse((await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status'])).stdout), (s) => s.pods.filter((p: any) => p.meshed).length === 2, 'both pods meshed');

  fs.mkdirSync(promData);
  const config = path.join(tmp, 'prometheus.yml');
  fs.writeFileSync(config, [
    'global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }',
    'scrape_configs:',
    '  - job_name: mesh-agent',
    "    static_configs: [{ targets: ['127.0.0.1:4191'] }]",
    '',
  ].join('\n'));
  prom = node.spawnInNode(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${promData}`, '--web.listen-address=127.0.0.1:9090', '--log.level=warn']);
  prom.stderr!.on('data', (d) => (promLog += d));
  prom.stdout!.on('data', (d) => (promLog += d));
  await until(() => scalar('up{job="mesh-agent"}'), (v) => v === 1, 'Prometheus scraping the agent', 30_000);
});

test.after.always(async () => {
  prom?.kill('SIGKILL');
  agent?.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('success rate, RPS and p99 through Prometheus, across an agent restart', async (t) => {
  // Warm-up: a series that appears mid-window loses what it counted before its first
  // scrape (Prometheus cannot know it started at zero), so every series exists first.
  t.deepEqual((await traffic(1)).codes, { 200: 3, 500: 1 });
  await until(() => scalar(total()), (v) => v === 4, 'warm-up scraped');
  const t0 = Date.now() / 1000;

  // Phase 1: 80 requests, 20 of them 500 (each round starts with its 500).
  const p1 = await traffic(20);
  t.deepEqual(p1.codes, { 200: 60, 500: 20 });
  await until(() => scalar(total()), (v) => v === 84, 'phase 1 scraped');
  const t1 = Date.now() / 1000;
  // The window runs from the last scrape before phase 1 (the warm-up's one 500 still the
  // only failure, so no phase 1 request yet) to the first with all of it (63 successes): a
  // range from one scrape to another has no edges to extrapolate to, so it holds exactly
  // phase 1, however the scrapes fell.
  const range = `[${Math.ceil(t1 - t0) + 60}s]`;
  const failures1 = await samples(`response_total{${OUT},classification="failure"}${range}`, t1);
  const successes1 = await samples(`response_total{${OUT},classification="success"}${range}`, t1);
  const from1 = failures1.filter(([, v]) => v === 1).at(-1)![0];
  const at1 = successes1.find(([, v]) => v === 63)![0];
  // In whole ms, as Prometheus keeps timestamps (the difference of two float seconds near
  // 1.7e9 is off by up to ~1e-7 s).
  const w1Ms = Math.round((at1 - from1) * 1000);
  const w1 = `${w1Ms}ms`;
  const sr1 = await scalar(`sum(rate(response_total{${OUT},classification="success"}[${w1}])) / sum(rate(response_total{${OUT}}[${w1}]))`, at1);
  t.true(Math.abs(sr1 - 0.75) < 1e-9, `success rate ${sr1}`);
  // p99 falls on a 200 (60 of 80), at least its 120 ms delay (bucket (100, 200]) and at most
  // the slowest request curl saw; p10 on a 500, at most the slowest 500 curl saw.
  const p99 = await scalar(`histogram_quantile(0.99, sum by (le) (rate(response_latency_ms_bucket{${OUT}}[${w1}])))`, at1);
  t.true(p99 > 100 && p99 <= bucketCeiling(Math.max(p1.slowest['200']!, p1.slowest['500']!)), `p99 ${p99} ms for a ${OK_DELAY_MS} ms answer; curl's slowest ${JSON.stringify(p1.slowest)}`);
  const p10 = await scalar(`histogram_quantile(0.10, sum by (le) (rate(response_latency_ms_bucket{${OUT}}[${w1}])))`, at1);
  t.true(p10 <= bucketCeiling(p1.slowest['500']!), `p10 ${p10} ms: the fast 500s are told apart (curl's slowest 500: ${p1.slowest['500']} ms)`);

  // The Linkerd way per workload: the server's inbound side, by deployment.
  const byDeploy = await promql(`sum by (namespace, deployment) (rate(response_total{direction="inbound",classification="success"}[${w1}])) / sum by (namespace, deployment) (rate(response_total{direction="inbound"}[${w1}]))`, at1);
  t.deepEqual(byDeploy.map((r) => r.metric), [{ namespace: 'shop', deployment: 'api' }]);
  t.true(Math.abs(Number(byDeploy[0]!.value[1]) - 0.75) < 1e-9);
  const edges = await promql(`sum by (deployment, dst_deployment, authority) (increase(request_total{${OUT}}[${w1}]))`, at1);
  t.deepEqual(edges.map((r) => r.metric), [{ deployment: 'web', dst_deployment: 'api', authority: AUTHORITY }]);
  const rps = await scalar(`sum(rate(request_total{${OUT},deployment="web"}[${w1}]))`, at1);
  t.true(Math.abs((rps * w1Ms) / 1000 - 80) < 1e-6, `RPS ${rps} over ${w1} is 80 requests`);
  t.true(await scalar(`sum(tcp_read_bytes_total{${OUT},peer="dst"})`) > 0);
  t.is(await scalar('mesh_agent_datapath_map_entries{map_name="mesh_pods"}'), 2, 'the datapath map gauge: one entry per meshed pod');

  // Restart: SIGTERM, wait for the exit, start again.
  agent.kill('SIGTERM');
  t.is(await exited(agent), 0, agentLog.slice(-2000));
  await until(() => scalar('up{job="mesh-agent"}'), (v) => v === 0, 'Prometheus seeing the agent down');
  agent = startAgent();
  await until(() => node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/ready']), (r) => r.code === 0, 'new agent ready');
  const fresh = await scrapeAgent();
  t.regex(fresh.head, /content-type: text\/plain; version=0\.0\.4; charset=utf-8/i);
  t.is(sum(fresh.e, 'response_total'), 0, 'the new process counts from zero');

  // Phase 2: 40 more, 10 of them 500, straight away (no warm-up: the reset must do).
  t.deepEqual((await traffic(10)).codes, { 200: 30, 500: 10 });
  const after = await scrapeAgent();
  t.is(sum(after.e, 'response_total', { direction: 'outbound' }), 40, 'the new process counted only its own requests');
  t.is(sum(after.e, 'response_total', { direction: 'outbound', classification: 'failure', status_code: '500' }), 10);
  await until(() => scalar(total()), (v) => v === 40, 'phase 2 scraped');
  const t2 = Date.now() / 1000;
  const w2 = `${Math.ceil(t2 - from1) + 1}s`;
  // increase() extrapolates to the window's edges; a window from one scrape to another has
  // no edges to extrapolate to, so the answer is exact.
  const times = (await samples(`response_total{${OUT},classification="success"}[${w2}]`, t2)).map(([ts]) => ts);
  const from = times.find((ts) => ts >= from1)!;
  const to = times.at(-1)!;
  const exact = `${Math.round((to - from) * 1000)}ms`;
  const inc = await scalar(`sum(increase(response_total{${OUT}}[${exact}]))`, to);
  t.true(Math.abs(inc - 120) < 0.01, `increase over the restart ${inc}, expected 120 (80 + 40)`);
  const incFail = await scalar(`sum(increase(response_total{${OUT},classification="failure"}[${exact}]))`, to);
  t.true(Math.abs(incFail - 30) < 0.01, `failures over the restart ${incFail}, expected 30`);
  const sr2 = await scalar(`sum(rate(response_total{${OUT},classification="success"}[${exact}])) / sum(rate(response_total{${OUT}}[${exact}]))`, to);
  t.true(Math.abs(sr2 - 0.75) < 1e-9, `success rate across the restart ${sr2}`);
  t.log({ sr1, p99, p10, rps, inc, incFail, sr2 });
  const resets = await scalar(`sum(resets(response_total{${OUT},classification="success"}[${w2}]))`, t2);
  t.true(resets >= 1, 'Prometheus saw the counter reset');
});
