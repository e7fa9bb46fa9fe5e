// The forwarders' routed path over real loopback sockets, with the discovery store fed by hand
// (no controller, no datapath): rules and weighted backends, 404 / UNIMPLEMENTED without a
// match, 500 for a backend that does not exist, retries (before anything reaches the client,
// the body kept up to 64 KiB, connect errors and REFUSED_STREAM), the retry budget, and
// timeouts that answer 504 / DEADLINE_EXCEEDED and cancel the upstream request. The same on a
// simulated cluster with the controller: test/cluster-routes.e2e.test.ts.
import test from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { Proxy } from '../src/proxy/index.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { parseMessage, type DiscoMessage } from '../src/discovery/model.ts';
import { Router } from '../src/routing/router.ts';
import type { RouteRecord } from '../src/routing/route-model.ts';
import { routeFromGateway } from '../src/routing/gateway-api.ts';
import { waitFor } from './helpers/until.ts';
import { nativeIo } from './helpers/native-io.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { MetricsSink } from '../src/telemetry/metrics.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';

// The report of a request reaches the sink after the client's answer: a loaded machine (CI with a core busy) took over 5 s once.
const SINK_WAIT_MS = 30_000;
import { backend, HOST, type Backend, type Handler } from './helpers/backends.ts';
import { refusedPort } from './helpers/ports.ts';

const VIPS: Record<string, string> = { api: '10.96.7.7', 'api-v1': '10.96.7.8', 'api-v2': '10.96.7.9' };

/** Services api (the one clients call), api-v1 and api-v2, each with the given backends' endpoints. */
function world(store: DiscoveryStore, eps: Record<string, Backend[]>, routes: RouteRecord[] = [], annotations: Record<string, string> = {}): void {
  const msgs: DiscoMessage[] = [{ type: 'reset', version: 2 }];
  for (const [svc, bs] of Object.entries(eps)) {
    msgs.push({ type: 'service', op: 'set', service: { namespace: 'shop', name: svc, clusterIPs: [VIPS[svc]!], ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: svc === 'api' ? annotations : {} } });
    bs.forEach((b, i) => msgs.push({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: `${svc}-${i}`, service: svc, ports: [{ name: 'http', port: b.port }], endpoints: [{ ip: HOST, ready: true, pod: `${svc}-${b.name}` }] } }));
  }
  for (const r of routes) msgs.push({ type: 'route', op: 'set', route: r });
  msgs.push({ type: 'synced' });
  for (const m of msgs) store.apply(m);
}

const route = (rules: RouteRecord['rules'], kind: RouteRecord['kind'] = 'HTTPRoute'): RouteRecord => ({ kind, namespace: 'shop', name: 'r', createdAt: 0, parents: [{ namespace: 'shop', name: 'api' }], rules });
const to = (...bs: Array<[string, number]>) => bs.map(([name, weight]) => ({ namespace: 'shop', name, port: 80, weight }));

/** An endpoint whose port refuses every connection, and stays refusing however many tests run beside this one. */
async function refusedBackend(t: import('ava').ExecutionContext): Promise<Backend> {
  return { name: 'dead', port: await refusedPort(t), hits: 0, bodies: [], cancelled: 0, server: null as unknown as net.Server, close: async () => {} };
}

async function startProxy(store: DiscoveryStore, random?: () => number) {
  const sink = new RecordingSink();
  const router = new Router(store, { clients: () => ({ namespace: 'client', workload: 'client/deployment/app' }), random });
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: () => ({ ip: VIPS.api!, port: 80, podKey: 7n }),
    router,
    telemetry: sink,
    detectTimeoutMs: 5000,
    knownHttp1Max: 0,
    log: () => {},
    nativeIo: nativeIo(),
  });
  const { port } = await proxy.listen();
  return { proxy, port, sink, router };
}

function request(port: number, opts: { path?: string; method?: string; headers?: Record<string, string>; body?: Buffer; agent?: http.Agent } = {}): Promise<{ status: number; body: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, path: opts.path ?? '/', method: opts.method ?? 'GET', agent: opts.agent ?? false, headers: { host: 'api.shop', ...opts.headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function setup(t: import('ava').ExecutionContext, eps: Record<string, Backend[]>, routes: RouteRecord[], annotations: Record<string, string> = {}, random?: () => number) {
  const store = new DiscoveryStore();
  world(store, eps, routes, annotations);
  const p = await startProxy(store, random);
  t.teardown(async () => {
    await p.proxy.close(0);
    for (const bs of Object.values(eps)) for (const b of bs) await b.close();
  });
  return { ...p, store };
}

test('HTTP/1: a header match sends x-canary: 1 to the canary only; the rest split by weight; events carry route and backend', async (t) => {
  const v1 = await backend('v1');
  const v2 = await backend('v2');
  const { port, sink } = await setup(t, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [route([
    { matches: [{ headers: [{ name: 'x-canary', type: 'Exact', value: '1' }] }], backends: to(['api-v2', 1]) },
    { matches: [], backends: to(['api-v1', 1]) },
  ])]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 20; i++) {
    t.is((await request(port, { agent, headers: { 'x-canary': '1' } })).body, 'v2');
    t.is((await request(port, { agent, headers: { 'x-canary': '0' } })).body, 'v1');
  }
  await waitFor(() => sink.requests.length === 40, SINK_WAIT_MS);
  const ev = sink.requests[0]!;
  t.is(ev.authority, 'api.shop.svc.cluster.local:80', 'reported under the Service called');
  t.deepEqual(ev.route?.route, { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'shop', name: 'r' });
  t.deepEqual(ev.route?.parent, { namespace: 'shop', name: 'api', port: 80 });
  t.deepEqual(ev.route?.backend, { namespace: 'shop', name: 'api-v2', port: 80 });
  t.is(ev.destPort, v2.port, 'the endpoint it went to');
});

test('HTTP/1 and HTTP/2: with a route attached, a request no rule matches gets 404 naming the Service; gRPC gets UNIMPLEMENTED', async (t) => {
  const v1 = await backend('v1', { h2: false });
  const { port, sink } = await setup(t, { api: [v1] }, [route([{ matches: [{ path: { type: 'PathPrefix', value: '/only' } }], backends: [] }])]);
  t.deepEqual(await request(port, { path: '/only/x' }).then((r) => [r.status, r.body]), [200, 'v1']);
  const r = await request(port, { path: '/other?q=1' });
  t.is(r.status, 404);
  t.is(r.body, 'no route of Service shop/api port 80 matches GET /other\n');
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const g = session.request({ ':path': '/pkg.Svc/Call', ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' });
  g.end();
  const [head] = await once(g, 'response');
  g.resume();
  t.is(head['grpc-status'], '12', 'UNIMPLEMENTED');
  t.is(v1.hits, 1, 'nothing unmatched reached the server');
  await waitFor(() => sink.requests.length === 3, SINK_WAIT_MS);
  t.is(sink.requests.filter((e) => e.status === 404).length, 1);
});

test('HTTP/1: a backend Service that does not exist answers 500 for its share', async (t) => {
  const v1 = await backend('v1');
  const { port } = await setup(t, { api: [], 'api-v1': [v1] }, [route([{ matches: [], backends: [...to(['api-v1', 1]), { namespace: 'shop', name: 'gone', port: 80, weight: 1 }] }])]);
  const seen = new Map<number, number>();
  for (let i = 0; i < 60; i++) {
    const r = await request(port);
    seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
    if (r.status === 500) t.is(r.body, 'backend Service shop/gone port 80 not found\n');
  }
  t.deepEqual([...seen.keys()].sort(), [200, 500], JSON.stringify([...seen]));
});

/** Requests on one keep-alive connection until `done` holds (at most `max`); the statuses seen. */
async function until(port: number, done: () => boolean, max = 1000): Promise<Map<number, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const seen = new Map<number, number>();
  try {
    for (let i = 0; i < max && !done(); i++) {
      const r = await request(port, { agent });
      seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
    }
  } finally {
    agent.destroy();
  }
  return seen;
}

test('HTTP/1: a headless backend Service is balanced per request over its ready endpoints at the targetPort, beside a ClusterIP one', async (t) => {
  const v1 = await backend('v1');
  const pods = await Promise.all(['db-0', 'db-1', 'db-2'].map((n) => backend(n)));
  const unready = await backend('db-3');
  t.teardown(async () => {
    for (const b of [...pods, unready]) await b.close();
  });
  const { port, store, sink } = await setup(t, { api: [], 'api-v1': [v1] }, [route([{ matches: [], backends: [...to(['api-v1', 1]), { namespace: 'shop', name: 'db', port: 80, weight: 3 }] }])]);
  // clusterIP None; its port 80 maps to the pods' container port named "http", one per slice here.
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'db', clusterIPs: [], headless: true, ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: {} } });
  [...pods, unready].forEach((b, i) => store.apply({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: `db-${i}`, service: 'db', ports: [{ name: 'http', port: b.port }], endpoints: [{ ip: HOST, ready: b !== unready, pod: b.name }] } }));
  const seen = await until(port, () => v1.hits > 0 && pods.every((b) => b.hits > 0));
  t.deepEqual([...seen.keys()], [200], JSON.stringify([...seen]));
  t.true(pods.every((b) => b.hits > 0), `every ready endpoint of the headless Service is reached: ${pods.map((b) => b.hits)}`);
  t.true(v1.hits > 0, 'the ClusterIP backend keeps its share');
  t.is(unready.hits, 0, 'a not-ready endpoint gets nothing');
  await waitFor(() => sink.requests.some((e) => e.route?.backend?.name === 'db'), SINK_WAIT_MS);
  const ev = sink.requests.find((e) => e.route?.backend?.name === 'db')!;
  t.deepEqual(ev.route?.backend, { namespace: 'shop', name: 'db', port: 80 }, 'reported under the headless Service');
  t.true(pods.some((b) => b.port === ev.destPort), 'dialled straight to a pod');
});

