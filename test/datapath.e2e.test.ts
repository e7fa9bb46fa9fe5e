// The kernel datapath on a simulated node, as root with real BPF: connect() redirection,
// original destination, getpeername, skip ports, unmeshed and UDP traffic, record cleanup,
// fail-open after SIGKILL, and no open relay. The proxy here is a plain TCP forwarder
// (test/fixtures/datapath-agent.ts); the real proxy has its own tests.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { execFileSync, spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines, JsonRpc } from './helpers/procs.ts';
import { until } from './helpers/until.ts';
import { fireAndForgetMessages, fireAndForgetWhileStopped } from './helpers/fire-and-forget.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const AGENT = path.join(here, 'fixtures/datapath-agent.ts');
const PROXY_PORT = 15001;

let node: SimNode;
let client: SimPod; // meshed
let plain: SimPod; // not meshed
let server: SimPod; // not meshed, runs the servers
let agent: JsonRpc;
let agentProc: ChildProcess;
let clientKey: string;
let serverLog: JsonLines;
const children: ChildProcess[] = [];

function startServer(pod: SimPod, args: string[]): Promise<JsonLines> {
  const p = pod.spawn(process.execPath, [TOOLS_PATH, ...args]);
  children.push(p);
  const io = new JsonLines(p);
  return io.waitFor((o) => o.listening !== undefined, 10_000, `${args[0]} listening`).then(() => io);
}

async function tool(pod: SimPod, args: string[]): Promise<any[]> {
  const r = await pod.exec(process.execPath, [TOOLS_PATH, ...args], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')} in ${pod.name} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

const acceptedBy = (io: JsonLines) => io.lines.filter((o) => o.accepted).map((o) => o.accepted);

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the datapath tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  client = await node.addPod({ name: 'client', qos: 'Burstable' });
  plain = await node.addPod({ name: 'plain', qos: 'BestEffort' });
  server = await node.addPod({ name: 'server', qos: 'Burstable' });
  agentProc = node.spawnInNode(process.execPath, [AGENT, JSON.stringify({ cgroupRoot: node.cgroupRoot, proxyIp: node.nodeIp, proxyPort: PROXY_PORT })]);
  children.push(agentProc);
  agent = new JsonRpc(agentProc);
  await agent.io.waitFor((o) => o.ready || o.error, 15_000, 'agent ready').then((o) => {
    if (o.error) throw new Error(o.error);
  });
  clientKey = await agent.call('setPod', { cgroupPath: client.podCgroup, ip: client.ip });
  serverLog = await startServer(server, ['tcp-echo', '--port', '8080']);
  await startServer(server, ['tcp-echo', '--port', '3306']);
  await startServer(server, ['udp-echo', '--port', '9000']);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
});

test.serial('a meshed pod connects through the proxy, which sees the original destination; getpeername shows the original peer', async (t) => {
  const before = acceptedBy(serverLog).length;
  const out = await tool(client, ['tcp-client', '--connect', `${server.ip}:8080`, '--send', 'hello']);
  const connected = out.find((o) => o.connected).connected;
  t.is(connected.remoteAddress, server.ip, 'the app sees its original peer');
  t.is(connected.remotePort, 8080);
  t.is(out.find((o) => o.reply).reply, 'hello');
  const { accepted } = await agent.call('accepted');
  const rec = accepted.find((a: any) => a.remotePort === connected.localPort);
  t.truthy(rec, 'the proxy accepted the connection');
  const orig = { ip: server.ip, port: 8080, podKey: clientKey };
  // The proxy's lookup by the socket's fd reads the same peer and record (datapath/socket-lookup.ts).
  t.deepEqual(rec, { remote: client.ip, remotePort: connected.localPort, orig, bySocket: { sourceIp: client.ip, sourcePort: connected.localPort, rec: orig } });
  // The server was reached by the proxy (from the node), not by the pod directly.
  const seen = acceptedBy(serverLog).slice(before);
  t.is(seen.length, 1);
  t.is(seen[0].remoteAddress.replace('::ffff:', ''), node.nodeIp);
  const c = await agent.call('counters');
  t.true(BigInt(c.redirected) >= 1n && BigInt(c.getpeername) >= 1n && BigInt(c.established) >= 1n);
});

