// The tunnels on loopback, in one process: a real proxy (listener, dispatch, HTTP/1, HTTP/2,
// opaque and TLS forwarders) whose destination is "a meshed pod of another node", so every
// connection goes through an HBONE tunnel (TLS 1.3, HTTP/2 CONNECT) to a real tunnel listener
// that forwards to the server. Then each refusal: certificates from another root, expired, of
// another trust domain, plaintext, a server presenting the wrong identity, and CONNECTs to what
// is not a meshed pod of the identity asked for (no open relay), each counted with its reason.
import test from 'ava';
import * as net from 'node:net';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { once } from 'node:events';
import { randomBytes, createHash } from 'node:crypto';
import { Proxy } from '../src/proxy/index.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { defaultLimits } from '../src/proxy/context.ts';
import { RecordingSink, type RequestEvent } from '../src/telemetry/events.ts';
import { Authorizer } from '../src/policy/authorizer.ts';
import { DEFAULT_CLUSTER_NETWORKS, type AccessRecord } from '../src/policy/model.ts';
import { NodeTunnels } from '../src/tunnel/node-tunnels.ts';
import { workloadId, spiffeId } from '../src/identity/spiffe.ts';
import { DISCOVERY_VERSION, type DiscoPod } from '../src/discovery/model.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { FirstSyncWait } from '../src/discovery/first-sync.ts';
import { Listeners } from '../src/util/listeners.ts';
import type { LocalPod, TunnelPolicy } from '../src/tunnel/server.ts';
import { REFUSAL_LOG_INTERVAL_MS } from '../src/tunnel/hbone-pool.ts';
import type { KeepaliveOptions } from '../src/tunnel/keepalive.ts';
import { makePki, type Pki } from './helpers/mesh-pki.ts';
import { waitFor } from './helpers/until.ts';
import { ManualSweeper } from './helpers/manual-sweeper.ts';

const TD = 'cluster.local';
const CLIENT_IP = '127.0.0.1'; // the client "pod" (the proxy sees connections from it)
const SERVER_IP = '127.0.0.2'; // the destination "pod" on the other "node"
const NODE_B = '127.0.0.1'; // the other node's agent (its tunnel listener)
const web = workloadId(TD, 'shop', 'web');
const db = workloadId(TD, 'shop', 'db');

let pkiP: Promise<Pki> | undefined;
const pki = () => (pkiP ??= makePki(TD));

interface Side { tunnels: NodeTunnels; inbound: RecordingSink; logs: string[] }

/** Node B: the destination's agent, holding db's certificate, with SERVER_IP a meshed pod of db (or as `pods` says). */
async function nodeB(t: any, pods: Record<string, LocalPod> = { [SERVER_IP]: { namespace: 'shop', name: 'db-0', serviceAccount: 'db', meshed: true } }, o: { policy?: () => TunnelPolicy | null; inbound?: RecordingSink; noCredential?: boolean; port?: number; reusePort?: boolean; changes?: Listeners; limits?: typeof defaultLimits; sweeper?: ManualSweeper; keepalive?: KeepaliveOptions } = {}): Promise<Side & { port: number }> {
  const p = await pki();
  const inbound = o.inbound ?? new RecordingSink();
  const logs: string[] = [];
  const tunnels = new NodeTunnels({
    node: 'node-b', trustDomain: TD, anchorsPem: p.anchor.certPem,
    listen: { host: NODE_B, port: o.port ?? 0, reusePort: o.reusePort ?? false },
    podByIp: () => undefined,
    local: { byIp: (ip) => pods[ip] ?? null, namespaceInject: () => 'enabled', ...(o.changes ? { onChange: (fn: () => void) => o.changes!.add(fn) } : {}) },
    inbound, limits: o.limits ?? defaultLimits, log: (_l, m, f) => logs.push(`${m} ${JSON.stringify(f)}`),
    ...(o.policy ? { policy: o.policy } : {}),
    initial: o.noCredential ? [] : [await p.credential(db)],
    ...(o.sweeper ? { sweeper: o.sweeper } : {}),
    ...(o.keepalive ? { keepalive: o.keepalive } : {}),
  });
  const a = await tunnels.listen();
  t.teardown(() => tunnels.close(0));
  return { tunnels, inbound, logs, port: a.port };
}

/** Node A: the client's agent; its proxy sends every connection to SERVER_IP:destPort, a meshed pod of node B. */
async function nodeA(t: any, tunnelPort: number, destPort: number, o: { cred?: Awaited<ReturnType<Pki['credential']>>; serverSa?: string; detectTimeoutMs?: number; discovery?: DiscoveryStore; sweeper?: ManualSweeper; keepalive?: KeepaliveOptions } = {}) {
  const p = await pki();
  const sink = new RecordingSink();
  const logs: string[] = [];
  const dst: DiscoPod = { namespace: 'shop', name: 'db-0', ip: SERVER_IP, kind: 'statefulset', owner: 'db', node: 'node-b', serviceAccount: o.serverSa ?? 'db', hostIp: NODE_B };
  const tunnels = new NodeTunnels({
    node: 'node-a', trustDomain: TD, anchorsPem: p.anchor.certPem,
    listen: { host: '127.0.0.3', port: 0, reusePort: false },
    // With a discovery store: the destination is known once the store has synced (it holds dst then).
    podByIp: (ip) => (ip === SERVER_IP && (o.discovery === undefined || o.discovery.synced) ? dst : undefined),
    local: { byIp: (ip) => (ip === CLIENT_IP ? { namespace: 'shop', name: 'web-1', serviceAccount: 'web', meshed: true } : null), namespaceInject: () => 'enabled' },
    inbound: new RecordingSink(), limits: defaultLimits, log: (_l, m, f) => logs.push(`${m} ${JSON.stringify(f)}`),
    initial: [o.cred ?? await p.credential(web)],
    firstSync: o.discovery ? new FirstSyncWait(o.discovery, 120_000) : null,
    ...(o.sweeper ? { sweeper: o.sweeper } : {}),
    ...(o.keepalive ? { keepalive: o.keepalive } : {}),
  });
  // The tunnels dial the other node's listener port (15008 in a cluster).
  (tunnels.pool as unknown as { port: number }).port = tunnelPort;
  t.teardown(() => tunnels.close(0));
  const proxy = new Proxy({
    listen: { host: CLIENT_IP, port: 0 },
    lookup: () => ({ ip: SERVER_IP, port: destPort, podKey: 1n }),
    tunnels: tunnels.tunnels,
    telemetry: sink,
    opaquePorts: PortSet.empty(),
    detectTimeoutMs: o.detectTimeoutMs ?? 300,
    log: (_l, m, f) => logs.push(`${m} ${JSON.stringify(f)}`),
  });
  const a = await proxy.listen();
  t.teardown(() => proxy.close(0));
  return { proxy, port: a.port, sink, tunnels, logs };
}

async function listen(server: net.Server | http.Server | http2.Http2Server, t: any): Promise<number> {
  server.listen(0, SERVER_IP);
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  return (server.address() as net.AddressInfo).port;
}

