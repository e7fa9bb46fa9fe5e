// What an agent tells the controller every interval: per (source pod, destination) pair,
// the requests, successes, a latency histogram, bytes and TCP connections of that interval,
// plus the node's pod inventory. Counts are deltas of one interval (never cumulative), so a
// restarted agent's reports simply add to the window and a report resent after a lost ack is
// recognised by (agentId, seq). Pure: the aggregator is a telemetry sink with no I/O.
import type { ConnBytesEvent, ConnCloseEvent, ConnOpenEvent, Endpoints, RequestEvent, TelemetrySink, TlsIds } from './events.ts';
import { LATENCY_BOUNDS, LATENCY_SCHEME, mergeInto, observe, trim, type Histogram } from './histogram.ts';
import type { WorkloadResolver } from './workload.ts';
import { show } from '../util/show.ts';

export const REPORT_VERSION = 1;

/** One end of a pair. Workload fields are absent when the reporting agent does not know the IP. */
export interface Peer {
  ip: string;
  namespace?: string;
  /** Owner kind as workloadOf spells it: deployment, statefulset, daemonset, job, replicaset, pod. */
  kind?: string;
  /** Owner name. */
  name?: string;
  pod?: string;
}

/**
 * Which side of a pair's traffic an agent saw, with inbound capture on every node (docs/policy.md):
 * 'client' (meshed client, destination on another node reached directly, whose agent captures
 * it and reports the 'server' side; through an mTLS tunnel the client's agent sees both sides,
 * since the destination's agent does not parse the requests),
 * 'server' (captured on its way to a pod of this node). Absent: both (a same-node pair, or a
 * destination outside the mesh).
 */
export type PairSide = 'client' | 'server';

export interface PairReport {
  /** Absent: this agent saw both sides. */
  side?: PairSide;
  src: Peer;
  dst: Peer;
  requests: number;
  successes: number;
  /** Counts per LATENCY_BOUNDS bucket (time to response headers), trailing zeros trimmed. */
  latency: number[];
  requestBytes: number;
  responseBytes: number;
  tcpOpened: number;
  tcpClosed: number;
  /** Connections open at the end of the interval (a gauge, not a delta). */
  tcpOpen: number;
  /** Bytes on the connections, client to server and back. */
  tcpBytesIn: number;
  tcpBytesOut: number;
}

export interface PodInventory {
  namespace: string;
  name: string;
  ip: string | null;
  kind: string;
  owner: string;
  meshed: boolean;
}

/**
 * The agent's own state, for the dashboard's nodes page: what `mesh-agent status` shows in
 * brief. Optional in the protocol (an agent of an earlier release sends none); bounded.
 */
export interface AgentSummary {
  version: string;
  /** When the agent process started, ms since epoch (agent clock). */
  startedAt: number;
  kernel: string;
  /** The datapath's programs and whether each is attached. */
  programs: Array<{ section: string; attached: boolean }>;
  /** assessHealth() of the agent's status: degraded with the reasons, as `mesh-agent status` says. */
  healthy: boolean;
  reasons: string[];
  proxy: { open: number; accepted: number };
  /** The agent's side of the controller link when it closed this report. */
  link: { backlog: number; backlogLimit: number; dropped: number; reconnects: number };
  /** Its workload certificates (docs/identity.md); absent with identity off or from an earlier release. */
  identity?: IdentitySummary;
}

export interface IdentitySummary {
  trustDomain: string;
  /** At most MAX_SUMMARY_CERTIFICATES, the soonest to end first. */
  certificates: Array<{ identity: string; state: 'ready' | 'pending' | 'failing'; notAfter: string | null }>;
  /** Days until the first trust anchor ends. */
  anchorDaysLeft: number;
}

export const MAX_SUMMARY_PROGRAMS = 32;
export const MAX_SUMMARY_CERTIFICATES = 64;
export const MAX_SUMMARY_REASONS = 20;

export interface Report {
  version: number;
  latencyScheme: string;
  node: string;
  /** Random per agent process: tells a restarted agent from a resent report. */
  agentId: string;
  /** Per agentId, from 1, one per interval. */
  seq: number;
  /** Interval, ms since epoch (agent clock). */
  start: number;
  end: number;
  pairs: PairReport[];
  pods: PodInventory[];
  /** Reports this agent dropped from its backlog since it started. */
  dropped: number;
  agent?: AgentSummary;
}

