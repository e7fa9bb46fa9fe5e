// Topology aware routing as kube-proxy applies it (pkg/proxy/topology.go): a Service port's ready
// endpoints narrowed to those hinted for the asking node's zone (or node), only when every ready
// endpoint is hinted and one is for us; otherwise all. Through resolveTarget (the balancer's
// endpoint set) and the store (the zone learned after start).
import test from 'ava';
import { resolveTarget, DiscoveryStore } from '../src/discovery/store.ts';
import { topologyMode } from '../src/discovery/topology.ts';
import { DISCOVERY_VERSION, type DiscoEndpoint, type DiscoService, type DiscoSlice } from '../src/discovery/model.ts';

const svc: DiscoService = { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} };
const slice = (endpoints: DiscoEndpoint[], name = 'web-a'): DiscoSlice => ({ namespace: 'shop', name, service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints });
/** A ready endpoint in `zone`, hinted for `forZones` (default: its own zone, as PreferClose writes). */
const ep = (last: number, zone: string, o: Partial<DiscoEndpoint> = {}): DiscoEndpoint => ({ ip: `10.1.0.${last}`, ready: true, node: `n-${zone}`, zone, forZones: [zone], ...o });
const ips = (slices: DiscoSlice[], me: { node?: string; zone?: string }) => resolveTarget(svc, svc.ports[0]!, slices, me).endpoints.map((e) => e.ip);

const a1 = ep(1, 'a');
const a2 = ep(2, 'a');
const b1 = ep(3, 'b');
const b2 = ep(4, 'b');

test('every ready endpoint hinted: a client in zone a gets zone a\'s only, one in b gets b\'s; the target says so', (t) => {
  t.deepEqual(ips([slice([a1, b1, a2, b2])], { zone: 'a' }), ['10.1.0.1', '10.1.0.2']);
  t.deepEqual(ips([slice([a1, b1, a2, b2])], { zone: 'b' }), ['10.1.0.3', '10.1.0.4']);
  const target = resolveTarget(svc, svc.ports[0]!, [slice([a1, b1, a2, b2])], { zone: 'a' });
  t.is(target.topology, 'PreferSameZone: 2 of 4 ready endpoints, those hinted for zone a');
  t.deepEqual(target.problems, []);
});

test('hints across several slices count together (one slice per zone is how the controller often writes them)', (t) => {
  t.deepEqual(ips([slice([a1, a2], 'web-a'), slice([b1, b2], 'web-b')], { zone: 'b' }), ['10.1.0.3', '10.1.0.4']);
});

test('an endpoint hinted for several zones serves each of them (Auto lends endpoints to a zone short of them)', (t) => {
  const lent = ep(3, 'b', { forZones: ['a', 'b'] });
  t.deepEqual(ips([slice([a1, lent, b2])], { zone: 'a' }), ['10.1.0.1', '10.1.0.3']);
  t.deepEqual(ips([slice([a1, lent, b2])], { zone: 'b' }), ['10.1.0.3', '10.1.0.4']);
});

test('one ready endpoint without a hint: every endpoint is used, and the target says why', (t) => {
  const bare = ep(5, 'b', { forZones: undefined });
  t.deepEqual(ips([slice([a1, a2, b1, bare])], { zone: 'a' }), ['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.5']);
  t.is(resolveTarget(svc, svc.ports[0]!, [slice([a1, bare])], { zone: 'a' }).topology, 'topology hints ignored: one or more ready endpoints has no zone hint; every endpoint is used');
});

test('no endpoint hinted for my zone: every endpoint (the client\'s zone is not left without any)', (t) => {
  t.deepEqual(ips([slice([b1, b2])], { zone: 'a' }), ['10.1.0.3', '10.1.0.4']);
  t.is(resolveTarget(svc, svc.ports[0]!, [slice([b1, b2])], { zone: 'a' }).topology, 'topology hints ignored: no endpoint is hinted for zone a; every endpoint is used');
});

test('my zone unknown (no label, no access, --pods): hints ignored, every endpoint, and said', (t) => {
  t.deepEqual(ips([slice([a1, b1])], {}), ['10.1.0.1', '10.1.0.3']);
  t.deepEqual(ips([slice([a1, b1])], { node: 'n-a' }), ['10.1.0.1', '10.1.0.3']);
  t.regex(resolveTarget(svc, svc.ports[0]!, [slice([a1, b1])], {}).topology!, /zone is unknown/);
});

