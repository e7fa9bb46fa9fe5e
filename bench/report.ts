// The benchmark report: its JSON shape, the targets (issues 6, 12, 16), and the markdown rendering.
// Pure: run.ts measures, this file judges and formats.

/** mtls: through the mesh to a meshed pod of another node, over the agents' mTLS tunnel (docs/identity.md). */
export const MODES = ['direct', 'mesh', 'nginx', 'mtls'] as const;
export type Mode = (typeof MODES)[number];

export interface Metric {
  name: string;
  unit: string;
  /** Which way is better; ratios are always value/direct. */
  better: 'higher' | 'lower';
  /** A value a path may leave out (its notes say why), as a spread with a pod that got nothing. */
  optional?: boolean;
  values: Partial<Record<Mode, number>>;
}

export interface ScenarioResult {
  id: string;
  title: string;
  /** The command or generator, in one line, for the reader who wants to reproduce it. */
  load: string;
  metrics: Metric[];
  /** CPU the agent (mesh) or nginx (nginx) used during the run, in % of one core. */
  proxyCpuPercent: Partial<Record<Mode, number>>;
  /** Time the proxy's main thread was runnable but waiting for a CPU, in % of the run. */
  proxyStarvedPercent: Partial<Record<Mode, number>>;
  notes: string[];
  /** A scenario without direct and nginx paths (discovery-scale): its values sit under `mesh` and get a table of their own. */
  standalone?: boolean;
  /**
   * Paths whose load failed its error bound in the run and again in its one retry, both
   * failures in order: they have no values, and the targets that need them are not run.
   * Absent in reports written before failures were reported (such a run ended instead).
   */
  failed?: Partial<Record<Mode, PathFailure[]>>;
  /** Paths whose first run failed its error bound and whose retry passed: their values are the retry's. */
  retried?: Partial<Record<Mode, PathFailure>>;
}

/** A load that failed its error bound (bench/load-failure.ts). */
export interface PathFailure {
  /** One line: the load, its counts and the bound. */
  reason: string;
  counts: Record<string, number>;
  /** The tail of the load tool's output. */
  output?: string;
}

export interface TargetResult {
  id: string;
  target: string;
  /** What was measured, formatted. */
  measured: string;
  /** 'not judged': a --quick run (1 s per path) measures too little to hold against a target. */
  status: 'met' | 'missed' | 'not run' | 'not judged';
  /** When missed: what limits it. */
  limit?: string;
  /** When not run although its scenario ran: the path it needs that failed its load, and how. */
  reason?: string;
}

export interface Report {
  version: 1;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  /** Seconds per run; absent in reports written before it was recorded. */
  seconds?: number;
  /** The commit measured (`git rev-parse --short HEAD`, "+dirty" with uncommitted changes); absent in older reports. */
  commit?: string;
  /** Proxies on each side: the agent's (--proxy-workers) and nginx's reverse-proxy processes; absent in older reports (one). */
  proxies?: number;
  machine: { cpus: number; cpuModel: string; kernel: string; node: string; loadAvgAtStart: number[] };
  scenarios: ScenarioResult[];
  targets: TargetResult[];
}

/** Seconds per run of a full run (the default). */
export const FULL_RUN_SECONDS = 10;

/**
 * Figures this harness does not measure, from dated one-off runs: a report cites them with
 * their date and the commit that recorded them, never as its own.
 */
export interface Reference {
  date: string;
  commit: string;
  how: string;
  figure: string;
}

