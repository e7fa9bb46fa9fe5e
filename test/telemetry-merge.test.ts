// Proxy workers record with the same code as the main thread and send deltas: merged, they must
// give exactly what one proxy given every event gives (metrics, reports, tap), and a worker that
// dies takes its open connections out of the gauges.
import test from 'ava';
import { MetricsSink } from '../src/telemetry/metrics.ts';
import { MetricsRecorder, type GaugeLedger } from '../src/telemetry/recorder.ts';
import { MAX_PAIRS, parseReport, ReportAggregator, REPORT_VERSION, type PairLedger, type PairReport } from '../src/telemetry/report.ts';
import { LATENCY_SCHEME } from '../src/telemetry/histogram.ts';
import { TapRegistry, type TapFilter, type TapRecord } from '../src/telemetry/tap.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { ConnCloseEvent, ConnOpenEvent, Endpoints, RequestEvent, TelemetrySink } from '../src/telemetry/events.ts';
import type { Workload } from '../src/telemetry/workload.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';

const pods: Record<string, Workload> = {
  '10.244.1.2': { namespace: 'shop', pod: 'web-1', kind: 'deployment', name: 'web' },
  '10.244.1.3': { namespace: 'shop', pod: 'api-1', kind: 'deployment', name: 'api' },
  '10.244.1.4': { namespace: 'shop', pod: 'db-0', kind: 'statefulset', name: 'db' },
};
const workloads = { byIp: (ip: string) => pods[ip] ?? null, generation: () => 1 };

/** The exposition's lines, sorted: series appear in the order they were first seen, which merging changes. */
const lines = async (s: MetricsSink) => (await s.exposition()).split('\n').sort();

type Ev = { kind: 'open'; ev: ConnOpenEvent } | { kind: 'close'; ev: ConnCloseEvent } | { kind: 'request'; ev: RequestEvent } | { kind: 'bytes'; ev: ConnCloseEvent };

/** A known mix: connections from two pods to two destinations (one unknown to the mesh), requests with every outcome, some connections left open. */
function mix(): Ev[][] {
  const conns: Ev[][] = [];
  const dests = ['10.244.1.3', '10.244.1.4', '10.9.9.9'];
  for (let c = 1; c <= 24; c++) {
    const ep: Endpoints = { direction: 'outbound', sourceIp: c % 2 ? '10.244.1.2' : '10.244.1.3', sourcePort: 40000 + c, sourcePodKey: 1n, destIp: dests[c % 3]!, destPort: c % 3 === 1 ? 5432 : 8080 };
    const evs: Ev[] = [{ kind: 'open', ev: { ...ep, connId: c, openedAt: 1000 } }];
    const http = c % 3 !== 1;
    for (let r = 0; http && r < (c % 5) + 1; r++) {
      const status = [200, 200, 503, 404, 0][(c + r) % 5]!;
      evs.push({ kind: 'request', ev: { ...ep, connId: c, protocol: 'http1', authority: `svc-${c % 4}.shop:8080`, method: 'GET', path: '/', status, success: status > 0 && status < 500, latencyMs: (c * 7 + r * 13) % 400, durationMs: 500, requestBytes: 10 * r, responseBytes: 100 + r, startedAt: 0, ...(status === 0 ? { error: 'upstream reset' } : {}) } });
    }
    evs.push({ kind: 'bytes', ev: { ...ep, connId: c, protocol: http ? 'http1' : 'opaque', detectedBy: http ? 'http1' : 'opaque-port', detectMs: c % 3, bytesIn: 100 * c, bytesOut: 7 * c, durationMs: 0 } });
    if (c % 6 !== 0) evs.push({ kind: 'close', ev: { ...ep, connId: c, protocol: http ? 'http1' : 'opaque', detectedBy: http ? 'http1' : 'opaque-port', detectMs: c % 3, bytesIn: 0, bytesOut: 0, durationMs: c * 33, ...(c % 7 === 0 ? { error: 'ECONNRESET' } : {}) } });
    conns.push(evs);
  }
  return conns;
}

function feed(s: TelemetrySink, e: Ev) {
  if (e.kind === 'open') s.connOpen(e.ev);
  else if (e.kind === 'close') s.connClose(e.ev);
  else if (e.kind === 'bytes') s.connBytes(e.ev);
  else s.request(e.ev);
}

/** Interleaves the connections' events as a proxy would see them: round-robin over the connections. */
function timeline(conns: Ev[][]): Array<{ conn: number; e: Ev }> {
  const out: Array<{ conn: number; e: Ev }> = [];
  for (let i = 0; conns.some((c) => i < c.length); i++) conns.forEach((c, conn) => i < c.length && out.push({ conn, e: c[i]! }));
  return out;
}

