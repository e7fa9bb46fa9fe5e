// What the dashboard's pages show, computed from the controller's window store. Pure: the
// store and `now` come in, plain JSON-able objects go out; src/dashboard/server.ts serves them.
// Every request is counted once, by the client's agent, with both ends known, so a workload's
// row is its inbound traffic (as `stat`), and an edge is the traffic from one workload to another.
import { LATENCY_BOUNDS, total } from '../telemetry/histogram.ts';
import { aggregate, goldenMetrics, inWindow, peerResolver, stat, type Ref, type StatRow } from '../controller/stat.ts';
import { isLive, type WindowStore } from '../controller/store.ts';
import type { AgentSummary } from '../telemetry/report.ts';
import { EXTERNAL, refKey, type WorkloadRef } from './workload-ref.ts';

export { EXTERNAL, refKey, type WorkloadRef };

export type Metrics = ReturnType<typeof goldenMetrics>;
export type WorkloadRow = WorkloadRef & Metrics & { meshedPods: number; totalPods: number };
export type EdgeRow = Metrics & { src: WorkloadRef; dst: WorkloadRef };


/** A pod's workload, or EXTERNAL for a peer no agent knows. */
function workloadOfRef(r: Ref): WorkloadRef {
  return r.namespace && r.kind && r.owner ? { namespace: r.namespace, kind: r.kind, name: r.owner } : EXTERNAL;
}

export interface Window {
  windowMs: number;
  /** The part of the window the reports cover: rates divide by it. */
  coveredMs: number;
}

export interface NamespacesView extends Window {
  /** Nodes reporting now, and all the controller has heard of (for "no traffic yet"). */
  nodes: { live: number; total: number };
  rows: StatRow[];
}

export function namespacesView(store: WindowStore, windowMs: number, now: number): NamespacesView {
  const s = stat(store, { kind: 'namespace', namespace: null, windowMs }, now);
  return { windowMs, coveredMs: s.coveredMs, nodes: { live: s.nodes.filter((n) => n.live).length, total: s.nodes.length }, rows: s.rows };
}

/** Namespaces with a live pod or traffic in the window: what the other views accept. */
export function knownNamespaces(store: WindowStore, windowMs: number, now: number): string[] {
  return namespacesView(store, windowMs, now).rows.map((r) => r.name);
}

/** Every workload of a namespace (pods of live nodes, or traffic to it), with the golden metrics of what it received. */
export function workloadsView(store: WindowStore, namespace: string, windowMs: number, now: number): Window & { rows: WorkloadRow[] } {
  const inNs = (r: Ref): WorkloadRef | null => {
    const w = workloadOfRef(r);
    return w.namespace === namespace ? w : null;
  };
  const res = aggregate<WorkloadRef>(store, windowMs, now, { key: refKey, pod: inNs, pair: (_src, dst) => inNs(dst) });
  const rows = res.groups
    .map(({ group, totals }): WorkloadRow => ({ ...group, meshedPods: totals.meshed, totalPods: totals.total, ...goldenMetrics(totals, res.coveredMs) }))
    .sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
  return { windowMs, coveredMs: res.coveredMs, rows };
}

/** Traffic between workloads where either end is in the namespace (and, given `workload`, is that workload). */
export function edgesView(store: WindowStore, q: { namespace: string; workload?: WorkloadRef }, windowMs: number, now: number): Window & { edges: EdgeRow[] } {
  const touches = (w: WorkloadRef) => (q.workload ? refKey(w) === refKey(q.workload) : w.namespace === q.namespace);
  const res = aggregate<{ src: WorkloadRef; dst: WorkloadRef }>(store, windowMs, now, {
    key: (e) => `${refKey(e.src)}>${refKey(e.dst)}`,
    edges: true,
    pair: (s, d) => {
      const e = { src: workloadOfRef(s), dst: workloadOfRef(d) };
      return touches(e.src) || touches(e.dst) ? e : null;
    },
  });
  const edges = res.groups
    .map(({ group, totals }): EdgeRow => ({ ...group, ...goldenMetrics(totals, res.coveredMs) }))
    .sort((a, b) => refKey(a.src).localeCompare(refKey(b.src)) || refKey(a.dst).localeCompare(refKey(b.dst)));
  return { windowMs, coveredMs: res.coveredMs, edges };
}

export interface SeriesPoint {
  /** Bucket start and end, ms since epoch. */
  start: number;
  end: number;
  /** null where no report covers the bucket (before the first report, a gap while an agent was away). */
  requests: number | null;
  successes: number | null;
  rps: number | null;
  successRate: number | null;
}

/**
 * Requests and successes matching `match` in `buckets` equal slices of the window. A report
 * spans an interval (5 s by default) that rarely lines up with a bucket, so its counts are
 * spread over the buckets it overlaps in proportion to the overlap: a rate assumed even
 * within one report, rather than spikes and holes where intervals and buckets disagree.
 */
