// The controller's routes: the route index (conversion once, last good version kept, converted
// again when a Service or HTTPRouteGroup it reads changes, TrafficSplits overridden by Gateway
// API routes), status.parents merged with other controllers' entries, and end to end: the real
// controller process with --kubeconfig against the stand-in API server (route kinds registered,
// status subresource) and with --resources files, an agent's discovery link receiving the route
// records, the status written back.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SimApiServer, type KubeObject } from '../src/sim/index.ts';
import { ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { requestJson } from '../src/controller/client.ts';
import { RouteIndex, type DesiredStatus } from '../src/routing/route-index.ts';
import { mergedStatus, RouteStatusWriter } from '../src/routing/route-status.ts';
import { statusApi } from '../src/routing/route-kube-source.ts';
import { loadKubeConfig } from '../src/k8s/client-node-api.ts';
import { CONTROLLER_NAME } from '../src/routing/gateway-api.ts';
import { DiscoveryHub, prepare } from '../src/discovery/hub.ts';
import { until, waitFor } from './helpers/until.ts';
import { kubeconfigFile, startController as controller } from './helpers/controller-proc.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const httpRoute = (name: string, spec: object, meta: object = {}): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'shop', ...meta },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: 'api' }], ...spec },
});
const split = (name: string, spec: object): KubeObject => ({ apiVersion: 'split.smi-spec.io/v1alpha4', kind: 'TrafficSplit', metadata: { name, namespace: 'shop' }, spec: { service: 'api', ...spec } });
const weighted = (v1: number, v2: number) => ({ rules: [{ backendRefs: [{ name: 'api-v1', port: 80, weight: v1 }, { name: 'api-v2', port: 80, weight: v2 }] }] });

function index() {
  const lines = new Map<string, string>();
  const statuses: DesiredStatus[] = [];
  const logs: string[] = [];
  const idx = new RouteIndex({
    sink: { put: (k, l) => lines.set(k, l), remove: (k) => lines.delete(k) },
    log: (_l, m) => logs.push(m),
    onStatus: (w) => statuses.push(w),
  });
  const record = (key: string) => (lines.has(key) ? JSON.parse(lines.get(key)!).route : undefined);
  const accepted = (name: string, kind = 'HTTPRoute') => {
    const w = [...statuses].reverse().find((s) => s.name === name && s.kind === kind)!;
    const c = w.parents ? w.parents[0]!.conditions : w.conditions!;
    return c.map((x) => `${x.type}=${x.status}/${x.reason}`).join(' ');
  };
  return { idx, lines, statuses, logs, record, accepted };
}

test('route index: a backend Service converted again when it turns headless or loses its address; the hub tells it what a Service record is', (t) => {
  const x = index();
  x.idx.setService('shop/api', [80]);
  x.idx.setService('shop/db', [80], 'none');
  x.idx.upsert(httpRoute('to-db', { rules: [{ backendRefs: [{ name: 'db', port: 80 }] }] }));
  t.is(x.accepted('to-db'), 'Accepted=True/Accepted ResolvedRefs=False/BackendNotFound', 'an ExternalName Service has nothing to balance');
  x.idx.setService('shop/db', [], 'headless');
  t.is(x.accepted('to-db'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs', 'headless without ports: the backendRef port is its endpoints\' port');
  t.is(x.record('HTTPRoute/shop/to-db').rules[0].backends[0].problem, undefined);

  const heard: unknown[] = [];
  const hub = new DiscoveryHub({ log: () => {} });
  hub.onService = (...a) => heard.push(a);
  const svcObj = (name: string, spec: object) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec });
  hub.put('service', prepare('service', svcObj('db', { clusterIP: 'None' })));
  hub.put('service', prepare('service', svcObj('ext', { type: 'ExternalName', externalName: 'db.example.com', ports: [{ port: 80 }] })));
  hub.put('service', prepare('service', svcObj('api', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })));
  hub.remove('service', 'shop/api');
  t.deepEqual(heard, [['shop/db', [], 'headless'], ['shop/ext', [80], 'none'], ['shop/api', [80], 'clusterIP'], ['shop/api', null, 'clusterIP']]);
});

