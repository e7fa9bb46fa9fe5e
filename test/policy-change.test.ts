// Open connections follow a policy change (docs/policy.md, "When the policy changes"), the pure
// part: a connection's decision is made again against the pod's replaced policy, a connection
// allowed whole that the new policy no longer allows is revoked once (and logged once per client
// and server), only the pods whose compiled policy changed are decided again, a skip-inbound port
// has no policy, and a terminated connection is counted as allowed and, as Linkerd labels it, terminated by the server now in force
// (an upgraded HTTP/1 connection's allow is its request's: only its termination).
import test from 'ava';
import { Authorizer, type PolicyTable } from '../src/policy/authorizer.ts';
import { ServerPolicy, type PolicySpec } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { PodPolicy } from '../src/policy/pod-policy.ts';
import { DEFAULT_CLUSTER_NETWORKS, parseNetworks, type AccessRecord, type DefaultPolicy } from '../src/policy/model.ts';
import type { ConnectionInfo } from '../src/proxy/listener.ts';
import { MetricsSink } from '../src/telemetry/metrics.ts';
import type { ConnCloseEvent } from '../src/telemetry/events.ts';
import { parseExposition, sum } from './helpers/prom-text.ts';

const nets = parseNetworks(DEFAULT_CLUSTER_NETWORKS);
const API = '10.244.1.3';
const DB = '10.244.1.4';
const WEB = '10.244.1.2';
const web = { namespace: 'shop', serviceAccount: 'web' };
const spec = (pod: string, sa: string, defaultPolicy: DefaultPolicy, targets: AccessRecord[] = []): PolicySpec => ({ namespace: 'shop', pod, serviceAccount: sa, defaultPolicy, defaultFrom: 'test', targets });
const target = (rules: AccessRecord['rules'], sources = [web]): AccessRecord => ({ namespace: 'shop', name: 'web-to-api', destination: { namespace: 'shop', serviceAccount: 'api' }, sources, rules });
const httpOnly = target([{ kind: 'HTTPRouteGroup', name: 'routes', matches: [{ name: 'ok', pathRegex: '/ok', methods: ['GET'] }] }]);
const header = (): undefined => undefined;

function table(api: PolicySpec, db: PolicySpec = spec('db-0', 'db', 'all-unauthenticated'), more: Partial<PolicyTable['pods'][number]> = {}): PolicyTable {
  return {
    networks: DEFAULT_CLUSTER_NETWORKS,
    pods: [
      { ip: WEB, identity: web, spec: spec('web-1', 'web', 'all-unauthenticated') },
      { ip: API, identity: { namespace: 'shop', serviceAccount: 'api' }, spec: api, ...more },
      { ip: DB, identity: { namespace: 'shop', serviceAccount: 'db' }, spec: db },
    ],
  };
}
const conn = (destIp: string, destPort = 8080, sourceIp = WEB): ConnectionInfo => ({ direction: 'outbound', sourceIp, sourcePort: 40000, sourcePodKey: 1n, destIp, destPort });

test('a connection\'s decision is made again once its pod\'s policy is replaced, and only then', (t) => {
  const pod = new PodPolicy(new ServerPolicy(spec('api-1', 'api', 'all-unauthenticated'), nets));
  const denials: string[] = [];
  const az = new PolicyConnAuthz(pod, { ip: WEB, identity: web }, 8080, (r) => denials.push(r));
  t.is(az.verdict, 'allow');
  t.true(az.request('GET', '/', header).allowed);
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'deny'), nets));
  t.is(az.verdict, 'deny', 'the next ask sees the new policy');
  const r = az.request('GET', '/', header);
  t.false(r.allowed);
  t.deepEqual(r.server, { group: '', kind: 'default', name: 'deny', port: 8080 }, 'counted under the server now in force');
  t.false(az.tcp().allowed);
  t.is(denials.length, 2);
  t.regex(denials[0]!, /^deny: no client may connect$/);
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'all-unauthenticated', [httpOnly]), nets));
  t.is(az.verdict, 'http');
  t.true(az.request('GET', '/ok', header).allowed, 'an HTTPRouteGroup now decides each request');
  t.false(az.request('POST', '/ok', header).allowed);
});

