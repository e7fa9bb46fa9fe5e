// The discovery-scale scenario (issue 12): the real controller (`mesh-agent controller
// --resources DIR`) serving a generated cluster to simulated agents (bench/load/disco-agents.ts,
// a few processes of many HTTP/2 connections). It measures the controller's memory, the time
// for one EndpointSlice change to reach every agent and the bytes each agent receives for it,
// at two sizes each of agents and endpoints, and what the world costs one real agent's store
// (bench/load/disco-real-agent.ts). No datapath, no root.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { requestJson } from '../src/controller/client.ts';
import { parseVmRss, percentile, sampleMedian } from './parse.ts';
import { freePort } from '../test/helpers/ports.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const AGENTS_TOOL = path.join(ROOT, 'bench/load/disco-agents.ts');
const REAL_AGENT_TOOL = path.join(ROOT, 'bench/load/disco-real-agent.ts');

export interface ScaleConfig {
  /** Names the size in metric names, the same in a full and a quick run. */
  label: string;
  agents: number;
  endpoints: number;
}

/** Endpoints per Service (one EndpointSlice each), so 100,000 endpoints are 10,000 Services. */
export const ENDPOINTS_PER_SERVICE = 10;
export const FULL_CONFIGS: ScaleConfig[] = [
  { label: 'full size', agents: 1000, endpoints: 100_000 },
  { label: '1/10 of the agents', agents: 100, endpoints: 100_000 },
  { label: '1/10 of the endpoints', agents: 1000, endpoints: 10_000 },
];
/** --quick: the same three shapes, small. */
export const QUICK_CONFIGS: ScaleConfig[] = [
  { label: 'full size', agents: 40, endpoints: 2000 },
  { label: '1/10 of the agents', agents: 4, endpoints: 2000 },
  { label: '1/10 of the endpoints', agents: 40, endpoints: 200 },
];
const AGENT_PROCESSES = 4;
const CHANGES = { full: 20, quick: 5 };
const FILES_PER_KIND = 10;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ip = (a: number, i: number) => `${a}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** The generated cluster: Services with one EndpointSlice of ENDPOINTS_PER_SERVICE pods each, spread over 100 namespaces and 1,000 nodes. */
export function generateWorld(dir: string, endpoints: number): { services: number; pods: number } {
  const services = Math.ceil(endpoints / ENDPOINTS_PER_SERVICE);
  const objs: Record<'services' | 'slices' | 'pods', object[][]> = { services: [], slices: [], pods: [] };
  const put = (kind: keyof typeof objs, i: number, n: number, o: object) => {
    const f = Math.floor((i * FILES_PER_KIND) / n);
    (objs[kind][f] ??= []).push(o);
  };
  let p = 0;
  for (let s = 0; s < services; s++) {
    const ns = `ns-${s % 100}`;
    const name = `svc-${s}`;
    put('services', s, services, { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: `10.96.${(s >> 8) & 255}.${s & 255}`, clusterIPs: [`10.96.${(s >> 8) & 255}.${s & 255}`], ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'grpc', port: 9090, targetPort: 9090 }] } });
    const eps = [];
    for (let e = 0; e < ENDPOINTS_PER_SERVICE && p < endpoints; e++, p++) {
      const pod = `${name}-7d9f-${e}`;
      const node = `node-${p % 1000}`;
      eps.push({ addresses: [ip(10, (1 << 16) + p)], conditions: { ready: true, serving: true, terminating: false }, targetRef: { kind: 'Pod', name: pod, namespace: ns }, nodeName: node, zone: `zone-${p % 3}` });
      put('pods', p, endpoints, {
        apiVersion: 'v1', kind: 'Pod',
        metadata: { name: pod, namespace: ns, uid: `uid-${p}`, labels: { app: name, 'pod-template-hash': '7d9f' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-7d9f`, controller: true }] },
        spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'app', image: 'app:1' }] },
        status: { phase: 'Running', podIP: ip(10, (1 << 16) + p), podIPs: [{ ip: ip(10, (1 << 16) + p) }] },
      });
    }
    put('slices', s, services, {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `${name}-abcde`, namespace: ns, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'grpc', port: 9090, protocol: 'TCP' }], endpoints: eps,
    });
  }
  for (const [kind, files] of Object.entries(objs)) {
    files.forEach((items, i) => fs.writeFileSync(path.join(dir, `${kind}-${String(i).padStart(2, '0')}.json`), JSON.stringify({ apiVersion: 'v1', kind: 'List', items })));
  }
  writeChange(dir, 0);
  return { services, pods: endpoints };
}