test.serial('skip-outbound ports (the pod\'s and the global list) and skip-inbound ports connect directly', async (t) => {
  await agent.call('setPod', { cgroupPath: client.podCgroup, ip: client.ip, skipOutbound: [[3306, 3306]] });
  const before = (await agent.call('accepted')).accepted.length;
  const direct = async (port: number) => {
    const out = await tool(client, ['tcp-client', '--connect', `${server.ip}:${port}`, '--send', `direct-${port}`]);
    t.is(out.find((o) => o.reply).reply, `direct-${port}`);
  };
  const serverSaw = () => acceptedBy(serverLog).at(-1).remoteAddress.replace('::ffff:', '');

  await direct(3306);
  await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: PROXY_PORT, skipOutbound: [[8000, 8099]] });
  await direct(8080);
  t.is(serverSaw(), client.ip, 'global skip list: the server saw the pod itself');
  await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: PROXY_PORT, skipOutbound: [] });
  await agent.call('setSkipInbound', { ip: server.ip, ranges: [[8080, 8080]] });
  await direct(8080);
  t.is(serverSaw(), client.ip, 'destination skip-inbound: the server saw the pod itself');
  await agent.call('setSkipInbound', { ip: server.ip, ranges: [] });

  t.is((await agent.call('accepted')).accepted.length, before, 'the proxy saw none of them');
  const c = await agent.call('counters');
  t.true(BigInt(c.skippedPort) >= 2n && BigInt(c.skippedInbound) >= 1n);
  // And with the skips gone, the same port is redirected again.
  await direct(8080);
  t.is((await agent.call('accepted')).accepted.length, before + 1);
  await agent.call('setPod', { cgroupPath: client.podCgroup, ip: client.ip });
});

test.serial('an unmeshed pod and UDP traffic are untouched', async (t) => {
  const before = (await agent.call('accepted')).accepted.length;
  const unmeshedBefore = BigInt((await agent.call('counters')).unmeshed);
  const out = await tool(plain, ['tcp-client', '--connect', `${server.ip}:8080`, '--send', 'plain']);
  t.is(out.find((o) => o.reply).reply, 'plain');
  t.is(acceptedBy(serverLog).at(-1).remoteAddress.replace('::ffff:', ''), plain.ip);
  const udp = await tool(client, ['udp-client', '--connect', `${server.ip}:9000`, '--send', 'datagram']);
  t.is(udp.find((o) => o.connected).connected.remoteAddress, server.ip);
  t.is(udp.find((o) => o.reply).reply, 'datagram');
  t.is((await agent.call('accepted')).accepted.length, before);
  t.true(BigInt((await agent.call('counters')).unmeshed) > unmeshedBefore);
});

