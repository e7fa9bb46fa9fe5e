// The dashboard's pure parts: views over the window store, the graph layout, the SSE parser,
// routes, the agent summary's validation, the API's parameter checks and host check.
import test from 'ava';
import { WindowStore } from '../src/controller/store.ts';
import { edgesView, EXTERNAL, namespacesView, nodesView, seriesView, workloadsView, workloadView } from '../src/dashboard/views.ts';
import { ApiError, checkParams, namespaceParam, tapParams, windowParam, workloadParam } from '../src/dashboard/params.ts';
import { hostAllowed, sseEvent } from '../src/dashboard/server.ts';
import { canOpenBrowser, forwardedPort } from '../src/cli/dashboard.ts';
import { parseReport, type IdentitySummary } from '../src/telemetry/report.ts';
import { MAX_TAP_RPS } from '../src/telemetry/tap.ts';
import { graphOf } from '../web/src/lib/graph.ts';
import { layout } from '../web/src/lib/layout.ts';
import { SseParser } from '../web/src/lib/sse.ts';
import { parseRoute, href } from '../web/src/lib/route.ts';
import { successClass } from '../web/src/lib/health.ts';
import { pair, peerOf, pod, report, summary } from './helpers/reports.ts';

const NOW = 1_000_000;
const web = pod('shop', 'web', '10.0.0.1');
const api = pod('shop', 'api', '10.0.0.2');
const db = pod('data', 'db', '10.0.0.3', { kind: 'statefulset' });
const idle = pod('shop', 'cron', '10.0.0.4', { kind: 'job', meshed: false });

/** Two 5 s reports: web -> api 10 requests (8 ok) and api -> db 4 (4 ok), api -> an IP no agent knows 2 (1 ok). */
function shop(): WindowStore {
  const s = new WindowStore();
  for (const [seq, end] of [[1, NOW - 5000], [2, NOW]] as const) {
    s.add(report({ seq, start: end - 5000, end, pods: [web, api, db, idle], agent: summary(), pairs: [
      pair(peerOf(web), peerOf(api), 5, 4, 10),
      pair(peerOf(api), { ip: db.ip! }, 2, 2, 1),
      pair(peerOf(api), { ip: '192.0.2.9' }, 1, seq - 1, 100),
    ] }), NOW);
  }
  return s;
}

test('workloads: every workload of the namespace with what it received; kinds and meshed pods from the inventory', (t) => {
  const v = workloadsView(shop(), 'shop', 60_000, NOW);
  t.deepEqual(v.rows.map((r) => [r.kind, r.name, r.meshedPods, r.totalPods, r.requests, r.successes]), [
    ['deployment', 'api', 1, 1, 10, 8],
    ['deployment', 'web', 1, 1, 0, 0],
    ['job', 'cron', 0, 1, 0, 0],
  ]);
  const a = v.rows[0]!;
  t.is(v.coveredMs, 10_000);
  t.is(a.rps, 1, '10 requests over the 10 s the reports cover');
  t.is(a.successRate, 0.8);
  t.is(workloadsView(shop(), 'data', 60_000, NOW).rows[0]!.requests, 4, 'a destination resolved by IP from the inventory');
});

test('edges: traffic touching the namespace, with unknown peers folded into one external node', (t) => {
  const v = edgesView(shop(), { namespace: 'shop' }, 60_000, NOW);
  t.deepEqual(v.edges.map((e) => [`${e.src.name}>${e.dst.name}`, e.requests, e.successes]), [
    ['api>outside the mesh', 2, 1],
    ['api>db', 4, 4],
    ['web>api', 10, 8],
  ]);
  t.deepEqual(v.edges[0]!.dst, EXTERNAL);
  t.deepEqual(edgesView(shop(), { namespace: 'data' }, 60_000, NOW).edges.map((e) => `${e.src.name}>${e.dst.name}`), ['api>db']);
});

