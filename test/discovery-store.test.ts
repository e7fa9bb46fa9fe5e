// The agent's DiscoveryStore: ClusterIP:port resolution through EndpointSlices, deltas, the
// staged resync (the old world answers until "synced"), pod IPs (also when an address is
// reused), generations and listeners.
import test from 'ava';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { prepare } from '../src/discovery/hub.ts';
import { DISCOVERY_VERSION, parseMessage, type DiscoMessage, type DiscoPod, type DiscoService, type DiscoSlice } from '../src/discovery/model.ts';

const web: DiscoService = { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'admin', port: 9000, targetPort: 9001 }], annotations: {} };
const sliceA: DiscoSlice = {
  namespace: 'shop', name: 'web-a', service: 'web', ports: [{ name: 'http', port: 8080 }, { name: 'admin', port: 9001 }],
  endpoints: [{ ip: '10.1.0.6', ready: true, pod: 'web-2', node: 'n2' }, { ip: '10.1.0.5', ready: true, pod: 'web-1', node: 'n1', zone: 'z1' }, { ip: '10.1.0.7', ready: false, pod: 'web-3' }],
};
const sliceB: DiscoSlice = { namespace: 'shop', name: 'web-b', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, pod: 'web-1' }, { ip: '10.2.0.9', ready: true }] };
const pod = (name: string, ip: string, owner = 'web'): DiscoPod => ({ namespace: 'shop', name, ip, kind: 'deployment', owner, serviceAccount: 'default' });

const reset: DiscoMessage = { type: 'reset', version: DISCOVERY_VERSION };
const synced: DiscoMessage = { type: 'synced' };
const setSvc = (service: DiscoService): DiscoMessage => ({ type: 'service', op: 'set', service });
const setSlice = (slice: DiscoSlice): DiscoMessage => ({ type: 'slice', op: 'set', slice });
const setPod = (p: DiscoPod): DiscoMessage => ({ type: 'pod', op: 'set', pod: p });
const del = (type: 'service' | 'slice' | 'pod', key: string): DiscoMessage => ({ type, op: 'delete', key });

function world(...ms: DiscoMessage[]): DiscoveryStore {
  const s = new DiscoveryStore();
  for (const m of [reset, ...ms, synced]) s.apply(m);
  return s;
}

