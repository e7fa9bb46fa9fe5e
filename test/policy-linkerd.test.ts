// Linkerd's policy resources (Server, AuthorizationPolicy, ServerAuthorization, MeshTLSAuthentication,
// NetworkAuthentication, HTTPRoute) converted into Server records (linkerd-policy.ts), then
// decided through the policy model (authorize.ts), with the examples of Linkerd's own docs
// (the emojivoto and booksapp tasks) and malformed objects refused with a reason, never a throw.
import test from 'ava';
import { DEFAULT_CLUSTER_NETWORKS, parseNetworks, PolicyError, type AccessRecord, type Identity } from '../src/policy/model.ts';
import { parseMessage } from '../src/discovery/model.ts';
import { identityPattern, serverFromLinkerd, type LinkerdKind, type LinkerdLookup } from '../src/policy/linkerd-policy.ts';
import { parseServerRecord, selects, serversForPod, type ServerRecord } from '../src/policy/server-model.ts';
import { ServerPolicy, type Client, type PolicySpec } from '../src/policy/authorize.ts';

type Obj = Record<string, any>;
const nets = parseNetworks(DEFAULT_CLUSTER_NETWORKS);
const web: Identity = { namespace: 'emojivoto', serviceAccount: 'web' };
const voting: Identity = { namespace: 'emojivoto', serviceAccount: 'voting' };
const other: Identity = { namespace: 'other', serviceAccount: 'web' };
const meshed = (id: Identity, ip = '10.244.1.5'): Client => ({ ip, identity: id });
const plain = (ip = '10.244.1.9'): Client => ({ ip, identity: null });
const req = (method: string, target: string, headers: Record<string, string> = {}) => ({ method, target, header: (n: string) => headers[n] });

function lookupOf(objs: Obj[]): LinkerdLookup {
  const ns = (o: Obj) => o.metadata?.namespace ?? 'default';
  return {
    get: (kind: LinkerdKind, n: string, name: string, group?: string) => objs.find((o) => o.kind === kind && ns(o) === n && o.metadata?.name === name && (group === undefined || String(o.apiVersion).startsWith(`${group}/`))),
    list: (kind, n) => objs.filter((o) => o.kind === kind && ns(o) === n),
  };
}

const server = (name: string, spec: Obj, apiVersion = 'policy.linkerd.io/v1beta1'): Obj => ({ apiVersion, kind: 'Server', metadata: { namespace: 'emojivoto', name }, spec });
const authz = (name: string, targetRef: Obj, refs: Obj[]): Obj => ({ apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { namespace: 'emojivoto', name }, spec: { targetRef, requiredAuthenticationRefs: refs } });
const meshTls = (name: string, spec: Obj): Obj => ({ apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'MeshTLSAuthentication', metadata: { namespace: 'emojivoto', name }, spec });
const netAuth = (name: string, networks: Obj[]): Obj => ({ apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'NetworkAuthentication', metadata: { namespace: 'emojivoto', name }, spec: { networks } });
const ref = (kind: string, name: string, extra: Obj = {}): Obj => ({ group: kind === 'ServiceAccount' ? '' : 'policy.linkerd.io', kind, name, ...extra });
const saz = (name: string, serverSel: Obj, client: Obj): Obj => ({ apiVersion: 'policy.linkerd.io/v1beta1', kind: 'ServerAuthorization', metadata: { namespace: 'emojivoto', name }, spec: { server: serverSel, client } });
const toServer = (name: string): Obj => ({ group: 'policy.linkerd.io', kind: 'Server', name });

// Linkerd's "Restricting access to services" task: voting's gRPC port, only web may call it.
const votingGrpc = server('voting-grpc', { podSelector: { matchLabels: { app: 'voting-svc' } }, port: 'grpc', proxyProtocol: 'gRPC' });
const votingAuthn = meshTls('voting-grpc-authn', { identities: ['web.emojivoto.serviceaccount.identity.linkerd.cluster.local'] });
const votingAuthz = authz('voting-grpc', toServer('voting-grpc'), [ref('MeshTLSAuthentication', 'voting-grpc-authn')]);

function convert(objs: Obj[], name: string) {
  return serverFromLinkerd(objs.find((o) => o.kind === 'Server' && o.metadata.name === name)!, lookupOf(objs));
}

function podPolicy(records: ServerRecord[], pod: { labels: Record<string, string>; namedPorts?: Record<string, number> }, targets: AccessRecord[] = [], defaultPolicy: PolicySpec['defaultPolicy'] = 'all-unauthenticated'): ServerPolicy {
  return new ServerPolicy({ namespace: 'emojivoto', pod: 'voting-1', serviceAccount: 'voting', defaultPolicy, defaultFrom: 'test', targets, servers: serversForPod(records, pod) }, nets);
}
const votingPod = { labels: { app: 'voting-svc', version: 'v11' }, namedPorts: { grpc: 8080, prom: 8801 } };

