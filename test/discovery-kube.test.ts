// Discovery from the API server (the stand-in, src/sim SimApiServer): the real controller process
// with --kubeconfig watches Services, EndpointSlices and Pods once, however many agents listen,
// and agents' stores follow creates, edits and deletes; a pod status change that keeps its IP
// sends nothing. In process: a relist after 410 sends only what differs, and a 403 names the
// controller's ClusterRole and recovers.
import test from 'ava';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { SimApiServer, type KubeObject } from '../src/sim/index.ts';
import { requestJson } from '../src/controller/client.ts';
import { ControllerServer } from '../src/controller/server.ts';
import { DiscoveryClient } from '../src/discovery/client.ts';
import { DiscoveryHub } from '../src/discovery/hub.ts';
import { DiscoveryKubeSource, CONTROLLER_RBAC_HINT } from '../src/discovery/kube-source.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import type { MeshObjects } from '../src/discovery/mesh-objects.ts';
import { ACCESS_RESOURCES, LINKERD_POLICY_RESOURCES, ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { exited } from './helpers/procs.ts';
import { freePort } from './helpers/ports.ts';
import { until, waitFor, within } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const BIN = meshBin();

const service = (name: string, ports = [{ name: 'http', port: 80, targetPort: 'http' }]): KubeObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } }, spec: { ports } });
const slice = (name: string, svc: string, eps: Array<{ ip: string; pod: string; node: string; ready?: boolean }>): KubeObject => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } }, addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: eps.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready ?? true }, targetRef: { kind: 'Pod', namespace: 'shop', name: e.pod }, nodeName: e.node, zone: 'z1' })),
});
const pod = (name: string, ip: string, node: string): KubeObject => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { 'pod-template-hash': '5d9f' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-5d9f', uid: 'rs-1', controller: true }] },
  spec: { nodeName: node, serviceAccountName: 'web', containers: [{ name: 'app', image: 'app:1', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip },
});

function kubeconfigJson(api: SimApiServer): string {
  return JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'sim',
    // client-node refuses plain http unless told to skip TLS verification.
    clusters: [{ name: 'sim', cluster: { server: api.url, 'insecure-skip-tls-verify': true } }], users: [{ name: 'sim', user: { token: 'sim' } }], contexts: [{ name: 'sim', context: { cluster: 'sim', user: 'sim' } }],
  });
}

function agent(url: string, id: string) {
  const store = new DiscoveryStore();
  const client = new DiscoveryClient({ url, node: id, agentId: id, store, log: () => {}, onError: () => {} });
  client.start();
  return { store, client };
}

const endpointsOf = (s: DiscoveryStore, ip: string) => s.byVip(ip, 80)?.endpoints.map((e) => `${e.ip}@${e.node}/${e.pod}`) ?? null;