interface PairState {
  side?: PairSide;
  srcIp: string;
  dstIp: string;
  requests: number;
  successes: number;
  latency: Histogram;
  requestBytes: number;
  responseBytes: number;
  tcpOpened: number;
  tcpClosed: number;
  tcpBytesIn: number;
  tcpBytesOut: number;
  /** Connection ids open now; survives flushes (the gauge). */
  open: Set<number>;
  /** Connections open now on proxy workers, as their drains said (main thread only); survives flushes. */
  merged: number;
  /** How many of `open` the last drain reported (worker only). */
  reported: number;
}

const emptyPair = (side: PairSide | undefined, srcIp: string, dstIp: string, prev?: PairState): PairState => ({
  ...(side ? { side } : {}), srcIp, dstIp, requests: 0, successes: 0, latency: [], requestBytes: 0, responseBytes: 0,
  tcpOpened: 0, tcpClosed: 0, tcpBytesIn: 0, tcpBytesOut: 0,
  open: prev?.open ?? new Set<number>(), merged: prev?.merged ?? 0, reported: prev?.reported ?? 0,
});

/** A pair's counts since the last drain, as a proxy worker sends them: IPs only, workloads are named at flush. */
export interface RawPair {
  side?: PairSide;
  srcIp: string;
  dstIp: string;
  requests: number;
  successes: number;
  latency: number[];
  requestBytes: number;
  responseBytes: number;
  tcpOpened: number;
  tcpClosed: number;
  /** Change in the connections open now. */
  openDelta: number;
  tcpBytesIn: number;
  tcpBytesOut: number;
}

/** A worker's net open connections per pair, kept by the main thread so a dead worker's can be taken back. */
export type PairLedger = Map<string, number>;

/** Cap on distinct pairs per interval: a scan across many IPs must not grow memory without bound. */
export const MAX_PAIRS = 10_000;

/**
 * Sums the proxy's events per (source IP, destination IP) for one interval. Workloads are
 * resolved once per pair at flush, not per event. Per event cost: one Map lookup.
 */
export class ReportAggregator implements TelemetrySink {
  private pairs = new Map<string, PairState>();
  /** The pair the last event counted in; null when `pairs` starts over (flush, drain). */
  private last: PairState | null = null;
  private workloads: WorkloadResolver;
  private readonly localPods: ((ip: string, port: number) => boolean) | undefined;
  private readonly tunnelled: (ev: Endpoints) => boolean;
  /** Events not counted because MAX_PAIRS was reached, since start. */
  overflow = 0;

  /**
   * `localPods`: given when every node captures inbound (PairSide); absent, every pair is seen
   * whole. `tls`: a connection's tunnel identities (an outbound one through an mTLS tunnel is
   * seen whole here).
   */
  constructor(workloads: WorkloadResolver, localPods?: (ip: string, port: number) => boolean, tls?: (ev: Endpoints) => TlsIds | null) {
    this.workloads = workloads;
    this.localPods = localPods;
    this.tunnelled = tls ? (ev) => tls(ev) !== null : () => false;
  }

  /** Which side of its pair this agent sees an event from (tap asks too: a side the other agent also sees is its to show). */
  sideOf(ev: Endpoints): PairSide | undefined {
    if (ev.direction === 'inbound') return 'server';
    return this.localPods !== undefined && this.workloads.byIp(ev.destIp) !== null && !this.localPods(ev.destIp, ev.destPort) && !this.tunnelled(ev) ? 'client' : undefined;
  }

  /** `gauge`: made past MAX_PAIRS too (a worker's open connections, which must come off where they went on). */
  private pair(side: PairSide | undefined, srcIp: string, dstIp: string, key?: string, gauge = false): PairState | null {
    // Events come in runs of one pair (a connection's requests): the last one's needs no key.
    const last = this.last;
    if (last !== null && last.srcIp === srcIp && last.dstIp === dstIp && last.side === side) return last;
    key ??= `${side ?? ''}|${srcIp}>${dstIp}`;
    let p = this.pairs.get(key);
    if (!p) {
      if (this.pairs.size >= MAX_PAIRS && !gauge) {
        this.overflow++;
        return null;
      }
      p = emptyPair(side, srcIp, dstIp);
      this.pairs.set(key, p);
    }
    this.last = p;
    return p;
  }

