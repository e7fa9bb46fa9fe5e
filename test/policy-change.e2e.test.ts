// Open connections follow a policy change (docs/policy.md, "When the policy changes"), on a
// simulated 2-node cluster with the mesh as installed (2 proxies per agent), the real kernel:
// connections opened while api's policy allowed everyone, then a TrafficTarget that selects
// api's ServiceAccount for another client only:
// - every opaque connection allowed whole is reset: a meshed pod of api's node (on both proxy
//   threads, directly and through a Service), a meshed pod of the other node (its mTLS tunnel
//   stream), an unmeshed pod (captured), and each counts once in inbound_tcp_authz_terminate_total;
// - the next request on each kept-alive HTTP/1 connection gets 403: a captured one, a meshed
//   one, one through a Service whose pooled upstream was dialled while allowed, one through the
//   tunnel (its bytes-forwarded stream was reset; the client's agent opens another, decided);
// - a skip-inbound port of api has no policy through the agent either (a Service's connection),
//   and no server side in the metrics.
// - a namespace's default-inbound-policy annotation changed to deny does the same;
// - a skip-inbound port of api is dialled straight to api by the agent of another node (no
//   tunnel: discovery carries the pod's skip-inbound ports), its other ports through the tunnel;
// - so is one set only on the namespace of store (Linkerd's annotation), and when the
//   namespace's annotation changes the other node's agent follows.
// Each step waits for the agent's own account (the policy generation every proxy loaded, the
// counters, the clients' close lines), never a timer.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, TOOLS_PATH, type SimCluster, type SimPod, type SimService } from '../src/sim/index.ts';
import { ACCESS_RESOURCES } from '../src/sim/api-resources.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { JsonLines } from './helpers/procs.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
/** store's namespace: its skip-inbound ports are set there, not on the pod. */
const NS2 = 'depot';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let api: SimPod;
let web: SimPod;
let far: SimPod;
let ingress: SimPod;
let store: SimPod;
let apiSvc: SimService;
const children: ChildProcess[] = [];
/** api's echo servers by port: one {"accepted":{...}} line per connection, with its peer's address. */
const echoes: Record<string, JsonLines> = {};
/** store's, the same way. */
const storeEchoes: Record<string, JsonLines> = {};

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

const nodeOf = (p: SimPod) => need().cluster.nodes.find((n) => n.pods().includes(p))!;

/**
 * A connection held open from `from` (tools.ts hold) to `addr` (IP:PORT), and the answer to
 * `first`, sent as it connects: an HTTP connection's first bytes reach the proxy at once, never
 * its silence (which protocol detection would take for an opaque client after its deadline).
 */