test('HTTP/1: a headless Service without ports is balanced over its ready endpoints at the backendRef port', async (t) => {
  const first = await backend('db-0', { host: '127.0.0.2' });
  const pods = [first, await backend('db-1', { host: '127.0.0.3', port: first.port })];
  t.teardown(async () => {
    for (const b of pods) await b.close();
  });
  const { port, store } = await setup(t, { api: [] }, [route([{ matches: [], backends: [{ namespace: 'shop', name: 'db', port: first.port, weight: 1 }] }])]);
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'db', clusterIPs: [], headless: true, ports: [], annotations: {} } });
  // The EndpointSlice controller writes no ports for a Service without ports.
  store.apply({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'db-x', service: 'db', ports: [], endpoints: [{ ip: '127.0.0.2', ready: true, pod: 'db-0' }, { ip: '127.0.0.3', ready: true, pod: 'db-1' }] } });
  const seen = await until(port, () => pods.every((b) => b.hits > 0));
  t.deepEqual([...seen.keys()], [200], JSON.stringify([...seen]));
  t.true(pods.every((b) => b.hits > 0), `both pods reached: ${pods.map((b) => b.hits)}`);
});

test('HTTP/1: a backend Service with no address to balance (ExternalName, IPv6 only) or without the port named answers 500 saying so, not "not found"', async (t) => {
  const { port, store } = await setup(t, { api: [] }, [
    route([
      { matches: [{ path: { type: 'PathPrefix', value: '/external' } }], backends: [{ namespace: 'shop', name: 'db', port: 80, weight: 1 }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/port' } }], backends: [{ namespace: 'shop', name: 'db', port: 81, weight: 1 }] },
    ]),
  ]);
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'db', clusterIPs: [], ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: {} } });
  const external = await request(port, { path: '/external' });
  t.is(external.status, 500);
  t.is(external.body, 'backend Service shop/db port 80 has neither an IPv4 ClusterIP nor clusterIP None (an ExternalName or IPv6-only Service): there is nothing to balance its requests over; name a Service with an IPv4 ClusterIP or a headless one\n');
  const noPort = await request(port, { path: '/port' });
  t.is(noPort.status, 500);
  t.is(noPort.body, 'backend Service shop/db has no port 81\n');
});

test('HTTP/1 and HTTP/2: an HTTPRoute rule whose backendRefs all weigh 0 sends nothing: its requests answer 500, no backend sees them (nor counts them in the metrics, the parent included); the route is accepted', async (t) => {
  const v1 = await backend('v1');
  const api = await backend('api');
  const conv = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'shop', name: 'drain' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'api' }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/drained' } }], backendRefs: [{ name: 'api-v1', port: 80, weight: 0 }, { name: 'api-v2', port: 80, weight: 0 }] },
        { backendRefs: [{ name: 'api-v1', port: 80 }] },
      ],
    },
  }, () => ({ ports: [80] }));
  const { port, sink } = await setup(t, { api: [api], 'api-v1': [v1], 'api-v2': [] }, conv.record === null ? [] : [conv.record]);
  t.deepEqual(conv.parents[0]!.conditions.map((c) => `${c.type}=${c.status}`), ['Accepted=True', 'ResolvedRefs=True'], conv.problems.join('; '));
  t.truthy(conv.record);
  for (let i = 0; i < 5; i++) {
    const r = await request(port, { path: '/drained/x' });
    t.is(r.status, 500);
    t.regex(r.body, /weight 0/);
  }
  t.is((await request(port, { path: '/other' })).body, 'v1', 'the other rule still forwards');
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const r2 = await h2get(session, { ':path': '/drained', ':authority': 'api.shop' });
  t.is(r2.head[':status'], 500);
  t.is(v1.hits, 1, 'only the other rule\'s request reached a backend');
  t.is(api.hits, 0, 'nor did the parent Service get them');
  // Their metrics: counted on the route as the proxy's answer, on no backend (none was picked; the parent got nothing).
  await waitFor(() => sink.requests.length === 7, SINK_WAIT_MS);
  const hub = new TelemetryHub({ workloads: { byIp: () => null } });
  const metrics = new MetricsSink({ workloads: hub.workloads, processMetrics: false });
  hub.add(metrics);
  for (const ev of sink.requests) hub.request(ev);
  const e = parseExposition(await metrics.exposition());
  t.is(sum(e, 'outbound_http_route_request_statuses_total', { route_name: 'drain', http_status: '', error: 'UNKNOWN' }), 6);
  t.is(sum(e, 'outbound_http_route_backend_requests_total', { backend_name: 'api' }), 0, 'not under the parent Service');
  t.is(sum(e, 'outbound_http_route_backend_requests_total', {}), 1, 'the one request a backend took');
  t.is(sum(e, 'outbound_http_route_backend_requests_total', { backend_name: 'api-v1' }), 1);
});

for (const h2 of [false, true]) {
  test(`${h2 ? 'HTTP/2' : 'HTTP/1'}: a client pod the agent learns of after its connection opened gets its namespace's consumer routes on that connection's next request`, async (t) => {
    const v1 = await backend('v1', { h2 });
    const v2 = await backend('v2', { h2 });
    const store = new DiscoveryStore();
    // The producer route (in the Service's namespace) sends to api-v1; the client namespace's consumer route to api-v2.
    world(store, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [
      route([{ matches: [], backends: to(['api-v1', 1]) }]),
      { ...route([{ matches: [], backends: to(['api-v2', 1]) }]), namespace: 'client', name: 'consumer' },
    ]);
    let known = false;
    const router = new Router(store, { clients: () => (known ? { namespace: 'client', workload: 'client/deployment/app' } : null) });
    const proxy = new Proxy({ listen: { host: HOST, port: 0 }, lookup: () => ({ ip: VIPS.api!, port: 80, podKey: 7n }), router, telemetry: new RecordingSink(), detectTimeoutMs: 5000, knownHttp1Max: 0, log: () => {}, nativeIo: nativeIo() });
    const { port } = await proxy.listen();
    t.teardown(async () => {
      await proxy.close(0);
      await v1.close();
      await v2.close();
    });
    // One client connection throughout.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const session = h2 ? http2.connect(`http://${HOST}:${port}`) : null;
    t.teardown(() => session?.destroy());
    const get = async () => (session !== null ? (await h2get(session, { ':path': '/', ':authority': 'api.shop' })).body : (await request(port, { agent })).body);
    t.is(await get(), 'v1', 'an unknown client: the producer route');
    known = true;
    for (let i = 0; i < 3; i++) t.is(await get(), 'v2', 'the same connection, now known: its namespace\'s consumer route');
  });
}

