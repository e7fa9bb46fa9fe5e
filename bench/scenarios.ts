// The scenarios. Each runs one load against a target the runner picks per mode:
//   direct: the unmeshed client pod to the server pod
//   nginx:  the unmeshed client pod to nginx (reverse proxy, node namespace) to the server pod
//   mesh:   the meshed client pod to the server pod; the kernel redirects it to the agent
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SimPod } from '../src/sim/index.ts';
import type { BenchEnv, ExecOk } from './env.ts';
import { GRPC_PATH, PORTS } from './nginx-conf.ts';
import { closestPhaseGapMs, latencyFromH2loadLog, parseH2load, parseIperf3, parseWrk, RSS_SAMPLING, sampleMedian } from './parse.ts';
import type { Metric, Mode } from './report.ts';
import { FULL_CONFIGS, runDiscoveryScale, scaleMetrics } from './discovery-scale.ts';
import { EFFICIENCY_SCENARIOS, MEMORY_CLUSTER } from './efficiency.ts';
import { runHandshakes } from './tunnel-handshakes.ts';
import { runWireCompare } from './wire-compare.ts';
import { checkErrors, LoadFailure } from './load-failure.ts';
import { podSpreadScript, splitClients, SPREAD_CLIENTS, sumH2load } from './spread-load.ts';

export interface RunCtx {
  env: BenchEnv;
  mode: Mode;
  /** The client pod for this mode. */
  pod: SimPod;
  host: string;
  /** The port to connect to for a server port (nginx listens on port + 10000). */
  port(serverPort: number): number;
  seconds: number;
  quick: boolean;
  idleConns: number;
  /** CPU seconds (utime + stime, every thread) of this mode's proxy so far; 0 for direct. */
  proxyCpuSeconds(): number;
}

export interface ModeResult {
  values: Record<string, number>;
  notes?: string[];
}

export type Scenario = NodeScenario | StandaloneScenario;

/** A scenario that needs no simulated node (no datapath, no root): run once, its numbers in a table of their own. */
export interface StandaloneScenario {
  id: string;
  title: string;
  standalone: true;
  metrics: Array<Omit<Metric, 'values'>>;
  load(seconds: number): string;
  runAlone(c: { quick: boolean; say: (s: string) => void }): Promise<ModeResult>;
}

export interface NodeScenario {
  id: string;
  title: string;
  modes: readonly Mode[];
  /**
   * What the clients call: the server pod (default), or bench/svc: its ClusterIP directly
   * (kube-proxy picks a pod per connection) and through the mesh, nginx's upstream block of its pods;
   * or a server pod on the second node ('remote': modes direct, mesh (plaintext) and mtls);
   * or (inbound) from the unmeshed client in every mode, the server pod directly and, as mesh, a
   * meshed server pod whose node's agent captures the connection (docs/policy.md).
   */
  target?: 'pod' | 'service' | 'remote' | 'inbound';
  /** Run once before measuring, unmeasured, so the agent's JIT has seen the path. */
  warmUp: boolean;
  /** Seconds of that warm-up run; default 1. */
  warmUpSeconds?: number;
  /** It measures an agent of its own (memory-cluster): the bench's agent is not expected to see its traffic. */
  ownAgent?: boolean;
  metrics: Array<Omit<Metric, 'values'>>;
  load(seconds: number): string;
  run(c: RunCtx): Promise<ModeResult>;
}

const ALL: readonly Mode[] = ['direct', 'nginx', 'mesh'];
/** Between nodes: direct, the plaintext mesh and the mTLS mesh. */
const CROSS: readonly Mode[] = ['direct', 'mesh', 'mtls'];
/**
 * The fixed-rate load: with h2load -c10 --rps 100 the ten connections start together and keep
 * step, so ten requests leave at the same instant every 10 ms (seen with perf sched) and p99
 * measures the queue behind that burst, not what a proxy adds at 1,000 req/s. Ten
 * one-connection processes start apart, as independent clients would.
 */
const LATENCY_CLIENTS = 10;
/** Period of each latency client: --rps 100 on one connection. */
const LATENCY_PERIOD_US = 10_000;
const LATENCY_STAGGER_MS = 1;
const margin = (s: number) => (s + 30) * 1000;

/** The keep-alive load's shape: one wrk thread, 50 connections. */
const WRK_SHAPE = ['-t1', '-c50'];

