// Real clients against real servers through the whole mesh on a simulated node: a meshed
// pod's grpc-js, ws, curl through a CONNECT proxy, mariadb, swaks and redis-cli reach servers
// in other (unmeshed) pods through the kernel datapath and the agent's proxy. Each case checks
// the proxy's own counters for how the connection was decided, and the server-first cases
// (MySQL, SMTP) that the race, not the detection deadline, decided them.
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { JsonLines } from './helpers/procs.ts';
import { waitAgentReady } from './helpers/agent-admin.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = meshBin();
const FIXTURES = path.join(HERE, 'fixtures');
/**
 * Long on purpose. What decided a connection (the greeting or this deadline) is read from the
 * proxy's counters, not from how long the client process took: that time includes process
 * start, which a loaded machine stretches past any bound.
 */
const DETECT_TIMEOUT_MS = 5000;

let node: SimNode;
let client: SimPod;
let apps: SimPod;
let tunnel: SimPod;
let db: SimPod;
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
let agentLog = '';
let wsServer: JsonLines;
let connectProxy: JsonLines;
let smtpServer: JsonLines;

function spawnIn(pod: SimPod, cmd: string, args: string[]): ChildProcess {
  const c = pod.spawn(cmd, args);
  children.push(c);
  return c;
}

/** Waits until something accepts on 127.0.0.1:port inside the pod (bash's /dev/tcp, no client protocol spoken). */
async function waitPort(pod: SimPod, port: number, what: string, log: () => string): Promise<void> {
  // A hang detector: servers start in seconds, several at once on a loaded machine.
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const r = await pod.exec('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]);
    if (r.code === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} not listening on ${port} after 60 s: ${log().slice(-2000)}`);
}

async function startMariadb(): Promise<void> {
  const datadir = path.join(tmp, 'mysql');
  const install = await db.exec('mariadb-install-db', ['--no-defaults', '--auth-root-authentication-method=normal', `--datadir=${datadir}`, '--user=root', '--skip-test-db'], { timeoutMs: 30_000 });
  if (install.code !== 0) throw new Error(`mariadb-install-db failed (${install.code}): ${install.stderr.slice(-2000)}${install.stdout.slice(-1000)}`);
  let log = '';
  // 3306 is on the default opaque-port list; the extra port 13306 is not, so there the
  // proxy must find out by itself that MySQL speaks first.
  const d = spawnIn(db, '/usr/sbin/mariadbd', ['--no-defaults', '--user=root', `--datadir=${datadir}`, `--socket=${path.join(tmp, 'mysql.sock')}`,
    `--pid-file=${path.join(tmp, 'mysql.pid')}`, '--port=3306', '--extra-port=13306', '--bind-address=0.0.0.0', '--skip-grant-tables',
    '--skip-name-resolve', '--innodb-buffer-pool-size=16M']);
  d.stderr!.on('data', (b) => (log += b));
  await waitPort(db, 3306, 'mariadbd', () => log);
  await waitPort(db, 13306, 'mariadbd extra port', () => log);
}

async function startRedis(port: number): Promise<void> {
  const dir = path.join(tmp, `redis-${port}`);
  fs.mkdirSync(dir);
  let log = '';
  const r = spawnIn(db, 'redis-server', ['--port', String(port), '--bind', '0.0.0.0', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', dir]);
  r.stdout!.on('data', (b) => (log += b));
  await waitPort(db, port, 'redis-server', () => log);
}

async function startSmtp(): Promise<void> {
  // Python 3.11's smtpd (Debian 12's python3): a real SMTP server that prints each message.
  smtpServer = new JsonLines(spawnIn(db, '/usr/bin/python3', ['-u', '-W', 'ignore::DeprecationWarning', '-m', 'smtpd', '-n', '-c', 'DebuggingServer', '0.0.0.0:2525']));
  await waitPort(db, 2525, 'python3 -m smtpd', () => smtpServer.stderr);
}

async function startAppServers(): Promise<void> {
  const grpc = new JsonLines(spawnIn(apps, process.execPath, [path.join(FIXTURES, 'grpc-echo.ts'), 'server', '50051']));
  wsServer = new JsonLines(spawnIn(apps, process.execPath, [path.join(FIXTURES, 'ws-echo.ts'), 'server', '8080']));
  connectProxy = new JsonLines(spawnIn(tunnel, process.execPath, [path.join(FIXTURES, 'connect-proxy.ts'), '3128']));
  await Promise.all([
    grpc.waitFor((o) => o.listening, 15_000, 'grpc server listening'),
    wsServer.waitFor((o) => o.listening, 15_000, 'ws server listening'),
    connectProxy.waitFor((o) => o.listening, 15_000, 'connect proxy listening'),
  ]);
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('needs root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  client = await node.addPod({ name: 'client', namespace: 'app', annotations: { 'mesh-agent.io/inject': 'enabled' } });
  // No annotations on the servers: the default opaque-port list and detection decide.
  apps = await node.addPod({ name: 'apps', namespace: 'app' });
  tunnel = await node.addPod({ name: 'tunnel', namespace: 'app' });
  db = await node.addPod({ name: 'db', namespace: 'app' });
  const podsFile = path.join(tmp, 'pods.json');
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
    '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--detect-timeout', String(DETECT_TIMEOUT_MS)]);
  children.push(agent);
  agent.stderr!.on('data', (d) => (agentLog += d));
  await Promise.all([startAppServers(), startMariadb(), startRedis(6379), startRedis(16379), startSmtp()]);
  await waitAgentReady(node, () => agentLog);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface ProxyCounts { byProtocol: Record<string, number>; byDetection: Record<string, number>; redirected: number }

async function counts(): Promise<ProxyCounts> {
  const r = await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status']);
  if (r.code !== 0) throw new Error(`agent /status failed (${r.code}): ${r.stderr}; agent log: ${agentLog.slice(-2000)}`);
  const s = JSON.parse(r.stdout);
  return { byProtocol: s.proxy.byProtocol, byDetection: s.proxy.byDetection, redirected: Number(s.datapath.counters.redirected) };
}

/** What changed between two snapshots of a count map (only the keys that moved). */
function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) d[k] = v - (before[k] ?? 0);
  return d;
}

/** Runs a client in the client pod and returns the counter changes it caused and how long it took. */
async function measured(t: ExecutionContext, cmd: string, args: string[], input?: string) {
  const before = await counts();
  const started = performance.now();
  const r = await client.exec(cmd, args, { timeoutMs: 20_000, input });
  const ms = performance.now() - started;
  const after = await counts();
  t.log(`${path.basename(cmd)} took ${Math.round(ms)} ms; decided by ${JSON.stringify(delta(before.byDetection, after.byDetection))}`);
  return { ...r, ms, byProtocol: delta(before.byProtocol, after.byProtocol), byDetection: delta(before.byDetection, after.byDetection), redirected: after.redirected - before.redirected };
}

const viaProxy = () => new RegExp(`(^|[^\\d])${node.nodeIp.replace(/\./g, '\\.')}([^\\d]|$)`);

test.serial('grpc-js: unary, server-streaming and bidi-streaming calls over one h2c connection', async (t) => {
  const r = await measured(t, process.execPath, [path.join(FIXTURES, 'grpc-echo.ts'), 'client', `${apps.ip}:50051`]);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.regex(out.unary.text, /^HELLO from /);
  t.regex(out.unary.text, viaProxy(), 'the server saw the proxy (node IP), not the client pod');
  t.is(out.unary.n, 42);
  t.deepEqual(out.stream.map((m: { n: number }) => m.n), [...Array(50).keys()]);
  t.true(out.stream.every((m: { text: string }) => m.text === 'tick'));
  t.deepEqual(out.bidi, [0, 1, 2, 3, 4].map((n) => ({ text: `re:m${n}`, n: n * 2 })));
  t.deepEqual(r.byProtocol, { http2: 1 }, 'one connection, detected as HTTP/2');
  t.deepEqual(r.byDetection, { http2: 1 });
  t.is(r.redirected, 1);
});

test.serial('ws: upgrade, a greeting, text and binary messages both ways, clean close', async (t) => {
  const r = await measured(t, process.execPath, [path.join(FIXTURES, 'ws-echo.ts'), 'client', `ws://${apps.ip}:8080/chat`]);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.regex(out.texts[0], /^hello /);
  t.regex(out.texts[0], viaProxy(), 'the server saw the proxy (node IP), not the client pod');
  t.deepEqual(out.texts.slice(1), ['echo:m0', 'echo:m1', 'echo:m2', 'echo:m3', 'echo:m4']);
  t.is(out.binaryBytes, 200_000);
  t.true(out.binaryIntact, 'the 200 kB binary frame came back byte for byte');
  t.is(out.closeCode, 1000);
  t.is(out.closeReason, 'done');
  const closed = await wsServer.waitFor((o) => o.closed !== undefined, 20_000, 'the server seeing the close');
  t.deepEqual(closed, { closed: 1000, reason: 'done' }, 'the close frame reached the server: a clean close, not a dropped TCP connection');
  t.deepEqual(r.byProtocol, { http1: 1 }, 'the upgrade was an HTTP/1 request on a detected connection');
  t.is(r.redirected, 1);
});