test('HTTP/1 and HTTP/2: a route record the agent cannot read fails closed: 500 naming the problem, before a valid route\'s more specific match; no backend sees the request', async (t) => {
  const v1 = await backend('v1');
  const line = JSON.stringify({ type: 'route', op: 'set', route: { ...route([{ matches: [], backends: to(['api-v1', 1]) }]), name: 'future', rules: [{ matches: [{ sourceCidr: '10.0.0.0/8' }], backends: to(['api-v1', 1]) }] } });
  const m = parseMessage(line);
  if (m.type !== 'route' || m.op !== 'set') throw new Error(`parsed as ${m.type}`);
  const { port, sink } = await setup(t, { api: [], 'api-v1': [v1] }, [route([{ matches: [{ path: { type: 'Exact', value: '/exact' } }], backends: to(['api-v1', 1]) }]), m.route], { 'retry.linkerd.io/http': '5xx' });
  const why = 'backend unavailable: this agent cannot read the route the controller sent (HTTPRoute shop/future: rules[0].matches[0].sourceCidr: unknown field "sourceCidr": this agent does not know it (a controller of a newer release?); fields read here: path, method, headers, queryParams, grpc); run agents and the controller of the same release\n';
  t.deepEqual(await request(port, { path: '/exact' }).then((r) => [r.status, r.body]), [500, why]);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const s = session.request({ ':path': '/exact', ':method': 'GET' });
  s.end();
  const [head] = await once(s, 'response');
  s.resume();
  t.is(head[':status'], 500);
  t.is(v1.hits, 0, 'no request reached the backend, none retried');
  await waitFor(() => sink.requests.length === 2, SINK_WAIT_MS);
  t.deepEqual(sink.requests.map((e) => [e.status, e.route?.route.name]), [[500, 'future'], [500, 'future']]);
});

test('HTTP/1: a 503 is retried (retry.linkerd.io/http on the Service), at most the limit, to a fresh connection; the client sees the retry\'s answer', async (t) => {
  // Every other request answers 503: each client request needs exactly one retry (8 in all,
  // within the budget's 10 a second whatever the rate).
  const flaky = await backend('flaky', { handle: (_q, res, _b, n) => { res.statusCode = n % 2 === 0 ? 503 : 200; res.end(n % 2 === 0 ? 'down' : 'up'); } });
  const { port, sink } = await setup(t, { api: [flaky] }, [], { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '1' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 8; i++) t.deepEqual(await request(port, { agent }).then((r) => [r.status, r.body]), [200, 'up']);
  t.is(flaky.hits, 16, 'two attempts per request, no more');
  await waitFor(() => sink.requests.length === 8, SINK_WAIT_MS);
  const ev = sink.requests[0]!;
  t.is(ev.route?.retries, 1);
  t.is(ev.route?.retryOutcome, 'success');
  t.deepEqual(ev.route?.earlier?.map((a) => a.status), [503]);
  t.deepEqual(ev.route?.route, { group: '', kind: 'default', namespace: '', name: 'http' });
});

for (const h2 of [false, true]) {
  test(`${h2 ? 'HTTP/2' : 'HTTP/1'}: a retry goes to another endpoint than the attempt that failed: one replica answering 503 at once does not take the retries too`, async (t) => {
    // The broken replica answers fastest, so peak EWMA favours it; a retry sent back to it would fail again.
    const broken = await backend('broken', { h2, status: 503 });
    const healthy = await backend('healthy', { h2, handle: (_q, res) => { setTimeout(() => res.end('healthy'), 20); } });
    const { port } = await setup(t, { api: [broken, healthy] }, [], { 'retry.linkerd.io/http': '503', 'retry.linkerd.io/limit': '1' });
    const session = h2 ? http2.connect(`http://${HOST}:${port}`) : null;
    t.teardown(() => session?.destroy());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const statuses: number[] = [];
    // 8: within the retry budget's 10 a second.
    for (let i = 0; i < 8; i++) {
      statuses.push(session !== null ? Number((await h2get(session, { ':path': '/', ':authority': 'api.shop' })).head[':status']) : (await request(port, { agent })).status);
    }
    t.deepEqual(statuses.filter((s) => s !== 200), [], `broken saw ${broken.hits}, healthy ${healthy.hits}`);
  });
}

test('HTTP/1: retries stop at the limit; the last answer goes to the client and counts as limit exceeded', async (t) => {
  const down = await backend('down', { handle: (_q, res) => { res.statusCode = 503; res.end('down'); } });
  const { port, sink } = await setup(t, { api: [down] }, [], { 'retry.linkerd.io/http': '503', 'retry.linkerd.io/limit': '2' });
  t.deepEqual(await request(port).then((r) => [r.status, r.body]), [503, 'down']);
  t.is(down.hits, 3);
  await waitFor(() => sink.requests.length === 1, SINK_WAIT_MS);
  t.is(sink.requests[0]!.route?.retries, 2);
  t.is(sink.requests[0]!.route?.retryOutcome, 'limit_exceeded');
});

test('HTTP/1: a POST body is sent again on a retry; one over 64 KiB is never retried', async (t) => {
  const flaky = await backend('flaky', { handle: (_q, res, _b, n) => { res.statusCode = n === 0 ? 503 : 200; res.end('ok'); } });
  const { port } = await setup(t, { api: [flaky] }, [], { 'retry.linkerd.io/http': '5xx' });
  const small = Buffer.alloc(10_000, 7);
  t.is((await request(port, { method: 'POST', body: small })).status, 200);
  t.is(flaky.hits, 2);
  t.deepEqual(flaky.bodies.map((b) => b.equals(small)), [true, true], 'the replayed body is the same');

  flaky.hits = 0;
  flaky.bodies.length = 0;
  const big = Buffer.alloc(100 * 1024, 9);
  const r = await request(port, { method: 'POST', body: big });
  t.is(r.status, 503, 'the first answer, not retried');
  t.is(flaky.hits, 1);
  t.true(flaky.bodies[0]!.equals(big));
  // Chunked (no Content-Length) and past 64 KiB: not retried either.
  flaky.hits = 0;
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: HOST, port, method: 'POST', path: '/', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    for (let i = 0; i < 10; i++) req.write(Buffer.alloc(10 * 1024, i));
    req.end();
  });
  t.is(chunked, 503);
  t.is(flaky.hits, 1);
});

test('HTTP/1: a connect error is retried under a retry policy, to the backend the next pick gives', async (t) => {
  const good = await backend('good');
  const dead = await refusedBackend(t);
  // Picks alternate: the first attempt of every request goes to the dead backend, the retry to the good one.
  let flip = 0;
  const { port, sink } = await setup(t, { api: [good], 'api-v1': [dead], 'api-v2': [good] }, [route([{ matches: [], backends: to(['api-v1', 1], ['api-v2', 1]), retry: { limit: 1 } }])], {}, () => (flip++ % 2 === 0 ? 0.1 : 0.9));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 8; i++) t.is((await request(port, { agent })).body, 'good');
  await waitFor(() => sink.requests.length === 8, SINK_WAIT_MS);
  for (const e of sink.requests) {
    t.deepEqual(e.route?.earlier?.map((a) => [a.backend.name, a.status, a.error]), [['api-v1', 0, 'IO']]);
    t.deepEqual(e.route?.backend, { namespace: 'shop', name: 'api-v2', port: 80 });
  }
});