test('a ClusterIP:port resolves to the ready endpoints at the slice port of the same name, deduplicated and sorted', (t) => {
  const s = world(setSvc(web), setSlice(sliceA), setSlice(sliceB));
  const http = s.byVip('10.96.0.10', 80)!;
  t.is(http.service.name, 'web');
  t.is(http.port.name, 'http');
  t.deepEqual(http.endpoints, [
    { ip: '10.1.0.5', port: 8080, pod: 'web-1', node: 'n1', zone: 'z1' },
    { ip: '10.1.0.6', port: 8080, pod: 'web-2', node: 'n2' },
    { ip: '10.2.0.9', port: 8080 },
  ]);
  t.deepEqual(http.problems, []);
  // The admin port exists in one slice only: the other slice's endpoints do not serve it.
  t.deepEqual(s.byVip('10.96.0.10', 9000)!.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.1.0.5:9001', '10.1.0.6:9001']);
  t.is(s.byVip('10.96.0.10', 81), null, 'a port the Service does not have');
  t.is(s.byVip('10.96.0.11', 80), null, 'not a ClusterIP');
  t.is(s.byVip('10.1.0.5', 8080), null, 'a pod IP goes to the original destination');
  t.deepEqual(s.counts(), { services: 1, slices: 2, endpoints: 5, pods: 0, routes: 0, failedClosed: 0, access: 0 });
});

test('a headless Service has no ClusterIP to resolve; a Service port no slice names says why it has no endpoints', (t) => {
  const headless = { ...web, name: 'db', clusterIPs: [] };
  const named = { ...web, name: 'api', clusterIPs: ['10.96.0.20'], ports: [{ name: 'grpc', port: 443, targetPort: 'grpc' }] };
  const s = world(setSvc(headless), setSlice({ ...sliceA, name: 'db-a', service: 'db' }), setSvc(named), setSlice({ ...sliceA, name: 'api-a', service: 'api' }));
  t.is(s.byVip('10.96.0.10', 80), null);
  t.truthy(s.service('shop/db'));
  const api = s.byVip('10.96.0.20', 443)!;
  t.deepEqual(api.endpoints, []);
  t.deepEqual(api.problems, ['no endpoint declares the container port named "grpc" (targetPort of port 443)']);
  const numbered = world(setSvc({ ...named, ports: [{ name: 'grpc', port: 443, targetPort: 8443 }] }), setSlice({ ...sliceA, name: 'api-a', service: 'api' }));
  t.deepEqual(numbered.byVip('10.96.0.20', 443)!.problems, ['no EndpointSlice has a port named "grpc" (port 443)']);
  t.deepEqual(world(setSvc(named)).byVip('10.96.0.20', 443), { service: named, port: named.ports[0]!, endpoints: [], problems: [] }, 'no slice yet: no endpoints, nothing wrong');
});

test('a headless Service resolves for route backends by name and port: ready endpoints at the targetPort, hints as for any; without ports, at the asked port; never by its pod IPs', (t) => {
  const db: DiscoService = { ...web, name: 'db', clusterIPs: [], headless: true };
  const s = world(setSvc(db), setSlice({ ...sliceA, name: 'db-a', service: 'db' }), setSlice({ ...sliceB, name: 'db-b', service: 'db' }));
  t.deepEqual(s.target('shop/db', 80)!.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.1.0.5:8080', '10.1.0.6:8080', '10.2.0.9:8080'], 'port 80 -> the slices\' "http" port; not-ready 10.1.0.7 left out');
  t.deepEqual(s.target('shop/db', 9000)!.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.1.0.5:9001', '10.1.0.6:9001']);
  t.is(s.target('shop/db', 81), null, 'a port the Service does not have');
  t.is(s.byVip('10.1.0.5', 8080), null, 'a connection to one of its pods goes to the original destination');
  // Zone hints narrow a headless Service's endpoints as a ClusterIP one's.
  const hinted = new DiscoveryStore({ zone: 'z1' });
  for (const m of [reset, setSvc(db), setSlice({ ...sliceB, name: 'db-b', service: 'db', endpoints: [{ ip: '10.1.0.5', ready: true, zone: 'z1', forZones: ['z1'] }, { ip: '10.2.0.9', ready: true, zone: 'z2', forZones: ['z2'] }] }), synced]) hinted.apply(m);
  t.deepEqual(hinted.target('shop/db', 80)!.endpoints.map((e) => e.ip), ['10.1.0.5']);

  // No ports: the EndpointSlice controller writes slices without ports; any asked port is the endpoints' port.
  const bare: DiscoService = { ...db, ports: [] };
  const b = world(setSvc(bare), setSlice({ ...sliceA, name: 'db-a', service: 'db', ports: [] }));
  const at5432 = b.target('shop/db', 5432)!;
  t.deepEqual(at5432.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.1.0.5:5432', '10.1.0.6:5432']);
  t.deepEqual(at5432.port, { name: '', port: 5432, targetPort: 5432 });
  t.deepEqual(at5432.problems, []);
  t.deepEqual(b.target('shop/db', 8080)!.endpoints.map((e) => e.port), [8080, 8080]);
  t.is(world(setSvc({ ...bare, headless: undefined } as DiscoService)).target('shop/db', 5432), null, 'a Service with no ports that is not headless has nothing to resolve');
});

test('deltas: a slice change reaches byVip and names the Service to listeners; deletes remove', (t) => {
  const s = world(setSvc(web), setSlice(sliceA));
  const heard: string[][] = [];
  s.onChange((keys) => heard.push(keys === 'all' ? ['all'] : [...keys]));
  t.is(s.byVip('10.96.0.10', 80)!.endpoints.length, 2);
  s.apply(setSlice({ ...sliceA, endpoints: [{ ip: '10.1.0.6', ready: false }] }));
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints, [], 'the cached target was dropped');
  // A slice moving to another Service changes both.
  s.apply(setSvc({ ...web, name: 'web2', clusterIPs: ['10.96.0.12'] }));
  s.apply(setSlice({ ...sliceA, service: 'web2' }));
  t.is(s.byVip('10.96.0.12', 80)!.endpoints.length, 2);
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints, [], 'the Service it left has none');
  s.apply(del('slice', 'shop/web-a'));
  t.deepEqual(s.byVip('10.96.0.12', 80)!.endpoints, []);
  s.apply(del('service', 'shop/web'));
  t.is(s.byVip('10.96.0.10', 80), null);
  s.apply(del('service', 'shop/nothing')); // unknown keys are no-ops
  s.apply(del('slice', 'shop/nothing'));
  s.apply(del('pod', 'shop/nothing'));
  t.deepEqual(heard, [['shop/web'], ['shop/web2'], ['shop/web', 'shop/web2'], ['shop/web2'], ['shop/web'], ['shop/nothing']]);
});

test('a Service whose ClusterIP changes answers only on the new one; a VIP taken over by another Service stays with it', (t) => {
  const s = world(setSvc(web), setSlice(sliceA));
  s.apply(setSvc({ ...web, clusterIPs: ['10.96.0.11'] }));
  t.is(s.byVip('10.96.0.10', 80), null);
  t.is(s.byVip('10.96.0.11', 80)!.endpoints.length, 2);
  // Another Service gets the old address while the first still lists it (a recreate's order of events).
  s.apply(setSvc({ ...web, name: 'other', clusterIPs: ['10.96.0.11'] }));
  s.apply(del('service', 'shop/web'));
  t.is(s.byVip('10.96.0.11', 80)!.service.name, 'other');
});

test('resync: after a reset the old world answers until synced, then the new one replaces it whole', (t) => {
  const s = world(setSvc(web), setSlice(sliceA), setPod(pod('web-1', '10.1.0.5')));
  t.true(s.synced);
  const heard: Array<string> = [];
  s.onChange((keys) => heard.push(keys === 'all' ? 'all' : [...keys].join()));
  const gen = s.generation;
  s.apply(reset);
  t.true(s.staged);
  s.apply(setSvc({ ...web, clusterIPs: ['10.96.0.99'] }));
  s.apply(setPod(pod('web-2', '10.1.0.6')));
  t.truthy(s.byVip('10.96.0.10', 80), 'the old world still answers mid-snapshot');
  t.is(s.podByIp('10.1.0.5')?.name, 'web-1');
  t.is(s.podByIp('10.1.0.6'), undefined);
  t.is(s.generation, gen, 'nothing published yet');
  t.deepEqual(heard, []);
  s.apply(synced);
  t.false(s.staged);
  t.is(s.byVip('10.96.0.10', 80), null, 'what the new snapshot lacks is gone');
  t.deepEqual(s.byVip('10.96.0.99', 80)!.endpoints, [], 'its slice was not in the new snapshot');
  t.is(s.podByIp('10.1.0.5'), undefined);
  t.is(s.podByIp('10.1.0.6')?.name, 'web-2');
  t.deepEqual(heard, ['all']);
  t.true(s.generation > gen);
});

test('a snapshot cut off before synced is dropped and the live world stays', (t) => {
  const s = world(setSvc(web));
  s.apply(reset);
  s.apply(setSvc({ ...web, name: 'half' }));
  s.dropStaged();
  t.false(s.staged);
  t.truthy(s.service('shop/web'));
  t.is(s.service('shop/half'), undefined);
  // A later delta goes to the live world again.
  s.apply(setSvc({ ...web, name: 'later', clusterIPs: ['10.96.0.30'] }));
  t.truthy(s.byVip('10.96.0.30', 80));
});

test('pod IPs: an address reused by a new pod answers with the newest holder; the old pod leaving does not take it away', (t) => {
  const s = world(setPod(pod('old', '10.1.0.5', 'a')));
  t.is(s.podByIp('10.1.0.5')?.name, 'old');
  s.apply(setPod(pod('new', '10.1.0.5', 'b')));
  t.is(s.podByIp('10.1.0.5')?.name, 'new');
  // The old pod's late status update keeps its rank, it does not take the address back.
  s.apply(setPod({ ...pod('old', '10.1.0.5', 'a'), node: 'n9' }));
  t.is(s.podByIp('10.1.0.5')?.name, 'new');
  s.apply(del('pod', 'shop/old'));
  t.is(s.podByIp('10.1.0.5')?.name, 'new');
  s.apply(setPod(pod('new', '10.1.0.8', 'b')));
  t.is(s.podByIp('10.1.0.5'), undefined, 'moved away');
  t.is(s.podByIp('10.1.0.8')?.owner, 'b');
  s.apply(del('pod', 'shop/new'));
  t.is(s.podByIp('10.1.0.8'), undefined);
  t.is(s.counts().pods, 0);
});

test('generations: every live change moves generation; only pod changes and swaps move podGeneration', (t) => {
  const s = world(setSvc(web));
  const g0 = s.generation;
  const p0 = s.podGeneration;
  s.apply(setSlice(sliceA));
  t.true(s.generation > g0);
  t.is(s.podGeneration, p0, 'a slice change keeps pod labels cached');
  s.apply(setPod(pod('web-1', '10.1.0.5')));
  t.true(s.podGeneration > p0);
  const p1 = s.podGeneration;
  s.apply(reset);
  s.apply(setPod(pod('web-1', '10.1.0.5')));
  t.is(s.podGeneration, p1, 'staged changes are not visible');
  s.apply(synced);
  t.true(s.podGeneration > p1);
  t.is(s.lastUpdateAt > 0, true);
});

test('a listener that throws does not keep the others from hearing; its error comes out after them, the state applied', (t) => {
  const s = world(setSvc(web));
  const heard: string[] = [];
  s.onChange(() => {
    throw new Error('boom');
  });
  const off = s.onChange(() => heard.push('second'));
  t.throws(() => s.apply(setSlice(sliceA)), { message: 'boom' });
  t.deepEqual(heard, ['second']);
  t.is(s.byVip('10.96.0.10', 80)!.endpoints.length, 2);
  off();
  t.throws(() => s.apply(del('slice', 'shop/web-a')));
  t.deepEqual(heard, ['second'], 'unsubscribed');
});

test('a replica fed replay() and then what onApply() hears answers as the store does, also while a snapshot is half received', (t) => {
  const s = world(setSvc(web), setSlice(sliceA), setPod(pod('old', '10.1.0.5')), setPod(pod('web-1', '10.1.0.5')), setPod(pod('web-2', '10.1.0.6')));
  const heard: Array<DiscoMessage | 'drop-staged'> = [];
  s.onApply((m) => heard.push(m));
  s.apply(setSlice(sliceB));
  s.apply(reset); // a resync begins: the live world answers meanwhile
  s.apply(setSvc(web));
  s.apply(setPod(pod('web-9', '10.1.0.9')));
  const replica = new DiscoveryStore();
  for (const m of s.replay()) replica.apply(m);
  const same = (what: string) => {
    t.deepEqual(replica.byVip('10.96.0.10', 80), s.byVip('10.96.0.10', 80), what);
    for (const ip of ['10.1.0.5', '10.1.0.6', '10.1.0.9']) t.deepEqual(replica.podByIp(ip), s.podByIp(ip), `${what}: ${ip}`);
    t.deepEqual(replica.counts(), s.counts(), what);
    t.is(replica.staged, s.staged, what);
    t.is(replica.synced, s.synced, what);
  };
  same('replayed mid-snapshot');
  t.is(replica.podByIp('10.1.0.5')?.name, 'web-1', 'the newer holder of a shared address still answers');
  // The rest of the snapshot reaches both; the replica also hears what the store heard before it existed, not again.
  for (const m of [setSlice(sliceA), setPod(pod('web-1', '10.1.0.5')), synced, del('pod', 'shop/web-1')] as DiscoMessage[]) {
    heard.length = 0;
    s.apply(m);
    for (const h of heard) if (h !== 'drop-staged') replica.apply(h);
  }
  same('after the snapshot and a delta');
  t.is(s.podByIp('10.1.0.9')?.name, 'web-9');
  s.apply(reset);
  s.dropStaged();
  t.deepEqual(heard.slice(-2), [reset, 'drop-staged'], 'a dropped snapshot is heard too');
});

test('access records: indexed by their destination ServiceAccount, staged until synced, moved when the destination changes, replayed', (t) => {
  const rec = (name: string, sa: string) => ({ namespace: 'shop', name, destination: { serviceAccount: sa, namespace: 'shop' }, sources: [{ namespace: 'shop', serviceAccount: 'web' }], rules: [{ kind: 'TCPRoute' as const, name: 'all' }] });
  const set = (name: string, sa: string): DiscoMessage => ({ type: 'access', op: 'set', access: rec(name, sa) });
  const s = world(set('b', 'api'), set('a', 'api'), set('c', 'db'));
  t.deepEqual(s.accessFor('shop', 'api').map((r) => r.name), ['a', 'b'], 'sorted by name');
  const g = s.accessGeneration;
  s.apply(set('b', 'db'));
  t.deepEqual(s.accessFor('shop', 'api').map((r) => r.name), ['a']);
  t.deepEqual(s.accessFor('shop', 'db').map((r) => r.name), ['b', 'c']);
  t.true(s.accessGeneration > g);
  s.apply({ type: 'access', op: 'delete', key: 'TrafficTarget/shop/c' });
  t.deepEqual(s.accessFor('shop', 'db').map((r) => r.name), ['b']);
  s.apply(reset);
  s.apply(set('x', 'api'));
  t.deepEqual(s.accessFor('shop', 'api').map((r) => r.name), ['a'], 'the old world answers until synced');
  s.apply(synced);
  t.deepEqual(s.accessFor('shop', 'api').map((r) => r.name), ['x']);
  t.is(s.counts().access, 1);
  const copy = new DiscoveryStore();
  for (const m of s.replay()) copy.apply(m);
  t.deepEqual(copy.accessFor('shop', 'api'), s.accessFor('shop', 'api'));
});

test('a Service port whose endpoints are all terminating goes to those still serving, as kube-proxy does (KEP-1669); a ready one wins again; never one not serving', (t) => {
  // From the API server's objects through the controller's conversion and the line an agent reads.
  const k8sSlice = (eps: Array<[string, { ready: boolean; serving: boolean; terminating: boolean }]>) => ({
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4',
    metadata: { name: 'web-a', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map(([ip, conditions]) => ({ addresses: [ip], conditions })),
  });
  const line = (o: object) => parseMessage(prepare('slice', o).line!);
  const s = world(setSvc(web));
  // A rollout's last old pod draining (preStop, graceful shutdown) before its replacement is ready.
  s.apply(line(k8sSlice([
    ['10.1.0.5', { ready: false, serving: true, terminating: true }],
    ['10.1.0.6', { ready: false, serving: false, terminating: true }],
    ['10.1.0.7', { ready: false, serving: false, terminating: false }],
  ])));
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.5']);
  s.apply(line(k8sSlice([
    ['10.1.0.5', { ready: false, serving: true, terminating: true }],
    ['10.1.0.8', { ready: true, serving: true, terminating: false }],
  ])));
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.8'], 'a ready endpoint: the terminating ones are left alone');
});

test('internalTrafficPolicy Local: a node\'s agent sends only to endpoints on its node, none elsewhere (and says why), as kube-proxy, Cilium and Linkerd do', (t) => {
  const k8sService = (policy: string | undefined) => ({
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'logs', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.30', ports: [{ name: 'fwd', port: 24224, targetPort: 24224 }], ...(policy ? { internalTrafficPolicy: policy } : {}) },
  });
  const k8sSlice = {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4',
    metadata: { name: 'logs-a', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'logs' } },
    ports: [{ name: 'fwd', port: 24224, protocol: 'TCP' }],
    endpoints: [
      { addresses: ['10.1.0.5'], conditions: { ready: true }, nodeName: 'n1' },
      { addresses: ['10.2.0.5'], conditions: { ready: true }, nodeName: 'n2' },
      { addresses: ['10.1.0.6'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'n1' },
    ],
  };
  const storeOn = (node: string, policy?: string) => {
    const s = new DiscoveryStore({ node });
    for (const m of [reset, parseMessage(prepare('service', k8sService(policy)).line!), parseMessage(prepare('slice', k8sSlice).line!), synced]) s.apply(m);
    return s;
  };
  const ips = (s: DiscoveryStore) => s.byVip('10.96.0.30', 24224)!.endpoints.map((e) => e.ip);
  // A DaemonSet's node-local collector: each node's clients reach their own node's pod.
  t.deepEqual(ips(storeOn('n1', 'Local')), ['10.1.0.5']);
  t.deepEqual(ips(storeOn('n2', 'Local')), ['10.2.0.5']);
  const none = storeOn('n3', 'Local').byVip('10.96.0.30', 24224)!;
  t.deepEqual(none.endpoints, [], 'no endpoint on this node: none, never another node\'s');
  t.deepEqual(none.problems, ['internalTrafficPolicy Local: no endpoint on this node (n3)']);
  // Cluster (the default) balances over every node.
  t.deepEqual(ips(storeOn('n1', 'Cluster')), ['10.1.0.5', '10.2.0.5']);
  t.deepEqual(ips(storeOn('n1')), ['10.1.0.5', '10.2.0.5']);
});
