// Aggregation per workload pair, percentile merging, the window store and the stat query.
import test from 'ava';
import { bucketOf, LATENCY_BOUNDS, LATENCY_SCHEME, mergeInto, observe, quantile, type Histogram } from '../src/telemetry/histogram.ts';
import { parseReport, ReportAggregator, REPORT_VERSION, type PodInventory, type Report } from '../src/telemetry/report.ts';
import type { RequestEvent } from '../src/telemetry/events.ts';
import { WindowStore } from '../src/controller/store.ts';
import { parseWindow, stat } from '../src/controller/stat.ts';

const endpoints = (src: string, dst: string) => ({ direction: 'outbound' as const, sourceIp: src, sourcePort: 40000, sourcePodKey: 0n, destIp: dst, destPort: 8080 });
const req = (src: string, dst: string, success: boolean, latencyMs: number): RequestEvent => ({
  ...endpoints(src, dst), connId: 1, protocol: 'http1', authority: 'api:8080', method: 'GET', path: '/', status: success ? 200 : 500,
  success, latencyMs, durationMs: latencyMs + 1, requestBytes: 10, responseBytes: 100, startedAt: 0,
});

test('bucket bounds are increasing and a latency lands in the first bound at or above it', (t) => {
  for (let i = 1; i < LATENCY_BOUNDS.length; i++) t.true(LATENCY_BOUNDS[i]! > LATENCY_BOUNDS[i - 1]!);
  t.is(bucketOf(0), 0);
  t.is(bucketOf(LATENCY_BOUNDS[10]!), 10);
  t.is(bucketOf(LATENCY_BOUNDS[10]! + 0.0001), 11);
  t.is(bucketOf(1e9), LATENCY_BOUNDS.length, '+Inf');
});

test('percentiles of merged histograms match the percentiles of all samples together', (t) => {
  // Two agents: one fast (1-10ms), one slow (50-100ms). The true p50 of the union is ~10ms,
  // p95 ~ 90ms; averaging each agent's p50 would say ~40ms.
  const a: Histogram = [];
  const b: Histogram = [];
  const all: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const fast = 1 + (9 * i) / 1000;
    observe(a, fast);
    all.push(fast);
  }
  for (let i = 0; i < 1000; i++) {
    const slow = 50 + (50 * i) / 1000;
    observe(b, slow);
    all.push(slow);
  }
  const merged = mergeInto(mergeInto([], a), b);
  all.sort((x, y) => x - y);
  for (const q of [0.25, 0.5, 0.75, 0.95, 0.99]) {
    const exact = all[Math.ceil(q * all.length) - 1]!;
    const est = quantile(merged, q)!;
    t.true(Math.abs(est - exact) / exact < 0.25, `q${q}: estimate ${est} vs exact ${exact}`);
  }
  t.is(quantile([], 0.5), null);
});

test('the aggregator sums per pair, resolves workloads, and carries open connections over', (t) => {
  const names: Record<string, { namespace: string; pod: string; kind: string; name: string }> = {
    '10.0.0.1': { namespace: 'shop', pod: 'web-1', kind: 'deployment', name: 'web' },
    '10.0.0.2': { namespace: 'shop', pod: 'api-1', kind: 'deployment', name: 'api' },
  };
  const agg = new ReportAggregator({ byIp: (ip) => names[ip] ?? null });
  agg.connOpen({ ...endpoints('10.0.0.1', '10.0.0.2'), connId: 7, openedAt: 0 });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 2));
  agg.request(req('10.0.0.1', '10.0.0.2', false, 4));
  agg.connBytes({ ...endpoints('10.0.0.1', '10.0.0.2'), connId: 7, bytesIn: 20, bytesOut: 200 });
  agg.request(req('10.0.0.1', '10.9.9.9', true, 1));
  const first = agg.flush();
  t.is(first.length, 2);
  const p = first.find((x) => x.dst.ip === '10.0.0.2')!;
  t.like(p, { requests: 2, successes: 1, tcpOpened: 1, tcpOpen: 1, tcpBytesIn: 20, tcpBytesOut: 200, requestBytes: 20, responseBytes: 200 });
  t.deepEqual(p.src, { ip: '10.0.0.1', namespace: 'shop', kind: 'deployment', name: 'web', pod: 'web-1' });
  t.deepEqual(first.find((x) => x.dst.ip === '10.9.9.9')!.dst, { ip: '10.9.9.9' }, 'unknown destination: IP only');
  const second = agg.flush();
  t.is(second.length, 1, 'only the pair with an open connection stays');
  t.like(second[0], { requests: 0, tcpOpen: 1, tcpOpened: 0 });
  agg.connClose({ ...endpoints('10.0.0.1', '10.0.0.2'), connId: 7, protocol: 'http1', detectedBy: 'http1', detectMs: 0, bytesIn: 20, bytesOut: 200, durationMs: 5 });
  t.like(agg.flush()[0], { tcpClosed: 1, tcpOpen: 0 });
  t.deepEqual(agg.flush(), []);
});

