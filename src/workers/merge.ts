// The agent's one answer from several proxies' states (docs/proxy.md, "Workers"). Pure.
import type { ProxyStats } from '../proxy/listener.ts';
import type { EndpointSnapshot } from '../routing/balancer.ts';
import type { BalancerCount, ServiceRef } from '../routing/router.ts';

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/**
 * The proxies' counters as one proxy's: sums, except knownHttp1Dests, the largest worker's
 * cache (each remembers destinations on its own; the cap applies to each).
 */
export function sumProxyStats(all: readonly ProxyStats[]): ProxyStats {
  const out: ProxyStats = {
    open: 0, accepted: 0, refusedNoRecord: 0, refusedOverCap: 0, byProtocol: {}, byDetection: {}, spliced: 0, spliceFailed: 0,
    eagerDialSkipped: 0, eagerDialLate: 0, knownHttp1Dests: 0, noEndpoints: 0, inboundAccepted: 0, tunnelledInspected: 0, localInspected: 0,
  };
  for (const s of all) {
    out.open += s.open;
    out.accepted += s.accepted;
    out.refusedNoRecord += s.refusedNoRecord;
    out.refusedOverCap += s.refusedOverCap;
    addCounts(out.byProtocol, s.byProtocol);
    addCounts(out.byDetection, s.byDetection);
    out.spliced += s.spliced;
    out.spliceFailed += s.spliceFailed;
    out.eagerDialSkipped += s.eagerDialSkipped;
    out.eagerDialLate += s.eagerDialLate;
    out.knownHttp1Dests = Math.max(out.knownHttp1Dests, s.knownHttp1Dests);
    out.noEndpoints += s.noEndpoints;
    out.inboundAccepted += s.inboundAccepted ?? 0;
    out.tunnelledInspected += s.tunnelledInspected ?? 0;
    out.localInspected += s.localInspected ?? 0;
    if (s.nativeIoClients !== undefined) out.nativeIoClients = (out.nativeIoClients ?? 0) + s.nativeIoClients;
    if (s.nativeIoUpstreams !== undefined) out.nativeIoUpstreams = (out.nativeIoUpstreams ?? 0) + s.nativeIoUpstreams;
  }
  return out;
}

/** One Service port as a router describes it (routing/router.ts describe()). */
export interface DescribedPort {
  ref: ServiceRef;
  authority: string;
  problems: string[];
  /** Topology aware routing's mode and kept endpoints, or why hints are ignored (the same in every proxy). */
  topology?: string;
  endpoints: EndpointSnapshot[];
}

/** An endpoint as the agent's proxies together balance it, with each proxy's own view. */
export type MergedEndpoint = EndpointSnapshot & { workers: Array<{ worker: number } & Pick<EndpointSnapshot, 'state' | 'ewmaMs' | 'inflight' | 'requests' | 'failures' | 'ejections'>> };

const WORSE: Record<EndpointSnapshot['state'], number> = { ready: 0, probation: 1, ejected: 2 };

/**
 * Every proxy balances on its own (as each Linkerd proxy does): an endpoint's requests, failures,
 * ejections (each proxy's failure accrual ejects on its own) and requests in flight are the sums, its EWMA the mean of the proxies' estimates weighted by the
 * requests each sent it (an unweighted mean before any), its state the worst any proxy holds
 * (one proxy's ejection is worth seeing). Each proxy's own numbers are kept under `workers`.
 */
export function mergeDescribed(byWorker: ReadonlyArray<{ worker: number; ports: readonly DescribedPort[] }>): Array<Omit<DescribedPort, 'endpoints'> & { endpoints: MergedEndpoint[] }> {
  const ports = new Map<number, Omit<DescribedPort, 'endpoints'> & { endpoints: Map<string, MergedEndpoint> }>();
  for (const { worker, ports: described } of byWorker) {
    for (const p of described) {
      let mp = ports.get(p.ref.port);
      if (mp === undefined) ports.set(p.ref.port, (mp = { ref: p.ref, authority: p.authority, problems: [], ...(p.topology !== undefined ? { topology: p.topology } : {}), endpoints: new Map() }));
      for (const pr of p.problems) if (!mp.problems.includes(pr)) mp.problems.push(pr);
      for (const e of p.endpoints) {
        const k = `${e.ip}:${e.port}`;
        let m = mp.endpoints.get(k);
        if (m === undefined) mp.endpoints.set(k, (m = { ...e, state: 'ready', ewmaMs: 0, inflight: 0, requests: 0, failures: 0, ejections: 0, workers: [] }));
        m.workers.push({ worker, state: e.state, ewmaMs: e.ewmaMs, inflight: e.inflight, requests: e.requests, failures: e.failures, ejections: e.ejections });
        if (WORSE[e.state] > WORSE[m.state]) m.state = e.state;
        m.inflight += e.inflight;
        m.requests += e.requests;
        m.failures += e.failures;
        m.ejections += e.ejections;
      }
    }
  }
  const out = [];
  for (const mp of [...ports.values()].sort((a, b) => a.ref.port - b.ref.port)) {
    const endpoints = [...mp.endpoints.values()];
    for (const m of endpoints) {
      m.ewmaMs = m.requests > 0
        ? m.workers.reduce((s, w) => s + w.ewmaMs * w.requests, 0) / m.requests
        : m.workers.reduce((s, w) => s + w.ewmaMs, 0) / m.workers.length;
    }
    out.push({ ref: mp.ref, authority: mp.authority, problems: mp.problems, ...(mp.topology !== undefined ? { topology: mp.topology } : {}), endpoints });
  }
  return out;
}

/**
 * Every proxy's balancers as the agent's: per Service port, the endpoints any proxy balances
 * over, and as pending the most any one proxy holds back (each proxy's failure accrual is its own).
 */
export function mergeBalancerCounts(byProxy: ReadonlyArray<readonly BalancerCount[]>): BalancerCount[] {
  const out = new Map<string, BalancerCount & { total: number }>();
  for (const list of byProxy) {
    for (const b of list) {
      const k = `${b.namespace}/${b.name}:${b.port}`;
      const m = out.get(k);
      if (m === undefined) out.set(k, { ...b, total: b.ready + b.pending });
      else {
        m.total = Math.max(m.total, b.ready + b.pending);
        m.pending = Math.max(m.pending, b.pending);
      }
    }
  }
  return [...out.values()].map(({ total, ...b }) => ({ ...b, ready: total - b.pending }));
}
