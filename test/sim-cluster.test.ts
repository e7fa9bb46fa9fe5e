// The simulated cluster, built for real (root, network namespaces, a bridge, nftables): nodes on
// a fabric, pod-to-pod across nodes, the control plane reachable from every node, and the
// kube-proxy stand-in spreading ClusterIP connections over ready endpoints, following the
// EndpointSlices as pods and Services change. Also: nothing is left after destroy() or a SIGKILL.
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Node as NodeModel } from 'kubernetes-models/v1';
import { EndpointSlice } from 'kubernetes-models/discovery.k8s.io/v1';
import { Pod as PodModel, Service as ServiceModel } from 'kubernetes-models/v1';
import { cleanupLeftovers, createCluster, SERVICE_TOOLS_PATH, TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import { JsonLines } from './helpers/procs.ts';
import { ipNetnsList, isDead } from './helpers/sim-checks.ts';
import { looksUniform } from './helpers/stats.ts';

const NODE = process.execPath;
const here = path.dirname(fileURLToPath(import.meta.url));
let shared: SimCluster | undefined;
let createdInMs = 0;

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  const t0 = performance.now();
  shared = await createCluster({ nodes: 3 });
  createdInMs = performance.now() - t0;
});

test.after.always(async () => {
  await shared?.destroy();
});

function cluster(t: ExecutionContext): SimCluster {
  if (!shared) throw new Error('no cluster: these tests build network namespaces, cgroups and nftables rules; run them as root');
  return shared;
}

type Spawn = (cmd: string, args: string[], opts: SpawnOptions) => ChildProcess;

