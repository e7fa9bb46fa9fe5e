// SMI access control in the controller: the access index (conversion once, held while listing,
// converted again when an HTTPRouteGroup or TCPRoute it reads changes, the last good version kept
// and sent again with the reason when an edit breaks it), and end to end: the real controller
// with --kubeconfig against the stand-in API server and with --resources files, an agent's
// discovery link receiving the access records.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SimApiServer, type KubeObject } from '../src/sim/index.ts';
import { ACCESS_RESOURCES, LINKERD_HTTPROUTE_RESOURCE, LINKERD_POLICY_RESOURCES, linkerdPolicyResourcesAt, ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { AccessIndex } from '../src/policy/access-index.ts';
import { RouteIndex } from '../src/routing/route-index.ts';
import { MeshObjects } from '../src/discovery/mesh-objects.ts';
import { requestJson } from '../src/controller/client.ts';
import { kubeconfigFile, startController } from './helpers/controller-proc.ts';
import { until, waitFor } from './helpers/until.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const tt = (name: string, rules: object[], sources = ['web']): KubeObject => ({
  apiVersion: 'access.smi-spec.io/v1alpha3', kind: 'TrafficTarget', metadata: { name, namespace: 'shop' },
  spec: { destination: { kind: 'ServiceAccount', name: 'api', namespace: 'shop' }, sources: sources.map((s) => ({ kind: 'ServiceAccount', name: s, namespace: 'shop' })), rules },
});
const group = (name: string, matches: object[]): KubeObject => ({ apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'HTTPRouteGroup', metadata: { name, namespace: 'shop' }, spec: { matches } });
const tcp = (name: string, ports?: number[]): KubeObject => ({ apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'TCPRoute', metadata: { name, namespace: 'shop' }, spec: ports ? { matches: { ports } } : {} });
const httpRule = (g: string, matches?: string[]) => ({ kind: 'HTTPRouteGroup', name: g, ...(matches ? { matches } : {}) });

function index() {
  const lines = new Map<string, string>();
  const logs: string[] = [];
  const idx = new AccessIndex({ sink: { put: (k, l) => lines.set(k, l), remove: (k) => lines.delete(k) }, log: (_l, m) => logs.push(m) });
  const record = (key: string) => (lines.has(key) ? JSON.parse(lines.get(key)!).access : undefined);
  return { idx, lines, logs, record };
}

test('access index: held while listing (a TrafficTarget before its HTTPRouteGroup is not "not found"); follows its route objects', (t) => {
  const x = index();
  x.idx.hold();
  x.idx.upsert(tt('web-api', [httpRule('routes', ['ok'])]));
  x.idx.upsert(group('routes', [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }]));
  t.is(x.lines.size, 0, 'held');
  x.idx.release();
  t.deepEqual(x.logs, []);
  t.deepEqual(x.record('TrafficTarget/shop/web-api').rules, [{ kind: 'HTTPRouteGroup', name: 'routes', matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] }]);
  x.idx.upsert(group('routes', [{ name: 'ok', pathRegex: '/ok', methods: ['GET', 'HEAD'] }]));
  t.deepEqual(x.record('TrafficTarget/shop/web-api').rules[0].matches[0].methods, ['GET', 'HEAD'], 'converted again when its group changes');
  x.idx.remove('TrafficTarget', 'shop', 'web-api');
  t.is(x.lines.size, 0);
  t.deepEqual(x.idx.state(), { trafficTargets: 0, serving: 0, notAccepted: [], linkerd: { servers: 0, serving: 0, notAccepted: [], ignored: [] } });
});

