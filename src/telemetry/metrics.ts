// The Prometheus consumer of the proxy's events: Linkerd's metric names and labels
// (docs/metrics.md), a cap on series per metric, and the datapath's counters read at scrape
// time. It owns its Registry; the admin server exposes it at /metrics.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DatapathCounters } from '../datapath/addon.ts';
import type { ConnBytesEvent, ConnCloseEvent, ConnOpenEvent, Endpoints, RequestEvent, TelemetrySink } from './events.ts';
import {
  allLabelNames, latencyLabels, overflowLabels, readWriteBytes, requestLabels, responseLabels,
  seriesKey, tcpCloseLabels, tcpLabels, viewsOf, type LabelOptions, type Labels, type View,
} from './labels.ts';
import type { WorkloadResolver } from './workload.ts';

/** linkerd2-proxy's response_latency_ms buckets, so Linkerd's histogram_quantile queries read the same. */
export const LATENCY_BUCKETS = [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000];
/** linkerd2-proxy's tcp_connection_duration_ms buckets. */
export const TCP_DURATION_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000];
/** Detection is sub-millisecond when the client speaks, up to the detect timeout when nobody does. */
export const DETECT_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
export const DEFAULT_MAX_SERIES = 5000;

export interface MetricsOptions {
  workloads: WorkloadResolver;
  /** pod and dst_pod labels (default true). */
  podLabels?: boolean;
  /** Label sets per metric before new ones fold into the overflow series (default 5000). */
  maxSeries?: number;
  /** Read at scrape time; null or a throw while the datapath is not loaded (the last values are kept). */
  datapathCounters?: () => DatapathCounters | null;
  /** Node.js process metrics (process_cpu_seconds_total, ...); default true. */
  processMetrics?: boolean;
}

interface Inc { inc(v?: number): void }
interface Obs { observe(v: number): void }
interface UpDown { inc(v?: number): void; dec(v?: number): void }

/**
 * A metric's children by label set, at most `cap` of them; past that, new label sets share
 * overflow children (bounded: only outcome labels vary there) and each such observation is
 * counted in mesh_agent_metrics_overflow_total.
 */
class Capped<C> {
  readonly name: string;
  private metric: { labels(l: Labels): C };
  private names: string[];
  private keep: readonly string[];
  private cap: number;
  private onOverflow: () => void;
  private children = new Map<string, C>();
  private overflow = new Map<string, C>();

  constructor(name: string, metric: { labels(l: Labels): C }, names: string[], keep: readonly string[], cap: number, onOverflow: () => void) {
    this.name = name;
    this.metric = metric;
    this.names = names;
    this.keep = keep;
    this.cap = cap;
    this.onOverflow = onOverflow;
  }

  get series(): number {
    return this.children.size + this.overflow.size;
  }

  get(l: Labels): C {
    const k = seriesKey(this.names, l);
    let c = this.children.get(k);
    if (c !== undefined) return c;
    if (this.children.size < this.cap) {
      c = this.metric.labels(l);
      this.children.set(k, c);
      return c;
    }
    this.onOverflow();
    const o = overflowLabels(l, this.keep);
    const ok = seriesKey(this.names, o);
    c = this.overflow.get(ok);
    if (c === undefined) {
      c = this.metric.labels(o);
      this.overflow.set(ok, c);
    }
    return c;
  }
}

interface ConnSide {
  view: View;
  base: Labels;
  open: UpDown;
  read: Inc;
  write: Inc;
}

const DATAPATH_COUNTERS: Array<[keyof DatapathCounters, string, string]> = [
  ['redirected', 'mesh_agent_datapath_redirected_total', 'connect() calls redirected to the proxy'],
  ['skippedPort', 'mesh_agent_datapath_skipped_port_total', 'connect() calls passed because of a skip-outbound port (pod or global)'],
  ['skippedInbound', 'mesh_agent_datapath_skipped_inbound_total', 'connect() calls passed because of the destination pod\'s skip-inbound port'],
  ['unmeshed', 'mesh_agent_datapath_unmeshed_total', 'TCP connect() calls from processes in no meshed pod'],
  ['passedLocal', 'mesh_agent_datapath_passed_local_total', 'connect() calls to loopback or to the proxy itself, passed'],
  ['notTcp', 'mesh_agent_datapath_not_tcp_total', 'non-TCP connect() calls, passed'],
  ['established', 'mesh_agent_datapath_established_total', 'redirected connections established (record copied for the proxy)'],
  ['establishedMiss', 'mesh_agent_datapath_established_miss_total', 'established sockets with no redirect record'],
  ['closed', 'mesh_agent_datapath_closed_total', 'redirect records deleted at socket close'],
  ['getpeername', 'mesh_agent_datapath_getpeername_total', 'getpeername() answers rewritten to the original destination'],
  ['mapFull', 'mesh_agent_datapath_map_full_total', 'BPF map updates that failed (map full): those connections went direct'],
  ['lookups', 'mesh_agent_datapath_lookups_total', 'original-destination lookups by the proxy'],
  ['lookupMisses', 'mesh_agent_datapath_lookup_misses_total', 'lookups with no record (connection refused: no open relay)'],
];

