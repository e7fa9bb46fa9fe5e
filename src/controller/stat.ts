// The `stat` query over the window store. A resource's row sums the requests sent TO its pods,
// which is what Linkerd's stat shows for a resource (its inbound success rate, RPS and latency):
// from the destination's agent, which captures every connection to its node's meshed pods,
// unmeshed clients' included (docs/policy.md); a meshed client's agent reports the client side
// of a pair whose destination is on another node, which rows leave out (PairSide). Pure: time
// comes in as `now`.
import { mergeInto, quantile, type Histogram } from '../telemetry/histogram.ts';
import type { PairReport, Peer, PodInventory } from '../telemetry/report.ts';
import { isLive, type WindowStore } from './store.ts';

/** Resource kinds `stat` and `tap` accept, with kubectl's short names. Values are workloadOf's kinds. */
const KINDS: Record<string, string> = {
  ns: 'namespace', namespace: 'namespace', namespaces: 'namespace',
  po: 'pod', pod: 'pod', pods: 'pod',
  deploy: 'deployment', deployment: 'deployment', deployments: 'deployment',
  sts: 'statefulset', statefulset: 'statefulset', statefulsets: 'statefulset',
  ds: 'daemonset', daemonset: 'daemonset', daemonsets: 'daemonset',
  job: 'job', jobs: 'job',
  rs: 'replicaset', replicaset: 'replicaset', replicasets: 'replicaset',
};

/** Short names for output (as Linkerd prints `deploy/web`). */
export const SHORT: Record<string, string> = { namespace: 'ns', pod: 'po', deployment: 'deploy', statefulset: 'sts', daemonset: 'ds', job: 'job', replicaset: 'rs' };

export function resourceKind(text: string): string {
  const k = KINDS[text.toLowerCase()];
  if (!k) throw new Error(`unknown resource type "${text}"; use one of deploy, pod, ns, sts, ds, job, rs`);
  return k;
}

/** "deploy/web", "po/web-1", "ns/shop" -> {kind, name}. */
export function parseResource(text: string): { kind: string; name: string } {
  const i = text.indexOf('/');
  if (i <= 0 || i === text.length - 1) throw new Error(`"${text}" is not TYPE/NAME; e.g. deploy/web or pod/web-1`);
  return { kind: resourceKind(text.slice(0, i)), name: text.slice(i + 1) };
}

export interface StatQuery {
  kind: string;
  /** null: every namespace. Ignored for kind namespace. */
  namespace: string | null;
  name?: string;
  windowMs: number;
}

export interface StatRow {
  namespace: string;
  kind: string;
  name: string;
  meshedPods: number;
  totalPods: number;
  requests: number;
  successes: number;
  /** null when no requests reached the resource in the window. */
  successRate: number | null;
  rps: number | null;
  latencyMsP50: number | null;
  latencyMsP95: number | null;
  latencyMsP99: number | null;
  tcpOpenConnections: number;
  readBytesPerSec: number | null;
  writeBytesPerSec: number | null;
}

export interface StatResult {
  windowMs: number;
  /** The part of the window the reports cover (less than the window after a start). Rates divide by this. */
  coveredMs: number;
  nodes: Array<{ node: string; live: boolean; lastSeenMsAgo: number; dropped: number }>;
  rows: StatRow[];
}

/** Who a pod is, from either a pair's peer (as its agent resolved it) or an inventory entry. */
export interface Ref {
  namespace?: string;
  kind?: string;
  owner?: string;
  pod?: string;
}
const peerRef = (p: Peer): Ref => ({ namespace: p.namespace, kind: p.kind, owner: p.name, pod: p.pod });
const podRef = (p: PodInventory): Ref => ({ namespace: p.namespace, kind: p.kind, owner: p.owner, pod: p.name });

/** The resource a pod belongs to for a kind (name = the namespace for kind namespace), or null. */
function resourceOf(p: Ref, kind: string): { namespace: string; name: string } | null {
  if (!p.namespace) return null;
  if (kind === 'namespace') return { namespace: p.namespace, name: p.namespace };
  if (kind === 'pod') return p.pod ? { namespace: p.namespace, name: p.pod } : null;
  return p.kind === kind && p.owner ? { namespace: p.namespace, name: p.owner } : null;
}

/** Sums of one group over the window: what every golden metric is computed from. */
export interface Totals {
  meshed: number;
  total: number;
  requests: number;
  successes: number;
  latency: Histogram;
  tcpOpen: number;
  bytesIn: number;
  bytesOut: number;
}

/** How aggregate() groups: a pod (inventory) and a pair (traffic) map to a group, or null to leave out. */
export interface Grouping<G> {
  key(g: G): string;
  pod?(p: Ref): G | null;
  pair(src: Ref, dst: Ref): G | null;
  /**
   * Groups by source and destination (edges): a pair's client side counts, for its source is
   * known there; its server side only when its source is known too (an unmeshed client), not when
   * it is a meshed client's node (until mTLS carries the client). Otherwise (by destination) the
   * server side counts and the client side does not.
   */
  edges?: boolean;
}

/** Whether a pair counts for a grouping (see Grouping.edges). */
export function pairCounts(side: PairReport['side'], src: Ref, edges: boolean): boolean {
  if (!edges) return side !== 'client';
  return side !== 'server' || src.namespace !== undefined;
}

export interface Aggregate<G> {
  groups: Array<{ group: G; totals: Totals }>;
  coveredMs: number;
  nodes: StatResult['nodes'];
}

/**
 * Live nodes' inventories as an IP resolver: destinations on other nodes are known only to
 * their own node's agent, so a pair's peer without workload fields is looked up here.
 */