  request(ev: RequestEvent): void {
    const p = this.pair(this.sideOf(ev), ev.sourceIp, ev.destIp);
    if (!p) return;
    p.requests++;
    if (ev.success) p.successes++;
    // As Prometheus' response_latency_ms (recorder.ts): a request with no response (status 0) has
    // no response latency; its time to failure (a 5 s connect timeout) would set stat's p99.
    if (ev.status > 0) observe(p.latency, ev.latencyMs);
    p.requestBytes += ev.requestBytes;
    p.responseBytes += ev.responseBytes;
  }

  connOpen(ev: ConnOpenEvent): void {
    const p = this.pair(this.sideOf(ev), ev.sourceIp, ev.destIp);
    if (!p) return;
    p.tcpOpened++;
    p.open.add(ev.connId);
  }

  connBytes(ev: ConnBytesEvent): void {
    const p = this.pair(this.sideOf(ev), ev.sourceIp, ev.destIp);
    if (!p) return;
    p.tcpBytesIn += ev.bytesIn;
    p.tcpBytesOut += ev.bytesOut;
  }

  connClose(ev: ConnCloseEvent): void {
    const p = this.pair(this.sideOf(ev), ev.sourceIp, ev.destIp);
    if (!p) return;
    p.tcpClosed++;
    p.open.delete(ev.connId);
  }

  /** The interval's pairs; counters restart, open connections carry over. */
  flush(): PairReport[] {
    const out: PairReport[] = [];
    const next = new Map<string, PairState>();
    for (const [key, p] of this.pairs) {
      if (p.open.size + p.merged > 0) next.set(key, emptyPair(p.side, p.srcIp, p.dstIp, p));
      // Pairs kept past the cap for their open connections (merge) are not sent: a report holds
      // at most MAX_PAIRS, as the controller checks. Their counts are overflow, as at the cap.
      if (out.length >= MAX_PAIRS) {
        this.overflow += p.requests + p.tcpOpened + p.tcpClosed;
        continue;
      }
      out.push({
        ...(p.side ? { side: p.side } : {}),
        src: this.peer(p.srcIp),
        dst: this.peer(p.dstIp),
        requests: p.requests,
        successes: p.successes,
        latency: trim(p.latency),
        requestBytes: p.requestBytes,
        responseBytes: p.responseBytes,
        tcpOpened: p.tcpOpened,
        tcpClosed: p.tcpClosed,
        tcpOpen: p.open.size + p.merged,
        tcpBytesIn: p.tcpBytesIn,
        tcpBytesOut: p.tcpBytesOut,
      });
    }
    this.pairs = next;
    this.last = null;
    return out;
  }

  /** A proxy worker's side: each pair's counts since the last drain (IPs only); counters restart. */
  drain(): RawPair[] {
    const out: RawPair[] = [];
    const next = new Map<string, PairState>();
    for (const [key, p] of this.pairs) {
      out.push({
        ...(p.side ? { side: p.side } : {}),
        srcIp: p.srcIp, dstIp: p.dstIp, requests: p.requests, successes: p.successes, latency: trim(p.latency),
        requestBytes: p.requestBytes, responseBytes: p.responseBytes, tcpOpened: p.tcpOpened, tcpClosed: p.tcpClosed,
        openDelta: p.open.size - p.reported, tcpBytesIn: p.tcpBytesIn, tcpBytesOut: p.tcpBytesOut,
      });
      p.reported = p.open.size;
      if (p.open.size > 0) next.set(key, emptyPair(p.side, p.srcIp, p.dstIp, p));
    }
    this.pairs = next;
    this.last = null;
    return out;
  }

  /**
   * The main thread's side: a worker's drained pairs join this interval as if its events had come
   * here; their open connections are also kept in `ledger` so forget() can take them back.
   */
  merge(raw: readonly RawPair[], ledger?: PairLedger): void {
    for (const r of raw) {
      const key = `${r.side ?? ''}|${r.srcIp}>${r.dstIp}`;
      // A change in open connections is never dropped: a +1 lost to a full interval and its -1
      // kept later made the pair's gauge negative, and the controller refuses such a report whole.
      // Bounded: past the cap only pairs whose connections a worker opened or closed (each worker caps its own).
      const p = this.pair(r.side, r.srcIp, r.dstIp, key, r.openDelta !== 0);
      if (!p) {
        this.overflow += r.requests + r.tcpOpened + r.tcpClosed;
        continue;
      }
      p.requests += r.requests;
      p.successes += r.successes;
      mergeInto(p.latency, r.latency);
      p.requestBytes += r.requestBytes;
      p.responseBytes += r.responseBytes;
      p.tcpOpened += r.tcpOpened;
      p.tcpClosed += r.tcpClosed;
      p.tcpBytesIn += r.tcpBytesIn;
      p.tcpBytesOut += r.tcpBytesOut;
      p.merged += r.openDelta;
      if (ledger !== undefined && r.openDelta !== 0) ledger.set(key, (ledger.get(key) ?? 0) + r.openDelta);
    }
  }

