// The `stat` query over the window store. Interception happens on the client's node, so
// every pair is seen from its client: a resource's row sums the requests sent TO its pods
// by meshed clients, which is what Linkerd's stat shows for a resource (its inbound
// success rate, RPS and latency). Pure: time comes in as `now`.
import { mergeInto, quantile, type Histogram } from '../telemetry/histogram.ts';
import type { Peer, PodInventory } from '../telemetry/report.ts';
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

interface Ref {
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

interface Acc {
  namespace: string;
  name: string;
  meshed: number;
  total: number;
  requests: number;
  successes: number;
  latency: Histogram;
  tcpOpen: number;
  bytesIn: number;
  bytesOut: number;
}

export function stat(store: WindowStore, q: StatQuery, now: number): StatResult {
  const from = now - q.windowMs;
  const nodes = store.all();
  const live = nodes.filter((n) => isLive(n, now));
  // Destinations on other nodes are known only to their own node's agent: resolve them from
  // every live node's inventory.
  const byIp = new Map<string, PodInventory>();
  for (const n of live) for (const p of n.pods) if (p.ip) byIp.set(p.ip, p);
  const resolve = (d: Peer): Ref => {
    if (d.namespace) return peerRef(d);
    const p = byIp.get(d.ip);
    return p ? podRef(p) : {};
  };

  const acc = new Map<string, Acc>();
  const wanted = (r: { namespace: string; name: string } | null): r is { namespace: string; name: string } =>
    r !== null && (q.kind === 'namespace' || q.namespace === null || r.namespace === q.namespace) && (q.name === undefined || r.name === q.name);
  const get = (r: { namespace: string; name: string }): Acc => {
    const key = `${r.namespace}/${r.name}`;
    let a = acc.get(key);
    if (!a) {
      a = { namespace: r.namespace, name: r.name, meshed: 0, total: 0, requests: 0, successes: 0, latency: [], tcpOpen: 0, bytesIn: 0, bytesOut: 0 };
      acc.set(key, a);
    }
    return a;
  };

  for (const n of live) {
    for (const p of n.pods) {
      const r = resourceOf(podRef(p), q.kind);
      if (!wanted(r)) continue;
      const a = get(r);
      a.total++;
      if (p.meshed) a.meshed++;
    }
    for (const pair of n.latest.pairs) {
      if (pair.tcpOpen === 0) continue;
      const r = resourceOf(resolve(pair.dst), q.kind);
      if (wanted(r)) get(r).tcpOpen += pair.tcpOpen;
    }
  }

  let earliest = Infinity;
  for (const n of nodes) {
    for (const rep of n.reports) {
      if (rep.end <= from || rep.end > now + 60_000) continue;
      earliest = Math.min(earliest, rep.start);
      for (const pair of rep.pairs) {
        const r = resourceOf(resolve(pair.dst), q.kind);
        if (!wanted(r)) continue;
        const a = get(r);
        a.requests += pair.requests;
        a.successes += pair.successes;
        mergeInto(a.latency, pair.latency);
        a.bytesIn += pair.tcpBytesIn;
        a.bytesOut += pair.tcpBytesOut;
      }
    }
  }
  const coveredMs = earliest === Infinity ? 0 : now - Math.max(from, earliest);
  const perSec = (v: number) => (coveredMs > 0 ? (v * 1000) / coveredMs : null);

  const rows = [...acc.values()]
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name))
    .map((a): StatRow => ({
      namespace: a.namespace,
      kind: q.kind,
      name: a.name,
      meshedPods: a.meshed,
      totalPods: a.total,
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
    }));
  return {
    windowMs: q.windowMs,
    coveredMs,
    nodes: nodes.map((n) => ({ node: n.node, live: isLive(n, now), lastSeenMsAgo: now - n.lastSeen, dropped: n.dropped })),
    rows,
  };
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
