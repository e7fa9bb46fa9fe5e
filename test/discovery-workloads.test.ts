// Pods of other nodes get dst_* labels: the agent's workload resolver asks this node's pods
// first, then the discovery store; its generation moves when either changes, so the metrics'
// label caches follow a pod that appears, moves or goes, and keep their entries across changes
// that do not touch pods (a slice update).
import test from 'ava';
import { MetricsSink } from '../src/telemetry/metrics.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { firstKnown, type Workload, type WorkloadResolver } from '../src/telemetry/workload.ts';
import { DiscoveryStore, storeWorkloads } from '../src/discovery/store.ts';
import { DISCOVERY_VERSION, type DiscoPod } from '../src/discovery/model.ts';
import type { RequestEvent } from '../src/telemetry/events.ts';
import { parseExposition, select } from './helpers/prom-text.ts';

/** This node's pods, as PodSync answers: a map and a generation that moves on every change. */
function localPods(initial: Record<string, Workload>) {
  const pods = { ...initial };
  let generation = 1;
  const resolver: WorkloadResolver = { byIp: (ip) => pods[ip] ?? null, generation: () => generation };
  return { resolver, set: (ip: string, w: Workload) => ((pods[ip] = w), generation++) };
}

const web: Workload = { namespace: 'shop', pod: 'web-1', kind: 'deployment', name: 'web' };
const remote = (name: string, ip: string, owner = 'api'): DiscoPod => ({ namespace: 'shop', name, ip, kind: 'statefulset', owner, node: 'n2', serviceAccount: 'api' });

const req = (destIp: string): RequestEvent => ({
  direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 40000, sourcePodKey: 1n, destIp, destPort: 8080, connId: 1, protocol: 'http1',
  authority: 'api.shop:8080', method: 'GET', path: '/', status: 200, success: true, latencyMs: 2, durationMs: 3, requestBytes: 0, responseBytes: 1, startedAt: 0,
});

function setup() {
  const local = localPods({ '10.244.1.2': web });
  const store = new DiscoveryStore();
  const hub = new TelemetryHub({ workloads: firstKnown(local.resolver, storeWorkloads(store)) });
  const sink = new MetricsSink({ workloads: hub.workloads, processMetrics: false });
  hub.add(sink);
  const labels = async (ip: string) => select(parseExposition(await sink.exposition()), 'request_total', { direction: 'outbound', target_addr: `${ip}:8080` }).map((x) => x.labels);
  const dst = async (ip: string) => (await labels(ip)).map((l) => Object.fromEntries(Object.entries(l).filter(([k]) => k.startsWith('dst_'))));
  return { local, store, hub, dst, labels };
}

test('a pod of another node, known only to discovery, gets dst_* labels; this node\'s pods answer first', async (t) => {
  const { store, hub, dst, labels } = setup();
  store.apply({ type: 'reset', version: DISCOVERY_VERSION });
  store.apply({ type: 'pod', op: 'set', pod: remote('api-0', '10.244.2.7') });
  store.apply({ type: 'pod', op: 'set', pod: remote('impostor', '10.244.1.2', 'x') }); // discovery lags behind this node
  store.apply({ type: 'synced' });
  hub.request(req('10.244.2.7'));
  t.deepEqual(await dst('10.244.2.7'), [{ dst_namespace: 'shop', dst_statefulset: 'api', dst_pod: 'api-0' }]);
  t.like((await labels('10.244.2.7'))[0], { namespace: 'shop', deployment: 'web', pod: 'web-1' }, 'the source is on this node: its own answer wins');
});

test('the labels follow discovery: an address unknown, then learned, then taken by another pod; a slice change keeps the cache', async (t) => {
  const { store, hub, dst, local } = setup();
  const resolver = hub.workloads;
  store.apply({ type: 'reset', version: DISCOVERY_VERSION });
  store.apply({ type: 'synced' });
  hub.request(req('10.244.3.9'));
  t.deepEqual(await dst('10.244.3.9'), [{}], 'unknown: no dst_* labels');

  const g0 = resolver.generation!();
  store.apply({ type: 'pod', op: 'set', pod: remote('db-0', '10.244.3.9', 'db') });
  t.true(resolver.generation!() > g0, 'a pod change moves the generation');
  hub.request(req('10.244.3.9'));
  t.deepEqual((await dst('10.244.3.9')).find((l) => l.dst_pod), { dst_namespace: 'shop', dst_statefulset: 'db', dst_pod: 'db-0' });

  const g1 = resolver.generation!();
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'db', clusterIPs: ['10.96.0.9'], ports: [{ name: '', port: 5432, targetPort: 5432 }], annotations: {} } });
  store.apply({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'db-a', service: 'db', ports: [{ name: '', port: 5432 }], endpoints: [{ ip: '10.244.3.9', ready: true }] } });
  t.is(resolver.generation!(), g1, 'Services and slices do not move it: cached labels stay');

  store.apply({ type: 'pod', op: 'delete', key: 'shop/db-0' });
  store.apply({ type: 'pod', op: 'set', pod: remote('cache-0', '10.244.3.9', 'cache') });
  hub.request(req('10.244.3.9'));
  t.truthy((await dst('10.244.3.9')).find((l) => l.dst_pod === 'cache-0'), 'the address\'s new pod');

  const g2 = resolver.generation!();
  local.set('10.244.1.9', { namespace: 'shop', pod: 'new-1', kind: 'deployment', name: 'new' });
  t.true(resolver.generation!() > g2, 'this node\'s pods move it too');
});

test('firstKnown without a generation from each resolver has none (consumers re-resolve on a timer)', (t) => {
  const a = firstKnown({ byIp: () => null, generation: () => 1 }, { byIp: () => web });
  t.is(a.generation, undefined);
  t.deepEqual(a.byIp('x'), web);
});