async function hold(from: SimPod, addr: string, first: string, http = false): Promise<{ io: JsonLines; first: any }> {
  const c = from.spawn(process.execPath, [TOOLS_PATH, 'hold', '--connect', addr, '--first', first, ...(http ? ['--http'] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(c);
  const io = new JsonLines(c);
  const answer = await io.waitFor((o) => o.reply !== undefined || o.status !== undefined || o.closed !== undefined, 15_000, `${from.name}: ${first} to ${addr}`);
  return { io, first: answer };
}

/** Sends one line on a held connection and waits for the answer after `seen` lines. */
async function ask(io: JsonLines, line: string, what: string): Promise<any> {
  const seen = io.lines.length;
  io.child.stdin!.write(`${line}\n`);
  return io.waitFor((o) => io.lines.indexOf(o) >= seen && (o.reply !== undefined || o.status !== undefined || o.closed !== undefined), 15_000, what);
}

/** What an echo server (tools.ts tcp-echo) saw of a connection held from `from` to `addr`: its peer, once the echo came back. */
async function peerAt(echo: JsonLines, from: SimPod, addr: string, what: string): Promise<{ io: JsonLines; peer: string }> {
  const accepted = () => echo.lines.filter((l) => l.accepted);
  const seen = accepted().length;
  const { io, first } = await hold(from, addr, what);
  if (first.reply !== what) throw new Error(`${from.name} to ${addr}: no echo of ${what}: ${JSON.stringify(first)}`);
  const a = await echo.waitFor((o) => o.accepted && accepted().indexOf(o) === seen, 10_000, `the echo server at ${addr} to account ${from.name}'s connection`);
  return { io, peer: a.accepted.remoteAddress as string };
}

/** tcp-echo servers in `pod` on these ports, listening. */
async function echoServers(pod: SimPod, ports: string[], into: Record<string, JsonLines>): Promise<void> {
  for (const port of ports) {
    const e = pod.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', port]);
    children.push(e);
    into[port] = new JsonLines(e);
    await into[port].waitFor((o) => o.listening, 10_000, `${pod.name} echo ${port} listening`);
  }
}

const apiAgentStatus = () => need().mesh.agentStatus(nodeOf(api));

/** Until every proxy of api's agent has loaded a policy table in which `ok` holds for api. */
async function policyApplied(ok: (pod: any) => boolean, what: string): Promise<void> {
  const s = await until(apiAgentStatus, (x: any) => ok(x.inbound?.pods.find((p: any) => p.name === api.name)), what, { context: () => need().mesh.logs() });
  const gen = s.inbound.policyGeneration.table;
  await until(apiAgentStatus, (x: any) => x.inbound.policyGeneration.proxies.length === 2 && x.inbound.policyGeneration.proxies.every((g: number) => g >= gen),
    `every proxy of api's agent at policy generation ${gen} (${what})`, { context: () => need().mesh.logs() });
}

async function apiMetrics() {
  return parseExposition(await need().mesh.agentMetrics(nodeOf(api)));
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the cluster tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  cluster = await createCluster({ nodes: 2 });
  for (const r of ACCESS_RESOURCES) cluster.api.register(r);
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  api = await cluster.addPod(0, { deployment: 'api', namespace: NS, serviceAccountName: 'api', labels: { app: 'api' }, annotations: { 'mesh-agent.io/skip-inbound-ports': '7001' } });
  web = await cluster.addPod(0, { deployment: 'web', namespace: NS, serviceAccountName: 'web' });
  far = await cluster.addPod(1, { deployment: 'far', namespace: NS, serviceAccountName: 'web' });
  ingress = await cluster.addPod(1, { name: 'ingress', namespace: NS, annotations: { 'mesh-agent.io/inject': 'disabled' } });
  const b = api.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'api', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(b);
  await new JsonLines(b).waitFor((o) => o.listening, 30_000, 'api listening');
  await echoServers(api, ['7000', '7001'], echoes);
  cluster.addNamespace(NS2, { 'mesh-agent.io/inject': 'enabled', 'config.linkerd.io/skip-inbound-ports': '7002' });
  store = await cluster.addPod(0, { deployment: 'store', namespace: NS2, serviceAccountName: 'store' });
  await echoServers(store, ['7002', '7003'], storeEchoes);
  apiSvc = cluster.addService({ name: 'api', namespace: NS, selector: { app: 'api' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'echo', port: 7000, targetPort: 7000 }, { name: 'skipped', port: 7001, targetPort: 7001 }] });
  await cluster.settled();
  // Port 7000 is declared opaque: no detection wait, a whole connection from its first byte.
  mesh = await startMesh(cluster, { reportIntervalMs: 1000, agentArgs: ['--proxy-workers', '2', '--opaque-ports', '7000,7001'] });
  await mesh.waitAgents((s) => s.discovery.endpoints >= 2, 'the api Service (and the API server\'s)');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('a TrafficTarget that no longer allows a client: its open opaque connections are reset and counted as terminated, its kept-alive HTTP/1 connections get 403 on their next request, on every path and both proxies', async (t) => {
  const { cluster, mesh } = need();
  await policyApplied((p) => p?.mode === 'default' && p.defaultPolicy === 'all-unauthenticated', 'api open to everyone');
  const node = nodeOf(api);
  const workersOpen = async () => ((await mesh.agentStatus(node)).proxy.workers as Array<{ open: number }>).map((w) => w.open);

  // web's opaque connections straight to api, until both proxies of api's node hold one (the
  // kernel spreads connections over the two listeners by their addresses).
  const direct: JsonLines[] = [];
  for (let i = 0; i < 24; i++) {
    const { io, first } = await hold(web, `${api.ip}:7000`, `direct-${i}`);
    t.is(first.reply, `direct-${i}`);
    direct.push(io);
    const open = await until(workersOpen, (o) => o.reduce((a, b) => a + b, 0) >= direct.length, 'the proxies to account the held connections');
    if (open.every((n) => n > 0)) break;
  }
  t.true((await workersOpen()).every((n) => n > 0), 'both proxy threads hold one of web\'s connections');
  const held = async (from: SimPod, addr: string, what: string): Promise<JsonLines> => {
    const { io, first } = await hold(from, addr, what);
    t.is(first.reply, what, `an echo: ${what}`);
    return io;
  };
  const viaService = await held(web, `${apiSvc.clusterIP}:7000`, 'through the Service');
  const tunnelled = await held(far, `${api.ip}:7000`, 'through the tunnel');
  const captured = await held(ingress, `${api.ip}:7000`, 'captured');
  const skipped = await held(web, `${apiSvc.clusterIP}:7001`, 'skip-inbound');
  const opaque: Array<[string, JsonLines]> = [...direct.map((io, i): [string, JsonLines] => [`web's direct ${i}`, io]), ['web\'s through the Service', viaService], ['far\'s through the tunnel', tunnelled], ['ingress\'s, captured', captured]];

  const kept: Record<string, JsonLines> = {};
  const firstPort: Record<string, number> = {};
  for (const [name, from, addr] of [['web', web, `${api.ip}:8080`], ['service', web, `${apiSvc.clusterIP}:80`], ['far', far, `${api.ip}:8080`], ['ingress', ingress, `${api.ip}:8080`]] as const) {
    const { io, first } = await hold(from, addr, '/ok', true);
    t.is(first.status, 200, `${name}: allowed before the change`);
    kept[name] = io;
    firstPort[name] = first.localPort;
  }
  const before = await apiMetrics();
  t.is(sum(before, 'inbound_tcp_authz_terminate_total', {}), 0);

  cluster.apply({
    apiVersion: 'access.smi-spec.io/v1alpha3', kind: 'TrafficTarget', metadata: { name: 'only-admin', namespace: NS },
    spec: { destination: { kind: 'ServiceAccount', name: 'api', namespace: NS }, sources: [{ kind: 'ServiceAccount', name: 'admin', namespace: NS }], rules: [{ kind: 'TCPRoute', name: 'any' }] },
  });
  cluster.apply({ apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'TCPRoute', metadata: { name: 'any', namespace: NS }, spec: {} });
  await policyApplied((p) => p?.mode === 'smi', 'the TrafficTarget at api\'s agent');

  for (const [name, io] of opaque) {
    const c = await io.waitFor((o) => o.closed, 15_000, `${name} closed by the policy change`);
    t.not(c.closed.error, null, `${name}: reset, not ended`);
  }
  t.is((await ask(skipped, 'still', 'an echo on the skip-inbound port after the change')).reply, 'still', 'no policy on a skip-inbound port');
  await held(web, `${apiSvc.clusterIP}:7001`, 'late'); // a new connection to the skip-inbound port: not refused, the port has no policy
  const m = await until(apiMetrics, (e) => sum(e, 'inbound_tcp_authz_terminate_total', {}) >= opaque.length + 1, 'the terminations counted', { context: () => mesh.logs() });
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { target_addr: `${api.ip}:7000`, client_id: 'spiffe://cluster.local/ns/shop/sa/web' }), direct.length + 2, 'web\'s, direct and through the Service, and far\'s (its ServiceAccount is web\'s)');
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { target_addr: `${api.ip}:7000`, tls: 'true' }), 1, 'far\'s, through the tunnel');
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { target_addr: `${api.ip}:7000`, tls: 'no_identity' }), 1, 'ingress\'s, captured');
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { target_addr: `${api.ip}:8080`, tls: 'true' }), 1, 'far\'s HTTP connection through the tunnel');
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { srv_kind: 'serviceaccount', srv_name: 'api' }), opaque.length + 1, 'labelled as Linkerd\'s: with the server now in force, as a denial');
  t.is(sum(m, 'inbound_tcp_authz_allow_total', { target_addr: `${api.ip}:7000`, srv_kind: 'default', srv_name: 'all-unauthenticated' }), opaque.length, 'each also counted as allowed, by the policy that allowed it');
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { target_addr: `${api.ip}:7001` }), 0);
  t.is(sum(m, 'tcp_open_total', { direction: 'outbound', target_addr: `${api.ip}:7001` }), 2, 'the skip-inbound port\'s connections counted on the client side');
  t.is(sum(m, 'tcp_open_total', { direction: 'inbound', target_addr: `${api.ip}:7001` }), 0, 'and on no server side: a skip-inbound port bypasses it');
  t.is(sum(m, 'inbound_tcp_authz_allow_total', { target_addr: `${api.ip}:7001` }) + sum(m, 'inbound_tcp_authz_deny_total', { target_addr: `${api.ip}:7001` }), 0, 'nor authorized');
  // + 1: far's HTTP connection, forwarded through the tunnel as bytes.
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', {}), opaque.length + 1, 'each terminated connection once');

  for (const [name, io] of Object.entries(kept)) {
    const r = await ask(io, '/ok', `${name}'s request after the change`);
    t.is(r.status, 403, `${name}: the next request is refused`);
    if (name !== 'far') t.is(r.localPort, firstPort[name], `${name}: on the connection kept alive`);
  }
  const after = await until(apiMetrics, (e) => sum(e, 'inbound_http_authz_deny_total', { srv_kind: 'serviceaccount', srv_name: 'api' }) >= 4, 'the four denials counted');
  t.is(sum(after, 'inbound_http_authz_deny_total', { srv_kind: 'serviceaccount', srv_name: 'api' }), 4);
  const log = mesh.agents.get(node.name)!.log();
  const said = log.split('\n').filter((l) => l.includes('connection terminated due to policy change'));
  t.true(said.length >= 1 && said.length <= opaque.length + 1, `said once per client and server (per proxy thread): ${said.length}`);
  t.regex(log, /connection terminated due to policy change: the inbound policy no longer allows spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web \(\S+\) whole connections to pod shop\/api-\S+ port 7000: no TrafficTarget of ServiceAccount shop\/api on port 7000 allows spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/);
});

