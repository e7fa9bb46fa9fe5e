// Linkerd 2.16's route and backend metrics for routed requests (a Service with routes, retries
// or timeouts), with linkerd2-proxy's names, labels and buckets
// (linkerd/app/outbound/src/http/logical/policy/route/metrics.rs and backend/metrics.rs,
// linkerd/http/retry): per route, request durations and statuses and the retry counters; per
// route backend, every attempt's count, response duration and status. Labels: parent_*,
// route_*, backend_* (group, kind, namespace, name, and for Services port and section_name),
// hostname, http_status or grpc_status, error; plus the client workload's own labels
// (namespace, <kind>, pod), which Linkerd's Prometheus scrape adds from the client's pod.
import type { RequestEvent, RouteReport, ServicePortRef } from './events.ts';
import { BoundedCache } from './bounded-cache.ts';
import { WORKLOAD_KINDS, type Labels } from './labels.ts';
import { add, observe, type CounterSeries, type HistogramSeries, type SeriesFamily } from './series.ts';

/** linkerd2-proxy's buckets: coarse for whole requests, finer for backend responses (seconds). */
export const ROUTE_REQUEST_BUCKETS = [0.05, 0.5, 1, 10];
export const ROUTE_BACKEND_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 10];

/** tonic's Code names, as the grpc_status label spells them. */
export const GRPC_STATUS_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

const SCOPED = (scope: string, port: boolean) => [`${scope}_group`, `${scope}_kind`, `${scope}_namespace`, `${scope}_name`, ...(port ? [`${scope}_port`, `${scope}_section_name`] : [])];
const CLIENT = ['namespace', ...WORKLOAD_KINDS, 'pod'];
const ROUTE = [...CLIENT, ...SCOPED('parent', true), ...SCOPED('route', false), 'hostname'];
const BACKEND = [...CLIENT, ...SCOPED('parent', true), ...SCOPED('route', false), ...SCOPED('backend', true)];

type Make = <S extends CounterSeries | HistogramSeries>(type: 'counter' | 'histogram', name: string, help: string, labelNames: string[], keep: string[], buckets?: number[]) => SeriesFamily<S>;

interface Families {
  duration: SeriesFamily<HistogramSeries>;
  statuses: SeriesFamily<CounterSeries>;
  backendRequests: SeriesFamily<CounterSeries>;
  backendDuration: SeriesFamily<HistogramSeries>;
  backendStatuses: SeriesFamily<CounterSeries>;
  retryRequests: SeriesFamily<CounterSeries>;
  retrySuccesses: SeriesFamily<CounterSeries>;
  retryLimitExceeded: SeriesFamily<CounterSeries>;
  retryOverflow: SeriesFamily<CounterSeries>;
}

function families(make: Make, proto: 'http' | 'grpc'): Families {
  const p = `outbound_${proto}_route_`;
  const status = proto === 'http' ? 'http_status' : 'grpc_status';
  const outcome = [status, 'error'];
  return {
    duration: make('histogram', `${p}request_duration_seconds`, 'The time between request initialization and response completion', [...ROUTE, 'overflow'], [], ROUTE_REQUEST_BUCKETS),
    statuses: make('counter', `${p}request_statuses_total`, 'Completed request-response streams', [...ROUTE, ...outcome, 'overflow'], outcome),
    backendRequests: make('counter', `${p}backend_requests_total`, 'The total number of requests dispatched to a backend', [...BACKEND, 'overflow'], []),
    backendDuration: make('histogram', `${p}backend_response_duration_seconds`, 'The time between request completion and response completion', [...BACKEND, 'overflow'], [], ROUTE_BACKEND_BUCKETS),
    backendStatuses: make('counter', `${p}backend_response_statuses_total`, 'Completed responses', [...BACKEND, ...outcome, 'overflow'], outcome),
    retryRequests: make('counter', `${p}retry_requests_total`, 'Retry requests emitted', [...ROUTE, 'overflow'], []),
    retrySuccesses: make('counter', `${p}retry_successes_total`, 'Successful responses to retry requests', [...ROUTE, 'overflow'], []),
    retryLimitExceeded: make('counter', `${p}retry_limit_exceeded_total`, 'Retryable requests not sent due to retry limits', [...ROUTE, 'overflow'], []),
    retryOverflow: make('counter', `${p}retry_overflow_total`, 'Retryable requests not sent due to circuit breakers (the retry budget)', [...ROUTE, 'overflow'], []),
  };
}

/** One route's series for one client and one outcome of the whole request. */
interface RouteSeries {
  /** Client, parent and route labels (the backends' series add theirs). */
  base: Labels;
  /** base and hostname (the route's series). */
  host: Labels;
  duration: HistogramSeries;
  retryRequests: CounterSeries;
  retrySuccesses: CounterSeries;
  retryLimitExceeded: CounterSeries;
  retryOverflow: CounterSeries;
  statuses: BoundedCache<CounterSeries>;
  backends: BoundedCache<BackendSeries>;
}

