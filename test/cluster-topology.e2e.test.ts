// Topology aware routing on a simulated 2-node, 2-zone cluster (node 0 in zone-a, node 1 in
// zone-b), through the real datapath: a Service with trafficDistribution PreferClose gets zone
// hints from the EndpointSlice controller stand-in; each agent reads its Node's zone label and a
// meshed client in zone-a reaches zone-a's pods only, as kube-proxy would send it, and the other
// zone's pods once zone-a has none ready. The agents run two proxies each, so both the main
// thread's store and a worker's follow the zone.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod, type SimService } from '../src/sim/index.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let near: SimService;
let spread: SimService;
let client: SimPod;
const backends = new Map<string, SimPod>();
/** Pod name -> the node index it runs on. */
const nodeOf = new Map<string, number>();
const procs: ChildProcess[] = [];

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function backend(node: number): Promise<SimPod> {
  const pod = await cluster!.addPod(node, { deployment: 'web', namespace: NS, labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 8080 }] });
  const proc = pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', pod.name, '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  procs.push(proc);
  await new JsonLines(proc).waitFor((o) => o.listening, 30_000, `${pod.name} listening`);
  backends.set(pod.name, pod);
  nodeOf.set(pod.name, node);
  return pod;
}

/** Runs the load client in the client pod: a new connection per request, so every proxy of the agent takes some. */
async function load(svc: SimService, requests = 60): Promise<Record<string, number>> {
  const r = await client.exec(process.execPath, [SERVICE_TOOLS_PATH, 'load', '--http', `${svc.clusterIP}:80`, '--requests', String(requests), '--concurrency', '4', '--new-connections'], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`load exited ${r.code}: ${r.stderr}`);
  const done = JSON.parse(r.stdout.trim().split('\n').at(-1)!).done;
  if (done.failures !== 0) throw new Error(`load had failures: ${JSON.stringify(done.errors)}`);
  return done.byName;
}

/** The node's agent's balancer for a Service's port 80 (every proxy's view merged): its endpoints' pods and the topology note. */
async function balancer(node: number, svc: string): Promise<{ pods: string[]; topology?: string }> {
  const { cluster, mesh } = need();
  const r = await mesh.cli(['diagnostics', 'endpoints', `svc/${svc}`, '-n', NS, '--node', cluster.nodes[node]!.name, '-o', 'json', '--controller', mesh.controllerAddr]);
  if (r.code !== 0) throw new Error(`diagnostics endpoints exited ${r.code}: ${r.stderr}`);
  const port = JSON.parse(r.stdout).agents[0].result.ports.find((p: any) => p.ref.port === 80);
  return { pods: (port?.endpoints ?? []).map((e: any) => e.pod).sort(), ...(port?.topology !== undefined ? { topology: port.topology } : {}) };
}

const podsIn = (node: number) => [...nodeOf.entries()].filter(([, n]) => n === node).map(([name]) => name).sort();

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  client = await cluster.addPod(0, { name: 'client', namespace: NS });
  await backend(0);
  await backend(1);
  await backend(1);
  near = cluster.addService({ name: 'near', namespace: NS, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }], trafficDistribution: 'PreferClose' });
  spread = cluster.addService({ name: 'spread', namespace: NS, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
  await cluster.settled();
  mesh = await startMesh(cluster, { agentArgs: ['--proxy-workers', '2'] });
  await mesh.waitAgents((s) => s.discovery.endpoints >= 6 && s.pods.some((p: any) => p.meshed), 'discovery of near and spread');
});

test.after.always(async () => {
  for (const p of procs) p.kill();
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('each agent reads its zone from its Node and says it on status', async (t) => {
  const { cluster, mesh } = need();
  // Read once the agent's pods are listed: wait for it rather than assume it came with readiness.
  for (const node of cluster.nodes) {
    const s = await until(() => mesh.agentStatus(node), (st) => st.topology?.zone !== undefined && st.topology.zone !== null, `${node.name}'s agent to read its zone`, { ms: 20_000 }).catch((e: Error) => ({ error: e.message }));
    t.deepEqual((s as any).topology, { node: node.name, zone: node.zone, why: null }, JSON.stringify(s).slice(0, 300));
  }
  t.deepEqual(cluster.nodes.map((n) => n.zone), ['zone-a', 'zone-b']);
});

test.serial('a PreferClose Service: a meshed client in zone-a reaches zone-a\'s pod only; a Service without it reaches every pod', async (t) => {
  need();
  const zoneA = podsIn(0);
  t.is(zoneA.length, 1);
  const b = await balancer(0, 'near');
  t.deepEqual(b.pods, zoneA);
  t.is(b.topology, 'PreferSameZone: 1 of 3 ready endpoints, those hinted for zone zone-a');
  t.deepEqual((await balancer(1, 'near')).pods, podsIn(1), 'zone-b\'s agent keeps to zone-b');
  t.deepEqual(Object.keys(await load(near)), zoneA);
  const all = await load(spread, 90);
  t.deepEqual(Object.keys(all).sort(), [...backends.keys()].sort(), 'no hints: every zone\'s pods');
  t.is((await balancer(0, 'spread')).topology, undefined);
});

test.serial('zone-a\'s pod not ready: the client in zone-a reaches zone-b\'s pods; ready again: zone-a\'s only', async (t) => {
  const { cluster } = need();
  const [a] = podsIn(0);
  cluster.setPodReady(backends.get(a!)!, false);
  await cluster.settled();
  const away = await until(() => balancer(0, 'near'), (b) => b.pods.length === 2, 'zone-a\'s agent to fall back to zone-b\'s endpoints', { ms: 20_000 });
  t.deepEqual(away.pods, podsIn(1));
  t.is(away.topology, 'topology hints ignored: no endpoint is hinted for zone zone-a; every endpoint is used');
  t.deepEqual(Object.keys(await load(near)).sort(), podsIn(1));

  cluster.setPodReady(backends.get(a!)!, true);
  await cluster.settled();
  await until(() => balancer(0, 'near'), (b) => b.pods.length === 1, 'zone-a\'s pod back in zone-a\'s balancer', { ms: 20_000 });
  t.deepEqual(Object.keys(await load(near)), [a]);
});