test('metrics: two workers\' deltas merged into the main sink expose exactly what one sink given every event exposes', async (t) => {
  const one = new MetricsSink({ workloads, processMetrics: false });
  const main = new MetricsSink({ workloads, processMetrics: false });
  const workers = [new MetricsRecorder({ workloads }), new MetricsRecorder({ workloads })];
  const ledgers: GaugeLedger[] = [new Map(), new Map()];
  const events = timeline(mix());
  events.forEach(({ conn, e }, i) => {
    feed(one, e);
    // Connection c lives on one proxy: the main thread's (c % 3 == 0) or a worker's.
    if (conn % 3 === 0) feed(main, e);
    else feed(workers[conn % 3 - 1]!, e);
    // Drains come whenever the main thread asks (a scrape, a report), not per event.
    if (i % 17 === 0) workers.forEach((w, k) => main.merge(w.drain(), ledgers[k]));
  });
  workers.forEach((w, k) => main.merge(w.drain(), ledgers[k]));
  t.deepEqual(await lines(main), await lines(one));
  const e = parseExposition(await main.exposition());
  t.is(sum(e, 'tcp_open_connections', { direction: 'outbound' }), 4, 'the connections left open, wherever they live');
  t.true(sum(e, 'request_total', { direction: 'outbound' }) > 40);
  t.deepEqual(workers.map((w) => w.drain()), [[], []], 'nothing left to send after a drain');
});

test('metrics: a worker that dies takes its open connections out of the gauge, and nothing else', async (t) => {
  const main = new MetricsSink({ workloads, processMetrics: false });
  const worker = new MetricsRecorder({ workloads });
  const ledger: GaugeLedger = new Map();
  const ep: Endpoints = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 1, sourcePodKey: 1n, destIp: '10.244.1.3', destPort: 8080 };
  for (let c = 1; c <= 3; c++) worker.connOpen({ ...ep, connId: c, openedAt: 0 });
  worker.connClose({ ...ep, connId: 1, protocol: 'opaque', detectedBy: 'server-first', detectMs: 1, bytesIn: 5, bytesOut: 6, durationMs: 10 });
  main.connOpen({ ...ep, connId: 100, openedAt: 0 });
  main.merge(worker.drain(), ledger);
  let e = parseExposition(await main.exposition());
  t.is(sum(e, 'tcp_open_connections', { direction: 'outbound' }), 3);
  main.forget(ledger);
  e = parseExposition(await main.exposition());
  t.is(sum(e, 'tcp_open_connections', { direction: 'outbound' }), 1, 'only the main thread\'s connection is open');
  t.is(sum(e, 'tcp_open_total', { direction: 'outbound' }), 4, 'what happened stays counted');
  t.is(sum(e, 'tcp_close_total', { direction: 'outbound' }), 1);
});

test('metrics: past the series cap, merged deltas fold into the overflow series and are counted as one sink counts them', async (t) => {
  const one = new MetricsSink({ workloads, processMetrics: false, maxSeries: 3 });
  const main = new MetricsSink({ workloads, processMetrics: false, maxSeries: 3 });
  const worker = new MetricsRecorder({ workloads, maxSeries: 3 });
  const ep: Endpoints = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 1, sourcePodKey: 1n, destIp: '10.9.9.9', destPort: 80 };
  for (let i = 0; i < 10; i++) {
    const ev: RequestEvent = { ...ep, connId: i, protocol: 'http1', authority: `made-up-${i}.example:80`, method: 'GET', path: '/', status: 200, success: true, latencyMs: 1, durationMs: 1, requestBytes: 0, responseBytes: 0, startedAt: 0 };
    one.request(ev);
    (i % 2 ? main : worker).request(ev);
    main.merge(worker.drain());
  }
  t.deepEqual(await lines(main), await lines(one));
  t.true(sum(parseExposition(await main.exposition()), 'mesh_agent_metrics_overflow_total', { metric: 'request_total' }) > 0);
});

const byPair = (ps: PairReport[]) => [...ps].sort((a, b) => `${a.src.ip}>${a.dst.ip}`.localeCompare(`${b.src.ip}>${b.dst.ip}`));