test('mesh-agent controller --kubeconfig: one set of watches for any number of agents; creates, edits and deletes reach every agent; a status change that keeps the IP sends nothing', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const web = api.create(service('web'));
  const webIp: string = web.spec.clusterIP;
  api.create(slice('web-a', 'web', [{ ip: '10.1.0.5', pod: 'web-1', node: 'n1' }, { ip: '10.2.0.5', pod: 'web-2', node: 'n2' }]));
  api.create(pod('web-1', '10.1.0.5', 'n1'));
  api.create(pod('web-2', '10.2.0.5', 'n2'));

  const dir = testTempDir(t);
  fs.writeFileSync(path.join(dir, 'kubeconfig'), kubeconfigJson(api));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const ctl = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '--listen', `127.0.0.1:${port}`, '--dashboard-listen', 'off', '--agent-auth', 'none', '--kubeconfig', path.join(dir, 'kubeconfig')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  ctl.stderr!.on('data', (d) => (log += d));
  t.teardown(async () => {
    ctl.kill('SIGTERM');
    await exited(ctl);
  });
  await until(() => requestJson(url, 'GET', '/v1/status', undefined, 1000), (s: any) => s.discovery?.synced === true, 'the controller listed the cluster', { ms: 30_000, context: () => log });

  const agents = [agent(url, 'n1'), agent(url, 'n2'), agent(url, 'n3')];
  t.teardown(() => agents.forEach((a) => a.client.stop()));
  await waitFor(() => agents.every((a) => a.client.state === 'synced'), 10_000);
  for (const a of agents) {
    t.deepEqual(endpointsOf(a.store, webIp), ['10.1.0.5@n1/web-1', '10.2.0.5@n2/web-2']);
    t.deepEqual(a.store.service('shop/web')!.annotations, { 'balancer.linkerd.io/failure-accrual': 'consecutive' }, 'routing annotations only');
    t.like(a.store.podByIp('10.2.0.5'), { kind: 'deployment', owner: 'web', node: 'n2', serviceAccount: 'web' });
  }
  // The agents opened no watch of their own: the API server has the controller's four.
  t.deepEqual(['services', 'endpointslices', 'pods', 'namespaces'].map((r) => api.openWatches(r)), [1, 1, 1, 1]);

  // An edit that changes no record: the pod's status moves, its IP does not.
  const before = (await requestJson(url, 'GET', '/v1/status')).discovery;
  api.patch('Pod', 'shop', 'web-1', (o) => {
    o.status.conditions = [{ type: 'Ready', status: 'True' }];
  });
  await until(() => requestJson(url, 'GET', '/v1/status'), (s: any) => s.discovery.unchanged > before.unchanged, 'the controller saw the status change');
  const lines = agents[0]!.client.status().lines;

  // Scale: one endpoint goes not-ready, a new one comes; a new Service and its slice; a pod goes.
  api.patch('EndpointSlice', 'shop', 'web-a', (o) => {
    o.endpoints[0].conditions.ready = false;
    o.endpoints.push({ addresses: ['10.3.0.5'], conditions: { ready: true }, targetRef: { kind: 'Pod', namespace: 'shop', name: 'web-3' }, nodeName: 'n3' });
  });
  const api2 = api.create(service('api'));
  api.create(slice('api-a', 'api', [{ ip: '10.1.0.9', pod: 'api-1', node: 'n1' }]));
  api.delete('Pod', 'shop', 'web-2');
  for (const a of agents) {
    await waitFor(() => endpointsOf(a.store, webIp)?.join() === '10.2.0.5@n2/web-2,10.3.0.5@n3/web-3' && endpointsOf(a.store, api2.spec.clusterIP)?.length === 1 && a.store.podByIp('10.2.0.5') === undefined, 10_000);
  }
  t.is(agents[0]!.client.status().lines, lines + 4, 'four changes, four lines: the status-only edit sent none');
  api.delete('Service', 'shop', 'api');
  await waitFor(() => agents.every((a) => a.store.byVip(api2.spec.clusterIP, 80) === null), 10_000);
  t.true(agents.every((a) => a.client.status().reconnects === 0));
  const st = (await requestJson(url, 'GET', '/v1/status')).discovery;
  t.like(st, { configured: true, agents: 3, agentsLive: 3, services: 1, slices: 2, pods: 1, source: { kind: 'kubernetes', server: api.url, connected: true, lastError: null } });
});

/** `logs`: where the source's log lines go (else to onError, as without a log). */
function inProcess(t: any, api: SimApiServer, pageSize?: number, logs?: string[]) {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigJson(api));
  const hub = new DiscoveryHub({ log: () => {} });
  const errors: string[] = [];
  const src = new DiscoveryKubeSource({ hub, kubeConfig: kc, onError: (e) => errors.push(e.message), ...(logs ? { log: (m: string) => logs.push(m) } : {}), backoff: { initialMs: 20, maxMs: 100 }, pageSize });
  t.teardown(() => src.stop());
  return { hub, src, errors };
}

/** A stand-in for the controller's route and access indexes: takes everything, says nothing. */
const noRoutes = (upsert: (o: KubeObject) => unknown = () => {}): MeshObjects =>
  ({ routes: undefined, access: undefined, hold() {}, release() {}, remove() {}, replaceAll() {}, upsert } as unknown as MeshObjects);