test.serial('IPv4-mapped IPv6 connects are redirected too; native IPv6 passes', async (t) => {
  const script = `
    const net = require('node:net');
    const s = net.connect({ host: '::ffff:${server.ip}', port: 8080 }, () => {
      const peer = { remoteAddress: s.remoteAddress, remotePort: s.remotePort, localPort: s.localPort };
      s.write('v6'); s.once('data', (d) => { console.log(JSON.stringify({ peer, reply: String(d) })); s.end();
        // native IPv6 over the pod's own ::1
        const srv = net.createServer((c) => c.end('native')).listen(8181, '::1', () => {
          const n = net.connect({ host: '::1', port: 8181 }); n.on('data', (x) => { console.log(JSON.stringify({ native: String(x), remote: n.remoteAddress })); srv.close(); });
        });
      });
    });`;
  const before = BigInt((await agent.call('counters')).redirected);
  const r = await client.exec(process.execPath, ['-e', script], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  const [first, second] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.is(first.peer.remoteAddress, `::ffff:${server.ip}`);
  t.is(first.reply, 'v6');
  const { accepted } = await agent.call('accepted');
  t.deepEqual(accepted.find((a: any) => a.remotePort === first.peer.localPort)?.orig.ip, server.ip);
  t.deepEqual(second, { native: 'native', remote: '::1' });
  t.is(BigInt((await agent.call('counters')).redirected), before + 1n);
});

test.serial('a connection to the proxy without a datapath record is refused (no open relay)', async (t) => {
  const refusedBefore = (await agent.call('accepted')).refused;
  const r = await plain.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${node.nodeIp}:${PROXY_PORT}`, '--send', 'relay-me', '--timeout-ms', '5000'], { timeoutMs: 20_000 });
  t.not(r.code, 0, 'the client got no echo through the proxy');
  t.notRegex(r.stdout, /"reply"/);
  const after = await agent.call('accepted');
  t.is(after.refused, refusedBefore + 1);
  // By the socket: the peer, and no record.
  const s = after.refusedBySocket.at(-1);
  t.is(s.sourceIp, plain.ip);
  t.true(s.sourcePort > 0);
  t.is(s.rec, null);
});

test.serial('1,000 connections opened and closed leave no records behind', async (t) => {
  const closedBefore = BigInt((await agent.call('counters')).closed);
  const out = await tool(client, ['tcp-many', '--connect', `${server.ip}:8080`, '--count', '1000', '--timeout-ms', '120000']);
  t.deepEqual(out.at(-1), { ok: 1000 });
  let used: Record<string, number> = {};
  for (let i = 0; i < 50; i++) {
    const d = await agent.call('describe');
    used = Object.fromEntries(d.maps.map((m: any) => [m.name, m.used]));
    if (used.mesh_orig_by_cookie === 0 && used.mesh_orig_by_tuple === 0 && used.mesh_orig_pending === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.is(used.mesh_orig_by_cookie, 0);
  t.is(used.mesh_orig_by_tuple, 0);
  t.is(used.mesh_orig_pending, 0, 'each connection\'s pending entry went at its take');
  t.true(BigInt((await agent.call('counters')).closed) - closedBefore >= 1000n);
});

test.serial('2,500 open connections are each counted in the maps\' usage, across the batches status reads them in', async (t) => {
  // More records than one batch of the addon's count (1,024), so a lost or repeated batch shows.
  const holder = client.spawn(process.execPath, [TOOLS_PATH, 'tcp-many', '--connect', `${server.ip}:8080`, '--count', '2500', '--hold', '--timeout-ms', '120000']);
  children.push(holder);
  const io = new JsonLines(holder);
  try {
    await io.waitFor((o) => o.open !== undefined, 120_000, '2,500 connections open');
    const d = await agent.call('describe');
    const used = Object.fromEntries(d.maps.map((m: any) => [m.name, m.used]));
    t.is(used.mesh_orig_by_cookie, 2500);
    t.is(used.mesh_orig_by_tuple, 2500);
  } finally {
    holder.stdin!.end();
    await io.waitFor((o) => o.ok !== undefined, 60_000, 'the 2,500 connections closed').catch(() => holder.kill('SIGKILL'));
  }
});

test.serial('a proxy on a worker thread looks records up through a MapView on the maps the main thread loaded', async (t) => {
  const workerPort = PROXY_PORT + 10;
  await agent.call('startWorkerProxy', { port: workerPort });
  const lookups = BigInt((await agent.call('counters')).lookups);
  await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: workerPort, skipOutbound: [] });
  try {
    const out = await tool(client, ['tcp-client', '--connect', `${server.ip}:8080`, '--send', 'via worker']);
    t.is(out.find((o) => o.reply)?.reply, 'via worker');
    const connected = out.find((o) => o.connected).connected;
    // The worker posts what it read to the main thread: wait for that message, not for the reply.
    const seen = await until(() => agent.call('viaWorker'), (v: any[]) => v.length > 0, 'the worker proxy to report the connection');
    const orig = { ip: server.ip, port: 8080, podKey: clientKey };
    t.deepEqual(seen, [{ remote: client.ip, remotePort: connected.localPort, orig, bySocket: { sourceIp: client.ip, sourcePort: connected.localPort, rec: orig } }]);
    // Both of the worker's lookups (by address, by socket) are counted with the others.
    t.is(BigInt((await agent.call('counters')).lookups), lookups + 2n, 'the worker\'s lookups are counted with the others');
  } finally {
    await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: PROXY_PORT, skipOutbound: [] });
  }
});

test.serial('on a dual-stack listener the lookup by socket reads an IPv4 client\'s IPv4-mapped peer as IPv4 and finds its record; a native IPv6 peer is left to Node', async (t) => {
  const port = PROXY_PORT + 20;
  await agent.call('startWorkerProxy', { port, ip: '::' });
  await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: port, skipOutbound: [] });
  try {
    const out = await tool(client, ['tcp-client', '--connect', `${server.ip}:8080`, '--send', 'mapped']);
    t.is(out.find((o) => o.reply)?.reply, 'mapped');
    const connected = out.find((o) => o.connected).connected;
    const orig = { ip: server.ip, port: 8080, podKey: clientKey };
    // The listener is an IPv6 socket, so getpeername gave the addon an IPv4-mapped AF_INET6 peer.
    const seen = await until(() => agent.call('viaWorker'), (v: any[]) => v.some((o) => o.remotePort === connected.localPort), 'the worker proxy to report the connection');
    t.deepEqual(seen.at(-1), { remote: client.ip, remotePort: connected.localPort, orig, bySocket: { sourceIp: client.ip, sourcePort: connected.localPort, rec: orig } });
    await agent.call('dialLoopback6', { port });
    const native = await until(() => agent.call('viaWorker'), (v: any[]) => v.length > seen.length, 'the worker proxy to see the IPv6 connection');
    t.like(native.at(-1), { remote: '::1', orig: null, bySocket: null });
  } finally {
    await agent.call('setGlobal', { proxyIp: node.nodeIp, proxyPort: PROXY_PORT, skipOutbound: [] });
  }
});

test.serial('a client that writes and closes at once (fire and forget) still has its bytes delivered through the proxy', async (t) => {
  // The pod's kernel sends the FIN with the data and the proxy's kernel acknowledges both, whether
  // or not the proxy has accepted the connection and looked its record up yet.
  const sink = server.spawn(process.execPath, ['-e', `
    require('node:net').createServer((c) => { let d = ''; c.on('data', (x) => (d += x)); c.on('end', () => console.log(JSON.stringify({ got: d }))); c.on('error', () => {}); })
      .listen(8090, () => console.log(JSON.stringify({ listening: 8090 })));`]);
  children.push(sink);
  const got = new JsonLines(sink);
  await got.waitFor((o) => o.listening !== undefined, 10_000, 'sink listening');
  const refusedBefore = (await agent.call('accepted')).refused;
  const N = 20;
  const r = await fireAndForgetWhileStopped(client, agentProc, server.ip, 8090, N);
  t.is(r.code, 0, r.stderr);
  const messages = () => got.lines.filter((o) => o.got !== undefined).map((o) => o.got as string);
  await until(messages, (m) => m.length === N, 'every message at the sink', { ms: 5000 }).catch(() => {});
  t.is((await agent.call('accepted')).refused, refusedBefore, 'the proxy found a record for every connection');
  t.deepEqual(messages().sort(), fireAndForgetMessages(N));
  // The records the client's close left for the proxy were deleted by its lookups.
  await until(async () => Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])),
    (u: any) => u.mesh_orig_by_tuple === 0 && u.mesh_orig_by_cookie === 0, 'the connection records to be deleted');
  t.pass();
});

test.serial('a client that closes first while the proxy is taking its record (between its read and its claim) leaves no record behind', async (t) => {
  // The proxy's take is a read of the record, then its claim. strace holds each of the proxy's
  // bpf() calls at entry (2 s): the client closes once the read has returned, so its close lands
  // before the claim. Lost, the record outlives the connection until the LRU evicts it.
  const sink = server.spawn(process.execPath, ['-e', `
    require('node:net').createServer((c) => { let d = ''; c.on('data', (x) => (d += x)); c.on('end', () => console.log(JSON.stringify({ got: d }))); c.on('error', () => {}); })
      .listen(8093, () => console.log(JSON.stringify({ listening: 8093 })));`]);
  children.push(sink);
  const got = new JsonLines(sink);
  await got.waitFor((o) => o.listening !== undefined, 10_000, 'sink listening');
  const strace = spawn('strace', ['-p', String(agentProc.pid), '-e', 'trace=bpf', '-e', 'inject=bpf:delay_enter=2s'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(strace);
  let trace = '';
  strace.stderr!.on('data', (d) => (trace += d));
  const traced = (re: RegExp, what: string) => new Promise<void>((resolve, reject) => {
    const check = () => re.test(trace) && (strace.stderr!.off('data', check), resolve());
    strace.stderr!.on('data', check);
    strace.once('exit', (code) => reject(new Error(`strace exited (${code}) before ${what}: ${trace.slice(-500)}`)));
    check();
  });
  try {
    await traced(/attached/, 'attaching to the agent');
    const closer = client.spawn('python3', ['-u', '-c', `
import socket, struct, sys, time
s = socket.create_connection(('${server.ip}', 8093), timeout=10)
s.sendall(b'taken-while-closing')
s.shutdown(socket.SHUT_WR)
while struct.unpack('B', s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0] != 5:
    time.sleep(0.001)
print('{"finAcked": true}')
sys.stdin.readline()
s.close()
print('{"closed": true}')`]);
    children.push(closer);
    const io = new JsonLines(closer);
    await io.waitFor((o) => o.finAcked, 10_000, 'the client\'s FIN acknowledged');
    // The read of the record has returned (the bpf() lookup's result is printed): close now.
    await traced(/bpf\(BPF_MAP_LOOKUP_ELEM[^\n]*\) = 0 /, 'the proxy\'s read of the record');
    closer.stdin!.end('\n');
    await io.waitFor((o) => o.closed, 10_000, 'the client closed');
    await got.waitFor((o) => o.got !== undefined, 30_000, 'the bytes at the sink');
  } finally {
    strace.kill('SIGTERM');
    await exited(strace);
  }
  t.deepEqual(got.lines.filter((o) => o.got !== undefined), [{ got: 'taken-while-closing' }]);
  const used = await until(async () => Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])),
    (u: any) => u.mesh_orig_by_tuple === 0 && u.mesh_orig_by_cookie === 0 && u.mesh_orig_pending === 0, 'the connection records to be deleted', { ms: 5000 }).catch(async () =>
    Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])));
  t.is(used.mesh_orig_by_tuple, 0, 'the record of the closed connection is gone');
  t.is(used.mesh_orig_pending, 0);
});

test.serial('a connection the proxy resets without looking its record up (over its cap) leaves no record behind', async (t) => {
  await agent.call('resetUnlooked', { count: 3 });
  const r = await client.exec(process.execPath, ['-e', `
    const net = require('node:net');
    let left = 3;
    for (let i = 0; i < 3; i++) {
      const s = net.connect(8080, '${server.ip}');
      s.on('error', () => {});
      s.on('close', () => { if (--left === 0) console.log('closed'); });
    }`], { timeoutMs: 20_000 });
  t.is(r.stdout.trim(), 'closed', r.stderr);
  const used = await until(async () => Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])),
    (u: any) => u.mesh_orig_by_cookie === 0 && u.mesh_orig_by_tuple === 0, 'the connection records to be deleted', { ms: 5000 }).catch((e) => e.message);
  t.is(used.mesh_orig_by_tuple ?? used, 0);
});

test.serial('a connect to 0.0.0.0 (the kernel\'s "this host": the pod itself) is not redirected to the node\'s loopback', async (t) => {
  // A service only on the node's loopback, as kubelet's healthz or an admin port is.
  const nodeOnly = node.spawnInNode(process.execPath, ['-e', `
    require('node:net').createServer((c) => { c.on('error', () => {}); c.end('node-loopback'); })
      .listen(8091, '127.0.0.1', () => console.log(JSON.stringify({ listening: 8091 })));`]);
  children.push(nodeOnly);
  await new JsonLines(nodeOnly).waitFor((o) => o.listening !== undefined, 10_000, 'node loopback service listening');
  await startServer(client, ['tcp-banner', '--port', '8091', '--banner', 'own-pod']);
  const before = (await agent.call('accepted')).accepted.length;
  const r = await client.exec(process.execPath, ['-e', `
    const s = require('node:net').connect(8091, '0.0.0.0');
    s.once('data', (d) => { console.log(String(d)); s.destroy(); });
    s.on('error', (e) => console.log(e.code));`], { timeoutMs: 20_000 });
  t.is(r.stdout.trim(), 'own-pod', 'the pod reached its own listener, as without the mesh');
  t.is((await agent.call('accepted')).accepted.length, before, 'the proxy saw nothing');
});

test.serial('a connect to a link-local address (169.254/16: the pod\'s own link, a metadata service) is not redirected', async (t) => {
  // Through the node's proxy it would leave with the node's address and hop count, where a
  // metadata service trusts them (an IMDSv2 hop limit of 1, GKE's metadata concealment).
  const r0 = await node.execInNode('ip', ['addr', 'add', '169.254.169.254/32', 'dev', 'lo']);
  t.is(r0.code, 0, r0.stderr);
  const metadata = node.spawnInNode(process.execPath, ['-e', `
    require('node:net').createServer((c) => { c.on('error', () => {}); c.end(c.remoteAddress); })
      .listen(8092, '169.254.169.254', () => console.log(JSON.stringify({ listening: 8092 })));`]);
  children.push(metadata);
  try {
    await new JsonLines(metadata).waitFor((o) => o.listening !== undefined, 10_000, 'metadata service listening');
    const before = (await agent.call('accepted')).accepted.length;
    const r = await client.exec(process.execPath, ['-e', `
      const s = require('node:net').connect(8092, '169.254.169.254');
      let d = ''; s.on('data', (x) => (d += x)); s.on('end', () => console.log(d));
      s.on('error', (e) => console.log(e.code));`], { timeoutMs: 20_000 });
    t.is(r.stdout.trim(), client.ip, 'the service saw the pod itself');
    t.is((await agent.call('accepted')).accepted.length, before, 'the proxy saw nothing');
  } finally {
    metadata.kill('SIGKILL');
    await node.execInNode('ip', ['addr', 'del', '169.254.169.254/32', 'dev', 'lo']);
  }
});

test.serial('a Multipath TCP connect (IPPROTO_MPTCP) is redirected like TCP, and getpeername gives the app its original peer', async (t) => {
  // The kernel runs connect4 on the first subflow (a TCP socket), getpeername on the MPTCP socket.
  const before = (await agent.call('accepted')).accepted.length;
  const r = await client.exec('python3', ['-c', `
import json, socket
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
except OSError:
    print(json.dumps({'unsupported': True}))
    raise SystemExit(0)
s.settimeout(10)
s.connect(('${server.ip}', 8080))
s.sendall(b'mptcp')
print(json.dumps({'reply': s.recv(100).decode(), 'peer': s.getpeername()[0], 'localPort': s.getsockname()[1]}))
s.close()`], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  if (got.unsupported) return t.pass('this kernel has no Multipath TCP (CONFIG_MPTCP, net.mptcp.enabled)');
  t.is(got.reply, 'mptcp');
  t.is(got.peer, server.ip);
  const { accepted } = await agent.call('accepted');
  t.is(accepted.length, before + 1, 'the proxy took it');
  t.is(acceptedBy(serverLog).at(-1).remoteAddress.replace('::ffff:', ''), node.nodeIp, 'the server was reached by the proxy');
});

test.serial('connects that fail before their SYN (no local port left) leave no records behind', async (t) => {
  // Two local ports, held by connections to the proxy (or by an earlier test's TIME_WAIT there):
  // every further connect() is redirected, then fails in the kernel with EADDRNOTAVAIL before
  // the TCP handshake starts.
  const range = (await client.exec('sysctl', ['-n', 'net.ipv4.ip_local_port_range'])).stdout.trim().split(/\s+/).join(' ');
  await client.exec('sysctl', ['-w', 'net.ipv4.ip_local_port_range=40000 40001']);
  try {
    const r = await client.exec(process.execPath, ['-e', `
      const net = require('node:net');
      const held = [];
      let codes = {};
      const open = () => new Promise((resolve) => {
        const s = net.connect(8080, '${server.ip}');
        s.on('connect', () => { held.push(s); resolve(true); });
        s.on('error', (e) => { codes[e.code] = (codes[e.code] ?? 0) + 1; resolve(false); });
      });
      (async () => {
        for (let i = 0; i < 10 && (await open()); i++);
        codes = {};
        await Promise.all(Array.from({ length: 50 }, open));
        console.log(JSON.stringify(codes));
        for (const s of held) s.destroy();
      })();`], { timeoutMs: 30_000 });
    t.is(r.code, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout), { EADDRNOTAVAIL: 50 });
  } finally {
    await client.exec('sysctl', ['-w', `net.ipv4.ip_local_port_range=${range}`]);
  }
  const used = await until(async () => Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])),
    (u: any) => u.mesh_orig_by_cookie === 0 && u.mesh_orig_by_tuple === 0, 'the connection records to be deleted', { ms: 5000 }).catch((e) => e.message);
  t.is(used.mesh_orig_by_cookie ?? used, 0);
});

test.serial('a socket whose redirected connect() failed before its SYN, connected again where it is not redirected, shows its real peer and leaves no record', async (t) => {
  // The first connect() is redirected, then fails in the kernel (no route to the proxy from this
  // pod for now) with its record written; the same socket then connects to a skip-outbound port,
  // directly. The first destination's record must not follow the socket there: getpeername
  // would report it, and sockops would copy it under this direct connection's local port.
  await agent.call('setPod', { cgroupPath: client.podCgroup, ip: client.ip, skipOutbound: [[3306, 3306]] });
  const route = await client.exec('ip', ['route', 'add', 'unreachable', `${node.nodeIp}/32`]);
  t.is(route.code, 0, route.stderr);
  let r;
  try {
    r = await client.exec('python3', ['-c', `
import errno, json, socket
s = socket.socket()
s.settimeout(10)
try:
    s.connect(('${server.ip}', 8080))
    first = 'connected'
except OSError as e:
    first = errno.errorcode.get(e.errno, str(e.errno))
s.connect(('${server.ip}', 3306))
s.sendall(b'second')
reply = s.recv(100).decode()
print(json.dumps({'first': first, 'peer': list(s.getpeername()), 'reply': reply}))
s.close()`], { timeoutMs: 20_000 });
  } finally {
    await client.exec('ip', ['route', 'del', 'unreachable', `${node.nodeIp}/32`]);
    await agent.call('setPod', { cgroupPath: client.podCgroup, ip: client.ip });
  }
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { first: 'EHOSTUNREACH', peer: [server.ip, 3306], reply: 'second' });
  const used = await until(async () => Object.fromEntries((await agent.call('describe')).maps.map((m: any) => [m.name, m.used])),
    (u: any) => u.mesh_orig_by_cookie === 0 && u.mesh_orig_by_tuple === 0, 'the connection records to be deleted', { ms: 5000 }).catch((e) => e.message);
  t.is(used.mesh_orig_by_cookie ?? used, 0);
});

test.serial('after SIGKILL of the agent, the programs are detached and pods connect directly', async (t) => {
  const attached = () => execFileSync('bpftool', ['cgroup', 'show', node.cgroupRoot], { encoding: 'utf8' });
  t.regex(attached(), /connect4/);
  agentProc.kill('SIGKILL');
  await exited(agentProc);
  // Link release after the fd closes is asynchronous in the kernel; give it a moment.
  for (let i = 0; i < 50 && /connect4/.test(attached()); i++) await new Promise((r) => setTimeout(r, 100));
  t.notRegex(attached(), /connect4|sockops|getpeername|sock_release/);
  const out = await tool(client, ['tcp-client', '--connect', `${server.ip}:8080`, '--send', 'after-kill']);
  t.is(out.find((o) => o.reply).reply, 'after-kill');
  t.is(acceptedBy(serverLog).at(-1).remoteAddress.replace('::ffff:', ''), client.ip, 'the server saw the pod directly');
});