export const REFERENCES = {
  keepAliveProfile: {
    date: '2026-11-22',
    commit: '8bf2d94',
    how: 'strace -c and a CPU profile of the agent under the keep-alive load on a 2-core machine',
    figure: 'the agent made the same system calls per request as nginx (one read and one write on each side: 25,120 reads and 25,120 writes in 3 s, one epoll_wait per ~50 events), and about 70% of its CPU profile was inside write(), the kernel\'s TCP and veth work that nginx pays too; the other ~30% was JavaScript on one thread (parsing both heads, Node\'s stream bookkeeping, telemetry), where nginx spends a few percent in C',
  },
  kernelSpliceCpu: {
    date: '2026-11-22',
    commit: '128f8fb',
    how: 'opaque-throughput runs with and without MESH_BENCH_AGENT_ARGS=--kernel-splice',
    figure: 'the experimental --kernel-splice (sockhash + sk_skb redirect, docs/proxy.md), which moves the copy into the kernel, cut the agent\'s CPU from ~92% to ~11% of a core while throughput stayed about the same: both TCP legs still go through the stack',
  },
  requestCost: {
    date: '2026-12-01',
    commit: '31b52cf',
    how: 'per-thread /proc user and system times of the agent and nginx under cpu-http1\'s 1,000 req/s load, perf -g and an idle strace of the agent, on a loaded 2-core machine (docs/benchmarks.md, "Where a request\'s and a connection\'s CPU goes")',
    figure: 'idle work was 1.3-1.5 CPU-ms a second; per 1,000 requests after a warm-up the agent\'s two proxy threads spent 26-43 CPU-ms in user space and 19-34 in the kernel, nginx 12-17 and 24-27: the gap is user space, and perf spread it over Node\'s per-read and per-wake-up machinery (V8 builtins 14%, Node\'s C++ and libuv 8%, its stream JavaScript 5%, malloc 3%) with the agent\'s own JavaScript at 6%, no hot spot; reading the HTTP/1 upstreams into one shared buffer (net onread) did not measurably change it',
  },
  addonFloor: {
    date: '2026-12-02',
    commit: '1271e46',
    how: 'bench/h1-floor.ts\'s addon-c and addon-js forwarders (bench/native/poll-forwarder.cc: Node accepts and dials, then libuv poll handles on Node\'s loop read and write the two sockets from C++; three runs of 4 interleaved rounds) on a 2-core machine at load average 0.3-2.8 (docs/benchmarks.md, "The floor with the sockets driven from C++")',
    figure: 'with one JavaScript call per read over a shared buffer (finding the end of the head and a response\'s status), the medians per 1,000 requests at 1,000 / 5,000 / 10,000 req/s were 28.0-29.5 / 19.5-20.3 / 18.3-18.6 CPU-ms against nginx\'s 32.0-35.5 / 22.0-24.3 / 19.1-23.5 and the net floor\'s 40.5-43.5 / 26.1-29.1 / 23.6-26.6, with two reads and two writes a request: the floor\'s excess over nginx is Node\'s streams, and it goes with them. The agent\'s own parsing, routing and telemetry (5-18 CPU-ms of user space per 1,000 above the floor at 1,000 req/s) would remain',
  },
  nativeIo: {
    date: '2026-12-03',
    commit: 'fabb991',
    how: 'node bench/run.ts --only http1-keepalive,http1-close,cpu-http1 without (A) and with (B) MESH_BENCH_AGENT_ARGS=--native-io, A B B A, on a 2-core machine at load average 0.6-1.9 (docs/benchmarks.md, "The agent with its sockets driven from C++")',
    figure: 'with its HTTP/1 sockets read and written from C++ (--native-io, the default since), the agent spent 0.70-0.81 of its CPU per request without at 1,000 req/s, 0.79-0.80 at 5,000 and 0.84-0.93 at 10,000, and 1.08-1.53 of nginx\'s (1.27-1.92 without); keep-alive reached 0.88-0.92 of nginx\'s req/s (0.66-0.70 without) and a new connection per request 0.44 (0.43-0.50 without). What is left above nginx is the agent\'s own JavaScript per request (parsing both heads, routing, the telemetry event: about 5 us a request as profiled) and, at low rates, each of two proxy threads waking for its own requests',
  },
  connectionCost: {
    date: '2026-11-30',
    commit: '0b16cb8',
    how: 'a CPU profile of the agent under conn-rate with one proxy on a 2-core machine (docs/benchmarks.md, "Where a request\'s and a connection\'s CPU goes")',
    figure: 'the upstream connect() was 39% of the sampled time (the TCP handshake to the server pod runs inside it, through the veth, conntrack and the nftables chains, as for nginx), the greeting\'s write 17%, close() 10%, the datapath lookup 5%, accepting and building two Node sockets about 5%, telemetry 3%: a connection costs mostly the kernel\'s two TCP connections, which nginx pays as well, and Node\'s per-socket machinery',
  },
  idleMemoryBreakdown: {
    date: '2026-11-30',
    commit: 'd0bd5a0',
    how: 'process.memoryUsage() after importing each module in turn into a bare Node 24 (the compiled dist/, three runs)',
    figure: 'Node alone was 43.4-43.8 MB of RSS; node:tls added about 10 MB and node:http2 about 5 MB more (the HTTP/2 forwarder, the tunnel, the controller link), prom-client about 11 MB, the agent\'s own compiled modules about 5 MB and the CLI 1 MB: about 75 MB before the agent runs anything. This scenario runs 2 proxies, and the second is a worker thread with a V8 heap of its own, which memory-cluster measured at 17-19 MB then (docs/benchmarks.md, "Memory as installed", has the breakdown since each worker gives back the young generation its start-up grew). The installed (cluster-mode) agent uses its own lean Kubernetes client, not @kubernetes/client-node',
  },
  serviceCostGrpc: {
    date: '2026-12-01',
    commit: '09d192d',
    how: 'interleaved runs of the grpc-service load to the ClusterIP and to the three pod IPs on one bench environment with one proxy, 5-8 s each, the agent\'s /proc read and write system call counts and perf samples per request, on a 2-core machine loaded by other work (docs/benchmarks.md, "A Service against a pod IP")',
    figure: 'the agent made twice the system calls per request to the Service: 0.34-0.35 reads and 0.61-0.62 writes against 0.16-0.18 and 0.28-0.29 to the pod IPs, and spent 1.12-1.24x the CPU per request. A client connection\'s batch of streams goes to one pod\'s session on the pod-IP path, to all three on the Service path, so every read and write carries fewer frames; that is per-request balancing itself (Linkerd splits a batch the same way), not a cost of the balancer, whose own functions were not among the differences',
  },
  serviceCostHttp1: {
    date: '2026-12-01',
    commit: '09d192d',
    how: 'interleaved runs of the http1-service load to the ClusterIP and to the three pod IPs on one bench environment with one proxy, 5-8 s each, the agent\'s /proc system call counts, the servers\' voluntary context switches and perf samples per request, on a 2-core machine loaded by other work (docs/benchmarks.md, "A Service against a pod IP")',
    figure: 'the same system calls per request on both paths (2.00 reads and 2.00 writes) and 1.10-1.29x the CPU per request to the Service; about half of the extra samples were the kernel switching tasks (finish_task_switch and the wake-ups\' spinlocks), and the three servers went to sleep 0.79-0.85 times per request on the Service path against 0.45-0.74 on the pod-IP path, each sleep a wake-up paid for in the agent\'s next write to that server; the balancer and the upstream moves (picking, the pool\'s acquire and release, the exp of the decay) were about 1.5% of the Service path\'s samples',
  },
} satisfies Record<string, Reference>;

