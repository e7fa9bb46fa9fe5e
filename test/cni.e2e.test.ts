// The chained CNI plugin on a simulated cluster with the mesh as installed (the plugin chained in
// the node's CNI configuration, the sim's runtime running it at each pod sandbox's ADD), the real
// kernel (docs/install.md, "The CNI plugin"; docs/policy.md, "Fail-open and fail-closed"):
// (a) the agent SIGKILLed: a new all-authenticated pod of a meshed namespace is not started (its
//     ADD fails with the plugin's message, retried); the agent back, it starts and an unmeshed
//     client is refused from its first connection;
// (b) the agent running, its pod watch stalled: a new restrictive pod's ADD returns only once its
//     policy is in the kernel (the agent reads the pod from the API server), so an unmeshed
//     client's first connection is refused;
// (c) a pod of an unmeshed namespace starts while no agent runs;
// (d) a node reboot (nftables and routing flushed, pods recreated, no agent yet): restrictive pods
//     do not start until an agent does;
// (e) a capture the agent cannot apply (its inbound port held): a fail-open pod still starts, a
//     restrictive one waits, its ADD naming the error;
// (f) the agent stopped while an ADD reads its pod from the API server, the read stuck: the ADD is
//     answered "try again" at once, the stop is not held by the read, the next agent starts the pod;
// (h) the agent running while an ADD's pod read gets no answer from the API server: the agent
//     answers the ADD within its admit wait, as for a pod it does not know, not after the
//     client's 60 s (past the plugin's own 15 s wait);
// (g) the agent SIGKILLed and its pod's token revoked (a rolling update deleted the pod): a pod
//     annotated mesh-agent.io/inject: enabled in an unmeshed namespace is not started (the plugin
//     reads it from the API server with its kubeconfig, the token of its own ServiceAccount) until
//     the agent is back.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import type { CniAttempt } from '../src/sim/cluster.ts';
import { AGENT_SA, startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { parseKubeconfig } from '../src/cni/kubeconfig.ts';
import * as fs from 'node:fs';
import { nftBinary } from '../src/datapath/nft.ts';
import { JsonLines } from './helpers/procs.ts';
import { until, within } from './helpers/until.ts';

const NS = 'shop';
const PLAIN = 'plain';
const RESTRICT = { 'mesh-agent.io/default-inbound-policy': 'all-authenticated' };
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let web: SimPod;
let outsider: SimPod;
const children: ChildProcess[] = [];

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function echo(pod: SimPod): Promise<void> {
  const e = pod.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '7000']);
  children.push(e);
  await new JsonLines(e).waitFor((o) => o.listening, 30_000, `${pod.name} listening`);
}