  /** A worker is gone, and its connections with it: they no longer count as open. */
  forget(ledger: PairLedger): void {
    for (const [key, n] of ledger) {
      const p = this.pairs.get(key);
      if (p) p.merged -= n;
    }
    ledger.clear();
  }

  private peer(ip: string): Peer {
    const w = this.workloads.byIp(ip);
    return w ? { ip, namespace: w.namespace, kind: w.kind, name: w.name, pod: w.pod } : { ip };
  }
}

// ---- validation of what arrives at the controller (a peer's bytes: never trusted) ----

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length <= 512;

function checkPeer(v: any, where: string): Peer {
  if (!v || typeof v !== 'object' || !isStr(v.ip)) throw new Error(`${where}: needs an ip string`);
  for (const k of ['namespace', 'kind', 'name', 'pod'] as const) {
    if (v[k] !== undefined && !isStr(v[k])) throw new Error(`${where}.${k}: must be a string`);
  }
  return { ip: v.ip, namespace: v.namespace, kind: v.kind, name: v.name, pod: v.pod };
}

/** A Report from untrusted JSON, or an error naming the first bad field. */
export function parseReport(v: any): Report {
  if (!v || typeof v !== 'object') throw new Error('report: expected a JSON object');
  if (v.version !== REPORT_VERSION) throw new Error(`report: version ${show(v.version)} is not ${REPORT_VERSION}; run agent and controller of the same release`);
  if (v.latencyScheme !== LATENCY_SCHEME) throw new Error(`report: latency buckets ${show(v.latencyScheme)} differ from the controller's "${LATENCY_SCHEME}"; run agent and controller of the same release`);
  if (!isStr(v.node) || v.node === '') throw new Error('report.node: needs the node name');
  if (!isStr(v.agentId) || v.agentId === '') throw new Error('report.agentId: needs a string');
  for (const k of ['seq', 'start', 'end', 'dropped'] as const) if (!isCount(v[k])) throw new Error(`report.${k}: needs a non-negative number`);
  if (v.end < v.start) throw new Error('report: end is before start');
  if (!Array.isArray(v.pairs) || v.pairs.length > MAX_PAIRS) throw new Error(`report.pairs: needs an array of at most ${MAX_PAIRS}`);
  if (!Array.isArray(v.pods) || v.pods.length > 100_000) throw new Error('report.pods: needs an array');
  const pairs = v.pairs.map((p: any, i: number): PairReport => {
    const w = `report.pairs[${i}]`;
    if (!p || typeof p !== 'object') throw new Error(`${w}: expected an object`);
    for (const k of ['requests', 'successes', 'requestBytes', 'responseBytes', 'tcpOpened', 'tcpClosed', 'tcpOpen', 'tcpBytesIn', 'tcpBytesOut'] as const) {
      if (!isCount(p[k])) throw new Error(`${w}.${k}: needs a non-negative number`);
    }
    if (p.successes > p.requests) throw new Error(`${w}: more successes than requests`);
    if (!Array.isArray(p.latency) || p.latency.length > LATENCY_BOUNDS.length + 1 || !p.latency.every(isCount)) {
      throw new Error(`${w}.latency: needs at most ${LATENCY_BOUNDS.length + 1} bucket counts`);
    }
    if (p.side !== undefined && p.side !== 'client' && p.side !== 'server') throw new Error(`${w}.side: must be "client", "server" or absent`);
    return {
      ...(p.side !== undefined ? { side: p.side } : {}),
      src: checkPeer(p.src, `${w}.src`), dst: checkPeer(p.dst, `${w}.dst`),
      requests: p.requests, successes: p.successes, latency: p.latency,
      requestBytes: p.requestBytes, responseBytes: p.responseBytes,
      tcpOpened: p.tcpOpened, tcpClosed: p.tcpClosed, tcpOpen: p.tcpOpen, tcpBytesIn: p.tcpBytesIn, tcpBytesOut: p.tcpBytesOut,
    };
  });
  const pods = v.pods.map((p: any, i: number): PodInventory => {
    const w = `report.pods[${i}]`;
    if (!p || typeof p !== 'object' || !isStr(p.namespace) || !isStr(p.name) || !isStr(p.kind) || !isStr(p.owner)) throw new Error(`${w}: needs namespace, name, kind and owner strings`);
    if (p.ip !== null && !isStr(p.ip)) throw new Error(`${w}.ip: needs a string or null`);
    return { namespace: p.namespace, name: p.name, ip: p.ip, kind: p.kind, owner: p.owner, meshed: Boolean(p.meshed) };
  });
  const r: Report = { version: v.version, latencyScheme: v.latencyScheme, node: v.node, agentId: v.agentId, seq: v.seq, start: v.start, end: v.end, pairs, pods, dropped: v.dropped };
  if (v.agent !== undefined) r.agent = parseAgentSummary(v.agent);
  return r;
}