test('a connection allowed whole is revoked once, with the server now in force (and the reason logged), when a replaced policy no longer allows it whole; a replacement that still does keeps it', (t) => {
  const pod = new PodPolicy(new ServerPolicy(spec('api-1', 'api', 'all-unauthenticated'), nets));
  const terminations: string[] = [];
  const az = new PolicyConnAuthz(pod, { ip: WEB, identity: web }, 8080, () => t.fail('no denial'), (r) => terminations.push(r));
  t.true(az.tcp().allowed);
  const revoked: string[] = [];
  const off = az.watch((by) => revoked.push(`${by.kind}/${by.name}:${by.port}`));
  t.is(pod.watching, 1);
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'all-authenticated'), nets));
  t.deepEqual(revoked, [], 'the client has an identity: still allowed');
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'all-unauthenticated', [httpOnly]), nets));
  t.is(revoked.length, 1, 'only some HTTP requests may pass now: not a whole connection');
  t.deepEqual(revoked, ['serviceaccount/api:8080'], 'the server of the policy that no longer allows it');
  t.is(terminations.length, 1);
  t.regex(terminations[0]!, /only HTTP requests may be allowed/);
  t.is(pod.watching, 0, 'a revoked connection stops watching');
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'deny'), nets));
  t.is(revoked.length, 1, 'once');
  off();

  const closed = new PolicyConnAuthz(pod, { ip: WEB, identity: web }, 8080, () => {});
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'all-unauthenticated'), nets));
  const stop = closed.watch(() => t.fail('a closed connection is not revoked'));
  stop();
  t.is(pod.watching, 0);
  pod.replace(new ServerPolicy(spec('api-1', 'api', 'deny'), nets));
});

test('Authorizer: a new table re-decides the connections of the pods whose compiled policy changed, only those; terminations are logged once per client and server', (t) => {
  const logs: string[] = [];
  const a = new Authorizer((m) => logs.push(m));
  a.load(table(spec('api-1', 'api', 'all-unauthenticated')));
  const dbBefore = a.policy(DB);
  const revoked: string[] = [];
  for (const [ip, port] of [[API, 8080], [API, 8080], [DB, 5432]] as const) {
    const az = a.authorize(conn(ip, port)).authz!;
    t.true(az.tcp().allowed);
    az.watch(() => revoked.push(`${ip}:${port}`));
  }
  t.is(a.watching(API), 2);
  t.is(a.watching(DB), 1);
  a.load(table(spec('api-1', 'api', 'all-unauthenticated')));
  t.deepEqual(revoked, [], 'the same table: nothing decided again');
  a.load({ ...table(spec('api-1', 'api', 'deny')), generation: 7 });
  t.deepEqual(revoked, [`${API}:8080`, `${API}:8080`], 'api\'s two connections, not db\'s');
  t.is(a.policy(DB), dbBefore, 'db\'s compiled policy is kept as it was');
  t.is(a.watching(DB), 1);
  t.is(a.generation, 7);
  const said = logs.filter((l) => l.startsWith('connection terminated due to policy change'));
  t.is(said.length, 1, 'two connections of one client to one server: said once');
  t.regex(said[0]!, /no longer allows spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web \(10\.244\.1\.2\) whole connections to pod shop\/api-1 port 8080: deny: no client may connect; said once per client and server/);
  const fresh = a.authorize(conn(API)).authz!;
  t.is(fresh.verdict, 'deny', 'a new connection gets the new policy');
});

test('Authorizer: a change of the cluster networks decides every pod\'s connections again', (t) => {
  const a = new Authorizer(() => {});
  a.load(table(spec('api-1', 'api', 'cluster-unauthenticated')));
  const az = a.authorize(conn(API, 8080, '192.168.7.7')).authz!;
  t.true(az.tcp().allowed);
  let revoked = 0;
  az.watch(() => revoked++);
  a.load({ ...table(spec('api-1', 'api', 'cluster-unauthenticated')), networks: '10.0.0.0/8' });
  t.is(revoked, 1, '192.168.7.7 is outside the cluster networks now');
});