test('access index: a broken edit keeps the last good record, sent again with the reason; one never accepted sends nothing and says so', (t) => {
  const x = index();
  x.idx.upsert(tcp('db', [5432]));
  x.idx.upsert(tt('web-db', [{ kind: 'TCPRoute', name: 'db' }]));
  t.deepEqual(x.record('TrafficTarget/shop/web-db').rules, [{ kind: 'TCPRoute', name: 'db', ports: [5432] }]);
  x.idx.upsert(tt('web-db', [{ kind: 'TCPRoute', name: 'nope' }]));
  const kept = x.record('TrafficTarget/shop/web-db');
  t.deepEqual(kept.rules, [{ kind: 'TCPRoute', name: 'db', ports: [5432] }], 'the agents keep the last good version');
  t.regex(kept.problems.join('\n'), /TrafficTarget shop\/web-db: not accepted: spec.rules\[0\]: TCPRoute shop\/nope not found(.|\n)*keep enforcing its last good version/);
  t.regex(x.logs.join('\n'), /policy: TrafficTarget shop\/web-db: not accepted/);
  t.deepEqual(x.idx.state().notAccepted.map((s) => s.key), ['TrafficTarget/shop/web-db']);
  x.idx.upsert(tt('fresh', [httpRule('missing')]));
  t.is(x.record('TrafficTarget/shop/fresh'), undefined);
  t.regex(x.logs.join('\n'), /no version of it was ever accepted, so ServiceAccount shop\/api is governed by its default policy until it is fixed/);
  x.idx.upsert(group('missing', [{ name: 'all' }]));
  t.truthy(x.record('TrafficTarget/shop/fresh'), 'accepted once its group exists');
  x.idx.upsert({ ...tt('old', []), apiVersion: 'access.smi-spec.io/v1alpha2' });
  t.regex(x.logs.join('\n'), /TrafficTarget shop\/old: apiVersion "access.smi-spec.io\/v1alpha2" is not read; use access.smi-spec.io\/v1alpha3/);
});

test('mesh-agent controller --kubeconfig: TrafficTargets with their HTTPRouteGroups and TCPRoutes reach the agents; a broken edit keeps the last good one', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES]) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(tt('web-api', [httpRule('routes'), { kind: 'TCPRoute', name: 'grpc' }]));
  api.create(group('routes', [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }]));
  api.create(tcp('grpc', [9090]));
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  // In the agents' first world already: the controller waits for every kind before it syncs.
  t.deepEqual(c.store.accessFor('shop', 'api').map((r) => r.rules.map((x) => x.kind)), [['HTTPRouteGroup', 'TCPRoute']]);
  t.deepEqual(c.store.accessFor('shop', 'api')[0]!.sources, [{ namespace: 'shop', serviceAccount: 'web' }]);
  t.notRegex(c.log(), /not accepted|not found/);

  api.apply(group('routes', [{ name: 'ok', pathRegex: '(' }]));
  await waitFor(() => (c.store.accessFor('shop', 'api')[0]?.problems?.length ?? 0) > 0, 10_000);
  const kept = c.store.accessFor('shop', 'api')[0]!;
  t.deepEqual(kept.rules[0], { kind: 'HTTPRouteGroup', name: 'routes', matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] }, 'the agent keeps the last good version');
  t.regex(kept.problems![0]!, /HTTPRouteGroup shop\/routes.spec.matches\[0\].pathRegex: not a regular expression/);
  const s = await requestJson(c.url, 'GET', '/v1/status') as any;
  t.like(s.discovery.accessObjects, { trafficTargets: 1, serving: 1 });
  t.is(s.discovery.access, 1, 'the hub counts the records it streams');

  api.apply(group('routes', [{ name: 'ok', pathRegex: '/ok', methods: ['GET', 'POST'] }]));
  await waitFor(() => c.store.accessFor('shop', 'api')[0]?.problems === undefined && (c.store.accessFor('shop', 'api')[0]?.rules[0] as any)?.matches[0].methods.length === 2, 10_000);
  api.delete('TrafficTarget', 'shop', 'web-api');
  await waitFor(() => c.store.accessFor('shop', 'api').length === 0, 10_000);
});