/** Starts a server (tools.ts, or service-tools.ts backend) in a pod (pod.spawn) or a node and waits until it listens. */
async function serve(t: ExecutionContext, spawnFn: Spawn, args: string[], tools = TOOLS_PATH): Promise<JsonLines> {
  // stdin stays open: a service-tools backend exits when it closes.
  const child = spawnFn(NODE, [tools, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  const lines = new JsonLines(child);
  await lines.waitFor((o) => o.listening, 20_000, `${args[0]} listening`);
  return lines;
}

function parseOut(stdout: string): Record<string, any>[] {
  return stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

type Run = (cmd: string, args: string[], o: object) => Promise<{ code: number | null; stdout: string; stderr: string }>;

/** Runs a tools.ts client and returns its JSON lines (fails the test on a non-zero exit). */
async function client(t: ExecutionContext, run: Run, args: string[], tools = TOOLS_PATH): Promise<Record<string, any>[]> {
  const r = await run(NODE, [tools, ...args], { timeoutMs: 60_000 });
  t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return parseOut(r.stdout);
}

/** n HTTP requests to target (each on a new connection, or all on one keep-alive connection), counted per answering pod. */
async function tally(t: ExecutionContext, run: Run, target: string, n: number, opts: { keepAlive?: boolean } = {}): Promise<Record<string, number>> {
  const args = ['load', '--http', target, '--requests', String(n), '--concurrency', '1', ...(opts.keepAlive ? [] : ['--new-connections'])];
  const [{ done }] = await client(t, run, args, SERVICE_TOOLS_PATH);
  t.is(done.failures, 0, `failed requests: ${JSON.stringify(done.errors)}`);
  return done.byName;
}

test.serial('runs as root (the simulated cluster needs network namespaces, cgroups and nftables)', (t) => {
  t.is(process.getuid?.(), 0, 'these tests build real namespaces, cgroups and nftables rules: run them as root');
  t.truthy(shared);
  t.log(`createCluster({ nodes: 3 }) took ${Math.round(createdInMs)} ms`);
});

test('nodes: names, zones, node IPs on the fabric, own pod CIDRs, routes to the others, Node objects in the API', async (t) => {
  const c = cluster(t);
  t.deepEqual(c.nodes.map((n) => [n.name, n.nodeIp, n.podCidr, n.zone]), [
    ['sim-node-1', '10.244.0.1', '10.244.1.0/24', 'zone-a'],
    ['sim-node-2', '10.244.0.2', '10.244.2.0/24', 'zone-b'],
    ['sim-node-3', '10.244.0.3', '10.244.3.0/24', 'zone-a'],
  ]);
  t.is(c.controlPlaneIp, '10.244.0.254');
  const routes = (await c.nodes[0].execInNode('ip', ['-4', 'route', 'show'])).stdout;
  t.regex(routes, /10\.244\.2\.0\/24 via 10\.244\.0\.2 dev eth0/);
  t.regex(routes, /10\.244\.3\.0\/24 via 10\.244\.0\.3 dev eth0/);
  t.regex(routes, /10\.96\.0\.0\/16 dev eth0/);
  const nodes = c.api.list('Node');
  t.deepEqual(nodes.map((n) => [n.metadata.name, n.metadata.labels?.['topology.kubernetes.io/zone'], n.spec.podCIDR]).sort(), [
    ['control-plane', 'zone-a', '10.244.254.0/24'],
    ['sim-node-1', 'zone-a', '10.244.1.0/24'],
    ['sim-node-2', 'zone-b', '10.244.2.0/24'],
    ['sim-node-3', 'zone-a', '10.244.3.0/24'],
  ]);
  for (const n of nodes) t.notThrows(() => new NodeModel(n as any).validate());
});

test('pod to pod across nodes: routed over the fabric, both pod IPs preserved', async (t) => {
  const c = cluster(t);
  const a = await c.addPod(0, { name: 'client', namespace: 'cross' });
  const b = await c.addPod(2, { name: 'server', namespace: 'cross' });
  const srv = await serve(t, b.spawn.bind(b), ['tcp-echo', '--port', '8080']);
  const [connected, reply] = await client(t, a.exec.bind(a), ['tcp-client', '--connect', `${b.ip}:8080`, '--send', 'across']);
  t.like(connected.connected, { localAddress: a.ip, remoteAddress: b.ip });
  t.deepEqual(reply, { reply: 'across' });
  const accepted = await srv.waitFor((o) => o.accepted);
  t.like(accepted.accepted, { remoteAddress: a.ip, remotePort: connected.connected.localPort, localAddress: b.ip });
  const route = await c.nodes[0].execInNode('ip', ['-4', 'route', 'get', b.ip]);
  t.regex(route.stdout, /via 10\.244\.0\.3 dev eth0/);
  const obj = c.api.get('Pod', 'cross', 'client')!;
  t.like(obj, { spec: { nodeName: 'sim-node-1', serviceAccountName: 'default' }, status: { phase: 'Running', podIP: a.ip, hostIP: '10.244.0.1' } });
  t.notThrows(() => new PodModel(obj as any).validate());
});

test('the control plane is reachable from every node: the API server on the fabric and through the kubernetes Service, a process started there', async (t) => {
  const c = cluster(t);
  await serve(t, c.spawnInControlPlane.bind(c), ['tcp-echo', '--port', '8086']);
  for (const n of c.nodes) {
    const [connected] = await client(t, n.execInNode.bind(n), ['tcp-client', '--connect', `${c.controlPlaneIp}:8086`, '--send', 'report']);
    t.like(connected.connected, { localAddress: n.nodeIp, remoteAddress: c.controlPlaneIp });
    const nodes = await n.execInNode('curl', ['-sf', '-m', '10', `${c.apiServerUrl}/api/v1/nodes`]);
    t.is(nodes.code, 0, nodes.stderr);
    t.is(JSON.parse(nodes.stdout).items.length, 4);
  }
  // In-cluster clients use the kubernetes Service (10.96.0.1:443), which kube-proxy sends to the API server.
  const pod = await c.addPod(1, { name: 'in-cluster', namespace: 'cross' });
  const r = await pod.exec('curl', ['-sf', '-m', '10', 'http://10.96.0.1:443/api/v1/namespaces/default/services/kubernetes']);
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { metadata: { name: 'kubernetes' }, spec: { clusterIP: '10.96.0.1' } });
  t.true(JSON.parse(c.kubeconfig()).clusters[0].cluster.server === c.apiServerUrl);
});

/** Three whoami pods (two on node 2, one on node 3) behind a Service with a named targetPort; the client pod on node 1. */
async function threeEndpoints(t: ExecutionContext, c: SimCluster, ns: string) {
  const ports = [{ name: 'web', containerPort: 8080 }];
  const pods = [await c.addPod(1, { deployment: 'whoami', namespace: ns, labels: { app: 'whoami' }, ports }), await c.addPod(1, { deployment: 'whoami', namespace: ns, labels: { app: 'whoami' }, ports }), await c.addPod(2, { deployment: 'whoami', namespace: ns, labels: { app: 'whoami' }, ports })];
  for (const p of pods) await serve(t, p.spawn.bind(p), ['backend', '--name', p.name, '--http', '8080'], SERVICE_TOOLS_PATH);
  const svc = c.addService({ name: 'whoami', namespace: ns, selector: { app: 'whoami' }, ports: [{ name: 'http', port: 80, targetPort: 'web' }] });
  const clientPod = await c.addPod(0, { name: 'client', namespace: ns });
  await c.settled();
  return { pods, svc, clientPod };
}

test('a ClusterIP spreads new connections over every ready endpoint uniformly; one keep-alive connection stays on one pod; the node namespace too', async (t) => {
  const c = cluster(t);
  const { pods, svc, clientPod } = await threeEndpoints(t, c, 'spread');
  t.regex(svc.clusterIP, /^10\.96\.\d+\.\d+$/);
  const fresh = await tally(t, clientPod.exec.bind(clientPod), `${svc.clusterIP}:80`, 300);
  const counts = pods.map((p) => fresh[p.name] ?? 0);
  t.deepEqual(Object.keys(fresh).sort(), pods.map((p) => p.name).sort(), 'every endpoint, and nothing else');
  // p = 0.001: a fair kernel fails this once in a thousand runs (p = 0.01 would be once in a hundred).
  t.true(looksUniform(counts, 0.001), `connections per pod ${counts} are not uniform (chi-square, p = 0.001)`);

  const kept = await tally(t, clientPod.exec.bind(clientPod), `${svc.clusterIP}:80`, 50, { keepAlive: true });
  t.deepEqual(Object.values(kept), [50], `all 50 requests of one connection on one pod: ${JSON.stringify(kept)}`);

  // Processes in a node namespace (the agent falling back to the original destination) go through output NAT.
  const n = c.nodes[2];
  const fromNode = await tally(t, n.execInNode.bind(n), `${svc.clusterIP}:80`, 60);
  t.deepEqual(Object.keys(fromNode).sort(), pods.map((p) => p.name).sort());
});

test('through a ClusterIP the server sees the client pod\'s own IP; a pod reaching itself through its Service works (hairpin)', async (t) => {
  const c = cluster(t);
  const server = await c.addPod(2, { name: 'echo', namespace: 'source', labels: { app: 'echo' } });
  const srv = await serve(t, server.spawn.bind(server), ['tcp-echo', '--port', '7000']);
  const svc = c.addService({ name: 'echo', namespace: 'source', selector: { app: 'echo' }, ports: [{ port: 7000 }] });
  const a = await c.addPod(0, { name: 'client', namespace: 'source' });
  await c.settled();
  const [connected] = await client(t, a.exec.bind(a), ['tcp-client', '--connect', `${svc.clusterIP}:7000`, '--send', 'who']);
  t.like(connected.connected, { localAddress: a.ip, remoteAddress: svc.clusterIP, remotePort: 7000 });
  const accepted = await srv.waitFor((o) => o.accepted);
  t.like(accepted.accepted, { remoteAddress: a.ip, remotePort: connected.connected.localPort, localAddress: server.ip, localPort: 7000 });
  const [, reply] = await client(t, server.exec.bind(server), ['tcp-client', '--connect', `${svc.clusterIP}:7000`, '--send', 'me']);
  t.deepEqual(reply, { reply: 'me' });
});

test('readiness and removal follow into every node\'s rules; a Service with no ready endpoint refuses at once, from pods and nodes', async (t) => {
  const c = cluster(t);
  const { pods, svc, clientPod } = await threeEndpoints(t, c, 'ready');
  const [a, b, d] = pods;
  const rulesHave = async (ip: string) => Promise.all([...c.nodes, c.controlPlane].map(async (n) => (await c.kubeProxyRules(n)).includes(`dnat to ${ip}:8080`)));
  t.deepEqual(await rulesHave(b.ip), [true, true, true, true]);

  c.setPodReady(b, false);
  await c.settled();
  t.deepEqual(await rulesHave(b.ip), [false, false, false, false], 'the not-ready endpoint is out of every node\'s rules');
  const slice = c.api.list('EndpointSlice', { namespace: 'ready', labelSelector: 'kubernetes.io/service-name=whoami' });
  t.is(slice.length, 1);
  t.notThrows(() => new EndpointSlice(slice[0] as any).validate());
  t.like(slice[0].endpoints.find((e: any) => e.targetRef.name === b.name), { conditions: { ready: false, serving: false }, nodeName: 'sim-node-2', zone: 'zone-b' });
  const two = await tally(t, clientPod.exec.bind(clientPod), `${svc.clusterIP}:80`, 60);
  t.deepEqual(Object.keys(two).sort(), [a.name, d.name].sort(), `no connection to the not-ready pod: ${JSON.stringify(two)}`);

  c.setPodReady(b, true);
  await c.removePod(a);
  await c.settled();
  t.deepEqual(await rulesHave(b.ip), [true, true, true, true]);
  t.deepEqual(await rulesHave(a.ip), [false, false, false, false]);
  const back = await tally(t, clientPod.exec.bind(clientPod), `${svc.clusterIP}:80`, 60);
  t.deepEqual(Object.keys(back).sort(), [b.name, d.name].sort());

  c.setPodReady(b, false);
  c.setPodReady(d, false);
  await c.settled();
  const fromPod = await clientPod.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${svc.clusterIP}:80`, '--send', 'x']);
  t.is(fromPod.code, 1);
  t.regex(JSON.parse(fromPod.stderr).error, /ECONNREFUSED/, 'rejected, not dropped: no wait for a timeout');
  const fromNode = await c.nodes[1].execInNode(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${svc.clusterIP}:80`, '--send', 'x']);
  t.regex(JSON.parse(fromNode.stderr).error, /ECONNREFUSED/);
});

