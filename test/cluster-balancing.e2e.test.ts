// Service discovery and per-request balancing on a simulated 2-node cluster, through the real
// datapath: the controller watches the stand-in API server and streams Services, slices and pods
// to an agent on every node; a meshed pod's calls to a ClusterIP are balanced across the
// Service's pods on both nodes, while an unmeshed pod gets what the kube-proxy stand-in picks.
// Issue 12's proofs: the spread, a slow endpoint, scaling under load, failure accrual, dst_*
// labels for pods of both nodes, diagnostics endpoints, and the controller going away.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod, type SimService } from '../src/sim/index.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { LINKERD_EWMA } from '../src/routing/balancer.ts';
import { DEFAULT_ACCRUAL } from '../src/routing/failure-accrual.ts';
import { LATENCY_BUCKETS } from '../src/telemetry/recorder.ts';
import { JsonLines } from './helpers/procs.ts';
import { parseExposition, select, type Exposition } from './helpers/prom-text.ts';
import { looksUniform } from './helpers/stats.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let echo: SimService;
let flaky: SimService;
let client: SimPod;
let plain: SimPod;
/** Backend processes by pod name: their stdin takes switches ({"delayMs":50}, {"status":503}). */
const backends = new Map<string, { pod: SimPod; io: JsonLines }>();

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function backend(node: number, deployment: string, labels: Record<string, string>, ready = true): Promise<SimPod> {
  if (!cluster) throw new Error('no cluster');
  const pod = await cluster.addPod(node, {
    deployment, namespace: NS, labels, ready,
    ports: [{ name: 'grpc', containerPort: 50051 }, { name: 'http', containerPort: 8080 }],
  });
  const proc: ChildProcess = pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', pod.name, '--grpc', '50051', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const io = new JsonLines(proc);
  await io.waitFor((o) => o.listening, 30_000, `${pod.name} listening`);
  backends.set(pod.name, { pod, io });
  return pod;
}

async function tell(name: string, cmd: object): Promise<any> {
  const b = backends.get(name)!;
  const n = b.io.lines.length;
  b.io.child.stdin!.write(JSON.stringify(cmd) + '\n');
  return b.io.waitFor((o) => b.io.lines.indexOf(o) >= n && (o.ok || o.count), 10_000, `${name} answering ${JSON.stringify(cmd)}`);
}

