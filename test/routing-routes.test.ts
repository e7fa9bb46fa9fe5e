// The route model's pure core, table by table: Linkerd's annotations, HTTPRoute/GRPCRoute and
// TrafficSplit conversion with their status conditions, the record parser, precedence
// (consumer over producer over TrafficSplit), matching order, the weighted pick, the retry
// budget and backoff. The forwarders' use of them: test/routing-proxy-routes.test.ts.
import test from 'ava';
import { policyFromAnnotations } from '../src/routing/linkerd-annotations.ts';
import { routeFromGateway, parseGatewayDuration, type ServiceLookup } from '../src/routing/gateway-api.ts';
import { routeFromTrafficSplit } from '../src/routing/smi.ts';
import { parseRouteRecord, SAME_PORT, type RouteRecord } from '../src/routing/route-model.ts';
import { findRoute, ParentPolicy } from '../src/routing/route-table.ts';
import type { RouteRequest } from '../src/routing/route-match.ts';
import { RetryBudget } from '../src/routing/retry-budget.ts';
import { backoffMs, retryableResponse } from '../src/routing/retry.ts';
import { onDeadline, type Deadlines } from '../src/routing/client-routing.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { RouteIndex, type DesiredStatus } from '../src/routing/route-index.ts';
import { parseMessage } from '../src/discovery/model.ts';
import { rng } from './helpers/rng.ts';
import { queryParam } from '../src/util/request-target.ts';
import { pathOf } from '../src/util/request-target.ts';
import { modifiedHead } from '../src/proxy/http1/hop.ts';
import { CompiledHeaderModifier } from '../src/routing/header-modifier.ts';
import { CompiledRedirect, replacePrefix } from '../src/routing/redirect.ts';

const svcs: Record<string, number[]> = { 'shop/api': [80, 9090], 'shop/api-v1': [80, 9090], 'shop/api-v2': [80], 'shop/grpc': [50051], 'other/api': [80], 'shop/db': [80], 'shop/bare': [], 'shop/ext': [80] };
/** db and bare are headless (bare without ports), ext an ExternalName (or IPv6-only) Service; the rest have a ClusterIP. */
const addressing: Record<string, 'headless' | 'none'> = { 'shop/db': 'headless', 'shop/bare': 'headless', 'shop/ext': 'none' };
const services: ServiceLookup = (ns, name) => {
  const k = `${ns}/${name}`;
  if (!svcs[k]) return undefined;
  return addressing[k] ? { ports: svcs[k]!, addressing: addressing[k] } : { ports: svcs[k]! };
};
const SVC = { kind: 'Service' as const, namespace: 'shop', name: 'api' };

// ---- Linkerd's annotations ----

test('annotations: retries and timeouts as Linkerd reads them, each with its source', (t) => {
  const p = policyFromAnnotations({ 'retry.linkerd.io/http': '5xx,429', 'retry.linkerd.io/limit': '2', 'retry.linkerd.io/timeout': '300ms', 'timeout.linkerd.io/request': '2s', 'timeout.linkerd.io/response': '1s', 'timeout.linkerd.io/idle': '1m' }, SVC);
  t.deepEqual(p.errors, []);
  t.deepEqual(p.httpRetry, { limit: 2, timeoutMs: 300, httpStatuses: [[500, 599], [429, 429]] });
  t.deepEqual(p.grpcRetry, { limit: 2, timeoutMs: 300, grpcCodes: [14] }, 'a Service carries gRPC retries too, with the default code');
  t.deepEqual(p.timeouts, { requestMs: 2000, backendRequestMs: 1000, idleMs: 60_000 });
  t.deepEqual(p.timeoutSources.map((s) => s.annotation), ['timeout.linkerd.io/request', 'timeout.linkerd.io/response', 'timeout.linkerd.io/idle']);
  t.true(p.retrySources.every((s) => s.kind === 'Service' && s.namespace === 'shop' && s.name === 'api'));
});

const annotationCases: Array<[string, Record<string, string>, 'Service' | 'HTTPRoute' | 'GRPCRoute', unknown, RegExp | null]> = [
  // [what, annotations, on, httpRetry (or grpcRetry for GRPCRoute), error]
  ['nothing', {}, 'Service', undefined, null],
  ['gateway-error', { 'retry.linkerd.io/http': 'gateway-error' }, 'HTTPRoute', { limit: 1, httpStatuses: [[502, 504]] }, null],
  ['a range and a code', { 'retry.linkerd.io/http': '500-504, 429' }, 'HTTPRoute', { limit: 1, httpStatuses: [[500, 504], [429, 429]] }, null],
  ['limit alone turns retries on (5xx)', { 'retry.linkerd.io/limit': '3' }, 'HTTPRoute', { limit: 3, httpStatuses: [[500, 599]] }, null],
  ['limit 0 means the default, 1', { 'retry.linkerd.io/limit': '0', 'retry.linkerd.io/http': '503' }, 'HTTPRoute', { limit: 1, httpStatuses: [[503, 503]] }, null],
  ['grpc codes on a GRPCRoute', { 'retry.linkerd.io/grpc': 'unavailable,deadline-exceeded' }, 'GRPCRoute', { limit: 1, grpcCodes: [14, 4] }, null],
  ['an unknown HTTP condition (retries off)', { 'retry.linkerd.io/http': '5xx,teapot' }, 'HTTPRoute', undefined, /retry\.linkerd\.io\/http: "teapot" is not a retry condition; write 5xx, gateway-error/],
  ['a reversed range', { 'retry.linkerd.io/http': '504-500' }, 'HTTPRoute', undefined, /"504-500" is not a retry condition/],
  ['an unknown gRPC code', { 'retry.linkerd.io/grpc': 'not-found' }, 'Service', undefined, /retry\.linkerd\.io\/grpc: "not-found" is not a retryable gRPC status; use cancelled, deadline-exceeded/],
  ['http on a GRPCRoute', { 'retry.linkerd.io/http': '5xx' }, 'GRPCRoute', undefined, /retry\.linkerd\.io\/http is not valid on a GRPCRoute/],
  ['grpc on an HTTPRoute', { 'retry.linkerd.io/grpc': 'internal' }, 'HTTPRoute', undefined, /retry\.linkerd\.io\/grpc is not valid on an HTTPRoute/],
  ['a limit that is not a number', { 'retry.linkerd.io/limit': 'many' }, 'Service', undefined, /retry\.linkerd\.io\/limit: "many" is not a retry count; write a whole number from 0 to 10(.|\n)*retries are off for this object/],
  ['a limit too high', { 'retry.linkerd.io/limit': '50' }, 'Service', undefined, /"50" is not a retry count/],
  ['a malformed timeout', { 'timeout.linkerd.io/request': '5 seconds' }, 'Service', undefined, /timeout\.linkerd\.io\/request: "5 seconds" is not a duration; write it like 500ms/],
];
for (const [what, ann, kind, retry, err] of annotationCases) {
  test(`annotations: ${what}`, (t) => {
    const p = policyFromAnnotations(ann, { kind, namespace: 'shop', name: 'x' });
    t.deepEqual(kind === 'GRPCRoute' ? p.grpcRetry : p.httpRetry, retry);
    if (err === null) t.deepEqual(p.errors, []);
    else t.regex(p.errors.join('\n'), err);
  });
}

// ---- HTTPRoute and GRPCRoute ----

const httpRoute = (spec: object, meta: object = {}) => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
  metadata: { name: 'split', namespace: 'shop', creationTimestamp: '2025-01-01T00:00:00Z', ...meta },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: 'api', port: 80 }], ...spec },
});

test('HTTPRoute: matches, weighted backends, timeouts and retry become one record; Accepted and ResolvedRefs are True', (t) => {
  const c = routeFromGateway(httpRoute({
    rules: [{
      name: 'canary',
      matches: [{ path: { type: 'PathPrefix', value: '/v2/' }, headers: [{ name: 'X-Canary', value: '1' }], method: 'GET' }],
      backendRefs: [{ name: 'api-v1', port: 80, weight: 90 }, { name: 'api-v2', port: 80, weight: 10 }],
      timeouts: { request: '500ms', backendRequest: '200ms' },
      retry: { codes: [503], attempts: 2, backoff: '50ms' },
    }],
  }), services);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record, {
    kind: 'HTTPRoute', namespace: 'shop', name: 'split', createdAt: Date.parse('2025-01-01T00:00:00Z'),
    parents: [{ namespace: 'shop', name: 'api', port: 80 }],
    rules: [{
      name: 'canary',
      matches: [{ path: { type: 'PathPrefix', value: '/v2/' }, method: 'GET', headers: [{ name: 'x-canary', type: 'Exact', value: '1' }] }],
      backends: [{ namespace: 'shop', name: 'api-v1', port: 80, weight: 90 }, { namespace: 'shop', name: 'api-v2', port: 80, weight: 10 }],
      timeouts: { requestMs: 500, backendRequestMs: 200 },
      timeoutSources: [
        { kind: 'HTTPRoute', namespace: 'shop', name: 'split', field: 'spec.rules[0].timeouts.request' },
        { kind: 'HTTPRoute', namespace: 'shop', name: 'split', field: 'spec.rules[0].timeouts.backendRequest' },
      ],
      retry: { limit: 2, httpStatuses: [[503, 503]], backoffMs: 50 },
      retrySources: [{ kind: 'HTTPRoute', namespace: 'shop', name: 'split', field: 'spec.rules[0].retry' }],
    }],
  });
  t.is(c.parents.length, 1);
  t.deepEqual(c.parents[0]!.parentRef, { group: '', kind: 'Service', name: 'api', port: 80 });
  t.deepEqual(c.parents[0]!.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
});

test('HTTPRoute: Linkerd annotations on the route win over its fields; the record says so', (t) => {
  const c = routeFromGateway(httpRoute(
    { rules: [{ timeouts: { request: '10s', backendRequest: '1s' } }] },
    { annotations: { 'timeout.linkerd.io/request': '3s', 'retry.linkerd.io/http': '503', 'retry.linkerd.io/limit': '2' } },
  ), services);
  const rule = c.record!.rules[0]!;
  t.deepEqual(rule.timeouts, { requestMs: 3000, backendRequestMs: 1000 });
  t.deepEqual(rule.timeoutSources?.map((s) => s.field ?? s.annotation), ['spec.rules[0].timeouts.backendRequest', 'timeout.linkerd.io/request']);
  t.deepEqual(rule.retry, { limit: 2, httpStatuses: [[503, 503]] });
  t.deepEqual(rule.matches, [], 'no matches: every request');
  t.deepEqual(rule.backends, [], 'no backendRefs: the parent Service');
});