test('mesh-agent controller --kubeconfig without the SMI CRDs: discovery syncs, and says once that TrafficTargets need them', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  t.is(c.store.counts().access, 0);
  const said = c.log().match(/TrafficTarget \(access\.smi-spec\.io\/v1alpha3\) is not served by the API server: its CRD is not installed/g) ?? [];
  t.is(said.length, 1, c.log());
});

const linkerd = (kind: string, name: string, spec: object, apiVersion = 'policy.linkerd.io/v1alpha1'): KubeObject => ({ apiVersion, kind, metadata: { name, namespace: 'shop' }, spec });

test('mesh-agent controller --kubeconfig: Linkerd Servers with their AuthorizationPolicies and authentications reach the agents; an edit of a MeshTLSAuthentication converts its Servers again; a deleted Server is deleted', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES, ...LINKERD_POLICY_RESOURCES]) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 'http', accessPolicy: 'deny' }, 'policy.linkerd.io/v1beta3'));
  api.create(linkerd('AuthorizationPolicy', 'api-from-web', { targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }, requiredAuthenticationRefs: [{ group: 'policy.linkerd.io', kind: 'MeshTLSAuthentication', name: 'web' }] }));
  api.create(linkerd('MeshTLSAuthentication', 'web', { identities: ['web.shop.serviceaccount.identity.linkerd.cluster.local'] }));
  api.create(linkerd('NetworkAuthentication', 'nodes', { networks: [{ cidr: '192.168.0.0/16' }] }));
  api.create(linkerd('AuthorizationPolicy', 'probes', { targetRef: { group: 'core', kind: 'Namespace', name: 'shop' }, requiredAuthenticationRefs: [{ group: 'policy.linkerd.io', kind: 'NetworkAuthentication', name: 'nodes' }] }));
  // A Gateway API HTTPRoute of the Server beside one of a Service: each where it belongs, nothing said of either.
  api.create(linkerd('HTTPRoute', 'api-get', { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }], rules: [{ matches: [{ method: 'GET' }] }] }, 'gateway.networking.k8s.io/v1'));
  api.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'api', namespace: 'shop' }, spec: { clusterIP: '10.96.0.20', selector: { app: 'api' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'api-route', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'api', port: 80 }] } });
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  // In the agents' first world already: listed before the controller syncs, converted once all are in.
  const first = c.store.serversIn('shop');
  t.deepEqual(first.map((s) => [s.name, s.port, s.authorizations]), [['api-http', 'http', [
    { name: 'api-from-web', identities: [{ namespace: 'shop', serviceAccount: 'web' }] },
    { name: 'probes', networks: [{ cidr: '192.168.0.0/16' }] },
  ]]]);
  t.notRegex(c.log(), /not accepted|not found|ignored|is not read/);
  t.deepEqual(first[0]!.routes.map((r) => [r.group, r.name, r.matches]), [['gateway.networking.k8s.io', 'api-get', [{ method: 'GET' }]]]);
  t.deepEqual(c.store.routesFor('shop/api').map((r) => r.name), ['api-route'], 'the Service\'s route is the route index\'s');

  api.apply(linkerd('MeshTLSAuthentication', 'web', { identities: ['*.shop.serviceaccount.identity.linkerd.cluster.local'] }));
  await waitFor(() => c.store.serversIn('shop')[0]?.authorizations[0]?.identities?.[0]?.serviceAccount === '*', 10_000);
  api.delete('MeshTLSAuthentication', 'shop', 'web');
  await waitFor(() => (c.store.serversIn('shop')[0]?.problems ?? []).some((p) => /MeshTLSAuthentication shop\/web not found/.test(p)), 10_000);
  t.deepEqual(c.store.serversIn('shop')[0]!.authorizations.map((a) => a.name), ['probes'], 'the policy whose authentication is gone allows nothing');
  const s = await requestJson(c.url, 'GET', '/v1/status') as any;
  t.like(s.discovery.accessObjects.linkerd, { servers: 1, serving: 1 });
  t.like(s.discovery.source.resources, { httproutes: { synced: true }, 'httproutes.policy.linkerd.io': { synced: true }, servers: { synced: true } }, 'each group\'s httproutes reflector has its own entry');
  t.regex(JSON.stringify(s.discovery.accessObjects.linkerd.ignored), /AuthorizationPolicy shop\/api-from-web: ignored/);
  api.delete('Server', 'shop', 'api-http');
  await waitFor(() => c.store.serversIn('shop').length === 0, 10_000);
});