async function wrk(c: RunCtx, extra: string[], host = c.host, shape = WRK_SHAPE): Promise<ModeResult> {
  const r = await c.env.exec(c.pod, 'wrk', [...shape, `-d${c.seconds}s`, '--latency', ...extra, `http://${host}:${c.port(PORTS.http1)}/`], margin(c.seconds));
  const w = parseWrk(r.stdout);
  // wrk counts a server's close after `Connection: close` as a read error on some runs; only a
  // large share of errors means the path is broken.
  checkErrors('wrk', { name: 'requests', n: w.requests }, { name: 'errors', n: w.errors }, 0.01, r.stdout);
  return { values: { 'requests/s': w.requestsPerSec, p50: w.p50Ms, p99: w.p99Ms }, notes: w.errors ? [`${c.mode}: ${w.errors} socket errors`] : [] };
}

async function h2load(c: RunCtx, extra: string[], urlPath: string): Promise<ModeResult> {
  const r = await c.env.exec(c.pod, 'h2load', ['-t1', '-c10', '-m10', '-D', String(c.seconds), ...extra, `http://${c.host}:${c.port(PORTS.h2)}${urlPath}`], margin(c.seconds));
  const h = parseH2load(r.stdout);
  checkErrors('h2load', { name: 'succeeded', n: h.succeeded }, { name: 'failed', n: h.failed }, 0.01, r.stdout.slice(-800));
  return { values: { 'requests/s': h.requestsPerSec, 'mean latency': h.meanMs } };
}

/** Requests each Service pod served during `run`, from the pods' own nginx counters. */
async function servedDuring(c: RunCtx, run: () => Promise<ModeResult>): Promise<{ r: ModeResult; served: number[] }> {
  const before = await c.env.serviceRequests();
  const r = await run();
  return { r, served: (await c.env.serviceRequests()).map((n, i) => n - before[i]! - 1) }; // the status read itself counts
}

/** Requests per Service pod during a run: largest share over smallest. */
async function withSpread(c: RunCtx, run: () => Promise<ModeResult>): Promise<ModeResult & { served: number[] }> {
  const { r, served } = await servedDuring(c, run);
  const notes = [...(r.notes ?? []), `${c.mode}: requests per pod ${served.join(' / ')}`];
  // A pod with none (kube-proxy picks per connection: 10 connections miss one of 3 pods about 1
  // run in 20) has no finite spread: the value is left out and the note says why.
  if (Math.min(...served) <= 0) return { values: r.values, served, notes: [...notes, `${c.mode}: a pod got no request, so the spread is unbounded (shown as -)`] };
  return { values: { ...r.values, spread: Math.max(...served) / Math.min(...served) }, served, notes };
}

/**
 * A Service scenario's load to the ClusterIP (or, nginx, its upstream block), then, for direct
 * and the mesh, the same load spread by the client over the same pods' own IPs: the cost target's
 * fair baseline, where only the balancing differs (docs/benchmarks.md, "A Service against a pod
 * IP"). `load` gets one host per client thread or process.
 */