test('HTTPRoute: a parentRef to a Gateway is not ours; a route with no Service parent is not accepted', (t) => {
  const c = routeFromGateway(httpRoute({ parentRefs: [{ name: 'gw', kind: 'Gateway', group: 'gateway.networking.k8s.io' }] }), services);
  t.is(c.record, null);
  t.deepEqual(c.parents, []);
  t.regex(c.problems.join('\n'), /no parentRef names a Service/);
});

test('HTTPRoute: one whose parents are Linkerd Servers is an inbound policy route (the access index reads it), not a routing one: no problem said, no status', (t) => {
  const c = routeFromGateway(httpRoute({ parentRefs: [{ name: 'api-http', kind: 'Server', group: 'policy.linkerd.io' }] }), services);
  t.is(c.record, null);
  t.deepEqual(c.parents, []);
  t.deepEqual(c.problems, []);
  const idx = new RouteIndex({ sink: { put() {}, remove() {} }, log: (_l, m) => t.fail(m) });
  idx.upsert(httpRoute({ parentRefs: [{ name: 'api-http', kind: 'Server', group: 'policy.linkerd.io' }] }));
  t.deepEqual(idx.state().notAccepted, [], 'not listed as a route that failed');
});

test('HTTPRoute: one that moves from a Service parent to a Linkerd Server has our status entries withdrawn (parents: []), not left saying Accepted for the Service', (t) => {
  const statuses: DesiredStatus[] = [];
  const idx = new RouteIndex({ sink: { put() {}, remove() {} }, log: () => {}, onStatus: (want) => void statuses.push(want) });
  idx.setService('shop/api', [80]);
  idx.upsert(httpRoute({}));
  t.deepEqual(statuses.at(-1)!.parents!.map((p) => [p.parentRef.kind, p.parentRef.name, p.conditions[0]!.status]), [['Service', 'api', 'True']]);
  idx.upsert(httpRoute({ parentRefs: [{ name: 'api-http', kind: 'Server', group: 'policy.linkerd.io' }] }));
  t.is(statuses.length, 2, 'a status is written for the move');
  t.deepEqual(statuses.at(-1)!.parents, [], 'our entries removed: the route is Linkerd policy\'s now');
  t.is(idx.desired('HTTPRoute', 'shop', 'split'), undefined, 'and nothing is wanted of it after');
  idx.upsert(httpRoute({ parentRefs: [{ name: 'api-http', kind: 'Server', group: 'policy.linkerd.io' }], rules: [{}, {}] }));
  t.is(statuses.length, 2, 'nothing more to withdraw');
});

test('HTTPRoute: query parameter matches and a RequestHeaderModifier are served (Core); Accepted=True', (t) => {
  const c = routeFromGateway(httpRoute({
    rules: [{
      matches: [{
        path: { type: 'PathPrefix', value: '/shop' },
        queryParams: [{ name: 'canary', value: '1' }, { type: 'RegularExpression', name: 'User', value: 'vip-[0-9]+' }, { name: 'canary', value: 'ignored: the first entry of a name counts' }],
      }],
      filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Route', value: 'canary' }], add: [{ name: 'X-Trace', value: 'mesh' }], remove: ['X-Debug', 'x-debug', 'Cookie'] } }],
      backendRefs: [{ name: 'api-v2', port: 80 }],
    }],
  }), services);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.parents[0]!.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
  const rule = c.record!.rules[0]!;
  t.deepEqual(rule.matches, [{
    path: { type: 'PathPrefix', value: '/shop' },
    queryParams: [{ name: 'canary', type: 'Exact', value: '1' }, { name: 'User', type: 'RegularExpression', value: '^(?:vip-[0-9]+)$' }],
  }], 'names keep their case (query names are case-sensitive); regular expressions match the whole value');
  t.deepEqual(rule.requestHeaders, { set: [{ name: 'x-route', value: 'canary' }], add: [{ name: 'x-trace', value: 'mesh' }], remove: ['x-debug', 'cookie'] }, 'header names lower-cased, a repeated remove once');
  t.deepEqual(parseRouteRecord(JSON.parse(JSON.stringify(c.record))), c.record, 'the agent\'s parser takes it unchanged');
});

test('GRPCRoute: a RequestHeaderModifier and a ResponseHeaderModifier are served too; RequestRedirect is not (HTTPRoute only)', (t) => {
  const c = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'echo', namespace: 'shop' },
    spec: { parentRefs: [{ kind: 'Service', group: '', name: 'grpc' }], rules: [{ filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-tier', value: 'gold' }] } },
      { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'X-Served-By', value: 'mesh' }] } },
    ] }] },
  }, services);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.rules[0]!.requestHeaders, { set: [{ name: 'x-tier', value: 'gold' }] });
  t.deepEqual(c.record!.rules[0]!.responseHeaders, { add: [{ name: 'x-served-by', value: 'mesh' }] });
  const bad = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'echo', namespace: 'shop' },
    spec: { parentRefs: [{ kind: 'Service', group: '', name: 'grpc' }], rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] },
  }, services);
  t.is(bad.record, null);
  t.regex(bad.parents[0]!.conditions[0]!.message, /filters of type "RequestRedirect" are not supported on a GRPCRoute; of the filters only RequestHeaderModifier, ResponseHeaderModifier are/);
});

test('HTTPRoute: a ResponseHeaderModifier and RequestRedirect are served (Core); Accepted=True, the defaults filled in', (t) => {
  const c = routeFromGateway(httpRoute({
    rules: [
      { matches: [{ path: { type: 'PathPrefix', value: '/old/' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }, { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'Cache-Control', value: 'no-store' }], remove: ['Server'] } }] },
      { matches: [{ path: { type: 'Exact', value: '/login' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', hostname: 'auth.example.com', port: 8443, statusCode: 301, path: { type: 'ReplaceFullPath', replaceFullPath: '/sso' } } }] },
      { filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }] },
      { filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'Host', value: 'a response may carry one' }] } }], backendRefs: [{ name: 'api-v1', port: 80 }] },
    ],
  }), services);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.parents[0]!.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
  const [a, b, d, e] = c.record!.rules;
  t.deepEqual(a!.redirect, { statusCode: 302, path: { type: 'ReplacePrefixMatch', value: '/new', prefix: '/old/' } }, '302 by default; the prefix is the rule\'s one PathPrefix match');
  t.deepEqual(a!.responseHeaders, { set: [{ name: 'cache-control', value: 'no-store' }], remove: ['server'] });
  t.deepEqual(a!.backends, []);
  t.deepEqual(b!.redirect, { statusCode: 301, scheme: 'https', hostname: 'auth.example.com', port: 8443, path: { type: 'ReplaceFullPath', value: '/sso' } });
  t.deepEqual(d!.redirect, { statusCode: 302, path: { type: 'ReplacePrefixMatch', value: '/v2', prefix: '/' } }, 'no matches: the CRD\'s default PathPrefix "/"');
  t.deepEqual(e!.responseHeaders, { add: [{ name: 'host', value: 'a response may carry one' }] }, 'host is only refused on requests');
  t.deepEqual(parseRouteRecord(JSON.parse(JSON.stringify(c.record))), c.record, 'the agent\'s parser takes it unchanged');
});

test('HTTPRoute and GRPCRoute: a backendRef\'s RequestHeaderModifier and ResponseHeaderModifier are served; Accepted=True, the record carries them on that backend', (t) => {
  const c = routeFromGateway(httpRoute({
    rules: [{
      filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-route', value: 'api' }] } }],
      backendRefs: [
        { name: 'api-v1', port: 80, weight: 90 },
        { name: 'api-v2', port: 80, weight: 10, filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Canary', value: 'true' }], remove: ['X-Debug'] } },
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'X-Served-By', value: 'canary' }] } },
        ] },
      ],
    }],
  }), services);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.parents[0]!.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
  const [v1, v2] = c.record!.rules[0]!.backends;
  t.deepEqual(v1, { namespace: 'shop', name: 'api-v1', port: 80, weight: 90 }, 'a backend without filters has none');
  t.deepEqual(v2, { namespace: 'shop', name: 'api-v2', port: 80, weight: 10, requestHeaders: { set: [{ name: 'x-canary', value: 'true' }], remove: ['x-debug'] }, responseHeaders: { add: [{ name: 'x-served-by', value: 'canary' }] } });
  t.deepEqual(c.record!.rules[0]!.requestHeaders, { set: [{ name: 'x-route', value: 'api' }] }, 'the rule keeps its own');
  t.deepEqual(parseRouteRecord(JSON.parse(JSON.stringify(c.record))), c.record, 'the agent\'s parser takes it unchanged');
  const g = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'echo', namespace: 'shop' },
    spec: { parentRefs: [{ kind: 'Service', group: '', name: 'grpc' }], rules: [{ backendRefs: [{ name: 'grpc', port: 50051, filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'x-tier', value: 'gold' }] } }] }] }] },
  }, services);
  t.deepEqual(g.problems, []);
  t.deepEqual(g.record!.rules[0]!.backends[0]!.responseHeaders, { set: [{ name: 'x-tier', value: 'gold' }] });
  const gr = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'echo', namespace: 'shop' },
    spec: { parentRefs: [{ kind: 'Service', group: '', name: 'grpc' }], rules: [{ backendRefs: [{ name: 'grpc', port: 50051, filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }] },
  }, services);
  t.is(gr.record, null);
  t.regex(gr.parents[0]!.conditions[0]!.message, /backendRefs\[0\]\.filters: filters of type "RequestRedirect" are not supported on a GRPCRoute's backendRef; of the filters only RequestHeaderModifier, ResponseHeaderModifier are/);
});