/** A difference in ms with its sign: +1.500 ms, or -2.165 ms when the mesh was the faster. */
function signedMs(ms: number): string {
  return `${ms < 0 ? '-' : '+'}${Math.abs(ms).toFixed(3)} ms`;
}

export function cite(r: Reference): string {
  return `From ${r.how} on ${r.date} (recorded in commit ${r.commit}; not measured by this run): ${r.figure}.`;
}

export function ratio(m: Metric, mode: Mode): number | undefined {
  const base = m.values.direct;
  const v = m.values[mode];
  if (base === undefined || v === undefined || base === 0) return undefined;
  return v / base;
}

function metricOf(scenarios: ScenarioResult[], id: string, name: string): Metric | undefined {
  return scenarios.find((s) => s.id === id)?.metrics.find((m) => m.name === name);
}

function cpuOf(scenarios: ScenarioResult[], id: string, mode: Mode, proxies = 1): { cpu?: number; starved?: number; proxies: number } {
  const s = scenarios.find((x) => x.id === id);
  return { cpu: s?.proxyCpuPercent[mode], starved: s?.proxyStarvedPercent?.[mode], proxies };
}

function cpuNote({ cpu, starved, proxies }: { cpu?: number; starved?: number; proxies: number }): string {
  if (cpu === undefined) return '';
  const wait = starved === undefined ? '' : ` and waited ${starved.toFixed(0)}% of the run for a CPU`;
  if (cpu >= 85 * proxies) return ` The agent used ${cpu.toFixed(0)}% of a core${wait}: ${proxies === 1 ? 'its single event loop is' : `its ${proxies} event loops are`} the limit.`;
  if (starved !== undefined && starved >= 20) return ` The agent used ${cpu.toFixed(0)}% of a core${wait}: it was starved by the load tools and servers sharing the cores, so this run does not measure the agent alone.`;
  return ` The agent used ${cpu.toFixed(0)}% of a core${wait}, so it was neither CPU-bound nor starved: it waited on something else (timers, the network, the upstream).`;
}

/**
 * A target this run has no numbers for: its scenario left out, or a path it needs (`modes` of
 * scenario `id`) failed its load, which `reason` then names.
 */
function notRun(id: string, target: string, scenarios: ScenarioResult[], scenario: string, modes: readonly Mode[]): TargetResult {
  const failed = failedPaths(scenarios).filter((f) => f.scenario.id === scenario && modes.includes(f.mode));
  const t: TargetResult = { id, target, measured: '-', status: 'not run' };
  return failed.length ? { ...t, reason: `a path it needs failed its load twice (${failed.map(lastFailure).join('; ')})` } : t;
}

/** Judges the issue-6 targets from a run's scenarios; a quick run's are shown, not judged. */
export function judgeTargets(scenarios: ScenarioResult[], run: { quick: boolean; proxies?: number }): TargetResult[] {
  const out = judgeFull(scenarios, run.proxies ?? 1);
  if (!run.quick) return out;
  return out.map((t) => (t.status === 'not run' ? t : { id: t.id, target: t.target, measured: t.measured, status: 'not judged' }));
}

