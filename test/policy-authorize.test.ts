// The inbound policy's pure core, table by table (as ztunnel's rbac tests): Linkerd's default
// policies, SMI TrafficTarget conversion (HTTPRouteGroup and TCPRoute resolved, bad objects
// refused with the reason), the record parser, and authorize per connection and per request.
import test from 'ava';
import {
  DEFAULT_CLUSTER_NETWORKS, DEFAULT_POLICIES, inNetworks, parseAccessRecord, parseDefaultPolicy, parseNetworks, parseSpiffeId, spiffeId,
  type AccessRecord, type DefaultPolicy, type Identity,
} from '../src/policy/model.ts';
import { accessFromTrafficTarget, type RouteObjectLookup } from '../src/policy/smi-access.ts';
import { pathOfTarget, ServerPolicy, type Client, type PolicySpec } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { normalizePath } from '../src/policy/normalize-path.ts';

const nets = parseNetworks(DEFAULT_CLUSTER_NETWORKS);
const web: Identity = { namespace: 'shop', serviceAccount: 'web' };
const bot: Identity = { namespace: 'shop', serviceAccount: 'bot' };
const meshed = (id: Identity, ip = '10.244.1.5'): Client => ({ ip, identity: id });
const plain = (ip = '10.244.1.9'): Client => ({ ip, identity: null });
const spec = (defaultPolicy: DefaultPolicy, targets: AccessRecord[] = []): PolicySpec => ({ namespace: 'shop', pod: 'api-1', serviceAccount: 'api', defaultPolicy, defaultFrom: 'test', targets });

test('default policy values are Linkerd\'s; anything else is refused with the list', (t) => {
  for (const v of DEFAULT_POLICIES) t.is(parseDefaultPolicy(v), v);
  t.is(parseDefaultPolicy(' deny '), 'deny');
  const e = t.throws(() => parseDefaultPolicy('allow-all', 'pod shop/api annotation'));
  t.regex(e!.message, /pod shop\/api annotation: "allow-all" is not a policy; use one of all-unauthenticated, all-authenticated/);
});

test('networks and identities', (t) => {
  t.true(inNetworks('10.244.3.4', nets));
  t.true(inNetworks('::ffff:192.168.1.1', nets));
  t.true(inNetworks('::FFFF:192.168.1.1', nets));
  t.false(inNetworks('8.8.8.8', nets));
  t.false(inNetworks('not-an-ip', nets));
  t.deepEqual(parseNetworks('10.1.0.0/16, fd00::/8,1.2.3.4').map((c) => c.text), ['10.1.0.0/16', '1.2.3.4/32'], 'IPv6 skipped, a bare address is a /32');
  t.throws(() => parseNetworks('10.0.0.0/33'), { message: /not an IPv4 network; write it as 10.0.0.0\/8/ });
  t.is(spiffeId(web), 'spiffe://cluster.local/ns/shop/sa/web');
  t.deepEqual(parseSpiffeId('spiffe://example.org/ns/shop/sa/web'), web);
  t.is(parseSpiffeId('spiffe://x/ns/shop'), null);
});

const defaults: Array<[DefaultPolicy, Client, 'allow' | 'deny']> = [
  ['all-unauthenticated', plain(), 'allow'],
  ['all-unauthenticated', plain('8.8.8.8'), 'allow'],
  ['all-authenticated', plain(), 'deny'],
  ['all-authenticated', meshed(web, '8.8.8.8'), 'allow'],
  ['cluster-authenticated', meshed(web), 'allow'],
  ['cluster-authenticated', meshed(web, '8.8.8.8'), 'deny'],
  ['cluster-authenticated', plain(), 'deny'],
  ['cluster-unauthenticated', plain(), 'allow'],
  ['cluster-unauthenticated', plain('8.8.8.8'), 'deny'],
  ['deny', meshed(web), 'deny'],
  ['audit', plain('8.8.8.8'), 'allow'],
  ['audit', meshed(web), 'allow'],
];
for (const [p, c, want] of defaults) {
  test(`default ${p}: ${c.identity ? 'meshed' : 'unmeshed'} client from ${c.ip} -> ${want}`, (t) => {
    const sp = new ServerPolicy(spec(p), nets);
    const d = sp.connection(c, 8080);
    t.is(d.verdict, want);
    t.deepEqual(d.server, { group: '', kind: 'default', name: p, port: 8080 });
    if (d.verdict === 'allow') t.deepEqual(d.authz, { group: '', kind: 'default', name: p });
    if (d.verdict === 'deny') t.true(d.reason.startsWith(`${p}: `), d.reason);
    t.is(sp.failsClosed, p !== 'all-unauthenticated' && p !== 'audit', 'every policy but all-unauthenticated and audit (which denies no one) fails closed');
    const r = sp.request(c, 8080, { method: 'GET', target: '/', header: () => undefined });
    t.is(r.allowed, want === 'allow', 'requests follow the connection under a default policy');
  });
}