test('a workload: its inbound and outbound edges, pods with their node, histogram; null when unknown', (t) => {
  const v = workloadView(shop(), { namespace: 'shop', kind: 'deployment', name: 'api' }, 60_000, NOW)!;
  t.deepEqual(v.inbound.map((e) => e.src.name), ['web']);
  t.deepEqual(v.outbound.map((e) => e.dst.name), ['outside the mesh', 'db']);
  t.deepEqual(v.pods, [{ name: 'api-1', ip: '10.0.0.2', node: 'node-a', meshed: true }]);
  t.is(v.latency.counts.reduce((a, b) => a + b, 0), 10);
  t.is(v.latency.counts.length, v.latency.bounds.length + 1);
  t.is(v.series.length, 30);
  t.is(workloadView(shop(), { namespace: 'shop', kind: 'deployment', name: 'nope' }, 60_000, NOW), null);
  t.not(workloadView(shop(), { namespace: 'shop', kind: 'deployment', name: 'web' }, 60_000, NOW), null, 'a client with no inbound traffic still has a page');
});

test('series: a report is spread over the buckets it overlaps, so rates hold where intervals and buckets disagree', (t) => {
  const s = new WindowStore();
  // One 5 s report of 50 requests (40 ok) ending now; a 10 s window in 5 buckets of 2 s.
  s.add(report({ seq: 1, start: NOW - 5000, end: NOW, pods: [web, api], pairs: [pair(peerOf(web), peerOf(api), 50, 40)] }), NOW);
  const pts = seriesView(s, () => true, 10_000, NOW, 5);
  t.deepEqual(pts.map((p) => p.requests), [null, null, 10, 20, 20], 'the first 1 s of the report falls in the third bucket');
  t.deepEqual(pts.map((p) => p.rps), [null, null, 5, 10, 10]);
  t.deepEqual(pts.map((p) => p.successRate), [null, null, 0.8, 0.8, 0.8]);
  t.is(pts.reduce((a, p) => a + (p.requests ?? 0), 0), 50, 'nothing lost or added');
});

test('namespaces and nodes: empty store means no traffic yet; a node shows its agent summary and tap link', (t) => {
  const empty = namespacesView(new WindowStore(), 60_000, NOW);
  t.deepEqual([empty.rows, empty.nodes], [[], { live: 0, total: 0 }]);
  const s = shop();
  t.deepEqual(namespacesView(s, 60_000, NOW).rows.map((r) => [r.name, r.requests]), [['data', 4], ['shop', 10]]);
  const [n] = nodesView(s, [{ node: 'node-a' }], NOW).nodes;
  t.is(n!.tapLink, true);
  t.is(n!.meshedPods, 3);
  t.is(n!.pods, 4);
  t.is(n!.agent!.uptimeSeconds, Math.round((NOW - 1000) / 1000));
  t.is(nodesView(s, [], NOW).nodes[0]!.tapLink, false);
});

