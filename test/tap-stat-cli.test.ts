// Tap filters, the rate limit, "no taps, no sink", and the text the CLI prints for stat and tap.
import test from 'ava';
import { parseTapFilter, TapMatcher, TapRegistry, TokenBucket, type TapFilter, type TapRecord } from '../src/telemetry/tap.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { RequestEvent } from '../src/telemetry/events.ts';
import { renderStat, statJson, formatLatency } from '../src/cli/stat.ts';
import { tapLines, tapJson } from '../src/cli/tap.ts';
import { controllerUrl } from '../src/controller/addr.ts';
import { parseResource } from '../src/controller/stat.ts';
import type { StatRow } from '../src/controller/stat.ts';
import { ControllerServer } from '../src/controller/server.ts';
import { execFile } from '../src/sim/run.ts';
import { meshBin } from '../src/sim/dist-bin.ts';

const ev = (over: Partial<RequestEvent> = {}): RequestEvent => ({
  direction: 'outbound', sourceIp: '10.0.0.1', sourcePort: 4567, sourcePodKey: 0n, destIp: '10.0.0.2', destPort: 8080,
  connId: 1, protocol: 'http1', authority: 'api:8080', method: 'GET', path: '/api/items', status: 200, success: true,
  latencyMs: 1.234, durationMs: 1.5, requestBytes: 0, responseBytes: 42, startedAt: 1, ...over,
});
const filter = (over: Partial<TapFilter> = {}): TapFilter => ({ id: 't1', srcIps: ['10.0.0.1'], dstIps: ['10.0.0.1'], match: 'either', maxRps: 100, ...over });

test('a tap matches traffic from or to the resource, or from it to --to, and by method and path prefix', (t) => {
  const either = new TapMatcher(filter());
  t.true(either.matches(ev()), 'from the resource');
  t.true(either.matches(ev({ sourceIp: '10.0.0.9', destIp: '10.0.0.1' })), 'to the resource');
  t.false(either.matches(ev({ sourceIp: '10.0.0.9', destIp: '10.0.0.8' })));
  const both = new TapMatcher(filter({ dstIps: ['10.0.0.2'], match: 'both' }));
  t.true(both.matches(ev()));
  t.false(both.matches(ev({ destIp: '10.0.0.3' })), '--to: another destination');
  t.false(both.matches(ev({ sourceIp: '10.0.0.2', destIp: '10.0.0.2' })));
  const m = new TapMatcher(filter({ method: 'POST', pathPrefix: '/api' }));
  t.false(m.matches(ev()), 'GET is not POST');
  t.true(m.matches(ev({ method: 'post' })));
  t.false(m.matches(ev({ method: 'POST', path: '/health' })));
});

test('tap filters from the controller are validated', (t) => {
  t.deepEqual(parseTapFilter(filter()), { ...filter(), method: undefined, pathPrefix: undefined });
  t.throws(() => parseTapFilter({ ...filter(), maxRps: 0 }), { message: /maxRps/ });
  t.throws(() => parseTapFilter({ ...filter(), match: 'any' }), { message: /match/ });
  t.throws(() => parseTapFilter({ ...filter(), srcIps: 'x' }), { message: /srcIps/ });
  t.throws(() => parseTapFilter({ ...filter(), method: 'get /' }), { message: /method/ });
});

test('the token bucket allows a second of burst, then the rate', (t) => {
  const b = new TokenBucket(5, 5, 0);
  let n = 0;
  for (let i = 0; i < 20; i++) if (b.take(0)) n++;
  t.is(n, 5, 'burst');
  t.false(b.take(100), 'half a token after 100ms');
  t.true(b.take(200));
  n = 0;
  for (let ms = 200; ms <= 2200; ms += 10) if (b.take(ms)) n++;
  t.true(n >= 9 && n <= 11, `about 10 in 2s, got ${n}`);
});