/** A socket's close, whatever came before it (an RST is expected here). */
const closed = (s: net.Socket) => new Promise<void>((r) => (s.closed ? r() : s.once('close', () => r())));

function get(port: number, agent: http.Agent, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: CLIENT_IP, port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    }).on('error', reject);
  });
}

test('HTTP/1 keep-alive through the tunnel: one TLS connection, a stream per client connection; the destination agent records the client\'s SPIFFE ID', async (t) => {
  const srv = http.createServer((req, res) => res.end(`hello ${req.url} from ${req.socket.remoteAddress}`));
  const destPort = await listen(srv, t);
  const b = await nodeB(t);
  const a = await nodeA(t, b.port, destPort);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  t.teardown(() => agent.destroy());
  const bodies = await Promise.all(Array.from({ length: 20 }, (_, i) => get(a.port, agent, `/r${i}`)));
  t.true(bodies.every((r, i) => r.status === 200 && r.body.startsWith(`hello /r${i}`)));
  const st = a.tunnels.stats();
  t.is(st.client.connectionsOpened, 1, 'one pooled TLS connection');
  t.true(st.client.streams >= 1 && st.client.streams <= 2, `a stream per upstream connection (${st.client.streams})`);
  t.like(b.tunnels.stats().server, { accepted: 1, refusedClients: {}, refusedStreams: {} });
  await waitFor(() => b.inbound.opens.length >= 1);
  t.deepEqual(b.inbound.opens[0]!.tls, { clientId: spiffeId(web), serverId: spiffeId(db) });
  t.like(b.inbound.opens[0], { direction: 'inbound', sourceIp: CLIENT_IP, destIp: SERVER_IP, destPort });
  t.deepEqual(a.tunnels.tunnels.tlsOf(a.sink.requests[0]!), { clientId: spiffeId(web), serverId: spiffeId(db) }, 'the client side names both identities');
});

test('the tunnel listener makes its TLS server on its first connection, not when it starts listening; that first connection is served', async (t) => {
  const srv = http.createServer((_req, res) => res.end('first'));
  const destPort = await listen(srv, t);
  const b = await nodeB(t);
  // Each proxy thread listens on 15008; on a node whose pods never take a tunnel the TLS server was memory for nothing.
  t.false(b.tunnels.server.tlsMade, 'the TLS server was made before any connection came');
  const a = await nodeA(t, b.port, destPort);
  const agent = new http.Agent({ keepAlive: false });
  t.teardown(() => agent.destroy());
  t.like(await get(a.port, agent, '/'), { status: 200, body: 'first' });
  t.true(b.tunnels.server.tlsMade);
  t.like(b.tunnels.stats().server, { accepted: 1, refusedClients: {} });
});

test('before discovery\'s first sync a meshed pod\'s connection waits, then goes through the tunnel, not directly in plaintext', async (t) => {
  const srv = http.createServer((_req, res) => res.end('through'));
  const destPort = await listen(srv, t);
  const b = await nodeB(t);
  const discovery = new DiscoveryStore();
  const a = await nodeA(t, b.port, destPort, { discovery });
  let body = null as string | null;
  const req = http.get({ host: CLIENT_IP, port: a.port, path: '/', agent: false }, (res) => {
    res.setEncoding('utf8');
    let s = '';
    res.on('data', (d) => (s += d));
    res.on('end', () => (body = s));
  });
  req.on('error', () => {});
  await waitFor(() => a.tunnels.stats().client.waitingForDiscovery === 1);
  t.is(a.tunnels.stats().client.streams, 0, 'nothing dialled while discovery cannot tell where the destination is');
  discovery.apply({ type: 'reset', version: DISCOVERY_VERSION });
  discovery.apply({ type: 'synced' });
  await waitFor(() => body !== null);
  t.is(body, 'through');
  t.like(a.tunnels.stats().client, { streams: 1, waitingForDiscovery: 0, waitedForDiscovery: 1 });
  t.like(b.tunnels.stats().server, { accepted: 1 });
});

test('a CONNECT to a pod the destination agent does not know yet waits for its pod table to learn it and is served, not refused; a change that does not add it keeps it waiting', async (t) => {
  const srv = http.createServer((_req, res) => res.end('served'));
  const destPort = await listen(srv, t);
  // The client's agent knows the pod (from discovery) before the destination's pod watch does:
  // a pod just created, or an agent (a proxy worker) before its first list.
  const pods: Record<string, LocalPod> = {};
  const changes = new Listeners();
  const b = await nodeB(t, pods, { changes });
  const a = await nodeA(t, b.port, destPort);
  const res = get(a.port, new http.Agent(), '/');
  await waitFor(() => b.tunnels.stats().server.waitingForPods === 1);
  pods['127.0.0.9'] = { namespace: 'shop', name: 'other', serviceAccount: 'db', meshed: true };
  changes.emit();
  await new Promise((r) => setImmediate(r));
  t.like(b.tunnels.stats().server, { waitingForPods: 1, refusedStreams: {} }, 'another pod learnt: still waiting, not refused');
  pods[SERVER_IP] = { namespace: 'shop', name: 'db-0', serviceAccount: 'db', meshed: true };
  changes.emit();
  t.deepEqual(await res, { status: 200, body: 'served' });
  t.like(b.tunnels.stats().server, { waitingForPods: 0, waitedForPods: 1, streams: 1, refusedStreams: {} });
});

test('a CONNECT to an address that never becomes a pod of the destination\'s node is refused once its wait runs out (no open relay); one to a known pod waits for nothing', async (t) => {
  const srv = http.createServer((_req, res) => res.end('served'));
  const destPort = await listen(srv, t);
  const pods: Record<string, LocalPod> = {};
  // The wait's bound is the destination agent's connect timeout: short here, the refusal is what is
  // waited for. Not shorter: the same bound holds the known pod's dial below (a 50 ms bound gave a
  // 502 once on a loaded machine).
  const b = await nodeB(t, pods, { changes: new Listeners(), limits: { ...defaultLimits, upstreamConnectTimeoutMs: 1000 } });
  const a = await nodeA(t, b.port, destPort);
  // A connection that is not HTTP takes no pooled upstream: each is a CONNECT of its own.
  const s = net.connect({ host: CLIENT_IP, port: a.port });
  s.on('error', () => {});
  s.write('x');
  await closed(s);
  t.like(b.tunnels.stats().server, { waitingForPods: 0, waitedForPods: 1, refusedStreams: { 'not-a-meshed-pod': 1 } });
  t.true(b.logs.some((l) => l.includes(`${SERVER_IP} is not a meshed pod of this node (no open relay; this node's pod table did not learn it within 1000 ms)`)), b.logs.join('\n'));
  pods[SERVER_IP] = { namespace: 'shop', name: 'db-0', serviceAccount: 'db', meshed: true };
  t.deepEqual(await get(a.port, new http.Agent(), '/'), { status: 200, body: 'served' });
  t.like(b.tunnels.stats().server, { waitedForPods: 1, streams: 1 }, 'a known pod: no wait');
});