async function serviceAgainstPods(c: RunCtx, load: (hosts: readonly string[]) => Promise<ModeResult>): Promise<ModeResult> {
  const mesh = c.mode === 'mesh';
  // The agent's system calls per request: unlike its CPU, a count that other work on the machine does not move.
  const calls = () => (mesh ? c.env.syscalls(c.env.agentPid) : { reads: 0, writes: 0 });
  const cpu0 = c.proxyCpuSeconds();
  const io0 = calls();
  const sleeps0 = c.env.serviceServerSleeps();
  const svc = await withSpread(c, () => load(Array<string>(SPREAD_CLIENTS).fill(c.host)));
  const svcCpu = perRequest(c.proxyCpuSeconds() - cpu0, svc.served);
  const svcIo = callsPerRequest(io0, calls(), svc.served);
  const svcSleeps = (c.env.serviceServerSleeps() - sleeps0) / total(svc.served);
  const values: Record<string, number> = { ...svc.values };
  if (c.mode !== 'direct') values['proxy CPU per request'] = svcCpu;
  if (c.mode === 'nginx') return { values, notes: svc.notes };
  const cpu1 = c.proxyCpuSeconds();
  const io1 = calls();
  const sleeps1 = c.env.serviceServerSleeps();
  const pods = await servedDuring(c, () => load(c.env.servicePods.map((p) => p.ip)));
  const podSleeps = (c.env.serviceServerSleeps() - sleeps1) / total(pods.served);
  // Without a request on each pod the script did not spread the load, and the baseline is not the same load.
  if (Math.min(...pods.served) <= 0) throw new Error(`the pod-IP run left a pod without requests (${pods.served.join(' / ')}): the client did not spread its load over the pod IPs`);
  values['requests/s to the pod IPs'] = pods.r.values['requests/s']!;
  const notes = [...(svc.notes ?? []), ...(pods.r.notes ?? []), `${c.mode}, the same load to the pod IPs: requests per pod ${pods.served.join(' / ')}`,
    `${c.mode}: the 3 servers went to sleep ${svcSleeps.toFixed(2)} times per request to the Service, ${podSleeps.toFixed(2)} to the pod IPs (each sleep is a wake-up the next write to it pays for)`];
  if (mesh) {
    const podCpu = perRequest(c.proxyCpuSeconds() - cpu1, pods.served);
    const podIo = callsPerRequest(io1, calls(), pods.served);
    values['proxy CPU per request to the pod IPs'] = podCpu;
    notes.push(`mesh: the agent's CPU per request ${svcCpu.toFixed(1)} µs to the Service, ${podCpu.toFixed(1)} µs to the pod IPs (${(svcCpu / podCpu).toFixed(2)}×); its system calls per request ${svcIo.reads.toFixed(2)} reads and ${svcIo.writes.toFixed(2)} writes to the Service, ${podIo.reads.toFixed(2)} and ${podIo.writes.toFixed(2)} to the pod IPs`);
  }
  return { values, notes };
}

const total = (served: number[]) => served.reduce((a, b) => a + b, 0);
const perRequest = (cpuSeconds: number, served: number[]) => (cpuSeconds / total(served)) * 1e6;

function callsPerRequest(a: { reads: number; writes: number }, b: { reads: number; writes: number }, served: number[]) {
  const n = total(served);
  return { reads: (b.reads - a.reads) / n, writes: (b.writes - a.writes) / n };
}

/** The Service scenarios' load on both sides: SPREAD_CLIENTS wrk threads of 16 connections, or SPREAD_CLIENTS h2load processes of 3. */
const SVC_WRK_SHAPE = [`-t${SPREAD_CLIENTS}`, `-c${16 * SPREAD_CLIENTS}`];
const SVC_H2_CONNS = 3 * SPREAD_CLIENTS;

/** wrk to a Service or its pods: one host for every thread, or each thread its own pod IP (the URL names the first). */
async function wrkTo(c: RunCtx, hosts: readonly string[]): Promise<ModeResult> {
  if (new Set(hosts).size === 1) return wrk(c, [], hosts[0], SVC_WRK_SHAPE);
  const script = path.join(c.env.tmp, `pod-spread-${c.mode}.lua`);
  fs.writeFileSync(script, podSpreadScript(hosts, c.port(PORTS.http1)));
  return wrk(c, ['-s', script], hosts[0], SVC_WRK_SHAPE);
}

/** One h2load process per host, together, with a share of the connections each; rates summed. */
async function h2loadTo(c: RunCtx, hosts: readonly string[], extra: string[], urlPath: string): Promise<ModeResult> {
  const conns = splitClients(SVC_H2_CONNS, hosts.length);
  const runs = hosts.map((host, i) => c.env.exec(c.pod, 'h2load', ['-t1', `-c${conns[i]}`, '-m10', '-D', String(c.seconds), ...extra, `http://${host}:${c.port(PORTS.h2)}${urlPath}`], margin(c.seconds)));
  for (const r of runs) r.catch(() => {}); // awaited below; no unhandled rejection while the others run
  const settled = await Promise.allSettled(runs);
  const broken = settled.find((r) => r.status === 'rejected');
  if (broken) throw (broken as PromiseRejectedResult).reason;
  const outs = settled.map((r) => (r as PromiseFulfilledResult<ExecOk>).value.stdout);
  const h = sumH2load(outs.map(parseH2load));
  checkErrors(`${hosts.length} h2load processes`, { name: 'succeeded', n: h.succeeded }, { name: 'failed', n: h.failed }, 0.01, outs.map((o) => o.slice(-400)).join('\n'));
  return { values: { 'requests/s': h.requestsPerSec, 'mean latency': h.meanMs } };
}