test('reports: the workers\' drained pairs merged give the interval one aggregator gives; open connections carry over; a dead worker\'s leave', (t) => {
  const one = new ReportAggregator(workloads);
  const main = new ReportAggregator(workloads);
  const workers = [new ReportAggregator(workloads), new ReportAggregator(workloads)];
  const ledgers: PairLedger[] = [new Map(), new Map()];
  const events = timeline(mix());
  const half = Math.floor(events.length / 2);
  const intervals: Array<[PairReport[], PairReport[]]> = [];
  events.forEach(({ conn, e }, i) => {
    feed(one, e);
    if (conn % 3 === 0) feed(main, e);
    else feed(workers[conn % 3 - 1]!, e);
    if (i % 11 === 0) workers.forEach((w, k) => main.merge(w.drain(), ledgers[k]));
    if (i === half) {
      workers.forEach((w, k) => main.merge(w.drain(), ledgers[k]));
      intervals.push([byPair(one.flush()), byPair(main.flush())]);
    }
  });
  workers.forEach((w, k) => main.merge(w.drain(), ledgers[k]));
  intervals.push([byPair(one.flush()), byPair(main.flush())]);
  for (const [a, b] of intervals) t.deepEqual(b, a);
  const open = (ps: PairReport[]) => ps.reduce((n, p) => n + p.tcpOpen, 0);
  t.is(open(intervals[1]![1]), 4);
  // The connections left open (every sixth) all live on worker 1: they leave with it.
  const held = [...ledgers[1]!.values()].reduce((a, b) => a + b, 0);
  t.is(held, 4, 'worker 1 holds the open connections');
  main.forget(ledgers[1]!);
  t.is(open(main.flush()), 4 - held);
});

test('tap: matches from workers share the main thread\'s rate limit and numbering', (t) => {
  const filter: TapFilter = { id: 't1', srcIps: ['10.244.1.2'], dstIps: [], match: 'either', maxRps: 3 };
  const hub = new TelemetryHub({ workloads });
  const got: TapRecord[] = [];
  let told: TapFilter[] = [];
  const main = new TapRegistry(hub, (_id, r) => got.push(r), (fs) => (told = fs));
  main.start(filter);
  t.deepEqual(told, [filter], 'the workers are told the filters');
  // A worker with its own registry matches and sends its records over.
  const whub = new TelemetryHub({ workloads });
  const worker = new TapRegistry(whub, (id, r) => main.offer(id, r));
  worker.sync(told);
  const ev: RequestEvent = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 1, sourcePodKey: 1n, destIp: '10.244.1.3', destPort: 80, connId: 1, protocol: 'http1', authority: 'a', method: 'GET', path: '/', status: 200, success: true, latencyMs: 1, durationMs: 1, requestBytes: 0, responseBytes: 0, startedAt: 0 };
  whub.request(ev);
  hub.request(ev);
  whub.request(ev);
  whub.request(ev);
  t.deepEqual(got.map((r) => r.n), [1, 2, 3], 'three a second across the threads, numbered once');
  main.stop('t1');
  t.deepEqual(told, []);
  worker.sync(told);
  t.false(worker.attached, 'the worker left its hub too');
  main.offer('t1', got[0]!);
  t.is(got.length, 3, 'a record for a stopped tap is dropped');
});

test('reports: a worker\'s open connection merged while the interval is full of pairs is still open when it closes, never negative', (t) => {
  const main = new ReportAggregator(workloads);
  const worker = new ReportAggregator(workloads);
  const ledger: PairLedger = new Map();
  const ep: Endpoints = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 40000, sourcePodKey: 1n, destIp: '10.244.1.3', destPort: 8080 };
  // A scan fills this interval's pairs on the main thread.
  for (let i = 0; i < MAX_PAIRS; i++) main.request({ ...ep, sourceIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, destIp: '10.9.9.9', connId: 1, protocol: 'http1', authority: 'x', method: 'GET', path: '/', status: 200, success: true, latencyMs: 1, durationMs: 1, requestBytes: 0, responseBytes: 0, startedAt: 0 });
  worker.connOpen({ ...ep, connId: 7, openedAt: 0 });
  main.merge(worker.drain(), ledger);
  const full = main.flush();
  t.is(full.length, MAX_PAIRS, 'a report holds at most MAX_PAIRS pairs, as the controller checks');
  t.notThrows(() => parseReport({ version: REPORT_VERSION, latencyScheme: LATENCY_SCHEME, node: 'n', agentId: 'a', seq: 1, start: 0, end: 1, pairs: full, pods: [], dropped: 0 }));
  worker.connClose({ ...ep, connId: 7, protocol: 'http1', detectedBy: 'http1', detectMs: 0, bytesIn: 0, bytesOut: 0, durationMs: 5 });
  main.merge(worker.drain(), ledger);
  const pairs = main.flush();
  for (const p of pairs) t.true(p.tcpOpen >= 0, `pair ${p.src.ip}>${p.dst.ip}: tcpOpen ${p.tcpOpen}`);
  // The controller takes the report (a negative gauge would have it refused, the interval lost).
  t.notThrows(() => parseReport({ version: REPORT_VERSION, latencyScheme: LATENCY_SCHEME, node: 'n', agentId: 'a', seq: 2, start: 1, end: 2, pairs, pods: [], dropped: 0 }));
  t.like(pairs.find((p) => p.dst.ip === '10.244.1.3'), { tcpClosed: 1, tcpOpen: 0 });
});