export function peerResolver(store: WindowStore, now: number): (p: Peer) => Ref {
  const byIp = new Map<string, PodInventory>();
  for (const n of store.all()) if (isLive(n, now)) for (const p of n.pods) if (p.ip) byIp.set(p.ip, p);
  return (d: Peer): Ref => {
    if (d.namespace) return peerRef(d);
    const p = byIp.get(d.ip);
    return p ? podRef(p) : {};
  };
}

/** Whether a stored report counts for a window ending now (a clock far ahead is ignored). */
export const inWindow = (end: number, from: number, now: number) => end > from && end <= now + 60_000;

/** Sums pods (live nodes) and traffic (reports ending in the window) per group. */
export function aggregate<G>(store: WindowStore, windowMs: number, now: number, by: Grouping<G>): Aggregate<G> {
  const from = now - windowMs;
  const nodes = store.all();
  const resolve = peerResolver(store, now);
  const acc = new Map<string, { group: G; totals: Totals }>();
  const get = (g: G): Totals => {
    const key = by.key(g);
    let a = acc.get(key);
    if (!a) {
      a = { group: g, totals: { meshed: 0, total: 0, requests: 0, successes: 0, latency: [], tcpOpen: 0, bytesIn: 0, bytesOut: 0 } };
      acc.set(key, a);
    }
    return a.totals;
  };

  for (const n of nodes) {
    if (!isLive(n, now)) continue;
    if (by.pod) {
      for (const p of n.pods) {
        const g = by.pod(podRef(p));
        if (g === null) continue;
        const a = get(g);
        a.total++;
        if (p.meshed) a.meshed++;
      }
    }
    for (const pair of n.latest.pairs) {
      if (pair.tcpOpen === 0) continue;
      const src = resolve(pair.src);
      if (!pairCounts(pair.side, src, by.edges ?? false)) continue;
      const g = by.pair(src, resolve(pair.dst));
      if (g !== null) get(g).tcpOpen += pair.tcpOpen;
    }
  }

  let earliest = Infinity;
  for (const n of nodes) {
    for (const rep of n.reports) {
      if (!inWindow(rep.end, from, now)) continue;
      earliest = Math.min(earliest, rep.start);
      for (const pair of rep.pairs) {
        const src = resolve(pair.src);
        if (!pairCounts(pair.side, src, by.edges ?? false)) continue;
        const g = by.pair(src, resolve(pair.dst));
        if (g === null) continue;
        const a = get(g);
        a.requests += pair.requests;
        a.successes += pair.successes;
        mergeInto(a.latency, pair.latency);
        a.bytesIn += pair.tcpBytesIn;
        a.bytesOut += pair.tcpBytesOut;
      }
    }
  }
  return {
    groups: [...acc.values()],
    coveredMs: earliest === Infinity ? 0 : now - Math.max(from, earliest),
    nodes: nodes.map((n) => ({ node: n.node, live: isLive(n, now), lastSeenMsAgo: now - n.lastSeen, dropped: n.dropped })),
  };
}

/** The golden metrics of a group's totals; RPS divides by the part of the window the reports cover. */
export function goldenMetrics(a: Totals, coveredMs: number) {
  const perSec = (v: number) => (coveredMs > 0 ? (v * 1000) / coveredMs : null);
  return {
    requests: a.requests,
    successes: a.successes,
    successRate: a.requests ? a.successes / a.requests : null,
    rps: a.requests ? perSec(a.requests) : null,
    latencyMsP50: quantile(a.latency, 0.5),
    latencyMsP95: quantile(a.latency, 0.95),
    latencyMsP99: quantile(a.latency, 0.99),
    tcpOpenConnections: a.tcpOpen,
    readBytesPerSec: perSec(a.bytesIn),
    writeBytesPerSec: perSec(a.bytesOut),
  };
}

export function stat(store: WindowStore, q: StatQuery, now: number): StatResult {
  const wanted = (r: { namespace: string; name: string } | null) =>
    r !== null && (q.kind === 'namespace' || q.namespace === null || r.namespace === q.namespace) && (q.name === undefined || r.name === q.name) ? r : null;
  const res = aggregate<{ namespace: string; name: string }>(store, q.windowMs, now, {
    key: (r) => `${r.namespace}/${r.name}`,
    pod: (p) => wanted(resourceOf(p, q.kind)),
    pair: (_src, dst) => wanted(resourceOf(dst, q.kind)),
  });
  const rows = res.groups
    .sort((a, b) => a.group.namespace.localeCompare(b.group.namespace) || a.group.name.localeCompare(b.group.name))
    .map(({ group, totals }): StatRow => ({
      namespace: group.namespace,
      kind: q.kind,
      name: group.name,
      meshedPods: totals.meshed,
      totalPods: totals.total,
      ...goldenMetrics(totals, res.coveredMs),
    }));
  return { windowMs: q.windowMs, coveredMs: res.coveredMs, nodes: res.nodes, rows };
}

/** "10s", "1m", "1h", "90s" -> ms; a clear error otherwise. */
export function parseWindow(text: string, max: number): number {
  const m = /^(\d+)(s|m|h)$/.exec(text);
  if (!m) throw new Error(`time window "${text}": use a number and s, m or h, e.g. 30s, 1m, 10m`);
  const ms = Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's' | 'm' | 'h'];
  if (ms <= 0) throw new Error(`time window "${text}": must be more than zero`);
  if (ms > max) throw new Error(`time window "${text}": the controller keeps ${max / 60_000}m; ask for less or start it with a longer --retention`);
  return ms;
}