test('a Service connection whose eager connect is refused dials another endpoint instead of failing (no route needed)', async (t) => {
  const good = await backend('good');
  const dead = await refusedBackend(t);
  const { port, sink } = await setup(t, { api: [good, dead] }, []);
  // A new connection per request: each is dialled eagerly, to whichever endpoint P2C picks.
  for (let i = 0; i < 20; i++) t.is((await request(port)).body, 'good');
  await waitFor(() => sink.closes.length === 20, SINK_WAIT_MS);
  t.deepEqual(sink.closes.filter((c) => c.error !== undefined).map((c) => c.error), []);
});

for (const h2 of [false, true]) {
  test(`${h2 ? 'HTTP/2' : 'HTTP/1'}: a timeout longer than a timer can hold (timeout.linkerd.io/request: 600h) does not spin the timer every millisecond`, async (t) => {
    // Node fires a setTimeout above 2^31-1 ms after 1 ms (with a TimeoutOverflowWarning each time);
    // re-armed on each firing, such a deadline would run a 1 ms loop for every request in flight.
    const overflows: string[] = [];
    const onWarning = (w: Error) => { if (w.name === 'TimeoutOverflowWarning') overflows.push(w.message); };
    process.on('warning', onWarning);
    t.teardown(() => { process.off('warning', onWarning); });
    const slow = await backend('slow', { h2, handle: (_q, res) => { setTimeout(() => res.end('slow'), 150); } });
    const { port } = await setup(t, { api: [slow] }, [], { 'timeout.linkerd.io/request': '600h' });
    const session = h2 ? http2.connect(`http://${HOST}:${port}`) : null;
    t.teardown(() => session?.destroy());
    const body = session !== null ? (await h2get(session, { ':path': '/', ':authority': 'api.shop' })).body : (await request(port)).body;
    t.is(body, 'slow');
    await new Promise((r) => setImmediate(r));
    t.is(overflows.length, 0, overflows.slice(0, 1).join(''));
  });
}

test('HTTP/1: timeouts.request answers 504 at the timeout and closes the upstream connection (the server sees the cancel)', async (t) => {
  const slow = await backend('slow', { handle: () => { /* never answers */ } });
  const { port, sink } = await setup(t, { api: [slow] }, [route([{ matches: [], backends: [], timeouts: { requestMs: 300 } }])]);
  const r = await request(port);
  t.is(r.status, 504);
  t.regex(r.body, /request timeout \(300 ms\)/);
  t.true(r.ms >= 300, `answered after ${r.ms} ms`);
  await waitFor(() => slow.cancelled === 1);
  await waitFor(() => sink.requests.length === 1, SINK_WAIT_MS);
  const ev = sink.requests[0]!;
  t.is(ev.route?.error, 'REQUEST_TIMEOUT');
  t.true(ev.latencyMs >= 300);
});

test('HTTP/1: timeouts.request "0s" on a rule means no timeout, even with timeout.linkerd.io/request on the Service', async (t) => {
  const slow = await backend('slow', { handle: (_q, res) => { setTimeout(() => res.end('late'), 400); } });
  const conv = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'shop', name: 'stream' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'api' }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/stream' } }], timeouts: { request: '0s' } },
        { matches: [] },
      ],
    },
  }, () => ({ ports: [80] }));
  const { port } = await setup(t, { api: [slow] }, conv.record === null ? [] : [conv.record], { 'timeout.linkerd.io/request': '150ms' });
  t.truthy(conv.record, conv.problems.join('; '));
  const r = await request(port, { path: '/stream' });
  t.deepEqual([r.status, r.body], [200, 'late'], 'GEP-1742: zero disables the timeout');
  t.is((await request(port, { path: '/other' })).status, 504, 'the other rule keeps the Service\'s timeout');
});

// Serial: the other tests of this file, run beside it in one process, can hold its event loop past
// the 300 ms; Node then runs the expired idle timer before reading the response that came meanwhile.
test.serial('timeout.linkerd.io/idle: a response that stops moving is cut (HTTP/1: the client connection closed; HTTP/2: the stream reset), the upstream cancelled', async (t) => {
  // Answers its head and one chunk of body, then nothing.
  const stall: Handler = (_q, res) => {
    res.statusCode = 200;
    res.setHeader('content-type', 'text/plain');
    (res as http.ServerResponse).write('first part;');
  };
  const h1 = await backend('h1', { handle: stall });
  const h2 = await backend('h2', { h2: true, handle: stall });
  const { port, sink } = await setup(t, { api: [h1], 'api-v2': [h2] }, [route([
    { matches: [{ headers: [{ name: 'x-h2', type: 'Exact', value: '1' }] }], backends: to(['api-v2', 1]), timeouts: { idleMs: 300 } },
    { matches: [], backends: [], timeouts: { idleMs: 300 } },
  ])]);
  const t0 = performance.now();
  const got = await new Promise<{ body: string; error: string }>((resolve) => {
    const req = http.get({ host: HOST, port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('error', (e) => resolve({ body, error: e.message }));
      res.on('end', () => resolve({ body, error: '' }));
    });
    req.on('error', (e) => resolve({ body: '', error: e.message }));
  });
  t.is(got.body, 'first part;');
  t.not(got.error, '', 'the response is cut, not ended');
  t.true(performance.now() - t0 >= 300);
  await waitFor(() => h1.cancelled === 1);

  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const s = session.request({ ':path': '/', 'x-h2': '1' });
  s.on('error', () => {});
  s.resume();
  await once(s, 'close');
  t.is(s.rstCode, http2.constants.NGHTTP2_CANCEL);
  await waitFor(() => h2.cancelled === 1);
  await waitFor(() => sink.requests.length === 2, SINK_WAIT_MS);
  t.deepEqual(sink.requests.map((e) => e.route?.error).sort(), ['IDLE_TIMEOUT', 'IDLE_TIMEOUT']);
});

test('HTTP/1: a backend request timeout with retries tries again, then answers 504', async (t) => {
  const slow = await backend('slow', { handle: () => {} });
  // Each attempt must reach the backend before its timeout, which includes dialling it: 300 ms
  // leaves room for a machine at load 20 (100 ms once did not: the third attempt timed out
  // before its request was written, and the backend saw 2).
  const { port, sink } = await setup(t, { api: [slow] }, [route([{ matches: [], backends: [], timeouts: { backendRequestMs: 300 }, retry: { limit: 2, httpStatuses: [[500, 599]] } }])]);
  const r = await request(port);
  t.is(r.status, 504);
  t.true(r.ms >= 900, `three attempts of 300 ms and two backoffs: ${r.ms} ms`);
  await waitFor(() => slow.hits === 3);
  await waitFor(() => slow.cancelled === 3);
  await waitFor(() => sink.requests.length === 1, SINK_WAIT_MS);
  t.deepEqual(sink.requests[0]!.route?.earlier?.map((a) => a.error), ['RESPONSE_STREAM_TIMEOUT', 'RESPONSE_STREAM_TIMEOUT']);
});

test('the retry budget: with every answer 503 the server sees at most 1.2x the requests plus 10 a second', async (t) => {
  const down = await backend('down', { handle: (_q, res) => { res.statusCode = 503; res.end(); } });
  const { port } = await setup(t, { api: [down] }, [], { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '3' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const t0 = performance.now();
  const n = 400;
  let sent = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (sent < n) {
      sent++;
      t.is((await request(port, { agent })).status, 503);
    }
  }));
  const seconds = Math.ceil((performance.now() - t0) / 1000);
  // One-second buckets: a run of s seconds touches at most s + 1 of them.
  t.true(down.hits <= 1.2 * n + 10 * (seconds + 1), `${down.hits} attempts for ${n} requests in ${seconds} s`);
  t.true(down.hits > n, 'and some were retried');
});

// ---- HTTP/2 and gRPC ----

