// A policy change while a connection is still being detected (docs/policy.md, "When the policy
// changes"): a connection the policy allowed whole when it was accepted is dialled at once, and its
// protocol is known only from its first bytes (or the server's). When a change no longer allows
// it whole before then, and it turns out not to be HTTP (opaque, TLS), it must be refused as a
// connection denied at accept is, never forwarded. Over real loopback sockets: directly to the pod,
// and through a Service whose endpoint is the pod (a meshed client of the same node). Through a
// Service, HTTP too: the upstream dialled at accept went straight to the pod, and must not carry
// a request the policy now decides (403), on HTTP/1 or HTTP/2.
import test from 'ava';
import * as net from 'node:net';
import * as http2 from 'node:http2';
import { once } from 'node:events';
import type { Authorize } from '../src/proxy/listener.ts';
import { ServerPolicy, type PolicySpec } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { PodPolicy } from '../src/policy/pod-policy.ts';
import type { DefaultPolicy } from '../src/policy/model.ts';
import { backend, HOST } from './helpers/backends.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import type { DiscoMessage } from '../src/discovery/model.ts';
import { Router } from '../src/routing/router.ts';

const web = { namespace: 'shop', serviceAccount: 'web' };
const spec = (defaultPolicy: DefaultPolicy): PolicySpec => ({ namespace: 'shop', pod: 'api-1', serviceAccount: 'api', defaultPolicy, defaultFrom: 'test', targets: [] });
const VIP = '10.96.7.8';

const serviceOf = (port: number): DiscoMessage[] => [
  { type: 'reset', version: 1 },
  { type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: [VIP], ports: [{ name: 'tcp', port: 80, targetPort: 'tcp' }], annotations: {} } },
  { type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'api-0', service: 'api', ports: [{ name: 'tcp', port }], endpoints: [{ ip: HOST, ready: true, pod: 'api-1', node: 'node-1' }] } },
  { type: 'synced' },
];

/** The pod: a TCP server that records what reaches it (and says so to `onData`). */
async function podServer(t: import('ava').ExecutionContext) {
  const received: string[] = [];
  const sockets = new Set<net.Socket>();
  const pod = { server: null as unknown as net.Server, received, port: 0, onData: () => {} };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('data', (d) => {
      received.push(String(d));
      pod.onData();
    });
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  pod.server = server;
  pod.port = (server.address() as net.AddressInfo).port;
  return pod;
}

async function setup(t: import('ava').ExecutionContext, service: boolean) {
  const pod = await podServer(t);
  const policy = new PodPolicy(new ServerPolicy(spec('all-unauthenticated'), []));
  const denials: string[] = [];
  const authorize: Authorize = (c) => c.destIp === VIP ? { authz: null } : { authz: new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: web }, c.destPort, (r) => denials.push(r)) };
  const store = new DiscoveryStore();
  for (const m of serviceOf(pod.port)) store.apply(m);
  const { port, sink } = await loopbackProxy(t, {
    lookup: () => (service ? { ip: VIP, port: 80, podKey: 7n } : { ip: HOST, port: pod.port, podKey: 7n }),
    router: new Router(store),
    authorize,
  });
  return { pod, policy, denials, port, sink };
}

/**
 * Connects through the proxy, waits until the proxy has dialled the pod (the connection was
 * allowed whole at accept and is being detected), changes the policy to deny, then sends `first`.
 * Says what came first: the pod receiving bytes (forwarded), or the client's connection ending.
 */
async function sendAfterDeny(t: import('ava').ExecutionContext, service: boolean, first: Buffer) {
  const s = await setup(t, service);
  const dialled = once(s.pod.server, 'connection');
  const client = net.connect(s.port, HOST);
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  await once(client, 'connect');
  await dialled;
  s.policy.replace(new ServerPolicy(spec('deny'), []));
  const outcome = await new Promise<'forwarded' | 'closed'>((resolve) => {
    s.pod.onData = () => resolve('forwarded');
    client.once('close', () => resolve('closed'));
    client.write(first);
  });
  return { ...s, outcome };
}

// Not HTTP, not TLS: the detector calls it opaque at once.
const OPAQUE = Buffer.from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]);
// A TLS ClientHello's record header and the whole (minimal) ClientHello.
const TLS_HELLO = Buffer.from('160301002f0100002b0303' + '00'.repeat(32) + '000002002f01000000', 'hex');