test('route index: a route listed before its Service waits (no false "not found"); one edited into an invalid state keeps its last good record', (t) => {
  const x = index();
  x.idx.hold();
  x.idx.upsert(httpRoute('split', weighted(90, 10)));
  x.idx.setService('shop/api', [80]);
  x.idx.setService('shop/api-v1', [80]);
  x.idx.setService('shop/api-v2', [80]);
  t.is(x.lines.size, 0, 'held');
  x.idx.release();
  t.deepEqual(x.record('HTTPRoute/shop/split').rules[0].backends.map((b: any) => b.weight), [90, 10]);
  t.is(x.accepted('split'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  t.deepEqual(x.logs, []);

  x.idx.upsert(httpRoute('split', weighted(-1, 10)));
  t.deepEqual(x.record('HTTPRoute/shop/split').rules[0].backends.map((b: any) => b.weight), [90, 10], 'the last good version stays');
  t.regex(x.accepted('split'), /^Accepted=False\/UnsupportedValue/);
  t.regex(x.logs.join('\n'), /HTTPRoute shop\/split: not accepted \(the last good version keeps serving\): spec\.rules\[0\]\.backendRefs\[0\]\.weight: -1 is out of range(.|\n)*the agents keep its last good version/);
  t.deepEqual(x.idx.state().notAccepted.map((s) => s.key), ['HTTPRoute/shop/split']);

  x.idx.upsert(httpRoute('split', weighted(50, 50)));
  t.deepEqual(x.record('HTTPRoute/shop/split').rules[0].backends.map((b: any) => b.weight), [50, 50]);
  x.idx.remove('HTTPRoute', 'shop', 'split');
  t.is(x.lines.size, 0);
});

const coreFeatures = {
  rules: [{
    matches: [{ queryParams: [{ name: 'canary', value: '1' }] }],
    filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Route', value: 'canary' }], remove: ['x-debug'] } },
      { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'X-Served-By', value: 'canary' }] } },
    ],
    backendRefs: [{ name: 'api-v2', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Canary', value: 'true' }] } }] }],
  }, {
    matches: [{ path: { type: 'PathPrefix', value: '/old' } }],
    filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 301, path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }],
  }],
};
const mirror = { rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'api-v2', port: 80 } } }] }] };
const rewrite = { rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'x' } }] }] };

test('route index: query parameter matches, both header modifiers and RequestRedirect (Gateway API Core) are Accepted=True and streamed; RequestMirror and URLRewrite are still refused, naming them', (t) => {
  const x = index();
  for (const s of ['shop/api', 'shop/api-v2']) x.idx.setService(s, [80]);
  x.idx.upsert(httpRoute('core', coreFeatures));
  t.is(x.accepted('core'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  const rule = x.record('HTTPRoute/shop/core').rules[0];
  t.deepEqual(rule.matches, [{ queryParams: [{ name: 'canary', type: 'Exact', value: '1' }] }]);
  t.deepEqual(rule.requestHeaders, { set: [{ name: 'x-route', value: 'canary' }], remove: ['x-debug'] });
  t.deepEqual(rule.responseHeaders, { add: [{ name: 'x-served-by', value: 'canary' }] });
  t.deepEqual(rule.backends, [{ namespace: 'shop', name: 'api-v2', port: 80, weight: 1, requestHeaders: { set: [{ name: 'x-canary', value: 'true' }] } }], 'a backendRef\'s filter on its backend');
  t.deepEqual(x.record('HTTPRoute/shop/core').rules[1].redirect, { statusCode: 301, path: { type: 'ReplacePrefixMatch', value: '/new', prefix: '/old' } });
  for (const [name, spec, type] of [['mirror', mirror, 'RequestMirror'], ['rewrite', rewrite, 'URLRewrite']] as const) {
    x.idx.upsert(httpRoute(name, spec));
    t.regex(x.accepted(name), /^Accepted=False\/UnsupportedValue/);
    const w = [...x.statuses].reverse().find((s) => s.name === name)!;
    t.regex(w.parents![0]!.conditions[0]!.message, new RegExp(`spec\\.rules\\[0\\]\\.filters: filters of type "${type}" are not supported on a HTTPRoute; of the filters only RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect are`));
    t.is(x.record(`HTTPRoute/shop/${name}`), undefined, 'nothing streamed for it');
  }
});

test('route index: header modifiers on a backendRef are Accepted=True and streamed; a RequestRedirect on a backendRef is Accepted=False naming it', (t) => {
  const x = index();
  for (const s of ['shop/api', 'shop/api-v1', 'shop/api-v2']) x.idx.setService(s, [80]);
  x.idx.upsert(httpRoute('canary', { rules: [{ backendRefs: [
    { name: 'api-v1', port: 80, weight: 9 },
    { name: 'api-v2', port: 80, weight: 1, filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'X-Canary', value: 'true' }] } },
      { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'X-Served-By', value: 'canary' }] } },
    ] },
  ] }] }));
  t.is(x.accepted('canary'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  t.deepEqual(x.record('HTTPRoute/shop/canary').rules[0].backends[1], { namespace: 'shop', name: 'api-v2', port: 80, weight: 1, requestHeaders: { add: [{ name: 'x-canary', value: 'true' }] }, responseHeaders: { set: [{ name: 'x-served-by', value: 'canary' }] } });
  x.idx.upsert(httpRoute('canary', { rules: [{ backendRefs: [{ name: 'api-v2', port: 80, filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }] }] }] }));
  t.regex(x.accepted('canary'), /^Accepted=False\/UnsupportedValue/);
  const w = [...x.statuses].reverse().find((s) => s.name === 'canary')!;
  t.regex(w.parents![0]!.conditions[0]!.message, /spec\.rules\[0\]\.backendRefs\[0\]\.filters: a RequestRedirect is not allowed on a backendRef \(the proxy answers a redirect without choosing a backend\)/);
  t.truthy(x.record('HTTPRoute/shop/canary').rules[0].backends[1].requestHeaders, 'the last good version keeps streaming');
});