/** The in-process source with route kinds (`routes`, none by default), started; the hub it feeds. */
function startedWithRoutes(t: any, api: SimApiServer, o: { onError: (m: string) => void; log?: (m: string) => void; routes?: MeshObjects }) {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigJson(api));
  const hub = new DiscoveryHub({ log: () => {} });
  const src = new DiscoveryKubeSource({ hub, kubeConfig: kc, routes: o.routes ?? noRoutes(), onError: (e) => o.onError(e.message), log: o.log ?? (() => {}), backoff: { initialMs: 20, maxMs: 100 } });
  t.teardown(() => src.stop());
  src.start();
  return { hub, src };
}

/** The in-process source synced, a controller serving it, and one agent synced from it. */
async function servedInProcess(t: any, api: SimApiServer, node: string) {
  const { hub, src, errors } = inProcess(t, api);
  src.start();
  await within(hub.whenSynced(), 10_000, () => `discovery not synced within 10 s: ${errors.slice(-3).join('; ')}`);
  const port = await freePort();
  const ctl = new ControllerServer({ log: () => {}, discovery: { hub, source: src } });
  await ctl.listen('127.0.0.1', port);
  t.teardown(() => ctl.close());
  const a = agent(`http://127.0.0.1:${port}`, node);
  t.teardown(() => a.client.stop());
  await waitFor(() => a.client.state === 'synced', 10_000);
  return { a, errors };
}

test('a relist after 410 Gone sends the agents only what differs, on the same stream', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const web = api.create(service('web'));
  api.create(slice('web-a', 'web', [{ ip: '10.1.0.5', pod: 'web-1', node: 'n1' }]));
  for (let i = 0; i < 20; i++) api.create(pod(`p-${i}`, `10.1.1.${i + 1}`, 'n1'));
  const { a } = await servedInProcess(t, api, 'n1');
  const lines = a.client.status().lines;

  // The watches break and their history is gone: the controller relists everything.
  const relists = () => api.requests.filter((r) => !r.watch && ['services', 'endpointslices', 'pods'].includes(r.resource)).length;
  const listed = relists();
  api.compact();
  api.patch('EndpointSlice', 'shop', 'web-a', (o) => {
    o.endpoints.push({ addresses: ['10.1.0.6'], conditions: { ready: true } });
  });
  api.delete('Pod', 'shop', 'p-0');
  api.compact();
  api.dropWatches();
  await waitFor(() => relists() >= listed + 3 && a.store.podByIp('10.1.1.1') === undefined && a.store.byVip(web.spec.clusterIP, 80)?.endpoints.length === 2, 10_000);
  t.is(a.client.status().lines, lines + 2, 'the slice and the pod, not the world');
  t.is(a.client.status().reconnects, 0);
});

test('a paged list whose continue token expires (a list slower than the API server keeps its history) is done again in one unpaged request, not restarted page by page forever', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (let i = 0; i < 5; i++) api.create(service(`s-${i}`));
  // Every services page after the first finds its version compacted away (a busy cluster).
  let armed = true;
  t.teardown(() => void (armed = false));
  void (async () => {
    for (let n = 0; armed; n++) {
      const s = api.stallRequests((r) => r.resource === 'services' && !!r.query.continue);
      await s.stalled;
      api.create(pod(`busy-${n}`, `10.9.0.${n + 1}`, 'n9'));
      api.compact();
      s.release();
    }
  })();
  const { hub, src, errors } = inProcess(t, api, 2);
  src.start();
  await within(hub.whenSynced(), 10_000, () => `discovery not synced within 10 s: ${errors.slice(-3).join('; ')}`);
  t.is(hub.counts().services, 5);
  const services = api.requests.filter((r) => r.resource === 'services' && !r.watch);
  t.deepEqual(services.map((r) => [r.query.limit ?? null, r.status]), [['2', 200], ['2', 410], [null, 200]], 'first page, expired second page, one full list');
  t.is(errors.filter((e) => e === 'discovery: list services: the continue token expired after 1 page (410: the list took longer than the API server keeps its history); listing again in one request without paging').length, 1, errors.join('\n'));
});

