// The controller, `stat` and `tap` on a simulated node with the real datapath, agent and
// proxy: a client pod (deployment web) calls a server pod (deployment api, one of its two
// pods meshed). The controller and the agent run in the node namespace; the CLI runs there too.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';
import { bucketOf, LATENCY_BOUNDS } from '../src/telemetry/histogram.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 20000, intervalMs: 200, context: () => `log: ${log.slice(-2000)}` });

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = meshBin();
const SERVER = path.join(ROOT, 'test/fixtures/http-status-server.ts');
const CTL = '127.0.0.1:8086';
const BACKLOG = 6;

let node: SimNode;
let web: SimPod;
let api: SimPod;
let agent: ChildProcess;
let controller: ChildProcess;
let log = '';
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.json');

const owned = (name: string, hash: string, n: number) => ({
  labels: { app: name, 'pod-template-hash': hash },
  ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-${hash}`, uid: `00000000-0000-4000-8000-00000000000${n}`, controller: true }],
});

function spawnLogged(args: string[]): ChildProcess {
  const c = node.spawnInNode(process.execPath, [BIN, ...args]);
  c.stderr!.on('data', (d) => (log += d));
  children.push(c);
  return c;
}
const startController = () => (controller = spawnLogged(['controller', '--listen', CTL, '-q']));

const cli = (...args: string[]) => node.execInNode(process.execPath, [BIN, ...args, '--controller', CTL], { timeoutMs: 20_000 });
async function statJson(...args: string[]): Promise<any[]> {
  const r = await cli('stat', ...args, '-o', 'json');
  if (r.code !== 0) throw new Error(`stat exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
async function agentStatus(): Promise<any> {
  const r = await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status']);
  if (r.code !== 0) throw new Error(`agent status: curl exited ${r.code}`);
  return JSON.parse(r.stdout);
}

/** curl from web to api, one keep-alive connection; returns the status codes curl saw. */
async function calls(paths: string[], extra: string[] = []): Promise<string[]> {
  return (await timedCalls(paths, extra)).map((c) => c.code);
}

/** As calls(), with the time curl took for each request (ms): no proxy can measure more. */
async function timedCalls(paths: string[], extra: string[] = []): Promise<Array<{ code: string; ms: number }>> {
  const args = paths.flatMap((p) => ['-o', '/dev/null', `http://${api.ip}:8080${p}`]);
  const r = await web.exec('curl', ['-sS', '-w', '%{http_code} %{time_total}\\n', ...extra, ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`curl from web failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => {
    const [code, seconds] = l.split(' ');
    return { code: code!, ms: Number(seconds) * 1000 };
  });
}

/** GET on the controller's own API (HTTP/2 cleartext), from the node namespace. */
async function controllerGet(pathAndQuery: string): Promise<any> {
  const r = await node.execInNode('curl', ['-sS', '--fail-with-body', '--http2-prior-knowledge', `http://${CTL}${pathAndQuery}`]);
  if (r.code !== 0) throw new Error(`controller ${pathAndQuery}: curl exited ${r.code}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** `mesh-agent tap` in the node namespace, its stdout lines collected with arrival times. */
function tap(...args: string[]) {
  const c = node.spawnInNode(process.execPath, [BIN, 'tap', ...args, '--controller', CTL]);
  children.push(c);
  const lines: Array<{ at: number; text: string }> = [];
  let stderr = '';
  readline.createInterface({ input: c.stdout! }).on('line', (text) => lines.push({ at: Date.now(), text }));
  c.stderr!.on('data', (d) => (stderr += d));
  const started = until(async () => stderr, (s) => /tapping/.test(s) || c.exitCode !== null, 'tap started', 15_000).then((s) => {
    if (!/tapping/.test(s)) throw new Error(`tap exited ${c.exitCode}: ${s}`);
  });
  return { c, lines, started, stderr: () => stderr };
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the controller e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'systemd' });
  const inject = { 'mesh-agent.io/inject': 'enabled' };
  web = await node.addPod({ name: 'web-5d8f7-aaaaa', namespace: 'shop', annotations: inject, ...owned('web', '5d8f7', 1) });
  api = await node.addPod({ name: 'api-6c9d4-bbbbb', namespace: 'shop', annotations: inject, ...owned('api', '6c9d4', 2) });
  await node.addPod({ name: 'api-6c9d4-ccccc', namespace: 'shop', ...owned('api', '6c9d4', 2) });
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  startController();
  agent = spawnLogged(['run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--drain', '1000', '-q',
    '--controller', CTL, '--report-interval', '500', '--report-backlog', String(BACKLOG)]);
  const srv = api.spawn(process.execPath, [SERVER, '8080']);
  children.push(srv);
  await new JsonLines(srv).waitFor((o) => o.listening, 10_000, 'api listening');
  await until(agentStatus, (s) => s.pods.some((p: any) => p.name === web.name && p.meshed) && s.controller?.state === 'connected', 'web meshed, controller linked');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('stat matches a known mix: 3 of 4 succeed, MESHED counts the meshed pods, latency from the server\'s delay', async (t) => {
  const paths: string[] = [];
  for (let i = 0; i < 5; i++) paths.push('/status/500', '/status/200?delay=60', '/status/200?delay=60', '/status/200?delay=60');
  const done = await timedCalls(paths);
  t.deepEqual(done.filter((c) => c.code === '200').length, 15);
  const rows = await until(() => statJson('deploy', '-n', 'shop'), (r) => r.find((x) => x.name === 'api')?.requests === 20, 'stat shows 20 requests to api');
  const apiRow = rows.find((x) => x.name === 'api');
  t.like(apiRow, { namespace: 'shop', kind: 'deployment', meshed: '1/2', success: 0.75, tcp_open_connections: 0 });
  // p50 and p95 fall on delayed requests (15 of 20), whose latency is at least the server's
  // 60 ms (less 1 ms of timer rounding) and at most what curl saw for it. A percentile read
  // from the histogram lies in the bucket of its request, so between the lower edge of the
  // bucket of 59 ms and the upper edge of the bucket of curl's slowest request.
  const floor = LATENCY_BOUNDS[bucketOf(59) - 1]!;
  const ceiling = LATENCY_BOUNDS[bucketOf(Math.max(...done.map((c) => c.ms)))] ?? Infinity;
  for (const q of ['latency_ms_p50', 'latency_ms_p95']) {
    t.true(apiRow[q] >= floor && apiRow[q] <= ceiling, `${q} ${apiRow[q]} outside [${floor}, ${ceiling}] (curl's slowest: ${Math.max(...done.map((c) => c.ms))} ms)`);
  }
  t.true(apiRow.rps > 0);
  t.like(rows.find((x) => x.name === 'web'), { meshed: '1/1', requests: 0, success: null, rps: null }, 'web only sends');

  const table = await cli('stat', 'deploy', '-n', 'shop');
  t.is(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  t.regex(lines[0]!, /^NAME\s+MESHED\s+SUCCESS\s+RPS\s+LATENCY_P50\s+LATENCY_P95\s+LATENCY_P99\s+TCP_CONN$/);
  t.regex(lines[1]!, /^api\s+1\/2\s+75\.00%\s+\d+\.\drps\s+\d+ms\s+\d+ms\s+\d+ms\s+0$/);
  t.regex(lines[2]!, /^web\s+1\/1\s+-\s+-\s+-\s+-\s+-\s+0$/);
  const pod = await statJson('pod', api.name, '-n', 'shop');
  t.like(pod[0], { name: api.name, requests: 20, meshed: '1/1' });
  const ns = await statJson('ns');
  t.like(ns.find((x) => x.name === 'shop'), { requests: 20, meshed: '2/3' });
  const missing = await cli('stat', 'deploy', 'nope', '-n', 'shop');
  t.is(missing.code, 1);
  t.regex(missing.stderr, /deploy\/nope not found in namespace shop/);
  t.is((await cli('stat', 'svc')).code, 2, 'usage error');
});

test.serial('stat RPS is the window\'s requests over its length; TCP_CONN counts an open connection', async (t) => {
  // A quiet start: once the controller has two reports newer than its count now, the report
  // holding the last request of the test before has ended (reports are consecutive), so a
  // window starting later counts none of that test's requests.
  const node0 = async () => (await controllerGet('/v1/status')).nodes[0];
  const received = (await node0()).received;
  await until(node0, (n) => n.received >= received + 2, 'two more reports');
  const quietFrom = Date.now();
  await new Promise((r) => setTimeout(r, 3000)); // room for the window's start, checked below
  const pacedFrom = Date.now();
  const paths = Array.from({ length: 40 }, () => '/status/200');
  t.true((await calls(paths, ['--rate', '10/s'])).every((c) => c === '200'));
  const statOf = async (window: string) => (await controllerGet(`/v1/stat?${new URLSearchParams({ kind: 'deployment', namespace: 'shop', name: 'api', window })}`));
  const total = async () => (await statOf('1h')).rows[0]?.requests;
  const before = 20; // the first test's
  await until(total, (n) => n === before + 40, 'the controller has the 40 paced requests');
  // A window from inside the quiet stretch to now holds exactly the 40 paced requests, and
  // RPS is them over its length. The controller's now is between our asking and its answer.
  let checked = false;
  for (let attempt = 0; attempt < 5 && !checked; attempt++) {
    const askedAt = Date.now();
    const seconds = Math.floor((askedAt - quietFrom) / 1000);
    const res = await statOf(`${seconds}s`);
    const answeredAt = Date.now();
    if (answeredAt - seconds * 1000 > pacedFrom) continue; // the window may have started after the first paced request: ask again
    checked = true;
    t.is(res.coveredMs, seconds * 1000, 'the reports cover the whole window');
    t.like(res.rows[0], { requests: 40, successes: 40 });
    t.is(res.rows[0].rps, (40 * 1000) / res.coveredMs);
  }
  t.true(checked, 'no answer came back quickly enough to pin the window (each took longer than the 3 s quiet stretch)');

  // An open connection, held by a request the server answers in 10 minutes.
  const held = web.spawn('curl', ['-sS', '-o', '/dev/null', `http://${api.ip}:8080/status/200?delay=600000`]);
  children.push(held);
  await until(() => statJson('deploy', 'api', '-n', 'shop'), (r) => r[0]?.tcp_open_connections === 1, 'TCP_CONN 1 while curl waits');
  // The proxy keeps a client that went away mid-request until the answer (a half-close is
  // legal in HTTP/1), so the count stays; the node goes with the file.
  held.kill('SIGKILL');
});

test.serial('tap streams a request as it happens, in Linkerd\'s format', async (t) => {
  const tp = tap('deploy/api', '-n', 'shop');
  await tp.started;
  await calls(['/status/201?delay=5']);
  const done = Date.now();
  // Streamed as it happens: the lines come with no further traffic (no batch to fill).
  await until(async () => tp.lines.length, (n) => n >= 3, 'three tap lines');
  const [req, rsp, end] = tp.lines;
  t.log(`tap line ${req!.at - done} ms after the response`);
  // Tapping the server: its proxy's side, Linkerd's proxy=in.
  const flow = `proxy=in src=${web.ip.replace(/\./g, '\\.')}:\\d+ dst=${api.ip.replace(/\./g, '\\.')}:8080 tls=no_identity`;
  t.regex(req!.text, new RegExp(`^req id=0:1 ${flow} :method=GET :authority=${api.ip.replace(/\./g, '\\.')}:8080 :path=/status/201\\?delay=5$`));
  t.regex(rsp!.text, new RegExp(`^rsp id=0:1 ${flow} :status=201 latency=\\d+µs$`));
  const latency = Number(/latency=(\d+)µs/.exec(rsp!.text)![1]);
  // libuv runs a timer against the loop's cached clock, so a 5 ms server delay can end up to 1 ms early.
  t.true(latency >= 4000, `latency ${latency}µs covers the server's 5 ms delay (less libuv's 1 ms timer granularity)`);
  t.regex(end!.text, new RegExp(`^end id=0:1 ${flow} duration=\\d+µs response-length=\\d+B$`));
  // The proxy counts the response as it forwarded it (for HTTP/1 the head too): at least the 4-byte body.
  t.true(Number(/response-length=(\d+)B/.exec(end!.text)![1]) >= 4);
  tp.c.kill('SIGINT');
  t.is(await exited(tp.c), 0);
  await until(agentStatus, (s) => s.controller.activeTaps === 0, 'the agent dropped the tap when the CLI left');
});

test.serial('tap honours --method, --path and --max-rps; -o json', async (t) => {
  const tp = tap('deploy/api', '-n', 'shop', '--method', 'GET', '--path', '/status/202', '-o', 'json');
  await tp.started;
  await calls(['/status/202'], ['-X', 'POST']);
  await calls(['/status/203', '/status/202?x=1']);
  // One agent streams its events in order: had the filters let the POST or /status/203
  // through, their lines would come before those of the one request that matches.
  await until(async () => tp.lines.length, (n) => n >= 3, 'tap lines');
  const objs = tp.lines.map((l) => JSON.parse(l.text));
  t.deepEqual(objs.map((o) => o.type), ['req', 'rsp', 'end'], 'only the GET of /status/202');
  t.like(objs[0], { method: 'GET', path: '/status/202?x=1', source: { ip: web.ip, resource: 'deploy/web', namespace: 'shop' }, destination: { ip: api.ip, resource: 'deploy/api' } });
  tp.c.kill('SIGINT');
  await exited(tp.c);

  const limited = tap('deploy/api', '-n', 'shop', '--max-rps', '2');
  await limited.started;
  const callsStart = Date.now();
  await calls(Array.from({ length: 30 }, () => '/status/200'));
  const callsSeconds = (Date.now() - callsStart) / 1000;
  const reqLines = () => limited.lines.filter((l) => l.text.startsWith('req ')).length;
  await until(async () => reqLines(), (n) => n >= 1, 'a tap line at --max-rps 2');
  // The count only grows toward its final value, which the bound holds; a second more lets
  // late lines in, so that a limiter that passes everything is caught.
  await new Promise((r) => setTimeout(r, 1000));
  const reqs = reqLines();
  // A burst of 2, then 2 a second while the requests ran: a loaded machine runs the 30 slower, and may show more.
  const most = Math.floor(2 + 2 * (callsSeconds + 0.5));
  t.true(reqs >= 1 && reqs <= most && reqs < 30, `${reqs} of 30 requests shown at --max-rps 2 in ${callsSeconds}s (at most ${most})`);
  limited.c.kill('SIGINT');
  await exited(limited.c);
});

test.serial('with the controller stopped, applications see no errors; the backlog stays at its bound and drops are counted; the agent reconnects', async (t) => {
  controller.kill('SIGTERM');
  t.is(await exited(controller), 0);
  const codes = await calls(Array.from({ length: 40 }, () => '/status/200'), ['--rate', '20/s']);
  t.deepEqual(codes.filter((c) => c !== '200'), [], 'every request answered while the controller is away');
  const s1 = await until(agentStatus, (s) => s.controller.backlog === BACKLOG && s.controller.dropped > 0, 'backlog full');
  const s2 = await until(agentStatus, (s) => s.controller.dropped > s1.controller.dropped, 'drops rising');
  t.is(s2.controller.backlog, BACKLOG, 'the backlog stays at its bound');
  t.not(s2.controller.state, 'connected');
  const st = await node.execInNode(process.execPath, [BIN, 'status', '--admin', '127.0.0.1:4191']);
  t.regex(st.stdout, new RegExp(`CONTROLLER http://${CTL.replace(/\./g, '\\.')}: (backoff|connecting).*backlog ${BACKLOG}/${BACKLOG}.*dropped \\d+`));

  startController();
  await until(agentStatus, (s) => s.controller.state === 'connected' && s.controller.backlog === 0, 'reconnected and drained');
  const r = await node.execInNode('curl', ['-sf', '--http2-prior-knowledge', `http://${CTL}/v1/status`]);
  const ctl = JSON.parse(r.stdout);
  t.like(ctl.nodes[0], { node: node.name, live: true });
  t.true(ctl.nodes[0].dropped > 0, 'the controller learns how many reports were lost');
  const rows = await until(() => statJson('deploy', 'api', '-n', 'shop'), (x) => x[0]?.meshed === '1/2', 'inventory back');
  t.is(rows[0].meshed, '1/2');
});