test('Linkerd docs: Server + AuthorizationPolicy + MeshTLSAuthentication allows web on the named port, denies the rest; other ports keep the default policy', (t) => {
  const c = convert([votingGrpc, votingAuthn, votingAuthz], 'voting-grpc');
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record, {
    kind: 'Server', namespace: 'emojivoto', name: 'voting-grpc', podSelector: { matchLabels: { app: 'voting-svc' } }, port: 'grpc', proxyProtocol: 'gRPC', accessPolicy: 'deny',
    authorizations: [{ name: 'voting-grpc', identities: [{ namespace: 'emojivoto', serviceAccount: 'web' }] }], routes: [],
  });
  const p = podPolicy([c.record!], votingPod);
  t.true(p.failsClosed, 'a pod a Server selects fails closed');
  const ok = p.connection(meshed(web), 8080);
  t.is(ok.verdict, 'allow');
  t.deepEqual(ok.server, { group: 'policy.linkerd.io', kind: 'server', name: 'voting-grpc', port: 8080 });
  if (ok.verdict === 'allow') t.deepEqual(ok.authz, { group: 'policy.linkerd.io', kind: 'authorizationpolicy', name: 'voting-grpc' });
  const no = p.connection(meshed(voting), 8080);
  t.is(no.verdict, 'deny');
  if (no.verdict === 'deny') t.regex(no.reason, /Server emojivoto\/voting-grpc selects port 8080 and no AuthorizationPolicy allows spiffe:\/\/cluster.local\/ns\/emojivoto\/sa\/voting \(it has voting-grpc; accessPolicy deny\)/);
  t.is(p.connection(plain(), 8080).verdict, 'deny', 'no identity: denied');
  t.is(p.connection(plain(), 8801).verdict, 'allow', 'a port no Server selects keeps the default policy');
  t.deepEqual(p.connection(plain(), 8801).server, { group: '', kind: 'default', name: 'all-unauthenticated', port: 8801 });
  t.deepEqual(podPolicy([c.record!], { labels: { app: 'web-svc' }, namedPorts: { grpc: 8080 } }).connection(plain(), 8080).verdict, 'allow', 'not selected: default');
  t.is(podPolicy([c.record!], { labels: { app: 'voting-svc' } }).serverOn(8080), undefined, 'a named port the pod does not declare selects nothing');
});

test('Linkerd docs: a Server with no AuthorizationPolicy denies everyone on its port, even under all-unauthenticated', (t) => {
  const c = convert([votingGrpc], 'voting-grpc');
  const p = podPolicy([c.record!], votingPod);
  t.is(p.connection(meshed(web), 8080).verdict, 'deny');
  t.is(p.connection(plain(), 8080).verdict, 'deny');
});

test('v1beta3 accessPolicy admits its clients when no AuthorizationPolicy does; matchExpressions and a port number', (t) => {
  const s = server('admin', { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['voting-svc', 'emoji-svc'] }, { key: 'canary', operator: 'DoesNotExist' }] }, port: 9990, accessPolicy: 'all-authenticated' }, 'policy.linkerd.io/v1beta3');
  const c = convert([s], 'admin');
  t.deepEqual(c.problems, []);
  const p = podPolicy([c.record!], votingPod);
  const d = p.connection(meshed(other), 9990);
  t.is(d.verdict, 'allow');
  if (d.verdict === 'allow') t.deepEqual(d.authz, { group: '', kind: 'default', name: 'all-authenticated' });
  t.is(p.connection(plain(), 9990).verdict, 'deny');
  t.is(podPolicy([c.record!], { labels: { app: 'voting-svc', canary: 'x' } }).serverOn(9990), undefined, 'DoesNotExist');
  t.false(selects(c.record!.podSelector, { app: 'web-svc' }));
  t.true(selects({}, { any: 'thing' }), 'an empty selector selects every pod');
});

test('a Namespace-targeted policy covers every Server of its namespace; identityRefs, "*" and a NetworkAuthentication with except are ANDed', (t) => {
  const objs = [
    votingGrpc,
    meshTls('any-meshed', { identities: ['*'] }),
    meshTls('emojivoto-sas', { identityRefs: [{ kind: 'Namespace', name: 'emojivoto' }] }),
    netAuth('cluster', [{ cidr: '10.0.0.0/8', except: ['10.244.9.0/24'] }]),
    authz('ns-wide', { group: 'core', kind: 'Namespace', name: 'emojivoto' }, [ref('MeshTLSAuthentication', 'emojivoto-sas'), ref('NetworkAuthentication', 'cluster')]),
  ];
  const c = convert(objs, 'voting-grpc');
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.authorizations, [{ name: 'ns-wide', identities: [{ namespace: 'emojivoto', serviceAccount: '*' }], networks: [{ cidr: '10.0.0.0/8', except: ['10.244.9.0/24'] }] }]);
  const p = podPolicy([c.record!], votingPod);
  t.is(p.connection(meshed(voting), 8080).verdict, 'allow', 'any ServiceAccount of emojivoto, from the network');
  t.is(p.connection(meshed(voting, '10.244.9.3'), 8080).verdict, 'deny', 'an excepted network');
  t.is(p.connection(meshed(voting, '192.168.1.1'), 8080).verdict, 'deny', 'outside the network');
  t.is(p.connection(meshed(other), 8080).verdict, 'deny', 'another namespace');
  t.is(p.connection(plain(), 8080).verdict, 'deny', 'identity required');
});

