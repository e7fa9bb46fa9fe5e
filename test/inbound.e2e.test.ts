// Inbound capture and policy on a simulated node (`mesh-agent run --pods FILE`, the real kernel):
// a connection into a meshed pod that did not come through the agent is captured (TPROXY) and
// passes its policy; the pod sees the client's own address; unmeshed clients are counted inbound
// (tls="no_identity"); skip-inbound ports bypass; all-authenticated refuses unmeshed clients (403
// for HTTP, PERMISSION_DENIED for gRPC, a closed connection for TCP), counted with Linkerd's
// metric names, the first denial logged once, while a meshed pod of the node passes.
// docs/policy.md.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, SERVICE_TOOLS_PATH, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';
import { nftBinary } from '../src/datapath/nft.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const BIN = meshBin();
const ADMIN = '127.0.0.1:4191';
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.yaml');
const children: ChildProcess[] = [];
let node: SimNode;
let api: SimPod;
let web: SimPod;
let outsider: SimPod;
let agentLog = '';
/** The api pod's TCP echo server (port 7000): one line per accepted connection, with the peer it saw. */
let echo: JsonLines;

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms = 15_000) =>
  untilWith(f, ok, what, { ms, intervalMs: 100, context: () => `agent log: ${agentLog.slice(-3000)}` });

function writePods(apiAnnotations: Record<string, string>) {
  const obj = (p: SimPod, ann: Record<string, string>) => {
    const o = p.toPodObject(node.name) as any;
    o.metadata.annotations = { 'mesh-agent.io/inject': 'enabled', ...ann };
    return JSON.stringify(o);
  };
  fs.writeFileSync(podsFile + '.tmp', [obj(api, apiAnnotations), obj(web, {})].join('\n---\n'));
  fs.renameSync(podsFile + '.tmp', podsFile);
}

async function status(): Promise<any> {
  const r = await node.execInNode('curl', ['-sf', `http://${ADMIN}/status`]);
  if (r.code !== 0) throw new Error(`status: curl exited ${r.code}`);
  return JSON.parse(r.stdout);
}

async function metrics() {
  const r = await node.execInNode('curl', ['-sf', `http://${ADMIN}/metrics`]);
  if (r.code !== 0) throw new Error(`metrics: curl exited ${r.code}`);
  return parseExposition(r.stdout);
}

const apiPolicy = (s: any) => s.inbound.pods.find((p: any) => p.name === 'api');

async function httpStatus(from: SimPod, port = 8080, p = '/'): Promise<string> {
  const r = await from.exec('curl', ['-s', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${api.ip}:${port}${p}`], { timeoutMs: 15_000 });
  return r.stdout;
}

/** A TCP connection from `from` to api:7000: the address the server saw, or the client's error. */
async function tcp(from: SimPod): Promise<{ ok: boolean; seen?: string; error?: string }> {
  const before = echo.lines.filter((o) => o.accepted).length;
  const r = await from.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${api.ip}:7000`, '--send', 'hello'], { timeoutMs: 15_000 });
  if (r.code !== 0) return { ok: false, error: r.stderr.trim() };
  await echo.waitFor(() => echo.lines.filter((o) => o.accepted).length > before, 5000, 'the echo server\'s accept line');
  return { ok: true, seen: echo.lines.filter((o) => o.accepted).at(-1).accepted.remoteAddress.replace('::ffff:', '') };
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the inbound e2e tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'systemd' });
  api = await node.addPod({ name: 'api', namespace: 'shop', serviceAccountName: 'api' });
  web = await node.addPod({ name: 'web', namespace: 'shop', serviceAccountName: 'web' });
  outsider = await node.addPod({ name: 'outsider', namespace: 'shop' });
  writePods({});
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', ADMIN, '--proxy-workers', '2', '--drain', '1000']);
  children.push(agent);
  agent.stderr!.on('data', (d) => (agentLog += d));
  const echoProc = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '7000']);
  children.push(echoProc);
  echo = new JsonLines(echoProc);
  const backend = api.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'api', '--http', '8080', '--grpc', '50051'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(backend);
  await echo.waitFor((o) => o.listening, 10_000, 'echo listening');
  await new JsonLines(backend).waitFor((o) => o.listening, 30_000, 'backend listening');
  await until(status, (s) => s.inbound?.capture === 'capturing' && s.inbound.listening && apiPolicy(s) !== undefined, 'inbound capture on with api known', 30_000);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('an unmeshed pod\'s connection to a meshed pod is captured: the pod sees the client\'s own address; counted inbound with tls="no_identity"', async (t) => {
  const before = (await status()).proxy.inboundAccepted;
  const r = await tcp(outsider);
  t.true(r.ok, r.error);
  t.is(r.seen, outsider.ip, 'the pod sees the real client, not the node (IP_TRANSPARENT upstream)');
  t.is(await httpStatus(outsider), '200');
  const s = await status();
  t.true(s.proxy.inboundAccepted >= before + 2, `captured: ${s.proxy.inboundAccepted - before}`);
  t.deepEqual(s.inbound.failClosed, [], 'all-unauthenticated: nothing fails closed');
  const m = await metrics();
  const inbound = { direction: 'inbound', pod: 'api', tls: 'no_identity', no_tls_reason: 'no_tls_from_remote', client_id: '' };
  t.true(sum(m, 'request_total', { ...inbound, target_addr: `${api.ip}:8080` }) >= 1, 'the request is counted on the server side');
  t.true(sum(m, 'tcp_open_total', { ...inbound, peer: 'src', target_addr: `${api.ip}:7000` }) >= 1, 'the connection too');
  t.true(sum(m, 'inbound_http_authz_allow_total', { pod: 'api', srv_kind: 'default', srv_name: 'all-unauthenticated', authz_name: 'all-unauthenticated', tls: 'no_identity' }) >= 1);
  t.true(sum(m, 'inbound_tcp_authz_allow_total', { pod: 'api', srv_name: 'all-unauthenticated', target_addr: `${api.ip}:7000` }) >= 1);
});

