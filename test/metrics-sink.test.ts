// The Prometheus sink over synthetic events, read back through its own exposition.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { Counter, Gauge, Histogram } from 'prom-client';
import { MetricsSink, LATENCY_BUCKETS, RESOLVED_FRESH_MS } from '../src/telemetry/metrics.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { ConnCloseEvent, Endpoints, RequestEvent } from '../src/telemetry/events.ts';
import type { Workload } from '../src/telemetry/workload.ts';
import type { DatapathCounters, MapInfo } from '../src/datapath/addon.ts';
import { parseExposition, select, sum } from './helpers/prom-text.ts';

const pods: Record<string, Workload> = {
  '10.244.1.2': { namespace: 'shop', pod: 'web-7d9f8-abcde', kind: 'deployment', name: 'web' },
  '10.244.1.3': { namespace: 'shop', pod: 'api-5c4b-xyz12', kind: 'deployment', name: 'api' },
};
const workloads = { byIp: (ip: string) => pods[ip] ?? null };
const ep: Endpoints = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 40000, sourcePodKey: 1n, destIp: '10.244.1.3', destPort: 8080 };

const req = (over: Partial<RequestEvent> = {}): RequestEvent => ({
  ...ep, connId: 1, protocol: 'http1', authority: 'api.shop.svc:8080', method: 'GET', path: '/', status: 200,
  success: true, latencyMs: 12, durationMs: 13, requestBytes: 10, responseBytes: 20, startedAt: 0, ...over,
});

function setup(opts: Partial<ConstructorParameters<typeof MetricsSink>[0]> = {}) {
  const hub = new TelemetryHub({ workloads });
  const sink = new MetricsSink({ workloads: hub.workloads, processMetrics: false, ...opts });
  hub.add(sink);
  return { hub, sink, read: async () => parseExposition(await sink.exposition()) };
}

test('requests: totals, Linkerd classification and the latency histogram, for both sides', async (t) => {
  const { hub, read } = setup();
  for (const [status, latencyMs] of [[200, 3], [200, 15], [200, 15], [500, 250]] as const) hub.request(req({ status, latencyMs, success: status < 500 }));
  const e = await read();
  for (const direction of ['outbound', 'inbound']) {
    t.is(sum(e, 'request_total', { direction }), 4);
    t.is(sum(e, 'response_total', { direction, classification: 'success' }), 3);
    t.is(sum(e, 'response_total', { direction, classification: 'failure', status_code: '500' }), 1);
    t.is(sum(e, 'response_latency_ms_count', { direction }), 4);
    t.is(sum(e, 'response_latency_ms_sum', { direction }), 283);
    t.is(sum(e, 'response_latency_ms_bucket', { direction, status_code: '200', le: '3' }), 1);
    t.is(sum(e, 'response_latency_ms_bucket', { direction, status_code: '200', le: '20' }), 3);
    t.is(sum(e, 'response_latency_ms_bucket', { direction, le: '200' }), 3);
    t.is(sum(e, 'response_latency_ms_bucket', { direction, le: '300' }), 4);
  }
  const [out] = select(e, 'request_total', { direction: 'outbound' });
  t.deepEqual(out!.labels, {
    direction: 'outbound', target_addr: '10.244.1.3:8080', namespace: 'shop', deployment: 'web', pod: 'web-7d9f8-abcde',
    dst_namespace: 'shop', dst_deployment: 'api', dst_pod: 'api-5c4b-xyz12', authority: 'api.shop.svc:8080',
  });
  const [inb] = select(e, 'request_total', { direction: 'inbound' });
  t.like(inb!.labels, { namespace: 'shop', deployment: 'api', pod: 'api-5c4b-xyz12' });
  t.false('dst_deployment' in inb!.labels);
  const les = select(e, 'response_latency_ms_bucket', { direction: 'outbound', status_code: '500' }).map((s) => s.labels.le);
  t.deepEqual(les, [...LATENCY_BUCKETS.map(String), '+Inf']);
  t.is(e.types.get('response_latency_ms'), 'histogram');
  t.is(e.types.get('request_total'), 'counter');
});