test('NetworkAuthentication alone admits unauthenticated clients of its networks; a ServiceAccount ref requires that identity; no refs admits anyone', (t) => {
  const objs = [
    votingGrpc,
    netAuth('nodes', [{ cidr: '192.168.0.0/16' }]),
    authz('probes', toServer('voting-grpc'), [ref('NetworkAuthentication', 'nodes')]),
    authz('sa', toServer('voting-grpc'), [ref('ServiceAccount', 'voting')]),
  ];
  const p = podPolicy([convert(objs, 'voting-grpc').record!], votingPod);
  t.is(p.connection(plain('192.168.3.3'), 8080).verdict, 'allow');
  t.is(p.connection(plain('10.1.1.1'), 8080).verdict, 'deny');
  t.is(p.connection(meshed(voting), 8080).verdict, 'allow');
  const open = podPolicy([convert([votingGrpc, authz('all', toServer('voting-grpc'), [])], 'voting-grpc').record!], votingPod);
  t.is(open.connection(plain('8.8.8.8'), 8080).verdict, 'allow', 'Linkerd: no required authentication, any client');
});

test('Linkerd docs (booksapp): an HTTPRoute-targeted policy allows its route only; requests matching no route are denied', (t) => {
  const authors = { ...server('authors-server', { podSelector: { matchLabels: { app: 'authors' } }, port: 'service' }), metadata: { namespace: 'emojivoto', name: 'authors-server' } };
  const route = {
    apiVersion: 'policy.linkerd.io/v1beta3', kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name: 'authors-get-route' },
    spec: { parentRefs: [toServer('authors-server')], rules: [{ matches: [{ path: { value: '/authors.json', type: 'Exact' }, method: 'GET' }, { path: { value: '/authors/', type: 'PathPrefix' }, method: 'GET' }] }] },
  };
  const probe = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name: 'authors-probe-route' },
    spec: { parentRefs: [toServer('authors-server')], rules: [{ matches: [{ path: { value: '/ping', type: 'Exact' }, method: 'GET', headers: [{ name: 'X-Probe', value: 'yes' }] }] }] },
  };
  const objs = [
    authors, route, probe,
    meshTls('authors-get-authn', { identityRefs: [{ kind: 'ServiceAccount', name: 'web' }] }),
    authz('authors-get-policy', { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'authors-get-route' }, [ref('MeshTLSAuthentication', 'authors-get-authn')]),
    authz('authors-probe-policy', { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'authors-probe-route' }, [ref('NetworkAuthentication', 'kubelet')]),
    netAuth('kubelet', [{ cidr: '0.0.0.0/0' }]),
  ];
  const c = convert(objs, 'authors-server');
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.routes.map((r) => [r.group, r.name, r.authorizations.map((a) => a.name)]), [['gateway.networking.k8s.io', 'authors-probe-route', ['authors-probe-policy']], ['policy.linkerd.io', 'authors-get-route', ['authors-get-policy']]].sort((a, b) => (a[1]! < b[1]! ? -1 : 1)));
  const p = podPolicy([c.record!], { labels: { app: 'authors' }, namedPorts: { service: 7001 } });
  const conn = p.connection(meshed(web), 7001);
  t.is(conn.verdict, 'http');
  const get = p.request(meshed(web), 7001, req('GET', '/authors/12.json'));
  t.true(get.allowed);
  if (get.allowed) {
    t.deepEqual(get.route, { group: 'policy.linkerd.io', kind: 'httproute', name: 'authors-get-route' });
    t.deepEqual(get.authz, { group: 'policy.linkerd.io', kind: 'authorizationpolicy', name: 'authors-get-policy' });
  }
  t.true(p.request(meshed(web), 7001, req('GET', '/authors.json')).allowed);
  t.false(p.request(meshed(web), 7001, req('GET', '/authorsX/1')).allowed, 'PathPrefix is element-wise');
  const del = p.request(meshed(web), 7001, req('DELETE', '/authors/12.json'));
  t.false(del.allowed);
  if (!del.allowed) t.regex(del.reason, /no HTTPRoute match of Server emojivoto\/authors-server open to it allows DELETE \/authors\/12.json/);
  t.false(p.request(meshed(voting), 7001, req('GET', '/authors/1')).allowed, 'another identity');
  t.true(p.request(plain(), 7001, req('GET', '/ping', { 'x-probe': 'yes' })).allowed, 'the probe route, to anyone');
  t.false(p.request(plain(), 7001, req('GET', '/ping', { 'x-probe': 'yesno' })).allowed, 'an Exact header is the whole value');
  t.false(p.request(plain(), 7001, req('GET', '/authors/1')).allowed);
});