function judgeFull(scenarios: ScenarioResult[], proxies: number): TargetResult[] {
  const out: TargetResult[] = [];

  const p99 = metricOf(scenarios, 'latency-1k', 'p99');
  if (p99?.values.mesh !== undefined && p99.values.direct !== undefined) {
    const added = p99.values.mesh - p99.values.direct;
    out.push({
      id: 'latency-1k-p99',
      target: 'at a fixed 1,000 req/s the mesh adds under 1 ms at p99',
      measured: `${signedMs(added)} (${p99.values.direct.toFixed(3)} → ${p99.values.mesh.toFixed(3)} ms)`,
      status: added < 1 ? 'met' : 'missed',
      limit: added < 1 ? undefined : 'This run does not measure where the tail comes from; the candidates are the agent\'s event loop pauses (garbage collection, a long tick) and sharing the cores with the load generator and the server.' + cpuNote(cpuOf(scenarios, 'latency-1k', 'mesh', proxies)),
    });
  } else out.push(notRun('latency-1k-p99', 'at a fixed 1,000 req/s the mesh adds under 1 ms at p99', scenarios, 'latency-1k', ['direct', 'mesh']));

  const ka = metricOf(scenarios, 'http1-keepalive', 'requests/s');
  if (ka?.values.mesh !== undefined && ka.values.nginx !== undefined) {
    const met = ka.values.mesh >= ka.values.nginx;
    out.push({
      id: 'http1-keepalive-vs-nginx',
      target: 'keep-alive HTTP/1 through the mesh reaches at least nginx\'s req/s',
      measured: `${fmt(ka.values.mesh)} vs nginx ${fmt(ka.values.nginx)} req/s (${((ka.values.mesh / ka.values.nginx) * 100).toFixed(0)}%)`,
      status: met ? 'met' : 'missed',
      limit: met ? undefined : cite(REFERENCES.keepAliveProfile) + (proxies === 1 ? ' A second proxy needs a free core; here wrk and the server use the other one.' : ` The agent ran ${proxies} proxies and nginx ${proxies} processes on the cores wrk and the server use too.`) + cpuNote(cpuOf(scenarios, 'http1-keepalive', 'mesh', proxies)),
    });
  } else out.push(notRun('http1-keepalive-vs-nginx', 'keep-alive HTTP/1 through the mesh reaches at least nginx\'s req/s', scenarios, 'http1-keepalive', ['mesh', 'nginx']));

  const bulk = metricOf(scenarios, 'opaque-throughput', 'throughput');
  if (bulk?.values.mesh !== undefined && bulk.values.direct !== undefined) {
    const r = bulk.values.mesh / bulk.values.direct;
    out.push({
      id: 'opaque-throughput-half',
      target: 'opaque throughput at least half of direct',
      measured: `${bulk.values.mesh.toFixed(2)} vs ${bulk.values.direct.toFixed(2)} Gbit/s (${(r * 100).toFixed(0)}%)`,
      status: r >= 0.5 ? 'met' : 'missed',
      limit: r >= 0.5 ? undefined : (bulk.values.nginx !== undefined ? `nginx\'s stream proxy, in C, reached ${((bulk.values.nginx / bulk.values.direct) * 100).toFixed(0)}% of direct in the same run. ` : '') + 'Every byte crosses two TCP connections instead of one and, by default, is copied into the agent\'s user space and back on one thread. ' + cite(REFERENCES.kernelSpliceCpu) + ' Half of direct needs the pod\'s socket to skip TCP too (sk_msg redirect between local sockets, as Cilium and merbridge do), not built.' + cpuNote(cpuOf(scenarios, 'opaque-throughput', 'mesh', proxies)),
    });
  } else out.push(notRun('opaque-throughput-half', 'opaque throughput at least half of direct', scenarios, 'opaque-throughput', ['direct', 'mesh']));

  const idle = metricOf(scenarios, 'memory', 'agent RSS idle');
  // Issue 16: 80 MB for one proxy, 15 more for each extra one (the bench's agent runs `proxies`).
  const idleBudget = 80 + 15 * (proxies - 1);
  const idleTarget = proxies > 1 ? `the agent under 80 MB idle, plus 15 MB per extra proxy (${proxies} proxies: ${idleBudget} MB)` : 'the agent under 80 MB idle';
  if (idle?.values.mesh !== undefined) {
    const met = idle.values.mesh < idleBudget;
    out.push({
      id: 'memory-idle',
      target: idleTarget,
      measured: `${idle.values.mesh.toFixed(1)} MB`,
      status: met ? 'met' : 'missed',
      limit: met ? undefined : cite(REFERENCES.idleMemoryBreakdown),
    });
  } else out.push(notRun('memory-idle', idleTarget, scenarios, 'memory', ['mesh']));

  const per = metricOf(scenarios, 'memory', 'per idle connection');
  if (per?.values.mesh !== undefined) {
    const met = per.values.mesh < 10;
    out.push({
      id: 'memory-per-connection',
      target: 'under 10 KB per idle connection',
      measured: `${per.values.mesh.toFixed(2)} KB`,
      status: met ? 'met' : 'missed',
      limit: met ? undefined : 'Each proxied connection is two Node sockets (a libuv handle, a JS object and read state each) plus the tunnel\'s bookkeeping; socket buffers belong to the kernel and are not in RSS.',
    });
  } else out.push(notRun('memory-per-connection', 'under 10 KB per idle connection', scenarios, 'memory', ['mesh']));

  const dp99 = metricOf(scenarios, 'discovery-scale', 'change to every agent p99 (full size)');
  const dPeak = metricOf(scenarios, 'discovery-scale', 'controller peak RSS (full size)');
  const dTarget = 'one EndpointSlice change reaches every one of 1,000 agents within 1 s at p99 (10,000 Services, 100,000 endpoints; issue 12)';
  if (dp99?.values.mesh !== undefined) {
    const met = dp99.values.mesh < 1000;
    out.push({
      id: 'discovery-change-p99', target: dTarget, measured: `${fmt(dp99.values.mesh)} ms`, status: met ? 'met' : 'missed',
      limit: met ? undefined : 'The change is timed from the file\'s rename, so it includes the controller noticing it (fs.watch, then a quiet period: RELOAD_DEBOUNCE_MS in src/discovery/resource-files.ts) and parsing that file, then one write per agent stream on one event loop; the notes give the other sizes, which show whether agents or endpoints drive it.',
    });
  } else out.push(notRun('discovery-change-p99', dTarget, scenarios, 'discovery-scale', ['mesh']));
  const mTarget = 'the controller under 1 GB at that size (peak RSS; issue 12)';
  if (dPeak?.values.mesh !== undefined) {
    const met = dPeak.values.mesh < 1024;
    out.push({
      id: 'discovery-memory', target: mTarget, measured: `${fmt(dPeak.values.mesh)} MB`, status: met ? 'met' : 'missed',
      limit: met ? undefined : 'The controller holds one line per object and one shared snapshot; the notes give the memory before any agent and at the other sizes.',
    });
  } else out.push(notRun('discovery-memory', mTarget, scenarios, 'discovery-scale', ['mesh']));

  // Issue 12: balancing across a Service must be even and cheap.
  for (const [svc, pod, what] of [['http1-service', 'http1-keepalive', 'keep-alive HTTP/1'], ['grpc-service', 'grpc', 'gRPC']] as const) {
    const spread = metricOf(scenarios, svc, 'spread');
    const sTarget = `${what} to a Service of 3 pods: the mesh's spread (largest / smallest share of requests per pod) at most 1.2`;
    if (spread?.values.mesh !== undefined) {
      const met = spread.values.mesh <= 1.2;
      out.push({
        id: `${svc}-spread`, target: sTarget,
        measured: `mesh ${fmt(spread.values.mesh)}${spread.values.direct !== undefined ? `, direct (kube-proxy, per connection) ${fmt(spread.values.direct)}` : ''}${spread.values.nginx !== undefined ? `, nginx (round robin) ${fmt(spread.values.nginx)}` : ''}`,
        status: met ? 'met' : 'missed',
        limit: met ? undefined : 'The balancer (power of two choices over peak EWMA) sends less to a pod whose answers were slower in the last few seconds (docs/routing.md); on a machine where the load generator, the three servers and the agent share two cores, one server descheduled now and then is slower for real. The requests per pod are in the notes.',
      });
    } else if (metricOf(scenarios, svc, 'requests/s')?.values.mesh !== undefined) {
      out.push({ id: `${svc}-spread`, target: sTarget, measured: 'mesh unbounded: a pod got no request', status: 'missed', limit: 'The requests per pod are in the notes.' });
    } else out.push(notRun(`${svc}-spread`, sTarget, scenarios, svc, ['mesh']));
    // The fair baseline (issue 12: "balancing must be cheap"): the same load, in the same scenario
    // and minute, spread by the client over the same three pods' IPs, so only the balancing differs.
    const rps = metricOf(scenarios, svc, 'requests/s')?.values;
    const viaPods = metricOf(scenarios, svc, 'requests/s to the pod IPs')?.values;
    const viaSvc = rps?.mesh;
    const viaPod = viaPods?.mesh;
    // For information: the one-pod comparison the target used before (a different load shape: one
    // client thread or process, one server process).
    const onePod = metricOf(scenarios, pod, 'requests/s')?.values.mesh;
    const onePodNote = viaSvc !== undefined && onePod !== undefined ? `; against one pod IP (${pod}), not judged: ${(viaSvc / onePod).toFixed(2)}×` : '';
    const directNote = rps?.direct !== undefined && viaPods?.direct !== undefined
      ? ` Without the mesh the same two loads compare at ${(rps.direct / viaPods.direct).toFixed(2)}× (direct: ${fmt(rps.direct)} through kube-proxy vs ${fmt(viaPods.direct)} req/s to the pod IPs).`
      : '';
    const cpu = metricOf(scenarios, svc, 'proxy CPU per request')?.values.mesh;
    const podCpu = metricOf(scenarios, svc, 'proxy CPU per request to the pod IPs')?.values.mesh;
    const cpuText = cpu !== undefined && podCpu !== undefined ? ` The agent's CPU per request: ${fmt(cpu)} µs to the Service, ${fmt(podCpu)} µs to the pod IPs (${(cpu / podCpu).toFixed(2)}×).` : '';
    const cTarget = `${what} through the mesh to a Service at least 0.9× of the same load spread by the client over the same 3 pods' IPs (balancing must be cheap)`;
    if (viaSvc !== undefined && viaPod !== undefined) {
      const r = viaSvc / viaPod;
      out.push({
        id: `${svc}-cost`, target: cTarget, measured: `${fmt(viaSvc)} vs ${fmt(viaPod)} req/s (${r.toFixed(2)}×)${onePodNote}`, status: r >= 0.9 ? 'met' : 'missed',
        limit: r >= 0.9 ? undefined : 'Per request the agent picks an endpoint and most requests move the keep-alive upstream between pods (HTTP/1) or open their stream on another pod\'s session (gRPC), which the pod-IP path never does (each client connection keeps its one upstream); the notes give the agent\'s system calls per request on both paths. ' + cite(svc === 'grpc-service' ? REFERENCES.serviceCostGrpc : REFERENCES.serviceCostHttp1) + cpuText + directNote + cpuNote(cpuOf(scenarios, svc, 'mesh', proxies)),
      });
    } else out.push(notRun(`${svc}-cost`, cTarget, scenarios, svc, ['mesh']));
  }

  // Issue 13: routing a request (its rule, a weighted backend, the retry bookkeeping) must be cheap.
  const route = metricOf(scenarios, 'http1-route', 'with/without')?.values.mesh;
  const rTarget = 'keep-alive HTTP/1 through the mesh to a Service with an HTTPRoute (a match, two weighted backends, retries on) at least 0.9× of the same Service without one';
  if (route !== undefined) {
    const withRoute = metricOf(scenarios, 'http1-route', 'requests/s')!.values.mesh!;
    const without = metricOf(scenarios, 'http1-route', 'requests/s without route')!.values.mesh!;
    out.push({
      id: 'http1-route-cost', target: rTarget, measured: `${fmt(withRoute)} vs ${fmt(without)} req/s (${route.toFixed(2)}×)`, status: route >= 0.9 ? 'met' : 'missed',
      limit: route >= 0.9 ? undefined : 'Per request the routed path finds the rule, picks a backend by weight and then its endpoint, keeps the request for a retry and counts it in the budget, and reports the route and backend metrics; the notes give the agent\'s CPU.' + cpuNote(cpuOf(scenarios, 'http1-route', 'mesh', proxies)),
    });
  } else out.push(notRun('http1-route-cost', rTarget, scenarios, 'http1-route', ['mesh']));

  out.push(...judgeEfficiency(scenarios, proxies));
  out.push(...judgeMtls(scenarios, proxies));
  return out;
}