test('Services: no endpoints refuses, headless gets no rules, a port change and a removal follow into the rules', async (t) => {
  const c = cluster(t);
  const pod = await c.addPod(1, { name: 'backend', namespace: 'svc', labels: { app: 'backend' }, ports: [{ name: 'http', containerPort: 8080 }] });
  await serve(t, pod.spawn.bind(pod), ['backend', '--name', 'backend', '--http', '8080'], SERVICE_TOOLS_PATH);
  const nobody = c.addService({ name: 'nobody', namespace: 'svc', selector: { app: 'nothing' }, ports: [{ port: 80 }] });
  const headless = c.addService({ name: 'backend-headless', namespace: 'svc', selector: { app: 'backend' }, headless: true, ports: [{ port: 8080 }] });
  const svc = c.addService({ name: 'backend', namespace: 'svc', selector: { app: 'backend' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
  const caller = await c.addPod(0, { name: 'caller', namespace: 'svc' });
  await c.settled();
  t.notThrows(() => new ServiceModel(svc.object() as any).validate());

  const refused = await caller.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${nobody.clusterIP}:80`, '--send', 'x']);
  t.regex(JSON.parse(refused.stderr).error, /ECONNREFUSED/);
  t.is(headless.clusterIP, 'None');
  const rules = await c.kubeProxyRules(c.nodes[0]);
  t.false(rules.includes('backend-headless'), 'a headless Service has no rules');
  t.true(rules.includes(`${svc.clusterIP} . tcp . 80 : goto service-svc/backend/tcp/http`));
  t.is(c.api.list('EndpointSlice', { namespace: 'svc', labelSelector: 'kubernetes.io/service-name=backend-headless' })[0].endpoints.length, 1, 'its endpoints are published all the same');

  const moved = c.updateService(svc, { selector: { app: 'backend' }, ports: [{ name: 'http', port: 8000, targetPort: 'http' }] });
  t.is(moved.clusterIP, svc.clusterIP, 'the ClusterIP stays');
  await c.settled();
  t.deepEqual(await tally(t, caller.exec.bind(caller), `${svc.clusterIP}:8000`, 3), { backend: 3 });
  const oldPort = await caller.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${svc.clusterIP}:80`, '--send', 'x']);
  t.regex(JSON.parse(oldPort.stderr).error, /ECONNREFUSED/, 'a port the ClusterIP does not serve is rejected, as kube-proxy does');

  c.removeService(svc);
  await c.settled();
  t.false((await c.kubeProxyRules(c.nodes[0])).includes(svc.clusterIP), 'a removed Service leaves no rule');
  t.is(c.api.list('EndpointSlice', { namespace: 'svc', labelSelector: 'kubernetes.io/service-name=backend' }).length, 0, 'its slices are collected');
});

test('destroy() leaves no namespace, cgroup, rule or process behind, and is idempotent', async (t) => {
  const c = await createCluster({ nodes: 2, driver: 'cgroupfs' });
  const all = [...c.nodes, c.controlPlane];
  const pod = await c.addPod(0, { name: 'p' });
  const procs = [pod.spawn('sleep', ['600'], { stdio: 'ignore' }), c.nodes[1].spawnInNode('sleep', ['600'], { stdio: 'ignore' }), c.spawnInControlPlane('sleep', ['600'], { stdio: 'ignore' })];
  c.addService({ name: 's', selector: { app: 'x' }, ports: [{ port: 80 }] });
  await c.settled();
  t.true((await c.kubeProxyRules(c.nodes[0])).includes('table ip kube-proxy'));
  const ids = [c.id, ...all.map((n) => n.id)];
  t.true(ipNetnsList().some((ns) => ns.startsWith(`${c.id}-`)));

  await Promise.all([c.destroy(), c.destroy()]);
  t.deepEqual(ipNetnsList().filter((ns) => ids.some((id) => ns.startsWith(`${id}-`))), []);
  for (const n of all) {
    t.false(fs.existsSync(n.cgroupRoot), n.cgroupRoot);
    t.false(fs.existsSync(n.nodeCgroup), n.nodeCgroup);
  }
  t.true(procs.every((p) => p.pid !== undefined && isDead(p.pid)));
  t.false(execFileSync('/usr/sbin/nft', ['list', 'tables'], { encoding: 'utf8' }).includes('kube-proxy'), 'no rule ever went to the machine\'s own namespace');
  await t.notThrowsAsync(c.destroy());
  await t.throwsAsync(c.addPod(0, { name: 'late' }), { message: /destroyed/ });
});

test('a cluster whose creator is SIGKILLed is removed by cleanupLeftovers(): namespaces, cgroups, processes', async (t) => {
  const child = spawn(NODE, ['--disable-warning=ExperimentalWarning', path.join(here, 'fixtures/cluster-crash.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const made = (await new JsonLines(child).waitFor((o) => o.ids, 30_000, 'the fixture\'s cluster')) as { ids: string[]; netns: string[]; cgroups: string[]; pids: number[] };
  t.true(made.ids.every((id) => id.startsWith(`ma${child.pid}x`)), 'every name carries the creator pid');
  child.kill('SIGKILL');
  await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
  for (const ns of made.netns) t.true(ipNetnsList().includes(ns), `${ns} survived the crash`);
  t.deepEqual(made.pids.filter(isDead), [], 'its processes survived the crash');

  const removed = await cleanupLeftovers();
  for (const ns of made.netns) t.true(removed.includes(`netns ${ns}`), `reported ${ns}`);
  t.deepEqual(ipNetnsList().filter((ns) => made.ids.some((id) => ns.startsWith(`${id}-`))), []);
  for (const cg of made.cgroups) t.false(fs.existsSync(cg), `${cg} removed`);
  for (const pid of made.pids) t.true(isDead(pid), `process ${pid} killed`);
});
