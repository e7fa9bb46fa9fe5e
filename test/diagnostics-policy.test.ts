// `mesh-agent diagnostics policy` end to end on loopback: the CLI asks the controller, the
// controller relays the question over each agent's link, and the agents answer from a real
// Router over a discovery store with routes (src/agent/diagnostics.ts, as the agent does).
// Shown: which routes apply to the client namespace and why, rules with matches, backends and
// shares, timeouts and retries with where each came from, routes that apply to nobody,
// annotations that could not be read.
import test from 'ava';
import { ControllerServer } from '../src/controller/server.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { Router } from '../src/routing/router.ts';
import { answerQuery } from '../src/agent/diagnostics.ts';
import type { RouteRecord } from '../src/routing/route-model.ts';
import { execFile } from '../src/sim/run.ts';
import { until } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';

const BIN = meshBin();
const quiet = () => {};

const producer: RouteRecord = {
  kind: 'HTTPRoute', namespace: 'shop', name: 'canary', createdAt: 1, parents: [{ namespace: 'shop', name: 'api' }],
  rules: [
    { name: 'beta', matches: [{ path: { type: 'PathPrefix', value: '/v2' }, headers: [{ name: 'x-canary', type: 'Exact', value: '1' }], queryParams: [{ name: 'beta', type: 'Exact', value: 'on' }] }], requestHeaders: { set: [{ name: 'x-route', value: 'beta' }], add: [{ name: 'x-trace', value: 'mesh' }], remove: ['x-debug'] }, responseHeaders: { set: [{ name: 'cache-control', value: 'no-store' }], remove: ['server'] }, backends: [{ namespace: 'shop', name: 'api-v2', port: 80, weight: 1 }], timeouts: { requestMs: 500 }, timeoutSources: [{ kind: 'HTTPRoute', namespace: 'shop', name: 'canary', field: 'spec.rules[0].timeouts.request' }] },
    { matches: [], backends: [{ namespace: 'shop', name: 'api-v1', port: 80, weight: 90 }, { namespace: 'shop', name: 'api-v2', port: 80, weight: 10, requestHeaders: { set: [{ name: 'x-canary', value: 'true' }] }, responseHeaders: { remove: ['server'] } }, { namespace: 'shop', name: 'gone', port: 80, weight: 0, problem: 'spec.rules[1].backendRefs[2]: Service shop/gone not found' }] },
    { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], backends: [], redirect: { statusCode: 301, scheme: 'https', path: { type: 'ReplacePrefixMatch', value: '/new', prefix: '/old' } } },
  ],
};
const consumer: RouteRecord = { kind: 'HTTPRoute', namespace: 'web', name: 'mine', createdAt: 2, parents: [{ namespace: 'shop', name: 'api' }], rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'api-v1', port: 80, weight: 1 }] }] };
const split: RouteRecord = { kind: 'TrafficSplit', namespace: 'shop', name: 'old', createdAt: 0, parents: [{ namespace: 'shop', name: 'api' }], rules: [{ name: 'split', matches: [], backends: [{ namespace: 'shop', name: 'api-v2', port: 0, weight: 1 }] }] };

function agentState() {
  const store = new DiscoveryStore();
  store.apply({ type: 'reset', version: 2 });
  const svc = (name: string, ip: string, annotations: Record<string, string> = {}) => store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name, clusterIPs: [ip], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations } });
  svc('api', '10.96.0.20', { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '2', 'timeout.linkerd.io/idle': 'soon' });
  svc('api-v1', '10.96.0.21');
  svc('api-v2', '10.96.0.22');
  svc('plain', '10.96.0.23');
  for (const r of [producer, consumer, split]) store.apply({ type: 'route', op: 'set', route: r });
  store.apply({ type: 'synced' });
  const router = new Router(store);
  return (q: any) => answerQuery(router, store, q);
}

