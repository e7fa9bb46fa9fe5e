// Linkerd 2.16's route and backend metrics from routed request events, read back through the
// sink's exposition: names, labels (parent_*, route_*, backend_*, hostname, status, error and
// the client workload's), per-attempt backend counts and the retry counters.
import test from 'ava';
import { MetricsSink } from '../src/telemetry/metrics.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { RequestEvent, RouteReport } from '../src/telemetry/events.ts';
import type { Workload } from '../src/telemetry/workload.ts';
import { parseExposition, select, sum } from './helpers/prom-text.ts';

const pods: Record<string, Workload> = { '10.244.1.2': { namespace: 'web', pod: 'web-7d9f8-abcde', kind: 'deployment', name: 'web' } };
const api = { namespace: 'shop', name: 'api', port: 80 };
const v2 = { namespace: 'shop', name: 'api-v2', port: 80 };
const route = { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'shop', name: 'canary' };

const ev = (r: Partial<RouteReport>, over: Partial<RequestEvent> = {}): RequestEvent => ({
  direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 40000, sourcePodKey: 1n, destIp: '10.244.2.9', destPort: 8080, dstService: { namespace: 'shop', name: 'api' },
  connId: 1, protocol: 'http1', authority: 'api.shop.svc.cluster.local:80', method: 'GET', path: '/', status: 200, success: true, latencyMs: 20, durationMs: 30,
  requestBytes: 0, responseBytes: 2, startedAt: 0,
  route: { parent: api, route, backend: v2, retries: 0, backendMs: 20, backendResponded: true, ...r },
  ...over,
});

function setup() {
  const hub = new TelemetryHub({ workloads: { byIp: (ip) => pods[ip] ?? null } });
  const sink = new MetricsSink({ workloads: hub.workloads, processMetrics: false });
  hub.add(sink);
  return { hub, read: async () => parseExposition(await sink.exposition()) };
}

test('route metrics: request durations and statuses per route, with Linkerd\'s labels and the client\'s', async (t) => {
  const { hub, read } = setup();
  hub.request(ev({}));
  hub.request(ev({}, { status: 503, success: false, durationMs: 700 }));
  const e = await read();
  const [s] = select(e, 'outbound_http_route_request_statuses_total', { http_status: '200' });
  t.deepEqual(s!.labels, {
    namespace: 'web', deployment: 'web', pod: 'web-7d9f8-abcde',
    parent_group: 'core', parent_kind: 'Service', parent_namespace: 'shop', parent_name: 'api', parent_port: '80', parent_section_name: '',
    route_group: 'gateway.networking.k8s.io', route_kind: 'HTTPRoute', route_namespace: 'shop', route_name: 'canary',
    hostname: 'api.shop.svc.cluster.local', http_status: '200', error: '',
  });
  t.is(sum(e, 'outbound_http_route_request_statuses_total', { http_status: '503' }), 1);
  t.is(sum(e, 'outbound_http_route_request_duration_seconds_count', {}), 2);
  t.is(sum(e, 'outbound_http_route_request_duration_seconds_bucket', { le: '0.05' }), 1);
  t.is(sum(e, 'outbound_http_route_request_duration_seconds_bucket', { le: '1' }), 2);
  t.is(e.types.get('outbound_http_route_request_duration_seconds'), 'histogram');
  const [b] = select(e, 'outbound_http_route_backend_requests_total', {});
  t.like(b!.labels, { backend_group: 'core', backend_kind: 'Service', backend_namespace: 'shop', backend_name: 'api-v2', backend_port: '80', backend_section_name: '', route_name: 'canary', parent_name: 'api' });
  t.is(b!.value, 2);
});

test('route metrics: every attempt counts on its backend; retries, successes, limit exceeded and overflow are counted per route', async (t) => {
  const { hub, read } = setup();
  const failed = { backend: api, status: 503, durationMs: 5 };
  hub.request(ev({ retries: 1, retryOutcome: 'success', earlier: [failed] }));
  hub.request(ev({ retries: 2, retryOutcome: 'limit_exceeded', earlier: [failed, { backend: api, status: 0, error: 'IO', durationMs: 1 }] }, { status: 503, success: false }));
  hub.request(ev({ retryOutcome: 'overflow' }, { status: 503, success: false }));
  hub.request(ev({ backendResponded: false, error: 'REQUEST_TIMEOUT' }, { status: 504, success: false }));
  const e = await read();
  t.is(sum(e, 'outbound_http_route_retry_requests_total', {}), 3);
  t.is(sum(e, 'outbound_http_route_retry_successes_total', {}), 1);
  t.is(sum(e, 'outbound_http_route_retry_limit_exceeded_total', {}), 1);
  t.is(sum(e, 'outbound_http_route_retry_overflow_total', {}), 1);
  t.is(sum(e, 'outbound_http_route_backend_requests_total', { backend_name: 'api' }), 3, 'the failed attempts, on their backend');
  t.is(sum(e, 'outbound_http_route_backend_requests_total', { backend_name: 'api-v2' }), 4);
  t.is(sum(e, 'outbound_http_route_backend_response_statuses_total', { backend_name: 'api', http_status: '503' }), 2);
  t.is(sum(e, 'outbound_http_route_backend_response_statuses_total', { backend_name: 'api', http_status: '', error: 'IO' }), 1);
  t.is(sum(e, 'outbound_http_route_request_statuses_total', { http_status: '', error: 'REQUEST_TIMEOUT' }), 1, 'a timeout has no status, an error');
});

test('route metrics: GRPCRoutes count under outbound_grpc_route_* with grpc_status names', async (t) => {
  const { hub, read } = setup();
  hub.request(ev({ route: { ...route, kind: 'GRPCRoute', name: 'rpc' } }, { protocol: 'http2', grpcStatus: 14, success: false }));
  hub.request(ev({ route: { group: '', kind: 'default', namespace: '', name: 'grpc' } }, { protocol: 'http2', grpcStatus: 0 }));
  const e = await read();
  t.is(sum(e, 'outbound_grpc_route_request_statuses_total', { grpc_status: 'UNAVAILABLE', route_name: 'rpc' }), 1);
  t.is(sum(e, 'outbound_grpc_route_request_statuses_total', { grpc_status: 'OK', route_kind: 'default', route_name: 'grpc', route_group: '', route_namespace: '' }), 1);
  t.is(sum(e, 'outbound_http_route_request_statuses_total', {}), 0);
});

test('route metrics: a RequestRedirect counts under its route with its status and no error; no backend request', async (t) => {
  const { hub, read } = setup();
  hub.request(ev({ backend: api, backendResponded: false, redirected: true, error: 'UNKNOWN' }, { status: 301, responseBytes: 0 }));
  const e = await read();
  t.is(sum(e, 'outbound_http_route_request_statuses_total', { http_status: '301', error: '', route_name: 'canary' }), 1);
  t.is(sum(e, 'outbound_http_route_request_duration_seconds_count', {}), 1);
  t.is(sum(e, 'outbound_http_route_backend_requests_total', {}), 0, 'the proxy answered: no backend was asked');
});