test('a request that got no response (status 0: refused, reset, timed out) counts as a failure but not in the latency histogram, as in Prometheus\' response_latency_ms', (t) => {
  const agg = new ReportAggregator({ byIp: () => null });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 2));
  // A connect timeout: 5 s until the proxy gave up, and no response at all.
  agg.request({ ...req('10.0.0.1', '10.0.0.2', false, 5000), status: 0, error: 'CONNECT_TIMEOUT' });
  const [p] = agg.flush();
  t.like(p, { requests: 2, successes: 0 + 1 });
  t.is(p!.latency.reduce((a, b) => a + b, 0), 1, 'only the answered request has a latency');
  t.is(quantile(p!.latency, 0.99)! <= LATENCY_BOUNDS[bucketOf(2)]!, true, 'p99 is the answered request\'s, not the 5 s timeout');
});

test('a run of one pair\'s events counts in the interval it happens in, across flushes, drains and other pairs', (t) => {
  // The aggregator keeps the last event's pair aside (no key per event): it must not outlive its interval.
  const agg = new ReportAggregator({ byIp: () => null });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 1));
  t.like(agg.flush()[0], { requests: 1 });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 1));
  agg.request(req('10.0.0.1', '10.0.0.2', false, 1));
  agg.request(req('10.0.0.1', '10.0.0.3', true, 1));
  agg.request(req('10.0.0.1', '10.0.0.2', true, 1));
  const second = agg.flush();
  t.like(second.find((p) => p.dst.ip === '10.0.0.2'), { requests: 3, successes: 2 });
  t.like(second.find((p) => p.dst.ip === '10.0.0.3'), { requests: 1 });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 1));
  t.like(agg.drain()[0], { requests: 1 });
  agg.request(req('10.0.0.1', '10.0.0.2', true, 1));
  t.like(agg.drain()[0], { requests: 1 });
  t.deepEqual(agg.flush(), []);
});

const pod = (name: string, ip: string, owner: string, meshed = true, namespace = 'shop'): PodInventory => ({ namespace, name, ip, kind: 'deployment', owner, meshed });
function report(o: Partial<Report> & { node: string; seq: number; start: number; end: number }): Report {
  return { version: REPORT_VERSION, latencyScheme: LATENCY_SCHEME, agentId: 'a1', pairs: [], pods: [], dropped: 0, ...o };
}
const pair = (src: string, dst: { ip: string; name?: string }, requests: number, successes: number, latencies: number[], tcpOpen = 0) => {
  const latency: Histogram = [];
  for (const l of latencies) observe(latency, l);
  return {
    src: { ip: src, namespace: 'shop', kind: 'deployment', name: 'web', pod: 'web-1' },
    dst: dst.name ? { ip: dst.ip, namespace: 'shop', kind: 'deployment', name: dst.name, pod: `${dst.name}-1` } : { ip: dst.ip },
    requests, successes, latency, requestBytes: 0, responseBytes: 0, tcpOpened: 0, tcpClosed: 0, tcpOpen, tcpBytesIn: 1000, tcpBytesOut: 5000,
  };
};

