// prom-client's Registry, Counter and Gauge and its process metrics, loaded without its index:
// the index also loads its Pushgateway (node:http), its cluster aggregator and, through the CPU
// metric, @opentelemetry/api, which together cost the agent ~11 MB of RSS for nothing it uses
// (docs/benchmarks.md, "Memory as installed"). Same classes, same metric names.
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';

const require = createRequire(import.meta.url);
export const Registry: typeof Prom.Registry = require('prom-client/lib/registry');
export const Counter: typeof Prom.Counter = require('prom-client/lib/counter');
export const Gauge: typeof Prom.Gauge = require('prom-client/lib/gauge');
export type Registry = Prom.Registry;

/**
 * The Registry, but a metric that writes its own exposition lines (promString(): the request and
 * connection families, telemetry/series.ts) is asked for them instead of being formatted line by
 * line. Prometheus's text format, what the agent serves; in OpenMetrics (never asked for) the
 * Registry formats everything. The Registry's default labels are not added to those lines: the
 * agent sets none.
 */
export class ExpositionRegistry extends Registry {
  // Registry.metrics() formats each metric with this method, which prom-client's typings leave out.
  async getMetricsAsString(metric: object): Promise<string> {
    const own = metric as { promString?: () => Promise<string> };
    if (typeof own.promString === 'function' && this.contentType === Registry.PROMETHEUS_CONTENT_TYPE) return own.promString();
    return (Registry.prototype as unknown as { getMetricsAsString(m: object): Promise<string> }).getMetricsAsString.call(this, metric);
  }
}

/**
 * prom-client's default metrics but two: its CPU counters (they load @opentelemetry/api for
 * exemplars; ours have the same names) and its event-loop lag histogram, whose 10 ms timer woke
 * an idle agent 100 times a second (5.5 CPU-ms per second idle, all of the agent's idle CPU;
 * each proxy's lag is mesh_agent_proxy_worker_lag_seconds).
 */
const DEFAULTS = ['processStartTime', 'osMemoryHeap', 'processOpenFileDescriptors', 'processMaxFileDescriptors',
  'processResources', 'processHandles', 'processRequests', 'heapSizeAndUsed', 'heapSpacesSizeAndUsed', 'version', 'gc'];

/** The process metrics collectDefaultMetrics() registers (process_*, nodejs_*), under the same names. */
export function processMetrics(registry: Prom.Registry): void {
  const registers = [registry];
  const cpu = (name: string, help: string, read: (u: NodeJS.CpuUsage) => number) => new Counter({
    name, help, registers,
    collect() {
      this.reset();
      this.inc(read(process.cpuUsage()) / 1e6);
    },
  });
  cpu('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', (u) => u.user);
  cpu('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', (u) => u.system);
  cpu('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', (u) => u.user + u.system);
  for (const m of DEFAULTS) {
    if (m === 'processResources' && typeof process.getActiveResourcesInfo !== 'function') continue;
    require(`prom-client/lib/metrics/${m}`)(registry, { eventLoopMonitoringPrecision: 10 });
  }
}