/** Runs the load client in a pod to the end: {byName, failures, errors, ms}. */
async function load(pod: SimPod, args: string[]): Promise<{ byName: Record<string, number>; failures: number; errors: Record<string, number> }> {
  const r = await pod.exec(process.execPath, [SERVICE_TOOLS_PATH, 'load', ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`load ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!).done;
}

/** A paced load client that keeps running; ticks arrive every tickMs with what finished in them. */
function steady(pod: SimPod, args: string[]) {
  const proc = pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'load', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const io = new JsonLines(proc);
  const ticks: Array<{ at: number; byName: Record<string, number>; failures: number; errors: Record<string, number> }> = [];
  const seen = new Set<unknown>();
  const poll = setInterval(() => {
    for (const o of io.lines) if (o.tick && !seen.has(o)) {
      seen.add(o);
      ticks.push({ at: Date.now(), ...o.tick });
    }
  }, 20);
  return {
    ticks,
    async stop() {
      proc.stdin!.end();
      try {
        await io.waitFor((o) => o.stopped, 30_000, 'the load client to stop');
      } finally {
        // Also when it did not stop: a poll left running keeps the test's process alive.
        clearInterval(poll);
        for (const o of io.lines) if (o.tick && !seen.has(o)) ticks.push({ at: Date.now(), ...o.tick });
      }
    },
  };
}

function sum(ticks: Array<{ byName: Record<string, number> }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of ticks) for (const [k, v] of Object.entries(t.byName)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** The agent's balancer for a Service port, from the controller's relay (what an operator runs). */
async function endpoints(node: string, svc: string, port: number): Promise<any[]> {
  const { mesh } = need();
  const r = await mesh.cli(['diagnostics', 'endpoints', `svc/${svc}`, '-n', NS, '--node', node, '-o', 'json', '--controller', mesh.controllerAddr]);
  if (r.code !== 0) throw new Error(`diagnostics endpoints exited ${r.code}: ${r.stderr}`);
  const ports = JSON.parse(r.stdout).agents[0].result.ports;
  return ports.find((p: any) => p.ref.port === port)?.endpoints ?? [];
}

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  client = await cluster.addPod(0, { name: 'client', namespace: NS });
  plain = await cluster.addPod(0, { name: 'plain', namespace: NS, annotations: { 'mesh-agent.io/inject': 'disabled' } });
  await backend(0, 'echo', { app: 'echo' });
  await backend(1, 'echo', { app: 'echo' });
  await backend(1, 'echo', { app: 'echo' });
  await backend(0, 'flaky', { app: 'flaky' });
  await backend(1, 'flaky', { app: 'flaky' });
  echo = cluster.addService({ name: 'echo', namespace: NS, selector: { app: 'echo' }, ports: [{ name: 'grpc', port: 50051, targetPort: 'grpc' }, { name: 'http', port: 80, targetPort: 'http' }] });
  flaky = cluster.addService({
    name: 'flaky', namespace: NS, selector: { app: 'flaky' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }],
    annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive', 'balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio': '0' },
  });
  await cluster.settled();
  mesh = await startMesh(cluster);
  // Every agent knows both Services with all their endpoints before anything is measured.
  await mesh.waitAgents((s) => s.discovery.services >= 3 && s.discovery.endpoints >= 5 && s.pods.some((p: any) => p.meshed), 'discovery of echo and flaky');
});

test.after.always(async () => {
  await mesh?.stop();
  await cluster?.destroy();
});

const names = (o: Record<string, number>) => Object.keys(o).sort();
const echoPods = () => [...backends.keys()].filter((n) => n.startsWith('echo-')).sort();

test.serial('one gRPC channel from a meshed pod spreads 3,000 requests over 3 pods on 2 nodes, each at least half its share; from an unmeshed pod, kube-proxy sends the channel to one pod', async (t) => {
  need();
  const meshed = await load(client, ['--grpc', `${echo.clusterIP}:50051`, '--requests', '3000', '--concurrency', '10']);
  t.is(meshed.failures, 0, JSON.stringify(meshed.errors));
  t.deepEqual(names(meshed.byName), echoPods());
  // Every pod takes at least half its fair share. Not a chi-square here: P2C over peak EWMA
  // steers away from a pod whose answers were slower in the last ~10 s, and on a loaded machine
  // (CI keeps a core busy) one server process stalling for 100 ms makes it slower for real
  // (estimates of 100-180 ms were seen at load 12). The even spread of equal endpoints, with a
  // chi-square at p = 0.01, is proven on the balancer with a simulated clock
  // (test/routing-balancer.test.ts); the bench reports this spread on a quiet machine.
  const eps = await endpoints(cluster!.nodes[0]!.name, 'echo', 50051);
  for (const [name, n] of Object.entries(meshed.byName)) t.true(n >= 3000 / 3 / 2, `${name}: ${n} of 3000; ${JSON.stringify(meshed.byName)}; balancer: ${JSON.stringify(eps)}`);
  t.log(`spread ${JSON.stringify(meshed.byName)} (chi-square at p = 0.01 ${looksUniform(Object.values(meshed.byName), 0.01) ? 'passes' : 'fails'}); EWMA ms ${eps.map((e) => e.ewmaMs.toFixed(1)).join(', ')}`);

  const direct = await load(plain, ['--grpc', `${echo.clusterIP}:50051`, '--requests', '300', '--concurrency', '10']);
  t.is(direct.failures, 0, JSON.stringify(direct.errors));
  t.is(names(direct.byName).length, 1, `one channel, one connection, one pod: ${JSON.stringify(direct.byName)}`);
});

test.serial('requests to a Service carry dst_service and the chosen pod\'s labels, for a pod on this node and on the other', async (t) => {
  const { cluster, mesh } = need();
  const metrics = await mesh.agentMetrics(cluster.nodes[0]!);
  const sent = metrics.split('\n').filter((l) => l.startsWith('response_total{') && l.includes('direction="outbound"') && l.includes('dst_service="echo"'));
  const podOf = (name: string) => backends.get(name)!.pod;
  for (const name of echoPods()) {
    const line = sent.find((l) => l.includes(`dst_pod="${name}"`));
    t.truthy(line, `no outbound series to ${name} (${podOf(name).ip}):\n${sent.join('\n')}`);
    t.regex(line!, /authority="echo\.shop\.svc\.cluster\.local:50051"/);
    t.regex(line!, /dst_deployment="echo"/);
    t.regex(line!, new RegExp(`target_addr="${podOf(name).ip.replaceAll('.', '\\.')}:50051"`));
  }
  const nodesOfPods = new Set(echoPods().map((n) => podOf(n).ip.split('.')[2]));
  t.is(nodesOfPods.size, 2, 'the pods are on both nodes');
  // The balancer's endpoints, as Linkerd's gauge names them.
  const gauge = metrics.split('\n').find((l) => l.startsWith('outbound_http_balancer_endpoints{') && l.includes('parent_name="echo"') && l.includes('parent_port="50051"') && l.includes('endpoint_state="ready"'));
  t.truthy(gauge, metrics.split('\n').filter((l) => l.includes('balancer')).join('\n'));
  t.regex(gauge!, / 3$/);
});

test.serial('diagnostics endpoints lists what the balancer holds: pod, node, state, EWMA, requests', async (t) => {
  const { cluster } = need();
  const eps = await endpoints(cluster.nodes[0]!.name, 'echo', 50051);
  t.deepEqual(eps.map((e) => e.pod).sort(), echoPods());
  t.deepEqual([...new Set(eps.map((e) => e.node))].sort(), cluster.nodes.map((n) => n.name).sort());
  for (const e of eps) {
    t.is(e.state, 'ready');
    t.is(e.port, 50051);
    t.true(e.requests >= 500, `${e.pod}: ${e.requests} requests`);
    t.true(e.ewmaMs > 0);
  }
});

/** The node's agent's metrics, for latency histograms read later at a bound known then. */
async function metricsOf(node: number): Promise<Exposition> {
  const { cluster, mesh } = need();
  return parseExposition(await mesh.agentMetrics(cluster.nodes[node]!));
}

/** Responses of `pod` to echo's HTTP port that took over `le` ms (a bucket bound), in `e`. */
function answersOver(e: Exposition, pod: string, le: number): number {
  const match = { direction: 'outbound', authority: `echo.${NS}.svc.cluster.local:80`, dst_pod: pod };
  const total = select(e, 'response_latency_ms_count', match).reduce((a, x) => a + x.value, 0);
  return total - select(e, 'response_latency_ms_bucket', { ...match, le: String(le) }).reduce((a, x) => a + x.value, 0);
}

test.serial('a pod that answers 50 ms slower gets under 10% after a warm-up, and its share comes back when it is fast again', async (t) => {
  const { cluster } = need();
  const slow = echoPods()[2]!;
  const fast = echoPods().filter((n) => n !== slow);
  await tell(slow, { delayMs: 50 });
  const run = steady(client, ['--http', `${echo.clusterIP}:80`, '--rps', '100', '--tick-ms', '250']);
  try {
    // The claim's premise is that the other pods answer fast. On a loaded machine they sometimes
    // do not: one answer of a "fast" pod delayed 70 ms by the scheduler is, to peak EWMA, a pod
    // slower than the slow one, and P2C prefers the slow pod over it for tau x ln(70/50), as
    // Linkerd's would. Traced at load 5-8, such answers came 1-6 times in 5 s and moved the
    // slow pod's share of a 5 s window to 6-12.5% (docs/routing.md). So a window counts only when
    // the agent shows the premise held all through it: at its start every proxy carrying this load
    // ranks the slow pod's estimate above the fast pods', and no fast pod answered slower than
    // that estimate can have decayed to by the window's end (the latency histogram). Then a
    // balancer that avoids the costlier endpoint sends the slow pod nothing; one that ignores the
    // estimates sends it a third.
    t.timeout(7 * 60_000, 'up to 180 s for a window in which the fast pods answered fast, 90 s for the share to come back');
    const tau = LINKERD_EWMA.decayMs;
    let lastSlow = -1;
    const windows: string[] = [];
    const measured = await until(async () => {
      // A warm-up: the balancer has just seen the slow pod answer (again), its estimate at its peak.
      await until(() => run.ticks.findLastIndex((x) => (x.byName[slow] ?? 0) > 0), (i) => i > lastSlow, 'a request to the slow pod', { ms: 60_000, intervalMs: 50 });
      lastSlow = run.ticks.findLastIndex((x) => (x.byName[slow] ?? 0) > 0);
      const before = await metricsOf(0);
      const startedAt = Date.now();
      const from = run.ticks.length;
      const eps = await endpoints(cluster.nodes[0]!.name, 'echo', 80);
      await until(() => run.ticks.length - from, (n) => n >= 21, '5 s of load', { ms: 60_000, intervalMs: 100 });
      const window = run.ticks.slice(from + 1, from + 21);
      const elapsed = Date.now() - startedAt;
      // The proxies this load's connection runs on, and what each held at the start.
      const slowEp = eps.find((e) => e.pod === slow);
      const loaded = (slowEp?.workers ?? []).map((w: any) => w.worker).filter((w: number) => eps.some((e) => e.workers.find((x: any) => x.worker === w)?.requests > 0));
      const est = (pod: string, w: number): number => eps.find((e) => e.pod === pod)?.workers.find((x: any) => x.worker === w)?.ewmaMs ?? NaN;
      const ranked = loaded.length > 0 && loaded.every((w: number) => fast.every((f) => est(f, w) < est(slow, w)));
      const slowEst = ranked ? Math.min(...loaded.map((w: number) => est(slow, w))) : 0;
      // The slowest answer a fast pod may give without overtaking the slow pod's decayed estimate.
      const le = [...LATENCY_BUCKETS].reverse().find((b) => b < slowEst * Math.exp(-elapsed / tau)) ?? 0;
      const after = await metricsOf(0);
      const byName = sum(window);
      const total = Object.values(byName).reduce((a, b) => a + b, 0);
      const fastOver = fast.map((f) => answersOver(after, f, le) - answersOver(before, f, le));
      const estimates = loaded.map((w: number) => `proxy ${w}: ${[slow, ...fast].map((p) => est(p, w).toFixed(1)).join(', ')} ms`).join('; ');
      const note = `slow pod ${byName[slow] ?? 0}/${total} in ${(elapsed / 1000).toFixed(1)} s; estimates at the start (slow, fast) ${estimates}; ${ranked ? `fast answers over ${le} ms: ${fastOver.join('+')}` : 'a fast pod ranked above the slow one'}`;
      windows.push(note);
      return { byName, total, clean: ranked && le >= 5 && total > 0 && fastOver.every((n) => n === 0) };
    }, (w) => w.clean, 'a 5 s window in which the fast pods answered fast (the machine delayed them in every one)', { ms: 180_000, intervalMs: 0, context: () => windows.join('; ') });
    t.log(windows.join('\n'));
    t.true((measured.byName[slow] ?? 0) / measured.total < 0.1, `slow pod's share ${measured.byName[slow] ?? 0}/${measured.total}; windows: ${windows.join('; ')}`);

    await tell(slow, { delayMs: 0 });
    // Its estimate decays with Linkerd's 10 s time constant until a request finds it fast.
    const back = run.ticks.length;
    await until(() => {
      const recent = run.ticks.slice(Math.max(back, run.ticks.length - 8));
      const s = sum(recent);
      const n = Object.values(s).reduce((a, b) => a + b, 0);
      return recent.length === 8 ? (s[slow] ?? 0) / n : 0;
    }, (share) => share > 0.2, 'the fast-again pod to take over 20% of 2 s of requests', { ms: 90_000, intervalMs: 250 });
    t.pass();
  } finally {
    await run.stop();
  }
  t.is(run.ticks.reduce((a, x) => a + x.failures, 0), 0, JSON.stringify(run.ticks.filter((x) => x.failures > 0)));
});