export class MetricsSink implements TelemetrySink {
  readonly registry = new Registry();
  private workloads: WorkloadResolver;
  private labelOpts: LabelOptions;
  private conns = new Map<number, ConnSide[]>();
  private families: Array<Capped<unknown>> = [];

  private requestTotal: Capped<Inc>;
  private responseTotal: Capped<Inc>;
  private responseLatency: Capped<Obs>;
  private tcpOpenTotal: Capped<Inc>;
  private tcpCloseTotal: Capped<Inc>;
  private tcpOpen: Capped<UpDown>;
  private tcpRead: Capped<Inc>;
  private tcpWrite: Capped<Inc>;
  private tcpDuration: Capped<Obs>;
  private detectTotal: Capped<Inc>;
  private detectDuration: Capped<Obs>;

  constructor(opts: MetricsOptions) {
    this.workloads = opts.workloads;
    this.labelOpts = { podLabels: opts.podLabels ?? true };
    const cap = opts.maxSeries ?? DEFAULT_MAX_SERIES;
    if (!Number.isInteger(cap) || cap < 1) throw new Error(`metrics series cap ${cap} is not a positive integer; pass --metrics-max-series N with N >= 1`);
    const registers = [this.registry];
    const overflowTotal = new Counter({
      name: 'mesh_agent_metrics_overflow_total',
      help: 'Observations recorded in an overflow series because their metric reached the series cap (--metrics-max-series)',
      labelNames: ['metric'],
      registers,
    });

    const family = <C>(kind: 'counter' | 'gauge' | 'histogram', name: string, help: string, extra: string[], keep: string[], buckets?: number[]): Capped<C> => {
      const labelNames = allLabelNames(extra);
      const metric = kind === 'counter' ? new Counter({ name, help, labelNames, registers })
        : kind === 'gauge' ? new Gauge({ name, help, labelNames, registers })
          : new Histogram({ name, help, labelNames, buckets: buckets!, registers });
      const f = new Capped<C>(name, metric as unknown as { labels(l: Labels): C }, labelNames, ['direction', ...keep], cap, () => overflowTotal.inc({ metric: name }));
      this.families.push(f as Capped<unknown>);
      return f;
    };

    const http = ['authority'];
    this.requestTotal = family('counter', 'request_total', 'HTTP requests (counted when the exchange ends)', http, []);
    this.responseTotal = family('counter', 'response_total', 'HTTP responses, with their classification', [...http, 'classification', 'status_code', 'grpc_status'], ['classification', 'status_code', 'grpc_status']);
    this.responseLatency = family('histogram', 'response_latency_ms', 'Time from the request to the response headers, ms', [...http, 'status_code'], ['status_code'], LATENCY_BUCKETS);
    const tcp = ['peer'];
    const close = ['peer', 'protocol', 'classification', 'errno'];
    this.tcpOpenTotal = family('counter', 'tcp_open_total', 'TCP connections opened', tcp, ['peer']);
    this.tcpCloseTotal = family('counter', 'tcp_close_total', 'TCP connections closed', close, close);
    this.tcpOpen = family('gauge', 'tcp_open_connections', 'TCP connections open now', tcp, ['peer']);
    this.tcpRead = family('counter', 'tcp_read_bytes_total', 'Bytes read from the peer (updated while the connection lives)', tcp, ['peer']);
    this.tcpWrite = family('counter', 'tcp_write_bytes_total', 'Bytes written to the peer (updated while the connection lives)', tcp, ['peer']);
    this.tcpDuration = family('histogram', 'tcp_connection_duration_ms', 'Lifetime of closed TCP connections, ms', close, close, TCP_DURATION_BUCKETS);

    const detect = (kind: 'counter' | 'histogram', name: string, help: string, buckets?: number[]) => {
      const labelNames = ['protocol', 'detected_by', 'overflow'];
      const metric = kind === 'counter' ? new Counter({ name, help, labelNames, registers }) : new Histogram({ name, help, labelNames, buckets: buckets!, registers });
      const f = new Capped(name, metric as unknown as { labels(l: Labels): any }, labelNames, [], cap, () => overflowTotal.inc({ metric: name }));
      this.families.push(f);
      return f;
    };
    this.detectTotal = detect('counter', 'mesh_agent_protocol_detect_total', 'Proxied connections by detected protocol and how detection ended');
    this.detectDuration = detect('histogram', 'mesh_agent_protocol_detect_duration_ms', 'Time from accept to the protocol decision, ms', DETECT_BUCKETS);

    const families = this.families;
    new Gauge({
      name: 'mesh_agent_metrics_series',
      help: 'Label sets per metric (overflow series included); compare with --metrics-max-series',
      labelNames: ['metric'],
      registers,
      collect() {
        for (const f of families) this.set({ metric: f.name }, f.series);
      },
    });
    new Gauge({
      name: 'mesh_agent_metrics_max_series',
      help: 'The cap on label sets per metric (--metrics-max-series)',
      registers,
      collect() {
        this.set(cap);
      },
    });

    if (opts.datapathCounters) this.registerDatapath(opts.datapathCounters);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  private registerDatapath(read: () => DatapathCounters | null) {
    // One read per scrape, shared by the counters (each collect() runs in the same pass).
    // While the datapath is not loaded (start, stop) the last good values stay: a dip to
    // zero would read as a counter reset.
    let last: DatapathCounters | null = null;
    let at = 0;
    const snapshot = (): DatapathCounters | null => {
      const now = Date.now();
      if (now - at < 100) return last;
      at = now;
      try {
        last = read() ?? last;
      } catch {
        // keep the last good values
      }
      return last;
    };
    for (const [field, name, help] of DATAPATH_COUNTERS) {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const c = snapshot();
          this.reset();
          if (c) this.inc(Number(c[field]));
        },
      });
    }
  }

  private views(ep: Endpoints): View[] {
    return viewsOf(ep, this.workloads.byIp(ep.sourceIp), this.workloads.byIp(ep.destIp));
  }

  private openSides(ep: Endpoints): ConnSide[] {
    return this.views(ep).map((view) => {
      const base = tcpLabels(view, this.labelOpts);
      return { view, base, open: this.tcpOpen.get(base), read: this.tcpRead.get(base), write: this.tcpWrite.get(base) };
    });
  }

  connOpen(ev: ConnOpenEvent): void {
    // Labels are fixed at open: the gauge's dec at close must hit the series its inc hit,
    // even if the pods changed meanwhile.
    const sides = this.openSides(ev);
    this.conns.set(ev.connId, sides);
    for (const s of sides) {
      this.tcpOpenTotal.get(s.base).inc();
      s.open.inc();
    }
  }

  connBytes(ev: ConnBytesEvent): void {
    const sides = this.conns.get(ev.connId);
    if (!sides) return;
    for (const s of sides) {
      const { read, write } = readWriteBytes(s.view, ev);
      if (read > 0) s.read.inc(read);
      if (write > 0) s.write.inc(write);
    }
  }

  connClose(ev: ConnCloseEvent): void {
    let sides = this.conns.get(ev.connId);
    this.conns.delete(ev.connId);
    if (!sides) {
      // Closed without an open report: count what we can, leave the gauge alone.
      sides = this.openSides(ev);
      for (const s of sides) {
        const { read, write } = readWriteBytes(s.view, ev);
        if (read > 0) s.read.inc(read);
        if (write > 0) s.write.inc(write);
      }
    } else {
      for (const s of sides) s.open.dec();
    }
    for (const s of sides) {
      const l = tcpCloseLabels(s.base, ev);
      this.tcpCloseTotal.get(l).inc();
      this.tcpDuration.get(l).observe(ev.durationMs);
    }
    const d = { protocol: ev.protocol, detected_by: ev.detectedBy };
    this.detectTotal.get(d).inc();
    this.detectDuration.get(d).observe(ev.detectMs);
  }

  request(ev: RequestEvent): void {
    for (const v of this.views(ev)) {
      this.requestTotal.get(requestLabels(v, ev, this.labelOpts)).inc();
      this.responseTotal.get(responseLabels(v, ev, this.labelOpts)).inc();
      if (ev.status > 0) this.responseLatency.get(latencyLabels(v, ev, this.labelOpts)).observe(ev.latencyMs);
    }
  }

  /** Connections open as this sink counts them (tests, status). */
  get openConnections(): number {
    return this.conns.size;
  }

  contentType(): string {
    return this.registry.contentType;
  }

  exposition(): Promise<string> {
    return this.registry.metrics();
  }
}
