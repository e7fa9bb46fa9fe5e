// `mesh-agent run --pods FILE` on a simulated node, with the real datapath and proxy:
// meshing follows the file, an annotation change applies to the next connection, a bad
// value is reported and the last good one kept, SIGTERM detaches and exits 0.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 10000, intervalMs: 150, context: () => `agent log: ${agentLog.slice(-2000)}` });

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.ts');
let node: SimNode;
let web: SimPod;
let api: SimPod;
let agent: ChildProcess;
let agentLog = '';
let apiLog: JsonLines;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-e2e-'));
const podsFile = path.join(tmp, 'pods.yaml');
const children: ChildProcess[] = [];

function writePods(webAnnotations: Record<string, string>) {
  const objs = [
    { ...(web.toPodObject(node.name) as any), metadata: { ...(web.toPodObject(node.name) as any).metadata, annotations: webAnnotations } },
    api.toPodObject(node.name),
  ];
  // Replace by rename, as editors and kubectl-like tools do.
  fs.writeFileSync(podsFile + '.tmp', objs.map((o) => JSON.stringify(o)).join('\n---\n'));
  fs.renameSync(podsFile + '.tmp', podsFile);
}

async function status(): Promise<any> {
  const r = await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status']);
  if (r.code !== 0) throw new Error(`status: curl exited ${r.code}: ${r.stderr}; agent log: ${agentLog.slice(-2000)}`);
  return JSON.parse(r.stdout);
}

/** Runs `mesh-agent status` in the node namespace, where the admin API listens on loopback. */
async function cliStatus(...args: string[]) {
  return node.execInNode(process.execPath, [BIN, 'status', '--admin', '127.0.0.1:4191', ...args], { timeoutMs: 15_000 });
}

/** Connects from web to api:8080 and returns the source address the server saw. */
async function connectAndSeeSource(): Promise<string> {
  const before = apiLog.lines.filter((o) => o.accepted).length;
  const r = await web.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${api.ip}:8080`, '--send', 'x'], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
  const seen = await apiLog.waitFor(() => apiLog.lines.filter((o) => o.accepted).length > before, 5000, 'server accept');
  void seen;
  return apiLog.lines.filter((o) => o.accepted).at(-1).accepted.remoteAddress.replace('::ffff:', '');
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the agent e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  web = await node.addPod({ name: 'web', namespace: 'shop' });
  api = await node.addPod({ name: 'api', namespace: 'shop' });
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--drain', '2000']);
  children.push(agent);
  agent.stderr!.on('data', (d) => (agentLog += d));
  agent.stdout!.on('data', (d) => (agentLog += d));
  const srv = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(srv);
  apiLog = new JsonLines(srv);
  await apiLog.waitFor((o) => o.listening, 10_000, 'api listening');
  await until(status, (s) => s.pods.some((p: any) => p.name === 'web' && p.meshed), 'web meshed', 20_000);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('a pod meshed from the pods file goes through the proxy', async (t) => {
  t.is(await connectAndSeeSource(), node.nodeIp);
  const s = await status();
  t.true(BigInt(s.datapath.counters.redirected) >= 1n);
  t.is(s.proxy.refusedNoRecord, 0);
  t.deepEqual(s.datapath.programs.map((p: any) => p.attachedTo), Array(5).fill(node.cgroupRoot));
  const webStatus = s.pods.find((p: any) => p.name === 'web');
  t.is(webStatus.cgroup, web.podCgroup);
  t.is(webStatus.ip, web.ip);

  const table = await cliStatus();
  t.is(table.code, 0, table.stdout + table.stderr);
  t.regex(table.stdout, /STATUS: healthy/);
  t.regex(table.stdout, /shop\s+web\s+10\.244\.\d+\.\d+\s+yes/);
  t.regex(table.stdout, /cgroup\/connect4\s+\d+\s+\/sys\/fs\/cgroup/);
  t.regex(table.stdout, /BPF FEATURES\n/);
  t.regex(table.stdout, /attach\s+getpeername4\s+ok\s+yes/);
  t.regex(table.stdout, /helper\s+get_current_ancestor_cgroup_id\s+ok\s+yes/);
  const json = await cliStatus('-o', 'json');
  t.is(json.code, 0);
  const doc = JSON.parse(json.stdout);
  t.true(doc.healthy);
  t.deepEqual(doc.reasons, []);
  t.is(doc.status.pods.length, 2);
  // The agent probed the kernel at start: every required feature is there (it attached, after all).
  const required = doc.status.features.filter((f: any) => f.required);
  t.is(required.length, 14, "13 kernel features and the cgroup2 mount");
  t.deepEqual(required.filter((f: any) => f.status !== 'ok'), []);
  t.deepEqual(doc.status.features.find((f: any) => f.kind === 'map' && f.name === 'lru_hash'), { kind: 'map', name: 'lru_hash', required: true, status: 'ok', note: 'original destinations (LRU: a backstop when a close is missed)' });
});

test.serial('an annotation change applies to the next connection, without restarting the pod', async (t) => {
  writePods({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '8000-8100' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.skipOutboundPorts === '8000-8100', 'skip ports applied');
  t.is(await connectAndSeeSource(), web.ip, 'skipped: the server saw the pod');
  writePods({ 'mesh-agent.io/inject': 'disabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.meshed === false, 'web unmeshed');
  t.is(await connectAndSeeSource(), web.ip, 'unmeshed: direct');
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.meshed === true, 'web meshed again');
  t.is(await connectAndSeeSource(), node.nodeIp, 'meshed again: through the proxy');
});

test.serial('an invalid annotation is reported with the pod and value; the last good configuration stays', async (t) => {
  writePods({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '8080' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.skipOutboundPorts === '8080', 'skip 8080');
  writePods({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '80eighty' });
  const s = await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.annotationErrors.length > 0, 'annotation error reported');
  const w = s.pods.find((p: any) => p.name === 'web');
  t.regex(w.annotationErrors[0], /skip-outbound-ports.*80eighty/);
  t.is(w.skipOutboundPorts, '8080');
  t.true(s.recentErrors.some((e: any) => /shop\/web.*80eighty/.test(e.msg)));
  t.is(await connectAndSeeSource(), web.ip, 'the last good skip list still applies');
  const st = await cliStatus();
  t.is(st.code, 1, 'degraded');
  t.regex(st.stdout, /STATUS: degraded\n  - pod shop\/web: invalid annotation mesh-agent.io\/skip-outbound-ports.*80eighty/);
});

test.serial('SIGTERM detaches the programs and exits 0; pods then connect directly', async (t) => {
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.skipOutboundPorts === '', 'skip list cleared');
  agent.kill('SIGTERM');
  t.is(await exited(agent), 0, agentLog.slice(-2000));
  t.notRegex(execFileSync('bpftool', ['cgroup', 'show', node.cgroupRoot], { encoding: 'utf8' }), /connect4|sockops/);
  t.is(await connectAndSeeSource(), web.ip);
  const st = await cliStatus('-o', 'json');
  t.is(st.code, 2, 'unreachable');
  t.is(JSON.parse(st.stdout).reachable, false);
  t.regex(st.stderr, /unreachable.*is it running on this node/);
});