test('route index: a Service appearing, going or changing ports converts the routes that name it again', (t) => {
  const x = index();
  x.idx.upsert(httpRoute('r', { parentRefs: [{ group: '', kind: 'Service', name: 'api', port: 8080 }], rules: [{ backendRefs: [{ name: 'api-v2', port: 80 }] }] }));
  t.is(x.accepted('r'), 'Accepted=False/NoMatchingParent ResolvedRefs=False/BackendNotFound');
  x.idx.setService('shop/api', [80]);
  t.is(x.accepted('r'), 'Accepted=False/NoMatchingParent ResolvedRefs=False/BackendNotFound', 'no port 8080 yet');
  x.idx.setService('shop/api', [80, 8080]);
  x.idx.setService('shop/api-v2', [80]);
  t.is(x.accepted('r'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  t.is(x.record('HTTPRoute/shop/r').rules[0].backends[0].problem, undefined);
  x.idx.setService('shop/api-v2', null);
  t.is(x.accepted('r'), 'Accepted=True/Accepted ResolvedRefs=False/BackendNotFound');
  t.regex(x.record('HTTPRoute/shop/r').rules[0].backends[0].problem, /Service shop\/api-v2 not found/, 'the agents answer 500 for it');
});

test('route index: a TrafficSplit is overridden while a Gateway API route takes its Service, and follows its HTTPRouteGroup', (t) => {
  const x = index();
  for (const s of ['api', 'api-v1', 'api-v2']) x.idx.setService(`shop/${s}`, [80]);
  x.idx.upsert(split('ts', { matches: [{ kind: 'HTTPRouteGroup', name: 'ff' }], backends: [{ service: 'api-v2', weight: 1 }] }));
  t.regex(x.accepted('ts', 'TrafficSplit'), /^Accepted=False\/UnsupportedValue/, 'its HTTPRouteGroup is missing');
  x.idx.upsert({ apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'HTTPRouteGroup', metadata: { name: 'ff', namespace: 'shop' }, spec: { matches: [{ name: 'ff', headers: { 'user-agent': '.*Firefox.*' } }] } });
  t.is(x.accepted('ts', 'TrafficSplit'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  t.truthy(x.record('TrafficSplit/shop/ts'));
  x.idx.upsert(httpRoute('gw', weighted(1, 1)));
  t.is(x.accepted('ts', 'TrafficSplit'), 'Accepted=False/Overridden ResolvedRefs=True/ResolvedRefs');
  t.regex(x.logs.join('\n'), /TrafficSplit shop\/ts is overridden: HTTPRoute shop\/gw is attached to Service shop\/api; Gateway API routes win over a TrafficSplit/);
  t.truthy(x.record('TrafficSplit/shop/ts'), 'still streamed: the agents apply precedence per client and need it once the HTTPRoute goes');
  x.idx.remove('HTTPRoute', 'shop', 'gw');
  t.is(x.accepted('ts', 'TrafficSplit'), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
});

test('status: our parents entries replace only ours; other controllers\' stay; an unchanged status is not written; a condition keeps its transition time', (t) => {
  const theirs = { parentRef: { name: 'gw', kind: 'Gateway' }, controllerName: 'example.net/gateway', conditions: [{ type: 'Accepted', status: 'True' }] };
  const obj = { metadata: { generation: 2 }, status: { parents: [theirs] } };
  const want: DesiredStatus = {
    kind: 'HTTPRoute', namespace: 'shop', name: 'r', generation: 2,
    parents: [{ parentRef: { group: '', kind: 'Service', name: 'api' }, controllerName: CONTROLLER_NAME, conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'm' }] }],
  };
  const s1 = mergedStatus(obj, want, '2026-01-01T00:00:00Z')!;
  t.deepEqual(s1.parents[0], theirs);
  t.like(s1.parents[1], { controllerName: CONTROLLER_NAME, conditions: [{ type: 'Accepted', status: 'True', observedGeneration: 2, lastTransitionTime: '2026-01-01T00:00:00Z' }] });
  t.is(mergedStatus({ ...obj, status: s1 }, want, '2026-01-02T00:00:00Z'), null, 'nothing to write');
  const keysSorted = (x: unknown): unknown => (Array.isArray(x) ? x.map(keysSorted) : x !== null && typeof x === 'object' ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, keysSorted(v)])) : x);
  t.is(mergedStatus({ ...obj, status: keysSorted(s1) }, want, '2026-01-02T00:00:00Z'), null, 'nor when the API server gives it back with its keys sorted (Go\'s order)');
  const flipped = { ...want, parents: [{ ...want.parents![0]!, conditions: [{ type: 'Accepted' as const, status: 'False' as const, reason: 'UnsupportedValue', message: 'x' }] }] };
  t.is(mergedStatus({ ...obj, status: s1 }, flipped, '2026-01-03T00:00:00Z')!.parents[1].conditions[0].lastTransitionTime, '2026-01-03T00:00:00Z');
});

