// The controller, `stat` and `tap` on a simulated node with the real datapath, agent and
// proxy: a client pod (deployment web) calls a server pod (deployment api, one of its two
// pods meshed). The controller and the agent run in the node namespace; the CLI runs there too.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 20000, intervalMs: 200, context: () => `log: ${log.slice(-2000)}` });

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin/mesh-agent.ts');
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
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'controller-e2e-'));
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
  const args = paths.flatMap((p) => ['-o', '/dev/null', `http://${api.ip}:8080${p}`]);
  const r = await web.exec('curl', ['-sS', '-w', '%{http_code}\\n', ...extra, ...args], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`curl from web failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n');
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
  t.deepEqual((await calls(paths)).filter((c) => c === '200').length, 15);
  const rows = await until(() => statJson('deploy', '-n', 'shop'), (r) => r.find((x) => x.name === 'api')?.requests === 20, 'stat shows 20 requests to api');
  const apiRow = rows.find((x) => x.name === 'api');
  t.like(apiRow, { namespace: 'shop', kind: 'deployment', meshed: '1/2', success: 0.75, tcp_open_connections: 0 });
  t.true(apiRow.latency_ms_p50 > 45 && apiRow.latency_ms_p50 < 80, `p50 ${apiRow.latency_ms_p50}`);
  t.true(apiRow.latency_ms_p95 > 45 && apiRow.latency_ms_p95 < 80, `p95 ${apiRow.latency_ms_p95}`);
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

test.serial('stat RPS follows a paced client', async (t) => {
  // 10 requests a second for 8 s; asked over the last 4 s while it runs.
  const paths = Array.from({ length: 80 }, () => '/status/200');
  const running = calls(paths, ['--rate', '10/s']);
  await new Promise((r) => setTimeout(r, 6000));
  const rows = await statJson('deploy', 'api', '-n', 'shop', '-t', '4s');
  t.true(rows[0].rps > 7 && rows[0].rps < 13, `rps ${rows[0].rps}`);
  t.is(rows[0].success, 1);
  t.is(rows[0].tcp_open_connections, 1, 'curl\'s keep-alive connection is open');
  t.true((await running).every((c) => c === '200'));
});

test.serial('tap shows a request within a second, in Linkerd\'s format', async (t) => {
  const tp = tap('deploy/api', '-n', 'shop');
  await tp.started;
  await calls(['/status/201?delay=5']);
  const done = Date.now();
  await until(async () => tp.lines.length, (n) => n >= 3, 'three tap lines', 5000);
  const [req, rsp, end] = tp.lines;
  t.true(req!.at - done < 1000, `tap line ${req!.at - done}ms after the response`);
  const flow = `proxy=out src=${web.ip.replace(/\./g, '\\.')}:\\d+ dst=${api.ip.replace(/\./g, '\\.')}:8080 tls=no_identity`;
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
  await until(async () => tp.lines.length, (n) => n >= 3, 'tap lines', 5000);
  await new Promise((r) => setTimeout(r, 500));
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
  await new Promise((r) => setTimeout(r, 1000));
  const reqs = limited.lines.filter((l) => l.text.startsWith('req ')).length;
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