test.serial('failure accrual ejects a pod answering 503 and probes it after the backoff', async (t) => {
  t.timeout(4 * 60_000, 'up to 60 s to eject on every proxy, the longest backoff (60 s) before probation, 20 s for the probe');
  const { cluster } = need();
  const [good, bad] = [...backends.keys()].filter((n) => n.startsWith('flaky-')).sort();
  const node = cluster.nodes[0]!.name;
  await tell(bad!, { status: 503 });
  const badEndpoint = async () => (await endpoints(node, 'flaky', 80)).find((e) => e.pod === bad);
  const state = async () => (await badEndpoint())?.state;
  // Each of the agent's proxies balances on its own (docs/proxy.md, "Workers"), with its own
  // failure accrual; a load's one connection lands on one of them. So the phases below wait for
  // every proxy's view of the bad pod, not the merged one: a proxy that never ejected it would
  // still send it requests while another probes.
  const states = async (): Promise<string[]> => {
    const e = await badEndpoint();
    return e?.workers ? e.workers.map((w: { state: string }) => w.state) : [e?.state];
  };
  // What each proxy's balancer holds for both pods, for a failure's message.
  let held = '';
  const holding = async (): Promise<string[]> => {
    const eps = await endpoints(node, 'flaky', 80);
    held = eps.map((e) => `${e.pod === bad ? 'bad' : 'good'}: ${(e.workers ?? [e]).map((w: any) => `${w.state} ${Number(w.ewmaMs).toFixed(1)} ms ${w.requests} req`).join(' | ')}`).join('; ');
    const b = eps.find((e) => e.pod === bad);
    return b === undefined ? [] : (b.workers ?? [b]).map((w: { state: string }) => w.state);
  };
  // Failure accrual is for the pod that fails fast: peak EWMA alone would prefer it. The good pod
  // answers 200 ms late meanwhile, so every proxy prefers the bad pod as soon as its estimate is
  // under that. With two pods P2C compares the same two every time, so a bad pod whose first
  // answer on some proxy was slow (a new connection on a loaded machine; a failure counts as
  // 1 s) gets nothing there until its estimate decays below the good pod's, tau x ln(peak /
  // good): 53 s for a 1 s peak against a 5 ms good pod (a run on a loaded machine timed out at
  // 60 s, one proxy still 'ready'); against 200 ms, 16 s. A new connection per request lands on
  // a proxy the kernel picks each time, so every proxy gets requests.
  await tell(good!, { delayMs: 200 });
  await until(async () => {
    await load(client, ['--http', `${flaky.clusterIP}:80`, '--requests', '20', '--concurrency', '2', '--new-connections']).catch(() => null);
    return holding();
  }, (ss) => ss.length > 0 && ss.every((s: string) => s === 'ejected' || s === 'probation'), 'the 503 pod ejected by every proxy', { ms: 60_000, intervalMs: 10, context: () => held });
  await tell(good!, { delayMs: 0 });
  const count = async (name: string) => (await tell(name, { count: true })).count.http as number;
  // While it stays ejected, requests go to the other pod only. A slow machine may outlast the
  // penalty meanwhile: only a run that began and ended in the same ejection proves anything.
  const from = await badEndpoint();
  const before = await count(bad!);
  const r = await load(client, ['--http', `${flaky.clusterIP}:80`, '--requests', '20', '--concurrency', '1']);
  const to = await badEndpoint();
  if (from?.state === 'ejected' && to?.state === 'ejected' && to.ejections === from.ejections) {
    t.deepEqual(r.byName, { [good!]: 20 });
    t.is(await count(bad!), before);
  }
  // After the backoff: one probe, which fails, so ejected again. The backoff is 1 s (Linkerd's
  // minimum penalty) for a proxy ejecting the pod for the first time, but one that ejected it
  // early may have probed it (and failed) while the loop above waited for the others, each time
  // doubling its backoff up to the maximum: with no request meanwhile, every proxy is in
  // probation within that (this Service's jitter is 0).
  await until(states, (ss) => ss.every((s) => s === 'probation'), 'probation after the backoff, on every proxy', { ms: DEFAULT_ACCRUAL.maxPenaltyMs + 10_000, intervalMs: 100 });
  const probeFrom = await count(bad!);
  await until(async () => {
    await load(client, ['--http', `${flaky.clusterIP}:80`, '--requests', '5', '--concurrency', '1']).catch(() => null);
    return count(bad!);
  }, (n) => n > probeFrom, 'the probe', { ms: 20_000, intervalMs: 10 });
  t.is(await count(bad!), probeFrom + 1, 'exactly one probe');
  t.not(await state(), 'ready', 'the failed probe ejects it again');
  await tell(bad!, { status: 200 });
});

