// One HTTPRoute match, two enforcers: the router (a Gateway API HTTPRoute on a Service,
// gateway-api.ts -> route-table.ts) and the inbound policy (the same match on a Linkerd HTTPRoute
// parented by a Server, linkerd-policy.ts -> authorize.ts). Each request is a real HTTP/1 head,
// read by the forwarders' own readers (Http1RouteRequest for the route, headerValue for the
// policy, as connection.ts does), so a header sent twice reaches both as it would in the proxy;
// or HTTP/2 headers as node:http2 gives them, read as the HTTP/2 forwarders do (H2RouteRequest,
// requestHeader as handler.ts asks the policy).
import test from 'ava';
import { routeFromGateway } from '../src/routing/gateway-api.ts';
import { findRoute, ParentPolicy } from '../src/routing/route-table.ts';
import { policyFromAnnotations } from '../src/routing/linkerd-annotations.ts';
import type * as http2 from 'node:http2';
import { headerValue, Http1RouteRequest } from '../src/proxy/http1/route-request.ts';
import { H2RouteRequest } from '../src/proxy/http2/routed-stream.ts';
import { headerString, requestHeader } from '../src/proxy/http2/headers.ts';
import type { RouteRequest } from '../src/routing/route-match.ts';
import { serverFromLinkerd, type LinkerdLookup } from '../src/policy/linkerd-policy.ts';
import { serversForPod } from '../src/policy/server-model.ts';
import { ServerPolicy } from '../src/policy/authorize.ts';
import { DEFAULT_CLUSTER_NETWORKS, parseNetworks } from '../src/policy/model.ts';
import { parseMessage } from '../src/discovery/model.ts';

type Obj = Record<string, any>;
const client = { ip: '10.244.1.5', identity: { namespace: 'shop', serviceAccount: 'web' } };

/** The router's answer: does a Service's HTTPRoute with this one match take the request? */
function routerTakes(match: Obj): (head: Head | H2Head) => boolean {
  const conv = routeFromGateway({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'shop', name: 'r', creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: { parentRefs: [{ kind: 'Service', name: 'api', port: 80 }], rules: [{ matches: [match] }] },
  }, () => ({ ports: [80] }));
  if (conv.record === null) throw new Error(conv.problems.join('; '));
  const table = new ParentPolicy({ namespace: 'shop', name: 'api', port: 80 }, policyFromAnnotations({}, { kind: 'Service', namespace: 'shop', name: 'api' }), [conv.record]).forClient('shop');
  const rreq = new Http1RouteRequest();
  return (h) => {
    let req: RouteRequest;
    if ('buf' in h) req = (rreq.set(h.method, h.target, h.buf, 0, h.buf.length), rreq);
    else req = new H2RouteRequest(h.h2);
    return findRoute(table, req, false) !== null;
  };
}