test('mesh-agent controller --kubeconfig with both groups\' HTTPRoute CRDs: a Gateway API and a Linkerd HTTPRoute of one name parented by one Server are two routes; deleting one leaves the other', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES, ...LINKERD_POLICY_RESOURCES, LINKERD_HTTPROUTE_RESOURCE]) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 'http', accessPolicy: 'deny' }, 'policy.linkerd.io/v1beta3'));
  const parentRefs = [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }];
  api.create(linkerd('HTTPRoute', 'api', { parentRefs, rules: [{ matches: [{ method: 'GET' }] }] }, 'gateway.networking.k8s.io/v1'));
  api.create(linkerd('HTTPRoute', 'api', { parentRefs, rules: [{ matches: [{ method: 'POST' }] }] }, 'policy.linkerd.io/v1beta3'));
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  const routes = () => c.store.serversIn('shop')[0]?.routes.map((r) => [r.group, r.name, r.matches]);
  t.deepEqual(routes(), [['gateway.networking.k8s.io', 'api', [{ method: 'GET' }]], ['policy.linkerd.io', 'api', [{ method: 'POST' }]]]);
  api.delete('HTTPRoute.policy.linkerd.io', 'shop', 'api');
  await waitFor(() => routes()?.length === 1, 10_000);
  t.deepEqual(routes(), [['gateway.networking.k8s.io', 'api', [{ method: 'GET' }]]], 'the Gateway API route stays');
  api.delete('HTTPRoute.gateway.networking.k8s.io', 'shop', 'api');
  await waitFor(() => routes()?.length === 0, 10_000);
  t.notRegex(c.log(), /not accepted|not found|ignored|is not read/);
});

test('mesh-agent controller --kubeconfig without Linkerd\'s CRDs: discovery syncs, and says once that Servers need them; CRDs installed later at v1beta1 only are read there', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  t.deepEqual(c.store.serversIn('shop'), []);
  const said = c.log().match(/Server \(policy\.linkerd\.io\/v1beta3, v1beta2, v1beta1\) is not served by the API server: its CRD is not installed. Server objects take effect once Linkerd's CRDs are installed/g) ?? [];
  t.is(said.length, 1, c.log());
  // Linkerd 2.14's CRDs installed while it runs: the refused watch lists again, at the version served.
  for (const r of linkerdPolicyResourcesAt('v1beta1')) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 8080 }, 'policy.linkerd.io/v1beta1'));
  await until(async () => c.store.serversIn('shop'), (s) => s.length === 1, 'the v1beta1 Server read', { ms: 40_000, context: c.log });
  t.regex(c.log(), /Server is served at policy\.linkerd\.io\/v1beta1, not policy\.linkerd\.io\/v1beta3/);
});