test.serial('scale 3 -> 1 -> 3 under steady load: no failed request; new pods get traffic within 2 s of being ready', async (t) => {
  const { cluster } = need();
  const node0 = cluster.nodes[0]!.name;
  const run = steady(client, ['--grpc', `${echo.clusterIP}:50051`, '--rps', '100', '--tick-ms', '100']);
  try {
    await until(() => names(sum(run.ticks)).length, (n) => n === 3, 'all three pods in the load', { ms: 20_000 });
    // Scale down as Kubernetes does: the pods leave the endpoints first, then are killed once
    // nothing is sent to them any more.
    const gone = echoPods().filter((n) => backends.get(n)!.pod.ip.split('.')[2] !== cluster.nodes[0]!.nodeIp.split('.')[3]).slice(0, 2);
    t.is(gone.length, 2);
    for (const n of gone) cluster.setPodReady(backends.get(n)!.pod, false);
    await cluster.settled();
    await until(() => endpoints(node0, 'echo', 50051), (eps) => eps.length === 1, 'the balancer down to one pod', { ms: 10_000 });
    for (const n of gone) {
      const b = backends.get(n)!;
      await cluster.removePod(b.pod);
      backends.delete(n);
    }
    const oneFrom = run.ticks.length;
    await until(() => run.ticks.length - oneFrom, (k) => k >= 10, '1 s on one pod', { ms: 20_000, intervalMs: 50 });
    t.deepEqual(names(sum(run.ticks.slice(oneFrom))), echoPods());

    // Scale up: the new pods' servers listen first, then their Ready condition turns true.
    const added = [await backend(1, 'echo', { app: 'echo' }, false), await backend(1, 'echo', { app: 'echo' }, false)];
    const readyAt = Date.now();
    for (const p of added) cluster.setPodReady(p, true);
    for (const p of added) {
      const tick = await until(() => run.ticks.find((x) => x.at >= readyAt && (x.byName[p.name] ?? 0) > 0), (x) => x !== undefined, `traffic to ${p.name}`, { ms: 20_000, intervalMs: 20 });
      t.true(tick!.at - readyAt <= 2000, `${p.name} got its first request ${tick!.at - readyAt} ms after it became ready`);
    }
  } finally {
    await run.stop();
  }
  const failures = run.ticks.reduce((a, x) => a + x.failures, 0);
  t.is(failures, 0, JSON.stringify(run.ticks.filter((x) => x.failures > 0).map((x) => x.errors)));
});

test.serial('with the controller stopped, a running agent keeps balancing over the last endpoints it heard of', async (t) => {
  const { cluster, mesh } = need();
  await mesh.stopController();
  await until(() => mesh.agentStatus(cluster.nodes[0]!), (s) => s.discovery.state !== 'synced', 'the agent to notice', { ms: 20_000 });
  const r = await load(client, ['--grpc', `${echo.clusterIP}:50051`, '--requests', '600', '--concurrency', '10']);
  t.is(r.failures, 0, JSON.stringify(r.errors));
  t.deepEqual(names(r.byName), echoPods());
  const s = await mesh.agentStatus(cluster.nodes[0]!);
  t.true(s.discovery.everSynced);
  t.true(s.discovery.endpoints >= 5, JSON.stringify(s.discovery));
  await mesh.startController();
  await mesh.waitAgents((st) => st.discovery.state === 'synced', 'agents back on the controller');
});
