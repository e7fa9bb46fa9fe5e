// Fuzzes the controller's line protocol both ways: readLines (the bound, and the same lines in any
// chunking, multi-byte characters cut included), the discovery lines an agent reads
// (parseMessage), and what the controller reads from agents (parseReport) and an agent from the
// controller's tap commands (parseTapFilter). Route records are generated with every match and
// filter the agent serves (query parameters, header modifiers on rules and backends, redirects),
// then mutated: each is read whole, or fails its route closed, or is refused as a line, and what
// is applied compiles into route tables. MESH_FUZZ_SEED=<n> replays a run.
import test from 'ava';
import { PassThrough } from 'node:stream';
import { MAX_LINE_BYTES, readLines } from '../src/controller/lines.ts';
import { DISCOVERY_VERSION, DiscoveryError, parseMessage } from '../src/discovery/model.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { policyFromAnnotations } from '../src/routing/linkerd-annotations.ts';
import { parseRouteRecord, REDIRECT_STATUSES, UNMODIFIABLE_HEADERS, type HeaderModifier, type RouteMatch, type RouteRecord, type RouteRule } from '../src/routing/route-model.ts';
import { findRoute, ParentPolicy } from '../src/routing/route-table.ts';
import type { RouteRequest } from '../src/routing/route-match.ts';
import { parseReport } from '../src/telemetry/report.ts';
import { parseTapFilter } from '../src/telemetry/tap.ts';
import { cpuMsSince, fuzzer, fuzzJsonParsers, hex, utf8, type Fuzz, type JsonParser } from './helpers/fuzz.ts';
import { pair, pod, report, summary } from './helpers/reports.ts';

const LINE_INPUTS = 1_500;
const MESSAGE_INPUTS = 20_000;
const ROUTE_INPUTS = 3_000;
/** CPU time of each test (~3 s measured): CPU time, which a busy machine does not stretch. */
const MAX_RUN_CPU_MS = 20_000;

const f: Fuzz = fuzzer('controller-lines');
const { below, chance, pick, randomText } = f;

// ---------------------------------------------------------------------------
// readLines

interface Read {
  lines: string[];
  tooLong: number;
  /** A line delivered after onTooLong (which means: stop). */
  afterStop: boolean;
}

/** Writes `chunks` to a real stream read by readLines; resolves at its end with what was delivered. */
async function readAll(chunks: readonly Uint8Array[], maxBytes: number): Promise<Read> {
  const s = new PassThrough();
  const r: Read = { lines: [], tooLong: 0, afterStop: false };
  readLines(s, (l) => {
    if (r.tooLong > 0) r.afterStop = true;
    r.lines.push(l);
  }, () => r.tooLong++, maxBytes);
  const ended = new Promise((resolve) => s.on('end', resolve));
  for (const c of chunks) s.write(c);
  s.end();
  await ended;
  return r;
}

/** What readLines must deliver for `input`: its lines (a trailing \r dropped) up to the first over the bound (in UTF-8 bytes). */
function expectedLines(input: Uint8Array, maxBytes: number): { lines: string[]; tooLong: number } {
  const parts = Buffer.from(input).toString('utf8').split('\n');
  const last = parts.pop()!;
  const lines: string[] = [];
  for (const p of parts) {
    const line = p.endsWith('\r') ? p.slice(0, -1) : p;
    if (Buffer.byteLength(line) > maxBytes) return { lines, tooLong: 1 };
    lines.push(line);
  }
  if (Buffer.byteLength(last) > maxBytes) return { lines, tooLong: 1 };
  if (last !== '') lines.push(last);
  return { lines, tooLong: 0 };
}

/** Lines near the bound (a \r that fits only because it is dropped, a character cut between reads). */
function lineInput(maxBytes: number): Uint8Array {
  const parts: string[] = [];
  for (let n = 1 + below(6); n > 0; n--) {
    const len = pick([0, 1, below(maxBytes), maxBytes - 1, maxBytes, maxBytes + 1, maxBytes + 2, below(3 * maxBytes)]);
    const alphabet = pick(['abcdefghij{}":,0123456789', 'é€😀a', '\r\t x', '\u0000\u007f\u0085\u2028']);
    parts.push(randomText(len, alphabet) + pick(['\n', '\r\n', '\n', '\r\r\n', '']));
  }
  return utf8(parts.join(''));
}