function h2get(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ head: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader; body: string; trailers: http2.IncomingHttpHeaders; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/', ...headers });
    let head: any;
    let trailers: http2.IncomingHttpHeaders = {};
    let text = '';
    req.setEncoding('utf8');
    req.on('response', (h) => (head = h));
    req.on('trailers', (tr) => (trailers = tr));
    req.on('data', (d) => (text += d));
    req.on('end', () => resolve({ head, body: text, trailers, ms: performance.now() - t0 }));
    req.on('error', reject);
    req.end(body);
  });
}

test('HTTP/2: a 503 is retried on the same session before the client sees anything', async (t) => {
  const flaky = await backend('flaky', { h2: true, handle: (_q, res, _b, n) => { res.statusCode = n % 2 === 0 ? 503 : 200; res.end('x'); } });
  const { port, sink } = await setup(t, { api: [flaky] }, [], { 'retry.linkerd.io/http': '5xx' });
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  for (let i = 0; i < 10; i++) t.is((await h2get(session, { ':method': 'POST' }, Buffer.from('hello'))).head[':status'], 200);
  t.is(flaky.hits, 20);
  t.true(flaky.bodies.every((b) => b.toString() === 'hello'), 'the body is sent again');
  await waitFor(() => sink.requests.length === 10, SINK_WAIT_MS);
  t.true(sink.requests.every((e) => e.route?.retries === 1 && e.route.retryOutcome === 'success'));
});