test('opaque bulk (1 MiB each way, half-close) and a server that speaks first, through the tunnel', async (t) => {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.write('220 banner\r\n');
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d) => { h.update(d); n += d.length; });
    s.on('end', () => s.end(`${n} ${h.digest('hex')}`));
  });
  const destPort = await listen(srv, t);
  const b = await nodeB(t);
  // The banner decides detection (server-first) when it comes, through the tunnel's TLS
  // handshake and CONNECT: no deadline of 300 ms may beat it on a loaded machine.
  const a = await nodeA(t, b.port, destPort, { detectTimeoutMs: 30_000 });
  const payload = randomBytes(1 << 20);
  const c = net.connect({ host: CLIENT_IP, port: a.port, allowHalfOpen: true });
  let got = '';
  c.setEncoding('utf8');
  c.on('data', (d) => (got += d));
  await once(c, 'connect');
  await waitFor(() => got.startsWith('220 banner'));
  c.end(payload);
  await once(c, 'end');
  t.is(got, `220 banner\r\n${payload.length} ${createHash('sha256').update(payload).digest('hex')}`);
  await waitFor(() => a.sink.closes.length === 1);
  t.like(a.sink.closes[0], { protocol: 'opaque', detectedBy: 'server-first', bytesIn: payload.length });
  t.is(a.sink.closes[0]!.error, undefined);
});

test('HTTP/2 (h2c) through the tunnel: the proxy\'s upstream session rides inside a CONNECT stream', async (t) => {
  const srv = http2.createServer();
  srv.on('stream', (s, h) => { s.respond({ ':status': 200 }); s.end(`h2 ${h[':path']}`); });
  const destPort = await listen(srv, t);
  const b = await nodeB(t);
  const a = await nodeA(t, b.port, destPort);
  const client = http2.connect(`http://${CLIENT_IP}:${a.port}`);
  t.teardown(() => client.close());
  const one = (path: string) => new Promise<string>((resolve, reject) => {
    const r = client.request({ ':path': path });
    let body = '';
    r.setEncoding('utf8');
    r.on('data', (d) => (body += d));
    r.on('end', () => resolve(body));
    r.on('error', reject);
  });
  const got = await Promise.all([one('/a'), one('/b'), one('/c')]);
  t.deepEqual(got, ['h2 /a', 'h2 /b', 'h2 /c']);
  t.true(a.tunnels.stats().client.streams >= 1);
});

test('a client asking (by SNI) for an identity the destination agent does not hold is refused at the handshake', async (t) => {
  const destPort = await listen(net.createServer((s) => s.end('x')), t);
  const b = await nodeB(t);
  // Discovery says the pod runs as "cache"; node B holds only db's certificate.
  const a = await nodeA(t, b.port, destPort, { serverSa: 'cache' });
  const c = net.connect({ host: CLIENT_IP, port: a.port });
  c.on('error', () => {});
  c.write('hello');
  await closed(c);
  await waitFor(() => (b.tunnels.stats().server.refusedClients['no-certificate-for-sni'] ?? 0) === 1);
  t.true(b.logs.some((l) => l.includes('refused a tunnel connection')), b.logs.join('\n'));
});

/** A rogue agent's listener on NODE_B: it answers any SNI with web's certificate (under our anchor, not db's identity); its port. */
async function rogueAgent(t: any): Promise<number> {
  const p = await pki();
  const rogue = await p.credential(web);
  const ctx = tls.createSecureContext({ key: rogue.material.keyPem, cert: rogue.material.certChainPem, ca: p.anchor.certPem });
  const srv = tls.createServer({ SNICallback: (_n, cb) => cb(null, ctx), ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: false }, (s) => s.on('error', () => {}));
  srv.listen(0, NODE_B);
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  return (srv.address() as net.AddressInfo).port;
}

/** A connection through node A's proxy to the rogue agent: closed once refused; waits for the nth wrong-identity refusal. */
async function refusedByA(a: Awaited<ReturnType<typeof nodeA>>, n: number): Promise<void> {
  const c = net.connect({ host: CLIENT_IP, port: a.port });
  c.on('error', () => {});
  c.write('hello');
  await closed(c);
  await waitFor(() => (a.tunnels.stats().client.refusedServers['wrong-identity'] ?? 0) === n);
}