/** Issue 14: what mTLS between nodes costs against the plaintext mesh, cross-node. */
function judgeMtls(scenarios: ScenarioResult[], proxies: number): TargetResult[] {
  const out: TargetResult[] = [];
  const vsPlain = (id: string, name: string, targetRatio: number, target: string, unit: string, limit: string) => {
    const m = metricOf(scenarios, id, name);
    if (m?.values.mtls === undefined || m.values.mesh === undefined) {
      out.push(notRun(`${id}-mtls`, target, scenarios, id, ['mesh', 'mtls']));
      return;
    }
    const r = m.values.mtls / m.values.mesh;
    out.push({ id: `${id}-mtls`, target, measured: `${fmt(m.values.mtls)} vs ${fmt(m.values.mesh)} ${unit} (${r.toFixed(2)}×)`, status: r >= targetRatio ? 'met' : 'missed', limit: r >= targetRatio ? undefined : limit + cpuNote(cpuOf(scenarios, id, 'mtls', 2 * proxies)) });
  };
  const why = 'Through the tunnel every byte is also encrypted and framed (TLS, then a CONNECT stream of the HBONE connection) by the client\'s agent and taken out again by the destination\'s, which also forwards it to the pod: a second agent on the path, where the plaintext mesh has one, and on this machine both share two cores with the load generator and the servers.';
  vsPlain('http1-cross', 'requests/s', 0.8, 'between nodes, keep-alive HTTP/1 over mTLS at least 0.8× the plaintext mesh (issue 14)', 'req/s', why);
  vsPlain('opaque-cross', 'throughput', 0.5, 'between nodes, opaque throughput over mTLS at least 0.5× the plaintext mesh (issue 14)', 'Gbit/s', why);
  const nc = metricOf(scenarios, 'newconn-cross', 'p50');
  const ncTarget = 'between nodes, a new connection over a warm tunnel adds at most 1 ms at p50 (time to the server\'s first byte, against direct; issue 14)';
  if (nc?.values.mtls !== undefined && nc.values.direct !== undefined) {
    const added = nc.values.mtls - nc.values.direct;
    out.push({
      id: 'newconn-cross-mtls', target: ncTarget,
      measured: `${signedMs(added)} (direct ${nc.values.direct.toFixed(3)}, plaintext mesh ${fmt(nc.values.mesh)}, mTLS ${nc.values.mtls.toFixed(3)} ms)`,
      status: added <= 1 ? 'met' : 'missed',
      limit: added <= 1 ? undefined : 'A new connection over a warm tunnel costs the client\'s agent the accept, the detection race and a CONNECT stream, and the destination\'s agent the stream, its checks and a connect to the pod, before the server\'s first byte can come back through both.' + cpuNote(cpuOf(scenarios, 'newconn-cross', 'mtls', 2 * proxies)),
    });
  } else out.push(notRun('newconn-cross-mtls', ncTarget, scenarios, 'newconn-cross', ['direct', 'mtls']));
  return out;
}