test('403 on one route kind (a ClusterRole from before routes were read): the rest of discovery syncs, the fix is said once however often the watch is retried, and the routes come once granted', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES]) api.register(r);
  api.create(service('web'));
  api.setFailure(403, 'any', 'httproutes');
  const errors: string[] = [];
  const logs: string[] = [];
  const upserted: string[] = [];
  const routes = noRoutes((o) => upserted.push(`${o.kind} ${o.metadata.name}`) > 0);
  const { hub, src } = startedWithRoutes(t, api, { routes, onError: (m) => errors.push(m), log: (m) => logs.push(m) });
  await within(hub.whenSynced(), 10_000, () => `discovery not synced within 10 s: ${errors.slice(-3).join('; ')}`);
  t.is(hub.counts().services, 1);
  // The watch keeps being refused meanwhile (with backoff); that is not news each time.
  const refused = () => api.requests.filter((r) => r.resource === 'httproutes' && r.status === 403).length;
  await waitFor(() => refused() >= 4, 10_000);
  const said = [...logs, ...errors].filter((m) => /httproutes/.test(m));
  t.is(said.length, 1, said.join('\n'));
  t.regex(said[0]!, /^HTTPRoute \(gateway\.networking\.k8s\.io\/v1\): HTTP 403: the controller's ServiceAccount may not list\/watch httproutes \(gateway\.networking\.k8s\.io\); going on without HTTPRoute objects until it may: apply the ClusterRole from mesh-agent install/);
  api.setFailure(null);
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r1', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }] } });
  await waitFor(() => upserted.includes('HTTPRoute r1'), 10_000);
  t.pass();
});

test('a route kind refused, granted with no objects, refused again, granted again: each change is said once, and the status shows the refusal with the rule to grant (not only a list or an event ends the refused state)', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES]) api.register(r);
  api.create(service('web'));
  api.setFailure(403, 'any', 'httproutes');
  const said: string[] = [];
  const { hub, src } = startedWithRoutes(t, api, { onError: (m) => said.push(m), log: (m) => said.push(m) });
  await within(hub.whenSynced(), 10_000, () => `discovery not synced within 10 s: ${said.slice(-3).join('; ')}`);
  const watches = (status: number) => api.requests.filter((r) => r.resource === 'httproutes' && r.watch && r.status === status).length;
  const refusals = () => said.filter((m) => /HTTP 403/.test(m) && /httproutes/.test(m));
  const acceptances = () => said.filter((m) => /^HTTPRoute \(gateway\.networking\.k8s\.io\/v1\): the API server accepts the list\/watch again \(refused with HTTP 403 for \d+ s/.test(m));
  const httproutes = () => (src.state().resources as Record<string, { refused: unknown }>).httproutes!.refused;
  await waitFor(() => watches(403) >= 3, 10_000);
  t.is(refusals().length, 1, said.join('\n'));
  t.like(httproutes(), { status: 403, verb: 'list', grant: 'list and watch on httproutes (API group gateway.networking.k8s.io)' });
  // Granted, and no HTTPRoute exists: no list, no event; the accepted watch ends the refusal.
  api.setFailure(null);
  await waitFor(() => watches(200) >= 1, 10_000);
  await waitFor(() => acceptances().length === 1, 10_000);
  t.is(httproutes(), null);
  // Taken back: the resumed watch is refused, and that is news again.
  const before = watches(403);
  api.setFailure(403, 'any', 'httproutes');
  api.dropWatches();
  await waitFor(() => watches(403) >= before + 3, 10_000);
  t.is(refusals().length, 2, said.join('\n'));
  t.like(httproutes(), { status: 403, verb: 'watch' });
  // Granted again: said once more.
  api.setFailure(null);
  await waitFor(() => acceptances().length === 2, 10_000);
  await waitFor(() => watches(200) >= 2, 10_000);
  t.is(refusals().length, 2, said.join('\n'));
  t.is(acceptances().length, 2, said.join('\n'));
});