// [what, spec patch, Accepted reason (False), ResolvedRefs reason, record kept?, message]
const invalid: Array<[string, object, string, string, boolean, RegExp]> = [
  ['a weight below 0', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, weight: -1 }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRefs\[0\]\.weight: -1 is out of range; use a whole number from 0 to 1000000/],
  ['a weight above the maximum', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, weight: 1_000_001 }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /weight: 1000001 is out of range/],
  ['a malformed duration', { rules: [{ timeouts: { request: '1.5s' } }] }, 'UnsupportedValue', 'ResolvedRefs', false, /spec\.rules\[0\]\.timeouts\.request: "1\.5s" is not a Gateway API duration; write it like 500ms/],
  ['backendRequest longer than request', { rules: [{ timeouts: { request: '1s', backendRequest: '2s' } }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRequest \(2s\) must not be longer than .*request \(1s\)/],
  ['an unknown retry code', { rules: [{ retry: { codes: [600] } }] }, 'UnsupportedValue', 'ResolvedRefs', false, /retry\.codes\[0\]: 600 is not a retryable status code; use 400-599/],
  ['a RequestMirror filter', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: 'b' }] } }, { type: 'RequestMirror', requestMirror: {} }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /spec\.rules\[0\]\.filters: filters of type "RequestMirror" are not supported on a HTTPRoute; of the filters only RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect are/],
  ['a URLRewrite filter', { rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {} }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /filters of type "URLRewrite" are not supported/],
  ['a RequestRedirect and a URLRewrite filter', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'URLRewrite', urlRewrite: {} }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /filters: RequestRedirect and URLRewrite may not be combined \(the spec forbids it\); keep one of them/],
  ['a RequestRedirect with backendRefs', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }], backendRefs: [{ name: 'api-v1', port: 80 }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /spec\.rules\[0\]: RequestRedirect and backendRefs may not be combined \(the spec forbids it: the proxy answers a redirect itself\); remove the backendRefs or the filter/],
  ['RequestRedirect twice', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'RequestRedirect', requestRedirect: {} }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /RequestRedirect is given 2 times; the spec allows it once per rule/],
  ['RequestRedirect without its settings', { rules: [{ filters: [{ type: 'RequestRedirect' }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /filters\[0\]\.requestRedirect: a RequestRedirect filter needs its requestRedirect/],
  ['a redirect status 304', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 304 } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestRedirect\.statusCode: 304 is not a redirect status; use 301, 302, 303, 307, 308 \(302 when absent\)/],
  ['a redirect scheme ftp', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'ftp' } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestRedirect\.scheme: "ftp" is not supported; use http or https/],
  ['a redirect hostname with a port', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'a.example:80' } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestRedirect\.hostname: "a\.example:80" is not a host name; write lower-case DNS labels/],
  ['a redirect port 0', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { port: 0 } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestRedirect\.port: 0 is not a port; use 1-65535/],
  ['a redirect path with a query', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplaceFullPath', replaceFullPath: '/a?b=1' } } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /path\.replaceFullPath: "\/a\?b=1" is not a path; start it with "\/"/],
  ['a redirect path type RegexReplace', { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'RegexReplace' } } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /path\.type: "RegexReplace" is not supported; use ReplaceFullPath or ReplacePrefixMatch/],
  ['ReplacePrefixMatch on an Exact match', { rules: [{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/b' } } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestRedirect\.path: ReplacePrefixMatch needs the rule to have exactly one match whose path is a PathPrefix \(the spec's rule\), this rule has a Exact path match; use ReplaceFullPath or split the rule/],
  ['ReplacePrefixMatch with two matches', { rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/a' } }, { path: { type: 'PathPrefix', value: '/b' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/c' } } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /this rule has 2 matches; use ReplaceFullPath or split the rule/],
  ['a ResponseHeaderModifier setting Content-Length', { rules: [{ filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'Content-Length', value: '0' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /responseHeaderModifier\.set\[0\]\.name: "content-length" is a hop-by-hop or framing header the proxy manages/],
  ['a ResponseHeaderModifier removing Connection', { rules: [{ filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { remove: ['Connection'] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /responseHeaderModifier\.remove\[0\]: "connection" is a hop-by-hop/],
  ['ResponseHeaderModifier without its settings', { rules: [{ filters: [{ type: 'ResponseHeaderModifier' }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /filters\[0\]\.responseHeaderModifier: a ResponseHeaderModifier filter needs its responseHeaderModifier \(set, add or remove\)/],
  ['a RequestRedirect on a backendRef', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /spec\.rules\[0\]\.backendRefs\[0\]\.filters: a RequestRedirect is not allowed on a backendRef \(the proxy answers a redirect without choosing a backend\); put it in the rule's filters, in a rule without backendRefs/],
  ['a RequestMirror on a backendRef', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, filters: [{ type: 'RequestMirror', requestMirror: {} }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRefs\[0\]\.filters: filters of type "RequestMirror" are not supported on a HTTPRoute's backendRef; of the filters only RequestHeaderModifier, ResponseHeaderModifier are/],
  ['RequestHeaderModifier twice on a backendRef', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: 'b' }] } }, { type: 'RequestHeaderModifier', requestHeaderModifier: { remove: ['c'] } }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRefs\[0\]\.filters: RequestHeaderModifier is given 2 times; the spec allows it once per backendRef, so merge them/],
  ['setting Host on a backendRef', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'Host', value: 'evil' }] } }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRefs\[0\]\.filters\[0\]\.requestHeaderModifier\.set\[0\]\.name: "host" is the request's authority, which the proxy keeps as the client sent it/],
  ['a backendRef ResponseHeaderModifier removing Connection', { rules: [{ backendRefs: [{ name: 'api-v1', port: 80, filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { remove: ['Connection'] } }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /backendRefs\[0\]\.filters\[0\]\.responseHeaderModifier\.remove\[0\]: "connection" is a hop-by-hop/],
  ['RequestHeaderModifier twice', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: 'b' }] } }, { type: 'RequestHeaderModifier', requestHeaderModifier: { remove: ['c'] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /RequestHeaderModifier is given 2 times; the spec allows it once per rule, so merge them/],
  ['RequestHeaderModifier without its settings', { rules: [{ filters: [{ type: 'RequestHeaderModifier' }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /filters\[0\]\.requestHeaderModifier: a RequestHeaderModifier filter needs its requestHeaderModifier \(set, add or remove\)/],
  ['a header name with a space', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x y', value: '1' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestHeaderModifier\.set\[0\]\.name: "x y" is not a header name; use letters, digits/],
  ['setting Host', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'Host', value: 'evil' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /set\[0\]\.name: "host" is the request's authority, which the proxy keeps as the client sent it; modify another header/],
  ['removing Transfer-Encoding', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { remove: ['Transfer-Encoding'] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /remove\[0\]: "transfer-encoding" is a hop-by-hop or framing header the proxy manages/],
  ['adding Content-Length', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'content-length', value: '0' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /add\[0\]\.name: "content-length" is a hop-by-hop or framing header/],
  ['a header value with CR LF', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'x-a', value: 'a\r\nx-injected: 1' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /add\[0\]\.value: "a\\r\\nx-injected: 1" is not a header value; write at most 4096 characters without CR, LF, NUL/],
  ['a header value with NUL', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-a', value: 'a\u0000' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /set\[0\]\.value: .* is not a header value/],
  ['a name twice in set (names are case-insensitive)', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-A', value: '1' }, { name: 'x-a', value: '2' }] } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /set\[1\]\.name: "x-a" is named twice in set \(names are case-insensitive\); give each header once/],
  ['17 headers to add', { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: Array.from({ length: 17 }, (_, i) => ({ name: `x-${i}`, value: '1' })) } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /requestHeaderModifier\.add: expected a list of at most 16 headers/],
  ['a query parameter match of type Prefix', { rules: [{ matches: [{ queryParams: [{ type: 'Prefix', name: 'a', value: 'b' }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /matches\[0\]\.queryParams\[0\]\.type: "Prefix" is not supported; use Exact or RegularExpression/],
  ['a query parameter name with "="', { rules: [{ matches: [{ queryParams: [{ name: 'a=b', value: 'b' }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /queryParams\[0\]\.name: "a=b" is not a query parameter name; use letters, digits/],
  ['an empty query parameter value', { rules: [{ matches: [{ queryParams: [{ name: 'a', value: '' }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /queryParams\[0\]\.value: expected a string of 1 to 1024 characters/],
  ['a bad query parameter regular expression', { rules: [{ matches: [{ queryParams: [{ type: 'RegularExpression', name: 'a', value: '(b' }] }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /queryParams\[0\]\.value.*not a regular expression/],
  ['17 query parameter matches', { rules: [{ matches: [{ queryParams: Array.from({ length: 17 }, (_, i) => ({ name: `q${i}`, value: '1' })) }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /queryParams: expected a list of at most 16 query parameter matches/],
  ['a path that does not start with /', { rules: [{ matches: [{ path: { type: 'Exact', value: 'v1' } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /path\.value: "v1" must start with "\/"/],
  ['a bad regular expression', { rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/(a' } }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /not a regular expression/],
  ['a Service backend without a port', { rules: [{ backendRefs: [{ name: 'api-v1' }] }] }, 'UnsupportedValue', 'ResolvedRefs', false, /a Service backend needs its port/],
  ['an unknown parent', { parentRefs: [{ kind: 'Service', group: '', name: 'nope' }] }, 'NoMatchingParent', 'ResolvedRefs', true, /Service shop\/nope not found/],
  ['a parent port the Service lacks', { parentRefs: [{ kind: 'Service', group: '', name: 'api', port: 81 }] }, 'NoMatchingParent', 'ResolvedRefs', true, /Service shop\/api has no port 81/],
  // GAMMA: a parent is the Service's frontend, its ClusterIP; connections to a headless one's pods are never routed.
  ['a headless parent Service', { parentRefs: [{ kind: 'Service', group: '', name: 'db', port: 80 }] }, 'NoMatchingParent', 'ResolvedRefs', true, /Service shop\/db is headless \(clusterIP None\): it has no ClusterIP.*name a Service with an IPv4 ClusterIP as the parent/],
  ['an ExternalName or IPv6-only parent Service', { parentRefs: [{ kind: 'Service', group: '', name: 'ext' }] }, 'NoMatchingParent', 'ResolvedRefs', true, /Service shop\/ext has no IPv4 ClusterIP \(an ExternalName or IPv6-only Service\).*name a Service with an IPv4 ClusterIP as the parent/],
];
for (const [what, patch, reason, refs, kept, msg] of invalid) {
  test(`HTTPRoute refused: ${what}`, (t) => {
    const c = routeFromGateway(httpRoute(patch), services);
    const cond = c.parents[0]!.conditions;
    t.deepEqual(cond.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'False', reason], ['ResolvedRefs', refs === 'ResolvedRefs' ? 'True' : 'False', refs]]);
    t.regex(cond[0]!.message, msg);
    t.regex(c.problems.join('\n'), msg, 'the log names it too');
    t.is(c.record !== null, kept, kept ? 'a missing parent is not a bad route: it attaches once the Service exists' : 'nothing to serve: the last good version stays');
  });
}

// [what, backendRef, ResolvedRefs reason, message]
const unresolved: Array<[string, object, string, RegExp]> = [
  ['a backend Service that does not exist', { name: 'gone', port: 80 }, 'BackendNotFound', /Service shop\/gone not found/],
  ['a backend port the Service lacks', { name: 'api-v2', port: 9090 }, 'BackendNotFound', /Service shop\/api-v2 has no port 9090/],
  ['a backend of an unknown kind', { name: 'x', kind: 'Bucket', group: 'storage.example.com', port: 80 }, 'InvalidKind', /"storage\.example\.com\/Bucket" is not a kind we route to/],
  ['a backend in another namespace', { name: 'api', namespace: 'other', port: 80 }, 'RefNotPermitted', /in another namespace; a route may send across namespaces only to its parent Service/],
  ['an ExternalName or IPv6-only backend Service', { name: 'ext', port: 80 }, 'BackendNotFound', /Service shop\/ext has neither an IPv4 ClusterIP nor clusterIP None \(an ExternalName or IPv6-only Service\): there are no endpoints to balance its requests over/],
  ['a port a headless backend Service lacks', { name: 'db', port: 5432 }, 'BackendNotFound', /Service shop\/db has no port 5432/],
];

test('HTTPRoute and TrafficSplit: a headless backend Service resolves (ResolvedRefs=True): at its ports, or at any port when it declares none', (t) => {
  const c = routeFromGateway(httpRoute({ rules: [{ backendRefs: [{ name: 'db', port: 80, weight: 1 }, { name: 'bare', port: 5432, weight: 1 }] }] }), services);
  t.deepEqual(c.parents[0]!.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
  t.deepEqual(c.record!.rules[0]!.backends.map((b) => b.problem), [undefined, undefined]);
  t.deepEqual(c.problems, []);
  const s = routeFromTrafficSplit(split({ backends: [{ service: 'db', weight: 1 }, { service: 'bare', weight: 1 }] }), services, groups);
  t.deepEqual(s.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'True', 'ResolvedRefs']]);
  const ext = routeFromTrafficSplit(split({ backends: [{ service: 'api-v1', weight: 1 }, { service: 'ext', weight: 1 }] }), services, groups);
  t.deepEqual(ext.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'False', 'BackendNotFound']]);
  t.regex(ext.record!.rules[0]!.backends[1]!.problem!, /Service shop\/ext has neither an IPv4 ClusterIP nor clusterIP None/);
});
for (const [what, ref, reason, msg] of unresolved) {
  test(`HTTPRoute: ${what} is ResolvedRefs=False (${reason}) and its share answers 500`, (t) => {
    const c = routeFromGateway(httpRoute({ rules: [{ backendRefs: [{ name: 'api-v1', port: 80, weight: 1 }, { ...ref, weight: 1 }] }] }), services);
    const cond = c.parents[0]!.conditions;
    t.deepEqual(cond.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'False', reason]]);
    t.regex(cond[1]!.message, msg);
    const b = c.record!.rules[0]!.backends[1]!;
    t.regex(b.problem ?? '', msg);
    t.is(c.record!.rules[0]!.backends[0]!.problem, undefined);
    t.regex(c.problems.join('\n'), /share answers 500/);
  });
}

test('HTTPRoute: a consumer route may name its parent in another namespace', (t) => {
  const c = routeFromGateway({
    kind: 'HTTPRoute', metadata: { name: 'mine', namespace: 'client' },
    spec: { parentRefs: [{ kind: 'Service', group: 'core', name: 'api', namespace: 'shop' }], rules: [{ backendRefs: [{ name: 'api', namespace: 'shop', port: 80 }] }] },
  }, services);
  t.deepEqual(c.parents[0]!.conditions.map((x) => x.status), ['True', 'True']);
  t.deepEqual(c.record!.parents, [{ namespace: 'shop', name: 'api' }]);
  t.is(c.record!.createdAt, 0, 'no creationTimestamp (a file): the oldest possible');
});

test('HTTPRoute: a bad Linkerd annotation on the route refuses it', (t) => {
  const c = routeFromGateway(httpRoute({}, { annotations: { 'retry.linkerd.io/http': 'sometimes' } }), services);
  t.is(c.record, null);
  t.regex(c.parents[0]!.conditions[0]!.message, /retry\.linkerd\.io\/http: "sometimes" is not a retry condition/);
});

test('GRPCRoute: method matches and gRPC retry annotations', (t) => {
  const c = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute',
    metadata: { name: 'echo', namespace: 'shop', annotations: { 'retry.linkerd.io/grpc': 'unavailable', 'retry.linkerd.io/limit': '2' } },
    spec: {
      parentRefs: [{ kind: 'Service', group: '', name: 'grpc' }],
      rules: [
        { matches: [{ method: { service: 'echo.Echo', method: 'Slow' } }], backendRefs: [{ name: 'api-v1', port: 80 }] },
        { matches: [{ method: { type: 'RegularExpression', service: 'echo\\..*' } }] },
      ],
    },
  }, services);
  t.deepEqual(c.problems, []);
  const [a, b] = c.record!.rules;
  t.deepEqual(a!.matches, [{ grpc: { type: 'Exact', service: 'echo.Echo', method: 'Slow' } }]);
  t.deepEqual(b!.matches, [{ grpc: { type: 'RegularExpression', service: '^(?:echo\\..*)$' } }]);
  t.deepEqual(a!.retry, { limit: 2, grpcCodes: [14] });
});

test('Gateway API durations (GEP-2257)', (t) => {
  t.is(parseGatewayDuration('1h2m3s4ms', 'd'), 3_723_004);
  t.is(parseGatewayDuration('0s', 'd'), 0);
  for (const bad of ['1.5s', '1d', '', '5', '1s1s1s1s1s', 5]) t.throws(() => parseGatewayDuration(bad, 'd'), { message: /is not a Gateway API duration/ }, String(bad));
});

test('HTTPRoute: any GEP-2257 duration is served: a timeout or backoff of days (up to 99999h) is accepted, held as long as a timer can', (t) => {
  const d = routeFromGateway(httpRoute({ rules: [{ timeouts: { request: '99999h', backendRequest: '48h' }, retry: { backoff: '30h' } }] }), services);
  t.is(d.parents[0]!.conditions[0]!.status, 'True', d.problems.join('; '));
  const r = d.record!.rules[0]!;
  t.is(r.timeouts!.backendRequestMs, 48 * 3_600_000);
  t.is(r.timeouts!.requestMs, 2 ** 31 - 1, 'longer than a timer holds: the longest one (24.8 days)');
  t.is(r.retry!.backoffMs, 30 * 3_600_000);
});

// ---- SMI TrafficSplit ----

const split = (spec: object) => ({ apiVersion: 'split.smi-spec.io/v1alpha4', kind: 'TrafficSplit', metadata: { name: 'canary', namespace: 'shop' }, spec: { service: 'api', ...spec } });
const groups = (ns: string, name: string) => (ns === 'shop' && name === 'firefox'
  ? { kind: 'HTTPRouteGroup', spec: { matches: [{ name: 'ff', headers: { 'User-Agent': '.*Firefox.*' }, pathRegex: '/api/.*', methods: ['GET', 'HEAD'] }] } }
  : undefined);

test('TrafficSplit: backends take the port the client called; without matches one rule', (t) => {
  const c = routeFromTrafficSplit(split({ backends: [{ service: 'api-v1', weight: 90 }, { service: 'api-v2', weight: 10 }] }), services, groups);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.parents, [{ namespace: 'shop', name: 'api' }]);
  t.deepEqual(c.record!.rules, [{ name: 'split', matches: [], backends: [
    { namespace: 'shop', name: 'api-v1', port: SAME_PORT, weight: 90 }, { namespace: 'shop', name: 'api-v2', port: SAME_PORT, weight: 10 },
  ] }]);
  t.deepEqual(c.conditions.map((x) => [x.type, x.status]), [['Accepted', 'True'], ['ResolvedRefs', 'True']]);
});

test('TrafficSplit with an HTTPRouteGroup: matching requests are split, the rest go to the root Service', (t) => {
  const c = routeFromTrafficSplit(split({ matches: [{ kind: 'HTTPRouteGroup', name: 'firefox' }], backends: [{ service: 'api-v2', weight: 100 }] }), services, groups);
  t.deepEqual(c.groups, ['shop/firefox']);
  const [s, root] = c.record!.rules;
  t.deepEqual(s!.matches, [
    { path: { type: 'RegularExpression', value: '^(?:/api/.*)' }, headers: [{ name: 'user-agent', type: 'RegularExpression', value: '.*Firefox.*' }], method: 'GET' },
    { path: { type: 'RegularExpression', value: '^(?:/api/.*)' }, headers: [{ name: 'user-agent', type: 'RegularExpression', value: '.*Firefox.*' }], method: 'HEAD' },
  ]);
  t.deepEqual(root, { name: 'root', matches: [], backends: [] });
});

const badSplits: Array<[string, object, RegExp]> = [
  ['every weight 0', { backends: [{ service: 'api-v1', weight: 0 }] }, /every weight is 0/],
  ['a weight below 0', { backends: [{ service: 'api-v1', weight: -5 }] }, /weight: -5 is out of range/],
  ['no backends', { backends: [] }, /expected 1 to 64 backends/],
  ['a missing HTTPRouteGroup', { matches: [{ kind: 'HTTPRouteGroup', name: 'nope' }], backends: [{ service: 'api-v1', weight: 1 }] }, /HTTPRouteGroup shop\/nope not found/],
  ['a match of another kind', { matches: [{ kind: 'TCPRoute', name: 'x' }], backends: [{ service: 'api-v1', weight: 1 }] }, /"TCPRoute" is not supported; only HTTPRouteGroup/],
];
for (const [what, spec, msg] of badSplits) {
  test(`TrafficSplit refused: ${what}`, (t) => {
    const c = routeFromTrafficSplit(split(spec), services, groups);
    t.is(c.record, null);
    t.deepEqual([c.conditions[0]!.status, c.conditions[0]!.reason], ['False', 'UnsupportedValue']);
    t.regex(c.conditions[0]!.message, msg);
  });
}

test('TrafficSplit: a missing backend Service answers 500 for its share', (t) => {
  const c = routeFromTrafficSplit(split({ backends: [{ service: 'api-v1', weight: 1 }, { service: 'gone', weight: 1 }] }), services, groups);
  t.deepEqual(c.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'False', 'BackendNotFound']]);
  t.regex(c.record!.rules[0]!.backends[1]!.problem!, /Service shop\/gone not found/);
});

test('TrafficSplit: a headless, ExternalName or IPv6-only root Service is NoMatchingParent (no ClusterIP its clients call), not a split that never applies', (t) => {
  for (const [root, msg] of [['db', /Service shop\/db is headless \(clusterIP None\): it has no ClusterIP.*name a Service with an IPv4 ClusterIP as the parent/], ['ext', /Service shop\/ext has no IPv4 ClusterIP/]] as const) {
    const c = routeFromTrafficSplit(split({ service: root, backends: [{ service: 'api-v1', weight: 1 }] }), services, groups);
    t.deepEqual(c.conditions.map((x) => [x.type, x.status, x.reason]), [['Accepted', 'False', 'NoMatchingParent'], ['ResolvedRefs', 'True', 'ResolvedRefs']], root);
    t.regex(c.conditions[0]!.message, msg);
    t.regex(c.problems.join('\n'), msg, 'the log names it too');
  }
});

// ---- the record parser ----

test('route records: every converted record passes the agent\'s parser unchanged', (t) => {
  for (const c of [
    routeFromGateway(httpRoute({ rules: [{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: 'a+' }] }], backendRefs: [{ name: 'api-v1', port: 80 }], retry: {} }] }), services),
    routeFromTrafficSplit(split({ matches: [{ name: 'firefox' }], backends: [{ service: 'api-v1', weight: 1 }] }), services, groups),
  ]) t.deepEqual(parseRouteRecord(JSON.parse(JSON.stringify(c.record))), c.record);
});

const base: RouteRecord = { kind: 'HTTPRoute', namespace: 'shop', name: 'r', createdAt: 0, parents: [{ namespace: 'shop', name: 'api' }], rules: [{ matches: [], backends: [] }] };
const badRecords: Array<[string, object, RegExp]> = [
  ['an unknown kind', { kind: 'TCPRoute' }, /route\.kind: expected one of HTTPRoute, GRPCRoute, TrafficSplit/],
  ['no rules', { rules: [] }, /rules: expected at least one rule/],
  ['too many rules', { rules: Array(17).fill({ matches: [], backends: [] }) }, /rules: more than 16 entries/],
  ['a negative weight', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: -1 }] }] }, /backends\[0\]\.weight: expected an integer 0-1000000/],
  ['a bad port', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 70000, weight: 1 }] }] }, /port: expected a port 1-65535 \(or 0: the parent's\)/],
  ['a bad regex', { rules: [{ matches: [{ path: { type: 'RegularExpression', value: '(' } }], backends: [] }] }, /not a regular expression/],
  ['a lower-case method', { rules: [{ matches: [{ method: 'get' }], backends: [] }] }, /method: expected an upper-case HTTP method/],
  ['a retry limit of 11', { rules: [{ matches: [], backends: [], retry: { limit: 11 } }] }, /retry\.limit: expected an integer 0-10/],
  ['a reversed status range', { rules: [{ matches: [], backends: [], retry: { limit: 1, httpStatuses: [[504, 500]] } }] }, /expected \[low, high\] status codes/],
  ['a timeout of 0', { rules: [{ matches: [], backends: [], timeouts: { requestMs: 0 } }] }, /timeouts\.requestMs: expected milliseconds/],
  ['a query match of type Prefix', { rules: [{ matches: [{ queryParams: [{ name: 'a', type: 'Prefix', value: 'b' }] }], backends: [] }] }, /queryParams\[0\]\.type: expected Exact or RegularExpression/],
  ['a header modifier setting host', { rules: [{ matches: [], backends: [], requestHeaders: { set: [{ name: 'host', value: 'x' }] } }] }, /requestHeaders\.set\[0\]: "host" is the request's authority/],
  ['a header modifier value with LF', { rules: [{ matches: [], backends: [], requestHeaders: { add: [{ name: 'x-a', value: 'a\nb' }] } }] }, /requestHeaders\.add\[0\]\.value: expected a header value without control characters/],
  ['a header modifier naming a header twice', { rules: [{ matches: [], backends: [], requestHeaders: { remove: ['x-a', 'x-a'] } }] }, /requestHeaders\.remove\[1\]: "x-a" is named twice/],
  ['a response modifier adding transfer-encoding', { rules: [{ matches: [], backends: [], responseHeaders: { add: [{ name: 'transfer-encoding', value: 'chunked' }] } }] }, /responseHeaders\.add\[0\]: "transfer-encoding" is a hop-by-hop or framing header/],
  ['a backend modifier setting host', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 1, requestHeaders: { set: [{ name: 'host', value: 'x' }] } }] }] }, /backends\[0\]\.requestHeaders\.set\[0\]: "host" is the request's authority/],
  ['a backend response modifier adding content-length', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 1, responseHeaders: { add: [{ name: 'content-length', value: '0' }] } }] }] }, /backends\[0\]\.responseHeaders\.add\[0\]: "content-length" is a hop-by-hop or framing header/],
  ['a redirect with backends', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 1 }], redirect: { statusCode: 302 } }] }, /rules\[0\]\.redirect: a redirect rule has no backends/],
  ['a redirect status 200', { rules: [{ matches: [], backends: [], redirect: { statusCode: 200 } }] }, /redirect\.statusCode: expected one of 301, 302, 303, 307, 308, got 200/],
  ['a redirect without its prefix', { rules: [{ matches: [], backends: [], redirect: { statusCode: 302, path: { type: 'ReplacePrefixMatch', value: '/a' } } }] }, /redirect\.path\.prefix: expected a path starting with "\/"/],
  ['a redirect hostname with CR LF', { rules: [{ matches: [], backends: [], redirect: { statusCode: 302, hostname: 'a\r\nx: 1' } }] }, /redirect\.hostname: expected a lower-case host name/],
  // Fields this agent does not know, at every level: read without them the record would route otherwise.
  ['an unknown field of the route', { hostnames: ['a.example'] }, /HTTPRoute shop\/r\.hostnames: unknown field "hostnames": this agent does not know it/],
  ['an unknown filter of a rule', { rules: [{ matches: [], backends: [], urlRewrite: { path: '/b' } }] }, /rules\[0\]\.urlRewrite: unknown field "urlRewrite"/],
  ['an unknown match kind', { rules: [{ matches: [{ sourceCidr: '10.0.0.0/8' }], backends: [] }] }, /matches\[0\]\.sourceCidr: unknown field/],
  ['an unknown part of a path match', { rules: [{ matches: [{ path: { type: 'Exact', value: '/a', ignoreCase: true } }], backends: [] }] }, /matches\[0\]\.path\.ignoreCase: unknown field/],
  ['an unknown part of a header match', { rules: [{ matches: [{ headers: [{ name: 'x', type: 'Exact', value: 'a', invert: true }] }], backends: [] }] }, /headers\[0\]\.invert: unknown field/],
  ['an unknown part of a query match', { rules: [{ matches: [{ queryParams: [{ name: 'x', type: 'Exact', value: 'a', all: true }] }], backends: [] }] }, /queryParams\[0\]\.all: unknown field/],
  ['an unknown part of a gRPC match', { rules: [{ matches: [{ grpc: { type: 'Exact', service: 'a.B', version: 2 } }], backends: [] }] }, /grpc\.version: unknown field/],
  ['an unknown filter of a backend', { rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 1, mirror: true }] }] }, /backends\[0\]\.mirror: unknown field/],
  ['an unknown header edit', { rules: [{ matches: [], backends: [], requestHeaders: { prepend: [{ name: 'x-a', value: '1' }] } }] }, /requestHeaders\.prepend: unknown field/],
  ['an unknown part of a header edit', { rules: [{ matches: [], backends: [], responseHeaders: { set: [{ name: 'x-a', value: '1', ifAbsent: true }] } }] }, /responseHeaders\.set\[0\]\.ifAbsent: unknown field/],
  ['an unknown part of a redirect', { rules: [{ matches: [], backends: [], redirect: { statusCode: 302, query: 'a=1' } }] }, /redirect\.query: unknown field/],
  ['a ReplaceFullPath with a prefix', { rules: [{ matches: [], backends: [], redirect: { statusCode: 302, path: { type: 'ReplaceFullPath', value: '/a', prefix: '/b' } } }] }, /redirect\.path\.prefix: unknown field/],
  ['an unknown timeout', { rules: [{ matches: [], backends: [], timeouts: { connectMs: 5 } }] }, /timeouts\.connectMs: unknown field/],
  ['an unknown retry setting', { rules: [{ matches: [], backends: [], retry: { limit: 1, jitter: 0.5 } }] }, /retry\.jitter: unknown field/],
  ['an unknown part of a source', { rules: [{ matches: [], backends: [], timeouts: { requestMs: 5 }, timeoutSources: [{ kind: 'HTTPRoute', namespace: 'shop', name: 'r', line: 3 }] }] }, /timeoutSources\[0\]\.line: unknown field/],
  ['a filter of the wrong type', { rules: [{ matches: [], backends: [], requestHeaders: [{ set: [] }] }] }, /requestHeaders: expected an object/],
];
for (const [what, patch, msg] of badRecords) {
  test(`route records refused: ${what}`, (t) => {
    t.throws(() => parseRouteRecord({ ...base, ...patch }), { message: msg });
    const line = JSON.stringify({ type: 'route', op: 'set', route: { ...base, ...patch } });
    if ('kind' in patch) {
      t.throws(() => parseMessage(line), { message: msg }, 'as a discovery line too: no kind to fail closed');
      return;
    }
    // As a discovery line: the route fails closed, naming the problem (below, "refused routes").
    const m = parseMessage(line);
    if (m.type !== 'route' || m.op !== 'set') throw new Error(`parsed as ${m.type}`);
    t.regex(m.route.refused!, msg);
    t.deepEqual({ ...m.route, rules: [], refused: '' }, { ...base, rules: [], refused: '' });
    t.regex(m.route.rules[0]!.backends[0]!.problem!, /^this agent cannot read the route the controller sent \(HTTPRoute shop\/r/);
  });
}

test('route records: parents the agent cannot read make the line garbage (the link drops), not a refused route', (t) => {
  const line = (parents: unknown) => JSON.stringify({ type: 'route', op: 'set', route: { ...base, parents, rules: [{ matches: [], backends: [], urlRewrite: {} }] } });
  t.throws(() => parseMessage(line([{ namespace: 'shop', name: 'api', sectionName: 'http' }])), { message: /parents\[0\]\.sectionName: unknown field/ });
  t.throws(() => parseMessage(line([])), { message: /parents: expected at least one parent Service/ });
});

test('refused routes: a route the agent cannot read takes every request of its kind on its parents, before more specific matches; 500 with the reason, no retry', (t) => {
  const valid = rec('HTTPRoute', 'shop', 'valid', 0, [{ matches: [{ path: { type: 'Exact', value: '/exact' }, headers: [{ name: 'x', type: 'Exact', value: '1' }] }], backends: to('api-v1') }]);
  const m = parseMessage(JSON.stringify({ type: 'route', op: 'set', route: { ...rec('HTTPRoute', 'shop', 'bad', 5, [{ matches: [{ path: { type: 'Exact', value: '/only-this' } }], backends: to('api-v2'), mirror: {} } as RouteRecord['rules'][number]]) } }));
  if (m.type !== 'route' || m.op !== 'set') throw new Error(`parsed as ${m.type}`);
  const grpcRoute = rec('GRPCRoute', 'shop', 'g', 0, [{ matches: [], backends: to('grpc') }]);
  const ann = policyFromAnnotations({ 'retry.linkerd.io/http': '5xx' }, SVC);
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, ann, [valid, m.route, grpcRoute]);
  for (const req of [request('GET', '/exact', { x: '1' }), request('GET', '/only-this'), request('POST', '/other')]) {
    const r = findRoute(p.forClient('x'), req, false)!;
    t.is(`${r.route.name}#${r.ruleIndex}`, 'bad#0');
    t.regex(r.backends[0]!.problem!, /cannot read the route the controller sent \(HTTPRoute shop\/bad: rules\[0\]\.mirror: unknown field/);
    t.is(r.retryFor(false), null, 'the Service\'s retries do not apply: every attempt would answer the same');
  }
  t.is(routeName(p, 'x', request('POST', '/echo.Echo/Get'), true), 'GRPCRoute/g#0', 'gRPC requests go by the GRPCRoutes, which the refused HTTPRoute never took');
  // The refused record is itself a record: it reads back the same (replicas, replay).
  t.deepEqual(parseRouteRecord(JSON.parse(JSON.stringify(m.route))), m.route);
});

// ---- precedence and matching ----

const rec = (kind: RouteRecord['kind'], namespace: string, name: string, createdAt: number, rules: RouteRecord['rules'], port?: number): RouteRecord =>
  ({ kind, namespace, name, createdAt, parents: [{ namespace: 'shop', name: 'api', ...(port ? { port } : {}) }], rules });
const to = (name: string) => [{ namespace: 'shop', name, port: 80, weight: 1 }];
const noAnn = policyFromAnnotations({}, SVC);

function request(method: string, target: string, headers: Record<string, string> = {}): RouteRequest {
  return { method, path: pathOf(target), header: (n) => headers[n], query: (n) => queryParam(target, n) };
}
const routeName = (p: ParentPolicy, ns: string, req: RouteRequest, grpc = false) => {
  const r = findRoute(p.forClient(ns), req, grpc);
  return r === null ? null : `${r.route.kind}/${r.route.name}#${r.ruleIndex}`;
};

test('precedence: consumer routes win for their namespace, producer routes for everyone else, a TrafficSplit only when neither exists', (t) => {
  const producer = rec('HTTPRoute', 'shop', 'prod', 10, [{ matches: [], backends: to('api-v1') }]);
  const consumer = rec('HTTPRoute', 'client', 'cons', 5, [{ matches: [], backends: to('api-v2') }]);
  const ts = rec('TrafficSplit', 'shop', 'ts', 1, [{ matches: [], backends: to('api-v2') }]);
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [ts, producer, consumer]);
  t.is(routeName(p, 'client', request('GET', '/')), 'HTTPRoute/cons#0');
  t.is(routeName(p, 'elsewhere', request('GET', '/')), 'HTTPRoute/prod#0');
  t.is(routeName(p, 'shop', request('GET', '/')), 'HTTPRoute/prod#0', 'the producer namespace gets the producer routes');
  t.deepEqual(p.overridden.map((o) => [o.route.name, o.reason]), [['ts', 'HTTPRoute shop/prod is attached to the same Service; Gateway API routes win over a TrafficSplit']]);
  const onlySplit = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [ts]);
  t.is(routeName(onlySplit, 'anyone', request('GET', '/')), 'TrafficSplit/ts#0');
  t.deepEqual(onlySplit.overridden, []);
});

// Decided, not a gap: a Service whose only routes are GRPCRoutes has no route for a plain HTTP
// request, as in Linkerd (its policy controller then serves the gRPC protocol with those routes
// alone, no default HTTP route) and GAMMA (routes attached to a Service replace its default).
test('precedence: a Service with only GRPCRoutes: gRPC requests go by them, a plain HTTP request finds no route (404), with Linkerd annotations too', (t) => {
  const grpcOnly = rec('GRPCRoute', 'shop', 'g', 0, [{ matches: [], backends: to('api-v1') }]);
  for (const ann of [noAnn, policyFromAnnotations({ 'retry.linkerd.io/http': '5xx' }, SVC)]) {
    const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, ann, [grpcOnly]);
    t.is(routeName(p, 'x', request('POST', '/echo.Echo/Get'), true), 'GRPCRoute/g#0');
    t.is(routeName(p, 'x', request('GET', '/')), null, 'no default HTTP route beside the GRPCRoutes');
    t.is(p.forClient('x').http, null);
  }
});

test('precedence: without routes, Linkerd annotations on the Service make a default route; with neither, no table is needed', (t) => {
  const ann = policyFromAnnotations({ 'retry.linkerd.io/http': '5xx' }, SVC);
  t.true(ParentPolicy.needed(ann, []));
  t.false(ParentPolicy.needed(noAnn, []));
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, ann, []);
  const r = findRoute(p.forClient('x'), request('POST', '/anything'), false)!;
  t.deepEqual(r.route, { group: '', kind: 'default', namespace: '', name: 'http' });
  t.deepEqual(r.retryFor(false), { limit: 1, httpStatuses: [[500, 599]] });
  t.is(findRoute(p.forClient('x'), request('POST', '/echo.Echo/Get'), true)!.route.name, 'grpc');
});

test('the Service\'s annotations fill in a rule that has no timeouts or retry of its own', (t) => {
  const ann = policyFromAnnotations({ 'retry.linkerd.io/http': '503', 'timeout.linkerd.io/request': '2s' }, SVC);
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, ann, [
    rec('HTTPRoute', 'shop', 'r', 0, [
      { matches: [{ path: { type: 'Exact', value: '/own' } }], backends: [], timeouts: { requestMs: 100 }, retry: null },
      { matches: [], backends: [] },
    ]),
  ]);
  const own = findRoute(p.forClient('x'), request('GET', '/own'), false)!;
  t.deepEqual(own.timeouts, { requestMs: 100 });
  t.is(own.retryFor(false), null, 'retry: null on the rule turns the Service\'s retries off');
  const other = findRoute(p.forClient('x'), request('GET', '/other'), false)!;
  t.deepEqual(other.timeouts, { requestMs: 2000 });
  t.deepEqual(other.retryFor(false), { limit: 1, httpStatuses: [[503, 503]] });
  t.deepEqual(other.timeoutSources.map((s) => s.annotation), ['timeout.linkerd.io/request']);
});

test('matching: the most specific match wins whatever the order of rules and routes', (t) => {
  const rules: RouteRecord['rules'] = [
    { matches: [], backends: to('catch-all') },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backends: to('prefix-api') },
    { matches: [{ path: { type: 'PathPrefix', value: '/api/v2/' } }], backends: to('prefix-v2') },
    { matches: [{ path: { type: 'Exact', value: '/api/v2/health' } }], backends: to('exact') },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }], backends: to('post') },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', type: 'Exact', value: '1' }] }], backends: to('canary') },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', type: 'Exact', value: '1' }, { name: 'x-user', type: 'RegularExpression', value: '^vip-' }] }], backends: to('canary-vip') },
  ];
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, rules)]);
  const cases: Array<[RouteRequest, string]> = [
    [request('GET', '/'), 'catch-all'],
    [request('GET', '/apix'), 'catch-all'], // a prefix matches whole path segments
    [request('GET', '/api'), 'prefix-api'],
    [request('GET', '/api/'), 'prefix-api'],
    [request('GET', '/api/v2'), 'prefix-v2'], // "/api/v2/" matches /api/v2 too (the trailing slash is ignored)
    [request('GET', '/api/v2/x'), 'prefix-v2'],
    [request('GET', '/api/v2/health'), 'exact'],
    [request('POST', '/api/v2/health'), 'exact'], // a path match outranks a method
    [request('POST', '/api/x'), 'post'], // a method outranks headers
    [request('GET', '/api/x', { 'x-canary': '1' }), 'canary'],
    [request('GET', '/api/x', { 'x-canary': '2' }), 'prefix-api'],
    [request('GET', '/api/x', { 'x-canary': '1', 'x-user': 'vip-7' }), 'canary-vip'],
    [request('GET', '/api/x', { 'x-canary': '1', 'x-user': 'plain' }), 'canary'],
  ];
  for (const [req, want] of cases) {
    const r = findRoute(p.forClient('x'), req, false)!;
    t.is(r.backends[0]!.name, want, `${req.method} ${req.path} ${JSON.stringify(req.header('x-canary'))}`);
  }
});

