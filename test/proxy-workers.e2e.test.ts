// The agent's proxy on several threads (`--proxy-workers`, docs/proxy.md "Workers") on a
// simulated node with the real datapath: the kernel spreads connections over the proxies'
// SO_REUSEPORT listeners; what the agent reports (metrics, reports, stat) is what one proxy
// gives; a worker that dies is replaced within 1 s while the others' connections go on; SIGTERM drains
// them all without a failed request; a worker's first HTTP/2 connection is served (node:http2
// loads in that thread when idle on a meshed node, or in that connection: src/util/builtins.ts).
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines, JsonRpc } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';
import { parseExposition, type Sample } from './helpers/prom-text.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = meshBin();
const RUNNER = path.join(ROOT, 'test/fixtures/agent-runner.ts');
const STATUS_SERVER = path.join(ROOT, 'test/fixtures/http-status-server.ts');
const SERVICE_TOOLS = path.join(ROOT, 'src/sim/service-tools.ts');
const ADMIN = '127.0.0.1:4191';
const CTL = '127.0.0.1:8086';
const PROXY_PORT = 15001;

let node: SimNode;
let clients: SimPod[];
let server: SimPod;
let log = '';
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.json');

// A bound on an agent's or a load process's start: generous, since a start with both cores busy
// (CI with other suites, or stress) took over 15 s; a passing run waits only for the event.
const STARTUP_MS = 60_000;
const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms = 20_000) =>
  untilWith(f, ok, what, { ms, intervalMs: 150, context: () => `log: ${log.slice(-3000)}` });