test('diagnostics policy: the routes that apply to the client namespace, with matches, shares, timeouts, retries and their sources', async (t) => {
  const ctl = new ControllerServer({ log: quiet });
  const { port } = await ctl.listen('127.0.0.1', 0);
  const url = `http://127.0.0.1:${port}`;
  const clients = ['node-a', 'node-b'].map((node) => new ReportClient({ url, node, hub: new TelemetryHub(), inventory: () => [], intervalMs: 60_000, onQuery: agentState(), log: quiet }));
  t.teardown(async () => {
    for (const c of clients) await c.stop();
    await ctl.close();
  });
  for (const c of clients) c.start();
  await until(() => ctl.relay.links().length, (n) => n === 2, 'both agents linked');
  const cli = (args: string[]) => execFile(process.execPath, [BIN, 'diagnostics', 'policy', ...args, '--controller', `127.0.0.1:${port}`], { timeoutMs: 20_000 });

  const p = await cli(['svc/api', '-n', 'shop']);
  t.is(p.code, 0, p.stderr);
  t.is(p.stdout, [
    'Service shop/api port 80, clients in namespace shop: producer routes (in the Service\'s namespace)',
    '  HTTPRoute shop/canary rule 0 "beta"',
    '    match:    path /v2*, x-canary: 1, ?beta=on',
    '    headers:  remove x-debug, set x-route: beta, add x-trace: mesh (RequestHeaderModifier, on the request sent upstream)',
    '    response: remove server, set cache-control: no-store (ResponseHeaderModifier, on the response the client gets)',
    '    backends: shop/api-v2:80 100% (weight 1)',
    '    timeouts: request 500ms (from HTTPRoute shop/canary: spec.rules[0].timeouts.request)',
    '    retry:    HTTP: 2 retries on 5xx, connect errors; gRPC: 2 retries on grpc 14, connect errors (from Service shop/api: retry.linkerd.io/limit, retry.linkerd.io/http)',
    '  HTTPRoute shop/canary rule 1',
    '    match:    every request',
    '    backends: shop/api-v1:80 90% (weight 90), shop/api-v2:80 10% (weight 10) {headers: set x-canary: true; response: remove server}, shop/gone:80 0% (weight 0) [answers 500: spec.rules[1].backendRefs[2]: Service shop/gone not found]',
    '    timeouts: none',
    '    retry:    HTTP: 2 retries on 5xx, connect errors; gRPC: 2 retries on grpc 14, connect errors (from Service shop/api: retry.linkerd.io/limit, retry.linkerd.io/http)',
    '  HTTPRoute shop/canary rule 2',
    '    match:    path /old*',
    '    redirect: 301 to scheme https, path /old* -> /new* (RequestRedirect, answered by the proxy)',
    '    backends: none (the proxy answers)',
    '  not applied: TrafficSplit shop/old: HTTPRoute shop/canary is attached to the same Service; Gateway API routes win over a TrafficSplit',
    '  annotation ignored: timeout.linkerd.io/idle: "soon" is not a duration; write it like 500ms, 10s, 1m or 1m30s',
    '  retry budget: 20% of the last 10 s of requests plus 10 a second, per client workload; backoff 25-250 ms with jitter',
    '',
  ].join('\n'));

  const web = await cli(['api.shop.svc.cluster.local:80', '--from-namespace', 'web', '-o', 'json', '--node', 'node-b']);
  t.is(web.code, 0, web.stderr);
  const doc = JSON.parse(web.stdout);
  t.deepEqual(doc.agents.map((a: any) => a.node), ['node-b']);
  const v = doc.agents[0].result.ports[0];
  t.is(v.selected, 'consumer');
  t.deepEqual(v.routes, [{ kind: 'HTTPRoute', namespace: 'web', name: 'mine' }]);
  t.deepEqual(v.rules[0].backends, [{ namespace: 'shop', name: 'api-v1', port: 80, weight: 1, share: 100 }]);

  const plain = await cli(['svc/plain', '-n', 'shop']);
  t.is(plain.code, 0, plain.stderr);
  t.is(plain.stdout.trim(), 'Service shop/plain port 80, clients in namespace shop: no routes, retries or timeouts: requests are balanced over the Service\'s endpoints');

  const unknown = await cli(['svc/nope', '-n', 'shop']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no agent could answer for Service shop\/nope: node-a: Service shop\/nope is not in this agent's discovery/);
  const bad = await cli(['svc/api', '-n', 'shop', '--from-namespace', 'Not_A_NS']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--from-namespace Not_A_NS: not a namespace name/);
});