test('no hints at all: every endpoint, nothing said', (t) => {
  const plain = [ep(1, 'a', { forZones: undefined }), ep(3, 'b', { forZones: undefined })];
  t.deepEqual(ips([slice(plain)], { zone: 'a' }), ['10.1.0.1', '10.1.0.3']);
  t.is(resolveTarget(svc, svc.ports[0]!, [slice(plain)], { zone: 'a' }).topology, undefined);
  t.deepEqual(topologyMode([], { zone: 'a' }), { mode: null });
});

test('not-ready endpoints neither count for the rule nor are chosen: an unhinted one does not turn hints off; my zone\'s only one not ready means every ready one', (t) => {
  const unhintedNotReady = ep(5, 'b', { ready: false, forZones: undefined });
  t.deepEqual(ips([slice([a1, b1, unhintedNotReady])], { zone: 'a' }), ['10.1.0.1']);
  const aDown = ep(1, 'a', { ready: false });
  t.deepEqual(ips([slice([aDown, b1, b2])], { zone: 'a' }), ['10.1.0.3', '10.1.0.4'], 'zone a has no ready endpoint: the others, not none');
});

test('terminating fallback is unaffected: with no ready endpoint, those still serving are used whatever their hints', (t) => {
  const drainingA = ep(1, 'a', { ready: false, terminating: true });
  const drainingB = ep(3, 'b', { ready: false, terminating: true });
  t.deepEqual(ips([slice([drainingA, drainingB])], { zone: 'a' }), ['10.1.0.1', '10.1.0.3']);
  t.deepEqual(ips([slice([drainingA, b1])], { zone: 'a' }), ['10.1.0.3'], 'a ready endpoint anywhere wins over a draining one in my zone, as kube-proxy');
});

test('internalTrafficPolicy Local ignores hints: this node\'s endpoints, as before', (t) => {
  const local: DiscoService = { ...svc, nodeLocal: true };
  const t1 = resolveTarget(local, local.ports[0]!, [slice([a1, b1])], { node: 'n-b', zone: 'a' });
  t.deepEqual(t1.endpoints.map((e) => e.ip), ['10.1.0.3']);
  t.is(t1.topology, undefined);
});

test('node hints (PreferSameNode) come first when every ready endpoint has one for some node and one is for mine; else zone hints', (t) => {
  const n = (last: number, node: string, zone: string): DiscoEndpoint => ({ ip: `10.1.0.${last}`, ready: true, node, zone, forZones: [zone], forNodes: [node] });
  const eps = [n(1, 'n1', 'a'), n(2, 'n2', 'a'), n(3, 'n3', 'b')];
  t.deepEqual(ips([slice(eps)], { node: 'n2', zone: 'a' }), ['10.1.0.2']);
  t.is(resolveTarget(svc, svc.ports[0]!, [slice(eps)], { node: 'n2', zone: 'a' }).topology, 'PreferSameNode: 1 of 3 ready endpoints, those hinted for node n2');
  t.deepEqual(ips([slice(eps)], { node: 'n4', zone: 'a' }), ['10.1.0.1', '10.1.0.2'], 'no endpoint for my node: my zone\'s');
  t.deepEqual(ips([slice(eps)], { node: 'n4', zone: 'c' }), ['10.1.0.1', '10.1.0.2', '10.1.0.3'], 'nor my zone: all');
  t.deepEqual(ips([slice([n(1, 'n1', 'a'), { ...n(2, 'n2', 'a'), forNodes: undefined }])], { node: 'n1', zone: 'a' }), ['10.1.0.1', '10.1.0.2'], 'one without a node hint: zone hints decide');
  t.deepEqual(ips([slice([{ ...n(1, 'n1', 'a'), forZones: undefined }, { ...n(2, 'n2', 'b'), forZones: undefined }])], { node: 'n1' }), ['10.1.0.1'], 'node hints need no zone');
});

test('the store: a zone learned after start re-resolves every Service port and tells the listeners', (t) => {
  const s = new DiscoveryStore({ node: 'n-a' });
  for (const m of [{ type: 'reset', version: DISCOVERY_VERSION }, { type: 'service', op: 'set', service: svc }, { type: 'slice', op: 'set', slice: slice([a1, b1]) }, { type: 'synced' }] as const) s.apply(m as any);
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.1', '10.1.0.3'], 'no zone yet: all');
  const heard: unknown[] = [];
  s.onChange((k) => heard.push(k));
  const gen = s.generation;
  s.setZone('b');
  t.is(s.zone, 'b');
  t.deepEqual(heard, ['all']);
  t.true(s.generation > gen);
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.3']);
  s.setZone('b');
  t.is(heard.length, 1, 'the same zone again changes nothing');
  s.setZone(undefined);
  t.deepEqual(s.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.1', '10.1.0.3']);
});