// ---- the real controller ----

const svc = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
const ours = (o: KubeObject | undefined) => (o?.status?.parents ?? []).find((p: any) => p.controllerName === CONTROLLER_NAME);
const reasons = (o: KubeObject | undefined) => (ours(o)?.conditions ?? []).map((c: any) => `${c.type}=${c.status}/${c.reason}`).join(' ');

test('status: a watched route showing another status is asked again, once per status seen; one the API would not allow (parents not a list) is read as none of ours, not thrown on', (t) => {
  const x = index();
  x.idx.setService('shop/api', [80]);
  x.idx.upsert(httpRoute('r', {}));
  t.is(x.statuses.length, 1);
  x.idx.upsert(httpRoute('r', {}));
  t.is(x.statuses.length, 1, 'no status on the object yet (our write on its way): not asked again');
  const odd = { ...httpRoute('r', {}), status: { parents: 'not a list' } };
  x.idx.upsert(odd);
  t.is(x.statuses.length, 2, 'asked again');
  x.idx.upsert(odd);
  t.is(x.statuses.length, 2, 'not again for the same status: a form the API server keeps differently does not loop');
});

test('status: a parent Service deleted and recreated before the watch brought the status written meanwhile: the route ends Accepted on the object again, not NoMatchingParent', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of ROUTE_RESOURCES) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  api.create(httpRoute('r', {}));
  const writer = new RouteStatusWriter(statusApi(loadKubeConfig(kubeconfigFile(t, api))), () => {});
  t.teardown(() => writer.stop());
  const asked: DesiredStatus[] = [];
  const idx = new RouteIndex({
    sink: { put() {}, remove() {} },
    log: () => {},
    onStatus: (want, obj) => {
      asked.push(want);
      writer.write(want, obj);
    },
  });
  // What the controller's watch does, here when the test says: the route as the API server has it now.
  const watched = () => idx.upsert(api.get('HTTPRoute', 'shop', 'r')!);
  const now = () => reasons(api.get('HTTPRoute', 'shop', 'r'));
  idx.setService('shop/api', [80]);
  watched();
  await waitFor(() => writer.writes === 1, 10_000);
  watched(); // our write, back through the watch
  t.is(now(), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  idx.setService('shop/api', null);
  await waitFor(() => writer.writes === 2, 10_000);
  t.is(now(), 'Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs');
  // Recreated before the watch brought that write: the writer judges by the route as last
  // watched, which shows Accepted already, and writes nothing.
  idx.setService('shop/api', [80]);
  t.is(asked.length, 3);
  watched(); // the watch catches up: the object says NoMatchingParent, not what was asked
  t.is(asked.length, 4, 'asked again: the object shows another status than the one wanted');
  if (asked.length !== 4) return; // the old code: NoMatchingParent for good
  await waitFor(() => writer.writes === 3, 10_000);
  t.is(now(), 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs');
  watched();
  t.is(asked.length, 4, 'and once it shows it, not again');
});

