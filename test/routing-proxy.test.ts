// The proxy routing to Services over real loopback sockets, with the discovery store fed by
// hand (no controller, no datapath): a ClusterIP that nothing listens on resolves to its
// endpoints; HTTP/1 and HTTP/2 requests are balanced per request, opaque connections per
// connection; no endpoints means 503 / UNAVAILABLE / a closed connection; a removed endpoint
// gets no new request. The same through the kernel datapath on a simulated cluster:
// test/cluster-balancing.e2e.test.ts.
import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { Proxy } from '../src/proxy/index.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import type { DiscoMessage, DiscoSlice } from '../src/discovery/model.ts';
import { Router } from '../src/routing/router.ts';
import { waitFor } from './helpers/until.ts';
import { backend, HOST, type Backend } from './helpers/backends.ts';
import type { Authorize } from '../src/proxy/listener.ts';
import { DEFAULT_ROUTE, ServerPolicy } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { PodPolicy } from '../src/policy/pod-policy.ts';

const VIP = '10.96.7.7';

/** A raw TCP server that says its name and closes (an opaque, server-first protocol). */
async function tcpBackend(name: string): Promise<Pick<Backend, 'name' | 'port' | 'hits' | 'close'>> {
  const b = { name, port: 0, hits: 0, close: async () => {} };
  const server = net.createServer((s) => {
    b.hits++;
    s.on('error', () => {});
    s.end(name);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  b.port = (server.address() as net.AddressInfo).port;
  b.close = () => new Promise<void>((r) => server.close(() => r()));
  return b;
}

function world(store: DiscoveryStore, backends: Array<{ name: string; port: number }>, opts: { port?: number; annotations?: Record<string, string> } = {}): void {
  const port = opts.port ?? 80;
  const msgs: DiscoMessage[] = [
    { type: 'reset', version: 1 },
    { type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: [VIP], ports: [{ name: 'http', port, targetPort: 'http' }], annotations: opts.annotations ?? {} } },
    ...backends.map((b, i): DiscoMessage => ({ type: 'slice', op: 'set', slice: sliceOf(b, i) })),
    { type: 'synced' },
  ];
  for (const m of msgs) store.apply(m);
}

const sliceOf = (b: { name: string; port: number }, i: number): DiscoSlice => ({
  namespace: 'shop', name: `api-${i}`, service: 'api', ports: [{ name: 'http', port: b.port }],
  endpoints: [{ ip: HOST, ready: true, pod: `api-${b.name}`, node: 'node-1' }],
});

async function startProxy(store: DiscoveryStore, destPort = 80, opaquePorts = PortSet.empty(), authorize?: Authorize, logs: string[] = []) {
  const sink = new RecordingSink();
  const router = new Router(store);
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: () => ({ ip: VIP, port: destPort, podKey: 7n }),
    router,
    telemetry: sink,
    opaquePorts,
    detectTimeoutMs: 5000,
    knownHttp1Max: 0,
    log: (_level, msg) => logs.push(msg),
    ...(authorize ? { authorize } : {}),
  });
  const { port } = await proxy.listen();
  return { proxy, port, sink, router };
}