test('the client checks the server\'s SPIFFE ID: a server under our anchor with another workload\'s certificate is refused', async (t) => {
  const a = await nodeA(t, await rogueAgent(t), 9);
  await refusedByA(a, 1);
  const line = a.logs.find((l) => l.includes('refused the agent at'))!;
  t.regex(line, /it presented spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web, not the destination's identity/);
  t.regex(line, /"client":"spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web","server":"spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db"/);
  await waitFor(() => a.sink.closes.length === 1);
  t.regex(a.sink.closes[0]!.error ?? '', /upstream/);
});

/** A client presenting `cred` (or none) to node B's listener, CONNECTing to target. */
async function rawClient(port: number, cred: { key: string; cert: string } | null, target = `${SERVER_IP}:9`) {
  const p = await pki();
  const sock = tls.connect({ host: NODE_B, port, servername: 'db.shop.serviceaccount.identity.mesh-agent.cluster.local', ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', ca: p.anchor.certPem, checkServerIdentity: () => undefined, ...(cred ?? {}) });
  sock.on('error', () => {});
  const session = http2.connect(`https://${NODE_B}:${port}`, { createConnection: () => sock });
  session.on('error', () => {});
  const st = session.request({ ':method': 'CONNECT', ':authority': target });
  st.on('error', () => {});
  const status = await new Promise<number | string>((resolve) => {
    st.once('response', (h) => resolve(Number(h[':status'])));
    st.once('close', () => resolve('closed'));
  });
  session.destroy();
  return status;
}

test('the destination agent refuses clients it cannot trust: another root, expired, another trust domain, no certificate, plaintext', async (t) => {
  const b = await nodeB(t);
  const p = await pki();
  const other = await makePki(TD); // a forger's own root, same names
  const asCred = (u: Awaited<ReturnType<Pki['credential']>>) => ({ key: u.material.keyPem, cert: u.material.certChainPem });
  t.is(await rawClient(b.port, asCred(await other.credential(web))), 'closed');
  t.is(await rawClient(b.port, asCred(await p.credential(web, { fromMs: -7_200_000, toMs: -3_600_000 }))), 'closed');
  t.is(await rawClient(b.port, asCred(await p.credential(workloadId('other.domain', 'shop', 'web')))), 'closed');
  t.is(await rawClient(b.port, null), 'closed');
  const plain = net.connect({ host: NODE_B, port: b.port });
  plain.on('error', () => {});
  plain.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await closed(plain);
  await waitFor(() => Object.values(b.tunnels.stats().server.refusedClients).reduce((x, y) => x + y, 0) === 5);
  const r = b.tunnels.stats().server.refusedClients;
  t.is(r.untrusted, 1, JSON.stringify(r));
  t.is(r.expired, 1, JSON.stringify(r));
  t.is(r['bad-identity'], 1, JSON.stringify(r));
  t.is(r['no-client-certificate'], 1, JSON.stringify(r));
  t.is(r['not-tls'], 1, JSON.stringify(r));
  t.true(b.logs.some((l) => /certificate has expired|CERT_HAS_EXPIRED/.test(l)), b.logs.join('\n'));
  t.true(b.logs.some((l) => l.includes('trust domain other.domain is not this mesh') && l.includes('"client":"spiffe://other.domain/ns/shop/sa/web"')), b.logs.join('\n'));
  t.is(b.tunnels.stats().server.accepted, 0);
});

/** The fields of a log line as nodeA and nodeB record it (`msg {fields}`). */
const fieldsOf = (line: string) => JSON.parse(line.slice(line.indexOf(' {"') + 1)) as Record<string, unknown>;
/** Lines starting with msgStart, of this kind. */
const linesOf = (msgStart: string, kind: string) => (l: string) => l.startsWith(msgStart) && fieldsOf(l).kind === kind;

// Refusals are caused by what peers send: one line per peer and kind per REFUSAL_LOG_INTERVAL_MS
// on the tunnels' clock (the sweeper's, moved here by hand), the ones held back counted into
// the next line's `suppressed`; the status counts every one.
/** Five refusals from one peer (`refuse(s, n)` makes the nth and waits for its count) on the side `start` makes: three, one just inside the interval, one at its end. The second line's fields. */
async function fiveRefusals<S extends { logs: string[] }>(t: any, start: (sweeper: ManualSweeper) => Promise<S>, isLine: (line: string) => boolean, refuse: (s: S, n: number) => Promise<void>): Promise<Record<string, unknown>> {
  const sweeper = new ManualSweeper();
  const side = await start(sweeper);
  const lines = () => side.logs.filter(isLine);
  for (let i = 1; i <= 3; i++) await refuse(side, i);
  t.is(lines().length, 1, side.logs.join('\n'));
  t.false('suppressed' in fieldsOf(lines()[0]!));
  sweeper.advance(REFUSAL_LOG_INTERVAL_MS - 1);
  await refuse(side, 4);
  t.is(lines().length, 1, 'still within the interval');
  sweeper.advance(1);
  await refuse(side, 5);
  t.is(lines().length, 2, side.logs.join('\n'));
  return fieldsOf(lines()[1]!);
}

test('handshake refusals: one line per peer and kind per interval, the next says how many were held back', async (t) => {
  const second = await fiveRefusals(t, (sweeper) => nodeB(t, undefined, { sweeper }), linesOf('refused a tunnel connection from ', 'no-client-certificate'), async (b, n) => {
    t.is(await rawClient(b.port, null), 'closed');
    await waitFor(() => b.tunnels.stats().server.refusedClients['no-client-certificate'] === n);
  });
  t.like(second, { refusedClients: 5, suppressed: 3 });
});

test('CONNECT refusals: one line per peer and kind per interval, the next says how many were held back', async (t) => {
  const me = await (await pki()).credential(web);
  const cred = { key: me.material.keyPem, cert: me.material.certChainPem };
  const second = await fiveRefusals(t, (sweeper) => nodeB(t, undefined, { sweeper }), linesOf('refused a tunnelled connection: ', 'bad-authority'), async (b, n) => {
    t.is(await rawClient(b.port, cred, 'example.com:80'), 400);
    t.is(b.tunnels.stats().server.refusedStreams['bad-authority'], n, 'counted before the answer');
  });
  t.like(second, { client: spiffeId(web), from: NODE_B, suppressed: 3 });
});

test('the client\'s refusals of another agent: one line per agent and kind per interval, the next says how many were held back', async (t) => {
  const rogue = await rogueAgent(t);
  const second = await fiveRefusals(t, (sweeper) => nodeA(t, rogue, 9, { sweeper }), (l) => l.startsWith(`refused the agent at ${NODE_B}:${rogue}: it presented `), refusedByA);
  t.like(second, { client: spiffeId(web), server: spiffeId(db), presented: spiffeId(web), suppressed: 3 });
});

test('no open relay: a CONNECT to what is not a meshed pod of the identity asked for is refused 403, naming why', async (t) => {
  const b = await nodeB(t, {
    [SERVER_IP]: { namespace: 'shop', name: 'db-0', serviceAccount: 'db', meshed: true },
    '127.0.0.4': { namespace: 'shop', name: 'cache-0', serviceAccount: 'cache', meshed: true },
    '127.0.0.5': { namespace: 'shop', name: 'legacy-0', serviceAccount: 'db', meshed: false },
  });
  const p = await pki();
  const me = await p.credential(web);
  const cred = { key: me.material.keyPem, cert: me.material.certChainPem };
  t.is(await rawClient(b.port, cred, '127.0.0.4:80'), 403, 'a pod of another identity');
  t.is(await rawClient(b.port, cred, '127.0.0.5:80'), 403, 'an unmeshed pod');
  t.is(await rawClient(b.port, cred, '10.0.0.1:80'), 403, 'not a pod of this node');
  t.is(await rawClient(b.port, cred, 'example.com:80'), 400);
  t.like(b.tunnels.stats().server.refusedStreams, { 'wrong-identity': 1, 'not-a-meshed-pod': 2, 'bad-authority': 1 });
  t.is(await rawClient(b.port, cred, `${SERVER_IP}:9`), 503, 'a meshed pod of the identity: tried (nothing listens on port 9)');
});

test('a node whose 15008 accepts but never answers TLS: the tunnel gives up within the connect timeout, the connection fails, the next one tries again', async (t) => {
  // A listener that takes TCP connections and says nothing (a hung agent, a black hole).
  const held: net.Socket[] = [];
  const hole = net.createServer((s) => held.push(s));
  hole.listen(0, NODE_B);
  await once(hole, 'listening');
  t.teardown(() => {
    for (const s of held) s.destroy();
    hole.close();
  });
  const a = await nodeA(t, (hole.address() as net.AddressInfo).port, 9);
  // The tunnels' own timeout (the agent passes its connect timeout, 5 s; here 300 ms).
  (a.tunnels.pool as unknown as { connectTimeoutMs: number }).connectTimeoutMs = 300;
  const attempt = async () => {
    const c = net.connect({ host: CLIENT_IP, port: a.port });
    c.on('error', () => {});
    c.write('hello');
    const t0 = performance.now();
    await closed(c);
    return performance.now() - t0;
  };
  t.true((await attempt()) < 4000, 'failed by the tunnel\'s timeout, not the proxy\'s 5 s one');
  await waitFor(() => a.sink.closes.length === 1);
  t.regex(a.sink.closes[0]!.error ?? '', /ETIMEDOUT|timeout/);
  t.is(a.tunnels.stats().client.connectionsOpen, 0, 'the hung connection is gone from the pool');
  await attempt();
  t.is(a.tunnels.stats().client.connectionsOpened, 2, 'the next connection tried a new TLS connection');
});

/**
 * A TCP relay to node B's listener on `to` that can go silent: frozen, its connections forward
 * nothing either way and close nothing, as a node that lost power or a partition looks. Later
 * connections are relayed as before.
 */
async function silentRelay(t: any, to: number) {
  const live: Array<{ frozen: boolean; a: net.Socket; b: net.Socket }> = [];
  const srv = net.createServer((a) => {
    const b = net.connect(to, NODE_B);
    const p = { frozen: false, a, b };
    live.push(p);
    for (const s of [a, b]) s.on('error', () => {});
    a.on('data', (d) => { if (!p.frozen) b.write(d); });
    b.on('data', (d) => { if (!p.frozen) a.write(d); });
    a.on('close', () => { if (!p.frozen) b.destroy(); });
    b.on('close', () => { if (!p.frozen) a.destroy(); });
  });
  srv.listen(0, NODE_B);
  await once(srv, 'listening');
  t.teardown(() => {
    for (const p of live) { p.a.destroy(); p.b.destroy(); }
    srv.close();
  });
  return { port: (srv.address() as net.AddressInfo).port, freeze: () => { for (const p of live) p.frozen = true; } };
}

// Fails without keepalive PINGs: the frozen connection is never found dead, the client's
// connection stays open, the pod's too, and the pool would give the dead connection new streams.
test('a tunnel connection whose other end goes silent (no FIN, no RST) is found dead by the keepalive PINGs at both ends: its streams end, and the next connection is a new one', async (t) => {
  const podSockets: net.Socket[] = [];
  const echoPort = await listen(net.createServer((s) => { podSockets.push(s); s.on('error', () => {}).pipe(s); }), t);
  const keepalive = { intervalMs: 100, timeoutMs: 500 };
  const b = await nodeB(t, undefined, { keepalive });
  const relay = await silentRelay(t, b.port);
  const a = await nodeA(t, relay.port, echoPort, { keepalive });
  const echoed = async (c: net.Socket, text: string) => {
    let got = '';
    c.on('data', (d: Buffer) => { got += d.toString(); });
    c.write(text);
    await waitFor(() => got === text);
  };
  const c1 = net.connect({ host: CLIENT_IP, port: a.port });
  c1.on('error', () => {});
  t.teardown(() => c1.destroy());
  await echoed(c1, 'hello');
  t.is(a.tunnels.stats().client.connectionsOpen, 1);
  relay.freeze();
  const endsFound = await Promise.race([
    Promise.all([closed(c1), closed(podSockets[0]!)]).then(() => true),
    new Promise<false>((r) => setTimeout(() => r(false), 20_000).unref()),
  ]);
  t.true(endsFound, 'the client\'s connection and the pod\'s were closed once the tunnel connection was found dead (not within 20 s)');
  await waitFor(() => a.tunnels.stats().client.connectionsOpen === 0); // the dead connection leaves the pool
  t.regex(a.logs.join('\n'), /tunnel connection to 127\.0\.0\.1:\d+ is dead: no answer to a keepalive PING within 500 ms/);
  await waitFor(() => /tunnel connection from 127\.0\.0\.1 is dead: no answer to a keepalive PING within 500 ms/.test(b.logs.join('\n')));
  const c2 = net.connect({ host: CLIENT_IP, port: a.port });
  c2.on('error', () => {});
  t.teardown(() => c2.destroy());
  await echoed(c2, 'again');
  t.is(a.tunnels.stats().client.connectionsOpened, 2, 'a new TLS connection');
});

// ---- The destination pod's inbound policy, with the identity the tunnel verified (docs/policy.md) ----

/** Node B's metrics sink: it records a tunnelled request's authorization decision, never the request (the client's agent does). */
class PolicySink extends RecordingSink {
  readonly decisions: RequestEvent[] = [];
  requestAuthz(ev: RequestEvent) { this.decisions.push(ev); }
}

/**
 * Node B with db-0's policy: TrafficTargets from the given ServiceAccounts, allowing GET /ok (HTTPRouteGroup)
 * and whole connections on `tcpPort` (TCPRoute); a proxy of its own serves what the policy does not allow whole.
 */
async function guardedNodeB(t: any, sources: string[], tcpPort = 1) {
  const authorizer = new Authorizer(() => {});
  const record: AccessRecord = {
    namespace: 'shop', name: 'to-db', destination: { serviceAccount: 'db', namespace: 'shop' },
    sources: sources.map((serviceAccount) => ({ namespace: 'shop', serviceAccount })),
    rules: [{ kind: 'HTTPRouteGroup', name: 'db-routes', matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] }, { kind: 'TCPRoute', name: 'tcp', ports: [tcpPort] }],
  };
  const table = (targets: AccessRecord[]) => ({ networks: DEFAULT_CLUSTER_NETWORKS, pods: [{ ip: SERVER_IP, identity: { namespace: 'shop', serviceAccount: 'db' }, spec: { namespace: 'shop', pod: 'db-0', serviceAccount: 'db', defaultPolicy: 'all-unauthenticated' as const, defaultFrom: 'test', targets } }] });
  authorizer.load(table([record]));
  const proxy = new Proxy({ listen: { host: '127.0.0.6', port: 0 }, lookup: () => null, opaquePorts: PortSet.empty(), detectTimeoutMs: 300 });
  await proxy.listen();
  t.teardown(() => proxy.close(0));
  const inbound = new PolicySink();
  const b = await nodeB(t, undefined, { inbound, policy: () => ({ authorize: (c, uri) => authorizer.authorizeVerified(c, uri), serve: (ctx) => proxy.serveTunnelled(ctx) }) });
  /** The policy changes: db's TrafficTargets become `targets`. */
  const change = (targets: AccessRecord[]) => authorizer.load(table(targets));
  return { ...b, inbound, proxy, change, record };
}

test('policy: a TrafficTarget with an HTTPRouteGroup is decided at the destination, request by request, with the client\'s verified identity; only the decisions are counted there', async (t) => {
  const seen: string[] = [];
  const srv = http.createServer((req, res) => { seen.push(`${req.method} ${req.url}`); res.end(`hello ${req.url}`); });
  const destPort = await listen(srv, t);
  const b = await guardedNodeB(t, ['web']);
  const a = await nodeA(t, b.port, destPort);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.deepEqual(await get(a.port, agent, '/ok'), { status: 200, body: 'hello /ok' });
  t.is((await get(a.port, agent, '/admin')).status, 403);
  t.deepEqual(await get(a.port, agent, '/ok'), { status: 200, body: 'hello /ok' }, 'the next request passes');
  t.deepEqual(seen, ['GET /ok', 'GET /ok'], 'the server never saw the denied request');
  // A denied HTTP/1 request closes its connection (its body is not read): the next one comes on another.
  t.is(b.tunnels.stats().server.inspected, 2, 'tunnelled connections served by the proxy');
  t.is(b.proxy.stats().tunnelledInspected, 2);
  await waitFor(() => b.inbound.decisions.length === 3);
  t.deepEqual(b.inbound.decisions.map((d) => [d.path, d.authz?.allowed, d.tls?.clientId]), [['/ok', true, spiffeId(web)], ['/admin', false, spiffeId(web)], ['/ok', true, spiffeId(web)]]);
  t.is(b.inbound.requests.length, 0, 'no request metrics at the destination: the client\'s agent records them');
  t.deepEqual(a.sink.requests.map((r) => r.status), [200, 403, 200], 'the client\'s agent sees the 403 the destination answered');
  // The first connection, closed by the denial: its close event carries the stream's bytes and identities.
  await waitFor(() => b.inbound.closes.length >= 1);
  const c = b.inbound.closes[0]!;
  t.like(c, { direction: 'inbound', protocol: 'http1', sourceIp: CLIENT_IP, destIp: SERVER_IP, destPort });
  t.deepEqual(c.tls, { clientId: spiffeId(web), serverId: spiffeId(db) });
  t.true(c.bytesIn > 0 && c.bytesOut > 0, `the stream's bytes are counted: in ${c.bytesIn}, out ${c.bytesOut}`);
});

test('policy: gRPC over the tunnel gets PERMISSION_DENIED for a ServiceAccount no TrafficTarget names; its opaque connection, even to the TCPRoute\'s port, is closed before the server sees it', async (t) => {
  const h2 = http2.createServer();
  h2.on('stream', (s) => { s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true }); s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' })); s.end(); });
  const h2Port = await listen(h2, t);
  let accepted = 0;
  const echoPort = await listen(net.createServer((s) => { accepted++; s.pipe(s); }), t);
  const b = await guardedNodeB(t, ['bot'], echoPort);
  const grpc = await nodeA(t, b.port, h2Port);
  const client = http2.connect(`http://${CLIENT_IP}:${grpc.port}`);
  t.teardown(() => client.close());
  const r = client.request({ ':method': 'POST', ':path': '/pkg.Svc/Get', 'content-type': 'application/grpc', te: 'trailers' });
  r.end(Buffer.from([0, 0, 0, 0, 0]));
  const [headers] = await once(r, 'response');
  const trailers = headers['grpc-status'] !== undefined ? headers : (await once(r, 'trailers'))[0];
  r.resume();
  t.is(String(trailers['grpc-status']), '7', JSON.stringify(trailers));
  // Opaque, to a port the TCPRoute names, but web is no source: closed, nothing dialled.
  const tcp = await nodeA(t, b.port, echoPort);
  const c = net.connect({ host: CLIENT_IP, port: tcp.port });
  c.on('error', () => {});
  c.write('hello');
  await closed(c);
  t.is(accepted, 0, 'the server never saw a denied client');
  await waitFor(() => b.inbound.closes.some((e) => e.destPort === echoPort));
  t.like(b.inbound.closes.find((e) => e.destPort === echoPort)!.authz, { allowed: false, server: { kind: 'serviceaccount', name: 'db' } });
  t.is(b.inbound.requests.length, 0);
});

test('policy: a client the policy allows whole connections is forwarded as bytes, its decision counted with the connection', async (t) => {
  const echoPort = await listen(net.createServer((s) => s.pipe(s)), t);
  const b = await guardedNodeB(t, ['web'], echoPort);
  const a = await nodeA(t, b.port, echoPort);
  const c = net.connect({ host: CLIENT_IP, port: a.port });
  let got = '';
  c.setEncoding('utf8');
  c.on('data', (d) => (got += d));
  c.write('ping');
  await waitFor(() => got === 'ping');
  c.end();
  await waitFor(() => b.inbound.closes.length === 1);
  t.like(b.inbound.closes[0], { protocol: 'opaque', detectedBy: 'tunnel', authz: { allowed: true, authz: { kind: 'traffictarget', name: 'to-db' } } });
  t.is(b.tunnels.stats().server.inspected, 0, 'nothing for the proxy to decide');
});

test('policy: a connection forwarded as bytes is reset when a policy change no longer allows it whole, and counted as terminated', async (t) => {
  const echoPort = await listen(net.createServer((s) => s.on('error', () => {}).pipe(s)), t);
  const b = await guardedNodeB(t, ['web'], echoPort);
  const a = await nodeA(t, b.port, echoPort);
  const c = net.connect({ host: CLIENT_IP, port: a.port });
  let got = '';
  let error = null as string | null;
  c.setEncoding('utf8');
  c.on('data', (d) => (got += d));
  c.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  c.write('ping');
  await waitFor(() => got === 'ping');
  b.change([{ ...b.record, sources: [{ namespace: 'shop', serviceAccount: 'bot' }] }]);
  await closed(c);
  t.is(error, 'ECONNRESET', 'reset, not ended: the client must not take it for the server\'s end of the stream');
  await waitFor(() => b.inbound.closes.length === 1);
  t.like(b.inbound.closes[0], { protocol: 'opaque', detectedBy: 'tunnel', authz: { allowed: true, authz: { kind: 'traffictarget', name: 'to-db' }, terminatedBy: { kind: 'serviceaccount', name: 'db', port: echoPort } } });
});

test('an agent just started (no identity known yet): a client\'s handshake waits for the certificate instead of being refused', async (t) => {
  const srv = http.createServer((req, res) => res.end(`hello ${req.url}`));
  const destPort = await listen(srv, t);
  const b = await nodeB(t, undefined, { noCredential: true });
  const a = await nodeA(t, b.port, destPort);
  const agent = new http.Agent({ keepAlive: false });
  const got = get(a.port, agent, '/first');
  // The handshake is in the agent's hands, waiting: give it the certificate as the identity service would.
  await waitFor(() => b.tunnels.stats().server.waitingHandshakes === 1);
  b.tunnels.apply([{ uri: spiffeId(db), state: 'pending' }]);
  b.tunnels.apply([await (await pki()).credential(db)]);
  t.deepEqual(await got, { status: 200, body: 'hello /first' });
  t.deepEqual(b.tunnels.stats().server.refusedClients, {}, 'nothing refused');
});

test('a rolling restart: a CONNECT crossing the stopping agent\'s shutdown notice on the wire is served, not refused; the next goes to a new connection, the next agent\'s', async (t) => {
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  const destPort = await listen(echo, t);
  // The old agent and the next one on the same port (SO_REUSEPORT), as the next agent takes the
  // port over once the old one's listener closes.
  const b1 = await nodeB(t, undefined, { reusePort: true });
  const b2 = await nodeB(t, undefined, { reusePort: true, port: b1.port });
  const a = await nodeA(t, b1.port, destPort);
  const path = a.tunnels.tunnels.pathTo(SERVER_IP, destPort);
  if (path.kind !== 'tunnel') throw new Error(`${SERVER_IP} should be reached through the tunnel: ${JSON.stringify(path)}`);
  const open = () => a.tunnels.pool.open(spiffeId(web), path, SERVER_IP, destPort, CLIENT_IP);
  const connected = (s: net.Socket) => new Promise<string>((r) => {
    s.once('connect', () => r('connected'));
    s.once('error', (e: NodeJS.ErrnoException) => r(`${e.code}: ${e.message}`));
  });
  const roundTrip = async (s: net.Socket, text: string) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d) => (got += d));
    s.end(text);
    await once(s, 'end');
    return got;
  };
  const first = open();
  t.is(await connected(first), 'connected');
  const [old, next] = b1.tunnels.stats().server.accepted === 1 ? [b1, b2] : [b2, b1];
  // In one turn of the loop: the old agent's shutdown (it stops) and the client's next CONNECT on
  // the same connection are written together, each on the wire before the other end reads: they
  // cross. A GOAWAY here would refuse the CONNECT (REFUSED_STREAM), failing its connection.
  const closing = old.tunnels.close(10_000);
  const second = open();
  t.is(await connected(second), 'connected', 'the crossing CONNECT is served');
  t.is(await roundTrip(second, 'second'), 'second');
  t.is(old.tunnels.stats().server.streams, 2, 'by the old agent, which had not yet sent its GOAWAY');
  // The notice was on the wire before the old agent's answer to the second CONNECT: read by now.
  const third = open();
  t.is(await connected(third), 'connected');
  t.is(await roundTrip(third, 'third'), 'third');
  t.like(next.tunnels.stats().server, { accepted: 1, streams: 1 }, 'after the notice: a new connection, to the next agent');
  t.is(a.tunnels.stats().client.connectionsOpened, 2);
  t.is(await roundTrip(first, 'first'), 'first', 'the old connection finishes what it carried');
  await closing;
  t.is(old.tunnels.stats().server.open, 0, 'and closes');
});