const SPREAD_METRIC = { name: 'spread', unit: 'max/min', better: 'lower', optional: true } as const;

/** A Service scenario's metrics: the pod-IP rate and both CPU figures exist only for some paths (direct has no proxy, nginx no pod-IP run). */
const SERVICE_METRICS = [
  { name: 'requests/s', unit: 'req/s', better: 'higher' },
  { name: 'requests/s to the pod IPs', unit: 'req/s', better: 'higher', optional: true },
  SPREAD_METRIC,
  { name: 'proxy CPU per request', unit: 'µs', better: 'lower', optional: true },
  { name: 'proxy CPU per request to the pod IPs', unit: 'µs', better: 'lower', optional: true },
] as const;

const RPS_METRICS = [
  { name: 'requests/s', unit: 'req/s', better: 'higher' },
  { name: 'p50', unit: 'ms', better: 'lower' },
  { name: 'p99', unit: 'ms', better: 'lower' },
] as const;

const H2_METRICS = [
  { name: 'requests/s', unit: 'req/s', better: 'higher' },
  { name: 'mean latency', unit: 'ms', better: 'lower' },
] as const;

export const SCENARIOS: Scenario[] = [
  {
    id: 'memory',
    title: 'agent memory',
    modes: ['mesh'],
    warmUp: false,
    metrics: [
      { name: 'agent RSS idle', unit: 'MB', better: 'lower' },
      { name: 'agent RSS with idle connections', unit: 'MB', better: 'lower' },
      { name: 'per idle connection', unit: 'KB', better: 'lower' },
    ],
    load: () => `VmRSS of the agent at start, then with N idle connections from the meshed pod held open (bench/load/hold-conns.ts); each the median of ${RSS_SAMPLING.count} samples ${RSS_SAMPLING.gapMs / 1000} s apart`,
    async run(c) {
      const { env } = c;
      const rss = () => sampleMedian(() => env.rssBytes(env.agentPid), sleep);
      const idle = await rss();
      const holder = c.pod.spawn('prlimit', env.loadArgs('hold-conns.ts', ['--connect', `${env.server.ip}:${PORTS.http1}`, '--count', String(c.idleConns)]), { stdio: ['pipe', 'pipe', 'pipe'] });
      try {
        const t0 = performance.now();
        const line = await firstLine(holder, 300_000);
        const openSeconds = (performance.now() - t0) / 1000;
        const opened = JSON.parse(line);
        if (opened.open !== c.idleConns) throw new Error(`only ${opened.open} of ${c.idleConns} idle connections opened (${opened.failed} failed: ${opened.firstError})`);
        // Silent clients sit in detection until the deadline (1 s), then become opaque tunnels:
        // measure the settled state, after the agent has had time to collect garbage.
        await sleep(4000);
        const st = await env.status();
        if ((st.proxy?.open ?? 0) < c.idleConns) throw new Error(`the agent holds ${st.proxy?.open} connections, expected ${c.idleConns}: did the idle connections bypass it?`);
        const held = await rss();
        return {
          values: { 'agent RSS idle': idle / 2 ** 20, 'agent RSS with idle connections': held / 2 ** 20, 'per idle connection': (held - idle) / c.idleConns / 1024 },
          notes: [`${c.idleConns} idle connections (each a client socket and an upstream socket in the agent), opened 200 at a time in ${openSeconds.toFixed(1)} s.`],
        };
      } finally {
        holder.stdin!.end();
        holder.kill('SIGKILL');
        await sleep(500);
      }
    },
  },
  MEMORY_CLUSTER,
  {
    id: 'http1-keepalive',
    title: 'HTTP/1.1 keep-alive',
    modes: ALL,
    warmUp: true,
    metrics: [...RPS_METRICS],
    load: (s) => `wrk -t1 -c50 -d${s}s --latency http://HOST:8080/ (nginx returns 200)`,
    run: (c) => wrk(c, []),
  },
  {
    id: 'http1-close',
    title: 'HTTP/1.1 new connection per request',
    modes: ALL,
    warmUp: true,
    metrics: [...RPS_METRICS],
    load: (s) => `wrk -t1 -c50 -d${s}s --latency -H 'Connection: close' http://HOST:8080/`,
    run: (c) => wrk(c, ['-H', 'Connection: close']),
  },
  {
    id: 'http2',
    title: 'HTTP/2 (h2c)',
    modes: ALL,
    warmUp: true,
    metrics: [...H2_METRICS],
    load: (s) => `h2load -t1 -c10 -m10 -D ${s} http://HOST:8081/ (nginx h2c returns 200; the nginx proxy forwards over keep-alive HTTP/1.1)`,
    run: (c) => h2load(c, [], '/'),
  },
  {
    id: 'grpc',
    title: 'gRPC unary',
    modes: ALL,
    warmUp: true,
    metrics: [...H2_METRICS],
    load: (s) => `h2load -t1 -c10 -m10 -D ${s} -d <5-byte message> -H 'content-type: application/grpc' -H 'te: trailers' http://HOST:8081${GRPC_PATH} (nginx answers with a message and grpc-status 0 trailer; the nginx proxy uses grpc_pass)`,
    run: (c) => h2load(c, ['-d', c.env.grpcRequest, '-H', 'content-type: application/grpc', '-H', 'te: trailers'], GRPC_PATH),
  },
  {
    id: 'http1-service',
    title: 'HTTP/1.1 keep-alive to a Service of 3 pods',
    modes: ALL,
    target: 'service',
    warmUp: true,
    metrics: [...SERVICE_METRICS],
    load: (s) => `wrk ${SVC_WRK_SHAPE.join(' ')} -d${s}s http://CLUSTER-IP:8080/ (bench/svc: 3 nginx pods); direct: kube-proxy picks a pod per connection; nginx: an upstream block of the 3 pods; mesh: the agent picks per request. Then, direct and mesh, the same load to the pods' own IPs: wrk -s (bench/spread-load.ts) gives each of the ${SPREAD_CLIENTS} threads one pod IP, so only the balancing differs. Spread: requests per pod from their stub_status, largest over smallest; proxy CPU per request: the agent's (or nginx's) utime+stime over the requests the pods served`,
    run: (c) => serviceAgainstPods(c, async (hosts) => {
      const r = await wrkTo(c, hosts);
      return { values: { 'requests/s': r.values['requests/s']! }, notes: r.notes };
    }),
  },
  {
    id: 'inbound-http1',
    title: 'HTTP/1.1 keep-alive from an unmeshed client into a meshed pod (inbound capture)',
    modes: ['direct', 'mesh'],
    target: 'inbound',
    warmUp: true,
    metrics: [...RPS_METRICS],
    load: (s) => `wrk -t1 -c50 -d${s}s --latency from the unmeshed client pod: direct to the unmeshed server pod; mesh to a meshed server pod (nginx, as the server pod), captured on its node by TPROXY, authorized (all-unauthenticated) and proxied by the agent's inbound listener with the client's own address`,
    run: (c) => wrk(c, []),
  },
  {
    id: 'http1-route',
    title: 'HTTP/1.1 keep-alive to a Service with an HTTPRoute, against the same Service without',
    modes: ['mesh'],
    target: 'service',
    warmUp: true,
    metrics: [
      { name: 'requests/s', unit: 'req/s', better: 'higher' },
      { name: 'requests/s without route', unit: 'req/s', better: 'higher' },
      { name: 'with/without', unit: '×', better: 'higher' },
    ],
    load: (s) => `wrk -t1 -c50 -d${s}s http://CLUSTER-IP:8080/ twice, through the mesh: to bench/svc (3 nginx pods, no route), then to bench/svc-routed (the same pods) whose HTTPRoute has one rule with a match (GET, path prefix /), two weighted backends (bench/svc-a and bench/svc-b, 50/50, the same pods) and Linkerd's retry annotations (5xx, limit 1; nginx answers 200, so nothing is retried, but every request is kept for a retry and counted in the budget)`,
    async run(c) {
      const plain = await wrk(c, [], c.env.service.clusterIP);
      const routed = await wrk(c, [], c.env.routedService.clusterIP);
      const a = routed.values['requests/s']!;
      const b = plain.values['requests/s']!;
      return { values: { 'requests/s': a, 'requests/s without route': b, 'with/without': a / b }, notes: [...(plain.notes ?? []), ...(routed.notes ?? [])] };
    },
  },
  {
    id: 'grpc-service',
    title: 'gRPC unary to a Service of 3 pods',
    modes: ALL,
    target: 'service',
    warmUp: true,
    metrics: [...SERVICE_METRICS],
    load: (s) => `${SPREAD_CLIENTS} h2load processes together, each -t1 -c${SVC_H2_CONNS / SPREAD_CLIENTS} -m10 -D ${s} (the gRPC scenario's unary ${GRPC_PATH}), req/s summed, to CLUSTER-IP:8081 (bench/svc: 3 nginx pods); direct: kube-proxy picks a pod per connection (one gRPC channel would be all on one pod, as test/cluster-balancing.e2e shows); nginx: grpc_pass to an upstream block of the 3 pods; mesh: the agent picks per request. Then, direct and mesh, the same load with each process on one pod's own IP, so only the balancing differs. Spread: requests per pod, largest over smallest (- when a pod got none); proxy CPU per request: the agent's (or nginx's) utime+stime over the requests the pods served`,
    run: (c) => serviceAgainstPods(c, async (hosts) => {
      const r = await h2loadTo(c, hosts, ['-d', c.env.grpcRequest, '-H', 'content-type: application/grpc', '-H', 'te: trailers'], GRPC_PATH);
      return { values: { 'requests/s': r.values['requests/s']! } };
    }),
  },
  {
    id: 'latency-1k',
    title: 'HTTP/1.1 at a fixed 1,000 req/s',
    modes: ALL,
    warmUp: true,
    metrics: [
      { name: 'p50', unit: 'ms', better: 'lower' },
      { name: 'p99', unit: 'ms', better: 'lower' },
      { name: 'max', unit: 'ms', better: 'lower' },
    ],
    load: (s) => `${LATENCY_CLIENTS} separate \`h2load --h1 -t1 -c1 --rps ${1000 / LATENCY_CLIENTS} -D ${s} --log-file\` processes started ${LATENCY_STAGGER_MS} ms apart: independent clients whose 10 ms phases fall where their starts land (the notes give how close they came), not ten requests sent at once; percentiles from the merged per-request logs`,
    async run(c) {
      const logs = Array.from({ length: LATENCY_CLIENTS }, (_, i) => path.join(c.env.tmp, `latency-${c.mode}-${i}.tsv`));
      const url = `http://${c.host}:${c.port(PORTS.http1)}/`;
      const runs: Promise<{ stdout: string }>[] = [];
      for (const log of logs) {
        const run = c.env.exec(c.pod, 'h2load', ['--h1', '-t1', '-c1', '--rps', String(1000 / LATENCY_CLIENTS), '-D', String(c.seconds), `--log-file=${log}`, url], margin(c.seconds));
        run.catch(() => {}); // awaited below; no unhandled rejection while the others start
        runs.push(run);
        await sleep(LATENCY_STAGGER_MS);
      }
      const settled = await Promise.allSettled(runs);
      const texts = logs.map((f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : ''));
      for (const f of logs) fs.rmSync(f, { force: true });
      const broken = settled.find((r) => r.status === 'rejected');
      if (broken) throw (broken as PromiseRejectedResult).reason;
      const outs = settled.map((r) => (r as PromiseFulfilledResult<{ stdout: string }>).value);
      const failed = outs.reduce((n, r) => n + parseH2load(r.stdout).failed, 0);
      const l = latencyFromH2loadLog(texts.join('\n'));
      const rate = l.count / c.seconds;
      if (rate < 900 || failed > 0) throw new LoadFailure(`the fixed-rate run reached ${rate.toFixed(0)} req/s with ${failed} failures, not 1,000 with none`, { succeeded: l.count, failed }, outs.map((o) => o.stdout.slice(-300)).join('\n'));
      const gap = closestPhaseGapMs(texts, LATENCY_PERIOD_US);
      return {
        values: { p50: l.p50Ms, p99: l.p99Ms, max: l.maxMs },
        notes: [`${c.mode}: the clients' 10 ms phases were ${gap.toFixed(2)} ms apart at the closest (0 would be requests sent together; evenly spread would be 1 ms)`],
      };
    },
  },
  {
    id: 'conn-rate',
    title: 'new TCP connections',
    modes: ALL,
    warmUp: true,
    metrics: [{ name: 'connections/s', unit: 'conn/s', better: 'higher' }],
    load: (s) => `bench/load/conn-rate.ts --concurrency 50 --seconds ${s}: connect, read the server's greeting until it closes, repeat (nginx stream \`return\` on port 9090; server speaks first)`,
    async run(c) {
      const r = await c.env.exec(c.pod, 'prlimit', c.env.loadArgs('conn-rate.ts', ['--connect', `${c.host}:${c.port(PORTS.greet)}`, '--concurrency', '50', '--seconds', String(c.seconds)]), margin(c.seconds));
      const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
      checkErrors('conn-rate', { name: 'connections', n: o.connections }, { name: 'errors', n: o.errors }, 0.01);
      return { values: { 'connections/s': o.perSecond } };
    },
  },
  {
    id: 'opaque-throughput',
    title: 'opaque TCP throughput (iperf3)',
    modes: ALL,
    warmUp: true,
    metrics: [
      { name: 'throughput', unit: 'Gbit/s', better: 'higher' },
      { name: 'time to first server byte', unit: 'ms', better: 'lower' },
    ],
    load: (s) => `iperf3 -c HOST -p 5201 -t ${s} -J (one stream; port 5201 is not an opaque port, so the mesh detects it); first byte: bench/load/first-byte.ts sends iperf3's cookie and times the server's answer`,
    async run(c) {
      const target = `${c.host}:${c.port(PORTS.iperf)}`;
      const before = c.mode === 'mesh' ? await c.env.status() : undefined;
      const fb = JSON.parse((await c.env.exec(c.pod, 'prlimit', c.env.loadArgs('first-byte.ts', ['--connect', target]), 15_000)).stdout.trim());
      await sleep(300); // iperf3 -s resets after the probe's aborted test
      const r = await iperfWithRetry(c);
      const notes: string[] = [];
      if (before) {
        const after = await c.env.status();
        const opaque = (after.proxy.byProtocol.opaque ?? 0) - (before.proxy.byProtocol.opaque ?? 0);
        const other = Object.keys(after.proxy.byProtocol).filter((k) => k !== 'opaque' && (after.proxy.byProtocol[k] ?? 0) !== (before.proxy.byProtocol[k] ?? 0));
        if (opaque < 2 || other.length) throw new Error(`iperf3 through the mesh should be opaque; protocol counts moved: opaque +${opaque}, also ${other.join(',') || 'none'}`);
        notes.push(`Through the mesh iperf3 ends opaque (${opaque} connections: the probe, control and data); its cookie is 36 token characters and a NUL, which the HTTP/1 detector rules out at byte 33 (method longer than 32), so the verdict comes on the first read, not at the 1 s deadline: the server's first byte arrived after ${fb.firstByteMs.toFixed(2)} ms.`);
      }
      return { values: { throughput: r.gbitPerSec, 'time to first server byte': fb.firstByteMs }, notes };
    },
  },
  // Between nodes (issue 14): the plaintext mesh (the destination pod is not meshed: the agent
  // dials it directly) against the mTLS mesh (a meshed pod: the agents' HBONE tunnel).
  {
    id: 'http1-cross',
    title: 'keep-alive HTTP/1 between nodes',
    modes: CROSS,
    target: 'remote',
    warmUp: true,
    metrics: [...RPS_METRICS],
    load: (s) => `wrk -t1 -c50 -d${s}s --latency http://POD:8080/ (a server pod on the other node: unmeshed for direct and the plaintext mesh, meshed for mTLS; nginx returning 200)`,
    run: (c) => wrk(c, []),
  },
  {
    id: 'opaque-cross',
    title: 'opaque TCP throughput between nodes (iperf3)',
    modes: CROSS,
    target: 'remote',
    warmUp: true,
    metrics: [{ name: 'throughput', unit: 'Gbit/s', better: 'higher' }],
    load: (s) => `iperf3 -c POD -p 5201 -t ${s} -J (one stream, a server pod on the other node)`,
    async run(c) {
      return { values: { throughput: (await iperfWithRetry(c)).gbitPerSec } };
    },
  },
  {
    id: 'newconn-cross',
    title: 'a new connection between nodes (warm tunnel)',
    modes: CROSS,
    target: 'remote',
    warmUp: true,
    metrics: [
      { name: 'p50', unit: 'ms', better: 'lower' },
      { name: 'p99', unit: 'ms', better: 'lower' },
    ],
    load: (s) => `bench/load/conn-latency.ts --seconds ${s}: one connection at a time to a server that speaks first (nginx stream \`return\` on port 9090 of a pod on the other node), timed from connect() to its first byte; the warm-up run leaves the tunnel connected`,
    async run(c) {
      const r = await c.env.exec(c.pod, 'prlimit', c.env.loadArgs('conn-latency.ts', ['--connect', `${c.host}:${c.port(PORTS.greet)}`, '--seconds', String(c.seconds)]), margin(c.seconds));
      const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
      checkErrors('conn-latency', { name: 'connections', n: o.connections }, { name: 'errors', n: o.errors }, 0.01);
      return { values: { p50: o.p50Ms, p99: o.p99Ms }, notes: [`${c.mode}: ${o.connections} connections, one at a time`] };
    },
  },
  {
    id: 'tunnel-handshakes',
    title: 'mTLS tunnel handshakes',
    standalone: true,
    metrics: [
      { name: 'handshakes/s', unit: 'handshakes/s', better: 'higher' },
      { name: 'per server CPU-second', unit: 'handshakes', better: 'higher' },
      { name: 'per client CPU-second', unit: 'handshakes', better: 'higher' },
    ],
    load: (s) => `bench/load/tunnel-handshakes.ts (8 concurrent clients, TLS 1.3 with a client certificate, SNI, ALPN h2, the server's SPIFFE ID checked) against bench/load/tunnel-server.ts (the agent's tunnel listener, src/tunnel/server.ts) on loopback, ${s > 1 ? 5 : 1} s; each connection ended once both sides verified`,
    async runAlone(c) {
      return runHandshakes(c.quick, c.say);
    },
  },
  {
    id: 'tunnel-wire',
    title: 'tunnel wire formats (loopback)',
    standalone: true,
    metrics: [
      { name: 'relay bulk', unit: 'Gbit/s', better: 'higher' },
      { name: 'h2 bulk', unit: 'Gbit/s', better: 'higher' },
      { name: 'tls bulk', unit: 'Gbit/s', better: 'higher' },
      { name: 'relay request/response', unit: 'req/s', better: 'higher' },
      { name: 'h2 request/response', unit: 'req/s', better: 'higher' },
      { name: 'tls request/response', unit: 'req/s', better: 'higher' },
    ],
    load: () => 'bench/load/wire-compare.ts on loopback: one plaintext hop (relay) against two hops joined by HTTP/2 CONNECT over one TLS 1.3 connection (h2, HBONE) or by a TLS 1.3 connection per client connection with a target header (tls); bulk 1 GiB on one connection, request/response 50 connections in lockstep',
    async runAlone(c) {
      return runWireCompare(c.quick, c.say);
    },
  },
  ...EFFICIENCY_SCENARIOS,
  {
    id: 'discovery-scale',
    title: 'discovery at cluster scale',
    standalone: true,
    // The three sizes are named by shape, so a --quick run (small sizes, see the notes) fills the same metrics.
    metrics: scaleMetrics(FULL_CONFIGS),
    load: () => 'mesh-agent controller --resources DIR (a generated cluster of 1,000 agents and 100,000 endpoints, then 1/10 of either; --quick: 40 and 2,000; 10 endpoints per Service, one EndpointSlice each, every endpoint a pod) and simulated agents (bench/load/disco-agents.ts: 4 processes, one HTTP/2 connection and discovery stream per agent); one EndpointSlice file rewritten 20 times (5 in --quick), each change timed from the rename to its line at the last agent',
    async runAlone(c) {
      return runDiscoveryScale(c.quick, c.say);
    },
  },
];

async function iperfWithRetry(c: RunCtx): Promise<{ gbitPerSec: number }> {
  for (let attempt = 1; ; attempt++) {
    const r = await c.pod.exec('iperf3', ['-c', c.host, '-p', String(c.port(PORTS.iperf)), '-t', String(c.seconds), '-J'], { timeoutMs: margin(c.seconds) });
    try {
      return parseIperf3(r.stdout);
    } catch (e) {
      // "the server is busy running a test": the probe's aborted test is still being reset.
      if (attempt >= 5 || !/busy/.test(String(e))) throw e;
      await sleep(500);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function firstLine(child: import('node:child_process').ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => {
      out += d;
      const i = out.indexOf('\n');
      if (i >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, i));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before reporting; stderr: ${err}`));
    });
  });
}