test('mesh-agent controller --kubeconfig: routes from the API server reach the agents; status.parents is written back; an invalid edit is Accepted=False and the agents keep the last good one', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  for (const r of ROUTE_RESOURCES) api.register(r);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  for (const s of ['api', 'api-v1', 'api-v2']) api.create(svc(s));
  api.create(httpRoute('split', weighted(90, 10)));
  const kc = kubeconfigFile(t, api);
  const c = await controller(t, ['--kubeconfig', kc]);
  // In the agents' first world already (the controller waits for the route kinds before it syncs).
  t.deepEqual(c.store.routesFor('shop/api').map((r) => r.rules[0]!.backends.map((b) => b.weight)), [[90, 10]]);
  await until(async () => api.get('HTTPRoute', 'shop', 'split'), (o) => reasons(o) === 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs', 'status written', { ms: 10_000, context: c.log });
  const st = ours(api.get('HTTPRoute', 'shop', 'split'))!;
  t.deepEqual(st.parentRef, { group: '', kind: 'Service', name: 'api' });
  t.is(st.conditions[0].observedGeneration, 1);

  api.apply(httpRoute('split', weighted(-1, 10)));
  await until(async () => api.get('HTTPRoute', 'shop', 'split'), (o) => /^Accepted=False\/UnsupportedValue/.test(reasons(o)), 'Accepted=False written', { ms: 10_000, context: c.log });
  const bad = ours(api.get('HTTPRoute', 'shop', 'split'))!;
  t.regex(bad.conditions[0].message, /weight: -1 is out of range/);
  t.is(bad.conditions[0].observedGeneration, 2);
  t.deepEqual(c.store.routesFor('shop/api').map((r) => r.rules[0]!.backends.map((b) => b.weight)), [[90, 10]], 'the agent keeps the last good route');
  t.regex(c.log(), /routes: HTTPRoute shop\/split: not accepted \(the last good version keeps serving\): spec\.rules\[0\]\.backendRefs\[0\]\.weight: -1 is out of range/);

  api.apply(httpRoute('split', weighted(50, 50)));
  await waitFor(() => c.store.routesFor('shop/api')[0]?.rules[0]!.backends[0]!.weight === 50, 10_000);
  api.create(httpRoute('orphan', {}, {}));
  api.patch('HTTPRoute', 'shop', 'orphan', (o) => (o.spec.parentRefs = [{ group: '', kind: 'Service', name: 'nope' }]));
  await until(async () => api.get('HTTPRoute', 'shop', 'orphan'), (o) => reasons(o) === 'Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs', 'NoMatchingParent written', { ms: 10_000, context: c.log });
  api.delete('HTTPRoute', 'shop', 'split');
  await waitFor(() => c.store.routesFor('shop/api').length === 0, 10_000);
  const s = await requestJson(c.url, 'GET', '/v1/status') as any;
  t.like(s.discovery.routeObjects, { routes: 1, serving: 1 });
  t.deepEqual(s.discovery.routeObjects.notAccepted.map((r: any) => r.key), ['HTTPRoute/shop/orphan']);
  // Moved to a Linkerd Server: Linkerd policy's route now, and our status entry goes with its Service parent.
  api.patch('HTTPRoute', 'shop', 'orphan', (o) => (o.spec.parentRefs = [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }]));
  await until(async () => api.get('HTTPRoute', 'shop', 'orphan'), (o) => ours(o) === undefined, 'our status entry withdrawn', { ms: 10_000, context: c.log });

  // Gateway API Core features are served (status says so, the agent gets them); a RequestMirror is not.
  api.create(httpRoute('core', coreFeatures));
  api.create(httpRoute('resp', mirror));
  await until(async () => api.get('HTTPRoute', 'shop', 'core'), (o) => reasons(o) === 'Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs', 'core Accepted=True written', { ms: 10_000, context: c.log });
  await until(async () => api.get('HTTPRoute', 'shop', 'resp'), (o) => /^Accepted=False\/UnsupportedValue/.test(reasons(o)), 'resp Accepted=False written', { ms: 10_000, context: c.log });
  t.regex(ours(api.get('HTTPRoute', 'shop', 'resp'))!.conditions[0].message, /filters of type "RequestMirror" are not supported/);
  await waitFor(() => c.store.routesFor('shop/api').some((r) => r.name === 'core'), 10_000);
  const core = c.store.routesFor('shop/api').find((r) => r.name === 'core')!;
  t.deepEqual(core.rules[0]!.requestHeaders, { set: [{ name: 'x-route', value: 'canary' }], remove: ['x-debug'] }, 'the agent parsed it');
  t.deepEqual(core.rules[0]!.responseHeaders, { add: [{ name: 'x-served-by', value: 'canary' }] });
  t.deepEqual(core.rules[0]!.backends[0]!.requestHeaders, { set: [{ name: 'x-canary', value: 'true' }] }, 'a backendRef\'s filter, through discovery version 6');
  t.deepEqual(core.rules[1]!.redirect, { statusCode: 301, path: { type: 'ReplacePrefixMatch', value: '/new', prefix: '/old' } });
});

