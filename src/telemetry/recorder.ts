// The request and connection metrics as the proxy records them: Linkerd's families
// (docs/metrics.md), each event resolved once per identity to the series it lands in. No
// prom-client here, so a proxy worker thread records with the same code and pays none of the
// Registry's memory: it drains what changed as deltas, and the main thread's MetricsSink (a
// recorder with a Registry) merges them (docs/proxy.md, "Workers").
import type { ConnBytesEvent, ConnCloseEvent, ConnOpenEvent, Endpoints, RequestEvent, TelemetrySink, TlsIds } from './events.ts';
import { BoundedCache } from './bounded-cache.ts';
import {
  allLabelNames, latencyLabels, readWriteBytes, requestLabels, responseLabels,
  tcpCloseLabels, tcpLabels, viewsOf, workloadLabels, type LabelOptions, type Labels, type View,
} from './labels.ts';
import { RouteMetrics } from './route-metrics.ts';
import { AuthzMetrics } from './authz-metrics.ts';
import { add, CounterSeries, HistogramSeries, observe, SeriesFamily, type GaugeSeries, type Series } from './series.ts';
import type { WorkloadResolver } from './workload.ts';

/** linkerd2-proxy's response_latency_ms buckets, so Linkerd's histogram_quantile queries read the same. */
export const LATENCY_BUCKETS = [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000];
/** linkerd2-proxy's tcp_connection_duration_ms buckets. */
export const TCP_DURATION_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000];
/** Detection is sub-millisecond when the client speaks, up to the detect timeout when nobody does. */
export const DETECT_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
export const DEFAULT_MAX_SERIES = 5000;

export interface RecorderOptions {
  workloads: WorkloadResolver;
  /** pod and dst_pod labels (default true). */
  podLabels?: boolean;
  /** Label sets per metric before new ones fold into the overflow series (default 5000). */
  maxSeries?: number;
  /** The identities of a connection's mTLS tunnel, if it has one (tunnel/tunnels.ts tlsOf); default: the event's own `tls`. */
  tls?: (ep: Endpoints) => TlsIds | null;
  /**
   * Whether a destination is a pod of this node. Given when every node captures its pods' inbound
   * connections (docs/policy.md): an outbound event's inbound side is then recorded only for this
   * node's pods, the other nodes' agents record theirs. Absent: every known destination's.
   */
  localPods?: (ip: string, port: number) => boolean;
}

/**
 * Event identities resolved to their series, per cache. Past this the cache starts over (a
 * flood of made-up authorities costs a resolution per request, as without a cache).
 */
const RESOLVED_MAX = 4096;
/** Longer authorities are not cached: a key must stay small (the label is cut at 260 anyway). */
const MAX_CACHED_AUTHORITY = 300;
/** For a resolver that cannot say when pods changed: how long a resolution may be reused, ms. */
export const RESOLVED_FRESH_MS = 2000;

/** One side's series of a request identity. */
interface RequestSide {
  req: CounterSeries;
  resp: CounterSeries;
  latency: HistogramSeries | null;
}

interface CloseSeries {
  total: CounterSeries;
  duration: HistogramSeries;
}

/** One side's series of a connection, fixed when it opens (shared by connections with the same endpoints). */
interface ConnSide {
  view: View;
  base: Labels;
  openTotal: CounterSeries;
  open: GaugeSeries;
  read: CounterSeries;
  write: CounterSeries;
  /** Close series by protocol and error text. */
  closes: BoundedCache<CloseSeries>;
}

interface DetectSeries {
  total: CounterSeries;
  duration: HistogramSeries;
}

/**
 * What one series gained since the last drain, as a proxy worker sends it to the main thread.
 * `n` counts the observations (what an overflow series counts in
 * mesh_agent_metrics_overflow_total); a histogram's are its `count`.
 */
export type SeriesDelta =
  | { name: string; labels: Labels; value: number; n: number }
  | { name: string; labels: Labels; counts: number[]; sum: number; count: number };

/**
 * A source's net contribution to the gauges (connections open now), kept by the main thread per
 * worker, so a worker that dies takes its open connections out of the gauge with it.
 */
export type GaugeLedger = Map<GaugeSeries, number>;