test.serial('a default-inbound-policy annotation changed to deny: the open opaque connection is reset and counted as terminated by the deny server, the kept-alive HTTP/1 connection\'s next request gets 403', async (t) => {
  const { cluster, mesh } = need();
  cluster.delete('TrafficTarget', NS, 'only-admin');
  await policyApplied((p) => p?.mode === 'default' && p.defaultPolicy === 'all-unauthenticated', 'the TrafficTarget gone: api open to everyone again');
  const { io: tcp, first } = await hold(web, `${api.ip}:7000`, 'before');
  t.is(first.reply, 'before');
  const { io: kept, first: ok } = await hold(web, `${api.ip}:8080`, '/ok', true);
  t.is(ok.status, 200);
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/default-inbound-policy': 'deny' });
  await policyApplied((p) => p?.defaultPolicy === 'deny', 'deny from the namespace annotation at api\'s agent');
  const c = await tcp.waitFor((o) => o.closed, 15_000, 'the opaque connection closed by the annotation');
  t.not(c.closed.error, null, 'reset, not ended');
  const r = await ask(kept, '/ok', 'the request after the annotation');
  t.is(r.status, 403);
  t.is(r.localPort, ok.localPort, 'on the connection kept alive');
  const m = await until(apiMetrics, (e) => sum(e, 'inbound_tcp_authz_terminate_total', { srv_kind: 'default', srv_name: 'deny' }) >= 1, 'the termination counted', { context: () => mesh.logs() });
  t.is(sum(m, 'inbound_tcp_authz_terminate_total', { srv_kind: 'default', srv_name: 'deny', target_addr: `${api.ip}:7000` }), 1);
});