test('a Server-targeted policy applies to every route of the Server, not to requests matching none', (t) => {
  const s = server('s', { podSelector: {}, port: 80 });
  const r = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name: 'r' }, spec: { parentRefs: [toServer('s')], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' } }] }] } };
  const p = podPolicy([convert([s, r, authz('all-web', toServer('s'), [ref('ServiceAccount', 'web')])], 's').record!], { labels: {} });
  t.true(p.request(meshed(web), 80, req('POST', '/api/x')).allowed);
  t.false(p.request(meshed(web), 80, req('GET', '/other')).allowed);
  t.false(p.request(meshed(voting), 80, req('GET', '/api')).allowed);
});

test('TrafficTargets and Servers: the union of what either allows', (t) => {
  const c = convert([votingGrpc, votingAuthn, votingAuthz], 'voting-grpc');
  const tt: AccessRecord = { namespace: 'emojivoto', name: 'voting-from-vote-bot', destination: { namespace: 'emojivoto', serviceAccount: 'voting' }, sources: [{ namespace: 'emojivoto', serviceAccount: 'vote-bot' }], rules: [{ kind: 'TCPRoute', name: 'all' }] };
  const p = podPolicy([c.record!], votingPod, [tt]);
  t.is(p.connection(meshed(web), 8080).verdict, 'allow', 'the AuthorizationPolicy');
  const bot = p.connection(meshed({ namespace: 'emojivoto', serviceAccount: 'vote-bot' }), 8080);
  t.is(bot.verdict, 'allow', 'the TrafficTarget');
  if (bot.verdict === 'allow') t.is(bot.authz.kind, 'traffictarget');
  const no = p.connection(meshed(voting), 8080);
  t.is(no.verdict, 'deny');
  if (no.verdict === 'deny') t.regex(no.reason, /nor do the TrafficTargets/);
  t.is(p.connection(meshed(web), 8801).verdict, 'deny', 'a port no Server selects: the TrafficTargets decide, as before');
});

