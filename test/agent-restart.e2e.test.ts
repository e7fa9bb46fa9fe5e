// The agent restarted under traffic learns its state again. A client pod connects to a server
// pod in a loop while the agent is stopped (SIGTERM, then SIGKILL) and a new one started, with
// pods coming from the stand-in API server in the node namespace.
//
// What fail-open promises, and what is asserted:
// - SIGTERM: the agent detaches first, keeps serving what was already redirected, then drains.
//   Short connections never fail: zero failed attempts.
// - SIGKILL: no code of the agent runs; the kernel releases its links and closes its proxy's
//   sockets while it tears the process down, before the parent can reap it. Until then a
//   connect() can still be redirected to the dying proxy (its listener still completes
//   handshakes into the accept queue; attempt 20 of a run was reset that way, after attempt
//   19, in flight at the kill). So: an attempt may fail only if it ended after the kill and
//   began before the reap (the tool stamps both on CLOCK_MONOTONIC, the clock this process
//   reads too), and then fast, with a reset, a close or a refusal, never a timeout; every
//   attempt begun after the reap succeeds and reaches the server directly.
// - Then, with the loop still running, web's annotation changes and its pod object is deleted:
//   each change applies to the next connections, and none of them fails.
// - Either way, the kernel removes every program of the first agent (nothing is pinned), the
//   client connects directly until the new agent is up, and the new agent relists the pods (one
//   added while no agent ran included), attaches again, and new connections go through its proxy.
//   The new agent starts as the DaemonSet starts it: `run --config` on a mounted ConfigMap.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH } from '../src/sim/index.ts';
import { cgroupId } from '../src/datapath/cgroup2.ts';
import { exited, JsonLines, JsonRpc } from './helpers/procs.ts';
import { mountConfigMap } from './helpers/configmap-volume.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { nodeScope } from './helpers/node-scope.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = meshBin();
const RUNNER = path.join(here, 'fixtures/apiserver-runner.ts');
const ADMIN = '127.0.0.1:4191';

/** CLOCK_MONOTONIC in ms, as the sim's tools stamp their lines. */
const mono = () => Number(process.hrtime.bigint()) / 1e6;

/** Errors a connection through a proxy that died mid-flight can end with. */
const KILLED_PROXY_ERRORS = ['ECONNRESET', 'EPIPE', 'CLOSED', 'ECONNREFUSED'];

function bpftool(args: string[]): any {
  return JSON.parse(execFileSync('bpftool', ['-j', ...args], { encoding: 'utf8' }).trim() || 'null');
}

/** Program ids that still exist in the kernel, of those given. */
function liveProgramIds(ids: number[]): number[] {
  const all = new Set((bpftool(['prog', 'show']) as any[]).map((p) => p.id));
  return ids.filter((id) => all.has(id));
}

/** Pinned BPF objects whose name says they are ours. */
function meshPins(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (/mesh/i.test(e.name)) out.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk('/sys/fs/bpf');
  return out;
}