test.serial('curl -p -x: a CONNECT tunnel through a proxy pod to an HTTP server in another pod', async (t) => {
  const r = await measured(t, 'curl', ['-sS', '--fail-with-body', '-p', '-x', `http://${tunnel.ip}:3128`, `http://${apps.ip}:8080/through`]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `http /through via ::ffff:${tunnel.ip}`, 'the HTTP server was reached from the CONNECT proxy pod');
  const opened = await connectProxy.waitFor((o) => o.connect, 20_000, 'the CONNECT proxy opening a tunnel');
  t.is(opened.connect, `${apps.ip}:8080`);
  t.regex(opened.from, viaProxy(), 'the CONNECT proxy saw the mesh proxy (node IP), not the client pod');
  t.deepEqual(r.byProtocol, { http1: 1 }, 'the CONNECT request was detected; the tunnelled request inside is not a connection of its own');
  t.is(r.redirected, 1, 'only the client pod is meshed: the CONNECT proxy dialled the server directly');
});

const MYSQL = ['--no-defaults', '-u', 'root', '-N', '-B', '--connect-timeout=10'];

test.serial('mariadb on a port outside the opaque list: the server greeting decides at once (server-first)', async (t) => {
  const r = await measured(t, 'mariadb', [...MYSQL, '-h', db.ip, '-P', '13306', '-e', 'select 40 + 2, @@version like "%MariaDB%"']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '42\t1\n');
  t.deepEqual(r.byDetection, { 'server-first': 1 }, 'the greeting was the verdict; nothing waited for the deadline');
  t.is(r.redirected, 1);
});