test('matching: query parameters, all of a match\'s conditions (AND); more query matches outrank fewer, headers outrank them', (t) => {
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, [
    { matches: [], backends: to('rest') },
    { matches: [{ queryParams: [{ name: 'canary', type: 'Exact', value: '1' }] }], backends: to('canary') },
    { matches: [{ queryParams: [{ name: 'canary', type: 'Exact', value: '1' }, { name: 'user', type: 'RegularExpression', value: '^(?:vip-[0-9]+)$' }] }], backends: to('canary-vip') },
    { matches: [{ headers: [{ name: 'x-h', type: 'Exact', value: '1' }] }], backends: to('header') },
  ])]);
  const name = (target: string, headers: Record<string, string> = {}) => findRoute(p.forClient('x'), request('GET', target, headers), false)!.backends[0]!.name;
  t.is(name('/x?canary=1'), 'canary');
  t.is(name('/x?a=b&canary=1&c'), 'canary');
  t.is(name('/x?canary=2'), 'rest');
  t.is(name('/x?Canary=1'), 'rest', 'names are case-sensitive');
  t.is(name('/x?canary=1&canary=2'), 'canary', 'a repeated parameter: its first value');
  t.is(name('/x?canary=2&canary=1'), 'rest');
  t.is(name('/x?canary=1&user=vip-7'), 'canary-vip');
  t.is(name('/x?canary=1&user=vip-7x'), 'canary', 'a regular expression matches the whole value');
  t.is(name('/x?user=vip-7'), 'rest', 'every condition of a match must hold');
  t.is(name('/x?canary=1', { 'x-h': '1' }), 'header', 'a header match outranks query matches (Gateway API\'s order)');
  t.is(name('/x?%63anary=%31'), 'canary', 'names and values are compared percent-decoded');
  t.is(name('/x'), 'rest');
});

