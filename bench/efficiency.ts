// Scenarios that measure what a proxy costs, not how fast it saturates a core (issue 16): the
// same load at fixed rates through nginx and through the mesh, and the CPU each proxy used for
// it from /proc (utime + stime of every proxy process, all threads), per 1,000 requests (per GB
// for opaque bytes); and the agent's idle memory as installed (cluster mode).
import type { ChildProcess } from 'node:child_process';
import type { Metric } from './report.ts';
import { GRPC_PATH, PORTS } from './nginx-conf.ts';
import { parseH2load, parseIperf3, sampleMedian, RSS_SAMPLING } from './parse.ts';
import type { ModeResult, NodeScenario, RunCtx } from './scenarios.ts';
import { checkErrors } from './load-failure.ts';

/** Requests (or connections) per second each efficiency scenario runs at, when the machine allows. */
export const RATES = [1000, 5000, 10_000] as const;
/** Opaque bytes, Gbit/s. */
export const OPAQUE_RATES = [1, 4] as const;
/**
 * The warm-up at each rate of cpu-http1, cpu-http2 and cpu-grpc (nginx's too), seconds: after 1 s
 * V8 was still compiling the agent's forwarders through the first measured rate.
 * MESH_BENCH_RATE_WARMUP=1 gives the old one for an A/B.
 */
const WARM_UP_SECONDS = rateWarmUp(process.env.MESH_BENCH_RATE_WARMUP);
function rateWarmUp(v: string | undefined): number {
  const n = Number(v ?? 3);
  if (!Number.isInteger(n) || n < 1) throw new Error(`MESH_BENCH_RATE_WARMUP=${v}: want a whole number of seconds, at least 1 (unset: 3)`);
  return n;
}
/** Below this share of the asked rate, a run says it could not reach it (its CPU per request is still what it cost). */
const REACHED = 0.9;

const margin = (s: number) => (s + 30) * 1000;
const k = (r: number) => r.toLocaleString('en-US');

/** The metric of one rate: "CPU-ms per 1,000 requests at 5,000 req/s". */
export const cpuMetricName = (rate: number, unit = 'req/s') => `CPU-ms per 1,000 at ${k(rate)} ${unit}`;

function cpuMetrics(unit: string): Array<Omit<Metric, 'values'>> {
  return RATES.map((r) => ({ name: cpuMetricName(r, unit), unit: 'CPU-ms', better: 'lower' as const }));
}

/**
 * Runs `load` at each rate and measures the proxy's CPU over it: CPU-ms per 1,000 of what
 * completed. A rate the load could not reach is noted with what it did reach.
 */
async function atRates(c: RunCtx, unit: string, load: (rate: number, notes: string[]) => Promise<number>): Promise<ModeResult> {
  const values: Record<string, number> = {};
  const reached: string[] = [];
  const notes: string[] = [];
  for (const rate of RATES) {
    const cpu0 = c.proxyCpuSeconds();
    const t0 = performance.now();
    const done = await load(rate, notes);
    const wall = (performance.now() - t0) / 1000;
    const cpu = c.proxyCpuSeconds() - cpu0;
    if (done <= 0) throw new Error(`${c.mode}: nothing completed at ${k(rate)} ${unit}`);
    values[cpuMetricName(rate, unit)] = (cpu * 1000) / (done / 1000);
    const got = done / c.seconds;
    reached.push(`${k(rate)}: ${got < rate * REACHED ? `**reached ${k(Math.round(got))}**` : k(Math.round(got))} ${unit}, ${((cpu / wall) * 100).toFixed(0)}% of a core`);
  }
  return { values, notes: [`${c.mode}: ${reached.join('; ')}.`, ...notes] };
}

/**
 * h2load at a fixed rate: 10 connections, rate/10 requests a second each; returns the requests
 * that succeeded. The mesh may fail none beyond 1%; nginx's grpc_pass fails a few (its error log
 * says "upstream sent frame for unknown stream"), which are noted, not fatal: its CPU is per
 * request that succeeded.
 */