test.serial('a skip-inbound port of a pod of another node is dialled straight to the pod (no tunnel, no mTLS, as Linkerd gives such a port no identity); another port of the same pod goes through the tunnel', async (t) => {
  const { cluster, mesh } = need();
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  await policyApplied((p) => p?.mode === 'default' && p.defaultPolicy === 'all-unauthenticated', 'api open to everyone again');
  const streams = async () => (await apiAgentStatus()).identity.tunnels.server.streams as number;
  const before = await streams();
  const peerOf = (port: string, what: string) => peerAt(echoes[port]!, far, `${api.ip}:${port}`, what);
  const direct = await peerOf('7001', 'skip-inbound');
  const tunnelled = await peerOf('7000', 'tunnelled');
  t.is(direct.peer, nodeOf(far).nodeIp, 'the skip-inbound port\'s connection came from far\'s node (its agent dialled it), not out of api\'s agent');
  t.is(tunnelled.peer, nodeOf(api).nodeIp, 'the other port\'s came out of api\'s agent, which terminated the tunnel');
  const after = await until(streams, (n) => n >= before + 1, 'the tunnelled connection\'s stream at api\'s agent', { context: () => mesh.logs() });
  t.is(after, before + 1, 'one tunnel stream: 7000\'s, not the skip-inbound port\'s');
  // far's agent labels it as any plaintext connection: no tls="true", no server_id.
  const opens = (e: ReturnType<typeof parseExposition>, port: number, labels: Record<string, string> = {}) => sum(e, 'tcp_open_total', { direction: 'outbound', target_addr: `${api.ip}:${port}`, ...labels });
  const m = await until(async () => parseExposition(await mesh.agentMetrics(nodeOf(far))), (e) => opens(e, 7001) >= 1 && opens(e, 7000) >= 1, 'far\'s agent to count both connections');
  t.is(opens(m, 7001, { tls: 'true' }), 0, 'the skip-inbound port\'s: plaintext');
  t.true(opens(m, 7000, { tls: 'true', server_id: 'spiffe://cluster.local/ns/shop/sa/api' }) >= 1, 'the other port\'s: mTLS to api\'s identity');
  direct.io.child.kill('SIGKILL');
  tunnelled.io.child.kill('SIGKILL');
});