test('queryParam: the first value, percent-decoded; absent, empty and malformed', (t) => {
  t.is(queryParam('/p?a=1&b=2', 'b'), '2');
  t.is(queryParam('/p?a=1&a=2', 'a'), '1');
  t.is(queryParam('/p?a&b=', 'a'), '');
  t.is(queryParam('/p?a&b=', 'b'), '');
  t.is(queryParam('/p?ab=1', 'a'), undefined);
  t.is(queryParam('/p?a=1', 'ab'), undefined);
  t.is(queryParam('/p', 'a'), undefined);
  t.is(queryParam('/p?', 'a'), undefined);
  t.is(queryParam('/p?x=%E2%9C%93&y=a+b', 'x'), '\u2713');
  t.is(queryParam('/p?x=%E2%9C%93&y=a+b', 'y'), 'a+b', 'a plus stays a plus');
  t.is(queryParam('/p?x=100%&y=%zz', 'x'), '100%', 'a malformed escape is kept as written');
  t.is(queryParam('/p?x=100%&y=%zz', 'y'), '%zz');
  t.is(queryParam('/p?a%3Db=1', 'a=b'), '1', 'an escaped name is decoded');
  t.is(queryParam('http://h:1/p?a=1', 'a'), '1', 'absolute-form');
  t.is(queryParam('/p?a=1=2', 'a'), '1=2');
});