export function seriesView(store: WindowStore, match: (src: Ref, dst: Ref) => boolean, windowMs: number, now: number, buckets = 30): SeriesPoint[] {
  const from = now - windowMs;
  const step = windowMs / buckets;
  const req = new Array<number>(buckets).fill(0);
  const ok = new Array<number>(buckets).fill(0);
  const covered = new Array<boolean>(buckets).fill(false);
  const resolve = peerResolver(store, now);
  for (const n of store.all()) {
    for (const rep of n.reports) {
      if (!inWindow(rep.end, from, now)) continue;
      let r = 0;
      let s = 0;
      for (const p of rep.pairs) {
        if (p.requests === 0 || p.side === 'client' || !match(resolve(p.src), resolve(p.dst))) continue;
        r += p.requests;
        s += p.successes;
      }
      const start = Math.max(rep.start, from);
      const end = Math.min(rep.end, now);
      const span = rep.end - rep.start;
      for (let i = Math.max(0, Math.floor((start - from) / step)); i < buckets; i++) {
        const b0 = from + i * step;
        const overlap = Math.min(end, b0 + step) - Math.max(start, b0);
        if (overlap <= 0) {
          if (b0 >= end) break;
          continue;
        }
        covered[i] = true;
        // A zero-length report (start == end) lands whole in its bucket.
        const share = span > 0 ? overlap / span : 1;
        req[i]! += r * share;
        ok[i]! += s * share;
      }
    }
  }
  return req.map((r, i) => ({
    start: Math.round(from + i * step),
    end: Math.round(from + (i + 1) * step),
    requests: covered[i] ? r : null,
    successes: covered[i] ? ok[i]! : null,
    rps: covered[i] ? (r * 1000) / step : null,
    successRate: covered[i] && r > 0 ? ok[i]! / r : null,
  }));
}

export interface PodRow {
  name: string;
  ip: string | null;
  node: string;
  meshed: boolean;
}

export interface WorkloadView extends Window {
  workload: WorkloadRow;
  inbound: EdgeRow[];
  outbound: EdgeRow[];
  pods: PodRow[];
  series: SeriesPoint[];
  /** The merged latency histogram of its inbound requests: bucket upper bounds (ms) and counts; the last count is +Inf. */
  latency: { bounds: readonly number[]; counts: number[] };
}

/** One workload's page; null when no live pod of it and no traffic to or from it is known. */
export function workloadView(store: WindowStore, w: WorkloadRef, windowMs: number, now: number): WorkloadView | null {
  const same = (r: Ref) => refKey(workloadOfRef(r)) === refKey(w);
  const res = aggregate<WorkloadRef>(store, windowMs, now, { key: refKey, pod: (p) => (same(p) ? w : null), pair: (_s, d) => (same(d) ? w : null) });
  const { edges } = edgesView(store, { namespace: w.namespace, workload: w }, windowMs, now);
  const pods: PodRow[] = [];
  for (const n of store.all()) {
    if (!isLive(n, now)) continue;
    for (const p of n.pods) if (same({ namespace: p.namespace, kind: p.kind, owner: p.owner })) pods.push({ name: p.name, ip: p.ip, node: n.node, meshed: p.meshed });
  }
  const g = res.groups[0];
  if (!g && edges.length === 0) return null;
  const totals = g?.totals ?? { meshed: 0, total: 0, requests: 0, successes: 0, latency: [], tcpOpen: 0, bytesIn: 0, bytesOut: 0 };
  const counts = LATENCY_BOUNDS.map((_, i) => totals.latency[i] ?? 0);
  counts.push(totals.latency[LATENCY_BOUNDS.length] ?? 0);
  return {
    windowMs,
    coveredMs: res.coveredMs,
    workload: { ...w, meshedPods: totals.meshed, totalPods: totals.total, ...goldenMetrics(totals, res.coveredMs) },
    inbound: edges.filter((e) => refKey(e.dst) === refKey(w)),
    outbound: edges.filter((e) => refKey(e.src) === refKey(w)),
    pods: pods.sort((a, b) => a.name.localeCompare(b.name)),
    series: seriesView(store, (_s, d) => same(d), windowMs, now),
    latency: { bounds: LATENCY_BOUNDS, counts: total(counts) ? counts : [] },
  };
}

export interface NodeRow {
  node: string;
  live: boolean;
  lastSeenMsAgo: number;
  intervalMs: number;
  agentId: string;
  reportsInWindow: number;
  received: number;
  duplicates: number;
  dropped: number;
  pods: number;
  meshedPods: number;
  /** Whether the agent's tap stream to the controller is open now. */
  tapLink: boolean;
  /** null for an agent of an earlier release, which sends no summary. */
  agent: (AgentSummary & { uptimeSeconds: number }) | null;
}

/** Every agent the controller has heard from in its retention. */
export function nodesView(store: WindowStore, tapLinks: Array<{ node: string }>, now: number): { nodes: NodeRow[] } {
  const linked = new Set(tapLinks.map((l) => l.node));
  const nodes = store.all().map((n): NodeRow => ({
    node: n.node,
    live: isLive(n, now),
    lastSeenMsAgo: now - n.lastSeen,
    intervalMs: n.intervalMs,
    agentId: n.agentId,
    reportsInWindow: n.reports.length,
    received: n.received,
    duplicates: n.duplicates,
    dropped: n.dropped,
    pods: n.pods.length,
    meshedPods: n.pods.filter((p) => p.meshed).length,
    tapLink: linked.has(n.node),
    // The agent's clock dates its start; the report it came in is as old as n.latest.end on the same clock.
    agent: n.agent ? { ...n.agent, uptimeSeconds: Math.max(0, Math.round((n.latest.end - n.agent.startedAt + (now - n.lastSeen)) / 1000)) } : null,
  }));
  return { nodes: nodes.sort((a, b) => a.node.localeCompare(b.node)) };
}