test('Authorizer: a skip-inbound port of a meshed pod has no policy (not authorized, not counted), its other ports do', (t) => {
  const a = new Authorizer(() => {});
  a.load(table(spec('api-1', 'api', 'deny'), undefined, { skipInbound: '9000-9100,7000' }));
  t.is(a.authorize(conn(API, 9050)).authz, null);
  t.is(a.authorize(conn(API, 7000)).authz, null);
  t.is(a.authorizeVerified(conn(API, 7000), 'spiffe://cluster.local/ns/shop/sa/web'), null, 'through a tunnel too');
  t.is(a.authorize(conn(API, 8080)).authz?.verdict, 'deny');
  t.is(a.authorize(conn(DB, 9050)).authz?.verdict, 'allow', 'another pod\'s ports are its own');
  a.load(table(spec('api-1', 'api', 'deny')));
  t.is(a.authorize(conn(API, 9050)).authz?.verdict, 'deny', 'the annotation removed: the port is policed again');
});

test('metrics: a terminated connection counts in inbound_tcp_authz_allow_total (as allowed) and in inbound_tcp_authz_terminate_total, labelled as Linkerd\'s: as a denial by the server now in force', async (t) => {
  const workloads = { byIp: (ip: string) => (ip === API ? { namespace: 'shop', pod: 'api-1', kind: 'deployment', name: 'api' } : null), generation: () => 1 };
  const sink = new MetricsSink({ workloads, processMetrics: false });
  const allowed = { allowed: true, server: { group: '', kind: 'default', name: 'all-unauthenticated', port: 5432 }, authz: { group: '', kind: 'default', name: 'all-unauthenticated' } };
  const by = { group: '', kind: 'serviceaccount', name: 'api', port: 5432 };
  const close = (c: number, terminated: boolean): ConnCloseEvent => ({
    direction: 'inbound', sourceIp: WEB, sourcePort: c, sourcePodKey: 0n, destIp: API, destPort: 5432, connId: c, clientId: 'spiffe://cluster.local/ns/shop/sa/web',
    protocol: 'opaque', detectedBy: 'opaque-port', detectMs: 0, bytesIn: 1, bytesOut: 1, durationMs: 1, authz: terminated ? { ...allowed, terminatedBy: by } : allowed,
  });
  sink.connAuthz(close(1, false));
  sink.connAuthz(close(2, true));
  sink.connAuthz(close(3, true));
  sink.connAuthz({ ...close(4, false), authz: { allowed: false, server: by } });
  const e = parseExposition(await sink.exposition());
  t.is(sum(e, 'inbound_tcp_authz_allow_total', {}), 3);
  t.is(sum(e, 'inbound_tcp_authz_terminate_total', {}), 2);
  const deny = e.samples.find((s) => s.name === 'inbound_tcp_authz_deny_total')!;
  const term = e.samples.find((s) => s.name === 'inbound_tcp_authz_terminate_total')!;
  t.deepEqual(term.labels, deny.labels, 'the labels of a denial by the same server');
  t.like(term.labels, { srv_kind: 'serviceaccount', srv_name: 'api', srv_port: '5432', target_addr: `${API}:5432`, client_id: 'spiffe://cluster.local/ns/shop/sa/web', pod: 'api-1' });
  t.false('authz_name' in term.labels, 'no authz_* labels');
  t.is(e.types.get('inbound_tcp_authz_terminate_total'), 'counter');

  // An upgraded HTTP/1 connection: its allow is its upgrade request's (an HTTP decision), so as
  // a connection only its termination counts; untouched by a change, nothing.
  sink.connAuthz({ ...close(5, true), protocol: 'http1', authz: { ...allowed, terminatedBy: by, upgraded: true } });
  sink.connAuthz({ ...close(6, false), protocol: 'http1', authz: { ...allowed, upgraded: true } });
  const u = parseExposition(await sink.exposition());
  t.is(sum(u, 'inbound_tcp_authz_allow_total', {}), 3, 'not counted again as allowed');
  t.is(sum(u, 'inbound_tcp_authz_terminate_total', {}), 3);
});