const owned = (name: string, hash: string, n: number) => ({
  labels: { app: name, 'pod-template-hash': hash },
  ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-${hash}`, uid: `00000000-0000-4000-8000-00000000000${n}`, controller: true }],
});

function spawnInNode(args: string[]): ChildProcess {
  const c = node.spawnInNode(process.execPath, args);
  c.stderr!.on('data', (d) => (log += d));
  children.push(c);
  return c;
}

async function get(url: string): Promise<string> {
  const r = await node.execInNode('curl', ['-sSf', url]);
  if (r.code !== 0) throw new Error(`curl ${url}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}
const status = async () => JSON.parse(await get(`http://${ADMIN}/status`));
const metrics = async () => parseExposition(await get(`http://${ADMIN}/metrics`));

/** `mesh-agent run` with N proxies (reporting to the controller if asked); resolves once ready (and linked). */
async function startAgent(workers: number, extra: string[] = [], controller = false): Promise<ChildProcess> {
  const a = spawnInNode([BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:${PROXY_PORT}`,
    '--admin', ADMIN, '--proxy-workers', String(workers), ...(controller ? ['--controller', CTL, '--report-interval', '300'] : []), ...extra]);
  await until(status, (s) => s.proxy.workers.length === workers && s.proxy.workers.every((w: any) => w.state === 'running') && (!controller || s.controller?.state === 'connected')
    && clients.every((c) => s.pods.some((p: any) => p.name === c.name && p.meshed)), `${workers} proxies running${controller ? ' and linked' : ''}`, STARTUP_MS);
  return a;
}

/**
 * Keep-alive HTTP loads (one connection each), perClient from every client, then one more at a
 * time until every proxy holds some: the kernel's SO_REUSEPORT hash puts n connections all on
 * one of two proxies 2^(1-n) of the time. Each decision waits for a status whose proxies have
 * accepted every load's connection, so it never reads stats from before the last one.
 */
async function loadsOnEveryProxy(perClient: number, rps: number): Promise<{ loads: JsonLines[]; held: any }> {
  const loads: JsonLines[] = [];
  const start = async (c: SimPod) => {
    const p = c.spawn(process.execPath, [SERVICE_TOOLS, 'load', '--http', `${server.ip}:8081`, '--rps', String(rps), '--tick-ms', '200'], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(p);
    const l = new JsonLines(p);
    loads.push(l);
    await l.waitFor((o) => o.tick?.byName?.api > 0, STARTUP_MS, 'load flowing');
  };
  await Promise.all(clients.flatMap((c) => Array.from({ length: perClient }, () => start(c))));
  for (let extra = 0; ; extra++) {
    const s = await until(status, (x) => x.proxy.workers.reduce((n: number, w: any) => n + w.accepted, 0) >= loads.length, `the proxies' stats counting all ${loads.length} load connections`);
    if (s.proxy.workers.every((w: any) => w.open > 0)) return { loads, held: s };
    if (extra === 20) throw new Error(`${loads.length} connections and still a proxy without one: ${JSON.stringify(s.proxy.workers)}`);
    await start(clients[extra % clients.length]!);
  }
}

async function stopAgent(a: ChildProcess): Promise<void> {
  a.kill('SIGTERM');
  await exited(a);
}

/** SIGTERM to the agent under the keep-alive loads: it exits 0, the loads go on directly, and no request of theirs failed. */
async function sigtermWithoutFailures(t: import('ava').ExecutionContext, agent: ChildProcess, loads: JsonLines[]): Promise<void> {
  agent.kill('SIGTERM');
  t.is(await exited(agent), 0, `the agent exits 0; log: ${log.slice(-2000)}`);
  const after = loads.map((l) => l.lines.length);
  // The loads go on, now directly: wait for requests after the agent is gone, then stop them.
  await Promise.all(loads.map((l, i) => l.waitFor((o) => l.lines.indexOf(o) > after[i]! && o.tick?.byName?.api > 0, 15_000, 'load flowing without the agent')));
  for (const l of loads) l.child.stdin!.end();
  await Promise.all(loads.map((l) => l.waitFor((o) => o.stopped, 20_000, 'load stopped')));
  const failures = loads.flatMap((l) => l.lines.filter((o) => o.tick?.failures > 0).map((o) => o.tick.errors));
  t.deepEqual(failures, [], 'no request failed');
}

async function tool(pod: SimPod, args: string[]): Promise<any[]> {
  const r = await pod.exec(process.execPath, [TOOLS_PATH, ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')} in ${pod.name} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the proxy worker tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'systemd' });
  const inject = { 'mesh-agent.io/inject': 'enabled' };
  clients = [];
  for (const [i, s] of ['aaaaa', 'bbbbb', 'ccccc'].entries()) clients.push(await node.addPod({ name: `web-5d8f7-${s}`, namespace: 'shop', annotations: inject, ...owned('web', '5d8f7', 1 + i) }));
  server = await node.addPod({ name: 'api-6c9d4-ddddd', namespace: 'shop', annotations: inject, ...owned('api', '6c9d4', 4) });
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  const echo = server.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '9090']);
  const http = server.spawn(process.execPath, [STATUS_SERVER, '8080']);
  const backend = server.spawn(process.execPath, [SERVICE_TOOLS, 'backend', '--name', 'api', '--http', '8081', '--grpc', '50051']);
  children.push(echo, http, backend);
  await Promise.all([
    new JsonLines(echo).waitFor((o) => o.listening !== undefined, 15_000, 'echo listening'),
    new JsonLines(http).waitFor((o) => o.listening, 15_000, 'http listening'),
    new JsonLines(backend).waitFor((o) => o.listening, 15_000, 'backend listening'),
  ]);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('with 2 proxies, 1,000 connections from three pods are spread by the kernel: each proxy takes at least a quarter', async (t) => {
  const agent = await startAgent(2);
  try {
    const before = await status();
    const runs = await Promise.all(clients.map((c) => tool(c, ['tcp-many', '--connect', `${server.ip}:9090`, '--count', '334', '--timeout-ms', '60000'])));
    t.deepEqual(runs.map((r) => r.at(-1)), clients.map(() => ({ ok: 334 })));
    const s = await status();
    const took = s.proxy.workers.map((w: any, i: number) => w.accepted - before.proxy.workers[i].accepted);
    const total = took.reduce((a: number, b: number) => a + b, 0);
    t.is(total, 1002, 'every connection went through one of the proxies');
    t.is(s.proxy.accepted - before.proxy.accepted, total, 'the agent\'s count is the proxies\' sum');
    for (const [i, n] of took.entries()) t.true(n >= total / 4, `proxy ${i} took ${n} of ${total}`);
    t.deepEqual(s.proxy.workers.map((w: any) => [w.index, w.thread, w.state, w.restarts]), [[0, 'main', 'running', 0], [1, 'worker', 'running', 0]]);
    t.true(s.proxy.workers.every((w: any) => w.cpuSeconds > 0), 'CPU is counted per proxy');
    const m = await metrics();
    const accepted = m.samples.filter((x) => x.name === 'mesh_agent_proxy_worker_accepted_total');
    t.deepEqual(accepted.map((x) => x.labels.worker), ['0', '1']);
  } finally {
    await stopAgent(agent);
  }
});

/** Families whose values a known mix fixes (no latencies, no durations): name -> labels -> value. */
const EXACT = ['request_total', 'response_total', 'tcp_open_total', 'tcp_close_total', 'tcp_open_connections', 'tcp_read_bytes_total', 'tcp_write_bytes_total',
  'mesh_agent_protocol_detect_total', 'response_latency_ms_count', 'tcp_connection_duration_ms_count'];
function exact(samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) if (EXACT.includes(s.name)) out[`${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`] = s.value;
  return out;
}

/**
 * The mix: from each client, HTTP/1 requests with known statuses (one keep-alive connection per
 * curl, several curls, so the connections spread) and opaque connections; 120 requests, 96 of them
 * successful, 30 echo connections.
 */
async function mix(): Promise<void> {
  await Promise.all(clients.map(async (c) => {
    for (let round = 0; round < 4; round++) {
      const paths = ['200', '200', '503', '404', '200', '500', '200', '204', '200', '201'].map((code) => `http://${server.ip}:8080/status/${code}`);
      const r = await c.exec('curl', ['-sS', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', ...paths], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`curl in ${c.name}: ${r.stderr}`);
    }
    await tool(c, ['tcp-many', '--connect', `${server.ip}:9090`, '--count', '10']);
  }));
}

async function statOf(): Promise<any[]> {
  const r = await node.execInNode(process.execPath, [BIN, 'stat', 'deploy', '-n', 'shop', '-o', 'json', '--controller', CTL], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`stat: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
const statCounts = (rows: any[]) => rows.map((r) => ({ name: r.name, meshed: r.meshed, requests: r.requests, success: r.success, tcp: r.tcp_open_connections }))
  .sort((a, b) => a.name.localeCompare(b.name));

test.serial('a known mix through 2 proxies gives the metrics, the reports and the stat one proxy gives', async (t) => {
  const seen: Array<{ metrics: Record<string, number>; stat: any[]; open: number }> = [];
  for (const workers of [1, 2]) {
    // A fresh controller per run: stat covers what this agent reported, and nothing before.
    const ctl = spawnInNode([BIN, 'controller', '--listen', CTL, '-q']);
    const agent = await startAgent(workers, [], true);
    try {
      await mix();
      // Every connection of the mix has closed (curl and the echo client exit when done).
      const s = await until(status, (x) => x.proxy.open === 0 && x.proxy.accepted >= 3 * (4 + 10), 'the mix\'s connections closed');
      const m = exact((await metrics()).samples);
      // Every request counted, and a report after the last connection closed (TCP_CONN is a gauge
      // of the latest report: one cut while a connection was still open says 1).
      const rows = await until(statOf, (r) => r.find((x) => x.name === 'api')?.requests === 120 && r.every((x) => x.tcp_open_connections === 0), 'the controller has every request of the mix, and the connections closed', 30_000);
      seen.push({ metrics: m, stat: statCounts(rows), open: s.proxy.open });
      if (workers === 2) {
        const took = s.proxy.workers.map((w: any) => w.accepted);
        t.true(took.every((n: number) => n > 0), `both proxies carried part of the mix: ${took}`);
      }
    } finally {
      await stopAgent(agent);
      ctl.kill('SIGTERM');
      await exited(ctl);
    }
  }
  const [one, two] = seen;
  t.true(Object.keys(one!.metrics).length > 20, 'the mix made series');
  t.deepEqual(two!.metrics, one!.metrics, 'metrics');
  t.deepEqual(two!.stat, one!.stat, 'stat, from the reports');
  t.like(one!.stat.find((r: any) => r.name === 'api'), { requests: 120, success: 0.8 });
});

test.serial('a proxy worker ended under load is restarted at once and listens again within 1 s; the other proxy\'s connections go on; the restart is counted', async (t) => {
  const runnerLog: string[] = [];
  const proc = node.spawnInNode(process.execPath, [RUNNER, JSON.stringify({
    nodeName: node.name, cgroupRoot: node.cgroupRoot, proxy: { ip: node.nodeIp, port: PROXY_PORT }, podsFile, admin: { host: '127.0.0.1', port: 4191 }, proxyWorkers: 2,
  })]);
  children.push(proc);
  proc.stderr!.on('data', (d) => runnerLog.push(String(d)));
  const rpc = new JsonRpc(proc);
  await rpc.io.waitFor((o) => o.ready || o.error, 30_000, 'agent ready').then((o) => {
    if (o.error) throw new Error(o.error);
  });
  try {
    const { loads, held } = await loadsOnEveryProxy(3, 50);
    const mainOpen = held.proxy.workers[0].open;
    const ticksBefore = loads.map((l) => l.lines.length);
    await rpc.call('killWorker', [1]);
    const replaced = await until(async () => runnerLog.join(''), (l) => /proxy worker 1 replaced/.test(l), 'the replacement listening', 10_000);
    const ms = Number(/proxy worker 1 replaced: listening (\d+) ms/.exec(replaced)![1]);
    // Issue 16: replaced within 1 s. A start is ~150 ms of the new thread's CPU; at a fair share
    // of a loaded CPU that took 0.4-1.6 s with a CPU hog beside, so a replacement's thread starts
    // raised until it listens (src/workers/priority.ts): 168-506 ms with the hog beside, under 1 s
    // at load average 10-21 (docs/benchmarks.md, "A worker's start"). And the first restart has no backoff.
    t.log(`replaced ${ms} ms after the worker ended`);
    t.true(ms < 1000, `proxy worker 1 listened again ${ms} ms after it ended: issue 16 asks for 1 s; a replacement starts raised (src/workers/priority.ts) unless the agent lacks CAP_SYS_NICE, which its log then says`);
    t.regex(replaced, /proxy worker 1 exited \([^)]*\); restarting it, the other proxies keep serving/, 'restarted at once, not after a backoff');
    const s = await status();
    t.like(s.proxy.workers[1], { state: 'running', restarts: 1 });
    const m = await metrics();
    t.is(m.samples.find((x) => x.name === 'mesh_agent_proxy_worker_restarts_total' && x.labels.worker === '1')?.value, 1);
    // The main thread's proxy was untouched: its connections are the ones it had, still carrying requests.
    t.true(s.proxy.workers[0].open >= mainOpen, 'the other proxy kept its connections');
    // Requests keep succeeding everywhere after the replacement (the loads reconnect as a client would).
    await Promise.all(loads.map((l, i) => l.waitFor((o) => l.lines.indexOf(o) > ticksBefore[i]! + 5 && o.tick?.byName?.api > 0, 15_000, 'load flowing after')));
    for (const l of loads) l.child.stdin!.end();
    const done = await Promise.all(loads.map((l) => l.waitFor((o) => o.stopped, 20_000, 'load stopped')));
    t.is(done.length, loads.length);
    const failed = loads.map((l) => l.lines.reduce((n, o) => n + (o.tick?.failures ?? 0), 0));
    // Only requests in flight on the ended worker's connections may fail: at most one per load on it.
    t.log(`failures per load: ${failed}`);
    t.true(failed.reduce((a, b) => a + b, 0) <= loads.length, `failures per load: ${failed}`);
  } finally {
    await rpc.call('stop', [1000]).catch(() => {});
    await exited(proc);
  }
});

test.serial('with 2 proxies, gRPC calls on new connections are served by both, the worker thread\'s first HTTP/2 connection included', async (t) => {
  // A worker makes its HTTP/2 server on its first HTTP/2 connection (node:http2 loaded already,
  // its node having meshed pods: test/worker-heap.test.ts). One call per connection until the
  // worker has taken one; the kernel's SO_REUSEPORT hash puts n connections all on the main
  // thread 2^-n of the time.
  const agent = await startAgent(2);
  try {
    for (let calls = 1; ; calls++) {
      const c = clients[calls % clients.length]!;
      const r = await c.exec(process.execPath, [SERVICE_TOOLS, 'load', '--grpc', `${server.ip}:50051`, '--requests', '1', '--concurrency', '1'], { timeoutMs: 60_000 });
      t.is(r.code, 0, r.stderr);
      const done = JSON.parse(r.stdout.trim().split('\n').at(-1)!).done;
      t.deepEqual({ byName: done.byName, errors: done.errors }, { byName: { api: 1 }, errors: {} }, `call ${calls} failed; log: ${log.slice(-2000)}`);
      const s = await until(status, (x) => x.proxy.workers.reduce((n: number, w: any) => n + w.accepted, 0) >= calls, `the proxies' stats counting all ${calls} connections`);
      if (s.proxy.workers[1].accepted > 0) {
        t.log(`the worker took its first connection at call ${calls}`);
        break;
      }
      if (calls === 30) throw new Error(`30 connections and the worker took none: ${JSON.stringify(s.proxy.workers)}`);
    }
  } finally {
    await stopAgent(agent);
  }
});

test.serial('SIGTERM with 2 proxies on Node\'s streams (--no-native-io): keep-alive clients in a loop see no failed request while the agent drains and exits', async (t) => {
  const agent = await startAgent(2, ['--no-native-io', '--drain', '5000']);
  const { loads } = await loadsOnEveryProxy(2, 200);
  const s = await status();
  t.true((s.proxy.byProtocol.http1 ?? 0) >= loads.length, `HTTP/1 connections: ${JSON.stringify(s.proxy.byProtocol)}`);
  t.is(s.proxy.nativeIoClients, undefined, 'no socket is driven from C++');
  await sigtermWithoutFailures(t, agent, loads);
});

test.serial('sockets driven from C++ by default, on both proxies: keep-alive loads through 2 proxies, then SIGTERM with no failed request', async (t) => {
  const agent = await startAgent(2, ['--drain', '5000']);
  const { loads } = await loadsOnEveryProxy(2, 100);
  // Requests flow on every load's connection (each proxy holds at least one) before the count is read.
  const ticks = loads.map((l) => l.lines.length);
  await Promise.all(loads.map((l, i) => l.waitFor((o) => l.lines.indexOf(o) > ticks[i]! + 2 && o.tick?.byName?.api > 0, 15_000, 'load flowing')));
  const s = await status();
  t.true(s.proxy.workers.every((w: any) => w.open > 0), `both proxies hold connections: ${JSON.stringify(s.proxy.workers.map((w: any) => w.open))}`);
  const http1 = s.proxy.byProtocol.http1 ?? 0;
  t.true(http1 >= loads.length, `HTTP/1 connections: ${http1}`);
  // Every HTTP/1 client connection, on either proxy, was adopted; so were their upstreams.
  t.is(s.proxy.nativeIoClients, http1, 'every HTTP/1 client socket is driven from C++');
  t.true(s.proxy.nativeIoUpstreams >= 1, `upstreams driven from C++: ${s.proxy.nativeIoUpstreams}`);
  await sigtermWithoutFailures(t, agent, loads);
});
