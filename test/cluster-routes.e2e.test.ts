// Issue 13's proofs on a simulated 2-node cluster, through the real datapath, agents and
// controller: HTTPRoute and GRPCRoute objects in the stand-in API server (their kinds registered
// as installing the CRDs would), the controller streaming them, meshed clients' requests routed,
// split, retried and timed out by the agent on their node. Real clients and servers
// (src/sim/service-tools.ts, curl). Mechanics in process: test/routing-proxy-routes.test.ts.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type KubeObject, type SimCluster, type SimPod, type SimService } from '../src/sim/index.ts';
import { ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { CONTROLLER_NAME } from '../src/routing/gateway-api.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let client: SimPod;
const svcs: Record<string, SimService> = {};
/** Backend processes by pod name, and the version (or Service) each serves. */
const backends = new Map<string, { pod: SimPod; io: JsonLines; group: string }>();

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function backend(node: number, group: string, labels: Record<string, string>): Promise<void> {
  const pod = await cluster!.addPod(node, { deployment: group, namespace: NS, labels, ports: [{ name: 'grpc', containerPort: 50051 }, { name: 'http', containerPort: 8080 }] });
  const proc: ChildProcess = pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', pod.name, '--grpc', '50051', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const io = new JsonLines(proc);
  await io.waitFor((o) => o.listening, 30_000, `${pod.name} listening`);
  backends.set(pod.name, { pod, io, group });
}

async function tell(name: string, cmd: object): Promise<any> {
  const b = backends.get(name)!;
  const n = b.io.lines.length;
  b.io.child.stdin!.write(JSON.stringify(cmd) + '\n');
  return b.io.waitFor((o) => b.io.lines.indexOf(o) >= n && (o.ok || o.count), 10_000, `${name} answering ${JSON.stringify(cmd)}`);
}

const podsOf = (group: string) => [...backends].filter(([, b]) => b.group === group).map(([n]) => n);
async function tellAll(group: string, cmd: object): Promise<any[]> {
  return Promise.all(podsOf(group).map((n) => tell(n, cmd)));
}
/** HTTP requests a group's pods saw, requests they saw cancelled, and attempts per x-request-id (summed over pods). */
async function counts(group: string): Promise<{ http: number; cancelled: number; attempts: Record<string, number> }> {
  const out = { http: 0, cancelled: 0, attempts: {} as Record<string, number> };
  for (const c of await tellAll(group, { count: true })) {
    out.http += c.count.http;
    out.cancelled += c.count.cancelled;
    for (const [id, n] of Object.entries(c.count.attempts as Record<string, number>)) out.attempts[id] = (out.attempts[id] ?? 0) + n;
  }
  return out;
}

/** Runs the load client in the client pod to the end. */
async function load(args: string[]): Promise<{ byName: Record<string, number>; failures: number; errors: Record<string, number> }> {
  const r = await client.exec(process.execPath, [SERVICE_TOOLS_PATH, 'load', ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`load ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const done = lines.find((l) => l.done)?.done;
  if (done) return done;
  // A paced run: the sum of its ticks.
  const sum = { byName: {} as Record<string, number>, failures: 0, errors: {} as Record<string, number> };
  for (const l of lines) if (l.tick) {
    for (const [k, v] of Object.entries(l.tick.byName as Record<string, number>)) sum.byName[k] = (sum.byName[k] ?? 0) + v;
    sum.failures += l.tick.failures;
    for (const [k, v] of Object.entries(l.tick.errors as Record<string, number>)) sum.errors[k] = (sum.errors[k] ?? 0) + v;
  }
  return sum;
}

/** Requests per backend group (version), from the answers' pod names. */
function byGroup(byName: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, n] of Object.entries(byName)) {
    const g = backends.get(name)?.group ?? `unknown:${name}`;
    out[g] = (out[g] ?? 0) + n;
  }
  return out;
}

const route = (kind: 'HTTPRoute' | 'GRPCRoute', name: string, parent: string, port: number, rules: object[], annotations: Record<string, string> = {}): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind, metadata: { name, namespace: NS, annotations },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: parent, port }], rules },
});
const to = (svc: string, port: number, weight = 1) => ({ name: svc, port, weight });
const split = (v1: number, v2: number) => route('HTTPRoute', 'api-split', 'api', 80, [
  { matches: [{ headers: [{ name: 'x-canary', value: '1' }] }], backendRefs: [to('api-v2', 80)] },
  { backendRefs: [to('api-v1', 80, v1), to('api-v2', 80, v2)] },
]);

const headerMod = (type: 'RequestHeaderModifier' | 'ResponseHeaderModifier', m: object) =>
  ({ type, [type === 'RequestHeaderModifier' ? 'requestHeaderModifier' : 'responseHeaderModifier']: m });
/** One rule of each of the route features the agent serves, on the Service edge (the api pods). */
const edgeRoute = route('HTTPRoute', 'edge-filters', 'edge', 80, [
  {
    matches: [{ path: { type: 'PathPrefix', value: '/old' } }],
    filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'new.example', statusCode: 301, path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }],
  },
  {
    matches: [{ queryParams: [{ type: 'Exact', name: 'canary', value: '1' }] }],
    filters: [
      headerMod('RequestHeaderModifier', { set: [{ name: 'x-test-set', value: 'route' }], add: [{ name: 'x-test-add', value: 'route' }], remove: ['x-test-remove'] }),
      headerMod('ResponseHeaderModifier', { set: [{ name: 'x-test-resp', value: 'route' }], remove: ['content-type'] }),
    ],
    backendRefs: [to('api-v2', 80)],
  },
  {
    backendRefs: [to('api-v1', 80), {
      ...to('api-v2', 80),
      filters: [
        headerMod('RequestHeaderModifier', { set: [{ name: 'x-test-backend', value: 'v2' }] }),
        headerMod('ResponseHeaderModifier', { set: [{ name: 'x-test-from', value: 'v2' }] }),
      ],
    }],
  },
]);

/** curl in the client pod; its stdout. */
async function curl(args: string[]): Promise<string> {
  const r = await client.exec('curl', ['-sS', '-m', '10', ...args], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`curl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The values of each x-test-* field line a backend's /headers answer lists, in order. */
function testHeaders(pairs: Array<[string, string]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [n, v] of pairs) if (n.startsWith('x-test-')) (out[n] ??= []).push(v);
  return out;
}

/** Until every agent's discovery holds this route with these weights in its last rule (the event that it is applied). */
async function routeOnAgents(name: string, check: (r: any) => boolean, what: string): Promise<void> {
  const { mesh } = need();
  for (const node of cluster!.nodes) {
    await until(async () => {
      const r = await mesh.cli(['diagnostics', 'policy', 'svc/api', '-n', NS, '--node', node.name, '-o', 'json', '--controller', mesh.controllerAddr]);
      if (r.code !== 0) throw new Error(r.stderr);
      return JSON.parse(r.stdout).agents[0].result.ports as any[];
    }, (ports) => ports.some((p) => p.rules.some((x: any) => x.route.name === name && check(x))), `${what} on ${node.name}`, { ms: 30_000, context: () => mesh.logs() });
  }
}

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  for (const r of ROUTE_RESOURCES) cluster.api.register(r);
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  client = await cluster.addPod(0, { name: 'client', namespace: NS });
  await backend(0, 'v1', { app: 'api', version: 'v1' });
  await backend(1, 'v1', { app: 'api', version: 'v1' });
  await backend(1, 'v2', { app: 'api', version: 'v2' });
  await backend(0, 'flaky', { app: 'flaky' });
  await backend(1, 'flaky', { app: 'flaky' });
  await backend(1, 'down', { app: 'down' });
  await backend(1, 'slow', { app: 'slow' });
  const ports = [{ name: 'grpc', port: 50051, targetPort: 'grpc' }, { name: 'http', port: 80, targetPort: 'http' }];
  svcs.api = cluster.addService({ name: 'api', namespace: NS, selector: { app: 'api' }, ports });
  svcs['api-v1'] = cluster.addService({ name: 'api-v1', namespace: NS, selector: { app: 'api', version: 'v1' }, ports });
  svcs['api-v2'] = cluster.addService({ name: 'api-v2', namespace: NS, selector: { app: 'api', version: 'v2' }, ports });
  // Linkerd's annotations, as a Linkerd user writes them.
  svcs.flaky = cluster.addService({ name: 'flaky', namespace: NS, selector: { app: 'flaky' }, ports, annotations: { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '1' } });
  svcs.down = cluster.addService({ name: 'down', namespace: NS, selector: { app: 'down' }, ports, annotations: { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '3' } });
  svcs.slow = cluster.addService({ name: 'slow', namespace: NS, selector: { app: 'slow' }, ports });
  // The api pods again, under a route with every filter and a query match (its own Service, so
  // the api tests' route and timings are untouched).
  svcs.edge = cluster.addService({ name: 'edge', namespace: NS, selector: { app: 'api' }, ports });
  // A headless Service of the v1 pods (clusterIP None, no kube-proxy rules), the backend of a route on its own parent.
  svcs['api-v1-pods'] = cluster.addService({ name: 'api-v1-pods', namespace: NS, selector: { app: 'api', version: 'v1' }, ports, headless: true });
  svcs.front = cluster.addService({ name: 'front', namespace: NS, selector: { app: 'api' }, ports });
  cluster.apply(route('HTTPRoute', 'to-headless', 'front', 80, [{ backendRefs: [to('api-v1-pods', 80)] }]));
  cluster.apply(split(90, 10));
  cluster.apply(route('GRPCRoute', 'api-grpc', 'api', 50051, [
    { matches: [{ method: { service: 'meshtest.Echo', method: 'Count' } }], backendRefs: [to('api-v2', 50051)] },
    { backendRefs: [to('api-v1', 50051)] },
  ]));
  cluster.apply(route('HTTPRoute', 'slow-timeout', 'slow', 80, [{ timeouts: { request: '500ms' } }]));
  cluster.apply(edgeRoute);
  await cluster.settled();
  mesh = await startMesh(cluster);
  await mesh.waitAgents((s) => s.discovery.services >= 9 && s.discovery.routes >= 5 && s.pods.some((p: any) => p.meshed), 'discovery of the Services and routes');
});

test.after.always(async () => {
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('a header match sends x-canary: 1 to the canary only; a GRPCRoute sends one method to the canary only', async (t) => {
  need();
  const canary = await load(['--http', `${svcs.api!.clusterIP}:80`, '--header', 'x-canary: 1', '--requests', '200']);
  t.is(canary.failures, 0, JSON.stringify(canary.errors));
  t.deepEqual(byGroup(canary.byName), { v2: 200 });
  const count = await load(['--grpc', `${svcs.api!.clusterIP}:50051`, '--grpc-method', 'Count', '--requests', '200']);
  t.is(count.failures, 0, JSON.stringify(count.errors));
  t.deepEqual(byGroup(count.byName), { v2: 200 });
  const unary = await load(['--grpc', `${svcs.api!.clusterIP}:50051`, '--grpc-method', 'Unary', '--requests', '200']);
  t.is(unary.failures, 0, JSON.stringify(unary.errors));
  t.deepEqual(byGroup(unary.byName), { v1: 200 });
});

test.serial('a route to a headless Service balances over its ready pods on both nodes (ResolvedRefs=True); a pod IP dialled directly stays that pod', async (t) => {
  const { cluster, mesh } = need();
  const v1 = podsOf('v1');
  const r = await load(['--http', `${svcs.front!.clusterIP}:80`, '--requests', '300']);
  t.is(r.failures, 0, JSON.stringify(r.errors));
  t.deepEqual(byGroup(r.byName), { v1: 300 }, 'only the headless Service\'s pods');
  t.true(v1.every((n) => (r.byName[n] ?? 0) > 0), `one keep-alive connection, every v1 pod (on both nodes) answered: ${JSON.stringify(r.byName)}`);
  const st = await until(async () => cluster.api.get('HTTPRoute', NS, 'to-headless')?.status?.parents?.find((p: any) => p.controllerName === CONTROLLER_NAME),
    (x: any) => x !== undefined, 'to-headless status written', { ms: 10_000, context: () => mesh.logs() });
  t.deepEqual(st.conditions.map((c: any) => `${c.type}=${c.status}`), ['Accepted=True', 'ResolvedRefs=True']);
  // A client that resolved the headless name itself dials a pod: that pod answers, every time.
  const pod = backends.get(v1[1]!)!.pod;
  const direct = await load(['--http', `${pod.ip}:8080`, '--requests', '50']);
  t.is(direct.failures, 0, JSON.stringify(direct.errors));
  t.deepEqual(direct.byName, { [pod.name]: 50 });
});

test.serial('a 90/10 split over 10,000 requests lands inside the binomial 99% interval; the controller wrote the route\'s status', async (t) => {
  const { cluster } = need();
  const r = await load(['--http', `${svcs.api!.clusterIP}:80`, '--requests', '10000', '--concurrency', '20']);
  t.is(r.failures, 0, JSON.stringify(r.errors));
  const g = byGroup(r.byName);
  // n = 10,000, p = 0.1: mean 1,000, sd 30; 99% two-sided: z = 2.576.
  const sd = Math.sqrt(10_000 * 0.1 * 0.9);
  t.true(Math.abs((g.v2 ?? 0) - 1000) <= 2.576 * sd, `v2 got ${g.v2} of 10,000 (${JSON.stringify(g)})`);
  t.is((g.v1 ?? 0) + (g.v2 ?? 0), 10_000);
  const st = cluster.api.get('HTTPRoute', NS, 'api-split')!.status.parents.find((p: any) => p.controllerName === CONTROLLER_NAME);
  t.deepEqual(st.conditions.map((c: any) => `${c.type}=${c.status}`), ['Accepted=True', 'ResolvedRefs=True']);
});

test.serial('a canary shift 0 -> 50 -> 100% by editing the route under steady load: each applied within 1 s, no failed request', async (t) => {
  const { cluster } = need();
  cluster.apply(split(100, 0));
  await routeOnAgents('api-split', (r) => r.backends.length === 2 && r.backends[1].weight === 0, 'weights 100/0');
  const tickMs = 100;
  const proc = client.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'load', '--http', `${svcs.api!.clusterIP}:80`, '--rps', '100', '--tick-ms', String(tickMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const io = new JsonLines(proc);
  const ticks = () => io.lines.filter((o) => o.tick).map((o) => o.tick);
  const arrived = (o: object) => io.arrivals[io.lines.indexOf(o)]!;
  await io.waitFor((o) => o.tick && Object.keys(o.tick.byName).length > 0, 30_000, 'steady load flowing');
  const shift = async (v1: number, v2: number, applied: (g: Record<string, number>) => boolean) => {
    const at = Date.now();
    const from = io.lines.length;
    cluster.apply(split(v1, v2));
    const tick = await io.waitFor((o) => o.tick && io.lines.indexOf(o) >= from && applied(byGroup(o.tick.byName)), 30_000, `weights ${v1}/${v2} applied`);
    // Steady load goes on across the change: a few more ticks (half a second) before the next.
    const n = io.lines.indexOf(tick);
    await io.waitFor((o) => o.tick && io.lines.indexOf(o) >= n + 5, 30_000, 'five more ticks');
    // From the edit to the arrival of the first tick showing it: the new weights applied no later than that.
    return arrived(tick) - at;
  };
  const toHalf = await shift(50, 50, (g) => (g.v2 ?? 0) > 0);
  const toAll = await shift(0, 100, (g) => (g.v1 ?? 0) === 0 && (g.v2 ?? 0) > 0);
  // A tick reports what finished in the last tickMs: it arrives at most tickMs (plus the
  // requests' own time, a few ms) after the first request that went by the new weights; for
  // 100% a whole tick without v1 must pass, one more tickMs.
  t.true(toHalf <= 1000 + tickMs, `50% seen ${toHalf} ms after the edit`);
  t.true(toAll <= 1000 + 2 * tickMs, `100% seen ${toAll} ms after the edit`);
  proc.stdin!.end();
  await io.waitFor((o) => o.stopped, 30_000, 'load stopped');
  const all = ticks();
  const failures = all.reduce((n: number, x: any) => n + x.failures, 0);
  t.is(failures, 0, JSON.stringify(all.filter((x: any) => x.failures > 0).map((x: any) => x.errors)));
  t.log(`seen ${toHalf} ms (50%) and ${toAll} ms (100%) after the edits; ${all.reduce((n: number, x: any) => n + Object.values(x.byName as Record<string, number>).reduce((a, b) => a + b, 0), 0)} requests`);
  cluster.apply(split(90, 10));
});

test.serial('30% of answers 503 with retry.linkerd.io/http: 5xx and limit 1: the client sees at least 88% succeed, no request tried more than twice', async (t) => {
  need();
  await tellAll('flaky', { failPercent: 30 });
  const before = await counts('flaky');
  // The retries needed (30% of 25 a second) stay within the budget the whole time: 20% of the
  // requests plus the proxy's share of 10 a second (one keep-alive connection is on one of the
  // agent's proxies, which has 1/N of it: 5 a second with the 2 this machine's CPUs give).
  const n = 400;
  const r = await load(['--http', `${svcs.flaky!.clusterIP}:80`, '--rps', '25', '--requests', String(n), '--tick-ms', '1000']);
  const after = await counts('flaky');
  const ok = Object.values(r.byName).reduce((a, b) => a + b, 0);
  t.is(ok + r.failures, n);
  t.true(ok >= 0.88 * n, `${ok} of ${n} succeeded (${JSON.stringify(r.errors)})`);
  const tries = Object.entries(after.attempts).filter(([id]) => !(id in before.attempts)).map(([, x]) => x);
  t.is(tries.length, n, 'every request reached a server');
  t.true(Math.max(...tries) <= 2, `a request was tried ${Math.max(...tries)} times`);
  t.true(tries.some((x) => x === 2), 'and some were retried');
  t.log(`${ok} of ${n} succeeded; ${tries.filter((x) => x === 2).length} retried`);
  await tellAll('flaky', { failPercent: 0 });
});

test.serial('every answer 503 (limit 3): servers see at most 1.2x the requests plus 10 a second, the retry budget', async (t) => {
  need();
  await tellAll('down', { status: 503 });
  const before = await counts('down');
  const t0 = Date.now();
  const r = await load(['--http', `${svcs.down!.clusterIP}:80`, '--rps', '100', '--requests', '500', '--tick-ms', '1000']);
  const seconds = (Date.now() - t0) / 1000;
  const after = await counts('down');
  t.is(r.failures, 500);
  const attempts = after.http - before.http;
  // One-second buckets: a run of s seconds touches at most ceil(s) + 1 of them.
  const bound = 1.2 * 500 + 10 * (Math.ceil(seconds) + 1);
  t.true(attempts <= bound, `${attempts} attempts for 500 requests in ${seconds.toFixed(1)} s (bound ${bound})`);
  t.true(attempts > 500, 'some were retried');
  t.log(`${attempts} attempts for 500 requests in ${seconds.toFixed(1)} s; without the budget up to 2,000`);
});

test.serial('a POST with a 100 KiB body is never retried: the server sees one attempt each', async (t) => {
  need();
  const before = await counts('down');
  const r = await load(['--http', `${svcs.down!.clusterIP}:80`, '--method', 'POST', '--body-bytes', String(100 * 1024), '--requests', '5', '--concurrency', '1']);
  t.is(r.failures, 5);
  const after = await counts('down');
  t.is(after.http - before.http, 5);
  const ids = Object.entries(after.attempts).filter(([id]) => !(id in before.attempts));
  t.deepEqual(ids.map(([, n]) => n), [1, 1, 1, 1, 1]);
});

test.serial('timeouts.request: 500ms against a server that sleeps: 504 at 500 ms, and the server sees the request cancelled', async (t) => {
  need();
  await tellAll('slow', { delayMs: 10_000 });
  const before = await counts('slow');
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await client.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{time_connect} %{time_starttransfer}', '-m', '15', `http://${svcs.slow!.clusterIP}/`], { timeoutMs: 20_000 });
    const [code, connected, first] = r.stdout.trim().split(' ');
    t.is(code, '504', r.stdout);
    times.push((Number(first) - Number(connected)) * 1000);
  }
  // Never early: the proxy's deadline is 500 ms after it read the request head, checked against
  // performance.now() when its timer fires (an early timer is re-armed), and curl's connect time
  // is taken before it sends the request. Not time_pretransfer: curl takes that once the request
  // is sent, so a curl descheduled in between reads less (498.1 ms in a loaded CI). And at least
  // once (a loaded machine may stall one) within 50 ms of it.
  t.true(times.every((ms) => ms >= 500), `answered after ${times.map((x) => x.toFixed(1)).join(', ')} ms`);
  t.true(Math.min(...times) <= 550, `answered after ${times.map((x) => x.toFixed(1)).join(', ')} ms`);
  const after = await until(() => counts('slow'), (c) => c.cancelled - before.cancelled >= 3, 'the server seeing three requests cancelled', { ms: 15_000 });
  t.is(after.cancelled - before.cancelled, 3);
  t.is(after.http - before.http, 3, 'one attempt each: a request timeout is not retried');
  await tellAll('slow', { delayMs: 0 });
});

test.serial('an HTTPRoute queryParams match sends ?canary=1 to the canary only; other requests take the split rule', async (t) => {
  need();
  const canary = await load(['--http', `${svcs.edge!.clusterIP}:80`, '--path', '/?canary=1', '--requests', '200']);
  t.is(canary.failures, 0, JSON.stringify(canary.errors));
  t.deepEqual(byGroup(canary.byName), { v2: 200 });
  // ?canary=2 is not the match's value: the last rule's 1:1 split (each side all but surely some of 200).
  const other = await load(['--http', `${svcs.edge!.clusterIP}:80`, '--path', '/?canary=2', '--requests', '200']);
  t.is(other.failures, 0, JSON.stringify(other.errors));
  const g = byGroup(other.byName);
  t.is((g.v1 ?? 0) + (g.v2 ?? 0), 200, JSON.stringify(g));
  t.true((g.v1 ?? 0) > 0 && (g.v2 ?? 0) > 0, JSON.stringify(g));
});

test.serial('RequestHeaderModifier: the backend gets the header set, added and removed; ResponseHeaderModifier: the client gets the response edited', async (t) => {
  need();
  const out = await curl(['-i', '-H', 'x-test-set: client', '-H', 'x-test-add: client', '-H', 'x-test-remove: gone', '-H', 'x-test-keep: yes', `http://${svcs.edge!.clusterIP}/headers?canary=1`]);
  const [head, body] = out.split('\r\n\r\n');
  const lines = head!.split('\r\n');
  t.is(lines[0], 'HTTP/1.1 200 OK', out);
  const res = testHeaders(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  const echo = JSON.parse(body!) as { name: string; headers: Array<[string, string]> };
  t.is(backends.get(echo.name)?.group, 'v2', echo.name);
  // Seen by the backend: set replaced the client's value, add appended a second field line, remove dropped it.
  t.deepEqual(testHeaders(echo.headers), { 'x-test-add': ['client', 'route'], 'x-test-keep': ['yes'], 'x-test-set': ['route'] });
  // Seen by the client: the rule's response edits (no backend filter on this rule's backend).
  t.deepEqual(res, { 'x-test-resp': ['route'] });
  t.false(lines.some((l) => /^content-type:/i.test(l)), head);
  t.true(lines.some((l) => l.toLowerCase() === `x-served-by: ${echo.name}`), head);
});

test.serial('a RequestRedirect is answered by the agent: 301 with the Location, and no backend sees the request', async (t) => {
  need();
  const before = (await counts('v1')).http + (await counts('v2')).http;
  const out = await curl(['-o', '/dev/null', '-w', '%{http_code} %header{location}', `http://${svcs.edge!.clusterIP}/old/a?x=1`]);
  t.is(out, '301 http://new.example/new/a?x=1');
  const after = (await counts('v1')).http + (await counts('v2')).http;
  t.is(after, before, 'a backend saw the redirected request');
});

test.serial('a backendRef\'s header modifiers apply to that backend\'s requests and responses only', async (t) => {
  need();
  // 40 requests on one curl each (a new connection, picked anew) to the 1:1 rule.
  const script = `for i in $(seq 40); do curl -sS -m 10 -w '\\t%header{x-test-from}\\n' http://${svcs.edge!.clusterIP}/headers || exit 1; done`;
  const r = await client.exec('sh', ['-c', script], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  const seen = { v1: 0, v2: 0 };
  // Not trimmed: a line of a v1 answer ends with the tab before its empty x-test-from.
  for (const line of r.stdout.split('\n').filter((l) => l !== '')) {
    const [body, from] = line.split('\t');
    const echo = JSON.parse(body!) as { name: string; headers: Array<[string, string]> };
    const group = backends.get(echo.name)?.group;
    if (group === 'v2') {
      seen.v2++;
      t.deepEqual(testHeaders(echo.headers), { 'x-test-backend': ['v2'] }, line);
      t.is(from, 'v2', line);
    } else {
      t.is(group, 'v1', line);
      seen.v1++;
      t.deepEqual(testHeaders(echo.headers), {}, line);
      t.is(from, '', line);
    }
  }
  t.is(seen.v1 + seen.v2, 40);
  t.true(seen.v1 > 0 && seen.v2 > 0, JSON.stringify(seen));
});