test('malformed objects give a clear record, never a throw', (t) => {
  const bad: Array<[Obj, RegExp]> = [
    [server('x', { port: 80 }), /Server emojivoto\/x: not accepted: spec.podSelector: required/],
    [server('x', { podSelector: { matchLabels: { app: 5 } }, port: 80 }), /spec.podSelector.matchLabels.app: expected a label value, got 5/],
    [server('x', { podSelector: { matchExpressions: [{ key: 'app', operator: 'Near' }] }, port: 80 }), /operator: expected In, NotIn, Exists or DoesNotExist, got "Near"/],
    [server('x', { podSelector: {}, port: 70000 }), /spec.port: 70000 is neither a port 1-65535 nor a container port's name/],
    [server('x', { podSelector: {}, port: 'Not_A_Name' }), /spec.port/],
    [server('x', { podSelector: {}, port: 80, proxyProtocol: 'HTTP/3' }), /spec.proxyProtocol: "HTTP\/3" is not one of unknown, HTTP\/1, HTTP\/2, gRPC, opaque, TLS/],
    [server('x', { podSelector: {}, port: 80, accessPolicy: 'permissive' }, 'policy.linkerd.io/v1beta3'), /spec.accessPolicy: "permissive" is not one of all-unauthenticated, .*, deny, audit/],
    [server('x', { podSelector: {}, port: 80, accessPolicy: 'all-authenticated' }), /accessPolicy: read from policy.linkerd.io\/v1beta3 only/],
    [server('x', { externalWorkloadSelector: {}, port: 80 }), /external workloads are not meshed here/],
    [{ kind: 'Server', spec: null }, /Server default\/: not accepted/],
  ];
  for (const [o, re] of bad) {
    const c = serverFromLinkerd(o, lookupOf([o]));
    t.is(c.record, null, JSON.stringify(o));
    t.regex(c.problems.join('\n'), re);
  }
});

test('identityRefs named "*" match no client, as in Linkerd (its controller makes "*.NS.serviceaccount..." an exact identity, and a Namespace "*" a suffix no namespace has): not every ServiceAccount', (t) => {
  for (const r of [{ kind: 'ServiceAccount', name: '*' }, { kind: 'ServiceAccount', name: '*', namespace: 'other' }, { kind: 'Namespace', name: '*' }]) {
    const c = convert([votingGrpc, meshTls('m', { identityRefs: [r] }), authz('a', toServer('voting-grpc'), [ref('MeshTLSAuthentication', 'm')])], 'voting-grpc');
    t.not(c.record, null);
    t.regex(c.problems.join('\n'), /AuthorizationPolicy emojivoto\/a: ignored, .*identityRefs\[0\]\.name: "\*" names no (ServiceAccount|Namespace)/, JSON.stringify(r));
    const p = podPolicy([c.record!], votingPod);
    for (const id of [web, voting, other]) t.is(p.connection(meshed(id), 8080).verdict, 'deny', `${JSON.stringify(r)}: ${id.namespace}/${id.serviceAccount}`);
  }
});

test('a NetworkAuthentication entry is one network, as Linkerd parses it: a comma-separated list in cidr or except is refused, not read as several networks', (t) => {
  for (const n of [{ cidr: '10.244.0.0/16,0.0.0.0/0' }, { cidr: '0.0.0.0/0', except: ['192.168.0.0/16,203.0.113.0/24'] }]) {
    const c = convert([votingGrpc, netAuth('n', [n]), authz('a', toServer('voting-grpc'), [ref('NetworkAuthentication', 'n')])], 'voting-grpc');
    t.regex(c.problems.join('\n'), /AuthorizationPolicy emojivoto\/a: ignored, .*NetworkAuthentication emojivoto\/n: spec\.networks\[0\]\.(cidr|except\[0\]): .* is a list; write one network per entry/, JSON.stringify(n));
    t.is(podPolicy([c.record!], votingPod).connection(meshed(web, '203.0.113.7'), 8080).verdict, 'deny', JSON.stringify(n));
  }
});

test('a broken AuthorizationPolicy or authentication is ignored with the reason: the Server stays closed to its clients', (t) => {
  const cases: Array<[Obj[], RegExp]> = [
    [[authz('a', toServer('voting-grpc'), [ref('MeshTLSAuthentication', 'missing')])], /AuthorizationPolicy emojivoto\/a: ignored, it allows nothing on Server emojivoto\/voting-grpc: .*MeshTLSAuthentication emojivoto\/missing not found/],
    [[meshTls('m', { identities: ['web'] }), authz('a', toServer('voting-grpc'), [ref('MeshTLSAuthentication', 'm')])], /"web" is not an identity this mesh issues/],
    [[meshTls('m', { identities: ['*'], identityRefs: [] }), authz('a', toServer('voting-grpc'), [ref('MeshTLSAuthentication', 'm')])], /set exactly one of identities and identityRefs/],
    [[netAuth('n', [{ cidr: '10.0.0.0/33' }]), authz('a', toServer('voting-grpc'), [ref('NetworkAuthentication', 'n')])], /not an IPv4 network/],
    [[netAuth('n', [{ cidr: '10.0.0.0/8' }]), netAuth('n2', [{ cidr: '10.0.0.0/8' }]), authz('a', toServer('voting-grpc'), [ref('NetworkAuthentication', 'n'), ref('NetworkAuthentication', 'n2')])], /only one NetworkAuthentication may be required/],
    [[authz('a', { group: 'policy.linkerd.io', kind: 'Server', name: 'voting-grpc' }, [{ group: 'x', kind: 'Thing', name: 'y' }])], /"x"\/"Thing" is not read/],
    [[authz('a', { group: 'core', kind: 'Namespace', name: 'other' }, [])], /Namespace other is not the policy's own namespace emojivoto/],
    [[authz('a', { group: 'apps', kind: 'Deployment', name: 'x' }, [])], /target a policy.linkerd.io Server, a core Namespace, or an HTTPRoute/],
    [[{ ...authz('a', toServer('voting-grpc'), []), apiVersion: 'policy.linkerd.io/v1beta1' }], /apiVersion "policy.linkerd.io\/v1beta1" is not read/],
  ];
  for (const [objs, re] of cases) {
    const c = convert([votingGrpc, ...objs], 'voting-grpc');
    t.not(c.record, null);
    t.deepEqual(c.record!.authorizations, []);
    t.regex(c.problems.join('\n'), re);
    t.deepEqual(c.record!.problems, c.problems);
    t.is(podPolicy([c.record!], votingPod).connection(meshed(web), 8080).verdict, 'deny');
  }
  const q = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name: 'q' }, spec: { parentRefs: [toServer('voting-grpc')], rules: [{ matches: [{ queryParams: [{ name: 'a', value: '' }] }] }] } };
  const c = convert([votingGrpc, q, authz('a', { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'q' }, [])], 'voting-grpc');
  t.regex(c.problems.join('\n'), /HTTPRoute emojivoto\/q: ignored, its requests are denied on Server emojivoto\/voting-grpc: spec.rules\[0\].matches\[0\].queryParams\[0\].value: expected a string of 1 to 1024 characters/);
  t.deepEqual(c.record!.routes, []);
});