test('fuzz: readLines delivers the same lines in any chunking and stops at the bound', async (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const failures: string[] = [];
  const fail = (what: string, input: Uint8Array, max: number) => {
    if (failures.length < 10) failures.push(`${what} (maxBytes ${max}) input=${hex(input)}`);
  };
  const corpus = [utf8('{"a":1}\r\n{"b":2}\n\ntail'), utf8('{"type":"reset","version":3}\n{"type":"synced"}\n')];
  let stopped = 0;
  const cpuStart = process.cpuUsage();
  let n = 0;
  for (; n < LINE_INPUTS && failures.length < 10; n++) {
    const max = pick([1, 8, 64, 1000]);
    const input = chance(0.6) ? lineInput(max) : f.mutateN(chance(0.5) ? pick(corpus) : lineInput(max), corpus);
    const want = expectedLines(input, max);
    const whole = await readAll([input], max);
    const split = await readAll(f.chunkings(input, 512), max);
    for (const [how, got] of [['whole', whole], ['split', split]] as const) {
      if (got.afterStop) fail(`${how}: a line delivered after onTooLong`, input, max);
      if (got.tooLong > 1) fail(`${how}: onTooLong called ${got.tooLong} times`, input, max);
      const over = got.lines.find((l) => Buffer.byteLength(l) > max);
      if (over !== undefined) fail(`${how}: delivered a line of ${Buffer.byteLength(over)} bytes (${over.length} characters), over the bound`, input, max);
    }
    if (JSON.stringify(whole) !== JSON.stringify({ ...want, afterStop: false })) fail(`whole: ${JSON.stringify(whole).slice(0, 300)}; want ${JSON.stringify(want).slice(0, 300)}`, input, max);
    if (JSON.stringify(split) !== JSON.stringify(whole)) fail(`split: ${JSON.stringify(split).slice(0, 300)}; whole: ${JSON.stringify(whole).slice(0, 300)}`, input, max);
    if (whole.tooLong > 0) stopped++;
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${n} inputs (${stopped} over the bound), ${runCpuMs.toFixed(0)} ms of CPU`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(stopped > n / 20 && stopped < n - n / 20, 'both lines over the bound and lines within it');
});

// ---------------------------------------------------------------------------
// The messages

const service = { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }, { name: 'admin', port: 9000, targetPort: 9001 }], annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive' } };
const slice = { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, pod: 'web-1', node: 'n1', zone: 'z-a' }, { ip: '10.1.0.6', ready: false }] };
const podRecord = { namespace: 'shop', name: 'web-1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', inject: 'enabled', hostIp: '192.168.1.2', skipInbound: [[7001, 7001], [9000, 9100]] };
const route = {
  kind: 'HTTPRoute', namespace: 'shop', name: 'split', createdAt: Date.parse('2025-01-01T00:00:00Z'),
  parents: [{ namespace: 'shop', name: 'api', port: 80 }],
  rules: [{
    name: 'canary',
    matches: [{ path: { type: 'PathPrefix', value: '/v2/' }, method: 'GET', headers: [{ name: 'x-canary', type: 'RegularExpression', value: '^(1|yes)$' }] }, { grpc: { type: 'Exact', service: 'a.B', method: 'C' } }],
    backends: [{ namespace: 'shop', name: 'api-v1', port: 80, weight: 90 }, { namespace: 'shop', name: 'api-v2', port: 0, weight: 10, problem: 'not found' }],
    timeouts: { requestMs: 500, backendRequestMs: 200 },
    timeoutSources: [{ kind: 'HTTPRoute', namespace: 'shop', name: 'split', field: 'spec.rules[0].timeouts.request' }],
    retry: { limit: 2, httpStatuses: [[503, 503]], grpcCodes: [14], backoffMs: 50 },
    retrySources: [{ kind: 'HTTPRoute', namespace: 'shop', name: 'split', annotation: 'retry.linkerd.io/http' }],
  }],
};
const access = {
  namespace: 'shop', name: 't', destination: { serviceAccount: 'api', namespace: 'shop', port: 8080 }, sources: [{ namespace: 'shop', serviceAccount: 'web' }],
  rules: [{ kind: 'HTTPRouteGroup', name: 'g', matches: [{ name: 'm', pathRegex: '/api/.*', methods: ['GET'], headers: [{ name: 'x-scrape', regex: 'yes|true' }] }] }, { kind: 'TCPRoute', name: 'db', ports: [5432] }],
  problems: ['a problem'],
};

// ---------------------------------------------------------------------------
// Route records with every match and filter (valid by construction; the mutations make them not)

const HEADER_NAMES = ['x-canary', 'x-user', 'x-a', 'x-b', 'accept', 'authorization', 'cookie', 'x-envoy-x', 'set-cookie', 'cache-control'];
const VALUES = ['1', 'yes', 'a b', 'é', '\t', '', 'v2;q=1', 'x'.repeat(40)];

/** Up to `max` distinct entries of `xs`. */
function some<T>(xs: readonly T[], max: number): T[] {
  const out: T[] = [];
  for (let n = below(max + 1); n > 0; n--) {
    const x = pick(xs);
    if (!out.includes(x)) out.push(x);
  }
  return out;
}

function genModifier(response: boolean): HeaderModifier {
  const names = HEADER_NAMES.filter((n) => !UNMODIFIABLE_HEADERS.has(n) || (response && n === 'host'));
  const m: HeaderModifier = {};
  if (chance(0.6)) m.set = some(names, 3).map((name) => ({ name, value: pick(VALUES) }));
  if (chance(0.6)) m.add = some(names, 3).map((name) => ({ name, value: pick(VALUES) }));
  if (chance(0.5)) m.remove = some(names, 3);
  return m;
}

function genMatch(grpc: boolean): RouteMatch {
  const m: RouteMatch = {};
  if (grpc) {
    if (chance(0.8)) m.grpc = chance(0.7) ? { type: 'Exact', service: pick(['a.B', 'meshtest.Echo']), ...(chance(0.5) ? { method: pick(['Get', 'Count']) } : {}) } : { type: 'RegularExpression', method: pick(['Get|Put', '^C.*']) };
  } else {
    if (chance(0.6)) m.path = pick<RouteMatch['path']>([{ type: 'PathPrefix', value: '/api' }, { type: 'Exact', value: '/api/v2/health' }, { type: 'RegularExpression', value: '/v[0-9]+/.*' }, { type: 'PathPrefix', value: '/' }]);
    if (chance(0.3)) m.method = pick(['GET', 'POST', 'DELETE']);
    if (chance(0.6)) m.queryParams = some(['canary', 'Canary', 'v', 'debug'], 3).map((name) => (chance(0.7) ? { name, type: 'Exact' as const, value: pick(['1', 'yes', '%31', 'a+b']) } : { name, type: 'RegularExpression' as const, value: pick(['^[0-9]+$', 'on|true']) }));
  }
  if (chance(0.4)) m.headers = some(['x-canary', 'x-user', 'accept'], 2).map((name) => ({ name, type: 'Exact' as const, value: pick(['1', 'vip']) }));
  return m;
}

/** A valid route record with every feature the agent serves, at random. */
function genRoute(): RouteRecord {
  const kind = chance(0.8) ? 'HTTPRoute' : 'GRPCRoute';
  const rules: RouteRule[] = [];
  for (let n = 1 + below(4); n > 0; n--) {
    const redirect = kind === 'HTTPRoute' && chance(0.25);
    const matches = Array.from({ length: below(3) }, () => genMatch(kind === 'GRPCRoute'));
    const rule: RouteRule = { matches, backends: [] };
    if (chance(0.3)) rule.name = pick(['canary', 'rest', 'a-b']);
    if (chance(0.5)) rule.requestHeaders = genModifier(false);
    if (chance(0.5)) rule.responseHeaders = genModifier(true);
    if (redirect) {
      rule.redirect = { statusCode: pick(REDIRECT_STATUSES) as 301 };
      if (chance(0.5)) rule.redirect.scheme = pick(['http', 'https'] as const);
      if (chance(0.5)) rule.redirect.hostname = pick(['new.example', 'a-b.c']);
      if (chance(0.3)) rule.redirect.port = pick([80, 8443, 65535]);
      if (chance(0.5)) rule.redirect.path = chance(0.5) ? { type: 'ReplaceFullPath', value: '/new' } : { type: 'ReplacePrefixMatch', value: '/new', prefix: '/api' };
    } else {
      for (let b = 1 + below(3); b > 0; b--) {
        const backend: RouteRule['backends'][number] = { namespace: 'shop', name: pick(['api-v1', 'api-v2', 'gone']), port: pick([0, 80]), weight: rules.length === 0 && b === 1 ? 1 + below(100) : below(100) };
        if (chance(0.3)) backend.requestHeaders = genModifier(false);
        if (chance(0.3)) backend.responseHeaders = genModifier(true);
        if (chance(0.1)) backend.problem = 'Service shop/gone not found';
        rule.backends.push(backend);
      }
      if (rule.backends.every((b) => b.weight === 0)) rule.backends[0]!.weight = 1;
    }
    if (chance(0.2)) rule.timeouts = { requestMs: 1 + below(5000) };
    if (chance(0.2)) rule.retry = chance(0.3) ? null : { limit: below(11), httpStatuses: [[500, 599]] };
    rules.push(rule);
  }
  return { kind, namespace: 'shop', name: pick(['r', 'canary', 'edge']), createdAt: below(2 ** 31), parents: [{ namespace: 'shop', name: 'api', ...(chance(0.5) ? { port: 80 } : {}) }], rules };
}

const generatedRoutes = Array.from({ length: 40 }, genRoute);

const web = { ip: '10.1.0.5', namespace: 'shop', kind: 'deployment', name: 'web', pod: 'web-1' };
const goodReport = report({
  node: 'n', seq: 1, start: 0, end: 1,
  pairs: [pair(web, { ip: '10.1.0.6' }, 3, 2, 7, { side: 'client' }), pair({ ip: '1.1.1.1' }, web, 1, 1)],
  pods: [pod('shop', 'web', '10.1.0.5'), pod('shop', 'job', null as unknown as string, { meshed: false })],
  agent: { ...summary(), identity: { trustDomain: 'cluster.local', anchorDaysLeft: 300, certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', state: 'ready', notAfter: '2030-01-01T00:00:00.000Z' }, { identity: 'x', state: 'pending', notAfter: null }] } },
});
const tapFilter = { id: 't1', srcIps: ['10.1.0.5'], dstIps: [], match: 'either', method: 'GET', pathPrefix: '/api', maxRps: 100 };

const PARSERS: JsonParser[] = [
  {
    name: 'parseMessage (discovery, agent side)',
    corpus: [
      { type: 'reset', version: DISCOVERY_VERSION }, { type: 'synced' },
      { type: 'service', op: 'set', service }, { type: 'slice', op: 'set', slice }, { type: 'pod', op: 'set', pod: podRecord },
      { type: 'route', op: 'set', route }, { type: 'access', op: 'set', access },
      ...generatedRoutes.slice(0, 8).map((r) => ({ type: 'route', op: 'set', route: r })),
      { type: 'service', op: 'delete', key: 'shop/web' }, { type: 'route', op: 'delete', key: 'HTTPRoute/shop/split' }, { type: 'access', op: 'delete', key: 'TrafficTarget/shop/t' },
    ],
    parse: parseMessage,
    documented: (e) => e instanceof DiscoveryError,
  },
  {
    name: 'parseReport (controller side)',
    corpus: [goodReport, report({ seq: 0, start: 5, end: 5 })],
    parse: (l) => parseReport(JSON.parse(l)),
    documented: (e) => e instanceof SyntaxError || (e instanceof Error && e.constructor === Error && e.message.startsWith('report')),
  },
  {
    name: 'parseTapFilter (agent side, a tap command\'s filter)',
    corpus: [tapFilter, { ...tapFilter, match: 'both', method: undefined, pathPrefix: undefined, srcIps: [], dstIps: ['10.1.0.6', '10.1.0.7'] }],
    parse: (l) => parseTapFilter(JSON.parse(l)),
    documented: (e) => e instanceof SyntaxError || (e instanceof Error && e.constructor === Error && e.message.startsWith('tap filter')),
  },
];

test('fuzz: discovery, report and tap lines: only the documented error, a result that parses again to itself, bounded time', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  // Longer lines never reach a parser: readLines refuses them.
  const r = fuzzJsonParsers(f, PARSERS, MESSAGE_INPUTS, MAX_LINE_BYTES);
  t.log(r.summary);
  t.deepEqual(r.failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(r.cpuMs < MAX_RUN_CPU_MS, `run took ${r.cpuMs} ms of CPU`);
  // Both verdicts, for every parser, or the run proves little.
  for (const [k, v] of r.accepted) t.true(v > 50 && v < MESSAGE_INPUTS / PARSERS.length - 50, `${k}: ${v} accepted`);
});

// ---------------------------------------------------------------------------
// Route records, read by the discovery client and compiled

const noAnnotations = policyFromAnnotations({}, { kind: 'Service', namespace: 'shop', name: 'api' });
const REQUESTS: Array<[RouteRequest, boolean]> = [
  [{ method: 'GET', path: '/api/v2/health', header: (n) => (n === 'x-canary' ? '1' : undefined), query: (n) => (n === 'canary' ? '1' : undefined) }, false],
  [{ method: 'POST', path: '/other', header: () => undefined, query: () => undefined }, false],
  [{ method: 'POST', path: '/meshtest.Echo/Count', header: () => 'vip', query: () => undefined }, true],
];
const SERVICE_LINE = JSON.stringify({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: ['10.96.0.20'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} } });

test('fuzz: route records with query matches, header modifiers, redirects and backend filters: read whole, or failing closed, or the line refused; what is applied compiles and routes', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const failures: string[] = [];
  const fail = (what: string, l: string) => {
    if (failures.length < 10) failures.push(`${what}; text=${JSON.stringify(l.slice(0, 400))}`);
  };
  const corpus = generatedRoutes.map((route) => ({ type: 'route', op: 'set', route }));
  const texts = corpus.map((m) => utf8(JSON.stringify(m)));
  const tally = { whole: 0, refused: 0, line: 0, redirects: 0, backendFilters: 0, queryMatches: 0 };
  const cpuStart = process.cpuUsage();
  for (let n = 0; n < ROUTE_INPUTS && failures.length < 10; n++) {
    const l = f.jsonText(corpus, texts);
    let m;
    try {
      m = parseMessage(l);
    } catch (e) {
      if (!(e instanceof DiscoveryError)) fail(`threw ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ')}`, l);
      tally.line++;
      continue;
    }
    if (m.type !== 'route' || m.op !== 'set') continue; // a mutation made it another message
    const sent = (JSON.parse(l) as { route: unknown }).route;
    const r = m.route;
    if (r.refused === undefined) {
      // Read whole: every field of the record as sent, none dropped or changed.
      if (canonical(r) !== canonical(sent)) fail(`read as ${JSON.stringify(r).slice(0, 300)}`, l);
      tally.whole++;
      if (r.rules.some((x) => x.redirect !== undefined)) tally.redirects++;
      if (r.rules.some((x) => x.backends.some((b) => b.requestHeaders !== undefined || b.responseHeaders !== undefined))) tally.backendFilters++;
      if (r.rules.some((x) => x.matches.some((y) => y.queryParams !== undefined))) tally.queryMatches++;
    } else {
      // Refused: the record as sent does not parse, and the route fails closed, saying why.
      let parsed = true;
      try {
        parseRouteRecord(sent);
      } catch {
        parsed = false;
      }
      if (parsed && (sent as { refused?: unknown }).refused === undefined) fail('failed closed, but the record parses', l);
      const rule = r.rules[0];
      if (r.rules.length !== 1 || rule?.backends.length !== 1 || !rule.backends[0]!.problem?.includes(r.refused)) fail(`a refused route that does not fail closed: ${JSON.stringify(r.rules).slice(0, 300)}`, l);
      tally.refused++;
    }
    // What the discovery client does with it: the store applies it, and the Service's table compiles and routes.
    try {
      const store = new DiscoveryStore();
      // Beside an older valid route of the same kind whose exact matches would win over a catch-all.
      const rival = { kind: r.kind, namespace: r.namespace, name: r.name === 'rival' ? 'rival-2' : 'rival', createdAt: 0, parents: [{ namespace: 'shop', name: 'api' }], rules: [{ matches: [{ path: { type: 'Exact', value: '/api/v2/health' } }, { grpc: { type: 'Exact', service: 'meshtest.Echo', method: 'Count' } }], backends: [] }] };
      for (const x of [JSON.stringify({ type: 'reset', version: DISCOVERY_VERSION }), SERVICE_LINE, JSON.stringify({ type: 'route', op: 'set', route: rival }), JSON.stringify(m), '{"type":"synced"}']) store.apply(parseMessage(x));
      for (const p of r.parents) {
        if (p.namespace !== 'shop' || p.name !== 'api') continue;
        const table = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, noAnnotations, store.routesFor('shop/api')).forClient(r.namespace); // a consumer route's own namespace, or any client for a producer route
        for (const [req, grpc] of REQUESTS) {
          const rule = findRoute(table, req, grpc);
          const served = r.kind === 'GRPCRoute' ? grpc : !grpc || table.grpc === null;
          if (r.refused !== undefined && served && rule?.route.name !== r.name) fail(`a refused route did not take ${req.method} ${req.path}`, l);
        }
      }
    } catch (e) {
      fail(`applying it threw ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ')}`, l);
    }
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${ROUTE_INPUTS} route lines, ${runCpuMs.toFixed(0)} ms of CPU: ${JSON.stringify(tally)}`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  // Every verdict, and the new features among what was read whole, or the run proves little.
  for (const [k, v] of Object.entries(tally)) t.true(v > ROUTE_INPUTS / 100, `${k}: ${v}`);
});

/** JSON with object keys sorted. */
const canonical = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x));