function get(agent: http.Agent, port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path: '/', agent, headers: { host: 'api.shop' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

/**
 * The same Service twice, on HTTP/1 and on HTTP/2 backends, each behind its own proxy with this
 * authorize: a keep-alive agent (one connection) to the first, an HTTP/2 session to the second.
 */
async function twoProxies(t: ExecutionContext, names: string[], authorize: Authorize, logs: string[] = []) {
  const h1 = await Promise.all(names.map((n) => backend(n)));
  const h2 = await Promise.all(names.map((n) => backend(n, { h2: true })));
  const [s1, s2] = [new DiscoveryStore(), new DiscoveryStore()];
  world(s1, h1);
  world(s2, h2);
  const p1 = await startProxy(s1, 80, PortSet.empty(), authorize, logs);
  const p2 = await startProxy(s2, 80, PortSet.empty(), authorize, logs);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const session = http2.connect(`http://${HOST}:${p2.port}`);
  t.teardown(async () => {
    agent.destroy();
    session.destroy();
    await p1.proxy.close(0);
    await p2.proxy.close(0);
    for (const b of [...h1, ...h2]) await b.close();
  });
  /** One HTTP/2 stream; its response head. */
  const stream = async (headers: http2.OutgoingHttpHeaders = {}) => {
    const req = session.request({ ':path': '/', ...headers });
    req.resume();
    const [head] = await once(req, 'response');
    return head as http2.IncomingHttpHeaders;
  };
  /** Requests that reached a pod, on either side. */
  const hits = () => [...h1, ...h2].reduce((n, b) => n + b.hits, 0);
  return { get: () => get(agent, p1.port), stream, hits };
}

test('HTTP/1: requests on one keep-alive connection are balanced across the Service\'s endpoints and reported under the Service', async (t) => {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => backend(n)));
  const store = new DiscoveryStore();
  world(store, bs);
  const { proxy, port, sink } = await startProxy(store);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await proxy.close(0);
    for (const b of bs) await b.close();
  });
  const seen = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const r = await get(agent, port);
    t.is(r.status, 200);
    seen.set(r.body, (seen.get(r.body) ?? 0) + 1);
  }
  t.deepEqual([...seen.keys()].sort(), ['a', 'b', 'c'], JSON.stringify([...seen]));
  t.is(proxy.stats().accepted, 1, 'one client connection');
  await waitFor(() => sink.requests.length === 300);
  const ev = sink.requests[0]!;
  t.is(ev.authority, 'api.shop.svc.cluster.local:80');
  t.deepEqual(ev.dstService, { namespace: 'shop', name: 'api' });
  t.is(ev.destIp, HOST, 'the request names the endpoint it went to');
  t.true(bs.some((b) => b.port === ev.destPort));
  t.deepEqual(sink.opens[0]?.dstService, { namespace: 'shop', name: 'api' });
  t.is(sink.opens[0]?.destIp, VIP, 'the connection names the ClusterIP');
});

test('HTTP/2 and gRPC: streams of one client session are balanced per stream', async (t) => {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => backend(n, { h2: true })));
  const store = new DiscoveryStore();
  world(store, bs);
  const { proxy, port } = await startProxy(store);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(async () => {
    session.destroy();
    await proxy.close(0);
    for (const b of bs) await b.close();
  });
  const seen = new Map<string, number>();
  await Promise.all(Array.from({ length: 300 }, async () => {
    const req = session.request({ ':path': '/' });
    req.setEncoding('utf8');
    let body = '';
    req.on('data', (d) => (body += d));
    await once(req, 'end');
    seen.set(body, (seen.get(body) ?? 0) + 1);
  }));
  t.deepEqual([...seen.keys()].sort(), ['a', 'b', 'c'], JSON.stringify([...seen]));
  for (const b of bs) t.true(b.hits >= 30, `${b.name} got ${b.hits} of 300`);
});

test('opaque: each connection goes to one endpoint, picked per connection', async (t) => {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => tcpBackend(n)));
  const store = new DiscoveryStore();
  world(store, bs, { port: 5432 });
  const { proxy, port, sink } = await startProxy(store, 5432, PortSet.parse('5432'));
  t.teardown(async () => {
    await proxy.close(0);
    for (const b of bs) await b.close();
  });
  const seen = new Map<string, number>();
  for (let i = 0; i < 60; i++) {
    const c = net.connect({ host: HOST, port });
    let body = '';
    c.setEncoding('utf8');
    c.on('data', (d) => (body += d));
    await once(c, 'end');
    c.destroy();
    seen.set(body, (seen.get(body) ?? 0) + 1);
  }
  t.deepEqual([...seen.keys()].sort(), ['a', 'b', 'c'], JSON.stringify([...seen]));
  await waitFor(() => sink.closes.length === 60);
  t.true(sink.closes.every((c) => c.error === undefined), JSON.stringify(sink.closes.find((c) => c.error)));
  // One endpoint carries each whole connection: it is reported to that endpoint, with the Service.
  t.is(sink.opens.length, 60);
  t.true(sink.opens.every((o) => o.destIp === HOST && bs.some((b) => b.port === o.destPort) && o.dstService?.name === 'api'), `${sink.opens[0]?.destIp}:${sink.opens[0]?.destPort}`);
});

