// `mesh-agent run --pods FILE` on a simulated node, with the real datapath and proxy:
// meshing follows the file, an annotation change applies to the next connection, a bad
// value is reported and the last good one kept, a destination's skip-inbound ports bypass
// the proxy, a connection that did not come through the datapath is refused (no open
// relay), SIGTERM detaches and exits 0.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 10000, intervalMs: 150, context: () => `agent log: ${agentLog.slice(-2000)}` });

const BIN = meshBin();
let node: SimNode;
let web: SimPod;
let api: SimPod;
/** A pod the agent does not know: not in the pods file, so never meshed. */
let outsider: SimPod;
let agent: ChildProcess;
let agentLog = '';
/** The api pod's echo servers, by port: 8080 and 9090. */
const apiLogs = new Map<number, JsonLines>();
const PROXY_PORT = 15001;
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.yaml');
const children: ChildProcess[] = [];

function withAnnotations(pod: SimPod, annotations: Record<string, string>): object {
  const obj = pod.toPodObject(node.name) as any;
  return { ...obj, metadata: { ...obj.metadata, annotations } };
}

function writePods(webAnnotations: Record<string, string>, apiAnnotations: Record<string, string> = {}) {
  const objs = [withAnnotations(web, webAnnotations), withAnnotations(api, apiAnnotations)];
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

/** Connects from web to api:port and returns the source address the server saw. */
async function connectAndSeeSource(port = 8080): Promise<string> {
  const log = apiLogs.get(port)!;
  const before = log.lines.filter((o) => o.accepted).length;
  const r = await web.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${api.ip}:${port}`, '--send', 'x'], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
  // The client had its echo, so the server accepted: its line is on the way.
  await log.waitFor(() => log.lines.filter((o) => o.accepted).length > before, 5000, 'server accept');
  return log.lines.filter((o) => o.accepted).at(-1).accepted.remoteAddress.replace('::ffff:', '');
}

const acceptedBy = (port: number) => apiLogs.get(port)!.lines.filter((o) => o.accepted).length;

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the agent e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  web = await node.addPod({ name: 'web', namespace: 'shop' });
  api = await node.addPod({ name: 'api', namespace: 'shop' });
  outsider = await node.addPod({ name: 'outsider', namespace: 'shop' });
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:${PROXY_PORT}`, '--admin', '127.0.0.1:4191', '--drain', '2000']);
  children.push(agent);
  agent.stderr!.on('data', (d) => (agentLog += d));
  agent.stdout!.on('data', (d) => (agentLog += d));
  for (const port of [8080, 9090]) {
    const srv = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', String(port)]);
    children.push(srv);
    const log = new JsonLines(srv);
    apiLogs.set(port, log);
    await log.waitFor((o) => o.listening, 10_000, `api listening on ${port}`);
  }
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
  // Five, and cgroup/sock_release where the kernel has it (this one does).
  t.deepEqual(s.datapath.programs.map((p: any) => p.attachedTo), Array(6).fill(node.cgroupRoot));
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

test.serial('a destination pod\'s skip-inbound port bypasses the proxy, its other ports do not; a change applies to the next connection', async (t) => {
  // api (not meshed itself) skips 8080 inbound: web, meshed, reaches api:8080 directly, api:9090 through the proxy.
  writePods({ 'mesh-agent.io/inject': 'enabled' }, { 'mesh-agent.io/skip-inbound-ports': '8080' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'api')?.skipInboundPorts === '8080', 'skip-inbound 8080 applied');
  const s0 = await status();
  t.is(await connectAndSeeSource(8080), web.ip, 'skipped inbound: api saw the pod itself');
  const s1 = await status();
  t.is(s1.proxy.accepted, s0.proxy.accepted, 'the proxy accepted nothing for it');
  t.is(BigInt(s1.datapath.counters.skippedInbound) - BigInt(s0.datapath.counters.skippedInbound), 1n, 'the datapath passed it for the skip-inbound port');
  t.is(await connectAndSeeSource(9090), node.nodeIp, 'another port of the same pod: through the proxy');
  const s2 = await status();
  t.is(s2.proxy.accepted, s1.proxy.accepted + 1);
  t.is(s2.datapath.counters.skippedInbound, s1.datapath.counters.skippedInbound);

  // The annotation moves to 9090: the next connections follow it, no pod restarts.
  writePods({ 'mesh-agent.io/inject': 'enabled' }, { 'mesh-agent.io/skip-inbound-ports': '9090' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'api')?.skipInboundPorts === '9090', 'skip-inbound 9090 applied');
  t.is(await connectAndSeeSource(8080), node.nodeIp, '8080 no longer skipped: through the proxy');
  t.is(await connectAndSeeSource(9090), web.ip, '9090 now skipped: direct');
  const s3 = await status();
  t.is(s3.proxy.accepted, s2.proxy.accepted + 1, 'one of the two went through the proxy');
  // Gone from the annotation: every port of api goes through the proxy again.
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'api')?.skipInboundPorts === '', 'skip-inbound removed');
  t.is(await connectAndSeeSource(9090), node.nodeIp);
});