interface BackendSeries {
  base: Labels;
  requests: CounterSeries;
  duration: HistogramSeries;
  statuses: BoundedCache<CounterSeries>;
}

const portRef = (scope: string, r: ServicePortRef): Labels => ({
  [`${scope}_group`]: 'core', [`${scope}_kind`]: 'Service', [`${scope}_namespace`]: r.namespace, [`${scope}_name`]: r.name, [`${scope}_port`]: String(r.port), [`${scope}_section_name`]: '',
});

export class RouteMetrics {
  private readonly http: Families;
  private readonly grpc: Families;
  private readonly resolved: BoundedCache<RouteSeries>;

  constructor(make: Make, generation: () => number) {
    this.http = families(make, 'http');
    this.grpc = families(make, 'grpc');
    this.resolved = new BoundedCache(4096, generation);
  }

  /** Counts one routed request; `client` is the client workload's labels (namespace, <kind>, pod). */
  record(ev: RequestEvent, r: RouteReport, client: () => Labels): void {
    const grpc = r.route.kind === 'GRPCRoute' || (r.route.kind === 'default' && r.route.name === 'grpc');
    const f = grpc ? this.grpc : this.http;
    const p = r.parent;
    const k = (grpc ? 'g|' : 'h|') + ev.sourceIp + '|' + p.namespace + '/' + p.name + ':' + p.port + '|' + r.route.kind + '/' + r.route.namespace + '/' + r.route.name;
    let s = this.resolved.get(k);
    if (s === undefined) {
      const base: Labels = {
        ...client(), ...portRef('parent', p),
        route_group: r.route.group, route_kind: r.route.kind, route_namespace: r.route.namespace, route_name: r.route.name,
      };
      const withHost = { ...base, hostname: `${p.name}.${p.namespace}.svc.cluster.local` };
      s = {
        base,
        host: withHost,
        duration: f.duration.resolve(withHost),
        retryRequests: f.retryRequests.resolve(withHost),
        retrySuccesses: f.retrySuccesses.resolve(withHost),
        retryLimitExceeded: f.retryLimitExceeded.resolve(withHost),
        retryOverflow: f.retryOverflow.resolve(withHost),
        statuses: new BoundedCache(64),
        backends: new BoundedCache(64),
      };
      this.resolved.set(k, s);
    }
    observe(s.duration, ev.durationMs / 1000);
    // A redirect is the route's answer, not a failure: its status, no error, and no backend series (none was asked).
    // Nor has a rule whose backendRefs all weigh 0 (its 500): no backend was picked, the parent's label would be a lie.
    const answered = r.backendResponded || r.redirected === true;
    const status = answered ? statusLabel(grpc, ev.status, ev.grpcStatus) : '';
    const error = answered ? '' : r.error ?? 'UNKNOWN';
    const sk = status + '|' + error;
    let st = s.statuses.get(sk);
    if (st === undefined) {
      st = f.statuses.resolve({ ...s.host, [grpc ? 'grpc_status' : 'http_status']: status, error });
      s.statuses.set(sk, st);
    }
    add(st, 1);
    if (r.retries > 0) add(s.retryRequests, r.retries);
    if (r.retryOutcome === 'success') add(s.retrySuccesses, 1);
    else if (r.retryOutcome === 'limit_exceeded') add(s.retryLimitExceeded, 1);
    else if (r.retryOutcome === 'overflow') add(s.retryOverflow, 1);
    if (r.earlier !== undefined) {
      for (const a of r.earlier) {
        this.backend(f, s, a.backend, grpc, a.status > 0 ? statusLabel(grpc, a.status, a.grpcStatus) : '', a.status > 0 ? '' : a.error ?? 'UNKNOWN', a.durationMs);
      }
    }
    if (r.redirected !== true && r.backendless !== true) this.backend(f, s, r.backend, grpc, status, error, r.backendMs);
  }

  private backend(f: Families, s: RouteSeries, b: ServicePortRef, grpc: boolean, status: string, error: string, ms: number): void {
    const bk = b.namespace + '/' + b.name + ':' + b.port;
    let bs = s.backends.get(bk);
    if (bs === undefined) {
      const base = { ...s.base, ...portRef('backend', b) };
      bs = { base, requests: f.backendRequests.resolve(base), duration: f.backendDuration.resolve(base), statuses: new BoundedCache(64) };
      s.backends.set(bk, bs);
    }
    add(bs.requests, 1);
    observe(bs.duration, ms / 1000);
    const sk = status + '|' + error;
    let st = bs.statuses.get(sk);
    if (st === undefined) {
      st = f.backendStatuses.resolve({ ...bs.base, [grpc ? 'grpc_status' : 'http_status']: status, error });
      bs.statuses.set(sk, st);
    }
    add(st, 1);
  }
}

function statusLabel(grpc: boolean, status: number, grpcStatus: number | undefined): string {
  if (!grpc) return status > 0 ? String(status) : '';
  return grpcStatus === undefined ? 'UNKNOWN' : GRPC_STATUS_NAMES[grpcStatus] ?? 'UNKNOWN';
}