test('403 on an access kind (TrafficTarget, and the HTTPRouteGroups and TCPRoutes its rules name; Linkerd\'s Server, AuthorizationPolicy and authentications) is not taken as "none": listed as empty it would drop every restriction it makes; discovery waits for the grant', async (t) => {
  for (const plural of ['traffictargets', 'httproutegroups', 'tcproutes', 'servers', 'authorizationpolicies', 'serverauthorizations', 'meshtlsauthentications', 'networkauthentications']) {
    const api = await new SimApiServer().start();
    t.teardown(() => api.close());
    for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES, ...LINKERD_POLICY_RESOURCES]) api.register(r);
    api.create(service('web'));
    api.setFailure(403, 'any', plural);
    const errors: string[] = [];
    const { hub, src } = startedWithRoutes(t, api, { onError: (m) => errors.push(m) });
    // Refused three times (its list retried with backoff), and still not synced: no world without it.
    await waitFor(() => api.requests.filter((r) => r.resource === plural && r.status === 403).length >= 3, 10_000);
    t.false(hub.synced, `${plural}: discovery synced with ${plural} unreadable`);
    t.true(errors.some((e) => /HTTP 403/.test(e) && /ClusterRole/.test(e)), `${plural}: the refusal names the fix: ${errors.join('; ')}`);
    api.setFailure(null);
    await within(hub.whenSynced(), 10_000, () => `${plural}: not synced once granted: ${errors.slice(-3).join('; ')}`);
    src.stop();
  }
});

test('an access kind whose CRD was not installed at start, then installed while the controller may not read it: the refusal says nothing of it was ever read, so nothing it restricts is enforced, not that the last read stays in force', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of ROUTE_RESOURCES) api.register(r);
  api.create(service('web'));
  const errors: string[] = [];
  const { hub } = startedWithRoutes(t, api, { onError: (m) => errors.push(m) });
  await within(hub.whenSynced(), 10_000, () => `not synced without the SMI CRDs: ${errors.slice(-3).join('; ')}`);
  // The SMI CRDs installed, under a ClusterRole that does not grant them.
  api.setFailure(403, 'any', 'traffictargets');
  for (const r of ACCESS_RESOURCES) api.register(r);
  await waitFor(() => errors.some((e) => /traffictargets/.test(e) && /HTTP 403/.test(e)), 10_000);
  const said = errors.find((e) => /traffictargets/.test(e) && /HTTP 403/.test(e))!;
  t.regex(said, /no TrafficTarget was ever read/);
  t.regex(said, /not enforced/);
  t.notRegex(said, /what was last read/);
});

test('403 on Gateway API HTTPRoutes while Linkerd\'s Server is served is not "none": an HTTPRoute parented by a Server narrows what its policies allow, so discovery waits for the grant, and a refused relist keeps what was read', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES, ...LINKERD_POLICY_RESOURCES]) api.register(r);
  api.create(service('web'));
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'get-only', namespace: 'shop' }, spec: { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }], rules: [{ matches: [{ method: 'GET' }] }] } });
  api.setFailure(403, 'any', 'httproutes');
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigJson(api));
  const hub = new DiscoveryHub({ log: () => {} });
  const errors: string[] = [];
  const routes: string[] = [];
  const objects = {
    routes: undefined, access: undefined, hold() {}, release() {}, upsert() {},
    remove: (kind: string, ns: string, name: string) => (kind === 'HTTPRoute' ? routes.push(`remove ${ns}/${name}`) : 0),
    replaceAll: (kind: string, objs: Iterable<KubeObject>, group?: string) => (kind === 'HTTPRoute' && group === 'gateway.networking.k8s.io' ? routes.push(`replaceAll ${[...objs].map((o) => o.metadata.name).join(',')}`) : 0),
  } as unknown as MeshObjects;
  const src = new DiscoveryKubeSource({ hub, kubeConfig: kc, routes: objects, onError: (e) => errors.push(e.message), log: () => {}, backoff: { initialMs: 20, maxMs: 100 } });
  t.teardown(() => src.stop());
  src.start();
  const refusedLists = () => api.requests.filter((r) => r.resource === 'httproutes' && !r.watch && r.status === 403).length;
  await waitFor(() => api.requests.filter((r) => r.resource === 'httproutes' && r.status === 403).length >= 3, 10_000);
  t.false(hub.synced, 'discovery synced with the Servers\' HTTPRoutes unreadable');
  t.deepEqual(routes, [], 'never listed as none');
  t.true(errors.some((e) => /HTTP 403/.test(e) && /httproutes/.test(e) && /Server/.test(e) && /ClusterRole/.test(e)), errors.join('\n'));
  api.setFailure(null);
  await within(hub.whenSynced(), 10_000, () => `not synced once granted: ${errors.slice(-3).join('; ')}`);
  t.deepEqual(routes, ['replaceAll get-only']);
  // Taken back, and the watch's version compacted away: the relist is refused and what was read stays.
  const before = refusedLists();
  api.setFailure(403, 'list', 'httproutes');
  api.create(service('other'));
  api.compact();
  api.dropWatches();
  await waitFor(() => refusedLists() >= before + 3, 10_000);
  t.deepEqual(routes, ['replaceAll get-only'], 'what was read stays in force: no empty list, no removal');
});