test('no ready endpoints: HTTP/1 503 naming the Service, HTTP/2 503, gRPC UNAVAILABLE, TCP closed at once; each counted', async (t) => {
  const store = new DiscoveryStore();
  world(store, []);
  const { proxy, port, sink } = await startProxy(store);
  t.teardown(() => proxy.close(0));

  const agent = new http.Agent({ keepAlive: false });
  const r1 = await get(agent, port);
  t.is(r1.status, 503);
  t.is(r1.body, 'no ready endpoints for Service shop/api port 80\n');

  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  const h2 = session.request({ ':path': '/' });
  const [h2head] = await once(h2, 'response');
  h2.resume();
  t.is(h2head[':status'], 503);
  const grpc = session.request({ ':path': '/pkg.Svc/Call', ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' });
  grpc.end();
  const [ghead] = await once(grpc, 'response');
  grpc.resume();
  t.is(ghead[':status'], 200);
  t.is(ghead['grpc-status'], '14', 'UNAVAILABLE');
  t.regex(decodeURIComponent(String(ghead['grpc-message'])), /no ready endpoints for Service shop\/api port 80/);

  // A client that waits for the server to speak (opaque): closed, not left hanging until a deadline it cannot know.
  const tcpStore = new DiscoveryStore();
  world(tcpStore, [], { port: 3306 });
  const tcp = await startProxy(tcpStore, 3306, PortSet.parse('3306'));
  t.teardown(() => tcp.proxy.close(0));
  const c = net.connect({ host: HOST, port: tcp.port });
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  c.resume();
  await new Promise((r) => c.once('close', r));
  t.deepEqual(errors, ['ECONNRESET'], 'reset right after the accept');
  t.is(tcp.proxy.stats().noEndpoints, 1);
  await waitFor(() => tcp.sink.closes.length === 1);
  t.is(tcp.sink.closes[0]!.error, 'no ready endpoints');
  t.is(tcp.sink.opens.length, 1, 'reported open, then closed: the gauges stay right');

  t.is(proxy.stats().noEndpoints, 2, 'the HTTP/1 and the HTTP/2 connection');
  await waitFor(() => sink.requests.length === 3);
  t.deepEqual(sink.requests.map((r) => [r.status, r.success]).sort(), [[200, false], [503, false], [503, false]]);
});

test('an endpoint removed from its slice gets no new request, also on a connection that used it', async (t) => {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => backend(n)));
  const store = new DiscoveryStore();
  world(store, bs);
  const { proxy, port, router } = await startProxy(store);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await proxy.close(0);
    for (const b of bs) await b.close();
  });
  for (let i = 0; i < 30; i++) await get(agent, port);
  t.true(bs[1]!.hits > 0);
  store.apply({ type: 'slice', op: 'set', slice: { ...sliceOf(bs[1]!, 1), endpoints: [{ ip: HOST, ready: false, pod: 'api-b' }] } });
  t.deepEqual(router.describe('shop', 'api')![0]!.endpoints.map((e) => e.port).sort(), [bs[0]!.port, bs[2]!.port].sort());
  const before = bs[1]!.hits;
  for (let i = 0; i < 60; i++) t.not((await get(agent, port)).body, 'b');
  t.is(bs[1]!.hits, before);
  // Deleted altogether, then back: the client's connection follows without reconnecting.
  store.apply({ type: 'service', op: 'delete', key: 'shop/api' });
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: [VIP], ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: {} } });
  store.apply({ type: 'slice', op: 'set', slice: sliceOf(bs[1]!, 1) });
  const after = new Set<string>();
  for (let i = 0; i < 30; i++) after.add((await get(agent, port)).body);
  t.true(after.has('b'));
  t.is(proxy.stats().accepted, 1);
});

