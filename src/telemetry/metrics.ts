// The Prometheus consumer of the proxy's events: Linkerd's metric names and labels
// (docs/metrics.md), a cap on series per metric, and the datapath's counters read at scrape
// time. The recording is MetricsRecorder's (recorder.ts, shared with the proxy workers, whose
// deltas it merges); this adds the Registry the admin server exposes at /metrics.
import { Counter, ExpositionRegistry, Gauge, processMetrics } from './prom.ts';
import type { DatapathCounters, MapInfo } from '../datapath/addon.ts';
import { MetricsRecorder, type RecorderOptions } from './recorder.ts';
import type { BalancerCount } from '../routing/router.ts';

export { DEFAULT_MAX_SERIES, DETECT_BUCKETS, LATENCY_BUCKETS, RESOLVED_FRESH_MS, TCP_DURATION_BUCKETS } from './recorder.ts';

/** One proxy as registerWorkers() reads it (the agent's workers()). */
export interface WorkerMetrics {
  index: number;
  state: string;
  accepted: number;
  cpuSeconds: number;
  restarts: number;
  stuck: number;
  lagMs: number | null;
}

export interface MetricsOptions extends RecorderOptions {
  /** Read at scrape time; null or a throw while the datapath is not loaded (the last values are kept). */
  datapathCounters?: () => DatapathCounters | null;
  /** The datapath's maps with their entries, read at scrape time; null or a throw while it is not loaded (no series then). */
  datapathMaps?: () => MapInfo[] | null;
  /** Node.js process metrics (process_cpu_seconds_total, ...); default true. */
  processMetrics?: boolean;
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

export class MetricsSink extends MetricsRecorder {
  readonly registry = new ExpositionRegistry();
  /** Scrapes begun (exposition()): what perScrape's reads are keyed on. */
  private scrapes = 0;

