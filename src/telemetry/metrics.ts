// The Prometheus consumer of the proxy's events: Linkerd's metric names and labels
// (docs/metrics.md), a cap on series per metric, and the datapath's counters read at scrape
// time. The recording is MetricsRecorder's (recorder.ts, shared with the proxy workers, whose
// deltas it merges); this adds the Registry the admin server exposes at /metrics.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { DatapathCounters } from '../datapath/addon.ts';
import { MetricsRecorder, type RecorderOptions } from './recorder.ts';

export { DEFAULT_MAX_SERIES, DETECT_BUCKETS, LATENCY_BUCKETS, RESOLVED_FRESH_MS, TCP_DURATION_BUCKETS } from './recorder.ts';

export interface MetricsOptions extends RecorderOptions {
  /** Read at scrape time; null or a throw while the datapath is not loaded (the last values are kept). */
  datapathCounters?: () => DatapathCounters | null;
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
  readonly registry = new Registry();

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

  contentType(): string {
    return this.registry.contentType;
  }

  exposition(): Promise<string> {
    return this.registry.metrics();
  }
}
