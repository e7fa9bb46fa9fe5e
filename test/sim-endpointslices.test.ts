// The EndpointSlice controller stand-in's decisions (pure), checked against the schema.
import test from 'ava';
import { EndpointSlice } from 'kubernetes-models/discovery.k8s.io/v1';
import type { KubeObject } from '../src/sim/index.ts';
import { serviceObject, setReadiness } from '../src/sim/cluster-objects.ts';
import { reconcileSlices, resolveTargetPort } from '../src/sim/endpointslices.ts';

let uid = 0;
function pod(name: string, o: { ip?: string; node?: string; labels?: Record<string, string>; ready?: boolean; ports?: object[]; namespace?: string; phase?: string } = {}): KubeObject {
  const p: KubeObject = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: o.namespace ?? 'shop', uid: `00000000-0000-4000-8000-${String(++uid).padStart(12, '0')}`, labels: o.labels ?? { app: 'web' } },
    spec: { nodeName: o.node ?? 'node-a', containers: [{ name: 'app', image: 'x', ports: o.ports ?? [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }] },
    status: { phase: o.phase ?? 'Running', ...(o.ip === '' ? {} : { podIP: o.ip ?? `10.244.1.${uid + 1}` }) },
  };
  setReadiness(p, o.ready ?? true);
  return p;
}

const svc = (o: Partial<Parameters<typeof serviceObject>[0]> = {}): KubeObject => {
  const s = serviceObject({ name: 'web', namespace: 'shop', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }], ...o });
  s.metadata.uid = '11111111-2222-4333-8444-555555555555';
  return s;
};
const zones = (n: string) => ({ 'node-a': 'zone-a', 'node-b': 'zone-b' })[n];

/** Applies changes as the API server would (names for generateName). */
function applied(existing: KubeObject[], c: ReturnType<typeof reconcileSlices>): KubeObject[] {
  const gone = new Set(c.delete.map((s) => s.metadata.name));
  const updated = new Map(c.update.map((s) => [s.metadata.name, s]));
  let n = existing.length;
  return [
    ...existing.filter((s) => !gone.has(s.metadata.name)).map((s) => updated.get(s.metadata.name) ?? s),
    ...c.create.map((s) => ({ ...s, metadata: { ...s.metadata, name: `${s.metadata.generateName}${++n}` } })),
  ];
}

test('selected pods become endpoints with ready, nodeName, zone, targetRef and the named targetPort resolved', (t) => {
  const pods = [pod('a', { ip: '10.244.1.2' }), pod('b', { ip: '10.244.2.2', node: 'node-b', ready: false }), pod('other', { labels: { app: 'db' } }), pod('elsewhere', { namespace: 'x' }), pod('no-ip', { ip: '' }), pod('done', { phase: 'Succeeded' })];
  const c = reconcileSlices(svc(), pods, zones, []);
  t.is(c.create.length, 1);
  t.deepEqual(c.update, []);
  const s = c.create[0];
  t.like(s, { addressType: 'IPv4', metadata: { generateName: 'web-', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } } });
  t.deepEqual(s.metadata.ownerReferences, [{ apiVersion: 'v1', kind: 'Service', name: 'web', uid: '11111111-2222-4333-8444-555555555555', controller: true, blockOwnerDeletion: true }]);
  t.deepEqual(s.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
  t.deepEqual(s.endpoints, [
    { addresses: ['10.244.1.2'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a', zone: 'zone-a', targetRef: { kind: 'Pod', namespace: 'shop', name: 'a', uid: pods[0].metadata.uid } },
    { addresses: ['10.244.2.2'], conditions: { ready: false, serving: false, terminating: false }, nodeName: 'node-b', zone: 'zone-b', targetRef: { kind: 'Pod', namespace: 'shop', name: 'b', uid: pods[1].metadata.uid } },
  ]);
  t.notThrows(() => new EndpointSlice({ ...s, metadata: { ...s.metadata, name: 'web-x' } } as any).validate());
});

test('pods resolving a named targetPort differently (or not at all) go to different slices, as upstream', (t) => {
  const pods = [pod('a'), pod('b', { ports: [{ name: 'http', containerPort: 9090 }] }), pod('c', { ports: [{ name: 'metrics', containerPort: 9100 }] })];
  const s = svc({ ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'raw', port: 81, targetPort: 7000 }] });
  const c = reconcileSlices(s, pods, zones, []);
  const byPorts = Object.fromEntries(c.create.map((x) => [x.ports.map((p: any) => `${p.name}:${p.port}`).join(','), x.endpoints.map((e: any) => e.targetRef.name)]));
  t.deepEqual(byPorts, { 'http:8080,raw:7000': ['a'], 'http:9090,raw:7000': ['b'], 'raw:7000': ['c'] });
  t.is(resolveTargetPort({ targetPort: 'http', protocol: 'UDP' }, pods[0]), undefined, 'the protocol must match too');
});