/** Issue 16: what a request, a connection and idle memory cost, against nginx and ztunnel's published figure. */
function judgeEfficiency(scenarios: ScenarioResult[], proxies: number): TargetResult[] {
  const out: TargetResult[] = [];
  const http1 = scenarios.find((x) => x.id === 'cpu-http1');
  const rates = http1?.metrics.filter((m) => m.values.mesh !== undefined && m.values.nginx !== undefined) ?? [];
  const rateOf = (m: Metric) => m.name.replace(/^CPU-ms per 1,000 at /, '');
  const vsNginx = 'keep-alive HTTP/1: the agent\'s CPU per request at or below nginx\'s, at each fixed rate';
  if (rates.length) {
    const worse = rates.filter((m) => m.values.mesh! > m.values.nginx!);
    out.push({
      id: 'cpu-http1-vs-nginx', target: vsNginx,
      measured: rates.map((m) => `${rateOf(m)}: ${fmt(m.values.mesh)} vs ${fmt(m.values.nginx)} CPU-ms per 1,000`).join('; '),
      status: worse.length === 0 ? 'met' : 'missed',
      limit: worse.length === 0 ? undefined : `At ${worse.map(rateOf).join(', ')} the agent spent ${worse.map((m) => `${(m.values.mesh! / m.values.nginx!).toFixed(1)}×`).join(', ')} nginx's CPU per request. ${cite(REFERENCES.nativeIo)} ${cite(REFERENCES.addonFloor)} ${cite(REFERENCES.requestCost)}`,
    });
  } else out.push(notRun('cpu-http1-vs-nginx', vsNginx, scenarios, 'cpu-http1', ['mesh', 'nginx']));

  const ztunnel = 'keep-alive HTTP/1: at most 60 CPU-ms per 1,000 requests (0.06 vCPU per 1,000 req/s, ztunnel\'s published figure), at each fixed rate';
  const mesh = http1?.metrics.filter((m) => m.values.mesh !== undefined) ?? [];
  if (mesh.length) {
    const over = mesh.filter((m) => m.values.mesh! > 60);
    out.push({
      id: 'cpu-http1-60ms', target: ztunnel,
      measured: mesh.map((m) => `${rateOf(m)}: ${fmt(m.values.mesh)}`).join('; '),
      status: over.length === 0 ? 'met' : 'missed',
      limit: over.length === 0 ? undefined : `Over at ${over.map(rateOf).join(', ')}. At low rates a request wakes the event loop on its own, where at higher ones one wake-up serves several: compare the rates in this run. ${cite(REFERENCES.nativeIo)} ${cite(REFERENCES.addonFloor)} ${cite(REFERENCES.requestCost)}`,
    });
  } else out.push(notRun('cpu-http1-60ms', ztunnel, scenarios, 'cpu-http1', ['mesh']));

  const conn = metricOf(scenarios, 'conn-rate', 'connections/s');
  const connTarget = 'new TCP connections per second through the mesh at least 0.5× nginx\'s';
  if (conn?.values.mesh !== undefined && conn.values.nginx !== undefined) {
    const r = conn.values.mesh / conn.values.nginx;
    out.push({
      id: 'conn-rate-half-nginx', target: connTarget, measured: `${fmt(conn.values.mesh)} vs nginx ${fmt(conn.values.nginx)} conn/s (${r.toFixed(2)}×)`, status: r >= 0.5 ? 'met' : 'missed',
      limit: r >= 0.5 ? undefined : cite(REFERENCES.connectionCost) + cpuNote(cpuOf(scenarios, 'conn-rate', 'mesh', proxies)),
    });
  } else out.push(notRun('conn-rate-half-nginx', connTarget, scenarios, 'conn-rate', ['mesh', 'nginx']));

  const one = metricOf(scenarios, 'memory-cluster', 'agent RSS idle, 1 proxy');
  const extra = metricOf(scenarios, 'memory-cluster', 'per extra proxy');
  const memTarget = 'the agent as installed (cluster mode) under 80 MB idle with one proxy, at most 15 MB per extra proxy';
  if (one?.values.mesh !== undefined && extra?.values.mesh !== undefined) {
    const met = one.values.mesh < 80 && extra.values.mesh <= 15;
    out.push({
      id: 'memory-cluster', target: memTarget, measured: `${one.values.mesh.toFixed(1)} MB, +${extra.values.mesh.toFixed(1)} MB per extra proxy`, status: met ? 'met' : 'missed',
      limit: met ? undefined : 'docs/benchmarks.md ("Memory as installed") gives the breakdown: Node itself, the modules the agent loads, and a worker thread\'s own JavaScript heap.',
    });
  } else out.push(notRun('memory-cluster', memTarget, scenarios, 'memory-cluster', ['mesh']));
  return out;
}