test('gRPC: classification by grpc-status, with the grpc_status label', async (t) => {
  const { hub, read } = setup();
  hub.request(req({ protocol: 'http2', status: 200, grpcStatus: 0, success: true }));
  hub.request(req({ protocol: 'http2', status: 200, grpcStatus: 14, success: false }));
  const e = await read();
  t.is(sum(e, 'response_total', { direction: 'outbound', grpc_status: '14', classification: 'failure', status_code: '200' }), 1);
  t.is(sum(e, 'response_total', { direction: 'outbound', grpc_status: '0', classification: 'success' }), 1);
});

test('a request with no response counts as a failure and has no latency sample', async (t) => {
  const { hub, read } = setup();
  hub.request(req({ status: 0, success: false, error: 'upstream connect: ECONNREFUSED' }));
  const e = await read();
  t.is(sum(e, 'response_total', { direction: 'outbound', classification: 'failure', status_code: '' }), 1);
  t.is(sum(e, 'response_latency_ms_count'), 0);
});

test('tcp: open gauge, bytes while the connection lives, close with errno, detection', async (t) => {
  const { hub, sink, read } = setup();
  hub.connOpen({ ...ep, connId: 7, openedAt: Date.now() });
  hub.connBytes({ ...ep, connId: 7, bytesIn: 100, bytesOut: 5000 });
  let e = await read();
  t.is(sum(e, 'tcp_open_connections', { direction: 'outbound', peer: 'dst' }), 1);
  t.is(sum(e, 'tcp_open_connections', { direction: 'inbound', peer: 'src', deployment: 'api' }), 1);
  t.is(sum(e, 'tcp_open_total'), 2);
  t.is(sum(e, 'tcp_read_bytes_total', { direction: 'outbound' }), 5000, 'read before close');
  t.is(sum(e, 'tcp_write_bytes_total', { direction: 'outbound' }), 100);
  t.is(sum(e, 'tcp_read_bytes_total', { direction: 'inbound' }), 100);
  t.is(sum(e, 'tcp_write_bytes_total', { direction: 'inbound' }), 5000);
  t.is(sum(e, 'tcp_close_total'), 0);

  hub.connBytes({ ...ep, connId: 7, bytesIn: 1, bytesOut: 2 });
  const close: ConnCloseEvent = { ...ep, connId: 7, protocol: 'opaque', detectedBy: 'server-first', detectMs: 0.3, bytesIn: 101, bytesOut: 5002, durationMs: 1500, error: 'client: ECONNRESET' };
  hub.connClose(close);
  e = await read();
  t.is(sum(e, 'tcp_open_connections'), 0);
  t.is(sink.openConnections, 0);
  t.is(sum(e, 'tcp_read_bytes_total', { direction: 'outbound' }), 5002, 'close does not add its totals again');
  t.is(sum(e, 'tcp_close_total', { direction: 'outbound', classification: 'failure', errno: 'ECONNRESET', protocol: 'opaque' }), 1);
  t.is(sum(e, 'tcp_connection_duration_ms_bucket', { direction: 'inbound', le: '1000' }), 0);
  t.is(sum(e, 'tcp_connection_duration_ms_bucket', { direction: 'inbound', le: '10000' }), 1);
  t.is(sum(e, 'mesh_agent_protocol_detect_total', { protocol: 'opaque', detected_by: 'server-first' }), 1);
  t.is(sum(e, 'mesh_agent_protocol_detect_duration_ms_bucket', { detected_by: 'server-first', le: '0.5' }), 1);
  t.is(sum(e, 'mesh_agent_protocol_detect_duration_ms_bucket', { detected_by: 'server-first', le: '0.25' }), 0);
});

test('the gauge goes down on the series it went up on, even if the pods changed meanwhile', async (t) => {
  const mutable: Record<string, Workload> = { ...pods };
  const sink = new MetricsSink({ workloads: { byIp: (ip) => mutable[ip] ?? null }, processMetrics: false });
  sink.connOpen({ ...ep, connId: 1, openedAt: 0 });
  delete mutable['10.244.1.3'];
  sink.connClose({ ...ep, connId: 1, protocol: 'http1', detectedBy: 'http1', detectMs: 0, bytesIn: 0, bytesOut: 0, durationMs: 5 });
  const e = parseExposition(await sink.exposition());
  t.is(sum(e, 'tcp_open_connections', { direction: 'inbound' }), 0);
  t.is(sum(e, 'tcp_close_total', { direction: 'inbound', deployment: 'api' }), 1);
});