test('an access kind read, then refused (a relist after 410 answered 403): it still fails closed, keeping what was read; the refusal is said once with the rule to grant, and the grant once', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES]) api.register(r);
  api.create(service('web'));
  api.create({ apiVersion: 'access.smi-spec.io/v1alpha3', kind: 'TrafficTarget', metadata: { name: 'tt1', namespace: 'shop' }, spec: { destination: { kind: 'ServiceAccount', name: 'web', namespace: 'shop' }, sources: [{ kind: 'ServiceAccount', name: 'client', namespace: 'shop' }], rules: [] } });
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigJson(api));
  const hub = new DiscoveryHub({ log: () => {} });
  const errors: string[] = [];
  const logs: string[] = [];
  const targets: string[] = [];
  const routes = {
    routes: undefined, access: undefined, hold() {}, release() {}, upsert() {},
    remove: (kind: string, ns: string, name: string) => (kind === 'TrafficTarget' ? targets.push(`remove ${ns}/${name}`) : 0),
    replaceAll: (kind: string, objs: Iterable<KubeObject>) => (kind === 'TrafficTarget' ? targets.push(`replaceAll ${[...objs].map((o) => o.metadata.name).join(',')}`) : 0),
  } as unknown as MeshObjects;
  const src = new DiscoveryKubeSource({ hub, kubeConfig: kc, routes, onError: (e) => errors.push(e.message), log: (m) => logs.push(m), backoff: { initialMs: 20, maxMs: 100 } });
  t.teardown(() => src.stop());
  src.start();
  await within(hub.whenSynced(), 10_000, () => `discovery not synced within 10 s: ${errors.slice(-3).join('; ')}`);
  t.deepEqual(targets, ['replaceAll tt1']);
  // The grant is taken back, and the watch's version compacted away: the relist is refused.
  const refusedLists = () => api.requests.filter((r) => r.resource === 'traffictargets' && !r.watch && r.status === 403).length;
  api.setFailure(403, 'list', 'traffictargets');
  api.create(service('other'));
  api.compact();
  api.dropWatches();
  await waitFor(() => refusedLists() >= 3, 10_000);
  t.deepEqual(targets, ['replaceAll tt1'], 'what was read stays in force: no empty list, no removal');
  const said = errors.filter((e) => /traffictargets/.test(e) && /403/.test(e));
  t.is(said.length, 1, errors.join('\n'));
  t.regex(said[0]!, /^list traffictargets: HTTP 403: .*it needs list and watch on traffictargets \(API group access\.smi-spec\.io\) \(the API server: traffictargets is forbidden: .*\); .*until then what was last read of TrafficTarget stays in force/);
  t.like((src.state().resources as Record<string, any>).traffictargets.refused, { status: 403, verb: 'list' });
  t.is((src.state().resources as Record<string, any>).traffictargets.objects, 1);
  api.setFailure(null);
  await waitFor(() => targets.length === 2, 10_000);
  t.deepEqual(targets, ['replaceAll tt1', 'replaceAll tt1']);
  await waitFor(() => logs.some((m) => /^TrafficTarget \(access\.smi-spec\.io\/v1alpha3\): the API server accepts the list\/watch again/.test(m)), 10_000);
  t.is(errors.filter((e) => /traffictargets/.test(e) && /403/.test(e)).length, 1, errors.join('\n'));
});