test('mesh-agent controller --kubeconfig with Linkerd 2.14\'s CRDs (Server served at v1beta1 only): its Servers are enforced, not read as "none"', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of [...ROUTE_RESOURCES, ...ACCESS_RESOURCES, ...linkerdPolicyResourcesAt('v1beta1')]) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 8080 }, 'policy.linkerd.io/v1beta1'));
  api.create(linkerd('AuthorizationPolicy', 'api-from-web', { targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }, requiredAuthenticationRefs: [{ kind: 'ServiceAccount', name: 'web' }] }));
  const kc = kubeconfigFile(t, api);
  const c = await startController(t, ['--kubeconfig', kc]);
  // In the agents' first world: the port is closed to all but web, as Linkerd enforces it.
  t.deepEqual(c.store.serversIn('shop').map((s) => [s.name, s.port, s.accessPolicy, s.authorizations]), [['api-http', 8080, 'deny', [{ name: 'api-from-web', identities: [{ namespace: 'shop', serviceAccount: 'web' }] }]]], c.log());
  t.notRegex(c.log(), /Server \(policy\.linkerd\.io\/v1beta3\) is not served/);
  t.regex(c.log(), /Server is served at policy\.linkerd\.io\/v1beta1/);
  api.apply(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 9090 }, 'policy.linkerd.io/v1beta1'));
  await waitFor(() => c.store.serversIn('shop')[0]?.port === 9090, 10_000);
});

test('mesh-agent controller --resources: TrafficTargets from files reach the agents; a bad edit shows in /v1/status', async (t) => {
  const dir = testTempDir(t);
  fs.writeFileSync(path.join(dir, 'a-target.json'), JSON.stringify(tt('web-api', [{ kind: 'TCPRoute', name: 'all' }])));
  fs.writeFileSync(path.join(dir, 'b-routes.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [tcp('all')] }));
  const c = await startController(t, ['--resources', dir]);
  t.deepEqual(c.store.accessFor('shop', 'api').map((r) => r.rules), [[{ kind: 'TCPRoute', name: 'all' }]]);
  const tmp = path.join(dir, '.a-target.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(tt('web-api', [{ kind: 'TCPRoute', name: 'all' }], [])));
  fs.renameSync(tmp, path.join(dir, 'a-target.json'));
  const s = await until(() => requestJson(c.url, 'GET', '/v1/status'), (x: any) => x.discovery.accessObjects?.notAccepted?.length === 1, 'not accepted in status', { ms: 10_000, context: c.log });
  t.regex(JSON.stringify(s.discovery.accessObjects.notAccepted[0].problems), /spec.sources: expected at least one ServiceAccount/);
  t.truthy(c.store.accessFor('shop', 'api')[0]!.problems, 'the agent has the last good version and the reason');
});

test('mesh-agent controller --resources: Linkerd Servers and policies from files reach the agents, a policy.linkerd.io HTTPRoute included; a Server edited into one that does not convert keeps its last good record', async (t) => {
  const dir = testTempDir(t);
  const server = (port: unknown) => linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port }, 'policy.linkerd.io/v1beta1');
  fs.writeFileSync(path.join(dir, 'a-server.json'), JSON.stringify(server(8080)));
  fs.writeFileSync(path.join(dir, 'b-policy.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    linkerd('HTTPRoute', 'get', { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/books' }, method: 'GET' }] }] }, 'policy.linkerd.io/v1beta3'),
    linkerd('AuthorizationPolicy', 'get', { targetRef: { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'get' }, requiredAuthenticationRefs: [{ kind: 'ServiceAccount', name: 'web' }] }),
  ] }));
  const c = await startController(t, ['--resources', dir]);
  t.deepEqual(c.store.serversIn('shop').map((s) => s.routes), [[{ group: 'policy.linkerd.io', name: 'get', matches: [{ path: { type: 'PathPrefix', value: '/books' }, method: 'GET' }], authorizations: [{ name: 'get', identities: [{ namespace: 'shop', serviceAccount: 'web' }] }] }]]);
  const tmp = path.join(dir, '.a-server.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(server(0)));
  fs.renameSync(tmp, path.join(dir, 'a-server.json'));
  const s = await until(() => requestJson(c.url, 'GET', '/v1/status'), (x: any) => x.discovery.accessObjects?.linkerd?.notAccepted?.length === 1, 'not accepted in status', { ms: 10_000, context: c.log });
  t.regex(JSON.stringify(s.discovery.accessObjects.linkerd.notAccepted[0].problems), /spec.port: 0 is neither a port 1-65535 nor a container port's name/);
  await waitFor(() => (c.store.serversIn('shop')[0]?.problems ?? []).length > 0, 10_000);
  t.is(c.store.serversIn('shop')[0]!.port, 8080, 'the agent has the last good version and the reason');
});