test('pod labels off: no pod or dst_pod label anywhere, workloads still there', async (t) => {
  const { hub, read } = setup({ podLabels: false });
  hub.request(req());
  hub.connOpen({ ...ep, connId: 1, openedAt: 0 });
  const e = await read();
  t.true(e.samples.length > 0);
  t.false(e.samples.some((s) => 'pod' in s.labels || 'dst_pod' in s.labels));
  t.is(sum(e, 'request_total', { direction: 'outbound', deployment: 'web', dst_deployment: 'api' }), 1);
});

test('a flood of authorities stops at the series cap; overflow keeps totals and success rate right', async (t) => {
  const { hub, read } = setup({ maxSeries: 5 });
  for (let i = 0; i < 1000; i++) hub.request(req({ authority: `h${i}.example:80`, status: i % 4 === 0 ? 500 : 200, success: i % 4 !== 0 }));
  const e = await read();
  const series = (name: string) => select(e, name).length;
  t.true(series('request_total') <= 5 + 2, `request_total has ${series('request_total')} series`);
  t.true(series('response_total') <= 5 + 4);
  t.is(sum(e, 'request_total'), 2000, 'every request counted once per side');
  t.is(sum(e, 'response_total', { classification: 'failure' }), 500);
  t.is(sum(e, 'response_total', { direction: 'outbound', overflow: 'true', classification: 'failure' }) > 0, true);
  t.is(sum(e, 'mesh_agent_metrics_overflow_total', { metric: 'request_total' }), 2000 - 5);
  t.is(sum(e, 'mesh_agent_metrics_series', { metric: 'request_total' }), series('request_total'));
  t.is(sum(e, 'mesh_agent_metrics_max_series'), 5);
  const overflowed = select(e, 'request_total', { overflow: 'true' });
  t.true(overflowed.every((s) => !('authority' in s.labels) && !('target_addr' in s.labels) && !('deployment' in s.labels)));
});

test('a bad series cap is refused with the flag to fix', (t) => {
  t.throws(() => new MetricsSink({ workloads, maxSeries: 0, processMetrics: false }), { message: /--metrics-max-series/ });
});

test('datapath counters are read at scrape time; the last values stay while the datapath is not loaded', async (t) => {
  let c: DatapathCounters | null = null;
  let reads = 0;
  const sink = new MetricsSink({ workloads, processMetrics: false, datapathCounters: () => { reads++; if (!c) throw new Error('not loaded'); return c; } });
  const scrape = async () => parseExposition(await sink.exposition());
  let e = await scrape();
  t.is(sum(e, 'mesh_agent_datapath_redirected_total'), 0, 'nothing counted before the datapath loads');
  const zero = { redirected: 0n, skippedPort: 0n, skippedInbound: 0n, unmeshed: 0n, passedLocal: 0n, notTcp: 0n, established: 0n, establishedMiss: 0n, closed: 0n, getpeername: 0n, mapFull: 0n, lookups: 0n, lookupMisses: 0n };
  c = { ...zero, redirected: 42n, lookupMisses: 3n };
  e = await scrape();
  t.is(sum(e, 'mesh_agent_datapath_redirected_total'), 42);
  t.is(sum(e, 'mesh_agent_datapath_lookup_misses_total'), 3);
  c = { ...c, redirected: 50n };
  e = await scrape();
  t.is(sum(e, 'mesh_agent_datapath_redirected_total'), 50);
  c = null; // detached while stopping
  e = await scrape();
  t.is(sum(e, 'mesh_agent_datapath_redirected_total'), 50, 'no dip to zero (it would read as a counter reset)');
  t.is(e.types.get('mesh_agent_datapath_redirected_total'), 'counter');
  t.is(reads, 4, 'one read of the datapath per scrape, shared by its 13 counters');
});