test('RequestHeaderModifier: remove, then set, then add, on an HTTP/1 head and an HTTP/2 header object', (t) => {
  const mod = new CompiledHeaderModifier({ set: [{ name: 'x-set', value: 'new' }], add: [{ name: 'x-add', value: 'two' }], remove: ['x-gone', 'x-set'] });
  const head = Buffer.from('GET /a?b=1 HTTP/1.1\r\nHost: api\r\nX-Set: old\r\nx-add: one\r\nX-GONE: 1\r\nx-set: old2\r\nAccept: */*\r\n\r\n', 'latin1');
  t.is(modifiedHead(head, mod).toString('latin1'), 'GET /a?b=1 HTTP/1.1\r\nHost: api\r\nx-add: one\r\nAccept: */*\r\nx-set: new\r\nx-add: two\r\n\r\n');
  const h2: Record<string, string | string[]> = { ':method': 'GET', 'x-set': 'old', 'x-add': 'one', 'x-gone': '1', accept: '*/*' };
  mod.applyToH2(h2);
  t.deepEqual(h2, { ':method': 'GET', 'x-set': 'new', 'x-add': ['one', 'two'], accept: '*/*' });
  const h2b: Record<string, string | string[]> = {};
  mod.applyToH2(h2b);
  t.deepEqual(h2b, { 'x-set': 'new', 'x-add': 'two' }, 'set and add add a header the request lacks');
});