/** The tunnel listener's connections (private: what its drain waits on). */
const serverSockets = (b: Side) => [...(b.tunnels as unknown as { server: { sockets: Set<net.Socket> } }).server.sockets];
/** Settles everything already queued: microtasks, next ticks, and one turn of the loop's I/O. */
const settled = () => new Promise((r) => setImmediate(r));

test('the tunnel listener\'s drain: cutDrain() closes the connections it waits on at once; a drain whose last connection closes ends then, not at its deadline', async (t) => {
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.on('error', () => {}).pipe(s)); // the cut resets its connection
  const destPort = await listen(echo, t);
  const cut = await tunnelledTo(t, destPort);
  const cutSockets = serverSockets(cut.b);
  t.is(cutSockets.length, 1);
  const cutClosing = cut.b.tunnels.close(600_000);
  cut.b.tunnels.cutDrain();
  for (let i = 0; i < 5; i++) await null; // microtasks only: no timer can have fired
  t.true(cutSockets.every((x) => x.destroyed), 'the cut closed the connection in the same turn, not at a later poll');
  await cutClosing;

  const drained = await tunnelledTo(t, destPort);
  const [sock] = serverSockets(drained.b);
  let done = false;
  const closing = drained.b.tunnels.close(600_000).then(() => (done = true));
  // The client's stream is still open: the drain waits for it.
  await settled();
  t.false(done);
  drained.s.end();
  drained.s.resume();
  await once(sock!, 'close');
  await settled();
  t.true(done, 'close() ended with its last connection, not at the deadline');
  drained.b.tunnels.cutDrain(); // a failing run ends here, not 600 s later
  await closing;
});