/** One connection that sends and waits for the echo: ok, or the client's error. */
async function connect(from: SimPod, to: SimPod): Promise<{ ok: boolean; error?: string }> {
  const r = await from.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${to.ip}:7000`, '--send', 'x', '--timeout-ms', '5000'], { timeoutMs: 20_000 });
  return r.code === 0 ? { ok: true } : { ok: false, error: r.stderr.trim() };
}

const podObject = (name: string) => need().cluster.api.get('Pod', NS, name);
const agentLog = () => need().mesh.logs();

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the CNI tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  cluster = await createCluster({ nodes: 1 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  cluster.addNamespace(PLAIN);
  web = await cluster.addPod(0, { name: 'web', namespace: NS, serviceAccountName: 'web' });
  outsider = await cluster.addPod(0, { name: 'outsider', namespace: PLAIN });
  await cluster.settled();
  mesh = await startMesh(cluster, { identity: false });
  await mesh.waitAgents((s) => s.inbound?.capture === 'capturing' && s.cni !== null, 'capture on and the CNI socket');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('the agent keeps the meshed namespaces in the state file the plugin reads when it does not answer', async (t) => {
  const { cluster, mesh } = need();
  const { readState } = await import('../src/cni/state.ts');
  const file = mesh.cniPaths(cluster.nodes[0]!)!.stateFile;
  t.deepEqual(readState(file), { kind: 'ok', state: { version: 1, node: cluster.nodes[0]!.name, meshedNamespaces: [NS] } });
  cluster.addNamespace('later', { 'mesh-agent.io/inject': 'enabled' });
  await until(() => readState(file), (r) => r.kind === 'ok' && r.state.meshedNamespaces.includes('later'), 'a newly meshed namespace in the state file');
  cluster.delete('Namespace', undefined, 'later');
});

test.serial('(b) the agent running, its pod watch stalled: the ADD returns once the policy is in the kernel, and an unmeshed client\'s first connection is refused', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  // The agent's watches fail from now on: it can learn the pod only by reading it at the ADD.
  cluster.api.setFailure(503, 'watch');
  cluster.api.dropWatches();
  t.teardown(() => cluster.api.setFailure(null));
  const attempts: CniAttempt[] = [];
  const api = await cluster.addPod(0, { name: 'api-b', namespace: NS, serviceAccountName: 'api', annotations: RESTRICT, onCniAttempt: (a) => attempts.push(a) });
  t.deepEqual(attempts, [{ attempt: 1, ok: true }]);
  await echo(api);
  const first = await connect(outsider, api);
  t.false(first.ok, 'the unmeshed client\'s first connection is refused');
  t.notRegex(first.error ?? '', /ECONNREFUSED|timed out|timeout/i, `refused by the policy (reset), not by a missing listener nor dropped: ${first.error}`);
  t.true((await connect(web, api)).ok, 'a meshed client of the namespace gets through');
  const st = await mesh.agentStatus(node);
  t.true(st.inbound.failClosed.includes(`${NS}/api-b`));
  t.is(st.pods.find((p: any) => p.name === 'api-b')?.ip, api.ip, 'the pod\'s address from the runtime, before the watch reports it');
  t.is(st.cni.admissions.meshed >= 1, true);
  cluster.api.setFailure(null);
});

test.serial('(a) the agent SIGKILLed: a new restrictive pod is not started (its ADD fails with the plugin\'s message); the agent back, it starts and refuses an unmeshed client from its first connection', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.stopAgent(node, 'SIGKILL');
  cluster.addService({ name: 'api-a', namespace: NS, selector: { app: 'api-a' }, ports: [{ port: 7000 }] });
  const attempts: CniAttempt[] = [];
  let started = false;
  const pending = cluster.addPod(0, { name: 'api-a', namespace: NS, serviceAccountName: 'api', labels: { app: 'api-a' }, annotations: RESTRICT, onCniAttempt: (a) => attempts.push(a) });
  void pending.then(() => (started = true), () => {});
  await until(() => attempts.filter((a) => !a.ok).length, (n) => n >= 2, 'two failed ADDs while no agent runs', { context: agentLog });
  const failed = attempts.find((a) => !a.ok)!;
  t.is(failed.error?.plugin, 'mesh-agent-cni');
  t.is(failed.error?.code, 11, 'CNI "try again later"');
  t.regex(failed.error?.msg ?? '', /no mesh-agent answers on this node \(.*cni\.sock: ECONNREFUSED\), and namespace shop is meshed: pod shop\/api-a would start without its inbound policy; the runtime retries the ADD/);
  t.false(started, 'the pod is not started');
  const obj = podObject('api-a');
  t.is(obj?.status?.phase, 'Pending');
  t.is(obj?.status?.podIP, undefined, 'no address reported');
  await cluster.settled();
  const slices = cluster.api.list('EndpointSlice', { namespace: NS, labelSelector: 'kubernetes.io/service-name=api-a' });
  t.deepEqual(slices.flatMap((s: any) => s.endpoints ?? []), [], 'not in its Service\'s EndpointSlice');

  mesh.startAgent(node);
  const api = await pending;
  t.true(attempts.at(-1)!.ok, 'the ADD passes once the agent has the policy in the kernel');
  await echo(api);
  const first = await connect(outsider, api);
  t.false(first.ok, 'its first connection from an unmeshed client is refused');
  t.notRegex(first.error ?? '', /ECONNREFUSED|timed out|timeout/i, `refused by the policy: ${first.error}`);
  t.true((await connect(web, api)).ok, 'a meshed client gets through');
  await cluster.settled();
  const ready = cluster.api.list('EndpointSlice', { namespace: NS, labelSelector: 'kubernetes.io/service-name=api-a' }).flatMap((s: any) => s.endpoints ?? []);
  t.deepEqual(ready.map((e: any) => [e.addresses[0], e.conditions.ready]), [[api.ip, true]]);
});

test.serial('(c) a pod of an unmeshed namespace starts while no agent runs', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.stopAgent(node, 'SIGKILL');
  const attempts: CniAttempt[] = [];
  const free = await cluster.addPod(0, { name: 'free', namespace: PLAIN, onCniAttempt: (a) => attempts.push(a) });
  t.deepEqual(attempts, [{ attempt: 1, ok: true }], 'the plugin passes it at the first ADD');
  await echo(free);
  t.true((await connect(outsider, free)).ok);
  mesh.startAgent(node);
  await mesh.waitAgents((s) => s.inbound?.capture === 'capturing', 'the agent back');
});

test.serial('(d) a node reboot: with no agent yet, restrictive pods do not start (nothing of the old capture is left to hold them); with the agent, they start closed', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.stopAgent(node, 'SIGKILL');
  const attempts = new Map<string, CniAttempt[]>();
  const started = await cluster.rebootNode(0, (pod, a) => attempts.set(pod, [...(attempts.get(pod) ?? []), a]));
  t.deepEqual([...started.keys()].sort(), ['plain/free', 'plain/outsider', 'shop/api-a', 'shop/api-b', 'shop/web']);
  const table = await node.execInNode(nftBinary(), ['list', 'table', 'ip', 'mesh-agent']);
  t.not(table.code, 0, 'the reboot cleared the held capture table');
  // The unmeshed namespace's pods start; the meshed ones wait.
  const plain = await started.get('plain/outsider')!;
  await started.get('plain/free')!;
  await until(() => ['shop/api-a', 'shop/api-b', 'shop/web'].map((k) => (attempts.get(k) ?? []).filter((a) => !a.ok).length), (n) => n.every((x) => x >= 1), 'each meshed pod\'s ADD failed', { context: agentLog });
  for (const k of ['shop/api-a', 'shop/api-b', 'shop/web']) t.false((attempts.get(k) ?? []).some((a) => a.ok), `${k} is not started`);
  t.is(podObject('api-a')?.status?.phase, 'Pending');

  mesh.startAgent(node);
  const api = await started.get('shop/api-a')!;
  const meshedWeb = await started.get('shop/web')!;
  await started.get('shop/api-b')!;
  await echo(api);
  const first = await connect(plain, api);
  t.false(first.ok, 'the restrictive pod is closed to an unmeshed client from its first connection after the reboot');
  t.notRegex(first.error ?? '', /ECONNREFUSED|timed out|timeout/i, `refused by the policy: ${first.error}`);
  t.true((await connect(meshedWeb, api)).ok, 'a meshed client gets through');
});

test.serial('(e) a capture the agent cannot apply (another process holds its inbound port): a fail-open pod still starts; a restrictive one does not, its ADD naming the error', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.stopAgent(node, 'SIGKILL');
  const holder = node.spawnInNode(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '15006']);
  children.push(holder);
  await new JsonLines(holder).waitFor((o) => o.listening, 30_000, 'the port holder listening');
  mesh.startAgent(node);
  await mesh.waitAgents((s) => typeof s.inbound?.error === 'string' && /15006/.test(s.inbound.error), 'the capture failing on the held port');
  const openAttempts: CniAttempt[] = [];
  await cluster.addPod(0, { name: 'open-e', namespace: NS, serviceAccountName: 'api', onCniAttempt: (a) => openAttempts.push(a) });
  t.deepEqual(openAttempts, [{ attempt: 1, ok: true }], 'a fail-open pod is admitted at its first ADD');
  const attempts: CniAttempt[] = [];
  let started = false;
  const pending = cluster.addPod(0, { name: 'closed-e', namespace: NS, serviceAccountName: 'api', annotations: RESTRICT, onCniAttempt: (a) => attempts.push(a) });
  void pending.then(() => (started = true), () => {});
  await until(() => attempts.filter((a) => !a.ok).length, (n) => n >= 1, 'the restrictive pod\'s ADD failed', { context: agentLog, ms: 60_000 });
  t.regex(attempts.find((a) => !a.ok)!.error?.msg ?? '', /not in the kernel.*15006/, 'the ADD names the capture error');
  t.false(started, 'the restrictive pod is not started');
  holder.kill('SIGKILL');
  await mesh.stopAgent(node, 'SIGKILL');
  mesh.startAgent(node);
  await pending;
  t.true(attempts.at(-1)!.ok, 'started once an agent captures');
});

test.serial('(f) the agent stopped while an ADD reads its pod from the API server and the read hangs: the ADD is answered "try again" at once, and the stop is not held by the read', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.waitAgents((s) => s.inbound?.capture === 'capturing' && s.cni !== null, 'the agent capturing');
  // Its pod watch fails (and its re-lists), so the agent reads the pod at the ADD; that read gets
  // no answer (the agent's client gives up after 60 s).
  cluster.api.setFailure(503, 'any');
  cluster.api.dropWatches();
  const read = cluster.api.stallRequests((r) => r.resource === 'pods' && !r.watch && r.query.fieldSelector === 'metadata.name=api-f');
  t.teardown(() => {
    read.release();
    cluster.api.setFailure(null);
  });
  const attempts: CniAttempt[] = [];
  const pending = cluster.addPod(0, { name: 'api-f', namespace: NS, serviceAccountName: 'api', onCniAttempt: (a) => attempts.push(a) });
  void pending.catch(() => {});
  await within(read.stalled, 30_000, () => `the agent did not read pod api-f from the API server within 30 s; ${agentLog()}`);
  const started = performance.now();
  await mesh.stopAgent(node, 'SIGTERM');
  const took = performance.now() - started;
  t.log(`the agent's stop (SIGTERM to exit) with an ADD stuck in its API read took ${Math.round(took)} ms`);
  t.true(took < 30_000, `the stop is not held for the read's 60 s: ${Math.round(took)} ms`);
  await until(() => attempts.length, (n) => n >= 1, 'the ADD\'s first answer', { context: agentLog });
  t.false(attempts[0]!.ok);
  t.is(attempts[0]!.error?.code, 11, 'CNI "try again later": the runtime retries against the next agent');
  t.regex(attempts[0]!.error?.msg ?? '', /mesh-agent could not decide \(the agent is stopping; the next agent on the node decides\), and namespace shop is meshed/);
  read.release();
  cluster.api.setFailure(null);
  mesh.startAgent(node);
  await pending;
  t.true(attempts.at(-1)!.ok, 'the next agent admits it');
});