test('gRPC: a trailers-only UNAVAILABLE is retried with retry.linkerd.io/grpc; a timeout answers DEADLINE_EXCEEDED and resets the upstream stream with CANCEL', async (t) => {
  let resets = 0;
  const server = http2.createServer();
  let n = 0;
  server.on('stream', (s, h) => {
    s.on('error', () => {});
    s.on('close', () => { if (s.rstCode === http2.constants.NGHTTP2_CANCEL) resets++; });
    s.resume();
    const i = n++;
    if (h[':path'] === '/echo.Echo/Slow') return; // never answers
    if (i % 2 === 0) s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true });
    else {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      s.end(Buffer.from([0, 0, 0, 0, 0]));
    }
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  const b: Backend = { name: 'g', port: (server.address() as net.AddressInfo).port, hits: 0, bodies: [], cancelled: 0, server, close: () => new Promise((r) => server.close(() => r())) };
  const { port, sink } = await setup(t, { api: [b] }, [route([
    { matches: [{ grpc: { type: 'Exact', method: 'Slow' } }], backends: [], timeouts: { requestMs: 200 } },
    { matches: [], backends: [], retry: { limit: 1, grpcCodes: [14] } },
  ], 'GRPCRoute')]);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const grpc = { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' };
  for (let i = 0; i < 4; i++) {
    const r = await h2get(session, { ...grpc, ':path': '/echo.Echo/Get' }, Buffer.from([0, 0, 0, 0, 0]));
    t.is(r.trailers['grpc-status'], '0');
  }
  t.is(n, 8);
  const slow = await h2get(session, { ...grpc, ':path': '/echo.Echo/Slow' }, Buffer.from([0, 0, 0, 0, 0]));
  t.is(slow.head['grpc-status'], '4', 'DEADLINE_EXCEEDED');
  t.true(slow.ms >= 200);
  await waitFor(() => resets === 1);
  await waitFor(() => sink.requests.length === 5, SINK_WAIT_MS);
  t.is(sink.requests[4]!.route?.error, 'REQUEST_TIMEOUT');
  t.is(sink.requests[4]!.grpcStatus, 4);
});

test('HTTP/2: REFUSED_STREAM is retried', async (t) => {
  const server = http2.createServer();
  let n = 0;
  server.on('stream', (s) => {
    s.on('error', () => {});
    if (n++ === 0) {
      s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    s.respond({ ':status': 200 });
    s.end('second');
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  const b: Backend = { name: 'r', port: (server.address() as net.AddressInfo).port, hits: 0, bodies: [], cancelled: 0, server, close: () => new Promise((r) => server.close(() => r())) };
  const { port, sink } = await setup(t, { api: [b] }, [], { 'retry.linkerd.io/http': '503' });
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const r = await h2get(session, {});
  t.is(r.head[':status'], 200);
  t.is(r.body, 'second');
  await waitFor(() => sink.requests.length === 1, SINK_WAIT_MS);
  t.deepEqual(sink.requests[0]!.route?.earlier?.map((a) => a.error), ['REFUSED']);
});

/**
 * An h2c server that sends GOAWAY naming the first stream of a session as the last it processed
 * once a second one arrives on that session (a server shutting down gracefully while the proxy
 * already sent more): the second was never processed (RFC 9113 §6.8), and node:http2 closes it
 * with REFUSED_STREAM. Streams on later sessions are answered at once.
 */
async function goawayServer(): Promise<Backend & { sessions: number }> {
  const server = http2.createServer();
  const b = { name: 'g', port: 0, hits: 0, bodies: [], cancelled: 0, server, sessions: 0, close: () => new Promise<void>((r) => server.close(() => r())) };
  server.on('session', (session) => {
    const first = b.sessions++ === 0;
    let held: http2.ServerHttp2Stream | null = null;
    session.on('stream', (s) => {
      s.on('error', () => {});
      b.hits++;
      const answer = (x: http2.ServerHttp2Stream) => { x.respond({ ':status': 200 }); x.end(`stream ${x.id} of session ${first ? 1 : 2}`); };
      if (!first) return answer(s);
      if (held === null) {
        held = s;
        return;
      }
      session.goaway(http2.constants.NGHTTP2_NO_ERROR, held.id);
      answer(held);
    });
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  b.port = (server.address() as net.AddressInfo).port;
  return b;
}

test('HTTP/2: a stream a GOAWAY refused (above its last stream id) is retried on a new session under a retry policy; without one the client gets REFUSED_STREAM', async (t) => {
  const retried = await goawayServer();
  const { port, sink } = await setup(t, { api: [retried] }, [], { 'retry.linkerd.io/http': '503' });
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const [a, b] = await Promise.all([h2get(session, {}), h2get(session, {})]);
  t.deepEqual([a.head[':status'], b.head[':status']], [200, 200]);
  t.deepEqual([a.body, b.body].sort(), ['stream 1 of session 1', 'stream 1 of session 2'], 'the refused one went again, on a new session');
  t.is(retried.sessions, 2);
  await waitFor(() => sink.requests.length === 2, SINK_WAIT_MS);
  t.deepEqual(sink.requests.map((e) => e.route?.earlier?.map((x) => x.error) ?? []).sort(), [[], ['REFUSED']]);

  // No route, no retry policy: passed on with its code, so the client (grpc-js does) may retry it.
  const plain = await goawayServer();
  const p = await setup(t, { api: [plain] }, []);
  const s2 = http2.connect(`http://${HOST}:${p.port}`);
  t.teardown(() => s2.destroy());
  const outcome = (path: string) => new Promise<string>((resolve) => {
    const req = s2.request({ ':path': path });
    req.on('response', (h) => resolve(`status ${h[':status']}`));
    req.on('error', () => {});
    req.on('close', () => resolve(`reset ${req.rstCode}`));
    req.resume();
    req.end();
  });
  t.deepEqual((await Promise.all([outcome('/a'), outcome('/b')])).sort(), ['reset 7', 'status 200']);
  t.is(plain.sessions, 1, 'not retried');
});

// ---- Gateway API Core: query parameter matches and RequestHeaderModifier ----

for (const h2 of [false, true]) {
  const proto = h2 ? 'HTTP/2' : 'HTTP/1';
  test(`${proto}: a query parameter match sends ?canary=1 to the canary; other values, other parameters and no query go to the rest`, async (t) => {
    const v1 = await backend('v1', { h2 });
    const v2 = await backend('v2', { h2 });
    const { port } = await setup(t, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [route([
      { matches: [{ queryParams: [{ name: 'canary', type: 'Exact', value: '1' }] }], backends: to(['api-v2', 1]) },
      { matches: [], backends: to(['api-v1', 1]) },
    ])]);
    const cases: Array<[string, string]> = [['/a?canary=1', 'v2'], ['/a?x=y&canary=1', 'v2'], ['/a?canary=%31', 'v2'], ['/a?canary=2', 'v1'], ['/a?Canary=1', 'v1'], ['/a?canary=0&canary=1', 'v1'], ['/a', 'v1']];
    let get: (path: string) => Promise<string>;
    if (h2) {
      const session = http2.connect(`http://${HOST}:${port}`);
      t.teardown(() => session.destroy());
      get = async (path) => (await h2get(session, { ':path': path })).body;
    } else {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      t.teardown(() => agent.destroy());
      get = async (path) => (await request(port, { agent, path })).body;
    }
    for (const [path, want] of cases) t.is(await get(path), want, path);
    t.is(v2.hits, 3);
    t.is(v1.hits, 4);
  });

  test(`${proto}: a header match on Host matches the request's authority (HTTP/2: :authority, which stands for Host)`, async (t) => {
    const v1 = await backend('v1', { h2 });
    const v2 = await backend('v2', { h2 });
    const { port } = await setup(t, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [route([
      { matches: [{ headers: [{ name: 'host', type: 'Exact', value: 'canary.shop' }] }], backends: to(['api-v2', 1]) },
      { matches: [], backends: to(['api-v1', 1]) },
    ])]);
    let get: (host: string) => Promise<string>;
    if (h2) {
      const session = http2.connect(`http://${HOST}:${port}`);
      t.teardown(() => session.destroy());
      get = async (host) => (await h2get(session, { ':path': '/', ':authority': host })).body;
    } else {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      t.teardown(() => agent.destroy());
      get = async (host) => (await request(port, { agent, headers: { host } })).body;
    }
    t.is(await get('canary.shop'), 'v2');
    t.is(await get('api.shop'), 'v1');
    if (h2) {
      // A host field differing from :authority (malformed, RFC 9113 8.3.1): :authority decides, as for the inbound policy.
      const session = http2.connect(`http://${HOST}:${port}`);
      t.teardown(() => session.destroy());
      t.is((await h2get(session, { ':path': '/', ':authority': 'api.shop', host: 'canary.shop' })).body, 'v1');
    }
  });

  test(`${proto}: a RequestHeaderModifier sets, adds and removes headers as the upstream sees them, on a retried attempt too`, async (t) => {
    // Every first request of a pair answers 503, so each request is seen twice (attempt and retry).
    const seen: Array<Array<[string, string]>> = [];
    const flaky = await backend('flaky', {
      h2,
      handle: (req, res, _b, n) => {
        const raw = req.rawHeaders;
        const pairs: Array<[string, string]> = [];
        for (let i = 0; i < raw.length; i += 2) {
          const name = raw[i]!.toLowerCase();
          if (name.startsWith('x-') || name === 'keep' || name === 'host' || name === ':authority') pairs.push([name, raw[i + 1]!]);
        }
        seen.push(pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
        res.statusCode = n % 2 === 0 ? 503 : 200;
        res.end('x');
      },
    });
    const { port, sink } = await setup(t, { api: [flaky] }, [route([{
      matches: [], backends: [], retry: { limit: 1, httpStatuses: [[503, 503]] },
      requestHeaders: { set: [{ name: 'x-set', value: 'new' }], add: [{ name: 'x-add', value: 'two' }], remove: ['x-gone'] },
    }])]);
    const headers = { 'x-set': 'old', 'x-add': 'one', 'x-gone': '1', keep: 'me' };
    const statuses: number[] = [];
    if (h2) {
      const session = http2.connect(`http://${HOST}:${port}`);
      t.teardown(() => session.destroy());
      for (let i = 0; i < 2; i++) statuses.push(Number((await h2get(session, { ':method': 'POST', ':authority': 'api.shop', ...headers }, Buffer.from('hello'))).head[':status']));
    } else {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      t.teardown(() => agent.destroy());
      statuses.push((await request(port, { agent, method: 'POST', headers, body: Buffer.from('hello') })).status);
      // A client that closes after its request: the head is rewritten for the hop (hop.ts) and for the filter.
      statuses.push((await request(port, { method: 'POST', headers: { ...headers, connection: 'close' }, body: Buffer.from('hello') })).status);
    }
    t.deepEqual(statuses, [200, 200], 'each answered by its retry');
    const want: Array<[string, string]> = [[h2 ? ':authority' : 'host', 'api.shop'], ['keep', 'me'], ['x-add', 'one'], ['x-add', 'two'], ['x-set', 'new']];
    t.is(seen.length, 4, 'two attempts per request');
    for (const [i, s] of seen.entries()) t.deepEqual(s, want, `attempt ${i}`);
    t.true(flaky.bodies.every((b) => b.toString() === 'hello'), 'the body follows the modified head');
    await waitFor(() => sink.requests.length === 2, SINK_WAIT_MS);
    t.true(sink.requests.every((e) => e.route?.retries === 1 && e.route.retryOutcome === 'success'));
  });
}

// ---- Gateway API Core: RequestRedirect and ResponseHeaderModifier ----

/** One HTTP/1 exchange on a fresh socket, read until the proxy closes it: the raw response. */
async function rawHttp1(port: number, request: string): Promise<string> {
  const s = net.connect(port, HOST);
  await once(s, 'connect');
  s.end(request);
  let out = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (out += d));
  await once(s, 'close');
  return out;
}

const redirectRules: RouteRecord['rules'] = [
  { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], backends: [], redirect: { statusCode: 301, path: { type: 'ReplacePrefixMatch', value: '/new', prefix: '/old' } } },
  { matches: [{ path: { type: 'Exact', value: '/login' } }], backends: [], redirect: { statusCode: 302, scheme: 'https', path: { type: 'ReplaceFullPath', value: '/sso' } } },
  { matches: [{ path: { type: 'Exact', value: '/moved' } }], backends: [], redirect: { statusCode: 308, hostname: 'other.example', port: 8080 } },
  { matches: [{ path: { type: 'Exact', value: '/tls' } }], backends: [], redirect: { statusCode: 307, scheme: 'https', port: 8443 } },
  { matches: [], backends: to(['api-v1', 1]) },
];
// [path, status, Location] with the client's Host "api.shop" (the Service port called is 80).
const redirectCases: Array<[string, number, string]> = [
  ['/old/a/b?x=1', 301, 'http://api.shop/new/a/b?x=1'],
  ['/old', 301, 'http://api.shop/new'],
  ['/login?next=%2F', 302, 'https://api.shop/sso?next=%2F'],
  ['/moved', 308, 'http://other.example:8080/moved'],
  ['/tls', 307, 'https://api.shop:8443/tls'],
];

test('HTTP/1: a RequestRedirect is answered by the proxy (status, Location for each form, no body, connection closed); no backend sees it', async (t) => {
  const v1 = await backend('v1');
  const { port, sink } = await setup(t, { api: [], 'api-v1': [v1] }, [route(redirectRules)]);
  for (const [path, status, location] of redirectCases) {
    const raw = await rawHttp1(port, `GET ${path} HTTP/1.1\r\nHost: api.shop\r\n\r\n`);
    t.is(raw, `HTTP/1.1 ${status} ${({ 301: 'Moved Permanently', 302: 'Found', 307: 'Temporary Redirect', 308: 'Permanent Redirect' } as Record<number, string>)[status]}\r\nlocation: ${location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`, path);
  }
  const withBody = await rawHttp1(port, 'POST /old/x HTTP/1.1\r\nHost: api.shop:80\r\nContent-Length: 5\r\n\r\nhello');
  t.regex(withBody, /^HTTP\/1\.1 301 Moved Permanently\r\nlocation: http:\/\/api\.shop\/new\/x\r\n/, 'a body is not read; the port 80 of the Host is the default');
  t.is(v1.hits, 0, 'no upstream request');
  t.is((await request(port, { path: '/other' })).body, 'v1', 'the other rule still forwards');
  await waitFor(() => sink.requests.length === redirectCases.length + 2, SINK_WAIT_MS);
  const redirected = sink.requests.filter((e) => e.route?.redirected === true);
  t.deepEqual(redirected.map((e) => e.status), [...redirectCases.map((c) => c[1]), 301], 'counted with the redirect\'s status');
  t.true(redirected.every((e) => e.success && e.error === undefined && e.route!.route.name === 'r' && !e.route!.backendResponded), 'a success under the route, no error, no backend asked');
  t.is(v1.hits, 1);
});

test('HTTP/1: an absolute-form target without a path is matched as "/", not by a "/" in its query', async (t) => {
  const v1 = await backend('v1');
  const { port } = await setup(t, { api: [], 'api-v1': [v1] }, [route(redirectRules)]);
  // The path is "/" (RFC 9112 3.2.2): the "/old/x" is the query's; the default rule forwards it.
  const raw = await rawHttp1(port, 'GET http://api.shop?to=/old/x HTTP/1.1\r\nHost: api.shop\r\nConnection: close\r\n\r\n');
  t.regex(raw, /^HTTP\/1\.1 200 /, raw.split('\r\n')[0]);
  t.is(v1.hits, 1);
});

test('HTTP/2: a RequestRedirect is answered by the proxy (:status, location, end of stream); no backend sees it', async (t) => {
  const v1 = await backend('v1', { h2: true });
  const { port, sink } = await setup(t, { api: [], 'api-v1': [v1] }, [route(redirectRules)]);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  for (const [path, status, location] of redirectCases) {
    const r = await h2get(session, { ':path': path, ':authority': 'api.shop' });
    t.deepEqual([r.head[':status'], r.head.location, r.body], [status, location, ''], path);
  }
  const r = await h2get(session, { ':method': 'POST', ':path': '/old/x', ':authority': 'api.shop:80' }, Buffer.from('hello'));
  t.deepEqual([r.head[':status'], r.head.location], [301, 'http://api.shop/new/x'], 'with a body');
  t.is((await h2get(session, { ':path': '/other', ':authority': 'api.shop' })).body, 'v1', 'the session goes on; the other rule forwards');
  t.is(v1.hits, 1, 'no upstream request for the redirects');
  await waitFor(() => sink.requests.length === redirectCases.length + 2, SINK_WAIT_MS);
  const redirected = sink.requests.filter((e) => e.route?.redirected === true);
  t.deepEqual(redirected.map((e) => e.status).sort(), [...redirectCases.map((c) => c[1]), 301].sort());
  t.true(redirected.every((e) => e.success && e.route!.route.name === 'r' && !e.route!.backendResponded));
});

for (const h2 of [false, true]) {
  const proto = h2 ? 'HTTP/2' : 'HTTP/1';
  test(`${proto}: a ResponseHeaderModifier sets, adds and removes response headers as the client sees them; trailers untouched`, async (t) => {
    const api = await backend('api', {
      h2,
      handle: (_q, res) => {
        res.setHeader('x-set', 'old');
        res.setHeader('x-add', 'one');
        res.setHeader('x-gone', '1');
        res.setHeader('keep', 'me');
        res.setHeader('trailer', 'x-gone');
        if (h2) (res as http2.Http2ServerResponse).addTrailers({ 'x-gone': 'trailer' });
        else (res as http.ServerResponse).addTrailers({ 'x-gone': 'trailer' });
        res.end('body');
      },
    });
    const { port } = await setup(t, { api: [api] }, [route([{
      matches: [], backends: [],
      responseHeaders: { set: [{ name: 'x-set', value: 'new' }], add: [{ name: 'x-add', value: 'two' }], remove: ['x-gone'] },
    }])]);
    let pairs: Array<[string, string]>;
    let trailers: Record<string, unknown>;
    let body: string;
    if (h2) {
      const session = http2.connect(`http://${HOST}:${port}`);
      t.teardown(() => session.destroy());
      const r = await h2get(session, { ':authority': 'api.shop' });
      pairs = Object.entries(r.head).filter(([n]) => n.startsWith('x-') || n === 'keep').flatMap(([n, v]) => (Array.isArray(v) ? v : String(v).split(', ')).map((x): [string, string] => [n, x]));
      trailers = r.trailers;
      body = r.body;
    } else {
      // Once on a kept-alive connection (the upstream's head as it came), once closing (hop.ts rewrites it first).
      const keep = new http.Agent({ keepAlive: true, maxSockets: 1 });
      t.teardown(() => keep.destroy());
      const get = (agent: http.Agent | false) => new Promise<{ pairs: Array<[string, string]>; trailers: Record<string, unknown>; body: string }>((resolve, reject) => {
        http.get({ host: HOST, port, path: '/', agent, headers: { host: 'api.shop' } }, (res) => {
          const raw = res.rawHeaders;
          const p: Array<[string, string]> = [];
          for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase().startsWith('x-') || raw[i] === 'keep') p.push([raw[i]!.toLowerCase(), raw[i + 1]!]);
          let b = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve({ pairs: p, trailers: res.trailers, body: b }));
        }).on('error', reject);
      });
      const kept = await get(keep);
      ({ pairs, trailers, body } = await get(false));
      t.deepEqual([...kept.pairs].sort(), [...pairs].sort(), 'kept-alive and closing alike');
    }
    pairs.sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
    t.deepEqual(pairs, [['keep', 'me'], ['x-add', 'one'], ['x-add', 'two'], ['x-set', 'new']]);
    t.is(body, 'body');
    t.is(trailers['x-gone'], 'trailer', 'a trailer of a removed name stays');
  });
}

test('HTTP/2: a header modifier adding a field node:http2 counts as single-valued (user-agent, content-type, location) sends another field; the request is not refused, the proxy does not crash', async (t) => {
  let seen: string[] = [];
  const api = await backend('api', {
    h2: true,
    handle: (req, res) => {
      const raw = req.rawHeaders;
      seen = [];
      for (let i = 0; i < raw.length; i += 2) if (raw[i] === 'user-agent') seen.push(raw[i + 1]!);
      res.setHeader('content-type', 'text/plain');
      res.end('body');
    },
  });
  const { port } = await setup(t, { api: [api] }, [route([
    { matches: [{ path: { type: 'PathPrefix', value: '/moved' } }], backends: [], redirect: { statusCode: 302, scheme: 'https' }, responseHeaders: { add: [{ name: 'location', value: 'https://elsewhere/' }] } },
    { matches: [{ path: { type: 'PathPrefix', value: '/up' } }], backends: [], requestHeaders: { add: [{ name: 'user-agent', value: 'mesh' }] } },
    { matches: [], backends: [], responseHeaders: { add: [{ name: 'content-type', value: 'text/x-added' }] } },
  ])]);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const raw = (path: string) => new Promise<{ status: unknown; fields: string[]; body: string }>((resolve, reject) => {
    const req = session.request({ ':path': path, ':authority': 'api.shop', 'user-agent': 'client' });
    req.on('error', reject);
    let head: Record<string, unknown> = {};
    let fields: string[] = [];
    let body = '';
    req.on('response', (h, _flags, rawHeaders: string[]) => {
      head = h;
      for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i] === 'content-type' || rawHeaders[i] === 'location') fields.push(`${rawHeaders[i]}: ${rawHeaders[i + 1]}`);
    });
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => resolve({ status: head[':status'], fields, body }));
    req.end();
  });
  // Before: node:http2 threw ERR_HTTP2_HEADER_SINGLE_VALUE in the upstream stream's 'response' listener (the process's uncaught exception).
  t.deepEqual(await raw('/'), { status: 200, fields: ['content-type: text/plain', 'content-type: text/x-added'], body: 'body' });
  // Before: thrown by the upstream request, answered 502 as if the upstream were unreachable.
  t.deepEqual((await raw('/up')).status, 200);
  t.deepEqual(seen, ['client', 'mesh']);
  // Before: thrown in the 'stream' listener, synchronously from the redirect.
  t.deepEqual(await raw('/moved'), { status: 302, fields: ['location: https://api.shop/moved', 'location: https://elsewhere/'], body: '' });
});