// ---- SMI ----

const groups: Record<string, object> = {
  'HTTPRouteGroup/shop/api-routes': {
    apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'HTTPRouteGroup', metadata: { namespace: 'shop', name: 'api-routes' },
    spec: { matches: [
      { name: 'ok', pathRegex: '/ok', methods: ['GET'] },
      { name: 'metrics', pathRegex: '/metrics', methods: ['*'], headers: { 'X-Scrape': 'yes|true' } },
    ] },
  },
  'TCPRoute/shop/db': { apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'TCPRoute', metadata: { namespace: 'shop', name: 'db' }, spec: { matches: { ports: [5432] } } },
  'TCPRoute/shop/any': { apiVersion: 'specs.smi-spec.io/v1alpha4', kind: 'TCPRoute', metadata: { namespace: 'shop', name: 'any' }, spec: {} },
};
const lookup: RouteObjectLookup = (kind, ns, name) => groups[`${kind}/${ns}/${name}`] as any;

function target(name: string, specBody: object): any {
  return { apiVersion: 'access.smi-spec.io/v1alpha3', kind: 'TrafficTarget', metadata: { namespace: 'shop', name }, spec: specBody };
}

const apiDest = { kind: 'ServiceAccount', name: 'api', namespace: 'shop' };
const webSource = [{ kind: 'ServiceAccount', name: 'web', namespace: 'shop' }];

