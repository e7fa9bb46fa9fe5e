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

  // One loop per kind of event, not a shared helper taking a closure: the request event is per
  // request, and a closure per event is garbage per request (docs/benchmarks.md).
  private failedSink(s: TelemetrySink, e: unknown): void {
    if (!this.failed.has(s)) {
      this.failed.add(s);
      this.onError(`telemetry consumer failed (further failures not logged): ${(e as Error).stack ?? e}`);
    }
  }

  connOpen(ev: ConnOpenEvent) {
    for (const s of this.sinks) {
      try { s.connOpen(ev); } catch (e) { this.failedSink(s, e); }
    }
  }

  connBytes(ev: ConnBytesEvent) {
    for (const s of this.sinks) {
      try { s.connBytes(ev); } catch (e) { this.failedSink(s, e); }
    }
  }

  connClose(ev: ConnCloseEvent) {
    for (const s of this.sinks) {
      try { s.connClose(ev); } catch (e) { this.failedSink(s, e); }
    }
  }

  request(ev: RequestEvent) {
    const sinks = this.sinks;
    for (let i = 0; i < sinks.length; i++) {
      const s = sinks[i]!;
      try { s.request(ev); } catch (e) { this.failedSink(s, e); }
    }
  }
}