test('403 on list: the error names the controller\'s ClusterRole; retried, it recovers once granted', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create(service('web'));
  api.setFailure(403, 'list');
  const { hub, src, errors } = inProcess(t, api);
  src.start();
  await waitFor(() => errors.length >= 2, 10_000);
  t.true(errors.some((e) => e.includes(CONTROLLER_RBAC_HINT)), errors.join('\n'));
  t.regex(errors[0]!, /list (services|endpointslices|pods|namespaces): HTTP 403: the controller's ServiceAccount lacks list\/watch on services, pods, namespaces and endpointslices/);
  t.false(hub.synced, 'no world until every kind is listed');
  t.regex(String(src.state().lastError), /403/);
  api.setFailure(null);
  await hub.whenSynced();
  t.is(hub.counts().services, 1);
});

test('services refused (403), then granted: the refusal is said once, and the grant once (the controller\'s own kinds say both, as the route kinds and namespaces do)', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create(service('web'));
  api.setFailure(403, 'any', 'services');
  const logs: string[] = [];
  const { hub, src, errors } = inProcess(t, api, undefined, logs);
  src.start();
  const refusedLists = () => api.requests.filter((r) => r.resource === 'services' && !r.watch && r.status === 403).length;
  await waitFor(() => refusedLists() >= 3, 10_000);
  t.is(errors.filter((e) => /^list services: HTTP 403/.test(e)).length, 1, errors.join('\n'));
  t.like((src.state().resources as Record<string, any>).service.refused, { status: 403, verb: 'list' });
  api.setFailure(null);
  await within(hub.whenSynced(), 10_000, () => `not synced once granted: ${errors.slice(-3).join('; ')}`);
  t.is((src.state().resources as Record<string, any>).service.refused, null);
  await waitFor(() => logs.some((m) => /^discovery: services: the API server accepts the list\/watch again \(refused with HTTP 403 for \d+ s/.test(m)), 5000);
  t.is(errors.filter((e) => /services: HTTP 403/.test(e)).length, 1, errors.join('\n'));
});

test('403 on namespaces alone (a ClusterRole from before they were read): the rest of discovery goes on, says what is lost and the fix, and takes the namespaces once granted', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'mesh-agent.io/skip-inbound-ports': '7001' } } });
  api.create(service('web'));
  api.create(pod('web-1', '10.1.0.5', 'n1'));
  api.setFailure(403, 'any', 'namespaces');
  const { a, errors } = await servedInProcess(t, api, 'n2');
  t.truthy(a.store.podByIp('10.1.0.5'), 'the world without the namespaces');
  t.is(a.store.podByIp('10.1.0.5')?.skipInbound, undefined);
  t.is(errors.filter((e) => /list namespaces: HTTP 403: going on without them, .*apply the ClusterRole from mesh-agent install/.test(e)).length, 1, errors.join('\n'));
  // Its watch keeps being refused meanwhile (with backoff): said once is enough.
  await waitFor(() => api.requests.filter((r) => r.resource === 'namespaces' && r.watch && r.status === 403).length >= 4, 10_000);
  t.deepEqual(errors.filter((e) => /namespaces/.test(e) && !/going on without them/.test(e)), [], 'no line per refused watch');
  api.setFailure(null);
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound?.join() === '7001,7001', 10_000);
  t.is(a.client.status().reconnects, 0);
});