test('HTTP/1 and HTTP/2: a rule\'s ResponseHeaderModifier applies to its redirect too', async (t) => {
  const { port } = await setup(t, { api: [] }, [route([{ matches: [], backends: [], redirect: { statusCode: 302, scheme: 'https' }, responseHeaders: { set: [{ name: 'cache-control', value: 'no-store' }] } }])]);
  t.is(await rawHttp1(port, 'GET /a HTTP/1.1\r\nHost: api.shop\r\n\r\n'), 'HTTP/1.1 302 Found\r\nlocation: https://api.shop/a\r\ncontent-length: 0\r\nconnection: close\r\ncache-control: no-store\r\n\r\n');
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const r = await h2get(session, { ':path': '/a', ':authority': 'api.shop' });
  t.deepEqual([r.head[':status'], r.head.location, r.head['cache-control']], [302, 'https://api.shop/a', 'no-store']);
});

// ---- Gateway API: header modifiers on backendRefs ----

/** A backend that records the x- headers of each request it gets ([backend, sorted pairs]) and answers per `status`. */
async function recording(name: string, h2: boolean, seen: Array<[string, Array<[string, string]>]>, status: (attempt: number) => number = () => 200): Promise<Backend> {
  return backend(name, {
    h2,
    handle: (req, res) => {
      const raw = req.rawHeaders;
      const pairs: Array<[string, string]> = [];
      for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase().startsWith('x-')) pairs.push([raw[i]!.toLowerCase(), raw[i + 1]!]);
      pairs.sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
      res.statusCode = status(seen.length);
      seen.push([name, pairs]);
      res.end(name);
    },
  });
}