export class MetricsRecorder implements TelemetrySink {
  protected readonly workloads: WorkloadResolver;
  private labelOpts: LabelOptions;
  private readonly tlsOf: (ep: Endpoints) => TlsIds | null;
  private conns = new Map<number, ConnSide[]>();
  /** The capped families, by name (the overflow counter is not one of them). */
  protected readonly byName = new Map<string, SeriesFamily<Series>>();
  /** mesh_agent_metrics_overflow_total{metric}: bounded by the number of families, so never capped itself. */
  protected readonly overflowTotal: SeriesFamily<CounterSeries>;
  protected readonly cap: number;

  private requestTotal: SeriesFamily<CounterSeries>;
  private responseTotal: SeriesFamily<CounterSeries>;
  private responseLatency: SeriesFamily<HistogramSeries>;
  private tcpOpenTotal: SeriesFamily<CounterSeries>;
  private tcpCloseTotal: SeriesFamily<CounterSeries>;
  private tcpOpen: SeriesFamily<GaugeSeries>;
  private tcpRead: SeriesFamily<CounterSeries>;
  private tcpWrite: SeriesFamily<CounterSeries>;
  private tcpDuration: SeriesFamily<HistogramSeries>;
  private detectTotal: SeriesFamily<CounterSeries>;
  private detectDuration: SeriesFamily<HistogramSeries>;
  /** Linkerd's route and backend metrics, for routed requests (their own labels: route-metrics.ts). */
  private routes: RouteMetrics;
  /** Linkerd's inbound authorization decisions (authz-metrics.ts). */
  private authz: AuthzMetrics;
  private readonly localPods: ((ip: string, port: number) => boolean) | undefined;

  // The hot path: an event's identity (its endpoints and outcome, never its timings) to the
  // series it lands in, so a repeated identity is a Map lookup and a few additions. Workload
  // labels depend on the pods, so these caches start over when the resolver's generation
  // moves (the agent bumps it on every pod change), or every RESOLVED_FRESH_MS for a
  // resolver that has none.
  private resolvedRequests: BoundedCache<RequestSide[]>;
  private resolvedConns: BoundedCache<ConnSide[]>;
  private resolvedDetect = new BoundedCache<DetectSeries>(256);
  /** The last request identity resolved: a connection's requests repeat it, so most need no key. */
  private readonly lastRequest = new LastRequest();