test.serial('(h) an ADD whose pod read gets no answer from the API server is answered within the agent\'s admit wait, as for a pod the agent does not know', async (t) => {
  const { cluster, mesh } = need();
  await mesh.waitAgents((s) => s.inbound?.capture === 'capturing' && s.cni !== null, 'the agent capturing');
  // As (f): the watch does not deliver the pod, and the agent's read of it hangs.
  cluster.api.setFailure(503, 'any');
  cluster.api.dropWatches();
  const read = cluster.api.stallRequests((r) => r.resource === 'pods' && !r.watch && r.query.fieldSelector === 'metadata.name=api-h');
  t.teardown(() => {
    read.release();
    cluster.api.setFailure(null);
  });
  const attempts: CniAttempt[] = [];
  const pending = cluster.addPod(0, { name: 'api-h', namespace: NS, serviceAccountName: 'api', onCniAttempt: (a) => attempts.push(a) });
  void pending.catch(() => {});
  await within(read.stalled, 30_000, () => `the agent did not read pod api-h from the API server within 30 s; ${agentLog()}`);
  const asked = performance.now();
  await until(() => attempts.length, (n) => n >= 1, 'the ADD\'s first answer', { context: agentLog, ms: 30_000 });
  const took = performance.now() - asked;
  t.log(`the ADD with its pod read unanswered was answered in ${Math.round(took)} ms`);
  t.false(attempts[0]!.ok);
  t.is(attempts[0]!.error?.code, 11, 'CNI "try again later"');
  t.regex(attempts[0]!.error?.msg ?? '', /mesh-agent could not decide \(pod shop\/api-h is not known to the agent yet, and the API server did not answer its read within the agent's admit wait \(10000 ms\).*\), and namespace shop is meshed/, 'the agent answered, not the plugin\'s own timeout');
  t.true(took < 15_000, `answered within the admit wait, before the plugin's 15 s: ${Math.round(took)} ms`);
  read.release();
  cluster.api.setFailure(null);
  await pending;
  t.true(attempts.at(-1)!.ok, 'admitted once the API server answers');
});

test.serial('(g) the agent SIGKILLed, its pod\'s token revoked: a pod annotated inject enabled in an unmeshed namespace is not started (the plugin reads it from the API server with its own ServiceAccount\'s token) until the agent is back', async (t) => {
  const { cluster, mesh } = need();
  const node = cluster.nodes[0]!;
  await mesh.waitAgents((s) => s.inbound?.capture === 'capturing' && s.cni !== null, 'the agent capturing');
  await mesh.stopAgent(node, 'SIGKILL');
  // A rolling update deletes the old agent pod: the API server refuses the tokens bound to it.
  cluster.api.tokens.revokePod(AGENT_SA.namespace, mesh.cniInstallPod(node));
  const kubeconfig = mesh.cniPaths(node)!.kubeconfig;
  const claims = JSON.parse(Buffer.from(parseKubeconfig(fs.readFileSync(kubeconfig, 'utf8'), kubeconfig).token.split('.')[1]!, 'base64url').toString('utf8'));
  t.is(claims.sub, 'system:serviceaccount:mesh-agent:mesh-agent-cni', 'the plugin\'s own ServiceAccount');
  t.is(claims['kubernetes.io'].pod, undefined, 'bound to no pod');
  const attempts: CniAttempt[] = [];
  let started = false;
  const pending = cluster.addPod(0, { name: 'annotated-g', namespace: PLAIN, annotations: { 'mesh-agent.io/inject': 'enabled', ...RESTRICT }, onCniAttempt: (a) => attempts.push(a) });
  void pending.then(() => (started = true), () => {});
  await until(() => attempts.filter((a) => !a.ok).length, (n) => n >= 2, 'two failed ADDs while no agent runs', { context: agentLog });
  const failed = attempts.find((a) => !a.ok)!;
  t.is(failed.error?.code, 11, 'CNI "try again later"');
  t.regex(failed.error?.msg ?? '', /no mesh-agent answers on this node \(.*cni\.sock: ECONNREFUSED\), and pod plain\/annotated-g is meshed by its own annotation mesh-agent.io\/inject \(read from the API server; inbound policy all-authenticated\)/);
  t.false(started, 'the pod is not started');
  t.is(cluster.api.get('Pod', PLAIN, 'annotated-g')?.status?.phase, 'Pending');
  const reads = cluster.api.requests.filter((r) => r.resource === 'pods' && r.user !== undefined);
  t.true(reads.length >= 2 && reads.every((r) => r.user === 'system:serviceaccount:mesh-agent:mesh-agent-cni' && r.status === 200), JSON.stringify(reads));
  mesh.startAgent(node);
  await pending;
  t.true(attempts.at(-1)!.ok, 'the ADD passes once the agent is back');
});