/** The measured change: the EndpointSlice bench/target-a, whose first endpoint carries the change number. Saved as editors do (rename). */
export function writeChange(dir: string, k: number): void {
  const items = [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'target', namespace: 'bench' }, spec: { clusterIP: '10.97.0.1', ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
    {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'target-a', namespace: 'bench', labels: { 'kubernetes.io/service-name': 'target' } },
      addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }],
      endpoints: [{ addresses: [`10.254.${(k >> 8) & 255}.${k & 255}`], nodeName: 'node-0' }, ...Array.from({ length: 9 }, (_, i) => ({ addresses: [`10.253.0.${i + 1}`], nodeName: `node-${i + 1}` }))],
    },
  ];
  const file = path.join(dir, 'zz-change.json');
  fs.writeFileSync(`${file}.tmp`, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
  fs.renameSync(`${file}.tmp`, file);
}

function lines(child: ChildProcess): AsyncIterableIterator<string> {
  return readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
}

/** Waits for the next JSON line of every iterator that matches `pred`. */
async function fromAll(its: AsyncIterableIterator<string>[], pred: (o: any) => boolean, what: string, timeoutMs: number): Promise<any[]> {
  const one = async (it: AsyncIterableIterator<string>) => {
    for (;;) {
      const r = await it.next();
      if (r.done) throw new Error(`an agent process ended before ${what}`);
      const o = JSON.parse(r.value);
      if (pred(o)) return o;
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)));
  try {
    return await Promise.race([Promise.all(its.map(one)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function vmHwm(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

export interface ScaleResult extends ScaleConfig {
  services: number;
  pods: number;
  /** Controller RSS with the world loaded, before any agent (MB). */
  rssIdleMB: number;
  /** With every agent connected and synced (MB). */
  rssAgentsMB: number;
  /** VmHWM at the end: the peak, snapshots included (MB). */
  peakMB: number;
  snapshotMB: number;
  syncAllSeconds: number;
  /** One real agent's DiscoveryStore (its own process, connected after the others synced): heap the world takes, and the time to receive and apply it. */
  agentStoreHeapMB: number;
  agentSyncMs: number;
  changeP50Ms: number;
  changeP99Ms: number;
  bytesPerAgent: number;
  changes: number;
  /** Every change's time to the last agent, in the order they were made (ms). */
  changeMs: number[];
}

export async function runScale(cfg: ScaleConfig, changes: number, say: (s: string) => void): Promise<ScaleResult> {
  const dir = fs.mkdtempSync(ownedTempPrefix('bench'));
  const children: ChildProcess[] = [];
  let log = '';
  try {
    const world = generateWorld(dir, cfg.endpoints);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const ctl = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'controller', '--listen', `127.0.0.1:${port}`, '--dashboard-listen', 'off', '--resources', dir, '-q'], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(ctl);
    ctl.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
    const t0 = Date.now();
    for (;;) {
      if (ctl.exitCode !== null) throw new Error(`the controller exited (${ctl.exitCode}): ${log}`);
      const st = await requestJson(url, 'GET', '/v1/status', undefined, 2000).catch(() => null);
      if (st?.discovery?.synced) break;
      if (Date.now() - t0 > 300_000) throw new Error(`the controller did not load the world within 300 s: ${log}`);
      await sleep(200);
    }
    const rss = () => sampleMedian(() => parseVmRss(fs.readFileSync(`/proc/${ctl.pid}/status`, 'utf8')), sleep);
    const rssIdle = await rss();
    say(`  world loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s, controller ${(rssIdle / 2 ** 20).toFixed(0)} MB; connecting the agents`);

    const procs = Math.min(AGENT_PROCESSES, cfg.agents);
    const its: AsyncIterableIterator<string>[] = [];
    const connectAt = performance.timeOrigin + performance.now();
    for (let i = 0; i < procs; i++) {
      const n = Math.floor(cfg.agents / procs) + (i < cfg.agents % procs ? 1 : 0);
      const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', AGENTS_TOOL, '--url', url, '--count', String(n), '--id-base', String(i * 100_000)], { stdio: ['pipe', 'pipe', 'pipe'] });
      children.push(c);
      c.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
      its.push(lines(c));
    }
    const synced = await fromAll(its, (o) => o.synced !== undefined, 'every agent synced', 600_000);
    const syncAllSeconds = (Math.max(...synced.map((o) => o.at)) - connectAt) / 1000;
    const snapshotBytes = synced.reduce((n, o) => n + o.snapshotBytes * o.synced, 0) / cfg.agents;
    const rssAgents = await rss();
    say(`  all synced in ${syncAllSeconds.toFixed(1)} s (${(snapshotBytes / 2 ** 20).toFixed(1)} MB each), controller ${(rssAgents / 2 ** 20).toFixed(0)} MB; one real agent`);
    const real = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--expose-gc', REAL_AGENT_TOOL, '--url', url], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(real);
    real.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
    const [agent] = await fromAll([lines(real)], (o) => o.heapMB !== undefined, 'the real agent synced', 300_000);
    if (agent.endpoints !== cfg.endpoints + 10) throw new Error(`the real agent has ${agent.endpoints} endpoints, expected ${cfg.endpoints + 10}`);
    say(`  the real agent synced in ${(agent.syncMs / 1000).toFixed(1)} s, its store ${agent.heapMB.toFixed(0)} MB of heap; ${changes} changes`);

    const took: number[] = [];
    let bytes = 0;
    for (let k = 1; k <= changes; k++) {
      const at = performance.timeOrigin + performance.now();
      writeChange(dir, k);
      const got = await fromAll(its, (o) => o.change === k, `change ${k} at every agent`, 60_000);
      took.push(Math.max(...got.map((o) => o.last)) - at);
      bytes += got.reduce((n, o) => n + o.bytes, 0) / cfg.agents;
      await sleep(100); // the next change is another event, not the same reload
    }
    const inOrder = [...took];
    took.sort((a, b) => a - b);
    const peak = vmHwm(ctl.pid!);
    return {
      ...cfg, ...world,
      rssIdleMB: rssIdle / 2 ** 20, rssAgentsMB: rssAgents / 2 ** 20, peakMB: peak / 2 ** 20, snapshotMB: snapshotBytes / 2 ** 20, syncAllSeconds,
      agentStoreHeapMB: agent.heapMB, agentSyncMs: agent.syncMs,
      changeP50Ms: percentile(took, 50), changeP99Ms: percentile(took, 99), bytesPerAgent: bytes / changes, changes, changeMs: inOrder,
    };
  } finally {
    for (const c of children) {
      c.stdin?.end();
      c.kill('SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const size = (c: ScaleConfig) => `${c.agents.toLocaleString('en-US')} agents, ${c.endpoints.toLocaleString('en-US')} endpoints`;
const label = (c: ScaleConfig) => c.label;

/** The scenario's metrics, one set per size, named so the report reads as a table of sizes. */
export function scaleMetrics(configs: ScaleConfig[]) {
  return configs.flatMap((c) => [
    { name: `controller RSS (${label(c)})`, unit: 'MB', better: 'lower' as const },
    { name: `controller peak RSS (${label(c)})`, unit: 'MB', better: 'lower' as const },
    { name: `change to every agent p50 (${label(c)})`, unit: 'ms', better: 'lower' as const },
    { name: `change to every agent p99 (${label(c)})`, unit: 'ms', better: 'lower' as const },
    { name: `bytes per agent per change (${label(c)})`, unit: 'B', better: 'lower' as const },
    { name: `agent store heap (${label(c)})`, unit: 'MB', better: 'lower' as const },
  ]);
}

export async function runDiscoveryScale(quick: boolean, say: (s: string) => void): Promise<{ values: Record<string, number>; notes: string[] }> {
  const configs = quick ? QUICK_CONFIGS : FULL_CONFIGS;
  const changes = quick ? CHANGES.quick : CHANGES.full;
  const values: Record<string, number> = {};
  const notes: string[] = [];
  for (const c of configs) {
    say(`discovery-scale: ${label(c)}: ${size(c)}`);
    const r = await runScale(c, changes, say);
    values[`controller RSS (${label(c)})`] = r.rssAgentsMB;
    values[`controller peak RSS (${label(c)})`] = r.peakMB;
    values[`change to every agent p50 (${label(c)})`] = r.changeP50Ms;
    values[`change to every agent p99 (${label(c)})`] = r.changeP99Ms;
    values[`bytes per agent per change (${label(c)})`] = r.bytesPerAgent;
    values[`agent store heap (${label(c)})`] = r.agentStoreHeapMB;
    notes.push(`${label(c)}, ${size(c)} (${r.services.toLocaleString('en-US')} Services, ${r.pods.toLocaleString('en-US')} pods): controller ${r.rssIdleMB.toFixed(0)} MB before any agent, ${r.rssAgentsMB.toFixed(0)} MB with all synced, peak ${r.peakMB.toFixed(0)} MB; snapshot ${r.snapshotMB.toFixed(1)} MB per agent, all synced ${r.syncAllSeconds.toFixed(1)} s after the first connect; one real agent's store ${r.agentStoreHeapMB.toFixed(0)} MB of heap, its snapshot received and applied in ${(r.agentSyncMs / 1000).toFixed(1)} s; ${r.changes} changes: p50 ${r.changeP50Ms.toFixed(0)} ms, p99 ${r.changeP99Ms.toFixed(0)} ms, ${r.bytesPerAgent.toFixed(0)} B per agent each.`);
  }
  return { values, notes };
}
