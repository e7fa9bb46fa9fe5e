// The one recorder the proxy reports to (DESIGN.md, step 7). It fans every event out to the
// consumers (Prometheus metrics, tap, controller reports); a consumer that throws is logged
// once and never reaches the data path.
import type { ConnBytesEvent, ConnCloseEvent, ConnOpenEvent, RequestEvent, TelemetrySink } from './events.ts';
import { noWorkloads, type WorkloadResolver } from './workload.ts';

export class TelemetryHub implements TelemetrySink {
  private sinks: TelemetrySink[] = [];
  private failed = new WeakSet<TelemetrySink>();
  readonly workloads: WorkloadResolver;
  private onError: (msg: string) => void;

  constructor(opts: { workloads?: WorkloadResolver; onError?: (msg: string) => void } = {}) {
    this.workloads = opts.workloads ?? noWorkloads;
    this.onError = opts.onError ?? (() => {});
  }

  add(sink: TelemetrySink): () => void {
    this.sinks.push(sink);
    return () => {
      this.sinks = this.sinks.filter((s) => s !== sink);
    };
  }

  private each(fn: (s: TelemetrySink) => void) {
    for (const s of this.sinks) {
      try {
        fn(s);
      } catch (e) {
        if (!this.failed.has(s)) {
          this.failed.add(s);
          this.onError(`telemetry consumer failed (further failures not logged): ${(e as Error).stack ?? e}`);
        }
      }
    }
  }

  connOpen(ev: ConnOpenEvent) { this.each((s) => s.connOpen(ev)); }
  connBytes(ev: ConnBytesEvent) { this.each((s) => s.connBytes(ev)); }
  connClose(ev: ConnCloseEvent) { this.each((s) => s.connClose(ev)); }
  request(ev: RequestEvent) { this.each((s) => s.request(ev)); }
}