test('stat: a known mix gives its success rate, rate, latency, meshed pods and open connections', (t) => {
  const store = new WindowStore();
  const now = 1_000_000;
  // node-a runs web (client) and api; node-b runs db, which node-a only knows by IP.
  const podsA = [pod('web-1', '10.0.0.1', 'web'), pod('api-1', '10.0.0.2', 'api'), pod('api-2', '10.0.0.3', 'api', false)];
  const podsB = [pod('db-1', '10.1.0.1', 'db')];
  for (let i = 0; i < 10; i++) {
    const start = now - 10_000 + i * 1000;
    store.add(report({ node: 'node-a', seq: i + 1, start, end: start + 1000, pods: podsA, pairs: [pair('10.0.0.1', { ip: '10.0.0.2', name: 'api' }, 4, 3, [1, 2, 3, 40], i === 9 ? 2 : 1), pair('10.0.0.1', { ip: '10.1.0.1' }, 2, 2, [5, 5])] }), start + 1000);
    store.add(report({ node: 'node-b', agentId: 'b1', seq: i + 1, start, end: start + 1000, pods: podsB }), start + 1000);
  }
  const res = stat(store, { kind: 'deployment', namespace: 'shop', windowMs: 60_000 }, now);
  t.is(res.coveredMs, 10_000, 'ten seconds of reports in a one minute window');
  const api = res.rows.find((r) => r.name === 'api')!;
  t.like(api, { requests: 40, successes: 30, successRate: 0.75, meshedPods: 1, totalPods: 2, tcpOpenConnections: 2 });
  t.is(api.rps, 4);
  t.true(api.latencyMsP50! > 1.5 && api.latencyMsP50! < 3.2, `p50 ${api.latencyMsP50}`);
  t.true(api.latencyMsP99! > 30, `p99 ${api.latencyMsP99}`);
  t.is(api.readBytesPerSec, 1000);
  const db = res.rows.find((r) => r.name === 'db')!;
  t.like(db, { requests: 20, successRate: 1, rps: 2, meshedPods: 1, totalPods: 1 }, 'a destination on another node is resolved from that node\'s inventory');
  const web = res.rows.find((r) => r.name === 'web')!;
  t.like(web, { requests: 0, successRate: null, rps: null, latencyMsP50: null, meshedPods: 1, totalPods: 1 }, 'a pure client shows no inbound traffic');

  const pods = stat(store, { kind: 'pod', namespace: 'shop', name: 'api-1', windowMs: 60_000 }, now);
  t.is(pods.rows.length, 1);
  t.like(pods.rows[0], { name: 'api-1', requests: 40 });
  const ns = stat(store, { kind: 'namespace', namespace: null, windowMs: 60_000 }, now);
  t.like(ns.rows[0], { name: 'shop', requests: 60, successes: 50, meshedPods: 3, totalPods: 4 });

  const short = stat(store, { kind: 'deployment', namespace: 'shop', name: 'api', windowMs: 3_000 }, now);
  t.like(short.rows[0], { requests: 12, rps: 4 }, 'a 3s window holds three reports');
  t.deepEqual(stat(store, { kind: 'deployment', namespace: 'other', windowMs: 60_000 }, now).rows, []);
});

test('store: a resent report counts once; a restarted agent takes over the node; a late backlog does not roll the inventory back', (t) => {
  const store = new WindowStore();
  const r1 = report({ node: 'n', seq: 1, start: 0, end: 1000, pods: [pod('old', '10.0.0.9', 'web')], pairs: [pair('10.0.0.1', { ip: '10.0.0.9', name: 'web' }, 5, 5, [1])] });
  t.is(store.add(r1, 1000), 'added');
  t.is(store.add(r1, 1100), 'duplicate');
  // The agent restarts (new agentId, seq from 1 again).
  const r2 = report({ node: 'n', agentId: 'a2', seq: 1, start: 2000, end: 3000, pods: [pod('new', '10.0.0.8', 'web')], pairs: [pair('10.0.0.1', { ip: '10.0.0.8', name: 'web' }, 3, 3, [1], 1)] });
  t.is(store.add(r2, 3000), 'added');
  const n = store.get('n')!;
  t.is(n.agentId, 'a2');
  t.deepEqual(n.pods.map((p) => p.name), ['new']);
  // The old agent's backlog arrives late: it counts, but does not replace the present.
  t.is(store.add(report({ node: 'n', seq: 2, start: 1000, end: 2000, pods: [pod('old', '10.0.0.9', 'web')] }), 3100), 'added');
  t.deepEqual(store.get('n')!.pods.map((p) => p.name), ['new']);
  t.deepEqual(n.reports.map((r) => r.end), [1000, 2000, 3000]);
  const res = stat(store, { kind: 'deployment', namespace: 'shop', windowMs: 60_000 }, 3100);
  t.like(res.rows[0], { name: 'web', requests: 8, tcpOpenConnections: 1, totalPods: 1 });
  store.prune(3000 + store.retentionMs + 1);
  t.deepEqual(store.get('n')!.reports, [], 'reports past the retention are forgotten');
});