test('failure accrual: an endpoint answering 503 seven times in a row is ejected, then probed after the backoff', async (t) => {
  const good = await backend('good');
  const bad = await backend('bad', { status: 503 });
  const store = new DiscoveryStore();
  world(store, [good, bad], {
    annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive', 'balancer.linkerd.io/failure-accrual-consecutive-min-penalty': '300ms', 'balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio': '0' },
  });
  const { proxy, port, router } = await startProxy(store);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await proxy.close(0);
    await good.close();
    await bad.close();
  });
  const badEndpoint = () => router.describe('shop', 'api')![0]!.endpoints.find((e) => e.port === bad.port)!;
  const badState = () => badEndpoint().state;
  while (bad.hits < 7) await get(agent, port);
  t.is(bad.hits, 7);
  t.not(badState(), 'ready', 'ejected (or, on a slow machine, already in probation)');
  if (badState() === 'ejected') t.like(router.balancerCounts()[0], { name: 'api', ready: 1, pending: 1 });
  // A request sent and answered while the endpoint stayed ejected must go to the other one
  // (the penalty may end meanwhile on a slow machine: those requests prove nothing either way,
  // nor one that became the probe, failed and ejected it again: the same state, a new ejection).
  let checked = 0;
  for (let i = 0; i < 50; i++) {
    const before = badEndpoint();
    const body = (await get(agent, port)).body;
    const after = badEndpoint();
    if (before.state === 'ejected' && after.state === 'ejected' && after.ejections === before.ejections) {
      checked++;
      t.is(body, 'good');
    }
  }
  t.true(checked > 0, 'at least one request while ejected');
  await waitFor(() => badState() === 'probation', 5000);
  const hits = bad.hits;
  while (bad.hits === hits) await get(agent, port);
  t.is(bad.hits, hits + 1, 'one probe');
  t.not(badState(), 'ready', 'the failed probe ejects it again');
});

test('an endpoint whose policy cannot be evaluated (it throws) is refused, counted, logged; the proxy lives on (HTTP/1 and HTTP/2 ask it where nothing else would catch)', async (t) => {
  const authorize: Authorize = (c) => {
    if (c.destIp === VIP) return { authz: null };
    throw new Error('policy table broken');
  };
  const logs: string[] = [];
  const w = await twoProxies(t, ['a', 'b'], authorize, logs);
  for (let i = 0; i < 3; i++) t.is((await w.get()).status, 403);
  for (let i = 0; i < 3; i++) t.is(Number((await w.stream())[':status']), 403);
  t.is(w.hits(), 0, 'nothing reached a pod');
  t.true(logs.some((m) => m.includes('policy evaluation failed for a Service endpoint')), logs.join('\n'));
});

