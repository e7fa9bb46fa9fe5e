// An upgraded HTTP/1 connection (a WebSocket-style 101) follows a policy change (docs/policy.md,
// "When the policy changes"), over real loopback sockets (no datapath: the proxy's lookup names
// the pod): a node:http client upgrades through the proxy to a node:http server that echoes; a
// change that still allows its upgrade request keeps it, one that does not resets both sides,
// logs the termination and reports it for inbound_tcp_authz_terminate_total; directly and through
// a Service whose endpoint is the pod.
import test from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import type { Authorize } from '../src/proxy/listener.ts';
import { ServerPolicy, type PolicySpec } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { PodPolicy } from '../src/policy/pod-policy.ts';
import type { AccessRecord, DefaultPolicy } from '../src/policy/model.ts';
import { HOST } from './helpers/backends.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';
import { waitFor } from './helpers/until.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import type { DiscoMessage } from '../src/discovery/model.ts';
import { Router } from '../src/routing/router.ts';

const web = { namespace: 'shop', serviceAccount: 'web' };
const spec = (defaultPolicy: DefaultPolicy, targets: AccessRecord[] = [], from = 'test'): PolicySpec => ({ namespace: 'shop', pod: 'api-1', serviceAccount: 'api', defaultPolicy, defaultFrom: from, targets });
/** web may send only requests matching `path` (GET). */
const routes = (path: string): AccessRecord => ({
  namespace: 'shop', name: 'web-to-api', destination: { namespace: 'shop', serviceAccount: 'api' }, sources: [web],
  rules: [{ kind: 'HTTPRouteGroup', name: 'routes', matches: [{ name: 'm', pathRegex: path, methods: ['GET'] }] }],
});

const VIP = '10.96.7.7';

/** Service shop/api at VIP:80, its one endpoint HOST:port (pod api-1 of this node). */
const serviceOf = (port: number): DiscoMessage[] => [
  { type: 'reset', version: 1 },
  { type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: [VIP], ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: {} } },
  { type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'api-0', service: 'api', ports: [{ name: 'http', port }], endpoints: [{ ip: HOST, ready: true, pod: 'api-1', node: 'node-1' }] } },
  { type: 'synced' },
];