test.serial('mariadb on 3306: the default opaque-port list forwards it without detection', async (t) => {
  const r = await measured(t, 'mariadb', [...MYSQL, '-h', db.ip, '-P', '3306', '-e', 'create database mesh; create table mesh.t (v text); insert into mesh.t values ("through the mesh"); select v from mesh.t']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'through the mesh\n');
  t.deepEqual(r.byDetection, { 'opaque-port': 1 });
});

test.serial('swaks to an SMTP server on a port outside the opaque list: banner first, message accepted with 250', async (t) => {
  const r = await measured(t, 'swaks', ['--server', db.ip, '--port', '2525', '--from', 'client@app.test', '--to', 'server@db.test', '--header', 'Subject: mesh e2e', '--body', 'body-through-the-mesh']);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /^<- {2}220 /m, 'the banner reached swaks');
  t.regex(r.stdout, /^ -> \.\r?\n<- {2}250 /m, 'the message was accepted with a 250');
  t.regex(r.stdout, /^<- {2}221 /m, 'QUIT answered');
  await smtpServer.waitFor((o) => typeof o.text === 'string' && o.text.includes('body-through-the-mesh'), 20_000, 'the server printing the message body');
  t.deepEqual(r.byDetection, { 'server-first': 1 }, 'the banner was the verdict; nothing waited for the deadline');
  t.is(r.redirected, 1);
});

for (const port of [6379, 16379]) {
  test.serial(`redis-cli SET/GET against redis-server on ${port}`, async (t) => {
    const r = await measured(t, 'redis-cli', ['-h', db.ip, '-p', String(port)], `SET mesh:key value-${port}\nGET mesh:key\n`);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `OK\nvalue-${port}\n`);
    if (port === 6379) t.deepEqual(r.byDetection, { 'opaque-port': 1 });
    else {
      // RESP is client-first and not HTTP or TLS: the detector says so on the first bytes.
      t.deepEqual(Object.keys(r.byDetection).length, 1, JSON.stringify(r.byDetection));
      t.regex(Object.keys(r.byDetection)[0]!, /^opaque:/);
    }
    t.deepEqual(r.byProtocol, { opaque: 1 });
    t.is(r.redirected, 1);
  });
}
