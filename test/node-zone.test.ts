// The agent's zone for topology aware routing: its Node's topology.kubernetes.io/zone label, read
// with a get on its own Node (the ClusterRole grants get on nodes), and what each failure means.
import test from 'ava';
import { zoneOfNode, zoneReadFailed } from '../src/agent/node-zone.ts';
import { LeanKubeApi } from '../src/k8s/kube-api.ts';
import { KubeSource } from '../src/k8s/kube-source.ts';
import { SimApiServer } from '../src/sim/index.ts';
import { nodeObject } from '../src/sim/cluster-objects.ts';
import { installManifests } from '../src/k8s/manifests.ts';
import { within } from './helpers/until.ts';

test('a Node\'s zone label is the zone; none, or one that is not a label value, is no zone and says why', (t) => {
  t.deepEqual(zoneOfNode({ metadata: { labels: { 'topology.kubernetes.io/zone': 'eu-west-1a' } } }, 'n1'), { zone: 'eu-west-1a', why: null });
  const none = zoneOfNode({ metadata: { labels: {} } }, 'n1');
  t.is(none.zone, null);
  t.is(none.warn, undefined, 'a cluster without zones is not a problem');
  t.regex(none.why!, /^Node n1 has no topology\.kubernetes\.io\/zone label: topology hints are ignored/);
  const bad = zoneOfNode({ metadata: { labels: { 'topology.kubernetes.io/zone': 5 } } }, 'n1');
  t.is(bad.zone, null);
  t.true(bad.warn);
  t.deepEqual(zoneOfNode({}, 'n1').zone, null);
});

test('a refused read names the fix: 403 the ClusterRole, 404 the node name; anything else is retried soon', (t) => {
  const forbidden = zoneReadFailed(Object.assign(new Error('x'), { statusCode: 403 }), 'n1');
  t.true(forbidden!.lasting);
  t.regex(forbidden!.why!, /refused \(403\): the agent's ClusterRole needs get on nodes/);
  const missing = zoneReadFailed(Object.assign(new Error('x'), { statusCode: 404 }), 'n1');
  t.regex(missing!.why!, /Node n1 does not exist \(404\): check --node/);
  const down = zoneReadFailed(new Error('connect ECONNREFUSED'), 'n1');
  t.false(down!.lasting);
  t.regex(down!.why!, /reading Node n1 failed: connect ECONNREFUSED/);
});

/** The agent's pod source through the lean client, for node `nodeName`. */
const leanSource = (api: SimApiServer, nodeName: string) =>
  new KubeSource({ nodeName, api: new LeanKubeApi({ server: api.url, insecure: false, token: 't' }), onSnapshot: () => {}, onError: () => {} });

test('the agent reads its own Node with a get (not a list: the ClusterRole grants get only), through the lean client', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create(nodeObject({ name: 'n1', ip: '10.244.0.1', podCidr: '10.1.1.0/24', zone: 'zone-b', controlPlane: false }));
  const src = leanSource(api, 'n1');
  t.teardown(() => src.stop());
  await within(src.start(), 5000, () => 'no first list');
  t.deepEqual(zoneOfNode(await src.getNode(), 'n1'), { zone: 'zone-b', why: null });
  t.true(api.requests.some((q) => q.resource === 'nodes' && q.method === 'GET' && !q.watch));
  api.setFailure(403, 'list', 'nodes');
  const e = await t.throwsAsync(src.getNode());
  t.is((e as any).statusCode, 403);
  t.regex(zoneReadFailed(e, 'n1')!.why!, /ClusterRole needs get on nodes/);
  api.setFailure(null);
  const other = leanSource(api, 'n2');
  t.teardown(() => other.stop());
  await within(other.start(), 5000, () => 'no first list');
  t.is(((await t.throwsAsync(other.getNode())) as any).statusCode, 404);
});

test('a stop during a Node read in flight is no failure: the read ends at once and there is nothing to say (no "aborted" warning)', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create(nodeObject({ name: 'n1', ip: '10.244.0.1', podCidr: '10.1.1.0/24', zone: 'zone-b', controlPlane: false }));
  const src = leanSource(api, 'n1');
  t.teardown(() => src.stop());
  await within(src.start(), 5000, () => 'no first list');
  const { stalled, release } = api.stallRequests((r) => r.resource === 'nodes' && r.method === 'GET' && !r.watch);
  t.teardown(release);
  const read = src.getNode();
  await within(stalled, 5000, () => 'the Node read never reached the API server');
  src.stop();
  const e = await within(t.throwsAsync(read), 5000, () => 'the read outlived the stop');
  t.is(zoneReadFailed(e, 'n1'), null, `a stop, not a failure: ${(e as Error).message}`);
});

test('the install\'s agent ClusterRole grants get on nodes (the zone read)', (t) => {
  const role = installManifests().find((o: any) => o.kind === 'ClusterRole' && o.metadata.name.endsWith('-agent')) as any;
  t.truthy(role);
  t.true(role.rules.some((r: any) => r.apiGroups.includes('') && r.resources.includes('nodes') && r.verbs.includes('get')));
});