/** A pod that writes without end from `when` on (its first bytes, or the client's FIN), holding its sockets; resolves each one's close. */
async function streamingPod(t: any, when: 'data' | 'end'): Promise<{ port: number; accepted: net.Socket[]; closed: Array<Promise<void>> }> {
  const accepted: net.Socket[] = [];
  const closed: Array<Promise<void>> = [];
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    closed.push(new Promise((r) => s.once('close', () => r())));
    const chunk = Buffer.alloc(16 * 1024, 3);
    const pump = () => {
      while (!s.destroyed) if (!s.write(chunk)) return void s.once('drain', pump);
    };
    s.once(when, pump);
    s.resume();
  });
  const port = await listen(srv, t);
  // After listen's: teardowns run last first, and the server's close waits for these.
  t.teardown(() => {
    for (const s of accepted) s.destroy();
  });
  return { port, accepted, closed };
}

/** Node B serving the pod at SERVER_IP:podPort, node A, and a stream from the client pod through their tunnel to it, connected. */
async function tunnelledTo(t: any, podPort: number) {
  const b = await nodeB(t);
  const a = await nodeA(t, b.port, podPort);
  const path = a.tunnels.tunnels.pathTo(SERVER_IP, podPort);
  if (path.kind !== 'tunnel') throw new Error(`${SERVER_IP} should be reached through the tunnel: ${JSON.stringify(path)}`);
  const s = a.tunnels.pool.open(spiffeId(web), path, SERVER_IP, podPort, CLIENT_IP);
  s.on('error', () => {});
  await once(s, 'connect');
  return { a, b, s };
}