test('mesh-agent controller --kubeconfig without the route CRDs: discovery syncs, and says once that routes need them', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create(svc('api'));
  const kc = kubeconfigFile(t, api);
  const c = await controller(t, ['--kubeconfig', kc]);
  t.is(c.store.counts().services, 1);
  const said = c.log().match(/HTTPRoute \(gateway\.networking\.k8s\.io\/v1\) is not served by the API server: its CRD is not installed/g) ?? [];
  t.is(said.length, 1, c.log());
});

test('mesh-agent controller --resources: routes from files reach the agents; a bad edit keeps the last good one and shows in /v1/status', async (t) => {
  const dir = testTempDir(t);
  const yaml = (o: object) => JSON.stringify(o);
  // The route file sorts before the Services' file: the controller still finds its parent.
  fs.writeFileSync(path.join(dir, 'a-route.json'), yaml(httpRoute('split', weighted(90, 10))));
  fs.writeFileSync(path.join(dir, 'b-services.json'), yaml({ apiVersion: 'v1', kind: 'List', items: ['api', 'api-v1', 'api-v2'].map((n, i) => ({ ...svc(n), spec: { clusterIP: `10.96.0.${10 + i}`, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })) }));
  const c = await controller(t, ['--resources', dir]);
  t.deepEqual(c.store.routesFor('shop/api').map((r) => r.rules[0]!.backends.map((b) => b.weight)), [[90, 10]]);
  t.notRegex(c.log(), /not accepted|not found/);
  const tmp = path.join(dir, '.a-route.json.tmp');
  fs.writeFileSync(tmp, yaml(httpRoute('split', { rules: [{ timeouts: { request: 'soon' } }] })));
  fs.renameSync(tmp, path.join(dir, 'a-route.json'));
  const s = await until(() => requestJson(c.url, 'GET', '/v1/status'), (x: any) => x.discovery.routeObjects?.notAccepted?.length === 1, 'not accepted in status', { ms: 10_000, context: c.log });
  t.regex(JSON.stringify(s.discovery.routeObjects.notAccepted[0].conditions), /timeouts\.request: \\"soon\\" is not a Gateway API duration/);
  t.deepEqual(c.store.routesFor('shop/api').map((r) => r.rules[0]!.backends.map((b) => b.weight)), [[90, 10]]);
});