test('the registry joins the hub with the first tap and leaves it with the last; it rate-limits per tap', (t) => {
  const hub = new TelemetryHub();
  const got: Array<[string, TapRecord]> = [];
  const reg = new TapRegistry(hub, (id, r) => got.push([id, r]));
  t.false(reg.attached, 'no tap, no sink');
  hub.request(ev());
  reg.start(filter({ id: 'a', maxRps: 2 }));
  reg.start(filter({ id: 'b', maxRps: 100, method: 'POST' }));
  t.true(reg.attached);
  for (let i = 0; i < 10; i++) hub.request(ev());
  t.is(got.filter(([id]) => id === 'a').length, 2, 'a: two a second');
  t.is(got.filter(([id]) => id === 'b').length, 0, 'b: only POST');
  t.deepEqual(got.map(([, r]) => r.n), [1, 2]);
  t.like(got[0]![1], { src: { ip: '10.0.0.1', port: 4567 }, dst: { ip: '10.0.0.2', port: 8080 }, latencyUs: 1234, durationUs: 266, responseBytes: 42 });
  reg.stop('a');
  t.true(reg.attached);
  reg.stop('b');
  t.false(reg.attached, 'the last tap removed the sink');
  hub.request(ev());
  t.is(got.length, 2);
});

const row = (o: Partial<StatRow>): StatRow => ({
  namespace: 'shop', kind: 'deployment', name: 'api', meshedPods: 1, totalPods: 1, requests: 4, successes: 3, successRate: 0.75, rps: 2,
  latencyMsP50: 1.5, latencyMsP95: 12.4, latencyMsP99: 0.5, tcpOpenConnections: 2, readBytesPerSec: 10, writeBytesPerSec: 20, ...o,
});

test('stat prints Linkerd\'s columns, numbers right-aligned, dashes without traffic', (t) => {
  const text = renderStat([row({}), row({ name: 'web-frontend', meshedPods: 0, totalPods: 2, requests: 0, successes: 0, successRate: null, rps: null, latencyMsP50: null, latencyMsP95: null, latencyMsP99: null, tcpOpenConnections: 0 })]);
  t.is(text, [
    'NAME           MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN',
    'api               1/1    75.00%   2.0rps         1.5ms          12ms        0.50ms          2',
    'web-frontend      0/2         -        -             -             -             -          0',
  ].join('\n'));
  const wide = renderStat([row({})], { wide: true, namespaceColumn: true }).split('\n');
  t.regex(wide[0]!, /^NAMESPACE   NAME   MESHED .* TCP_CONN   READ_BYTES\/SEC   WRITE_BYTES\/SEC$/);
  t.regex(wide[1]!, /^shop        api       1\/1 .* 10\.0B\/s {11}20\.0B\/s$/);
  t.is(formatLatency(123.4), '123ms');
  t.deepEqual(statJson([row({})])[0], {
    namespace: 'shop', kind: 'deployment', name: 'api', meshed: '1/1', requests: 4, success: 0.75, rps: 2,
    latency_ms_p50: 1.5, latency_ms_p95: 12.4, latency_ms_p99: 0.5, tcp_open_connections: 2, read_bytes_per_sec: 10, write_bytes_per_sec: 20,
  });
});

const record: TapRecord = { n: 1, src: { ip: '10.244.1.2', port: 4567 }, dst: { ip: '10.244.1.3', port: 8080 }, protocol: 'http1', method: 'GET', authority: 'web:8080', path: '/api', status: 200, latencyUs: 1234, durationUs: 56, requestBytes: 0, responseBytes: 12, success: true, startedAt: 0 };
const tapEv = (r: Partial<TapRecord> = {}, direction: 'outbound' | 'inbound' = 'outbound') => ({ type: 'request' as const, id: '0:1', node: 'n1', direction, source: { ip: '10.244.1.2', port: 4567, resource: 'deploy/client', namespace: 'shop', pod: 'client-1' }, destination: { ip: '10.244.1.3', port: 8080 }, record: { ...record, ...r } });

