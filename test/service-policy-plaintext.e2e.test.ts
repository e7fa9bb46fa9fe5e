// Inbound policy through a Service with identity off (docs/policy.md, "Through a Service"): the
// node's agent balances a meshed pod's connection to a ClusterIP onto an endpoint of the same
// node, authorized when dialled. Without mTLS no tunnel scopes the upstream pools, so they are
// scoped by the client's identity: an upstream authorized for one ServiceAccount never carries
// another's requests.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod, type SimService } from '../src/sim/index.ts';
import { ACCESS_RESOURCES, ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { JsonLines } from './helpers/procs.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let web: SimPod;
let bot: SimPod;
let apiSvc: SimService;
const children: ChildProcess[] = [];

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function http(from: SimPod, method: string, p: string): Promise<string> {
  const r = await from.exec('curl', ['-s', '-m', '10', '-X', method, '-o', '/dev/null', '-w', '%{http_code}', `http://${apiSvc.clusterIP}:80${p}`], { timeoutMs: 15_000 });
  return r.stdout;
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the cluster tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  cluster = await createCluster({ nodes: 1 });
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES]) cluster.api.register(r);
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  const api = await cluster.addPod(0, { deployment: 'api', namespace: NS, serviceAccountName: 'api', labels: { app: 'api' } });
  web = await cluster.addPod(0, { deployment: 'web', namespace: NS, serviceAccountName: 'web' });
  bot = await cluster.addPod(0, { deployment: 'bot', namespace: NS, serviceAccountName: 'bot' });
  const b = api.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'api', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(b);
  await new JsonLines(b).waitFor((o) => o.listening, 30_000, 'api listening');
  cluster.apply({ apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'HTTPRouteGroup', metadata: { name: 'api-routes', namespace: NS }, spec: { matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] } });
  cluster.apply({
    apiVersion: 'access.smi-spec.io/v1alpha3', kind: 'TrafficTarget', metadata: { name: 'web-to-api', namespace: NS },
    spec: { destination: { kind: 'ServiceAccount', name: 'api', namespace: NS }, sources: [{ kind: 'ServiceAccount', name: 'web', namespace: NS }], rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes', matches: ['ok'] }] },
  });
  apiSvc = cluster.addService({ name: 'api', namespace: NS, selector: { app: 'api' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
  await cluster.settled();
  mesh = await startMesh(cluster, { reportIntervalMs: 1000, identity: false });
  await mesh.waitAgents((s) => s.inbound?.pods.find((p: any) => p.name.startsWith('api-'))?.mode === 'smi' && s.discovery.endpoints >= 1, 'the TrafficTarget and the api Service');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('identity off, through a Service: the upstream web was allowed on (pooled, idle) is not reused for bot, whom the policy denies', async (t) => {
  need();
  // Alternating: each of bot's requests comes after web's has left an idle upstream to the pod.
  for (let i = 0; i < 3; i++) {
    t.is(await http(web, 'GET', '/ok'), '200', `web ${i}`);
    t.is(await http(bot, 'GET', '/ok'), '403', `bot ${i}: decided for bot, not carried on web's upstream`);
  }
  t.is(await http(web, 'POST', '/ok'), '403', 'GET only, for web too');
});