test('a Gateway API and a Linkerd HTTPRoute of the same name are two routes of a Server: both count, each AuthorizationPolicy targets its own group\'s, and deleting one keeps the other', (t) => {
  const routes = new RouteIndex({ sink: { put() {}, remove() {} }, log: () => {} });
  const x = index();
  const objects = new MeshObjects(routes, x.idx);
  const parent = { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }] };
  const route = (apiVersion: string, path: string) => linkerd('HTTPRoute', 'books', { ...parent, rules: [{ matches: [{ path: { type: 'PathPrefix', value: path } }] }] }, apiVersion);
  objects.upsert(linkerd('Server', 'api-http', { podSelector: {}, port: 8080 }, 'policy.linkerd.io/v1beta1'));
  objects.upsert(linkerd('AuthorizationPolicy', 'linkerd-only', { targetRef: { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'books' }, requiredAuthenticationRefs: [] }));
  objects.replaceAll('HTTPRoute', [route('policy.linkerd.io/v1beta3', '/linkerd')], 'policy.linkerd.io');
  objects.replaceAll('HTTPRoute', [route('gateway.networking.k8s.io/v1', '/gateway')], 'gateway.networking.k8s.io');
  type R = { group: string; name: string; matches: Array<{ path?: { value: string } }>; authorizations: Array<{ name: string }> };
  const seen = () => (x.record('Server/shop/api-http').routes as R[]).map((r) => [r.group, r.matches[0]?.path?.value, r.authorizations.map((a) => a.name)]);
  t.deepEqual(seen(), [['gateway.networking.k8s.io', '/gateway', []], ['policy.linkerd.io', '/linkerd', ['linkerd-only']]]);
  objects.remove('HTTPRoute', 'shop', 'books', 'policy.linkerd.io');
  t.deepEqual(seen(), [['gateway.networking.k8s.io', '/gateway', []]], 'the Gateway API route stays');
});

test('HTTPRoute is listed from two groups: a relist of one keeps the other\'s objects; policy.linkerd.io\'s go to the access index alone', (t) => {
  const routeLogs: string[] = [];
  const routes = new RouteIndex({ sink: { put() {}, remove() {} }, log: (_l, m) => routeLogs.push(m) });
  const x = index();
  const objects = new MeshObjects(routes, x.idx);
  const server = linkerd('Server', 'api-http', { podSelector: {}, port: 8080 }, 'policy.linkerd.io/v1beta1');
  const route = (name: string, apiVersion: string) => linkerd('HTTPRoute', name, { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }] }, apiVersion);
  objects.upsert(server);
  objects.replaceAll('HTTPRoute', [route('linkerd-route', 'policy.linkerd.io/v1beta3')], 'policy.linkerd.io');
  objects.replaceAll('HTTPRoute', [route('gateway-route', 'gateway.networking.k8s.io/v1')], 'gateway.networking.k8s.io');
  const names = () => x.record('Server/shop/api-http').routes.map((r: { name: string }) => r.name);
  t.deepEqual(names(), ['gateway-route', 'linkerd-route']);
  objects.replaceAll('HTTPRoute', [], 'gateway.networking.k8s.io');
  t.deepEqual(names(), ['linkerd-route'], 'the Gateway API relist removed its own only');
  objects.remove('HTTPRoute', 'shop', 'linkerd-route', 'policy.linkerd.io');
  t.deepEqual(names(), []);
  t.deepEqual(routeLogs, [], 'the route index never saw Linkerd\'s, nor said anything of the Server\'s Gateway route');
});