test('endpoints of this node whose policy allows the client whole: each HTTP/1 and HTTP/2 request, and each opaque connection once, carries the decision its dial made', async (t) => {
  const policy = new ServerPolicy({ namespace: 'shop', pod: 'api', serviceAccount: 'api', defaultPolicy: 'all-unauthenticated', defaultFrom: 'test', targets: [] }, []);
  const decided: string[] = [];
  // Every endpoint (on HOST) is a pod of this node; the ClusterIP is not.
  const authorize: Authorize = (c) => {
    if (c.destIp === VIP) return { authz: null };
    decided.push(`${c.destIp}:${c.destPort}`);
    return { authz: new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: null }, c.destPort, () => t.fail('nothing is denied')) };
  };
  const allowed = (port: number, http: boolean) => ({
    allowed: true, server: { group: '', kind: 'default', name: 'all-unauthenticated', port }, authz: { group: '', kind: 'default', name: 'all-unauthenticated' }, ...(http ? { route: DEFAULT_ROUTE } : {}),
  });

  const h1 = await Promise.all(['a', 'b', 'c'].map((n) => backend(n)));
  const store = new DiscoveryStore();
  world(store, h1);
  const p1 = await startProxy(store, 80, PortSet.empty(), authorize);
  t.teardown(async () => {
    await p1.proxy.close(0);
    for (const b of h1) await b.close();
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  // Until the balancer has used at least two endpoints (P2C may repeat one a while; bounded).
  let sent = 0;
  while (sent < 12 || (new Set(p1.sink.requests.map((r) => r.destPort)).size < 2 && sent < 500)) {
    t.is((await get(agent, p1.port)).status, 200);
    sent++;
    await waitFor(() => p1.sink.requests.length === sent);
  }
  for (const r of p1.sink.requests) t.deepEqual(r.authz, allowed(r.destPort, true), `HTTP/1 to ${r.destIp}:${r.destPort}`);
  t.true(new Set(p1.sink.requests.map((r) => r.destPort)).size >= 2, `balanced over several endpoints in ${sent} requests`);
  t.is(decided.length, new Set(decided).size, `decided once per endpoint of the connection: ${decided}`);

  const h2 = await Promise.all(['a', 'b', 'c'].map((n) => backend(n, { h2: true })));
  const store2 = new DiscoveryStore();
  world(store2, h2);
  const p2 = await startProxy(store2, 80, PortSet.empty(), authorize);
  const session = http2.connect(`http://${HOST}:${p2.port}`);
  t.teardown(async () => {
    session.destroy();
    await p2.proxy.close(0);
    for (const b of h2) await b.close();
  });
  await Promise.all(Array.from({ length: 30 }, async () => {
    const req = session.request({ ':path': '/' });
    req.resume();
    await once(req, 'end');
  }));
  await waitFor(() => p2.sink.requests.length === 30);
  for (const r of p2.sink.requests) t.deepEqual(r.authz, allowed(r.destPort, true), `HTTP/2 to ${r.destIp}:${r.destPort}`);

  const tcp = await Promise.all(['a', 'b', 'c'].map((n) => tcpBackend(n)));
  const store3 = new DiscoveryStore();
  world(store3, tcp, { port: 5432 });
  const p3 = await startProxy(store3, 5432, PortSet.parse('5432'), authorize);
  t.teardown(async () => {
    await p3.proxy.close(0);
    for (const b of tcp) await b.close();
  });
  for (let i = 0; i < 6; i++) {
    const c = net.connect({ host: HOST, port: p3.port });
    c.resume();
    await once(c, 'end');
    c.destroy();
  }
  await waitFor(() => p3.sink.closes.length === 6);
  for (const c of p3.sink.closes) t.deepEqual(c.authz, allowed(c.destPort, false), `opaque to ${c.destIp}:${c.destPort}`);
});

test('a policy change: the next HTTP/1 request and HTTP/2 stream of a Service connection to endpoints of this node the policy no longer allows get 403 (gRPC: grpc-status 7), on the same client connection, never on an upstream pooled while they were allowed', async (t) => {
  const pod = new PodPolicy(new ServerPolicy({ namespace: 'shop', pod: 'api', serviceAccount: 'api', defaultPolicy: 'all-unauthenticated', defaultFrom: 'test', targets: [] }, []));
  const authorize: Authorize = (c) => (c.destIp === VIP ? { authz: null } : { authz: new PolicyConnAuthz(pod, { ip: c.sourceIp, identity: null }, c.destPort, () => {}) });
  const w = await twoProxies(t, ['a', 'b', 'c'], authorize);
  for (let i = 0; i < 6; i++) {
    t.is((await w.get()).status, 200);
    t.is(Number((await w.stream())[':status']), 200);
  }
  t.is(w.hits(), 12);
  pod.replace(new ServerPolicy({ namespace: 'shop', pod: 'api', serviceAccount: 'api', defaultPolicy: 'deny', defaultFrom: 'test', targets: [] }, []));
  for (let i = 0; i < 3; i++) {
    t.is((await w.get()).status, 403, 'HTTP/1: refused as a direct request is');
    t.is(Number((await w.stream())[':status']), 403, 'HTTP/2: refused');
  }
  const grpc = await w.stream({ ':method': 'POST', 'content-type': 'application/grpc' });
  t.is(grpc['grpc-status'], '7', 'gRPC: PERMISSION_DENIED');
  t.is(w.hits(), 12, 'nothing more reached a pod: no upstream pooled while allowed carried a request');
});