test('namespaces refused, then granted, then refused again: the second refusal of their watch is said (the once-only silence ends with the grant)', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'mesh-agent.io/skip-inbound-ports': '7001' } } });
  api.create(pod('web-1', '10.1.0.5', 'n1'));
  api.setFailure(403, 'any', 'namespaces');
  const { a, errors } = await servedInProcess(t, api, 'n2');
  api.setFailure(null);
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound?.join() === '7001,7001', 10_000);
  // The grant is taken back (a ClusterRole rolled back): the watch, resumed, is refused.
  const refused = () => api.requests.filter((r) => r.resource === 'namespaces' && r.watch && r.status === 403).length;
  const before = refused();
  api.setFailure(403, 'any', 'namespaces');
  api.dropWatches();
  await waitFor(() => refused() >= before + 2, 10_000);
  t.true(errors.some((e) => /watch namespaces/.test(e) && /403/.test(e)), errors.join('\n'));
});

test('a namespace\'s skip-inbound ports (ours, else Linkerd\'s) reach the records of its pods that set none, and follow its changes; a pod\'s own win; a bad value is said once, for the namespace', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'config.linkerd.io/skip-inbound-ports': '7001-7002' } } });
  api.create(pod('web-1', '10.1.0.5', 'n1'));
  const own = pod('web-2', '10.1.0.6', 'n1');
  own.metadata.annotations = { 'mesh-agent.io/skip-inbound-ports': '9000' };
  api.create(own);
  const { a, errors } = await servedInProcess(t, api, 'n2');
  t.deepEqual(a.store.podByIp('10.1.0.5')?.skipInbound, [[7001, 7002]], 'the namespace\'s, in the first world');
  t.deepEqual(a.store.podByIp('10.1.0.6')?.skipInbound, [[9000, 9000]], 'the pod\'s own win');

  const lines = a.client.status().lines;
  const annotate = (annotations: Record<string, string>) => api.patch('Namespace', undefined, 'shop', (o) => {
    o.metadata.annotations = annotations;
  });
  annotate({ 'config.linkerd.io/skip-inbound-ports': '7001-7002', 'mesh-agent.io/skip-inbound-ports': '7005' });
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound?.join() === '7005,7005', 10_000);
  t.is(a.client.status().lines, lines + 1, 'the one pod that follows its namespace is sent again');
  t.deepEqual(a.store.podByIp('10.1.0.6')?.skipInbound, [[9000, 9000]]);

  annotate({ 'mesh-agent.io/skip-inbound-ports': 'seven' });
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound === undefined, 10_000);
  t.is(errors.filter((e) => e.includes('Namespace shop: annotation mesh-agent.io/skip-inbound-ports "seven"')).length, 1, errors.join('\n'));
  annotate({ 'mesh-agent.io/skip-inbound-ports': '7006' });
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound?.join() === '7006,7006', 10_000);
  annotate({});
  await waitFor(() => a.store.podByIp('10.1.0.5')?.skipInbound === undefined, 10_000);
  t.is(a.client.status().lines, lines + 4);
  t.is(a.client.status().reconnects, 0);
});

test('stop() aborts the lists in flight through client-node at once (a page the API server has not answered), not when the server answers', async (t) => {
  // An API server that takes every request and answers none.
  const seen = { lists: 0, closed: 0 };
  const server = http.createServer((req) => {
    if (!/[?&]watch=true/.test(req.url ?? '')) seen.lists++;
    req.socket.on('close', () => seen.closed++);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  }));
  const url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`;
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigJson({ url } as SimApiServer));
  const src = new DiscoveryKubeSource({ hub: new DiscoveryHub({ log: () => {} }), kubeConfig: kc, routes: noRoutes(), onError: () => {}, log: () => {} });
  t.teardown(() => src.stop());
  src.start();
  // Services, endpointslices, pods, namespaces and the 11 mesh kinds that list at once (the
  // Gateway API HTTPRoute waits for Server's first answer, which never comes here). Every one:
  // 10 was a passing count the poll caught on the way up.
  await waitFor(() => seen.lists === 15, 10_000);
  src.stop();
  await waitFor(() => seen.closed === 15, 5000);
  t.is(seen.closed, 15);
});