test('backend header modifiers: the rule\'s then the backend\'s on a request, the backend\'s then the rule\'s on a response, as one modifier; a backend without its own takes the rule\'s', (t) => {
  const rule = { set: [{ name: 'x-a', value: 'rule' }, { name: 'x-b', value: 'rule' }], add: [{ name: 'x-c', value: 'rule' }, { name: 'x-d', value: 'rule' }], remove: ['x-e'] };
  const backend = { set: [{ name: 'x-b', value: 'backend' }], add: [{ name: 'x-d', value: 'backend' }, { name: 'x-a', value: 'backend' }], remove: ['x-c'] };
  const one = new CompiledHeaderModifier(rule, backend);
  const head = Buffer.from('GET / HTTP/1.1\r\nHost: api\r\nX-A: client\r\nx-c: client\r\nx-d: client\r\nx-e: client\r\n\r\n', 'latin1');
  const twice = modifiedHead(modifiedHead(head, new CompiledHeaderModifier(rule)), new CompiledHeaderModifier(backend)).toString('latin1');
  t.is(modifiedHead(head, one).toString('latin1'), twice, 'HTTP/1: the same head as the two applied in turn');
  t.is(twice, 'GET / HTTP/1.1\r\nHost: api\r\nx-d: client\r\nx-a: rule\r\nx-d: rule\r\nx-b: backend\r\nx-d: backend\r\nx-a: backend\r\n\r\n');
  const h2 = (): Record<string, string | string[]> => ({ ':method': 'GET', 'x-a': 'client', 'x-c': 'client', 'x-d': 'client', 'x-e': 'client' });
  const a = h2();
  one.applyToH2(a);
  const b = h2();
  new CompiledHeaderModifier(rule).applyToH2(b);
  new CompiledHeaderModifier(backend).applyToH2(b);
  t.deepEqual(a, b, 'HTTP/2: the same header object');
  t.deepEqual(a, { ':method': 'GET', 'x-a': ['rule', 'backend'], 'x-d': ['client', 'rule', 'backend'], 'x-b': 'backend' });
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, [{
    matches: [], requestHeaders: { set: [{ name: 'x-route', value: 'r' }] }, responseHeaders: { set: [{ name: 'x-resp', value: 'rule' }] },
    backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 1 }, { namespace: 'shop', name: 'b', port: 80, weight: 1, requestHeaders: { set: [{ name: 'x-route', value: 'b' }] }, responseHeaders: { set: [{ name: 'x-resp', value: 'b' }, { name: 'x-b', value: '1' }] } }],
  }])]);
  const compiled = findRoute(p.forClient('shop'), request('GET', '/'), false)!;
  const [ba, bb] = compiled.backends;
  t.is(ba!.requestHeaders, null, 'backend a: the rule\'s modifier, nothing per backend');
  t.is(ba!.responseHeaders, null);
  t.true(compiled.backendRequestHeaders);
  const req: Record<string, string> = {};
  bb!.requestHeaders!.applyToH2(req);
  t.deepEqual(req, { 'x-route': 'b' }, 'the backend\'s set wins over the rule\'s');
  const res: Record<string, string> = {};
  bb!.responseHeaders!.applyToH2(res);
  t.deepEqual(res, { 'x-resp': 'rule', 'x-b': '1' }, 'the rule\'s set, applied last, wins on the response');
  const plain = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, [{ matches: [], backends: to('a') }])]);
  t.false(findRoute(plain.forClient('shop'), request('GET', '/'), false)!.backendRequestHeaders);
});

test('RequestRedirect: the Location for each form (scheme, host, port and its elision, full path, prefix), the query kept', (t) => {
  const loc = (r: ConstructorParameters<typeof CompiledRedirect>[0], target: string, host = 'api.shop:8080') => new CompiledRedirect(r).location(target, host, 'api.shop.svc.cluster.local:8080', 8080);
  t.is(loc({ statusCode: 302 }, '/a?b=1'), 'http://api.shop:8080/a?b=1', 'nothing replaced: the same URL, the port the client called');
  t.is(loc({ statusCode: 302, scheme: 'https' }, '/a'), 'https://api.shop/a', 'a new scheme and no port: its well-known port, left out');
  t.is(loc({ statusCode: 302, scheme: 'http' }, '/a'), 'http://api.shop/a', 'http: 80, left out');
  t.is(loc({ statusCode: 302, scheme: 'https', port: 8443 }, '/a'), 'https://api.shop:8443/a');
  t.is(loc({ statusCode: 302, scheme: 'https', port: 443 }, '/a'), 'https://api.shop/a', '443 for https is left out');
  t.is(loc({ statusCode: 302, port: 80 }, '/a'), 'http://api.shop/a', '80 for http is left out');
  t.is(loc({ statusCode: 302, hostname: 'other.example' }, '/a'), 'http://other.example:8080/a', 'the hostname replaced, the port kept');
  t.is(loc({ statusCode: 302 }, '/a', '[fd00::1]:8080'), 'http://[fd00::1]:8080/a', 'an IPv6 Host');
  t.is(loc({ statusCode: 302 }, '/a', ''), 'http://api.shop.svc.cluster.local:8080/a', 'no Host: the Service\'s name');
  t.is(loc({ statusCode: 302 }, '/a', 'bad host\u0001'), 'http://api.shop.svc.cluster.local:8080/a', 'a Host we would not write as is: the Service\'s name');
  t.is(loc({ statusCode: 302, path: { type: 'ReplaceFullPath', value: '/full' } }, '/a/b?x=1'), 'http://api.shop:8080/full?x=1');
  t.is(loc({ statusCode: 302 }, 'http://api.shop:8080/a?q'), 'http://api.shop:8080/a?q', 'absolute-form: its path and query');
  t.is(loc({ statusCode: 302 }, 'http://api.shop:8080?next=/a'), 'http://api.shop:8080/?next=/a', 'absolute-form without a path: "/", the query whole');
  const prefix = { statusCode: 302 as const, path: { type: 'ReplacePrefixMatch' as const, value: '/new', prefix: '/old' } };
  t.is(loc(prefix, '/old/x/y?z=1'), 'http://api.shop:8080/new/x/y?z=1');
  t.is(loc(prefix, '/old'), 'http://api.shop:8080/new');
  t.is(loc({ ...prefix, path: { ...prefix.path, prefix: '/old/' } }, '/old/x'), 'http://api.shop:8080/new/x', 'a prefix\'s trailing "/" is ignored, as in matching');
  t.is(replacePrefix('/old/x', '/old', '/'), '/x');
  t.is(replacePrefix('/old', '/old', '/'), '/');
  t.is(replacePrefix('/old/x', '/old', '/new/'), '/new/x');
  t.is(replacePrefix('/x', '', '/v2'), '/v2/x', 'prefix "/" (kept as ""): the replacement goes in front');
  t.is(replacePrefix('/', '', '/v2'), '/v2', '"/" is the whole prefix "/"');
  t.deepEqual([301, 302, 303, 307, 308].map((s) => new CompiledRedirect({ statusCode: s as 301 }).reason), ['Moved Permanently', 'Found', 'See Other', 'Temporary Redirect', 'Permanent Redirect']);
});