  constructor(opts: RecorderOptions) {
    this.workloads = opts.workloads;
    this.labelOpts = { podLabels: opts.podLabels ?? true };
    this.tlsOf = opts.tls ?? ((ep) => ep.tls ?? null);
    const cap = opts.maxSeries ?? DEFAULT_MAX_SERIES;
    if (!Number.isInteger(cap) || cap < 1) throw new Error(`metrics series cap ${cap} is not a positive integer; pass --metrics-max-series N with N >= 1`);
    this.cap = cap;
    const generation = opts.workloads.generation ? opts.workloads.generation.bind(opts.workloads) : () => Math.floor(Date.now() / RESOLVED_FRESH_MS);
    this.resolvedRequests = new BoundedCache(RESOLVED_MAX, generation);
    this.resolvedConns = new BoundedCache(RESOLVED_MAX, generation);

    const overflowTotal = new SeriesFamily<CounterSeries>({
      name: 'mesh_agent_metrics_overflow_total',
      help: 'Observations recorded in an overflow series because their metric reached the series cap (--metrics-max-series)',
      type: 'counter',
      labelNames: ['metric'],
      keep: [],
      cap: Infinity,
      overflowCount: () => null,
    });
    this.overflowTotal = overflowTotal;

    const family = <S extends Series>(type: 'counter' | 'gauge' | 'histogram', name: string, help: string, labelNames: string[], keep: string[], buckets?: number[]): SeriesFamily<S> => {
      const f = new SeriesFamily<S>({ name, help, type, labelNames, keep, cap, buckets, overflowCount: () => overflowTotal.resolve({ metric: name }) });
      this.byName.set(name, f as SeriesFamily<Series>);
      return f;
    };
    const side = <S extends Series>(type: 'counter' | 'gauge' | 'histogram', name: string, help: string, extra: string[], keep: string[], buckets?: number[]) =>
      family<S>(type, name, help, allLabelNames(extra), ['direction', 'tls', ...keep], buckets);

    const http = ['authority'];
    this.requestTotal = side('counter', 'request_total', 'HTTP requests (counted when the exchange ends)', http, []);
    this.responseTotal = side('counter', 'response_total', 'HTTP responses, with their classification', [...http, 'classification', 'status_code', 'grpc_status'], ['classification', 'status_code', 'grpc_status']);
    this.responseLatency = side('histogram', 'response_latency_ms', 'Time from the request to the response headers, ms', [...http, 'status_code'], ['status_code'], LATENCY_BUCKETS);
    const tcp = ['peer'];
    const close = ['peer', 'protocol', 'classification', 'errno'];
    this.tcpOpenTotal = side('counter', 'tcp_open_total', 'TCP connections opened', tcp, ['peer']);
    this.tcpCloseTotal = side('counter', 'tcp_close_total', 'TCP connections closed', close, close);
    this.tcpOpen = side('gauge', 'tcp_open_connections', 'TCP connections open now', tcp, ['peer']);
    this.tcpRead = side('counter', 'tcp_read_bytes_total', 'Bytes read from the peer (updated while the connection lives)', tcp, ['peer']);
    this.tcpWrite = side('counter', 'tcp_write_bytes_total', 'Bytes written to the peer (updated while the connection lives)', tcp, ['peer']);
    this.tcpDuration = side('histogram', 'tcp_connection_duration_ms', 'Lifetime of closed TCP connections, ms', close, close, TCP_DURATION_BUCKETS);

    const detect = ['protocol', 'detected_by', 'overflow'];
    this.detectTotal = family('counter', 'mesh_agent_protocol_detect_total', 'Proxied connections by detected protocol and how detection ended', detect, []);
    this.detectDuration = family('histogram', 'mesh_agent_protocol_detect_duration_ms', 'Time from accept to the protocol decision, ms', detect, [], DETECT_BUCKETS);
    this.routes = new RouteMetrics(family, generation);
    this.authz = new AuthzMetrics(family, generation);
    this.localPods = opts.localPods;
  }

  private views(ep: Endpoints, tcp: boolean): View[] {
    return viewsOf(ep, this.workloads.byIp(ep.sourceIp), this.workloads.byIp(ep.destIp), this.tlsOf(ep), tcp, this.localPods?.(ep.destIp, ep.destPort) ?? true);
  }

  private serverLabels(ip: string): Labels {
    return workloadLabels('', this.workloads.byIp(ip), this.labelOpts);
  }

  /** The slow path of a connection: label sets built and series looked up, once per endpoints identity. */
  private connSides(ep: Endpoints): ConnSide[] {
    // An event's own identities (a tunnel's destination end) are part of what it is.
    const k = ep.direction + '|' + ep.sourceIp + '|' + ep.destIp + '|' + ep.destPort + (ep.tls ? '|' + ep.tls.clientId + '|' + ep.tls.serverId : '');
    let sides = this.resolvedConns.get(k);
    if (sides === undefined) {
      sides = this.views(ep, true).map((view) => {
        const base = tcpLabels(view, this.labelOpts);
        return {
          view, base,
          openTotal: this.tcpOpenTotal.resolve(base), open: this.tcpOpen.resolve(base),
          read: this.tcpRead.resolve(base), write: this.tcpWrite.resolve(base),
          closes: new BoundedCache<CloseSeries>(64),
        };
      });
      this.resolvedConns.set(k, sides);
    }
    return sides;
  }

  private addBytes(sides: ConnSide[], ev: { bytesIn: number; bytesOut: number }) {
    for (const s of sides) {
      const { read, write } = readWriteBytes(s.view, ev);
      if (read > 0) add(s.read, read);
      if (write > 0) add(s.write, write);
    }
  }

  connOpen(ev: ConnOpenEvent): void {
    // Labels are fixed at open: the gauge's dec at close must hit the series its inc hit,
    // even if the pods changed meanwhile.
    const sides = this.connSides(ev);
    this.conns.set(ev.connId, sides);
    for (const s of sides) {
      add(s.openTotal, 1);
      add(s.open, 1);
    }
  }

  connBytes(ev: ConnBytesEvent): void {
    const sides = this.conns.get(ev.connId);
    if (sides) this.addBytes(sides, ev);
  }