/** Requests with the given headers over HTTP/1 (kept-alive, then one closing) or HTTP/2: [status, body, x-from values]. */
async function clientOf(t: import('ava').ExecutionContext, port: number, h2: boolean): Promise<(headers: Record<string, string>, close?: boolean) => Promise<[number, string, string]>> {
  if (h2) {
    const session = http2.connect(`http://${HOST}:${port}`);
    t.teardown(() => session.destroy());
    return async (headers) => {
      const r = await h2get(session, { ':method': 'POST', ':authority': 'api.shop', ...headers }, Buffer.from('hello'));
      return [Number(r.head[':status']), r.body, String(r.head['x-from'] ?? '')];
    };
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  return (headers, close = false) => new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, method: 'POST', path: '/', agent: close ? false : agent, headers: { host: 'api.shop', ...headers, ...(close ? { connection: 'close' } : {}) } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve([res.statusCode ?? 0, b, String(res.headers['x-from'] ?? '')]));
    });
    req.on('error', reject);
    req.end('hello');
  });
}

for (const h2 of [false, true]) {
  const proto = h2 ? 'HTTP/2' : 'HTTP/1';
  test(`${proto}: a backendRef's RequestHeaderModifier and ResponseHeaderModifier apply only to the requests that backend gets and the responses it gives, after the rule's (before, on responses)`, async (t) => {
    const seen: Array<[string, Array<[string, string]>]> = [];
    const v1 = await recording('v1', h2, seen);
    const v2 = await recording('v2', h2, seen);
    // Picks alternate: api-v1, api-v2, api-v1, ...
    let flip = 0;
    const { port } = await setup(t, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [route([{
      matches: [],
      requestHeaders: { set: [{ name: 'x-route', value: 'r' }, { name: 'x-canary', value: 'false' }] },
      responseHeaders: { add: [{ name: 'x-from', value: 'rule' }] },
      backends: [
        { namespace: 'shop', name: 'api-v1', port: 80, weight: 1 },
        { namespace: 'shop', name: 'api-v2', port: 80, weight: 1, requestHeaders: { set: [{ name: 'x-canary', value: 'true' }], remove: ['x-debug'] }, responseHeaders: { set: [{ name: 'x-from', value: 'canary' }] } },
      ],
    }])], {}, () => (flip++ % 2 === 0 ? 0.1 : 0.9));
    const send = await clientOf(t, port, h2);
    const got: Array<[number, string, string]> = [];
    for (let i = 0; i < 4; i++) got.push(await send({ 'x-debug': '1' }));
    if (!h2) for (let i = 0; i < 2; i++) got.push(await send({ 'x-debug': '1' }, true));
    const n = got.length;
    const v1Sees: Array<[string, string]> = [['x-canary', 'false'], ['x-debug', '1'], ['x-route', 'r']];
    const v2Sees: Array<[string, string]> = [['x-canary', 'true'], ['x-route', 'r']];
    t.deepEqual(seen, Array.from({ length: n }, (_, i) => (i % 2 === 0 ? ['v1', v1Sees] : ['v2', v2Sees])), 'the canary\'s edits on its requests only, after the rule\'s');
    t.deepEqual(got, Array.from({ length: n }, (_, i): [number, string, string] => (i % 2 === 0 ? [200, 'v1', 'rule'] : [200, 'v2', 'canary, rule'])), 'the canary\'s response edit only on its responses, then the rule\'s');
    t.true([...v1.bodies, ...v2.bodies].every((b) => b.toString() === 'hello'), 'the body follows the modified head');
  });

  test(`${proto}: a retry that picks another backend sends that backend's edits, not the first attempt's; the client gets the answering backend's response edits`, async (t) => {
    const seen: Array<[string, Array<[string, string]>]> = [];
    // Every first attempt answers 503 (the attempts alternate 503, 200 whichever backend gets them).
    const v1 = await recording('v1', h2, seen, (n) => (n % 2 === 0 ? 503 : 200));
    const v2 = await recording('v2', h2, seen, (n) => (n % 2 === 0 ? 503 : 200));
    // Request 1: api-v1 then api-v2; request 2: api-v2 then api-v1; and so on.
    const picks = [0.1, 0.9, 0.9, 0.1];
    let i = 0;
    const { port, sink } = await setup(t, { api: [], 'api-v1': [v1], 'api-v2': [v2] }, [route([{
      matches: [], retry: { limit: 1, httpStatuses: [[503, 503]] },
      requestHeaders: { set: [{ name: 'x-route', value: 'r' }] },
      backends: [
        { namespace: 'shop', name: 'api-v1', port: 80, weight: 1, requestHeaders: { set: [{ name: 'x-backend', value: 'v1' }], add: [{ name: 'x-only-v1', value: 'yes' }] }, responseHeaders: { set: [{ name: 'x-from', value: 'v1' }] } },
        { namespace: 'shop', name: 'api-v2', port: 80, weight: 1, requestHeaders: { set: [{ name: 'x-backend', value: 'v2' }] }, responseHeaders: { set: [{ name: 'x-from', value: 'v2' }] } },
      ],
    }])], {}, () => picks[i++ % picks.length]!);
    const send = await clientOf(t, port, h2);
    const got: Array<[number, string, string]> = [];
    for (let k = 0; k < 2; k++) got.push(await send({ 'x-backend': 'client' }));
    if (!h2) for (let k = 0; k < 2; k++) got.push(await send({ 'x-backend': 'client' }, true));
    const sees = (b: string): [string, Array<[string, string]>] => [b, b === 'v1' ? [['x-backend', 'v1'], ['x-only-v1', 'yes'], ['x-route', 'r']] : [['x-backend', 'v2'], ['x-route', 'r']]];
    const order = ['v1', 'v2', 'v2', 'v1'];
    t.deepEqual(seen, Array.from({ length: got.length * 2 }, (_, k) => sees(order[k % 4]!)), 'each attempt carries its own backend\'s edits');
    t.deepEqual(got, Array.from({ length: got.length }, (_, k): [number, string, string] => (k % 2 === 0 ? [200, 'v2', 'v2'] : [200, 'v1', 'v1'])), 'the retry\'s answer, with its backend\'s response edit');
    t.true([...v1.bodies, ...v2.bodies].every((b) => b.toString() === 'hello'), 'the body is sent again after the new head');
    await waitFor(() => sink.requests.length === got.length, SINK_WAIT_MS);
    t.true(sink.requests.every((e) => e.route?.retries === 1 && e.route.retryOutcome === 'success'));
  });
}