test('a tunnelled download its client drops (stream destroy(): RST_STREAM) closes the pod\'s connection at the destination, and is recorded closed', async (t) => {
  const pod = await streamingPod(t, 'data');
  const { b, s } = await tunnelledTo(t, pod.port);
  s.write('download');
  await once(s, 'data');
  // The client's agent drops the stream mid-download (its idle timeout, an HTTP/1 pool discarding
  // the connection). The destination's stream then ends and closes in one turn, its last data still
  // queued: the pod's socket was ended (end()), then reset while that FIN was still queued; libuv
  // refuses such a reset (EINVAL), and Node left the socket open for good: the fd, the pod's
  // connection, and the connection's close event never came.
  s.destroy();
  const closedInTime = await waitFor(() => b.inbound.closes.length === 1, 10_000).then(() => true, () => false);
  t.true(closedInTime, 'the destination agent records the connection closed');
  if (!closedInTime) return;
  await pod.closed[0];
  t.pass('the pod\'s connection is closed');
});

test('a tunnelled connection its client resets with nothing in flight is reset at the pod, not half-closed: a pod that answers the FIN is not left streaming into the void', async (t) => {
  // The pod streams once the client has sent all (its FIN), as a server answering a request body.
  const pod = await streamingPod(t, 'end');
  const { b, s } = await tunnelledTo(t, pod.port);
  s.write('part of a request');
  await waitFor(() => pod.accepted.length === 1 && pod.accepted[0]!.bytesRead > 0);
  // RST_STREAM (NO_ERROR, what a stream's destroy() sends): Node's stream emits 'aborted', then
  // 'end' and a clean close. The destination passed that on as a FIN: the pod took the cut request
  // for a whole one, and its answer was read and thrown away for as long as it lasted.
  s.destroy();
  const closedInTime = await waitFor(() => b.inbound.closes.length === 1, 10_000).then(() => true, () => false);
  t.true(closedInTime, `the destination agent records the connection closed (the pod has sent ${pod.accepted[0]!.bytesWritten} bytes)`);
  if (!closedInTime) return;
  await pod.closed[0];
  t.is(pod.accepted[0]!.readableEnded, false, 'the pod saw a reset, not the end of the request');
});

/**
 * A pod whose connections wait in a full accept queue (listen backlog 0, one connection already
 * queued): a new connect's SYN is dropped and retried by the kernel, so it completes only after
 * `admit()`; then it reports how each connection it accepts ended ("eof" or "reset").
 */