test('at most 100 endpoints per slice; a change to one pod touches one slice; in step means no writes', (t) => {
  const pods = Array.from({ length: 250 }, (_, i) => pod(`p${i}`, { ip: `10.244.${1 + (i >> 8)}.${i & 255}` }));
  let slices = applied([], reconcileSlices(svc(), pods, zones, []));
  t.deepEqual(slices.map((s) => s.endpoints.length), [100, 100, 50]);
  t.deepEqual(reconcileSlices(svc(), pods, zones, slices), { create: [], update: [], delete: [] });

  const notReady = pods.map((p) => (p.metadata.name === 'p150' ? (setReadiness(p, false), p) : p));
  const c = reconcileSlices(svc(), notReady, zones, slices);
  t.is(c.update.length, 1);
  t.deepEqual(c.create, []);
  t.is(c.update[0].metadata.name, slices[1].metadata.name);
  slices = applied(slices, c);
  // New pods fill the slice with room before a new slice is made.
  const more = [...notReady, ...Array.from({ length: 60 }, (_, i) => pod(`q${i}`, { ip: `10.244.9.${i + 2}` }))];
  const grow = reconcileSlices(svc(), more, zones, slices);
  t.deepEqual(grow.update.map((s) => s.endpoints.length), [100]);
  t.deepEqual(grow.create.map((s) => s.endpoints.length), [10]);
});

test('a Service that selects nothing keeps one empty placeholder; a selector-less Service has no managed slices', (t) => {
  const c = reconcileSlices(svc(), [], zones, []);
  t.is(c.create.length, 1);
  t.deepEqual(c.create[0].endpoints, []);
  const slices = applied([], c);
  t.deepEqual(reconcileSlices(svc(), [], zones, slices), { create: [], update: [], delete: [] });
  // Pods arrive: the placeholder's port list no longer fits, it goes and a real slice comes.
  const withPods = reconcileSlices(svc(), [pod('a')], zones, slices);
  t.is(withPods.create.length, 1);
  t.deepEqual(withPods.delete.map((s) => s.metadata.name), [slices[0].metadata.name]);
  const noSelector = svc({ selector: undefined });
  t.deepEqual(reconcileSlices(noSelector, [pod('a')], zones, slices).delete.length, 1);
});

test('publishNotReadyAddresses makes every endpoint ready; a pod being deleted is terminating and not ready', (t) => {
  const gone = pod('a');
  gone.metadata.deletionTimestamp = '2026-01-01T00:00:00Z';
  const c = reconcileSlices(svc({ publishNotReadyAddresses: true }), [pod('b', { ready: false })], zones, []);
  t.is(c.create[0].endpoints[0].conditions.ready, true);
  const d = reconcileSlices(svc(), [gone], zones, []);
  t.deepEqual(d.create[0].endpoints[0].conditions, { ready: false, serving: true, terminating: true });
});

test('trafficDistribution PreferClose hints each endpoint for its own zone; PreferSameNode for its node too; none without it; the slices pass the schema', (t) => {
  const pods = [pod('a', { ip: '10.244.1.2' }), pod('b', { ip: '10.244.2.2', node: 'node-b', ready: false }), pod('c', { ip: '10.244.3.2', node: 'node-x' })];
  const hintsOf = (s: KubeObject) => reconcileSlices(s, pods, zones, [])
    .create.flatMap((x) => x.endpoints.map((e: any) => [e.targetRef.name, e.hints ?? null]));
  t.deepEqual(hintsOf(svc({ trafficDistribution: 'PreferClose' })), [['a', { forZones: [{ name: 'zone-a' }] }], ['b', { forZones: [{ name: 'zone-b' }] }], ['c', null]], 'a node without a zone: its endpoint gets no hint');
  t.deepEqual(hintsOf(svc({ trafficDistribution: 'PreferSameNode' }))[0], ['a', { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'node-a' }] }]);
  t.deepEqual(hintsOf(svc()).map(([, h]) => h), [null, null, null]);
  const created = reconcileSlices(svc({ trafficDistribution: 'PreferSameNode' }), pods, zones, []).create[0];
  t.notThrows(() => new EndpointSlice({ ...created, metadata: { ...created.metadata, name: 'web-x' } } as any).validate());
});

test('topology-mode Auto hints only while every zone has a ready endpoint; a change of mode rewrites the slice', (t) => {
  const auto = svc({ annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } });
  const both = [pod('a', { ip: '10.244.1.2' }), pod('b', { ip: '10.244.2.2', node: 'node-b' })];
  const all = new Set(['zone-a', 'zone-b']);
  const slices = applied([], reconcileSlices(auto, both, zones, [], undefined, all));
  t.deepEqual(slices[0].endpoints.map((e: any) => e.hints), [{ forZones: [{ name: 'zone-a' }] }, { forZones: [{ name: 'zone-b' }] }]);
  const b = structuredClone(both[1]!);
  setReadiness(b, false);
  const bDown = [both[0]!, b];
  const c = reconcileSlices(auto, bDown, zones, slices, undefined, all);
  t.is(c.update.length, 1, 'zone-b has no ready endpoint: the hints go');
  t.deepEqual(c.update[0].endpoints.map((e: any) => e.hints), [undefined, undefined]);
  const plain = reconcileSlices(svc(), both, zones, slices, undefined, all);
  t.is(plain.update.length, 1, 'the Service no longer asks for hints: they are removed');
  t.false(plain.update[0].endpoints.some((e: any) => 'hints' in e));
});