export function fmt(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return '-';
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(v === 0 ? 0 : Math.abs(v) < 0.1 ? 3 : 2);
}

const fmtRatio = (r: number | undefined): string => (r === undefined ? '-' : `${r.toFixed(2)}×`);

/** The mesh's own paths: a failure of one of these is ours, not a baseline's. */
export const OURS: readonly Mode[] = ['mesh', 'mtls'];

/** Every path of a run that failed its load twice, in run order, with both failures. */
export function failedPaths(scenarios: ScenarioResult[]): { scenario: ScenarioResult; mode: Mode; failures: PathFailure[] }[] {
  return scenarios.flatMap((scenario) => MODES.filter((mode) => scenario.failed?.[mode]?.length).map((mode) => ({ scenario, mode, failures: scenario.failed![mode]! })));
}

/**
 * The run's exit code once its report is written: 3 when a path of the mesh's own (mesh, mTLS)
 * failed its load twice, so a script can trust 0; a baseline's failure alone is reported, not
 * an exit code (it says nothing about the mesh). 1 and 2 stay the aborted run and a usage error.
 */
export function exitCodeOf(r: Report): 0 | 3 {
  return failedPaths(r.scenarios).some((f) => OURS.includes(f.mode)) ? 3 : 0;
}

/** "grpc nginx: h2load: ...": a failed path and why its retry failed. */
const lastFailure = (f: ReturnType<typeof failedPaths>[number]) => `${f.scenario.id} ${f.mode}: ${f.failures.at(-1)!.reason}`;

/** "gRPC unary (grpc), nginx", for a failed path's line. */
const pathName = (s: ScenarioResult, mode: Mode) => `${s.title} (${s.id}), ${mode}`;

/**
 * Why a report may not go under docs/benchmarks.md's "Latest full run", or null if it may:
 * it must be a full run (every scenario, the default seconds, not --quick) that says which
 * commit it measured.
 */
export function docsRefusal(r: Report, scenarioIds: readonly string[]): string | null {
  if (r.quick) return 'it is a --quick run (1 s per path): its numbers are indicative only and its targets are not judged; run the full bench (node bench/run.ts) for the docs';
  const missing = scenarioIds.filter((id) => !r.scenarios.some((s) => s.id === id));
  if (missing.length) return `it is a partial run (no ${missing.join(', ')}); run every scenario (no --only) for the docs`;
  // A run with a path missing has holes in its table and targets it could not judge: not the full picture the docs state.
  const failed = failedPaths(r.scenarios);
  if (failed.length) return `a path failed its load's error bound twice (${failed.map(lastFailure).join('; ')}), so it has no numbers for ${failed.length === 1 ? 'that path' : 'those paths'} and the targets that need them are not run; run the full bench again for the docs${failed.some((f) => OURS.includes(f.mode)) ? ' (a failed mesh path is a fault of the mesh: find it first)' : ''}`;
  if (r.seconds !== FULL_RUN_SECONDS) return `its runs took ${r.seconds === undefined ? 'an unrecorded number of' : r.seconds} seconds, not the full run's ${FULL_RUN_SECONDS}; run without --seconds for the docs`;
  if (!r.commit) return 'it does not say which commit it measured (written before reports recorded it); run the full bench again for the docs';
  return null;
}