  constructor(opts: MetricsOptions) {
    super(opts);
    const registers = [this.registry];
    const families = this.families();
    for (const f of families) f.register(this.registry);
    const capped = families.filter((f) => f !== (this.overflowTotal as unknown));
    const cap = this.cap;
    new Gauge({
      name: 'mesh_agent_metrics_series',
      help: 'Label sets per metric (overflow series included); compare with --metrics-max-series',
      labelNames: ['metric'],
      registers,
      collect() {
        for (const f of capped) this.set({ metric: f.name }, f.series);
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
    if (opts.datapathMaps) this.registerDatapathMaps(opts.datapathMaps);
    if (opts.processMetrics ?? true) processMetrics(this.registry);
  }

  /**
   * One read per scrape, shared by the metrics it feeds (their collect() runs in the same
   * scrape): a read of the datapath is system calls.
   */
  private perScrape<T>(read: () => T): () => T {
    let value: T;
    let scrape = -1;
    return () => {
      if (scrape !== this.scrapes) {
        scrape = this.scrapes;
        value = read();
      }
      return value;
    };
  }

  /**
   * How full each hash map is, as Cilium's cilium_bpf_map_pressure: what status's health judges
   * at 0.9, for an alert. Arrays are always full and left out, as there. Nothing while the
   * datapath is not loaded.
   */
  private registerDatapathMaps(read: () => MapInfo[] | null) {
    const snapshot = this.perScrape((): MapInfo[] => {
      try {
        return (read() ?? []).filter((m) => !m.type.includes('array'));
      } catch {
        return [];
      }
    });
    new Gauge({
      name: 'mesh_agent_datapath_map_entries',
      help: 'Entries in each BPF hash map of the datapath (connection records, pods, skip lists)',
      labelNames: ['map_name'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const m of snapshot()) this.set({ map_name: m.name }, m.used);
      },
    });
    new Gauge({
      name: 'mesh_agent_datapath_map_pressure',
      help: 'Entries over capacity of each BPF hash map (status is degraded from 0.9)',
      labelNames: ['map_name'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const m of snapshot()) this.set({ map_name: m.name }, m.maxEntries > 0 ? m.used / m.maxEntries : 0);
      },
    });
  }

  private registerDatapath(read: () => DatapathCounters | null) {
    // While the datapath is not loaded (start, stop) the last good values stay: a dip to
    // zero would read as a counter reset.
    let last: DatapathCounters | null = null;
    const snapshot = this.perScrape((): DatapathCounters | null => {
      try {
        last = read() ?? last;
      } catch {
        // keep the last good values
      }
      return last;
    });
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

  /**
   * Per proxy (worker="0" is the main thread's), read at scrape time: connections accepted, CPU,
   * restarts and replacements of a stuck event loop, the last ping's lag, up or not.
   */
  registerWorkers(read: () => WorkerMetrics[]): void {
    const registers = [this.registry];
    const per = (name: string, help: string, kind: 'counter' | 'gauge', value: (w: WorkerMetrics) => number | null) => {
      const each = (f: (labels: { worker: string }, v: number) => void) => {
        for (const w of read()) {
          const v = value(w);
          if (v !== null) f({ worker: String(w.index) }, v);
        }
      };
      if (kind === 'counter') {
        new Counter({ name, help, labelNames: ['worker'], registers, collect() {
          this.reset();
          each((l, v) => this.inc(l, v));
        } });
      } else {
        new Gauge({ name, help, labelNames: ['worker'], registers, collect() {
          this.reset();
          each((l, v) => this.set(l, v));
        } });
      }
    };
    per('mesh_agent_proxy_worker_accepted_total', 'Connections each proxy accepted (worker 0 is the main thread\'s), over its restarts', 'counter', (w) => w.accepted);
    per('mesh_agent_proxy_worker_cpu_seconds_total', 'CPU time of each proxy\'s thread, over its restarts', 'counter', (w) => w.cpuSeconds);
    per('mesh_agent_proxy_worker_restarts_total', 'Proxy worker threads that died or were replaced, and started again', 'counter', (w) => w.restarts);
    per('mesh_agent_proxy_worker_stuck_total', 'Of the restarts, replacements of a worker whose event loop stopped answering', 'counter', (w) => w.stuck);
    per('mesh_agent_proxy_worker_lag_seconds', 'How late each worker answered its last ping (event-loop lag)', 'gauge', (w) => (w.lagMs === null ? null : w.lagMs / 1000));
    per('mesh_agent_proxy_worker_up', '1 while the proxy listens, 0 while it is restarting', 'gauge', (w) => (w.state === 'running' ? 1 : 0));
  }

  /**
   * Linkerd's outbound_http_balancer_endpoints, read at scrape time: each balancer's endpoints by
   * state (ready; pending: held back by failure accrual). Parent and backend are the Service
   * port whose balancer it is (a route splitting to other Services has one balancer per backend).
   */
  registerBalancers(read: () => BalancerCount[]): void {
    const labelNames = ['parent_group', 'parent_kind', 'parent_namespace', 'parent_name', 'parent_port', 'parent_section_name',
      'backend_group', 'backend_kind', 'backend_namespace', 'backend_name', 'backend_port', 'backend_section_name', 'endpoint_state'];
    new Gauge({
      name: 'outbound_http_balancer_endpoints',
      help: 'Endpoints of each Service port\'s balancer, by state (ready, or pending: held back by failure accrual)',
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const b of read()) {
          const svc = { group: 'core', kind: 'Service', namespace: b.namespace, name: b.name, port: String(b.port), section_name: '' };
          const l: Record<string, string> = {};
          for (const [k, v] of Object.entries(svc)) {
            l[`parent_${k}`] = v;
            l[`backend_${k}`] = v;
          }
          this.set({ ...l, endpoint_state: 'ready' }, b.ready);
          this.set({ ...l, endpoint_state: 'pending' }, b.pending);
        }
      },
    });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  exposition(): Promise<string> {
    this.scrapes++;
    return this.registry.metrics();
  }
}