/** A server that accepts any upgrade and echoes what follows; its sockets' errors are recorded. */
async function echoServer() {
  const errors: string[] = [];
  const server = http.createServer((_req, res) => res.end('plain'));
  server.on('upgrade', (_req, socket: net.Socket, head: Buffer) => {
    socket.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, errors };
}

/**
 * The proxy in front of the echo server, whose pod's policy is `first`: the client's connection is
 * to the pod, or with `service` to a ClusterIP whose one endpoint is the pod (a meshed client of
 * the same node through a Service: the endpoint's policy is asked when it is dialled).
 */
async function setup(t: import('ava').ExecutionContext, first: ServerPolicy, service = false) {
  const be = await echoServer();
  const pod = new PodPolicy(first);
  const logs: string[] = [];
  const authorize: Authorize = (c) => c.destIp === VIP ? { authz: null } : ({ authz: new PolicyConnAuthz(pod, { ip: c.sourceIp, identity: web }, c.destPort, (r) => logs.push(`denied: ${r}`), (r) => logs.push(`terminated: ${r}`)) });
  const store = new DiscoveryStore();
  for (const m of serviceOf(be.port)) store.apply(m);
  t.teardown(async () => {
    be.server.closeAllConnections();
    await new Promise<void>((r) => be.server.close(() => r()));
  });
  // Registered after the echo server's: closed before it (teardowns run last first).
  const { port, sink } = await loopbackProxy(t, {
    lookup: () => (service ? { ip: VIP, port: 80, podKey: 7n } : { ip: HOST, port: be.port, podKey: 7n }),
    router: new Router(store),
    authorize,
  });
  return { be, pod, logs, sink, port };
}

/** Upgrades through the proxy (GET `path`, Upgrade: echo) and returns the byte stream. */
async function upgrade(port: number, path: string): Promise<net.Socket> {
  const req = http.request({ host: HOST, port, path, headers: { connection: 'Upgrade', upgrade: 'echo', host: 'api.shop' } });
  req.end();
  const [res, socket] = (await Promise.race([once(req, 'upgrade'), once(req, 'response').then(([r]) => {
    throw new Error(`expected 101, got ${(r as http.IncomingMessage).statusCode}`);
  })])) as [http.IncomingMessage, net.Socket, Buffer];
  if (res.statusCode !== 101) throw new Error(`expected 101, got ${res.statusCode}`);
  return socket;
}

/** Writes `line` and waits for its echo. */
async function echo(s: net.Socket, line: string): Promise<string> {
  s.write(line);
  let got = '';
  while (got.length < line.length) got += String((await once(s, 'data'))[0]);
  return got;
}

/**
 * Writes `line` and says what came first: its echo (the stream still open), or the stream's end
 * with the error code its client socket saw ('' for a clean end).
 */
function writeAfterChange(s: net.Socket, line: string): Promise<{ echoed: string } | { ended: string }> {
  return new Promise((resolve) => {
    let code = '';
    s.on('error', (e: NodeJS.ErrnoException) => (code = e.code ?? e.message));
    s.once('data', (d: Buffer) => resolve({ echoed: String(d) }));
    s.once('close', () => resolve({ ended: code }));
    if (!s.destroyed) s.write(line);
  });
}

test('an upgraded connection the default policy allowed whole: kept by a change that still allows it, reset on both sides (counted, logged) by one that denies its client', async (t) => {
  const { be, pod, logs, sink, port } = await setup(t, new ServerPolicy(spec('all-unauthenticated'), []));
  const s = await upgrade(port, '/ws');
  t.is(await echo(s, 'before'), 'before');
  pod.replace(new ServerPolicy(spec('all-authenticated'), []));
  t.is(await echo(s, 'still allowed'), 'still allowed', 'the client has a mesh identity: kept');
  pod.replace(new ServerPolicy(spec('deny'), []));
  t.deepEqual(await writeAfterChange(s, 'after'), { ended: 'ECONNRESET' }, 'reset, not ended: a FIN could pass for the server\'s own end');
  await waitFor(() => be.errors.length > 0 && sink.closes.length === 1);
  t.deepEqual(be.errors, ['ECONNRESET'], 'the pod\'s side is reset too');
  t.deepEqual(sink.closes[0]!.authz, {
    allowed: true, upgraded: true,
    server: { group: '', kind: 'default', name: 'all-unauthenticated', port: be.port }, authz: { group: '', kind: 'default', name: 'all-unauthenticated' },
    terminatedBy: { group: '', kind: 'default', name: 'deny', port: be.port },
  }, 'counted as terminated by the server now in force, not allowed again as a connection');
  t.deepEqual(sink.requests.map((r) => [r.status, r.authz?.allowed]), [[101, true]], 'its allow is its upgrade request\'s');
  t.deepEqual(logs, ['terminated: deny: no client may connect']);
});

test('an upgraded connection an HTTPRouteGroup allowed: kept while a route still allows its upgrade request, reset when none does', async (t) => {
  const { be, pod, logs, sink, port } = await setup(t, new ServerPolicy(spec('deny', [routes('/ws')]), []));
  const s = await upgrade(port, '/ws');
  t.is(await echo(s, 'before'), 'before');
  pod.replace(new ServerPolicy(spec('deny', [routes('/w.*')]), []));
  t.is(await echo(s, 'still matched'), 'still matched', 'another route that matches GET /ws: kept');
  pod.replace(new ServerPolicy(spec('deny', [routes('/other')]), []));
  t.deepEqual(await writeAfterChange(s, 'after'), { ended: 'ECONNRESET' });
  await waitFor(() => be.errors.length > 0 && sink.closes.length === 1);
  t.like(sink.closes[0]!.authz, { allowed: true, upgraded: true, terminatedBy: { kind: 'serviceaccount', name: 'api' } });
  t.is(logs.length, 1);
  t.regex(logs[0]!, /^terminated: no HTTPRouteGroup match of web-to-api allows GET \/ws/);
});

test('an upgraded connection through a Service to an endpoint of this node whose policy allowed the client whole (dialled straight to the pod): reset when a change denies it', async (t) => {
  const { be, pod, logs, sink, port } = await setup(t, new ServerPolicy(spec('all-unauthenticated'), []), true);
  const s = await upgrade(port, '/ws');
  t.is(await echo(s, 'before'), 'before');
  t.is(sink.requests[0]?.destPort, be.port, 'the endpoint the balancer picked');
  pod.replace(new ServerPolicy(spec('deny'), []));
  t.deepEqual(await writeAfterChange(s, 'after'), { ended: 'ECONNRESET' });
  await waitFor(() => be.errors.length > 0 && sink.closes.length === 1);
  t.like(sink.closes[0]!.authz, { allowed: true, upgraded: true, terminatedBy: { kind: 'default', name: 'deny' } });
  t.deepEqual(logs, ['terminated: deny: no client may connect']);
});

test('a change between the upgrade request\'s decision and the server\'s 101 is not missed: the stream is reset as it begins (directly and through a Service)', async (t) => {
  for (const service of [false, true]) {
    const { be, pod, logs, sink, port } = await setup(t, new ServerPolicy(spec('all-unauthenticated'), []), service);
    // The pod's server answers the upgrade only once the policy has changed: the request was
    // allowed, the stream begins under a policy that denies its client.
    let release!: () => void;
    const changed = new Promise<void>((r) => (release = r));
    const atServer = new Promise<void>((r) => be.server.prependListener('upgrade', (_req, socket: net.Socket) => {
      socket.cork(); // the echo server's 101 (its listener runs next) waits for the change
      void changed.then(() => socket.uncork());
      r();
    }));
    // What the client sees: its write echoed (the stream open), or the end with its error code,
    // before the 101 was read (the request's error) or after (the stream's).
    const seen = new Promise<{ echoed: string } | { ended: string }>((resolve) => {
      const req = http.request({ host: HOST, port, path: '/ws', headers: { connection: 'Upgrade', upgrade: 'echo', host: 'api.shop' } });
      req.on('error', (e: NodeJS.ErrnoException) => resolve({ ended: e.code ?? e.message }));
      req.on('response', (r) => resolve({ ended: `HTTP ${r.statusCode}` }));
      req.on('upgrade', (_res, socket: net.Socket) => {
        let code = '';
        socket.on('error', (e: NodeJS.ErrnoException) => (code = e.code ?? e.message));
        socket.on('close', () => resolve({ ended: code }));
        socket.on('data', (d: Buffer) => resolve({ echoed: String(d) }));
        socket.write('after');
      });
      req.end();
    });
    await atServer;
    pod.replace(new ServerPolicy(spec('deny'), []));
    release();
    t.deepEqual(await seen, { ended: 'ECONNRESET' }, `service ${service}: reset, its echo never comes`);
    await waitFor(() => sink.closes.length === 1);
    t.like(sink.closes[0]!.authz, { allowed: true, upgraded: true, terminatedBy: { kind: 'default', name: 'deny' } }, `service ${service}`);
    t.deepEqual(logs, ['terminated: deny: no client may connect'], `service ${service}`);
  }
});

/**
 * A pod that speaks HTTP/1 and takes an h2c upgrade (RFC 7540 3.2, as Go's h2c handler does):
 * after its 101 the connection is HTTP/2. Records the path of every request it serves.
 */
async function h2cServer(t: import('ava').ExecutionContext) {
  const served: string[] = [];
  const h2 = http2.createServer((req, res) => {
    served.push(`h2 ${req.url}`);
    res.end('h2');
  });
  const server = http.createServer((req, res) => {
    served.push(`http1 ${req.url} upgrade=${req.headers.upgrade ?? 'none'}`);
    res.end('http1');
  });
  server.on('upgrade', (req, socket: net.Socket, head: Buffer) => {
    served.push(`upgrade ${req.headers.upgrade} ${req.url}`);
    if (req.headers.upgrade !== 'h2c') return socket.destroy();
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    if (head.length > 0) socket.unshift(head);
    h2.emit('connection', socket);
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (c: net.Socket) => {
    sockets.add(c);
    c.once('close', () => sockets.delete(c));
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.teardown(async () => {
    for (const c of sockets) c.destroy(); // upgraded ones too
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as net.AddressInfo).port, served };
}

/** Reads one HTTP/1 response head from `s`; the head, and for a 101 what came after it goes back to the socket (the new protocol's). */
async function readResponse(s: net.Socket): Promise<string> {
  let got = Buffer.alloc(0);
  s.resume();
  while (got.indexOf('\r\n\r\n') < 0) got = Buffer.concat([got, (await once(s, 'data'))[0] as Buffer]);
  const end = got.indexOf('\r\n\r\n') + 4;
  s.pause(); // nothing is lost before the next reader
  if (got.toString('latin1', 0, 12) === 'HTTP/1.1 101' && end < got.length) s.unshift(got.subarray(end));
  return got.toString('latin1');
}

for (const body of ['', 'ping']) test(`an h2c upgrade on a connection an HTTPRouteGroup decides request by request is not passed on: the allowed request is answered in HTTP/1, and the connection never becomes HTTP/2 that no request of would be decided${body ? ' (the request has a body)' : ''}`, async (t) => {
  const pod = await h2cServer(t);
  const policy = new PodPolicy(new ServerPolicy(spec('deny', [routes('/public')]), []));
  const authorize: Authorize = (c) => ({ authz: new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: web }, c.destPort, () => {}) });
  const { port } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: pod.port, podKey: 7n }), router: new Router(new DiscoveryStore()), authorize });
  const s = net.connect(port, HOST);
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  await once(s, 'connect');
  // What curl --http2 sends to an http:// URL: GET /public is allowed by the route.
  s.write(`GET /public HTTP/1.1\r\nhost: api.shop\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n${body ? `content-length: ${body.length}\r\n` : ''}\r\n${body}`);
  const first = await readResponse(s);
  if (first.startsWith('HTTP/1.1 101')) {
    // The proxy let the upgrade through: from here on it forwards bytes, and the pod serves any request.
    const session = http2.connect(`http://${HOST}:${port}`, { createConnection: () => s });
    session.on('error', () => {});
    t.teardown(() => session.destroy());
    const req = session.request({ ':path': '/admin', ':authority': 'api.shop' });
    req.on('error', () => {});
    req.end();
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    req.resume();
    t.fail(`the h2c upgrade went through (101), and GET /admin, which no route allows, was answered ${headers[':status']} by the pod; it served: ${pod.served.join('; ')}`);
    return;
  }
  t.regex(first, /^HTTP\/1\.1 200 /, 'the allowed request, answered in HTTP/1');
  s.write('GET /admin HTTP/1.1\r\nhost: api.shop\r\n\r\n');
  const next = await readResponse(s);
  t.regex(next.slice(next.indexOf('HTTP/1.1')), /^HTTP\/1\.1 403 /, 'the next request is decided: no route allows it');
  t.deepEqual(pod.served, ['http1 /public upgrade=none'], 'the pod saw the allowed request without the upgrade, and nothing else');
});