test('each hash map\'s entries and pressure are read at scrape time; arrays are left out; nothing while the datapath is not loaded', async (t) => {
  let maps: MapInfo[] | null = null;
  let reads = 0;
  const sink = new MetricsSink({ workloads, processMetrics: false, datapathMaps: () => { reads++; if (!maps) throw new Error('not loaded'); return maps; } });
  const scrape = async () => parseExposition(await sink.exposition());
  let e = await scrape();
  t.deepEqual(select(e, 'mesh_agent_datapath_map_entries', {}), [], 'no series before the datapath loads');
  maps = [
    { name: 'mesh_orig_by_tuple', type: 'lru_hash', maxEntries: 1000, used: 250 },
    { name: 'mesh_splice', type: 'sockhash', maxEntries: 100, used: 2 },
    { name: 'mesh_counters', type: 'percpu_array', maxEntries: 16, used: 16 },
  ];
  e = await scrape();
  t.deepEqual(select(e, 'mesh_agent_datapath_map_entries', {}).map((s) => [s.labels.map_name, s.value]), [['mesh_orig_by_tuple', 250], ['mesh_splice', 2]]);
  t.deepEqual(select(e, 'mesh_agent_datapath_map_pressure', {}).map((s) => [s.labels.map_name, s.value]), [['mesh_orig_by_tuple', 0.25], ['mesh_splice', 0.02]]);
  t.is(e.types.get('mesh_agent_datapath_map_pressure'), 'gauge');
  maps = [{ name: 'mesh_orig_by_tuple', type: 'lru_hash', maxEntries: 1000, used: 1000 }];
  e = await scrape();
  t.deepEqual(select(e, 'mesh_agent_datapath_map_pressure', {}).map((s) => [s.labels.map_name, s.value]), [['mesh_orig_by_tuple', 1]], 'a map gone from the read has no series left');
  maps = null; // detached while stopping
  e = await scrape();
  t.deepEqual(select(e, 'mesh_agent_datapath_map_entries', {}), []);
  t.is(reads, 4, 'one read of the maps per scrape, shared by both gauges');
});

test('the exposition is valid for Prometheus\'s own parser (promtool) and served with its content type', async (t) => {
  const { hub, sink } = setup({ processMetrics: true });
  hub.request(req({ authority: 'we"ird\\host' }));
  hub.connOpen({ ...ep, connId: 1, openedAt: 0 });
  const text = await sink.exposition();
  t.regex(sink.contentType(), /^text\/plain; version=0\.0\.4/);
  t.true(select(parseExposition(text), 'request_total', { authority: 'we"ird\\host' }).length > 0, 'escaped label values round-trip');
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool not runnable (${r.error.message}); install Debian's prometheus package (./dev lists it)`);
  // promtool also lints names: Linkerd's _ms names and prom-client's nodejs_*_total gauges
  // are kept on purpose. Anything else, above all a parse error, fails.
  const accepted = /^(\S+_ms metric names should not contain abbreviated units|nodejs_\S+_total non-counter metrics should not have "_total" suffix)$/;
  const problems = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() && !accepted.test(l));
  t.deepEqual(problems, []);
});

test('the hot path: a repeated event resolves workloads and builds labels once, and never calls into prom-client', async (t) => {
  let lookups = 0;
  const counting = { byIp: (ip: string) => { lookups++; return pods[ip] ?? null; }, generation: () => 1 };
  // Counts the calls prom-client's own metrics take per observation (each re-hashes its
  // labels). Installed before the sink exists: prom-client binds inc/observe per instance.
  const protos = [Counter.prototype, Gauge.prototype, Histogram.prototype] as unknown as Array<Record<string, (...a: unknown[]) => unknown>>;
  let promCalls = 0;
  const restore: Array<() => void> = [];
  for (const p of protos) {
    for (const m of ['incWithoutExemplar', 'inc', 'dec', 'set', 'observeWithoutExemplar', 'labels']) {
      if (!Object.prototype.hasOwnProperty.call(p, m)) continue;
      const orig = p[m]!;
      p[m] = function (this: unknown, ...a: unknown[]) { promCalls++; return orig.apply(this, a); };
      restore.push(() => { p[m] = orig; });
    }
  }
  t.is(restore.length, 8, 'the stubs are in place (Counter inc/labels, Gauge inc/dec/set/labels, Histogram observe/labels)');
  let sink: MetricsSink;
  try {
    sink = new MetricsSink({ workloads: counting, processMetrics: false });
    sink.connOpen({ ...ep, connId: 1, openedAt: 0 });
    const open = lookups;
    for (let i = 0; i < 1000; i++) sink.request(req({ latencyMs: i % 50 }));
    for (let i = 0; i < 100; i++) sink.connBytes({ ...ep, connId: 1, bytesIn: 1, bytesOut: 2 });
    sink.connClose({ ...ep, connId: 1, protocol: 'http1', detectedBy: 'http1', detectMs: 0.2, bytesIn: 100, bytesOut: 200, durationMs: 900 });
    t.is(lookups - open, 2, 'one resolution of source and destination for 1000 requests');
    t.is(promCalls, 0, 'no prom-client inc/observe/labels per event');
  } finally {
    for (const r of restore) r();
  }
  for (const name of ['request_total', 'response_total', 'response_latency_ms', 'tcp_open_total', 'tcp_open_connections', 'tcp_read_bytes_total',
    'tcp_write_bytes_total', 'tcp_close_total', 'tcp_connection_duration_ms', 'mesh_agent_protocol_detect_total', 'mesh_agent_protocol_detect_duration_ms', 'mesh_agent_metrics_overflow_total']) {
    const m = sink.registry.getSingleMetric(name);
    t.truthy(m, name);
    t.false(m instanceof Counter || m instanceof Gauge || m instanceof Histogram, `${name} is not a prom-client metric (they hash labels per call)`);
  }
  const e = parseExposition(await sink.exposition());
  t.is(sum(e, 'request_total', { direction: 'inbound' }), 1000);
  t.is(sum(e, 'response_latency_ms_sum', { direction: 'outbound' }), 20 * (49 * 50) / 2);
  t.is(sum(e, 'tcp_read_bytes_total', { direction: 'outbound' }), 200);
  t.is(sum(e, 'tcp_open_connections'), 0);
});