test('a Linkerd HTTPRoute with queryParams authorizes each request by its query (v1beta3 and Gateway API alike)', (t) => {
  const s = server('books', { podSelector: {}, port: 80 }, 'policy.linkerd.io/v1beta3');
  const route = (apiVersion: string, name: string, queryParams: Obj[]) => ({ apiVersion, kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name }, spec: { parentRefs: [toServer('books')], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/books' }, queryParams }] }] } });
  const readers = route('policy.linkerd.io/v1beta3', 'readers', [{ name: 'role', value: 'reader' }, { type: 'RegularExpression', name: 'id', value: '[0-9]+' }]);
  const audit = route('gateway.networking.k8s.io/v1', 'audit', [{ name: 'audit', value: 'yes' }]);
  const objs = [s, readers, audit,
    authz('web-reads', { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'readers' }, [ref('ServiceAccount', 'web')]),
    authz('anyone-audits', { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'audit' }, [])];
  const c = convert(objs, 'books');
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.routes.find((r) => r.name === 'readers')!.matches, [{ path: { type: 'PathPrefix', value: '/books' }, queryParams: [{ name: 'role', type: 'Exact', value: 'reader' }, { name: 'id', type: 'RegularExpression', value: '^(?:[0-9]+)$' }] }]);
  t.deepEqual(parseServerRecord(JSON.parse(JSON.stringify(c.record))), c.record, 'the record reads back as sent');
  const p = podPolicy([c.record!], { labels: {} });
  t.is(p.connection(meshed(web), 80).verdict, 'http');
  const ok = p.request(meshed(web), 80, req('GET', '/books/1?role=reader&id=12'));
  t.true(ok.allowed);
  if (ok.allowed) t.deepEqual([ok.route.name, ok.authz.name], ['readers', 'web-reads']);
  t.true(p.request(meshed(web), 80, req('GET', '/books?id=7&r%6Fle=reader')).allowed, 'names and values percent-decoded');
  t.false(p.request(meshed(web), 80, req('GET', '/books/1?role=writer&id=12')).allowed, 'another value');
  t.false(p.request(meshed(web), 80, req('GET', '/books/1?role=reader&id=12x')).allowed, 'a regex matches the whole value');
  t.false(p.request(meshed(web), 80, req('GET', '/books/1?role=reader')).allowed, 'every parameter is required');
  const none = p.request(meshed(web), 80, req('GET', '/books/1'));
  t.false(none.allowed, 'no query');
  if (!none.allowed) t.regex(none.reason, /no HTTPRoute match of Server emojivoto\/books open to it allows GET \/books\/1 for spiffe:\/\/cluster.local\/ns\/emojivoto\/sa\/web/);
  t.false(p.request(meshed(voting), 80, req('GET', '/books/1?role=reader&id=12')).allowed, 'another client: the route\'s policy admits web only');
  t.true(p.request(meshed(voting), 80, req('GET', '/books/1?audit=yes')).allowed, 'the Gateway API route, open to anyone, by its query');
  t.false(p.request(plain(), 80, req('GET', '/books/1?audit=no')).allowed);
});

test('a Server record of discovery version 7 (its route regexes unanchored, matched whole) is read as it meant them', (t) => {
  const v7 = {
    kind: 'Server', namespace: 'emojivoto', name: 's', podSelector: {}, port: 80, accessPolicy: 'deny', authorizations: [{ name: 'all' }],
    routes: [{ group: 'policy.linkerd.io', name: 'r', authorizations: [], matches: [{ path: { type: 'RegularExpression', value: '/admin' }, headers: [{ name: 'x-a', type: 'RegularExpression', value: 'b' }] }] }],
  };
  const line = JSON.stringify({ type: 'access', op: 'set', access: v7 });
  const m = parseMessage(line, 7);
  if (m.type !== 'access' || m.op !== 'set') return t.fail();
  const rec = m.access as ServerRecord;
  t.deepEqual(rec.routes[0]!.matches, [{ path: { type: 'RegularExpression', value: '^(?:/admin)$' }, headers: [{ name: 'x-a', type: 'RegularExpression', value: '^(?:b)$' }] }]);
  const p = podPolicy([rec], { labels: {} });
  t.true(p.request(plain(), 80, req('GET', '/admin', { 'x-a': 'b' })).allowed);
  t.false(p.request(plain(), 80, req('GET', '/x/admin/y', { 'x-a': 'b' })).allowed, 'whole path, as version 7 matched it');
  t.false(p.request(plain(), 80, req('GET', '/admin', { 'x-a': 'abc' })).allowed, 'whole value');
  // Version 8 carries the route model's shape: the controller anchored what it meant.
  t.deepEqual((parseMessage(line) as { access: ServerRecord }).access.routes[0]!.matches[0]!.path, { type: 'RegularExpression', value: '/admin' });
  t.throws(() => parseServerRecord({ ...v7, routes: [{ ...v7.routes[0], matches: [{ grpc: { type: 'Exact', service: 'a.B' } }] }] }), { message: /routes\[0\].matches\[0\].grpc: a Server route matches HTTP requests/ });
  t.throws(() => parseServerRecord({ ...v7, routes: [{ ...v7.routes[0], matches: [{ query: [] }] }] }), { message: /routes\[0\].matches\[0\]/, instanceOf: PolicyError }, 'a field it does not know is refused, not skipped');
});

test('identity spellings', (t) => {
  t.deepEqual(identityPattern('*', 'x'), { namespace: '*', serviceAccount: '*' });
  t.deepEqual(identityPattern('*.emojivoto.serviceaccount.identity.linkerd.cluster.local', 'x'), { namespace: 'emojivoto', serviceAccount: '*' });
  t.deepEqual(identityPattern('spiffe://cluster.local/ns/a/sa/b', 'x'), { namespace: 'a', serviceAccount: 'b' });
  t.throws(() => identityPattern(7, 'spec.identities[0]'), { message: /spec.identities\[0\]: 7 is not an identity/ });
});

test('the Server record parser names the field', (t) => {
  const good = convert([votingGrpc, votingAuthn, votingAuthz], 'voting-grpc').record!;
  t.deepEqual(parseServerRecord(JSON.parse(JSON.stringify(good))), good);
  t.throws(() => parseServerRecord({ ...good, port: 0 }), { message: /Server emojivoto\/voting-grpc: port: expected a port 1-65535 or a container port's name, got 0/ });
  t.throws(() => parseServerRecord({ ...good, authorizations: [{ name: 'a', identities: [{ namespace: '*', serviceAccount: 'web' }] }] }), { message: /a ServiceAccount of any namespace is not an identity/ });
  t.throws(() => parseServerRecord({ ...good, accessPolicy: 'open' }), { message: /accessPolicy: expected one of/ });
});

test('accessPolicy audit (Linkerd 2.15+): what no AuthorizationPolicy allows passes, labelled authz default/audit; what one allows keeps its own label', (t) => {
  const s = server('voting-grpc', { podSelector: { matchLabels: { app: 'voting-svc' } }, port: 'grpc', accessPolicy: 'audit' }, 'policy.linkerd.io/v1beta3');
  const c = convert([s, votingAuthn, votingAuthz], 'voting-grpc');
  t.deepEqual(c.problems, []);
  t.is(c.record!.accessPolicy, 'audit');
  t.is(parseServerRecord(c.record).accessPolicy, 'audit', 'the agents read it');
  const p = podPolicy([c.record!], votingPod);
  t.true(p.failsClosed, 'a pod a Server selects fails closed, whatever its accessPolicy (as all-unauthenticated)');
  const allowed = p.connection(meshed(web), 8080);
  t.deepEqual(allowed.verdict === 'allow' && allowed.authz, { group: 'policy.linkerd.io', kind: 'authorizationpolicy', name: 'voting-grpc' });
  for (const c2 of [meshed(voting), plain('8.8.8.8')]) {
    const d = p.connection(c2, 8080);
    t.deepEqual(d.verdict === 'allow' && d.authz, { group: '', kind: 'default', name: 'audit' }, 'would be denied: allowed, counted as audit');
    const r = p.request(c2, 8080, req('GET', '/'));
    t.deepEqual(r.allowed && r.authz, { group: '', kind: 'default', name: 'audit' });
  }
  // With an HTTPRoute: a request matching a route passes as audit; one matching none is still refused (Linkerd: 404).
  const route = { apiVersion: 'policy.linkerd.io/v1beta3', kind: 'HTTPRoute', metadata: { namespace: 'emojivoto', name: 'vote' }, spec: { parentRefs: [toServer('voting-grpc')], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/vote' } }] }] } };
  const pr = podPolicy([convert([s, route], 'voting-grpc').record!], votingPod);
  const ok = pr.request(plain(), 8080, req('GET', '/vote/x'));
  t.deepEqual(ok.allowed && [ok.authz, ok.route], [{ group: '', kind: 'default', name: 'audit' }, { group: 'policy.linkerd.io', kind: 'httproute', name: 'vote' }]);
  t.false(pr.request(plain(), 8080, req('GET', '/other')).allowed);
});

test('ServerAuthorization (v1beta1): by Server name or label selector; meshTLS serviceAccounts and identities, unauthenticated, networks', (t) => {
  const s = { ...votingGrpc, metadata: { ...votingGrpc.metadata, labels: { tier: 'backend' } } };
  const objs = [
    s,
    saz('web-only', { name: 'voting-grpc' }, { meshTLS: { serviceAccounts: [{ name: 'web' }] } }),
    saz('by-id', { selector: { matchLabels: { tier: 'backend' } } }, { meshTLS: { identities: ['*.other.serviceaccount.identity.linkerd.cluster.local'] }, networks: [{ cidr: '10.0.0.0/8', except: ['10.9.0.0/16'] }] }),
    saz('probes', { selector: { matchLabels: { tier: 'backend' } } }, { unauthenticated: true, networks: [{ cidr: '192.168.0.0/16' }] }),
    saz('elsewhere', { name: 'not-this-one' }, { unauthenticated: true }),
    saz('frontend', { selector: { matchLabels: { tier: 'frontend' } } }, { unauthenticated: true }),
  ];
  const c = convert(objs, 'voting-grpc');
  t.deepEqual(c.problems, []);
  t.deepEqual(c.record!.authorizations, [
    { name: 'by-id', kind: 'ServerAuthorization', identities: [{ namespace: 'other', serviceAccount: '*' }], networks: [{ cidr: '10.0.0.0/8', except: ['10.9.0.0/16'] }] },
    { name: 'probes', kind: 'ServerAuthorization', networks: [{ cidr: '192.168.0.0/16' }] },
    { name: 'web-only', kind: 'ServerAuthorization', identities: [{ namespace: 'emojivoto', serviceAccount: 'web' }], clusterNetworks: true },
  ]);
  t.deepEqual(parseServerRecord(c.record).authorizations, c.record!.authorizations, 'the agents read the kind');
  const p = podPolicy([c.record!], votingPod);
  const web1 = p.connection(meshed(web), 8080);
  t.deepEqual(web1.verdict === 'allow' && web1.authz, { group: 'policy.linkerd.io', kind: 'serverauthorization', name: 'web-only' }, 'labelled as Linkerd labels a ServerAuthorization');
  t.is(p.connection(meshed(voting), 8080).verdict, 'deny', 'a ServiceAccount none names');
  t.is(p.connection(meshed(other), 8080).verdict, 'allow', 'an identity suffix, from its network');
  t.is(p.connection(meshed(other, '10.9.1.1'), 8080).verdict, 'deny', 'an excepted network');
  t.is(p.connection(plain('192.168.4.4'), 8080).verdict, 'allow', 'unauthenticated from its network');
  t.is(p.connection(plain('10.244.1.1'), 8080).verdict, 'deny', 'unauthenticated elsewhere');
  // unauthenticatedTLS: any TLS client, which here is any meshed one (every TLS client has an identity).
  const tls = podPolicy([convert([s, saz('tls', {}, { meshTLS: { unauthenticatedTLS: true } })], 'voting-grpc').record!], votingPod);
  t.is(tls.connection(meshed(voting), 8080).verdict, 'allow', 'spec.server {}: every Server of the namespace');
  t.is(tls.connection(plain(), 8080).verdict, 'deny', 'plaintext is not TLS');
  t.is(p.connection(meshed(web, '8.8.8.8'), 8080).verdict, 'deny', 'no networks: only from the cluster networks, as Linkerd\'s controller fills them in');
  for (const networks of [undefined, []]) {
    const rec = convert([s, saz('any', { name: 'voting-grpc' }, { unauthenticated: true, ...(networks ? { networks } : {}) })], 'voting-grpc').record!;
    t.deepEqual(rec.authorizations, [{ name: 'any', kind: 'ServerAuthorization', clusterNetworks: true }]);
    const pc = podPolicy([rec], votingPod);
    t.is(pc.connection(plain('10.244.1.9'), 8080).verdict, 'allow', 'from the cluster networks');
    t.is(pc.connection(plain('8.8.8.8'), 8080).verdict, 'deny', 'from outside them');
  }
});

test('a malformed ServerAuthorization is ignored with the reason: the Server stays closed to its clients', (t) => {
  const bad: Array<[Obj, RegExp]> = [
    [saz('a', { name: 'voting-grpc' }, {}), /spec.client: set unauthenticated: true or meshTLS/],
    [saz('a', { name: 'voting-grpc' }, { unauthenticated: true, meshTLS: { serviceAccounts: [{ name: 'web' }] } }), /unauthenticated must be false when meshTLS is set/],
    [saz('a', { name: 'voting-grpc' }, { meshTLS: { unauthenticatedTLS: true, serviceAccounts: [{ name: 'web' }] } }), /unauthenticatedTLS must be false when identities or serviceAccounts are set/],
    [saz('a', { name: 'voting-grpc' }, { meshTLS: {} }), /meshTLS: names no client/],
    [saz('a', { name: 'voting-grpc' }, { meshTLS: { identities: ['web'] } }), /identities\[0\]: "web" is not an identity this mesh issues/],
    [saz('a', { name: 'voting-grpc' }, { unauthenticated: true, networks: [{ cidr: '10.0.0.0/8,0.0.0.0/0' }] }), /networks\[0\].cidr: .* is a list/],
    [saz('a', { selector: { matchLabels: { tier: 5 } } }, { unauthenticated: true }), /spec.server.selector.matchLabels.tier: expected a label value/],
    [{ ...saz('a', { name: 'voting-grpc' }, { unauthenticated: true }), apiVersion: 'policy.linkerd.io/v1alpha1' }, /apiVersion "policy.linkerd.io\/v1alpha1" is not read; use policy.linkerd.io\/v1beta1/],
  ];
  for (const [o, re] of bad) {
    const c = convert([votingGrpc, o], 'voting-grpc');
    t.not(c.record, null);
    t.deepEqual(c.record!.authorizations, [], JSON.stringify(o));
    t.regex(c.problems.join('\n'), /ServerAuthorization emojivoto\/a: ignored, it allows nothing on Server emojivoto\/voting-grpc/);
    t.regex(c.problems.join('\n'), re);
    t.is(podPolicy([c.record!], votingPod).connection(plain('192.168.1.1'), 8080).verdict, 'deny');
  }
  t.throws(() => parseServerRecord({ ...convert([votingGrpc], 'voting-grpc').record, authorizations: [{ name: 'x', kind: 'Other' }] }), { message: /authorizations\[0\].kind: expected "ServerAuthorization" or none, got "Other"/ });
  t.throws(() => parseServerRecord({ ...convert([votingGrpc], 'voting-grpc').record, authorizations: [{ name: 'x', clusterNetworks: true, networks: [{ cidr: '10.0.0.0/8' }] }] }), { message: /clusterNetworks: expected true, and no networks beside it/ });
});