async function h2loadAt(c: RunCtx, rate: number, extra: string[], url: string, notes: string[]): Promise<number> {
  const r = await c.env.exec(c.pod, 'h2load', ['-t1', '-c10', '--rps', String(rate / 10), '-D', String(c.seconds), ...extra, url], margin(c.seconds));
  const h = parseH2load(r.stdout);
  const bound = c.mode === 'mesh' ? 0.01 : 0.1;
  checkErrors(`h2load at ${k(rate)} req/s`, { name: 'succeeded', n: h.succeeded }, { name: 'failed', n: h.failed }, bound, `${r.stdout.slice(-600)}${c.mode === 'nginx' ? `\nnginx's error logs:\n${c.env.nginxErrors()}` : ''}`);
  if (h.failed > 0) notes.push(`${c.mode} at ${k(rate)} req/s: ${h.failed} of ${h.failed + h.succeeded} requests failed${c.mode === 'nginx' ? ` (nginx: ${c.env.nginxErrors().split('\n').at(-1)?.replace(/^.*\[error\] \S+ \*\d+ /, '').split(',')[0] ?? 'see its error log'})` : ''}.`);
  return h.succeeded;
}

const NGINX_MESH = ['nginx', 'mesh'] as const;

export const EFFICIENCY_SCENARIOS: NodeScenario[] = [
  {
    id: 'cpu-http1',
    title: 'CPU per request: HTTP/1.1 keep-alive at fixed rates',
    modes: NGINX_MESH,
    warmUp: true,
    // 1 s at each rate left V8 compiling the forwarder on its helper threads through the first
    // measured rate (13-26 CPU-ms per 1,000 requests at 1,000 req/s, with 2 proxies: each isolate
    // compiles its own); docs/benchmarks.md, "The full agent beyond the forwarder".
    warmUpSeconds: WARM_UP_SECONDS,
    metrics: cpuMetrics('req/s'),
    load: (s) => `h2load --h1 -t1 -c10 --rps R/10 -D ${s} http://HOST:8080/ at R = ${RATES.map(k).join(', ')} req/s; the proxy's utime + stime from /proc over each run, per 1,000 requests that succeeded`,
    run: (c) => atRates(c, 'req/s', (rate, n) => h2loadAt(c, rate, ['--h1'], `http://${c.host}:${c.port(PORTS.http1)}/`, n)),
  },
  {
    id: 'cpu-http2',
    title: 'CPU per request: HTTP/2 at fixed rates',
    modes: NGINX_MESH,
    warmUp: true,
    warmUpSeconds: WARM_UP_SECONDS,
    metrics: cpuMetrics('req/s'),
    load: (s) => `h2load -t1 -c10 -m10 --rps R/10 -D ${s} http://HOST:8081/ (h2c) at R = ${RATES.map(k).join(', ')} req/s; CPU per 1,000 requests as for HTTP/1`,
    run: (c) => atRates(c, 'req/s', (rate, n) => h2loadAt(c, rate, ['-m10'], `http://${c.host}:${c.port(PORTS.h2)}/`, n)),
  },
  {
    id: 'cpu-grpc',
    title: 'CPU per request: gRPC unary at fixed rates',
    modes: NGINX_MESH,
    warmUp: true,
    warmUpSeconds: WARM_UP_SECONDS,
    metrics: cpuMetrics('req/s'),
    load: (s) => `the gRPC scenario's h2load (-m10, a 5-byte message, te: trailers) with -c10 --rps R/10 -D ${s} at R = ${RATES.map(k).join(', ')} req/s; CPU per 1,000 calls`,
    run: (c) => atRates(c, 'req/s', (rate, n) => h2loadAt(c, rate, ['-m10', '-d', c.env.grpcRequest, '-H', 'content-type: application/grpc', '-H', 'te: trailers'], `http://${c.host}:${c.port(PORTS.h2)}${GRPC_PATH}`, n)),
  },
  {
    id: 'cpu-conn',
    title: 'CPU per new connection at fixed rates',
    modes: NGINX_MESH,
    warmUp: true,
    metrics: cpuMetrics('conn/s'),
    load: (s) => `bench/load/conn-rate.ts --rate R --seconds ${s} at R = ${RATES.map(k).join(', ')} conn/s (open loop: connect, read the server's greeting until it closes; nginx stream \`return\` on 9090); CPU per 1,000 connections`,
    run: (c) => atRates(c, 'conn/s', async (rate) => {
      const r = await c.env.exec(c.pod, 'prlimit', c.env.loadArgs('conn-rate.ts', ['--connect', `${c.host}:${c.port(PORTS.greet)}`, '--rate', String(rate), '--seconds', String(c.seconds)]), margin(c.seconds));
      const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
      checkErrors(`conn-rate at ${k(rate)} conn/s`, { name: 'connections', n: o.connections }, { name: 'errors', n: o.errors }, 0.01);
      return o.connections;
    }),
  },
  {
    id: 'cpu-opaque',
    title: 'CPU per GB: opaque TCP at fixed rates',
    modes: NGINX_MESH,
    warmUp: false,
    metrics: OPAQUE_RATES.map((g) => ({ name: `CPU-seconds per GB at ${g} Gbit/s`, unit: 'CPU-s/GB', better: 'lower' as const })),
    load: (s) => `iperf3 -c HOST -p 5201 -b RG -t ${s} -J at R = ${OPAQUE_RATES.join(', ')} Gbit/s (one stream; the mesh detects it opaque); the proxy's CPU over the run per GB received`,
    async run(c) {
      const values: Record<string, number> = {};
      const notes: string[] = [];
      for (const g of OPAQUE_RATES) {
        const cpu0 = c.proxyCpuSeconds();
        const r = await iperfAt(c, g);
        const cpu = c.proxyCpuSeconds() - cpu0;
        values[`CPU-seconds per GB at ${g} Gbit/s`] = cpu / (r.bytes / 1e9);
        notes.push(`${g} Gbit/s: ${r.gbitPerSec < g * REACHED ? `**reached ${r.gbitPerSec.toFixed(2)}**` : r.gbitPerSec.toFixed(2)} Gbit/s`);
      }
      return { values, notes: [`${c.mode}: ${notes.join('; ')}.`] };
    },
  },
];

async function iperfAt(c: RunCtx, gbit: number): Promise<{ gbitPerSec: number; bytes: number }> {
  for (let attempt = 1; ; attempt++) {
    const r = await c.pod.exec('iperf3', ['-c', c.host, '-p', String(c.port(PORTS.iperf)), '-b', `${gbit}G`, '-t', String(c.seconds), '-J'], { timeoutMs: margin(c.seconds) });
    try {
      return parseIperf3(r.stdout);
    } catch (e) {
      // "the server is busy running a test": the previous test is still being reset.
      if (attempt >= 5 || !/busy/.test(String(e))) throw e;
      await new Promise((res) => setTimeout(res, 500));
    }
  }
}

/** Proxies the memory-cluster scenario measures the agent with: one, then two more (each one's cost, the mean of the two). */
const MEMORY_PROXIES = [1, 2, 3] as const;

export const MEMORY_CLUSTER: NodeScenario = {
  id: 'memory-cluster',
  title: 'agent memory as installed (cluster mode)',
  modes: ['mesh'],
  warmUp: false,
  ownAgent: true,
  metrics: [
    { name: 'agent RSS idle, 1 proxy', unit: 'MB', better: 'lower' },
    { name: 'agent RSS idle, 2 proxies', unit: 'MB', better: 'lower' },
    { name: 'agent RSS idle, 3 proxies', unit: 'MB', better: 'lower' },
    { name: 'per extra proxy', unit: 'MB', better: 'lower' },
  ],
  load: () => `dist/bin/mesh-agent.js run --kubeconfig (the simulated cluster's stand-in API server) --controller (discovery) --identity-addr (the bench's identity service, with the DaemonSet's identity flags) --node with no pods --proxy-workers 1, then 2, then 3; VmRSS once ready and synced, the median of ${RSS_SAMPLING.count} samples ${RSS_SAMPLING.gapMs / 1000} s apart`,
  async run(c) {
    const rss: number[] = [];
    const notes: string[] = [];
    for (const proxies of MEMORY_PROXIES) {
      const agent: { child: ChildProcess; pid: number } = await c.env.startClusterAgent(proxies);
      try {
        // Settled: what start-up allocated has had a few seconds to be collected.
        await new Promise((r) => setTimeout(r, 3000));
        rss.push((await sampleMedian(() => c.env.rssBytes(agent.pid), (ms) => new Promise((r) => setTimeout(r, ms)))) / 2 ** 20);
      } finally {
        await c.env.stopClusterAgent(agent.child);
      }
    }
    notes.push(`Cluster mode as the DaemonSet runs it: pods from the API server (list and watch, none on this node), Services and endpoints from the controller's discovery stream, identity on (mTLS: the tunnel listener in every proxy; no certificate, as no pod is meshed).`);
    notes.push(`The second proxy added ${(rss[1]! - rss[0]!).toFixed(1)} MB, the third ${(rss[2]! - rss[1]!).toFixed(1)} MB; per extra proxy is their mean.`);
    return { values: { 'agent RSS idle, 1 proxy': rss[0]!, 'agent RSS idle, 2 proxies': rss[1]!, 'agent RSS idle, 3 proxies': rss[2]!, 'per extra proxy': (rss[2]! - rss[0]!) / 2 }, notes };
  },
};