test.serial('a meshed pod of the node is counted once per side, with its identity (no tls label: its connection never leaves the node)', async (t) => {
  t.is(await httpStatus(web), '200');
  const m = await metrics();
  t.true(sum(m, 'request_total', { direction: 'inbound', pod: 'api', tls: '', client_id: 'spiffe://cluster.local/ns/shop/sa/web' }) >= 1);
  t.true(sum(m, 'request_total', { direction: 'outbound', pod: 'web', dst_pod: 'api' }) >= 1);
});

test.serial('a connection made straight to the inbound port (not captured for a meshed pod) is refused, not dialled: no open relay, no loop back into the listener', async (t) => {
  const s0 = await status();
  const listen = s0.inbound.listen as string;
  // From the node itself: the destination is the listener's own address, which the agent's
  // upstream (from the client's address) would reach again, and again.
  const r = await node.execInNode(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', listen, '--send', 'GET / HTTP/1.1\r\nhost: x\r\n\r\n', '--timeout-ms', '5000'], { timeoutMs: 15_000 });
  t.not(r.code, 0, `refused: ${r.stdout} ${r.stderr}`);
  const s = await until(status, (x) => x.proxy.refusedNoRecord > s0.proxy.refusedNoRecord, 'the refusal counted');
  t.is(s.proxy.inboundAccepted, s0.proxy.inboundAccepted + 1, 'accepted once: nothing came back into the listener');
  t.regex(agentLog, /refused a connection to the inbound port that is not for a meshed pod of this node/);
});

test.serial('skip-inbound ports bypass the capture', async (t) => {
  writePods({ 'mesh-agent.io/skip-inbound-ports': '7000' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'api')?.skipInboundPorts === '7000', 'api skipping inbound 7000');
  await until(() => node.execInNode(nftBinary(), ['list', 'set', 'ip', 'mesh-agent', 'skip-inbound']), (r) => r.stdout.includes(`${api.ip} . 7000`), 'the skip-inbound set in the kernel');
  const before = (await status()).proxy.inboundAccepted;
  const r = await tcp(outsider);
  t.true(r.ok, r.error);
  t.is(r.seen, outsider.ip);
  t.is((await status()).proxy.inboundAccepted, before, 'not captured');
  t.is(await httpStatus(outsider), '200');
  t.is((await status()).proxy.inboundAccepted, before + 1, 'another port of the same pod still is');
  writePods({});
  await until(status, (s) => s.pods.find((p: any) => p.name === 'api')?.skipInboundPorts === '', 'the exemption gone');
});

test.serial('all-authenticated: an unmeshed client gets 403 (HTTP), PERMISSION_DENIED (gRPC), a closed connection (TCP), counted and logged once; a meshed pod of the node passes', async (t) => {
  writePods({ 'mesh-agent.io/default-inbound-policy': 'all-authenticated' });
  const s = await until(status, (x) => apiPolicy(x)?.defaultPolicy === 'all-authenticated', 'api all-authenticated');
  t.deepEqual(s.inbound.failClosed, ['shop/api']);
  t.is(apiPolicy(s).defaultFrom, 'pod annotation mesh-agent.io/default-inbound-policy');
  await until(() => node.execInNode(nftBinary(), ['list', 'set', 'ip', 'mesh-agent', 'fail-closed']), (r) => r.stdout.includes(api.ip), 'api in the fail-closed set');
  const accepts = echo.lines.filter((o) => o.accepted).length;
  t.is(await httpStatus(outsider), '403');
  t.is(await httpStatus(outsider, 8080, '/again'), '403');
  const grpcCall = await outsider.exec(process.execPath, [SERVICE_TOOLS_PATH, 'load', '--grpc', `${api.ip}:50051`, '--requests', '1', '--concurrency', '1'], { timeoutMs: 30_000 });
  t.deepEqual(JSON.parse(grpcCall.stdout.trim().split('\n').at(-1)!).done.errors, { 'grpc PERMISSION_DENIED': 1 }, grpcCall.stderr);
  const denied = await tcp(outsider);
  t.false(denied.ok, 'the TCP connection is closed');
  t.is(echo.lines.filter((o) => o.accepted).length, accepts, 'the server never saw a denied client');
  t.is(await httpStatus(web), '200', 'web is a meshed pod of this node: authenticated');
  const viaTcp = await tcp(web);
  t.true(viaTcp.ok, viaTcp.error);
  const m = await metrics();
  const noId = { pod: 'api', srv_name: 'all-authenticated', tls: 'no_identity' };
  t.true(sum(m, 'inbound_http_authz_deny_total', { ...noId, target_addr: `${api.ip}:8080` }) >= 2);
  t.true(sum(m, 'inbound_http_authz_deny_total', { ...noId, target_addr: `${api.ip}:50051` }) >= 1);
  t.true(sum(m, 'inbound_tcp_authz_deny_total', { ...noId, target_addr: `${api.ip}:7000` }) >= 1);
  t.true(sum(m, 'inbound_http_authz_allow_total', { pod: 'api', srv_name: 'all-authenticated', authz_name: 'all-authenticated', tls: '', client_id: 'spiffe://cluster.local/ns/shop/sa/web' }) >= 1);
  t.true(sum(m, 'response_total', { direction: 'inbound', pod: 'api', status_code: '403', tls: 'no_identity' }) >= 2, 'the 403s are responses of the server side');
  const said = agentLog.match(new RegExp(`inbound policy denied a client without mesh identity \\(${outsider.ip.replace(/\./g, '\\.')}\\) to pod shop/api port 8080`, 'g')) ?? [];
  t.is(said.length, 1, 'the first denial per client and server is logged, once');
});

test.serial('a default inbound policy that does not parse keeps the last good one, and says so', async (t) => {
  writePods({ 'mesh-agent.io/default-inbound-policy': 'allow-all' });
  const s = await until(status, (x) => (x.pods.find((p: any) => p.name === 'api')?.annotationErrors ?? []).length > 0, 'the bad annotation reported');
  t.regex(s.pods.find((p: any) => p.name === 'api').annotationErrors[0], /mesh-agent.io\/default-inbound-policy on the pod: "allow-all" is not a policy/);
  t.is(apiPolicy(s).defaultPolicy, 'all-authenticated', 'never a silent allow-all');
  t.is(await httpStatus(outsider), '403');
  const cli = await node.execInNode(process.execPath, [BIN, 'status', '--admin', ADMIN], { timeoutMs: 15_000 });
  t.is(cli.code, 1, 'status says degraded');
  t.regex(cli.stdout, /invalid annotation mesh-agent.io\/default-inbound-policy/);
  writePods({});
  await until(status, (x) => apiPolicy(x)?.defaultPolicy === 'all-unauthenticated', 'back to the default');
  t.is(await httpStatus(outsider), '200');
});