for (const service of [false, true]) {
  const how = service ? 'through a Service whose endpoint is the pod' : 'straight to the pod';
  test(`${how}: an opaque connection allowed whole at accept, whose policy then denies it before its first bytes, is refused and never forwarded`, async (t) => {
    const { outcome, pod, sink } = await sendAfterDeny(t, service, OPAQUE);
    t.is(outcome, 'closed', 'the connection is refused');
    t.deepEqual(pod.received, [], 'the pod never sees a byte of it');
    const closed = sink.closes.find((e) => e.authz !== undefined);
    t.like(closed, { destIp: HOST, error: 'denied by the inbound policy', authz: { allowed: false, server: { kind: 'default', name: 'deny' } } }, 'counted as a denial, by the policy in force, at the pod');
  });

  test(`${how}: a TLS connection allowed whole at accept, whose policy then denies it before its ClientHello, is refused and never forwarded`, async (t) => {
    const { outcome, pod, sink } = await sendAfterDeny(t, service, TLS_HELLO);
    t.is(outcome, 'closed', 'the connection is refused');
    t.deepEqual(pod.received, [], 'the pod never sees a byte of it');
    const closed = sink.closes.find((e) => e.authz !== undefined);
    t.like(closed, { destIp: HOST, error: 'denied by the inbound policy', authz: { allowed: false, server: { kind: 'default', name: 'deny' } } }, 'counted as a denial, by the policy in force, at the pod');
  });
}

/**
 * An HTTP server (HTTP/1, or h2c) as the pod, reached through a Service: the client connects,
 * the proxy dials the endpoint at once (allowed whole then), the pod's policy changes to deny,
 * then the client's first request goes. Returns its status and how many requests reached the pod.
 */
async function serviceRequestAfterDeny(t: import('ava').ExecutionContext, h2: boolean) {
  const be = await backend('pod', { h2 });
  t.teardown(() => be.close());
  const policy = new PodPolicy(new ServerPolicy(spec('all-unauthenticated'), []));
  const authorize: Authorize = (c) => c.destIp === VIP ? { authz: null } : { authz: new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: web }, c.destPort, () => {}) };
  const store = new DiscoveryStore();
  for (const m of serviceOf(be.port)) store.apply(m);
  const { port } = await loopbackProxy(t, { lookup: () => ({ ip: VIP, port: 80, podKey: 7n }), router: new Router(store), authorize });
  const dialled = once(be.server, 'connection');
  const sock = net.connect(port, HOST);
  sock.on('error', () => {});
  t.teardown(() => sock.destroy());
  await once(sock, 'connect');
  await dialled;
  policy.replace(new ServerPolicy(spec('deny'), []));
  let status: number;
  if (h2) {
    const session = http2.connect(`http://${HOST}:${port}`, { createConnection: () => sock });
    session.on('error', () => {});
    t.teardown(() => session.destroy());
    const req = session.request({ ':path': '/', ':authority': 'api.shop' });
    req.on('error', () => {});
    req.end();
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    req.resume();
    status = Number(headers[':status']);
  } else {
    sock.write('GET / HTTP/1.1\r\nhost: api.shop\r\n\r\n');
    let got = '';
    while (!got.includes('\r\n')) got += String((await once(sock, 'data'))[0]);
    status = Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1]);
  }
  return { status, hits: be.hits };
}

for (const h2 of [false, true]) {
  const proto = h2 ? 'HTTP/2' : 'HTTP/1';
  test(`through a Service: an ${proto} connection whose endpoint's policy denies the client after the proxy dialled it straight to the pod: its first request is refused (403), not sent on that upstream`, async (t) => {
    const { status, hits } = await serviceRequestAfterDeny(t, h2);
    t.is(status, 403);
    t.is(hits, 0, 'the pod never sees the request');
  });
}