test('tap prints req, rsp and end lines in Linkerd\'s format', (t) => {
  t.deepEqual(tapLines(tapEv()), [
    'req id=0:1 proxy=out src=10.244.1.2:4567 dst=10.244.1.3:8080 tls=no_identity :method=GET :authority=web:8080 :path=/api',
    'rsp id=0:1 proxy=out src=10.244.1.2:4567 dst=10.244.1.3:8080 tls=no_identity :status=200 latency=1234µs',
    'end id=0:1 proxy=out src=10.244.1.2:4567 dst=10.244.1.3:8080 tls=no_identity duration=56µs response-length=12B',
  ]);
  t.regex(tapLines(tapEv({ protocol: 'http2', grpcStatus: 14 }))[2]!, /^end .* grpc-status=Unavailable duration=56µs/);
  const noRsp = tapLines(tapEv({ status: 0, error: 'upstream refused' }));
  t.is(noRsp.length, 2, 'no response: no rsp line');
  t.regex(noRsp[1]!, /error="upstream refused"/);
  t.regex(tapLines(tapEv(), true)[0]!, / src_res=deploy\/client src_ns=shop$/);
  const j = tapJson(tapEv()) as any[];
  t.deepEqual(j.map((x) => x.type), ['req', 'rsp', 'end']);
  t.like(j[1], { id: '0:1', proxyDirection: 'OUTBOUND', status: 200, latencyUs: 1234, source: { resource: 'deploy/client' } });
  // A request the tapped resource received: Linkerd's proxy=in.
  t.regex(tapLines(tapEv({}, 'inbound'))[0]!, /^req id=0:1 proxy=in src=10\.244\.1\.2:4567 /);
  t.like((tapJson(tapEv({}, 'inbound')) as any[])[0], { proxyDirection: 'INBOUND' });
});

test('controller addresses and resources parse with clear errors', (t) => {
  t.is(controllerUrl('mesh-agent-controller.mesh-agent.svc:8086', '--controller'), 'http://mesh-agent-controller.mesh-agent.svc:8086');
  t.is(controllerUrl('http://127.0.0.1', '--controller'), 'http://127.0.0.1:8086');
  t.is(controllerUrl('[::1]:9000', '--controller'), 'http://[::1]:9000');
  t.throws(() => controllerUrl('https://x:1', '--controller'), { message: /serves cleartext HTTP\/2 only, not TLS; pass HOST:PORT or http:\/\/HOST:PORT/ });
  t.throws(() => controllerUrl('x:99999', '--controller'), { message: /port must be/ });
  t.throws(() => controllerUrl('::1', '--controller'), { message: /brackets/ });
  t.deepEqual(parseResource('deploy/web'), { kind: 'deployment', name: 'web' });
  t.deepEqual(parseResource('po/web-1'), { kind: 'pod', name: 'web-1' });
  t.throws(() => parseResource('web'), { message: /TYPE\/NAME/ });
  t.throws(() => parseResource('svc/web'), { message: /unknown resource type "svc"/ });
});

test('stat NAME not found names where it looked: the namespace given, or every namespace with -A', async (t) => {
  const ctl = new ControllerServer({ log: () => {} });
  const { port } = await ctl.listen('127.0.0.1', 0);
  t.teardown(() => ctl.close());
  const stat = (...args: string[]) => execFile(process.execPath, [meshBin(), 'stat', ...args, '--controller', `127.0.0.1:${port}`], { timeoutMs: 20_000 });
  const all = await stat('deploy', 'web', '-A');
  t.is(all.code, 1, all.stderr);
  t.regex(all.stderr, /deploy\/web not found in any namespace:/);
  const one = await stat('deploy', 'web', '-n', 'shop');
  t.is(one.code, 1, one.stderr);
  t.regex(one.stderr, /deploy\/web not found in namespace shop:/);
});