  connClose(ev: ConnCloseEvent): void {
    let sides = this.conns.get(ev.connId);
    this.conns.delete(ev.connId);
    if (!sides) {
      // Closed without an open report: count what we can, leave the gauge alone.
      sides = this.connSides(ev);
      this.addBytes(sides, ev);
    } else {
      for (const s of sides) s.open.value--;
    }
    const ck = ev.protocol + '|' + (ev.error ?? '');
    for (const s of sides) {
      let c = s.closes.get(ck);
      if (c === undefined) {
        const l = tcpCloseLabels(s.base, ev);
        c = { total: this.tcpCloseTotal.resolve(l), duration: this.tcpDuration.resolve(l) };
        // Error texts are the proxy's, short and few; a long one is not worth keeping.
        if (ck.length <= 200) s.closes.set(ck, c);
      }
      add(c.total, 1);
      observe(c.duration, ev.durationMs);
    }
    const dk = ev.protocol + '|' + ev.detectedBy;
    let d = this.resolvedDetect.get(dk);
    if (d === undefined) {
      const l = { protocol: ev.protocol, detected_by: ev.detectedBy };
      d = { total: this.detectTotal.resolve(l), duration: this.detectDuration.resolve(l) };
      this.resolvedDetect.set(dk, d);
    }
    add(d.total, 1);
    observe(d.duration, ev.detectMs);
    if (ev.authz !== undefined) this.authz.record(ev as ConnCloseEvent & { authz: NonNullable<ConnCloseEvent['authz']> }, false, () => this.serverLabels(ev.destIp));
  }

  /** The slow path of a request: its label sets built and series looked up, per side. */
  private requestSides(ev: RequestEvent): RequestSide[] {
    return this.views(ev, false).map((v) => ({
      req: this.requestTotal.resolve(requestLabels(v, ev, this.labelOpts)),
      resp: this.responseTotal.resolve(responseLabels(v, ev, this.labelOpts)),
      latency: ev.status > 0 ? this.responseLatency.resolve(latencyLabels(v, ev, this.labelOpts)) : null,
    }));
  }

  request(ev: RequestEvent): void {
    const last = this.lastRequest;
    let sides: RequestSide[] | undefined;
    if (last.sides !== null && last.epoch === this.resolvedRequests.epoch() && last.is(ev)) sides = last.sides;
    else {
      // Everything the labels are built from, and nothing else: the timings vary per request.
      // The authority goes last, so the other fields cannot run into it.
      const k = ev.direction + '|' + ev.sourceIp + '|' + ev.destIp + '|' + ev.destPort + '|' + ev.status + '|' +
        (ev.grpcStatus ?? '') + (ev.success ? '|s|' : '|f|') + (ev.dstService !== undefined ? 'S|' : '-|') + ev.authority;
      sides = this.resolvedRequests.get(k);
      if (sides === undefined) {
        sides = this.requestSides(ev);
        if (ev.authority.length <= MAX_CACHED_AUTHORITY) this.resolvedRequests.set(k, sides);
      }
      // Only what the cache holds is kept aside: a request it does not cache is resolved each time, as before.
      if (ev.authority.length <= MAX_CACHED_AUTHORITY) last.set(ev, sides, this.resolvedRequests.epoch());
    }
    for (const s of sides) {
      add(s.req, 1);
      add(s.resp, 1);
      if (s.latency !== null) observe(s.latency, ev.latencyMs);
    }
    if (ev.route !== undefined) this.routes.record(ev, ev.route, () => workloadLabels('', this.workloads.byIp(ev.sourceIp), this.labelOpts));
    if (ev.authz !== undefined) this.authz.record(ev as RequestEvent & { authz: NonNullable<RequestEvent['authz']> }, true, () => this.serverLabels(ev.destIp));
  }

  /**
   * Only a request's inbound authorization decision: a tunnelled request the destination's agent
   * decided, whose request metrics the client's agent records (it parses every request of its
   * pods; docs/metrics.md), so counting them here too would count them twice.
   */
  requestAuthz(ev: RequestEvent): void {
    if (ev.authz !== undefined) this.authz.record(ev as RequestEvent & { authz: NonNullable<RequestEvent['authz']> }, true, () => this.serverLabels(ev.destIp));
  }