test('matching: equal matches go to the older route, then by namespace/name, then the first rule', (t) => {
  const same = (name: string): RouteRecord['rules'] => [{ matches: [{ path: { type: 'PathPrefix', value: '/a' } }], backends: to(name) }, { matches: [{ path: { type: 'PathPrefix', value: '/a' } }], backends: to(`${name}-2`) }];
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'young', 20, same('young')), rec('HTTPRoute', 'shop', 'b-old', 10, same('b')), rec('HTTPRoute', 'shop', 'a-old', 10, same('a'))]);
  t.is(findRoute(p.forClient('x'), request('GET', '/a'), false)!.backends[0]!.name, 'a');
});

test('matching: with routes attached, a request no rule matches finds none (the forwarder answers 404)', (t) => {
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, [{ matches: [{ path: { type: 'Exact', value: '/only' } }], backends: [] }])]);
  t.is(findRoute(p.forClient('x'), request('GET', '/other'), false), null);
  t.is(findRoute(p.forClient('x'), request('POST', '/pkg.Svc/M'), true), null, 'a gRPC request falls back to the HTTPRoutes, which do not match');
});

test('matching: GRPCRoutes take gRPC requests by service and method; a plain HTTP request does not see them', (t) => {
  const g = rec('GRPCRoute', 'shop', 'g', 0, [
    { matches: [{ grpc: { type: 'Exact', service: 'echo.Echo', method: 'Slow' } }], backends: to('slow') },
    { matches: [{ grpc: { type: 'Exact', service: 'echo.Echo' } }], backends: to('echo') },
    { matches: [{ grpc: { type: 'RegularExpression', service: '^(?:other\\..*)$' } }], backends: to('other') },
  ]);
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [g]);
  const name = (path: string) => findRoute(p.forClient('x'), request('POST', path), true)?.backends[0]?.name ?? null;
  t.is(name('/echo.Echo/Slow'), 'slow');
  t.is(name('/echo.Echo/Fast'), 'echo');
  t.is(name('/other.Thing/X'), 'other');
  t.is(name('/third.T/X'), null);
  t.is(findRoute(p.forClient('x'), request('GET', '/echo.Echo/Slow'), false), null);
});

test('matching: a route attached to one port does not apply to the others (the Router gives each port its own policy)', (t) => {
  const store = new DiscoveryStore();
  const r80 = rec('HTTPRoute', 'shop', 'p80', 0, [{ matches: [], backends: [] }], 80);
  store.apply({ type: 'route', op: 'set', route: r80 });
  t.deepEqual(store.routesFor('shop/api').map((r) => r.name), ['p80']);
  t.deepEqual(store.routesFor('shop/api').filter((r) => r.parents.some((x) => x.port === undefined || x.port === 9090)), []);
});

// ---- the weighted pick ----

test('pickBackend: each backend gets weight / total of the picks (seeded, within 3 standard deviations)', (t) => {
  const p = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnn, [rec('HTTPRoute', 'shop', 'r', 0, [{
    matches: [], backends: [{ namespace: 'shop', name: 'a', port: 80, weight: 90 }, { namespace: 'shop', name: 'b', port: 80, weight: 10 }, { namespace: 'shop', name: 'never', port: 80, weight: 0 }],
  }])]);
  const rule = findRoute(p.forClient('x'), request('GET', '/'), false)!;
  const r = rng(7);
  const n = 100_000;
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const b = rule.pickBackend(r)!;
    counts[b.name] = (counts[b.name] ?? 0) + 1;
  }
  t.false('never' in counts, 'weight 0 gets nothing');
  const sd = Math.sqrt(n * 0.1 * 0.9);
  t.true(Math.abs(counts.b! - n * 0.1) < 3 * sd, JSON.stringify(counts));
  t.is(rule.backends[0]!.port, 80);
});

test('pickBackend: an SMI backend takes the port the client called', (t) => {
  const c = routeFromTrafficSplit(split({ backends: [{ service: 'api-v1', weight: 1 }] }), services, groups);
  const p9090 = new ParentPolicy({ namespace: 'shop', name: 'api', port: 9090 }, noAnn, [c.record!]);
  t.is(findRoute(p9090.forClient('x'), request('GET', '/'), false)!.pickBackend(Math.random)!.port, 9090);
});

// ---- retries ----

test('retry budget: 20% of the window\'s requests plus 10 a second, counted per one-second bucket', (t) => {
  const clock = { t: 0 };
  const b = new RetryBudget(undefined, () => clock.t);
  // A quiet client: 10 retries in a second without any request, not 11.
  let ok = 0;
  for (let i = 0; i < 20; i++) if (b.withdraw()) ok++;
  t.is(ok, 10);
  clock.t = 1000;
  t.true(b.withdraw(), 'the next second allows 10 more');
  // Under load: 1,000 requests a second for 10 s, every one wanting a retry.
  const b2 = new RetryBudget(undefined, () => clock.t);
  let requests = 0;
  let retries = 0;
  for (let s = 0; s < 30; s++) {
    clock.t = 100_000 + s * 1000;
    for (let i = 0; i < 1000; i++) {
      b2.deposit();
      requests++;
      if (b2.withdraw()) retries++;
    }
  }
  t.true(retries <= 0.2 * requests + 10 * 30, `${retries} retries for ${requests} requests`);
  // The ratio's window fills in its first 10 s: from then on every second gets 20% of 1,000 plus 10.
  t.true(retries >= 0.2 * requests * (20 / 30) + 10 * 30, `${retries}: the two parts add up`);
  t.is(b2.state().refused, 30_000 - retries);
});

test('retry budget: old buckets leave the window', (t) => {
  const clock = { t: 0 };
  const b = new RetryBudget({ ratio: 0.5, minPerSecond: 0, windowSeconds: 2 }, () => clock.t);
  for (let i = 0; i < 10; i++) b.deposit();
  let n = 0;
  while (b.withdraw()) n++;
  t.is(n, 5);
  clock.t = 2500; // both buckets have left the window
  t.false(b.withdraw());
  t.deepEqual(b.state(), { requests: 0, retries: 0, thisSecond: 0, refused: 2 });
});

test('retryable responses and backoff bounds', (t) => {
  const p = { limit: 1, httpStatuses: [[500, 504]] as Array<[number, number]>, grpcCodes: [14] };
  t.true(retryableResponse(p, 503, undefined));
  t.false(retryableResponse(p, 505, undefined));
  t.true(retryableResponse(p, 200, 14));
  t.false(retryableResponse(p, 200, 13));
  t.false(retryableResponse({ limit: 1 }, 503, undefined));
  for (const [n, lo, hi] of [[1, 25, 50], [2, 50, 100], [3, 100, 200], [4, 200, 250], [9, 250, 250]]) {
    t.is(backoffMs({ limit: 5 }, n, () => 0), lo, `retry ${n} at least`);
    t.true(backoffMs({ limit: 5 }, n, () => 0.999999) <= hi, `retry ${n} at most`);
  }
  t.is(backoffMs({ limit: 1, backoffMs: 400 }, 1, () => 0.5), 400, 'a backoff above the cap is the minimum and the cap');
});

// ---- the store ----

test('store: a route change reports the Services it left and joined; routesFor follows', (t) => {
  const s = new DiscoveryStore();
  const heard: string[][] = [];
  s.onChange((k) => heard.push(k === 'all' ? ['all'] : [...k].sort()));
  const r = rec('HTTPRoute', 'shop', 'r', 0, [{ matches: [], backends: [] }]);
  s.apply({ type: 'route', op: 'set', route: r });
  s.apply({ type: 'route', op: 'set', route: { ...r, parents: [{ namespace: 'shop', name: 'web' }] } });
  s.apply({ type: 'route', op: 'delete', key: 'HTTPRoute/shop/r' });
  t.deepEqual(heard, [['shop/api'], ['shop/api', 'shop/web'], ['shop/web']]);
  t.deepEqual(s.routesFor('shop/web'), []);
  t.is(s.counts().routes, 0);
});

test('a routed request\'s timer: the deadline acted on is the request\'s, then the backoff\'s or the attempt\'s, then the head\'s, then idle; a head timeout not retried falls through to idle', (t) => {
  const none: Deadlines = { request: 0, attempt: 0, head: 0, retryAt: 0, idleMs: 0, lastIo: 0 };
  const fire = (d: Partial<Deadlines>, now: number, mayRetry = false) => {
    const did: string[] = [];
    onDeadline({ ...none, ...d }, { requestMs: 500, backendRequestMs: 100 }, now, {
      timedOut: (label, why) => did.push(`timedOut ${label}: ${why}`),
      nextAttempt: () => did.push('nextAttempt'),
      mayRetry: () => mayRetry,
      retryNow: (label) => did.push(`retryNow ${label}`),
      clearHead: () => did.push('clearHead'),
      arm: () => did.push('arm'),
    });
    return did;
  };
  t.deepEqual(fire({ request: 10, attempt: 5, idleMs: 1, lastIo: 0 }, 10), ['timedOut REQUEST_TIMEOUT: request timeout (500 ms)']);
  t.deepEqual(fire({ retryAt: 8, attempt: 5 }, 9), ['nextAttempt'], 'between attempts the attempt deadline is not looked at');
  t.deepEqual(fire({ retryAt: 20, attempt: 5 }, 9), ['arm']);
  t.deepEqual(fire({ attempt: 5, head: 5 }, 9, true), ['retryNow RESPONSE_STREAM_TIMEOUT']);
  t.deepEqual(fire({ attempt: 5 }, 9), ['timedOut RESPONSE_STREAM_TIMEOUT: backend request timeout (100 ms)']);
  t.deepEqual(fire({ head: 5 }, 9, true), ['clearHead', 'retryNow RESPONSE_HEADERS_TIMEOUT']);
  t.deepEqual(fire({ head: 5, idleMs: 3, lastIo: 5 }, 9), ['clearHead', 'timedOut IDLE_TIMEOUT: idle timeout (3 ms)'], 'the last attempt may take its time, but not past idle');
  t.deepEqual(fire({ head: 5 }, 9), ['clearHead', 'arm']);
  t.deepEqual(fire({ idleMs: 3, lastIo: 7 }, 9), ['arm']);
});