test.serial('no open relay: a connection to the agent\'s proxy port that did not come through the datapath is reset and counted', async (t) => {
  const before = await status();
  const served = [acceptedBy(8080), acceptedBy(9090)];
  const proxy = `${node.nodeIp}:${PROXY_PORT}`;
  // From a pod the agent does not mesh, from a meshed pod dialling the proxy's address itself
  // (connect4 lets that pass: it is not a redirect), and from the node's namespace, where no program runs.
  const attempts: Array<[string, () => Promise<{ code: number | null; stdout: string; stderr: string }>]> = [
    ['an unmeshed pod', () => outsider.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', proxy, '--send', 'relay me'], { timeoutMs: 15_000 })],
    ['a meshed pod, straight to the proxy', () => web.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', proxy, '--send', 'relay me'], { timeoutMs: 15_000 })],
    ['the node namespace', () => node.execInNode(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', proxy, '--send', 'relay me'], { timeoutMs: 15_000 })],
  ];
  for (const [from, run] of attempts) {
    const r = await run();
    t.is(r.code, 1, `${from}: ${r.stdout} ${r.stderr}`);
    // "connect ECONNRESET" when the reset lands before the client's connect callback ran, "read ECONNRESET" after.
    t.regex(r.stderr, /ECONNRESET/, `${from}: reset, not closed cleanly: ${r.stderr}`);
  }
  // The proxy counts a refusal before it resets, so the count is in once the clients saw the resets.
  const after = await status();
  t.is(after.proxy.refusedNoRecord, before.proxy.refusedNoRecord + attempts.length);
  t.is(after.proxy.accepted, before.proxy.accepted + attempts.length);
  t.is(after.proxy.open, before.proxy.open, 'none of them stayed open');
  // Both pods' connects ran connect4, which lets the proxy's own address pass (before it looks for the pod).
  t.is(BigInt(after.datapath.counters.passedLocal) - BigInt(before.datapath.counters.passedLocal), 2n, 'the pods\' connects to the proxy address passed untouched');
  t.is(after.datapath.counters.redirected, before.datapath.counters.redirected, 'none was redirected');
  t.deepEqual([acceptedBy(8080), acceptedBy(9090)], served, 'nothing reached a server through the proxy');
});

test.serial('a meshed pod whose entry can no longer be written leaves the datapath: status and kernel agree, and an opt-out applies', async (t) => {
  // The API server now gives web an address the IPv4 datapath cannot hold (an IPv6-primary
  // dual-stack pod): setPod throws for a pod already in the kernel's map.
  const writeWeb = (annotations: Record<string, string>, podIP: string) => {
    const obj = withAnnotations(web, annotations) as any;
    const objs = [{ ...obj, status: { ...obj.status, podIP } }, withAnnotations(api, {})];
    fs.writeFileSync(podsFile + '.tmp', objs.map((o) => JSON.stringify(o)).join('\n---\n'));
    fs.renameSync(podsFile + '.tmp', podsFile);
  };
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.meshed === true && s.pods.find((p: any) => p.name === 'web')?.skipOutboundPorts === '', 'web meshed');
  t.is(await connectAndSeeSource(), node.nodeIp);
  writeWeb({ 'mesh-agent.io/inject': 'enabled' }, 'fd00::5');
  const s = await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.meshed === false, 'web reported out of the datapath');
  t.regex(s.pods.find((p: any) => p.name === 'web').reason, /IPv4/);
  t.is(await connectAndSeeSource(), web.ip, 'reported not in the datapath: the kernel no longer redirects it either');
  writeWeb({ 'mesh-agent.io/inject': 'disabled' }, 'fd00::5');
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.reason === 'not-injected', 'web opted out');
  t.is(await connectAndSeeSource(), web.ip, 'opted out: direct');
  writePods({ 'mesh-agent.io/inject': 'enabled' });
  await until(status, (s) => s.pods.find((p: any) => p.name === 'web')?.meshed === true, 'web meshed again');
  t.is(await connectAndSeeSource(), node.nodeIp, 'meshed again: through the proxy');
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