async function scenario(t: ExecutionContext, signal: 'SIGTERM' | 'SIGKILL') {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  const scope = nodeScope(t);
  const { children, tmp } = scope;
  const pinsBefore = meshPins();
  const node = (scope.node = await createNode({ driver: signal === 'SIGTERM' ? 'systemd' : 'cgroupfs' }));
  const web = await node.addPod({ name: 'web', namespace: 'shop' });
  const api = await node.addPod({ name: 'api', namespace: 'shop' });

  const apiserverProc = node.spawnInNode(process.execPath, [RUNNER]);
  children.push(apiserverProc);
  const apiserver = new JsonRpc(apiserverProc);
  const { url } = await apiserver.io.waitFor((o) => o.url, 10_000, 'API server up');
  await apiserver.call('addNamespace', ['shop', { 'mesh-agent.io/inject': 'enabled' }]);
  for (const p of [web, api]) await apiserver.call('addPod', [{ name: p.name, namespace: 'shop', uid: p.uid, nodeName: node.name, ip: p.ip }]);
  const kubeconfig = path.join(tmp, 'kubeconfig');
  fs.writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'sim',
    clusters: [{ name: 'sim', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'agent', user: { token: 'test' } }],
    contexts: [{ name: 'sim', context: { cluster: 'sim', user: 'agent' } }],
  }));

  // The second agent starts as the DaemonSet starts it: settings from the mounted ConfigMap and NODE_IP.
  const configDir = mountConfigMap(path.join(tmp, 'config'), { 'proxy-port': '15002', 'admin-port': '4191', 'cgroup-root': node.cgroupRoot, 'skip-outbound-ports': '', 'controller-addr': 'mesh-agent-controller.mesh-agent.svc:8086' });
  let log = '';
  const startAgent = (fromConfig = false) => {
    const settings = fromConfig ? ['--config', configDir] : ['--cgroup-root', node!.cgroupRoot, '--proxy-addr', `${node!.nodeIp}:15001`, '--admin', ADMIN];
    const a = node!.spawnInNode(process.execPath, [BIN, 'run', '--node', node!.name, '--kubeconfig', kubeconfig, ...settings, '--drain', '5000'], { env: { ...process.env, NODE_IP: node!.nodeIp } });
    children.push(a);
    a.stderr!.on('data', (d) => (log += d));
    return a;
  };
  const status = async () => JSON.parse((await node!.execInNode('curl', ['-sf', `http://${ADMIN}/status`])).stdout);
  const until = async <T>(probe: () => Promise<T | null | undefined | false>, what: string, ms = 15_000): Promise<T> => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const v = await probe().catch(() => null);
      if (v) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}; agent log: ${log.slice(-3000)}`);
  };
  const podOf = (s: any, name: string) => s.pods.find((p: any) => p.name === name);
  const meshed = (names: string[]) => until(async () => {
    const s = await status();
    return s.podSource.synced && names.every((n) => podOf(s, n)?.meshed) && s;
  }, `${names.join(', ')} meshed`);

  const agentA = startAgent();
  const sA = await meshed(['web', 'api']);
  const programIdsA: number[] = sA.datapath.programs.map((p: any) => p.id);
  t.is(programIdsA.length, 6); // five, and cgroup/sock_release where the kernel has it (this one does)
  t.deepEqual(liveProgramIds(programIdsA), programIdsA, 'bpftool sees the first agent\'s programs');
  const cgroupLinks = () => (bpftool(['link', 'show']) as any[]).filter((l) => l.cgroup_id === Number(cgroupId(node!.cgroupRoot)));
  const attachedHere = () => (bpftool(['cgroup', 'show', node!.cgroupRoot]) ?? []) as any[];
  // The leftover checks below can fail: while the agent runs they see its links.
  t.is(cgroupLinks().length, 6, 'bpftool sees the links on the pods cgroup root');
  t.deepEqual(attachedHere().map((p) => p.id).sort(), [...programIdsA].sort());

  const server = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(server);
  const accepts = new JsonLines(server);
  await accepts.waitFor((o) => o.listening, 10_000, 'server listening');
  // The attempt timeout only tells a hang from a failure; no working path comes near it.
  const loop = web.spawn(process.execPath, [TOOLS_PATH, 'tcp-loop', '--connect', `${api.ip}:8080`, '--interval-ms', '0', '--attempt-timeout-ms', '15000']);
  children.push(loop);
  const attempts = new JsonLines(loop);
  /** Source addresses the server saw, from the index'th accept on. */
  const sources = (from: number) => accepts.lines.slice(from).filter((o) => o.accepted).map((o) => o.accepted.remoteAddress.replace('::ffff:', ''));
  const seen = (from: number, source: string, n: number, what: string) =>
    until(async () => sources(from).filter((s) => s === source).length >= n, what);

  await seen(0, node.nodeIp, 10, 'the loop going through the first agent\'s proxy');

  const reaped = new Promise<number>((r) => agentA.once('exit', () => r(mono())));
  const killedAt = mono();
  agentA.kill(signal);
  const code = await exited(agentA);
  // The exit event comes after the reap, so after the kernel released what the agent held.
  const reapedAt = await reaped;
  if (signal === 'SIGTERM') t.is(code, 0, `a SIGTERM'd agent exits 0; log: ${log.slice(-2000)}`);
  const afterStop = accepts.lines.length;
  t.deepEqual(liveProgramIds(programIdsA), [], 'the kernel removed every program of the first agent');
  t.deepEqual(cgroupLinks(), [], 'no BPF link left on the pods cgroup root');
  t.deepEqual(attachedHere(), [], 'no program attached to the pods cgroup root');
  t.deepEqual(meshPins(), pinsBefore, 'nothing pinned under /sys/fs/bpf');
  await seen(afterStop, web.ip, 10, 'the loop connecting directly while no agent runs (fail-open)');
  // The attempts begun after the reap reached the server from the pod itself (its port is
  // the one the server saw), not through a proxy. Failures are checked at the end.
  const directAfterReap = async () => {
    const direct = new Set(accepts.lines.filter((o) => o.accepted && o.accepted.remoteAddress.replace('::ffff:', '') === web.ip).map((o) => o.accepted.remotePort));
    const after = attempts.lines.filter((o) => 'attempt' in o && o.ok && o.t0 > reapedAt).slice(0, 5);
    return after.length === 5 && after.every((a) => direct.has(a.localPort));
  };
  await until(directAfterReap, 'the first five attempts after the reap reaching the server directly');

  // A pod that comes while no agent runs: the new agent learns it from its list.
  const late = await node.addPod({ name: 'late', namespace: 'shop' });
  await apiserver.call('addPod', [{ name: 'late', namespace: 'shop', uid: late.uid, nodeName: node.name, ip: late.ip }]);

  const beforeB = accepts.lines.length;
  startAgent(true);
  const sB = await meshed(['web', 'api', 'late']);
  t.is(sB.proxy.listen, `${node.nodeIp}:15002`, 'the proxy port from the config');
  for (const p of sB.datapath.programs) t.is(p.attachedTo, node.cgroupRoot, `${p.section} attached again`);
  t.true(sB.datapath.programs.every((p: any) => !programIdsA.includes(p.id)), 'fresh programs, not the old ones');
  await seen(beforeB, node.nodeIp, 10, 'the loop going through the new agent\'s proxy');
  const sB2 = await status();
  t.true(BigInt(sB2.datapath.counters.redirected) >= 10n, 'the new datapath redirects');
  t.true(sB2.proxy.accepted >= 10, 'the new proxy accepts');
  t.is(sB2.proxy.refusedNoRecord, 0);
  const fromLate = await late.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${api.ip}:8080`, '--send', 'x'], { timeoutMs: 15_000 });
  t.is(fromLate.code, 0, fromLate.stderr);
  await seen(beforeB, node.nodeIp, 11, 'the late pod\'s connection');

  // Pods changed and deleted while the loop runs: each change applies to the next connections.
  let mark = accepts.lines.length;
  await apiserver.call('setPodAnnotations', ['shop', 'web', { 'mesh-agent.io/skip-outbound-ports': '8080' }]);
  await seen(mark, web.ip, 10, 'web skipping port 8080 after the annotation change');
  mark = accepts.lines.length;
  await apiserver.call('setPodAnnotations', ['shop', 'web', {}]);
  await seen(mark, node.nodeIp, 10, 'web proxied again once the annotation is gone');
  mark = accepts.lines.length;
  await apiserver.call('deletePod', ['shop', 'web']);
  await seen(mark, web.ip, 10, 'web connecting directly once its pod object is deleted');

  loop.kill('SIGKILL');
  await exited(loop);
  const all = attempts.lines.filter((o) => 'attempt' in o);
  const failed = all.filter((o) => !o.ok);
  t.true(all.length >= 30, `the loop ran (${all.length} attempts)`);
  if (signal === 'SIGTERM') {
    t.deepEqual(failed, [], 'SIGTERM: no connection fails');
  } else {
    for (const f of failed) {
      t.true(KILLED_PROXY_ERRORS.includes(f.error), `a reset, close or refusal, not ${JSON.stringify(f)}`);
      t.true(f.t1 >= killedAt && f.t0 <= reapedAt, `SIGKILL: a failed attempt must end after the kill (${killedAt.toFixed(1)}) and begin before the reap (${reapedAt.toFixed(1)}): ${JSON.stringify(f)}`);
    }
  }
  t.log(`${signal}: ${all.length} attempts, ${failed.length} failed ${JSON.stringify(failed)}; reaped ${(reapedAt - killedAt).toFixed(1)} ms after the kill`);
}

test.serial('restarted after SIGTERM under traffic: no failed connection, relists, re-attaches, proxies again', (t) => scenario(t, 'SIGTERM'));
test.serial('restarted after SIGKILL under traffic: fail-open, only connections begun before the agent was gone fail, relists, proxies again', (t) => scenario(t, 'SIGKILL'));