test('a pod change shows in the labels of the next request when the resolver says so (generation)', async (t) => {
  const mutable: Record<string, Workload> = { ...pods };
  let gen = 1;
  const sink = new MetricsSink({ workloads: { byIp: (ip) => mutable[ip] ?? null, generation: () => gen }, processMetrics: false });
  sink.request(req());
  mutable['10.244.1.3'] = { namespace: 'shop', pod: 'api-v2-abc', kind: 'deployment', name: 'api-v2' };
  gen++;
  sink.request(req());
  delete mutable['10.244.1.3'];
  gen++;
  sink.request(req());
  const e = parseExposition(await sink.exposition());
  t.is(sum(e, 'request_total', { direction: 'outbound', dst_deployment: 'api' }), 1);
  t.is(sum(e, 'request_total', { direction: 'outbound', dst_deployment: 'api-v2' }), 1);
  t.is(sum(e, 'request_total', { direction: 'inbound', deployment: 'api-v2' }), 1);
  t.is(sum(e, 'request_total', { direction: 'inbound' }), 2, 'a destination that left the mesh has no inbound side');
  t.is(select(e, 'request_total', { direction: 'outbound' }).filter((s) => !('dst_deployment' in s.labels)).length, 1);
});

test(`without a generation, a pod change shows within ${RESOLVED_FRESH_MS} ms`, async (t) => {
  const mutable: Record<string, Workload> = { ...pods };
  const sink = new MetricsSink({ workloads: { byIp: (ip) => mutable[ip] ?? null }, processMetrics: false });
  sink.request(req());
  mutable['10.244.1.3'] = { namespace: 'shop', pod: 'api-v2-abc', kind: 'deployment', name: 'api-v2' };
  await new Promise((r) => setTimeout(r, RESOLVED_FRESH_MS + 50));
  sink.request(req());
  const e = parseExposition(await sink.exposition());
  t.is(sum(e, 'request_total', { direction: 'inbound', deployment: 'api-v2' }), 1);
});

test('a connection\'s run of requests lands in the series of each one\'s own outcome', async (t) => {
  // The recorder keeps the last identity's series aside: a change of status, success or peer must not reuse them.
  const { hub, read } = setup();
  for (let i = 0; i < 3; i++) hub.request(req());
  hub.request(req({ status: 201 }));
  hub.request(req({ status: 503, success: false }));
  hub.request(req({ status: 503, success: false }));
  hub.request(req({ sourceIp: '10.244.9.9' }));
  hub.request(req());
  hub.request(req({ status: 0, success: false }));
  const e = await read();
  t.is(sum(e, 'response_total', { direction: 'outbound', status_code: '200', classification: 'success' }), 5);
  t.is(sum(e, 'response_total', { direction: 'outbound', status_code: '201', classification: 'success' }), 1);
  t.is(sum(e, 'response_total', { direction: 'outbound', status_code: '503', classification: 'failure' }), 2);
  t.is(sum(e, 'request_total', { direction: 'outbound', deployment: 'web' }), 8);
  t.is(sum(e, 'request_total', { direction: 'outbound' }), 9);
  t.is(sum(e, 'response_latency_ms_count', { direction: 'outbound' }), 8, 'no latency sample without a response');
});