test.serial('a skip-inbound port set only on the pod\'s namespace (Linkerd\'s annotation) is dialled straight to the pod from another node too; the namespace\'s annotation changed, that node\'s agent follows', async (t) => {
  const { cluster, mesh } = need();
  const storeNode = nodeOf(store).nodeIp;
  const streams = async () => (await mesh.agentStatus(nodeOf(store))).identity.tunnels.server.streams as number;
  const direct = await peerAt(storeEchoes['7002']!, far, `${store.ip}:7002`, 'ns-skip');
  t.is(direct.peer, nodeOf(far).nodeIp, 'from far\'s node (its agent dialled it), not out of store\'s agent through the tunnel');
  direct.io.child.kill('SIGKILL');

  cluster.addNamespace(NS2, { 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-inbound-ports': '7003' });
  await until(() => mesh.agentStatus(nodeOf(store)), (s: any) => s.pods.find((p: any) => p.name === store.name)?.skipInboundPorts === '7003', 'store\'s agent to skip 7003, not 7002', { context: () => mesh.logs() });
  // far's agent hears of it through discovery, which it does not show: each try is one real
  // connection, until one to 7003 comes from far's node rather than through store's agent.
  const moved = await until(async () => {
    const c = await peerAt(storeEchoes['7003']!, far, `${store.ip}:7003`, 'ns-skip-changed');
    c.io.child.kill('SIGKILL');
    return c.peer;
  }, (peer) => peer === nodeOf(far).nodeIp, 'far\'s agent to dial 7003 straight to store', { context: () => mesh.logs() });
  t.is(moved, nodeOf(far).nodeIp);
  const before = await streams();
  const tunnelled = await peerAt(storeEchoes['7002']!, far, `${store.ip}:7002`, 'tunnelled-now');
  t.is(tunnelled.peer, storeNode, '7002 now out of store\'s agent, which terminated the tunnel');
  t.is(await until(streams, (n) => n >= before + 1, 'the tunnelled connection\'s stream at store\'s agent', { context: () => mesh.logs() }), before + 1);
  tunnelled.io.child.kill('SIGKILL');
});