test('TrafficTarget: converted with its HTTPRouteGroup matches and TCPRoute ports resolved', (t) => {
  const c = accessFromTrafficTarget(target('web-to-api', {
    destination: { ...apiDest, port: 8080 },
    sources: webSource,
    rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes', matches: ['ok'] }, { kind: 'TCPRoute', name: 'db' }],
  }), lookup);
  t.deepEqual(c.problems, []);
  t.deepEqual(c.reads, ['HTTPRouteGroup/shop/api-routes', 'TCPRoute/shop/db']);
  t.deepEqual(c.record, {
    namespace: 'shop', name: 'web-to-api',
    destination: { serviceAccount: 'api', namespace: 'shop', port: 8080 },
    sources: [web],
    rules: [
      { kind: 'HTTPRouteGroup', name: 'api-routes', matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] },
      { kind: 'TCPRoute', name: 'db', ports: [5432] },
    ],
  });
  t.deepEqual(parseAccessRecord(JSON.parse(JSON.stringify(c.record))), c.record, 'the record survives the stream');
  const all = accessFromTrafficTarget(target('all', { destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes' }] }), lookup);
  t.deepEqual((all.record!.rules[0] as any).matches.map((m: any) => m.name), ['ok', 'metrics'], 'no matches named: all of the group');
  t.deepEqual((all.record!.rules[0] as any).matches[1].headers, [{ name: 'x-scrape', regex: 'yes|true' }]);
  t.is((all.record!.rules[0] as any).matches[1].methods, undefined, '"*" is any method');
});

const badTargets: Array<[string, object, RegExp]> = [
  ['a missing HTTPRouteGroup', { destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'nope' }] }, /spec.rules\[0\]: HTTPRouteGroup shop\/nope not found/],
  ['a match the group lacks', { destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes', matches: ['admin'] }] }, /has no match named "admin" \(it has ok, metrics\)/],
  ['no sources', { destination: apiDest, sources: [], rules: [{ kind: 'TCPRoute', name: 'any' }] }, /spec.sources: expected at least one ServiceAccount/],
  ['no rules', { destination: apiDest, sources: webSource }, /spec.rules: expected at least one HTTPRouteGroup or TCPRoute/],
  ['another namespace\'s destination', { destination: { ...apiDest, namespace: 'other' }, sources: webSource, rules: [{ kind: 'TCPRoute', name: 'any' }] }, /is not the TrafficTarget's namespace shop/],
  ['a Group source', { destination: apiDest, sources: [{ kind: 'Group', name: 'x' }], rules: [{ kind: 'TCPRoute', name: 'any' }] }, /spec.sources\[0\].kind: "Group" is not supported; only ServiceAccount/],
  ['an UDPRoute rule', { destination: apiDest, sources: webSource, rules: [{ kind: 'UDPRoute', name: 'x' }] }, /"UDPRoute" is not supported; use HTTPRouteGroup or TCPRoute/],
  ['a bad port', { destination: { ...apiDest, port: 70000 }, sources: webSource, rules: [{ kind: 'TCPRoute', name: 'any' }] }, /spec.destination.port: 70000 is not a port/],
];
for (const [what, body, re] of badTargets) {
  test(`TrafficTarget with ${what}: not accepted, with the reason`, (t) => {
    const c = accessFromTrafficTarget(target('bad', body), lookup);
    t.is(c.record, null);
    t.is(c.problems.length, 1);
    t.regex(c.problems[0]!, /^TrafficTarget shop\/bad: not accepted: /);
    t.regex(c.problems[0]!, re);
  });
}

test('an HTTPRouteGroup with a broken regular expression refuses the TrafficTarget that reads it', (t) => {
  const broken: RouteObjectLookup = (kind, ns, name) => (kind === 'HTTPRouteGroup' ? { spec: { matches: [{ name: 'x', pathRegex: '(' }] } } : lookup(kind, ns, name));
  const c = accessFromTrafficTarget(target('t', { destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'g' }] }), broken);
  t.is(c.record, null);
  t.regex(c.problems[0]!, /HTTPRouteGroup shop\/g.spec.matches\[0\].pathRegex: not a regular expression/);
});

function smi(...bodies: object[]): ServerPolicy {
  const recs = bodies.map((b, i) => {
    const c = accessFromTrafficTarget(target(`t${i}`, b), lookup);
    if (!c.record) throw new Error(c.problems.join('; '));
    return c.record;
  });
  return new ServerPolicy(spec('all-unauthenticated', recs), nets);
}
const req = (method: string, tgt: string, headers: Record<string, string> = {}) => ({ method, target: tgt, header: (n: string) => headers[n] });

test('SMI: once a TrafficTarget selects the ServiceAccount, only its sources pass, even under all-unauthenticated', (t) => {
  const p = smi({ destination: apiDest, sources: webSource, rules: [{ kind: 'TCPRoute', name: 'any' }] });
  t.is(p.mode, 'smi');
  t.true(p.failsClosed, 'a pod selected by a TrafficTarget fails closed');
  const ok = p.connection(meshed(web), 8080);
  t.is(ok.verdict, 'allow');
  t.deepEqual(ok.verdict === 'allow' && ok.authz, { group: 'access.smi-spec.io', kind: 'traffictarget', name: 't0' });
  t.deepEqual(ok.server, { group: '', kind: 'serviceaccount', name: 'api', port: 8080 });
  const other = p.connection(meshed(bot), 8080);
  t.is(other.verdict, 'deny');
  t.regex(other.verdict === 'deny' ? other.reason : '', /no TrafficTarget of ServiceAccount shop\/api on port 8080 allows spiffe:\/\/cluster.local\/ns\/shop\/sa\/bot/);
  const anon = p.connection(plain(), 8080);
  t.is(anon.verdict, 'deny');
  t.regex(anon.verdict === 'deny' ? anon.reason : '', /allow ServiceAccounts only; 10.244.1.9 has no mesh identity/);
});

test('SMI: destination port and TCPRoute ports narrow what passes', (t) => {
  const p = smi(
    { destination: { ...apiDest, port: 5432 }, sources: webSource, rules: [{ kind: 'TCPRoute', name: 'db' }] },
  );
  t.is(p.connection(meshed(web), 5432).verdict, 'allow');
  const wrong = p.connection(meshed(web), 8080);
  t.is(wrong.verdict, 'deny');
  t.regex(wrong.verdict === 'deny' ? wrong.reason : '', /no TrafficTarget of ServiceAccount shop\/api covers port 8080/);
  const q = smi({ destination: apiDest, sources: webSource, rules: [{ kind: 'TCPRoute', name: 'db' }] });
  t.is(q.connection(meshed(web), 5432).verdict, 'allow');
  t.is(q.connection(meshed(web), 6379).verdict, 'deny', 'a TCPRoute allows its ports only');
});

test('a connection\'s requests reuse its decision: the policy decides the connection once, and each request as the pure request() does', (t) => {
  const p = smi({ destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes' }] });
  let decided = 0;
  const connection = p.connection.bind(p);
  p.connection = (c, port) => {
    decided++;
    return connection(c, port);
  };
  const denials: string[] = [];
  const az = new PolicyConnAuthz(p, meshed(web), 8080, (r) => denials.push(r));
  t.is(az.verdict, 'http');
  const asked = [req('GET', '/ok'), req('POST', '/ok'), req('DELETE', '/metrics', { 'x-scrape': 'true' }), req('GET', '/okay')];
  const outcomes = asked.map((r) => az.request(r.method, r.target, r.header));
  t.is(decided, 1, 'once, when the connection was accepted');
  t.deepEqual(outcomes.map((o) => o.allowed), [true, false, true, false]);
  t.deepEqual(outcomes.map((o) => o.route?.name), ['api-routes', 'default', 'api-routes', 'default']);
  t.is(denials.length, 2);
  for (const [i, r] of asked.entries()) {
    const pure = p.request(meshed(web), 8080, r);
    t.is(outcomes[i]!.allowed, pure.allowed, `${r.method} ${r.target} as the pure request()`);
  }
  const whole = new PolicyConnAuthz(new ServerPolicy(spec('all-unauthenticated'), nets), plain(), 8080, () => t.fail());
  t.deepEqual(whole.request('GET', '/', req('GET', '/').header), { allowed: true, server: { group: '', kind: 'default', name: 'all-unauthenticated', port: 8080 }, authz: { group: '', kind: 'default', name: 'all-unauthenticated' }, route: { group: '', kind: 'default', name: 'default' } });
});

test('a connection whose decision is whole answers every request with one frozen outcome, the pure requestOn()\'s; a denied one still reports each request', (t) => {
  const allowP = new ServerPolicy(spec('all-unauthenticated'), nets);
  const allow = new PolicyConnAuthz(allowP, plain(), 8080, () => t.fail());
  const first = allow.request('GET', '/a', req('GET', '/a').header);
  t.is(allow.request('POST', '/b', req('POST', '/b').header), first, 'no allocation per request: the same object');
  t.true(Object.isFrozen(first), 'shared, so nobody may change it');
  t.deepEqual(first, allowP.requestOn(allowP.connection(plain(), 8080), plain(), req('GET', '/a')) as object, 'what the policy decides, with the default route');
  const denials: string[] = [];
  const denyP = new ServerPolicy(spec('deny'), nets);
  const deny = new PolicyConnAuthz(denyP, plain(), 8080, (r) => denials.push(r));
  const d1 = deny.request('GET', '/a', req('GET', '/a').header);
  const d2 = deny.request('GET', '/b', req('GET', '/b').header);
  t.is(d2, d1);
  t.true(Object.isFrozen(d1));
  const pure = denyP.requestOn(denyP.connection(plain(), 8080), plain(), req('GET', '/a'));
  t.deepEqual(d1, { allowed: false, server: pure.server, route: pure.route });
  t.deepEqual(denials, [!pure.allowed ? pure.reason : '', !pure.allowed ? pure.reason : ''], 'each denied request is reported (logged once per client and server by onDeny)');
});

test('SMI: HTTPRouteGroup rules decide per request: GET /ok passes, POST /ok and GET /okay do not; headers match whole values', (t) => {
  const p = smi({ destination: apiDest, sources: webSource, rules: [{ kind: 'HTTPRouteGroup', name: 'api-routes' }] });
  t.is(p.connection(meshed(web), 8080).verdict, 'http');
  const get = p.request(meshed(web), 8080, req('GET', '/ok?x=1'));
  t.true(get.allowed);
  t.deepEqual(get.allowed && get.route, { group: 'specs.smi-spec.io', kind: 'httproutegroup', name: 'api-routes' });
  const post = p.request(meshed(web), 8080, req('POST', '/ok'));
  t.false(post.allowed);
  t.regex(!post.allowed ? post.reason : '', /no HTTPRouteGroup match of t0 allows POST \/ok for spiffe:\/\/cluster.local\/ns\/shop\/sa\/web/);
  t.false(p.request(meshed(web), 8080, req('GET', '/okay')).allowed, 'the path regex covers the whole path');
  t.true(p.request(meshed(web), 8080, req('GET', 'http://api.shop:8080/ok')).allowed, 'absolute-form targets match by their path');
  t.true(p.request(meshed(web), 8080, req('DELETE', '/metrics', { 'x-scrape': 'true' })).allowed, 'any method, header matched');
  t.false(p.request(meshed(web), 8080, req('GET', '/metrics', { 'x-scrape': 'truest' })).allowed, 'a header regex covers the whole value');
  t.false(p.request(meshed(web), 8080, req('GET', '/metrics')).allowed, 'a missing header does not match');
  t.false(p.request(meshed(bot), 8080, req('GET', '/ok')).allowed, 'another ServiceAccount gets nothing');
});

// The path is judged as the pod will resolve it (RFC 3986: unreserved escapes decoded, dot segments
// removed; Istio's BASE normalization): a rule for /public/.* must not allow /public/../admin,
// which the pod serves as /admin. Fails on a policy that matched the path as sent.
test('SMI: a path regex decides on the normalized path: /public/../admin and its escaped forms are /admin; an absolute-form target without a path is /', (t) => {
  const p = new ServerPolicy(spec('all-unauthenticated', [{
    namespace: 'shop', name: 'public', destination: { serviceAccount: 'api', namespace: 'shop', port: 8080 }, sources: [web],
    rules: [{ kind: 'HTTPRouteGroup', name: 'g', matches: [{ name: 'public', pathRegex: '/public/.*' }, { name: 'dir', pathRegex: '/dir/' }] }],
  }]), nets);
  for (const path of ['/public/../admin', '/public/%2e%2e/admin', '/public/%2E%2E/admin', '/public/./../admin', '/public/a/../../admin?x=1', 'http://api.shop/public/../admin']) {
    const d = p.request(meshed(web), 8080, req('GET', path));
    t.false(d.allowed, path);
    t.regex(!d.allowed ? d.reason : '', /allows GET \/admin for/, `${path}: judged as /admin`);
  }
  for (const path of ['/public/a', '/public/a/./b', '/public/a/../b', '/public/%7Euser', '/public/a%2F..%2Fb', '/dir/.', '/dir/x/..']) t.true(p.request(meshed(web), 8080, req('GET', path)).allowed, path);
  // Absolute-form with no path: the pod serves "/", whatever path-like text the query or fragment holds.
  for (const path of ['http://api.shop?x=/public/a', 'http://api.shop:8080?/public/a', 'http://api.shop#/public/a']) {
    const d = p.request(meshed(web), 8080, req('GET', path));
    t.false(d.allowed, path);
    t.regex(!d.allowed ? d.reason : '', /allows GET \/ for/, `${path}: judged as /`);
  }
});

test('normalizePath', (t) => {
  for (const [path, want] of [
    ['/a/b', '/a/b'], ['/a/./b', '/a/b'], ['/a/.', '/a/'], ['/a/..', '/'], ['/..', '/'], ['/../../x', '/x'], ['/a/b/../../../c', '/c'],
    ['/a/..b/c', '/a/..b/c'], ['/a/.b', '/a/.b'], ['/file.txt', '/file.txt'], ['/a/%2e/b', '/a/b'], ['/%7Euser', '/~user'],
    ['/a%20b', '/a%20b'], ['/a%2Fb/../c', '/c'], ['/a//../b', '/a/b'], ['/', '/'], ['/a/b/', '/a/b/'], ['*', '*'],
  ]) t.is(normalizePath(path!), want, path);
});

test('pathOfTarget', (t) => {
  t.is(pathOfTarget('/a/b?c#d'), '/a/b');
  t.is(pathOfTarget('http://h:1/x?y'), '/x');
  t.is(pathOfTarget('http://h:1'), '/');
  t.is(pathOfTarget('*'), '*');
  // The authority ends at the first "/", "?" or "#" (RFC 3986 3.2): the pod serves "/" for these,
  // so a policy must not judge them by a path-like query or fragment.
  t.is(pathOfTarget('http://h?x=/public/a'), '/');
  t.is(pathOfTarget('http://h:1?x=/public/a/b'), '/');
  t.is(pathOfTarget('http://h#/public/a'), '/');
  t.is(pathOfTarget('http://h:1/x#/y'), '/x');
});

test('the access record parser names the field', (t) => {
  t.throws(() => parseAccessRecord({ namespace: 'shop', name: 't', destination: { serviceAccount: 'api', namespace: 'shop' }, sources: [{ namespace: 'shop' }], rules: [] }), { message: /TrafficTarget shop\/t: sources\[0\].serviceAccount: expected a Kubernetes name/ });
  t.throws(() => parseAccessRecord({ namespace: 'shop', name: 't', destination: { serviceAccount: 'api', namespace: 'shop' }, sources: [], rules: [{ kind: 'HTTPRouteGroup', name: 'g', matches: [{ name: 'm', pathRegex: '(' }] }] }), { message: /rules\[0\].matches\[0\].pathRegex: not a regular expression/ });
});

test('health: a capture that failed names the pods whose policies go unenforced; a TrafficTarget kept in its last good version is said', async (t) => {
  const { inboundHealth } = await import('../src/agent/health.ts');
  const { renderInbound } = await import('../src/cli/status.ts');
  const pods = [
    { namespace: 'shop', name: 'api', serviceAccount: 'api', defaultPolicy: 'all-authenticated', defaultFrom: 'cluster default', mode: 'default', failsClosed: true, trafficTargets: [], problems: [] },
    { namespace: 'shop', name: 'db', serviceAccount: 'db', defaultPolicy: 'all-unauthenticated', defaultFrom: 'cluster default', mode: 'smi', failsClosed: true, trafficTargets: ['t'], problems: ['TrafficTarget shop/t: not accepted: x'] },
    { namespace: 'shop', name: 'web', serviceAccount: 'web', defaultPolicy: 'all-unauthenticated', defaultFrom: 'cluster default', mode: 'default', failsClosed: false, trafficTargets: [], problems: [] },
  ];
  const failed = { capture: 'capturing', listen: '10.0.0.1:15006', defaultPolicy: 'all-unauthenticated', error: 'applying the inbound capture table failed (exit 1): Error: Could not process rule: No such file or directory; the agent needs ... nft_tproxy', pods };
  const reasons = inboundHealth(failed);
  t.regex(reasons[0]!, /^inbound capture failed: applying the inbound capture table failed .*nft_tproxy; the policies of shop\/api, shop\/db are not enforced for clients outside this node's mesh$/);
  t.is(reasons[1], 'pod shop/db: TrafficTarget shop/t: not accepted: x');
  t.deepEqual(inboundHealth({ ...failed, error: null, pods: [pods[0], pods[2]] }), []);
  t.deepEqual(inboundHealth({ capture: 'off' }), []);
  const text = renderInbound({ ...failed, error: null }).join('\n');
  t.regex(text, /INBOUND 10\.0\.0\.1:15006: capturing, cluster default all-unauthenticated/);
  t.regex(text, /shop +db +db +TrafficTargets +ServiceAccount shop\/db +yes +t/);
});