test('the same endpoints and outcome with different authorities, statuses and gRPC codes stay apart', async (t) => {
  const { hub, read } = setup();
  hub.request(req({ authority: 'a:80' }));
  hub.request(req({ authority: 'A:80' }));
  hub.request(req({ authority: 'b:80', status: 503, success: false }));
  hub.request(req({ authority: 'b:80', status: 200, grpcStatus: 14, success: false }));
  hub.request(req({ authority: 'b:80', status: 200, grpcStatus: 1, success: false }));
  hub.request(req({ authority: 'b:80', direction: 'inbound' }));
  const e = await read();
  t.is(sum(e, 'request_total', { direction: 'outbound', authority: 'a:80' }), 2, 'authority case does not split series');
  t.is(sum(e, 'response_total', { direction: 'outbound', authority: 'b:80', status_code: '503' }), 1);
  t.is(sum(e, 'response_total', { direction: 'outbound', authority: 'b:80', grpc_status: '14' }), 1);
  t.is(sum(e, 'response_total', { direction: 'outbound', authority: 'b:80', grpc_status: '1' }), 1);
  t.is(sum(e, 'request_total', { direction: 'inbound', authority: 'b:80' }), 4, 'an inbound event has only its inbound side');
  t.is(sum(e, 'request_total', { direction: 'outbound', authority: 'b:80' }), 3);
});

test('outbound_http_balancer_endpoints: each balancer\'s endpoints by state, with Linkerd\'s parent and backend labels; the proxies\' views merged', async (t) => {
  const { mergeBalancerCounts } = await import('../src/workers/merge.ts');
  const sink = new MetricsSink({ workloads: { byIp: () => null }, processMetrics: false });
  let counts = [
    [{ namespace: 'shop', name: 'api', port: 80, ready: 3, pending: 0 }],
    [{ namespace: 'shop', name: 'api', port: 80, ready: 2, pending: 1 }, { namespace: 'shop', name: 'db', port: 5432, ready: 1, pending: 0 }],
  ];
  sink.registerBalancers(() => mergeBalancerCounts(counts));
  const series = select(parseExposition(await sink.exposition()), 'outbound_http_balancer_endpoints');
  const at = (name: string, state: string) => series.find((s) => s.labels.parent_name === name && s.labels.endpoint_state === state);
  t.like(at('api', 'ready')?.labels, {
    parent_group: 'core', parent_kind: 'Service', parent_namespace: 'shop', parent_port: '80', parent_section_name: '',
    backend_group: 'core', backend_kind: 'Service', backend_namespace: 'shop', backend_name: 'api', backend_port: '80', backend_section_name: '',
  });
  t.is(at('api', 'ready')?.value, 2, 'one proxy holds an endpoint back: it is pending for the agent');
  t.is(at('api', 'pending')?.value, 1);
  t.is(at('db', 'ready')?.value, 1);
  counts = [];
  t.is(select(parseExposition(await sink.exposition()), 'outbound_http_balancer_endpoints').length, 0, 'read at each scrape');
});

test('a connection\'s duration across a wall-clock step back (negative) does not take the histogram\'s _sum down', async (t) => {
  const { hub, read } = setup();
  const close = (connId: number, durationMs: number): ConnCloseEvent => ({ ...ep, connId, protocol: 'opaque', detectedBy: 'server-first', detectMs: 0.3, bytesIn: 0, bytesOut: 0, durationMs });
  hub.connOpen({ ...ep, connId: 1, openedAt: Date.now() });
  hub.connClose(close(1, 1500));
  const before = sum(await read(), 'tcp_connection_duration_ms_sum', { direction: 'outbound' });
  // The proxy measures a connection's life on the wall clock (Date.now() - openedAt): NTP stepped it back 2 s.
  hub.connOpen({ ...ep, connId: 2, openedAt: Date.now() });
  hub.connClose(close(2, -2000));
  const e = await read();
  t.true(sum(e, 'tcp_connection_duration_ms_sum', { direction: 'outbound' }) >= before, 'a _sum that goes down reads as a counter reset to Prometheus');
  t.is(sum(e, 'tcp_connection_duration_ms_count', { direction: 'outbound' }), 2);
  t.is(sum(e, 'tcp_connection_duration_ms_bucket', { direction: 'outbound', le: '1' }), 1, 'counted, as zero');
});