test('the agent summary in a report is validated and bounded; a report without one still parses', (t) => {
  const ok = report({ seq: 1, start: 0, end: 1, agent: summary() });
  t.deepEqual(parseReport(JSON.parse(JSON.stringify(ok))).agent, summary());
  t.is(parseReport(report({ seq: 1, start: 0, end: 1 })).agent, undefined);
  const bad = (agent: unknown) => () => parseReport({ ...report({ seq: 1, start: 0, end: 1 }), agent });
  t.throws(bad('x'), { message: /report\.agent: expected an object/ });
  t.throws(bad({ ...summary(), healthy: 'yes' }), { message: /report\.agent\.healthy/ });
  t.throws(bad({ ...summary(), reasons: Array(21).fill('r') }), { message: /report\.agent\.reasons: needs at most 20/ });
  t.throws(bad({ ...summary(), reasons: ['x'.repeat(513)] }), { message: /report\.agent\.reasons/ });
  t.throws(bad({ ...summary(), programs: [{ section: 's' }] }), { message: /report\.agent\.programs\[0\]/ });
  t.throws(bad({ ...summary(), link: { backlog: -1, backlogLimit: 1, dropped: 0, reconnects: 0 } }), { message: /report\.agent\.link\.backlog/ });
  // Identity (docs/identity.md): the node's certificates, bounded and checked.
  const identity: IdentitySummary = { trustDomain: 'cluster.local', anchorDaysLeft: 3650, certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', state: 'ready', notAfter: '2026-12-01T16:00:00.000Z' }, { identity: 'spiffe://cluster.local/ns/shop/sa/new', state: 'failing', notAfter: null }] };
  t.deepEqual(parseReport(JSON.parse(JSON.stringify(report({ seq: 1, start: 0, end: 1, agent: { ...summary(), identity } })))).agent!.identity, identity);
  t.throws(bad({ ...summary(), identity: { ...identity, certificates: Array(65).fill(identity.certificates[0]) } }), { message: /report\.agent\.identity\.certificates: needs an array of at most 64/ });
  t.throws(bad({ ...summary(), identity: { ...identity, certificates: [{ identity: 'x', state: 'odd', notAfter: null }] } }), { message: /report\.agent\.identity\.certificates\[0\]/ });
  t.throws(bad({ ...summary(), identity: { certificates: [] } }), { message: /report\.agent\.identity: needs trustDomain/ });
});

test('topology graph: every end of an edge is a node (other namespaces, outside the mesh), also before the workloads list loads', (t) => {
  const rows = workloadsView(shop(), 'shop', 60_000, NOW).rows;
  const edges = edgesView(shop(), { namespace: 'shop' }, 60_000, NOW).edges;
  for (const g of [graphOf('shop', rows, edges), graphOf('shop', [], edges)]) {
    const ids = new Set(g.nodes.map((n) => n.id));
    t.true(g.edges.every((e) => ids.has(e.from) && ids.has(e.to)), 'no edge without its nodes');
    t.deepEqual(g.edges.length, edges.length);
    const labels = g.nodes.map((n) => n.label);
    t.true(labels.includes('data/db') && labels.includes('outside the mesh'), labels.join(', '));
    t.is(g.nodes.find((n) => n.external)!.href, undefined, 'outside the mesh links nowhere');
    const l = layout([...ids], g.edges);
    t.is(l.edges.length, edges.length, 'the layout keeps every edge');
  }
  t.deepEqual(graphOf('shop', rows, []).edges, []);
  const empty = layout([], []);
  t.true(empty.width > 0 && empty.height > 0, 'an empty graph has no negative size');
});

test('layout: layers follow the calls, the same picture for any input order, no two boxes in one place, cycles end', (t) => {
  const ids = ['web', 'bot', 'emoji', 'voting', 'mailer'];
  const edges = [{ from: 'bot', to: 'web' }, { from: 'web', to: 'emoji' }, { from: 'web', to: 'voting' }, { from: 'web', to: 'mailer' }];
  const a = layout(ids, edges);
  t.deepEqual(Object.fromEntries(a.nodes.map((n) => [n.id, n.layer])), { bot: 0, emoji: 2, mailer: 2, voting: 2, web: 1 });
  t.deepEqual(layout([...ids].reverse(), [...edges].reverse()), a);
  t.is(new Set(a.nodes.map((n) => `${n.x},${n.y}`)).size, ids.length);
  t.true(a.nodes.every((n) => n.x + 160 <= a.width && n.y + 40 <= a.height));
  const web = a.nodes.find((n) => n.id === 'web')!;
  const e = a.edges.find((x) => x.to === 'emoji')!;
  t.deepEqual([e.x1, e.y1, e.back], [web.x + 160, web.y + 20, false], 'edges leave the right side of the caller');
  const cyc = layout(['a', 'b', 'c'], [{ from: 'a', to: 'b' }, { from: 'b', to: 'c' }, { from: 'c', to: 'a' }, { from: 'a', to: 'a' }]);
  t.deepEqual(cyc.nodes.map((n) => n.layer), [0, 1, 2]);
  t.deepEqual(cyc.edges.filter((x) => x.back).map((x) => `${x.from}>${x.to}`), ['c>a'], 'the edge closing the cycle points back; self-loops are dropped');
  t.deepEqual(layout([], []).nodes, []);
});

test('SSE parser: events split across chunks, comments, multi-line data; sseEvent round-trips', (t) => {
  const p = new SseParser();
  t.deepEqual(p.push(': keep-alive\n\nevent: req'), []);
  t.deepEqual(p.push('uest\ndata: {"a":1}\r\n\r\ndata: x\ndata: y\n\n'), [{ event: 'request', data: '{"a":1}' }, { event: 'message', data: 'x\ny' }]);
  t.deepEqual(new SseParser().push(sseEvent('started', { pods: 1 })), [{ event: 'started', data: '{"pods":1}' }]);
});

test('routes, colours, host check, browser opening and kubectl output', (t) => {
  t.deepEqual(parseRoute(''), { page: 'namespaces' });
  t.deepEqual(parseRoute(href.workload('ns', 'deployment', 'web')), { page: 'workload', namespace: 'ns', kind: 'deployment', name: 'web' });
  t.deepEqual(parseRoute('#/nodes'), { page: 'nodes' });
  t.is(parseRoute('#/x/y/z').page, 'unknown');
  t.deepEqual([0.99, 0.92, 0.8, null].map(successClass), ['good', 'warn', 'bad', 'none']);
  for (const h of ['127.0.0.1:8084', 'localhost:50750', '[::1]:8084', '10.1.2.3', 'mesh-agent-controller.mesh-agent.svc:8084', 'mesh-agent-controller', 'mesh-agent-controller.mesh-agent.svc.cluster.local']) t.true(hostAllowed(h), h);
  for (const h of [undefined, '', 'evil.example:8084', 'mesh-agent-controller.evil.example', '127.0.0.1.nip.io', 'mesh-agent-controller.com', 'mesh-agent-controller.io:50750']) t.false(hostAllowed(h), String(h));
  t.false(canOpenBrowser({}, 'linux'), 'headless: no display');
  t.true(canOpenBrowser({ DISPLAY: ':0' }, 'linux'));
  t.false(canOpenBrowser({}, 'win32'));
  t.is(forwardedPort('Forwarding from 127.0.0.1:50750 -> 8084'), 50750);
  t.is(forwardedPort('Forwarding from [::1]:50750 -> 8084'), null);
});

test('API parameters: unknown, repeated, missing and malformed ones are 4xx with a message saying what to send', (t) => {
  const q = (s: string) => new URLSearchParams(s);
  const err = (f: () => unknown) => {
    const e = t.throws(f, { instanceOf: ApiError })!;
    return `${(e as ApiError).status} ${e.message}`;
  };
  t.is(err(() => checkParams('/api/workloads', q('namespace=a&nmespace=b'))), '400 /api/workloads does not take "nmespace"; it takes namespace, window');
  t.is(err(() => checkParams('/api/workloads', q('namespace=a&namespace=b'))), '400 /api/workloads: "namespace" is given more than once');
  t.is(err(() => checkParams('/api/nodes', q('x=1'))), '400 /api/nodes takes no parameters (got "x")');
  t.regex(err(() => checkParams('/api/nope', q(''))), /^404 no API route \/api\/nope; the routes are/);
  t.notThrows(() => checkParams('/api/workload', q('namespace=a&kind=deploy&name=web&window=1m')));
  t.is(windowParam(q(''), 3_600_000).ms, 60_000);
  t.regex(err(() => windowParam(q('window=5x'), 3_600_000)), /^400 time window "5x": use a number and s, m or h/);
  t.regex(err(() => windowParam(q('window=2h'), 3_600_000)), /^400 time window "2h": the controller keeps 60m/);
  t.is(err(() => namespaceParam(q(''))), '400 namespace is required, e.g. ?namespace=default');
  t.regex(err(() => namespaceParam(q('namespace=Bad_NS'))), /^400 namespace "Bad_NS" is not a namespace name/);
  t.deepEqual(workloadParam(q('namespace=a&kind=deploy&name=web')), { namespace: 'a', kind: 'deployment', name: 'web' });
  t.regex(err(() => workloadParam(q('namespace=a&kind=widget&name=web'))), /^400 unknown resource type "widget"/);
  t.regex(err(() => workloadParam(q('namespace=a&kind=ns&name=web'))), /^400 kind namespace is not a workload/);
  t.regex(err(() => workloadParam(q('namespace=a&kind=deploy'))), /^400 name is required/);
  t.regex(err(() => workloadParam(q('namespace=a&kind=deploy&name=../x'))), /^400 name "..\/x" is not a deployment name/);
  const tap = tapParams(q('namespace=a&resource=deploy/web&method=get&path=/api'));
  t.deepEqual([tap.maxRps, tap.method, tap.path], [100, 'GET', '/api'], 'the CLI\'s default --max-rps');
  t.is(tapParams(q(`namespace=a&resource=deploy/web&maxRps=${MAX_TAP_RPS}`)).maxRps, MAX_TAP_RPS);
  t.regex(err(() => tapParams(q(`namespace=a&resource=deploy/web&maxRps=${MAX_TAP_RPS + 1}`))), /^400 maxRps: needs a number in \(0, 10000\]/);
  t.regex(err(() => tapParams(q('namespace=a&resource=deploy/web&maxRps=-1'))), /^400 maxRps/);
  t.regex(err(() => tapParams(q('namespace=a&resource=deploy/web&path=api'))), /^400 path: needs a prefix starting with \//);
  t.regex(err(() => tapParams(q('namespace=a&resource=deploy/web&method=G%20T'))), /^400 method/);
  t.regex(err(() => tapParams(q('namespace=a'))), /^400 resource is required/);
  t.regex(err(() => tapParams(q('namespace=a&resource=deploy/web&toNamespace=B!'))), /^400 toNamespace "B!"/);
});

test('with inbound capture, a pair is seen from both ends: rows count the server side, edges the client side and servers\' known clients', (t) => {
  const s = new WindowStore();
  const ingress = pod('edge', 'ingress', '10.0.0.9', { meshed: false });
  // Node a: web's client side of web -> api (api is on node b). Node b: the server side of the
  // same requests (from node a's address, until mTLS carries the client) and of an unmeshed
  // ingress pod's requests, which no other agent sees.
  s.add(report({ node: 'a', agentId: 'a', seq: 1, start: NOW - 5000, end: NOW, pods: [web, ingress], pairs: [pair(peerOf(web), peerOf(api), 10, 9, 5, { side: 'client' })] }), NOW);
  s.add(report({ node: 'b', agentId: 'b', seq: 1, start: NOW - 5000, end: NOW, pods: [api], pairs: [
    pair({ ip: '10.244.0.1' }, peerOf(api), 10, 9, 5, { side: 'server' }),
    pair(peerOf(ingress), peerOf(api), 3, 3, 5, { side: 'server' }),
  ] }), NOW);
  const rows = workloadsView(s, 'shop', 60_000, NOW).rows.find((r) => r.name === 'api')!;
  t.is(rows.requests, 13, 'each request once: the destination\'s agent counts them all, unmeshed clients included');
  const edges = edgesView(s, { namespace: 'shop' }, 60_000, NOW).edges.map((e) => `${e.src.name}>${e.dst.name}:${e.requests}`);
  t.deepEqual(edges, ['ingress>api:3', 'web>api:10'], 'the meshed client\'s edge from its own agent; the node address is no edge');
  t.deepEqual(parseReport(JSON.parse(JSON.stringify(report({ seq: 1, start: 0, end: 1, pairs: [pair(peerOf(web), peerOf(api), 1, 1, 5, { side: 'server' })] })))).pairs[0]!.side, 'server');
  t.throws(() => parseReport({ ...report({ seq: 1, start: 0, end: 1, pairs: [pair(peerOf(web), peerOf(api), 1, 1)] }), pairs: [{ ...pair(peerOf(web), peerOf(api), 1, 1), side: 'both' }] }), { message: /report.pairs\[0\].side: must be "client", "server" or absent/ });
});