test('reports from a peer are validated field by field', (t) => {
  const good = report({ node: 'n', seq: 1, start: 0, end: 1, pairs: [pair('1.1.1.1', { ip: '2.2.2.2' }, 1, 1, [1])] });
  t.deepEqual(parseReport(JSON.parse(JSON.stringify(good))).pairs[0]!.requests, 1);
  t.throws(() => parseReport(null), { message: /expected a JSON object/ });
  t.throws(() => parseReport({ ...good, version: 9 }), { message: /version 9.*same release/ });
  t.throws(() => parseReport({ ...good, latencyScheme: 'x' }), { message: /latency buckets/ });
  t.throws(() => parseReport({ ...good, node: '' }), { message: /report.node/ });
  t.throws(() => parseReport({ ...good, pairs: [{ ...good.pairs[0], requests: -1 }] }), { message: /pairs\[0\]\.requests/ });
  t.throws(() => parseReport({ ...good, pairs: [{ ...good.pairs[0], successes: 2 }] }), { message: /more successes than requests/ });
  t.throws(() => parseReport({ ...good, pairs: [{ ...good.pairs[0], latency: new Array(100).fill(1) }] }), { message: /latency/ });
  t.throws(() => parseReport({ ...good, pairs: [{ ...good.pairs[0], dst: {} }] }), { message: /pairs\[0\]\.dst: needs an ip/ });
  t.throws(() => parseReport({ ...good, pods: [{ name: 'x' }] }), { message: /pods\[0\]/ });
  // Found by the fuzz test: a value nested deeper than JSON.stringify goes made the message itself throw (a RangeError).
  const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000));
  t.throws(() => parseReport({ ...good, version: deep }), { message: /^report: version a list nested too deep to show is not/ });
  t.throws(() => parseReport({ ...good, latencyScheme: deep }), { message: /^report: latency buckets a list nested too deep to show differ/ });
});

test('time windows parse as Linkerd spells them', (t) => {
  t.is(parseWindow('10s', Infinity), 10_000);
  t.is(parseWindow('1m', Infinity), 60_000);
  t.is(parseWindow('1h', Infinity), 3_600_000);
  t.throws(() => parseWindow('1d', Infinity), { message: /use a number and s, m or h/ });
  t.throws(() => parseWindow('0s', Infinity), { message: /more than zero/ });
  t.throws(() => parseWindow('2h', 3_600_000), { message: /keeps 60m.*--retention/ });
});

test('the aggregator says which side of a pair it saw when every node captures inbound; a tunnelled pair it sees whole', (t) => {
  const names: Record<string, any> = { '10.1.0.1': { namespace: 'shop', pod: 'web-1', kind: 'deployment', name: 'web' }, '10.1.0.2': { namespace: 'shop', pod: 'api-1', kind: 'deployment', name: 'api' }, '10.2.0.3': { namespace: 'shop', pod: 'db-1', kind: 'deployment', name: 'db' } };
  const local = new Set(['10.1.0.1', '10.1.0.2']);
  const agg = new ReportAggregator({ byIp: (ip) => names[ip] ?? null }, (ip) => local.has(ip));
  const ev = (direction: 'inbound' | 'outbound', sourceIp: string, destIp: string) => ({ direction, sourceIp, sourcePort: 1, sourcePodKey: 0n, destIp, destPort: 80, connId: 1, protocol: 'http1' as const, authority: 'a', method: 'GET', path: '/', status: 200, success: true, latencyMs: 1, durationMs: 1, requestBytes: 0, responseBytes: 0, startedAt: 0 });
  agg.request(ev('outbound', '10.1.0.1', '10.1.0.2'));
  agg.request(ev('outbound', '10.1.0.1', '10.2.0.3'));
  agg.request(ev('outbound', '10.1.0.1', '192.0.2.1'));
  agg.request(ev('inbound', '10.9.9.9', '10.1.0.2'));
  const sides = agg.flush().map((p) => `${p.src.ip}>${p.dst.ip}:${p.side ?? 'both'}`).sort();
  t.deepEqual(sides, ['10.1.0.1>10.1.0.2:both', '10.1.0.1>10.2.0.3:client', '10.1.0.1>192.0.2.1:both', '10.9.9.9>10.1.0.2:server']);
  // Through an mTLS tunnel the destination's agent does not parse the requests: the client's agent reports both sides.
  const tunnelled = new ReportAggregator({ byIp: (ip) => names[ip] ?? null }, (ip) => local.has(ip), (e) => (e.destIp === '10.2.0.3' ? { clientId: 'spiffe://cluster.local/ns/shop/sa/web', serverId: 'spiffe://cluster.local/ns/shop/sa/db' } : null));
  tunnelled.request(ev('outbound', '10.1.0.1', '10.2.0.3'));
  t.deepEqual(tunnelled.flush().map((p) => p.side ?? 'both'), ['both']);
});