  /** Only a connection's inbound authorization decision (a connection served in-process: proxy/local-pair.ts). */
  connAuthz(ev: ConnCloseEvent): void {
    if (ev.authz !== undefined) this.authz.record(ev as ConnCloseEvent & { authz: NonNullable<ConnCloseEvent['authz']> }, false, () => this.serverLabels(ev.destIp));
  }

  /** Connections open as this recorder counts them (tests, status). */
  get openConnections(): number {
    return this.conns.size;
  }

  /**
   * A worker's side: every series' gain since the last drain, which is then zeroed (series stay,
   * so the hot path's cached handles stay valid). The overflow counter is not drained: the main
   * thread counts overflow where the deltas land, from their `n`.
   */
  drain(): SeriesDelta[] {
    const out: SeriesDelta[] = [];
    for (const [name, f] of this.byName) {
      for (const s of f.all()) {
        if (s instanceof HistogramSeries) {
          if (s.count === 0) continue;
          out.push({ name, labels: s.labels, counts: Array.from(s.counts), sum: s.sum, count: s.count });
          s.counts.fill(0);
          s.sum = 0;
          s.count = 0;
        } else {
          if (s.value === 0 && s.n === 0) continue;
          out.push({ name, labels: s.labels, value: s.value, n: s.n });
          s.value = 0;
          s.n = 0;
        }
      }
    }
    return out;
  }

  /**
   * The main thread's side: a worker's deltas added where its own events would have landed (the
   * cap and overflow apply here, as for one proxy). Gauge changes are also kept in `ledger`, the
   * worker's running total, so forget() can take them back.
   */
  merge(deltas: readonly SeriesDelta[], ledger?: GaugeLedger): void {
    for (const d of deltas) {
      const f = this.byName.get(d.name);
      if (f === undefined) continue; // a family this release does not have: nothing to add it to
      const s = f.resolve(d.labels);
      if ('counts' in d) {
        if (!(s instanceof HistogramSeries)) continue;
        s.add(d.counts, d.sum, d.count);
        if (s.overflowCount !== null) s.overflowCount.value += d.count;
        continue;
      }
      if (s instanceof HistogramSeries) continue;
      s.value += d.value;
      s.n += d.n;
      if (s.overflowCount !== null) s.overflowCount.value += d.n;
      if (ledger !== undefined && f.type === 'gauge') ledger.set(s, (ledger.get(s) ?? 0) + d.value);
    }
  }

  /** A worker is gone, and its connections with it: its share of the gauges comes off. */
  forget(ledger: GaugeLedger): void {
    for (const [s, v] of ledger) s.value -= v;
    ledger.clear();
  }

  /** Every family, the overflow counter first (for a Registry). */
  families(): Array<SeriesFamily<Series>> {
    return [this.overflowTotal as SeriesFamily<Series>, ...this.byName.values()];
  }

}

/**
 * One request identity (the fields requestSides' labels and request()'s key are built from) and
 * its series, as of a resolvedRequests epoch: compared field by field, no key string to build
 * and hash.
 */
class LastRequest {
  sides: RequestSide[] | null = null;
  epoch = -1;
  private direction = '';
  private sourceIp = '';
  private destIp = '';
  private destPort = 0;
  private status = 0;
  private grpcStatus: number | undefined = undefined;
  private success = false;
  private service = false;
  private authority = '';

  is(ev: RequestEvent): boolean {
    return this.status === ev.status && this.destPort === ev.destPort && this.success === ev.success &&
      this.grpcStatus === ev.grpcStatus && this.service === (ev.dstService !== undefined) &&
      this.direction === ev.direction && this.sourceIp === ev.sourceIp && this.destIp === ev.destIp &&
      this.authority === ev.authority;
  }

  set(ev: RequestEvent, sides: RequestSide[], epoch: number): void {
    this.sides = sides;
    this.epoch = epoch;
    this.direction = ev.direction;
    this.sourceIp = ev.sourceIp;
    this.destIp = ev.destIp;
    this.destPort = ev.destPort;
    this.status = ev.status;
    this.grpcStatus = ev.grpcStatus;
    this.success = ev.success;
    this.service = ev.dstService !== undefined;
    this.authority = ev.authority;
  }
}