// The other way round: denied whole at accept (nothing dialled; the first bytes decide), and the
// policy allows the client by the time its first bytes come, which are not HTTP. The connection
// was refused by the decision at accept, so it is counted as that denial: on the old dispatcher
// its close carried the allowed outcome of the policy then in force, counted as an allow.
test('straight to the pod: a connection denied whole at accept and refused for its first (opaque) bytes is counted as a denial even when the policy allows it by then', async (t) => {
  const pod = await podServer(t);
  const policy = new PodPolicy(new ServerPolicy(spec('deny'), []));
  let accepted!: () => void;
  const acceptedP = new Promise<void>((r) => { accepted = r; });
  const authorize: Authorize = (c) => {
    const authz = new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: web }, c.destPort, () => {});
    accepted();
    return { authz };
  };
  const { port, sink } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: pod.port, podKey: 7n }), authorize });
  const client = net.connect(port, HOST);
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  await once(client, 'connect');
  await acceptedP;
  policy.replace(new ServerPolicy(spec('all-unauthenticated'), []));
  const closed = new Promise((r) => client.once('close', r)); // reset or closed: refused either way
  client.write(OPAQUE);
  await closed;
  t.deepEqual(pod.received, [], 'refused: nothing was dialled, nothing forwarded');
  const ev = sink.closes.find((e) => e.authz !== undefined);
  t.like(ev, { error: 'denied by the inbound policy', authz: { allowed: false } }, 'counted as the denial it was');
});

// A destination known to speak HTTP/1 (known-http1.ts) is not dialled at accept: the dial waits
// for the client's first bytes. A policy change to deny in between must be seen before that dial:
// the pod must not see a connection from a client its policy now denies, HTTP or not.
async function knownHttp1Pod(t: import('ava').ExecutionContext) {
  const be = await backend('pod');
  t.teardown(() => be.close());
  let connections = 0;
  be.server.on('connection', () => connections++);
  const policy = new PodPolicy(new ServerPolicy(spec('all-unauthenticated'), []));
  let accepted: () => void = () => {};
  const authorize: Authorize = (c) => {
    const authz = new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: web }, c.destPort, () => {});
    accepted();
    return { authz };
  };
  const { port, proxy } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: be.port, podKey: 7n }), authorize, knownHttp1Max: 16, detectTimeoutMs: 300 });
  // One allowed request, one connection: the pod is now known to speak HTTP/1.
  const first = net.connect(port, HOST);
  t.teardown(() => first.destroy());
  first.write('GET / HTTP/1.1\r\nhost: api.shop\r\nconnection: close\r\n\r\n');
  first.resume();
  await once(first, 'end');
  t.is(proxy.stats().knownHttp1Dests, 1);
  const seen = connections;
  /** A client whose connection the proxy has accepted (and authorized), nothing sent yet. */
  const connect = async () => {
    const acceptedP = new Promise<void>((r) => { accepted = r; });
    const c = net.connect(port, HOST);
    c.on('error', () => {});
    t.teardown(() => c.destroy());
    await once(c, 'connect');
    await acceptedP;
    return c;
  };
  return { policy, proxy, connect, connections: () => connections - seen };
}

test('a known HTTP/1 pod: a connection made after its policy changed to deny gets 403 for its request, and the pod sees no connection', async (t) => {
  const k = await knownHttp1Pod(t);
  k.policy.replace(new ServerPolicy(spec('deny'), []));
  const c = await k.connect();
  c.write('GET / HTTP/1.1\r\nhost: api.shop\r\nconnection: close\r\n\r\n');
  let got = '';
  c.on('data', (d) => (got += String(d)));
  await once(c, 'end');
  t.regex(got, /^HTTP\/1\.1 403 /);
  t.is(k.connections(), 0, 'the pod accepted no connection');
});

for (const how of ['opaque bytes', 'nothing (the detect deadline)', 'an EOF'] as const) {
  test(`a known HTTP/1 pod: a connection accepted while allowed, whose policy then denies it before its first bytes, sends ${how}: refused, and the pod sees no connection`, async (t) => {
    const k = await knownHttp1Pod(t);
    const c = await k.connect();
    k.policy.replace(new ServerPolicy(spec('deny'), []));
    const closed = new Promise((r) => c.once('close', r)); // reset or closed: refused either way
    if (how === 'opaque bytes') c.write(OPAQUE);
    else if (how === 'an EOF') c.end();
    await closed;
    t.is(k.connections(), 0, 'the pod accepted no connection');
    t.is(k.proxy.stats().eagerDialLate, 0, 'nothing dialled late');
  });
}