async function queuedPod(t: any): Promise<{ port: number; admit: () => void; ended: Promise<string[]> }> {
  const py = `
import socket, sys
s = socket.socket(); s.bind(("${SERVER_IP}", 0)); s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
filler, _ = s.accept(); filler.close()
c, _ = s.accept()
try:
    got = c.recv(65536)
    print("eof" if got == b"" else "data", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
`;
  const child = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill());
  const lines: string[] = [];
  let onLine = (): void => {};
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      onLine();
    }
  });
  await new Promise<void>((r) => (onLine = () => r()));
  const port = Number(lines[0]);
  // The one connection the accept queue holds: from here a SYN is dropped until it is taken.
  const filler = net.connect({ host: SERVER_IP, port });
  filler.on('error', () => {});
  t.teardown(() => filler.destroy());
  await once(filler, 'connect');
  const ended = new Promise<string[]>((r) => {
    onLine = () => r(lines.slice(1));
    child.once('exit', () => r(lines.slice(1)));
  });
  return { port, admit: () => child.stdin.write('go\n'), ended };
}

test('a stream its client agent resets before the pod\'s connect completes: the pod gets a reset, not an empty request and a FIN', async (t) => {
  const pod = await queuedPod(t);
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.on('error', () => {}).pipe(s));
  const echoPort = await listen(echo, t);
  // The destination's connect waits for the kernel's SYN retries (1, 3, 7, 15 s...): a deadline they all fit in.
  const b = await nodeB(t, undefined, { limits: { ...defaultLimits, upstreamConnectTimeoutMs: 60_000 } });
  const a = await nodeA(t, b.port, pod.port);
  const open = (port: number) => {
    const path = a.tunnels.tunnels.pathTo(SERVER_IP, port);
    if (path.kind !== 'tunnel') throw new Error(`${SERVER_IP} should be reached through the tunnel: ${JSON.stringify(path)}`);
    const s = a.tunnels.pool.open(spiffeId(web), path, SERVER_IP, port, CLIENT_IP);
    s.on('error', () => {});
    return s;
  };
  const cut = open(pod.port);
  cut.write('part of a request');
  await waitFor(() => b.tunnels.stats().server.streams === 1); // its CONNECT is at the destination, whose connect waits
  cut.destroy();
  // A stream opened after the reset on the same connection is answered after the reset was read.
  const next = open(echoPort);
  await once(next, 'connect');
  t.is(a.tunnels.stats().client.connectionsOpened, 1, 'one tunnel connection: its frames are in order');
  next.destroy();
  pod.admit();
  t.deepEqual(await pod.ended, ['reset']);
});

// ---- Flow control: streams whose readers stall must not stall the others on their connection ----

/**
 * A pod that, per connection, either echoes (its first bytes start with "echo") or, for "upload",
 * reads nothing, or, for "download", writes without end; the sockets it holds are destroyed at teardown.
 */
async function stallingPod(t: any): Promise<number> {
  const held = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    held.add(s);
    s.on('error', () => {});
    s.once('close', () => held.delete(s));
    s.once('data', (d) => {
      const what = String(d);
      if (what.startsWith('echo')) {
        s.write(d);
        s.pipe(s);
      } else if (what.startsWith('upload')) {
        s.pause();
      } else {
        const chunk = Buffer.alloc(64 * 1024, 7);
        const pump = () => {
          while (!s.destroyed) if (!s.write(chunk)) return void s.once('drain', pump);
        };
        pump();
      }
    });
  });
  const port = await listen(srv, t);
  // Registered after listen's: teardowns run last first, and the server's close waits for these.
  t.teardown(() => {
    for (const s of held) s.destroy();
  });
  return port;
}

/** A stream opened on node A's pool straight to SERVER_IP:port (as the proxy opens them). */
function poolOpen(a: Awaited<ReturnType<typeof nodeA>>, port: number): net.Socket {
  const path = a.tunnels.tunnels.pathTo(SERVER_IP, port);
  if (path.kind !== 'tunnel') throw new Error(`${SERVER_IP} should be reached through the tunnel: ${JSON.stringify(path)}`);
  const s = a.tunnels.pool.open(spiffeId(web), path, SERVER_IP, port, CLIENT_IP);
  s.on('error', () => {});
  return s;
}

/** What a new stream on the same connection gets back for "echo ...": it must be served though others stall. */
function echoed(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d) => {
      got += d;
      if (got.length >= text.length) resolve(got);
    });
    s.once('close', () => resolve(`closed after ${JSON.stringify(got)}`));
    s.write(text);
  });
}

/** Its receive window: 0 once the peer has sent all it may while nothing reads the stream. */
const recvWindow = (s: net.Socket | http2.Http2Stream) => (s as unknown as http2.Http2Stream).state.localWindowSize;

test('flow control: 4 downloads whose clients stop reading fill their own stream windows, and the connection still serves its other streams', async (t) => {
  const destPort = await stallingPod(t);
  const b = await nodeB(t);
  const a = await nodeA(t, b.port, destPort);
  const stalled = Array.from({ length: 4 }, () => poolOpen(a, destPort));
  t.teardown(() => {
    for (const s of stalled) s.destroy();
  });
  for (const s of stalled) s.write('download'); // and nothing reads them
  
  // Each stream's 4 MiB window fills (its reader stalls, not the connection). With Node's default
  // 10 MB session memory, the client's session stopped reading the socket at about 10 MB: no
  // window filled, and every other stream of the connection froze.
  if (!(await waitFor(() => stalled.every((s) => recvWindow(s) === 0), 15_000).then(() => true, () => false))) {
    return t.fail(`the stalled streams' windows did not fill (their remaining windows: ${stalled.map(recvWindow).join(', ')}): the connection stopped reading`);
  }
  const probe = poolOpen(a, destPort);
  t.teardown(() => probe.destroy());
  t.is(await echoed(probe, 'echo through a connection with stalled streams'), 'echo through a connection with stalled streams');
  t.is(a.tunnels.stats().client.connectionsOpened, 1, 'on the same connection');
});

test('flow control: 4 uploads to a pod that does not read fill their stream windows at the destination agent, which still serves the connection\'s other streams', async (t) => {
  const destPort = await stallingPod(t);
  const b = await nodeB(t);
  const a = await nodeA(t, b.port, destPort);
  // The destination agent's streams, as its HTTP/2 server makes them (it makes that server on first use).
  const atB: http2.ServerHttp2Stream[] = [];
  (b.tunnels.server as unknown as { h2(): http2.Http2Server }).h2().on('stream', (s) => atB.push(s));
  const stalled = Array.from({ length: 4 }, () => poolOpen(a, destPort));
  t.teardown(() => {
    for (const s of stalled) s.destroy();
  });
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (const s of stalled) {
    s.write('upload');
    const pump = () => {
      while (!s.destroyed) if (!s.write(chunk)) return void s.once('drain', pump);
    };
    pump();
  }
  if (!(await waitFor(() => atB.length === 4 && atB.every((s) => recvWindow(s) === 0), 15_000).then(() => true, () => false))) {
    return t.fail(`the stalled streams' windows at the destination did not fill (${atB.length} streams, remaining windows: ${atB.map(recvWindow).join(', ')}): its session stopped reading`);
  }
  const probe = poolOpen(a, destPort);
  t.teardown(() => probe.destroy());
  t.is(await echoed(probe, 'echo past the stalled uploads'), 'echo past the stalled uploads');
  t.is(b.tunnels.stats().server.streams, 5);
});