function parseAgentSummary(a: any): AgentSummary {
  const w = 'report.agent';
  if (!a || typeof a !== 'object') throw new Error(`${w}: expected an object`);
  for (const k of ['version', 'kernel'] as const) if (!isStr(a[k])) throw new Error(`${w}.${k}: needs a string`);
  if (!isCount(a.startedAt)) throw new Error(`${w}.startedAt: needs a non-negative number`);
  if (typeof a.healthy !== 'boolean') throw new Error(`${w}.healthy: needs true or false`);
  if (!Array.isArray(a.programs) || a.programs.length > MAX_SUMMARY_PROGRAMS) throw new Error(`${w}.programs: needs an array of at most ${MAX_SUMMARY_PROGRAMS}`);
  const programs = a.programs.map((p: any, i: number) => {
    if (!p || typeof p !== 'object' || !isStr(p.section) || typeof p.attached !== 'boolean') throw new Error(`${w}.programs[${i}]: needs a section string and attached true or false`);
    return { section: p.section, attached: p.attached };
  });
  if (!Array.isArray(a.reasons) || a.reasons.length > MAX_SUMMARY_REASONS || !a.reasons.every(isStr)) throw new Error(`${w}.reasons: needs at most ${MAX_SUMMARY_REASONS} strings of at most 512 characters`);
  const counts = (o: any, keys: readonly string[], where: string): any => {
    if (!o || typeof o !== 'object') throw new Error(`${w}.${where}: expected an object`);
    for (const k of keys) if (!isCount(o[k])) throw new Error(`${w}.${where}.${k}: needs a non-negative number`);
    return Object.fromEntries(keys.map((k) => [k, o[k]]));
  };
  const out: AgentSummary = {
    version: a.version, startedAt: a.startedAt, kernel: a.kernel, programs, healthy: a.healthy, reasons: [...a.reasons],
    proxy: counts(a.proxy, ['open', 'accepted'], 'proxy'),
    link: counts(a.link, ['backlog', 'backlogLimit', 'dropped', 'reconnects'], 'link'),
  };
  if (a.identity !== undefined) out.identity = parseIdentitySummary(a.identity, `${w}.identity`);
  return out;
}

function parseIdentitySummary(v: any, w: string): IdentitySummary {
  if (!v || typeof v !== 'object' || !isStr(v.trustDomain) || typeof v.anchorDaysLeft !== 'number' || !Number.isFinite(v.anchorDaysLeft)) throw new Error(`${w}: needs trustDomain and anchorDaysLeft`);
  if (!Array.isArray(v.certificates) || v.certificates.length > MAX_SUMMARY_CERTIFICATES) throw new Error(`${w}.certificates: needs an array of at most ${MAX_SUMMARY_CERTIFICATES}`);
  const certificates = v.certificates.map((c: any, i: number) => {
    if (!c || typeof c !== 'object' || !isStr(c.identity) || !['ready', 'pending', 'failing'].includes(c.state) || !(c.notAfter === null || (isStr(c.notAfter) && !Number.isNaN(Date.parse(c.notAfter))))) {
      throw new Error(`${w}.certificates[${i}]: needs identity, state (ready, pending or failing) and notAfter (a date or null)`);
    }
    return { identity: c.identity, state: c.state, notAfter: c.notAfter };
  });
  return { trustDomain: v.trustDomain, certificates, anchorDaysLeft: v.anchorDaysLeft };
}