/** The policy's answer: does an AuthorizationPolicy on a Linkerd HTTPRoute with this one match allow the request? */
function policyAllows(match: Obj): (head: Head | H2Head) => boolean {
  const objs: Obj[] = [
    { apiVersion: 'policy.linkerd.io/v1beta3', kind: 'Server', metadata: { namespace: 'shop', name: 'api' }, spec: { podSelector: {}, port: 8080 } },
    { apiVersion: 'policy.linkerd.io/v1beta3', kind: 'HTTPRoute', metadata: { namespace: 'shop', name: 'r' }, spec: { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api' }], rules: [{ matches: [match] }] } },
    { apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { namespace: 'shop', name: 'a' }, spec: { targetRef: { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'r' }, requiredAuthenticationRefs: [] } },
  ];
  const lookup: LinkerdLookup = {
    get: (kind, ns, name) => objs.find((o) => o.kind === kind && o.metadata.namespace === ns && o.metadata.name === name),
    list: (kind, ns) => objs.filter((o) => o.kind === kind && o.metadata.namespace === ns),
  };
  const conv = serverFromLinkerd(objs[0]!, lookup);
  if (conv.record === null || conv.problems.length > 0) throw new Error(conv.problems.join('; '));
  // As an agent gets it: through a discovery line.
  const m = parseMessage(JSON.stringify({ type: 'access', op: 'set', access: conv.record }));
  if (m.type !== 'access' || m.op !== 'set' || !('kind' in m.access)) throw new Error('not a Server record');
  const policy = new ServerPolicy({ namespace: 'shop', pod: 'api-0', serviceAccount: 'api', defaultPolicy: 'all-unauthenticated', defaultFrom: 'test', targets: [], servers: serversForPod([m.access], { labels: {} }) }, parseNetworks(DEFAULT_CLUSTER_NETWORKS));
  return (h) => policy.request(client, 8080, 'buf' in h
    ? { method: h.method, target: h.target, header: (n) => headerValue(h.buf, 0, h.buf.length, n) }
    : { method: headerString(h.h2[':method']), target: headerString(h.h2[':path']), header: (n) => requestHeader(h.h2, n) }).allowed;
}

interface Head {
  method: string;
  target: string;
  buf: Buffer;
}

/** HTTP/2 request headers as node:http2 hands them over (a repeated field as an array). */
interface H2Head {
  h2: http2.IncomingHttpHeaders;
}

/** An HTTP/1 request head with these header lines (a name may repeat), as it arrives. */
function head(method: string, target: string, lines: Array<[string, string]> = []): Head {
  const text = `${method} ${target} HTTP/1.1\r\nhost: api\r\n${lines.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
  return { method, target, buf: Buffer.from(text, 'latin1') };
}

const GET = (target: string, lines: Array<[string, string]> = []) => head('GET', target, lines);

/** [what, the match as an HTTPRoute writes it, [request, matched?]...] */
const table: Array<[string, Obj, Array<[Head, boolean]>]> = [
  ['PathPrefix /a is element-wise', { path: { type: 'PathPrefix', value: '/a' } }, [[GET('/a'), true], [GET('/a/'), true], [GET('/a/b'), true], [GET('/ab'), false], [GET('/a?x=1'), true], [GET('/'), false]]],
  ['PathPrefix /a/ is /a', { path: { type: 'PathPrefix', value: '/a/' } }, [[GET('/a'), true], [GET('/a/'), true], [GET('/a/b'), true], [GET('/ab'), false]]],
  ['Exact with a trailing slash is that path only', { path: { type: 'Exact', value: '/a/' } }, [[GET('/a/'), true], [GET('/a'), false], [GET('/a/b'), false]]],
  ['Exact without one', { path: { type: 'Exact', value: '/a' } }, [[GET('/a'), true], [GET('/a/'), false], [GET('/a?q'), true]]],
  ['RegularExpression is anchored at both ends', { path: { type: 'RegularExpression', value: '/[0-9]+' } }, [[GET('/12'), true], [GET('/12/x'), false], [GET('/x/12'), false]]],
  ['an alternation is anchored whole', { path: { type: 'RegularExpression', value: '/a|/b' } }, [[GET('/a'), true], [GET('/b'), true], [GET('/ab'), false], [GET('/x/b'), false]]],
  ['a header name in any case; its value exact', { headers: [{ name: 'X-User', value: 'alice' }] }, [[GET('/', [['x-user', 'alice']]), true], [GET('/', [['X-USER', 'alice']]), true], [GET('/', [['x-user', 'Alice']]), false], [GET('/'), false]]],
  ['a header regex is anchored', { headers: [{ name: 'x-user', type: 'RegularExpression', value: 'b' }] }, [[GET('/', [['x-user', 'b']]), true], [GET('/', [['x-user', 'abc']]), false]]],
  ['a header sent twice is its values joined', { headers: [{ name: 'x-role', value: 'a' }] }, [[GET('/', [['x-role', 'a']]), true], [GET('/', [['x-role', 'a'], ['x-role', 'b']]), false]]],
  ['a regex can take one of several values', { headers: [{ name: 'x-role', type: 'RegularExpression', value: '(.*, )?b(, .*)?' }] }, [[GET('/', [['x-role', 'a'], ['x-role', 'b']]), true], [GET('/', [['x-role', 'a'], ['x-role', 'bb']]), false]]],
  ['of two entries naming one header, the first counts (Gateway API)', { headers: [{ name: 'x-a', value: '1' }, { name: 'X-A', value: '2' }] }, [[GET('/', [['x-a', '1']]), true], [GET('/', [['x-a', '2']]), false]]],
  ['a method', { method: 'POST', path: { type: 'PathPrefix', value: '/a' } }, [[head('POST', '/a/b'), true], [GET('/a/b'), false]]],
  ['query parameters: the first value, percent-decoded, names case-sensitive', { queryParams: [{ name: 'role', value: 'reader' }, { name: 'id', type: 'RegularExpression', value: '[0-9]+' }] }, [
    [GET('/?role=reader&id=12'), true], [GET('/?id=12&r%6Fle=reader'), true], [GET('/?role=reader&role=admin&id=1'), true],
    [GET('/?role=admin&role=reader&id=1'), false], [GET('/?Role=reader&id=12'), false], [GET('/?role=reader&id=12x'), false], [GET('/?role=reader'), false], [GET('/'), false],
  ]],
];

for (const [what, match, cases] of table) {
  test(`policy and router agree: ${what}`, (t) => {
    const routed = routerTakes(match);
    const allowed = policyAllows(match);
    for (const [h, want] of cases) {
      const req = h.buf.toString('latin1').split('\r\n').slice(0, -2).join(' | ');
      t.is(routed(h), want, `router: ${req}`);
      t.is(allowed(h), want, `policy: ${req}`);
    }
  });
}

test('the one difference, on purpose: the policy judges the normalized path (what the pod serves), the router the path as sent (what it sends on)', (t) => {
  const match = { path: { type: 'PathPrefix', value: '/admin' } };
  const h = GET('/public/../admin/x');
  t.false(routerTakes(match)(h), 'the router sends /public/../admin/x on as written: not under /admin');
  t.true(policyAllows(match)(h), 'the pod serves /admin/x: the policy judges that');
  const pub = { path: { type: 'PathPrefix', value: '/public' } };
  t.true(routerTakes(pub)(h));
  t.false(policyAllows(pub)(h), 'a route for /public does not let /public/../admin through the policy');
});

const h2 = (fields: Record<string, string | string[]>): H2Head => ({ h2: { ':method': 'GET', ':path': '/', ':scheme': 'http', ':authority': 'api', ...fields } });

test('policy and router agree on HTTP/2 headers too: an empty value is present, a repeated one is joined as in HTTP/1, host is :authority', (t) => {
  const cases: Array<[Obj, H2Head, boolean]> = [
    [{ headers: [{ name: 'x-a', type: 'RegularExpression', value: '.*' }] }, h2({ 'x-a': '' }), true],
    [{ headers: [{ name: 'x-a', type: 'RegularExpression', value: '.*' }] }, h2({}), false],
    [{ headers: [{ name: 'x-role', value: 'a, b' }] }, h2({ 'x-role': ['a', 'b'] }), true],
    [{ headers: [{ name: 'host', value: 'api' }] }, h2({ host: 'other' }), true],
    [{ headers: [{ name: 'host', value: 'other' }] }, h2({ host: 'other' }), false],
  ];
  for (const [match, h, want] of cases) {
    const what = `${JSON.stringify(match.headers)} on ${JSON.stringify(h.h2)}`;
    t.is(routerTakes(match)(h), want, `router: ${what}`);
    t.is(policyAllows(match)(h), want, `policy: ${what}`);
  }
});