/** The markdown report; `heading` lets docs/benchmarks.md wrap it in its own page. */
export function renderMarkdown(r: Report): string {
  const lines: string[] = [];
  lines.push(`Run ${r.startedAt}${r.commit ? ` of commit ${r.commit}` : ''}${r.quick ? ' (**--quick**: short durations, numbers are indicative only, targets not judged)' : ''} on ${r.machine.cpus} × ${r.machine.cpuModel}, Linux ${r.machine.kernel}, Node ${r.machine.node}; load average at start ${r.machine.loadAvgAtStart.map((x) => x.toFixed(2)).join(' ')}${r.proxies ? `; the agent with ${r.proxies} prox${r.proxies === 1 ? 'y' : 'ies'} (--proxy-workers), nginx with as many processes` : ''}.`);
  lines.push('');
  const failed = failedPaths(r.scenarios);
  const ours = failed.filter((f) => OURS.includes(f.mode));
  if (ours.length) {
    lines.push(`**The mesh failed its load in ${ours.map((f) => pathName(f.scenario, f.mode)).join('; ')}**: see "Paths that failed" below.`);
    lines.push('');
  }
  // A failed path's cell says so; its ratios, like any without both numbers, are '-'.
  const cell = (s: ScenarioResult, m: Metric, mode: Mode) => (s.failed?.[mode]?.length ? (OURS.includes(mode) ? '**failed**' : 'failed') : fmt(m.values[mode]));
  const paths = r.scenarios.filter((s) => !s.standalone);
  const alone = r.scenarios.filter((s) => s.standalone);
  // Between nodes: a scenario with an mTLS path, measured or failed.
  const isCross = (s: ScenarioResult) => s.failed?.mtls !== undefined || s.metrics.some((m) => m.values.mtls !== undefined);
  const local = paths.filter((s) => !isCross(s));
  const cross = paths.filter(isCross);
  if (local.length || (!alone.length && !cross.length)) {
    lines.push('| scenario | metric | direct | mesh | nginx | mesh/direct | nginx/direct |');
    lines.push('|---|---|---:|---:|---:|---:|---:|');
  }
  for (const s of local) {
    for (const m of s.metrics) {
      lines.push(`| ${s.title} | ${m.name} (${m.unit}, ${m.better} is better) | ${cell(s, m, 'direct')} | ${cell(s, m, 'mesh')} | ${cell(s, m, 'nginx')} | ${fmtRatio(ratio(m, 'mesh'))} | ${fmtRatio(ratio(m, 'nginx'))} |`);
    }
  }
  if (cross.length) {
    // Between nodes: the plaintext mesh (a destination pod not meshed) against the mTLS mesh (a meshed one: the agents' tunnel).
    if (local.length) lines.push('');
    lines.push('| scenario (between nodes) | metric | direct | mesh, plaintext | mesh, mTLS | mTLS/plaintext | mTLS/direct |');
    lines.push('|---|---|---:|---:|---:|---:|---:|');
    for (const s of cross) {
      for (const m of s.metrics) {
        const vsPlain = m.values.mtls !== undefined && m.values.mesh ? m.values.mtls / m.values.mesh : undefined;
        lines.push(`| ${s.title} | ${m.name} (${m.unit}, ${m.better} is better) | ${cell(s, m, 'direct')} | ${cell(s, m, 'mesh')} | ${cell(s, m, 'mtls')} | ${fmtRatio(vsPlain)} | ${fmtRatio(ratio(m, 'mtls'))} |`);
      }
    }
  }
  if (alone.length) {
    if (paths.length) lines.push('');
    lines.push('| scenario (no datapath) | metric | value |');
    lines.push('|---|---|---:|');
    for (const s of alone) for (const m of s.metrics) lines.push(`| ${s.title} | ${m.name} (${m.unit}, ${m.better} is better) | ${cell(s, m, 'mesh')} |`);
  }
  if (failed.length) {
    lines.push('');
    lines.push('Paths that failed: each load failed its error bound, then failed again when run once more, so the path has no numbers and the targets that need it are not run.');
    lines.push('');
    for (const f of failed) lines.push(`- ${OURS.includes(f.mode) ? '**the mesh**, ' : ''}${pathName(f.scenario, f.mode)}: ${f.failures.map((x) => x.reason).join('; then ')}.`);
  }
  lines.push('');
  lines.push('| target | measured | status |');
  lines.push('|---|---|---|');
  const shown = { met: 'met', missed: '**missed**', 'not run': 'not run', 'not judged': 'not judged: quick run' } as const;
  for (const t of r.targets) lines.push(`| ${t.target} | ${t.measured} | ${shown[t.status]}${t.reason ? `: ${t.reason}` : ''} |`);
  const missed = r.targets.filter((t) => t.status === 'missed');
  if (missed.length) {
    lines.push('');
    lines.push('What limits the missed targets:');
    lines.push('');
    for (const t of missed) lines.push(`- ${t.target}: ${t.limit}`);
  }
  lines.push('');
  lines.push('Per scenario:');
  lines.push('');
  for (const s of r.scenarios) {
    const cpu = Object.entries(s.proxyCpuPercent).map(([m, v]) => {
      const starved = s.proxyStarvedPercent?.[m as Mode];
      const who = m === 'mesh' ? 'agent' : m === 'mtls' ? 'both agents (mTLS)' : 'nginx';
      return `${who} ${v!.toFixed(0)}% of a core${starved === undefined ? '' : ` (waited ${starved.toFixed(0)}% of the run for a CPU)`}`;
    });
    const retried = MODES.filter((m) => s.retried?.[m]).map((m) => `${m} ran twice: its first run failed its error bound (${s.retried![m]!.reason}), the numbers are the retry's.`);
    const notes = [...retried, ...s.notes];
    lines.push(`- **${s.title}**: \`${s.load}\`${cpu.length ? `; ${cpu.join(', ')}` : ''}.${notes.length ? ' ' + notes.join(' ') : ''}`);
  }
  return lines.join('\n') + '\n';
}
