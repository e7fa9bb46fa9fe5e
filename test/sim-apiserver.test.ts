// The stand-in API server's list and watch protocol, per kind, over real HTTP on loopback; its
// objects checked against the Kubernetes schemas (kubernetes-models).
import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import { EndpointSlice } from 'kubernetes-models/discovery.k8s.io/v1';
import { Namespace, Pod, Service } from 'kubernetes-models/v1';
import { SimApiServer, type KubeObject } from '../src/sim/index.ts';
import { namespaceObject, serviceObject } from '../src/sim/cluster-objects.ts';
import { podObject } from './helpers/kube-objects.ts';
import { waitFor } from './helpers/until.ts';
import { installManifests } from '../src/k8s/manifests.ts';
import { LeanKubeApi } from '../src/k8s/kube-api.ts';
import { createTrustAnchor } from '../src/identity/x509.ts';
import { issueServingCertificate } from './helpers/serving-cert.ts';
import { LINKERD_HTTPROUTE_RESOURCE, ROUTE_RESOURCES } from '../src/sim/api-resources.ts';

async function server(t: ExecutionContext, opts = {}): Promise<SimApiServer> {
  const api = await new SimApiServer(opts).start();
  t.teardown(() => api.close());
  return api;
}

/** One request; `token` as a bearer (a minted ServiceAccount token, or the admin's). */
function get(api: SimApiServer, path: string, method = 'GET', body?: string, token?: string): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = body ? { 'content-type': 'application/json' } : {};
  if (token) headers.authorization = `Bearer ${token}`;
  return new Promise((resolve, reject) => {
    const req = http.request(`${api.url}${path}`, { method, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A watch as a client sees it: every event line, in order. */
function watch(t: ExecutionContext, api: SimApiServer, path: string): { events: any[]; ended: Promise<void> } {
  const events: any[] = [];
  let ended!: () => void;
  const done = new Promise<void>((r) => (ended = r));
  const req = http.get(`${api.url}${path}${path.includes('?') ? '&' : '?'}watch=true`, (res) => {
    let buf = '';
    res.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        events.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    });
    res.on('end', ended);
    res.on('close', ended);
  });
  req.on('error', () => ended());
  t.teardown(() => req.destroy());
  return { events, ended: done };
}

const deployment = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-5d8f7c9b6d', uid: '1b4e28ba-2fa1-11d2-883f-0016d3cca427', controller: true }];

/** One object per kind the controller watches, and how to change it. */
const KINDS: { kind: string; path: string; make: () => KubeObject; change: (o: KubeObject) => void; schema: (o: KubeObject) => void }[] = [
  {
    kind: 'Pod',
    path: '/api/v1/pods',
    make: () => ({ ...podObject({ name: 'web-5d8f7c9b6d-x2x4z', namespace: 'shop', nodeName: 'node-a', ip: '10.244.1.2', labels: { app: 'web' } }), metadata: { name: 'web-5d8f7c9b6d-x2x4z', namespace: 'shop', labels: { app: 'web' }, ownerReferences: deployment } }),
    change: (o) => (o.status.conditions = [{ type: 'Ready', status: 'False' }]),
    schema: (o) => new Pod(o as any).validate(),
  },
  {
    kind: 'Namespace',
    path: '/api/v1/namespaces',
    make: () => namespaceObject('shop', { 'mesh-agent.io/inject': 'enabled' }),
    change: (o) => (o.metadata.annotations = {}),
    schema: (o) => new Namespace(o as any).validate(),
  },
  {
    kind: 'Service',
    path: '/api/v1/services',
    make: () => serviceObject({ name: 'web', namespace: 'shop', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
    change: (o) => (o.spec.ports[0].port = 8080),
    schema: (o) => new Service(o as any).validate(),
  },
  {
    kind: 'EndpointSlice',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    make: () => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-abcde', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.1.2'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a', zone: 'zone-a', targetRef: { kind: 'Pod', namespace: 'shop', name: 'web-1', uid: '0e8f7d6c-5b4a-4392-8170-6f5e4d3c2b1a' } }],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    }),
    change: (o) => (o.endpoints[0].conditions.ready = false),
    schema: (o) => new EndpointSlice(o as any).validate(),
  },
];

for (const k of KINDS) {
  test(`${k.kind}: list, then a watch sees ADDED, MODIFIED, DELETED in order; resumes from a resourceVersion; 410 after compaction`, async (t) => {
    const api = await server(t);
    const list = await get(api, k.path);
    t.is(list.status, 200);
    t.is(list.body.kind, `${k.kind}List`);
    const from = list.body.metadata.resourceVersion;
    const w = watch(t, api, `${k.path}?resourceVersion=${from}`);
    await waitFor(() => api.openWatches() === 1);

    const created = api.create(k.make());
    t.notThrows(() => k.schema(created), 'what the server stores is a valid object of its kind');
    const name = created.metadata.name;
    const ns = created.metadata.namespace;
    api.patch(k.kind, ns, name, k.change);
    api.delete(k.kind, ns, name);
    await waitFor(() => w.events.length === 3);
    t.deepEqual(w.events.map((e) => e.type), ['ADDED', 'MODIFIED', 'DELETED']);
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    t.true(rvs[0] > Number(from) && rvs[0] < rvs[1] && rvs[1] < rvs[2], `increasing: ${rvs}`);
    for (const e of w.events) {
      t.is(e.object.kind, k.kind);
      t.notThrows(() => k.schema(e.object));
    }
    t.is(w.events[0].object.metadata.uid, w.events[2].object.metadata.uid);

    // A client that saw the ADDED resumes there and misses nothing after it.
    const resumed = watch(t, api, `${k.path}?resourceVersion=${rvs[0]}`);
    await waitFor(() => resumed.events.length === 2);
    t.deepEqual(resumed.events.map((e) => e.type), ['MODIFIED', 'DELETED']);

    // The list shows the current state; after compaction an old version is gone for good.
    api.create(k.make());
    const after = await get(api, k.path);
    t.is(after.body.items.length, 1);
    t.is(after.body.items[0].kind, undefined, 'list items carry no kind, as the real server');
    api.compact();
    const expired = watch(t, api, `${k.path}?resourceVersion=${from}`);
    await expired.ended;
    t.is(expired.events.length, 1);
    t.like(expired.events[0], { type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
    const open = api.openWatches();
    const fresh = watch(t, api, `${k.path}?resourceVersion=${api.resourceVersion}`);
    await waitFor(() => api.openWatches() === open + 1);
    api.patch(k.kind, ns, name, k.change);
    await waitFor(() => fresh.events.length === 1);
    t.is(fresh.events[0].type, 'MODIFIED');
  });
}

test('a watch without a resourceVersion starts with the current objects as ADDED; bookmarks carry the current version', async (t) => {
  const api = await server(t);
  api.create(namespaceObject('a'));
  api.create(namespaceObject('b'));
  const w = watch(t, api, '/api/v1/namespaces?allowWatchBookmarks=true');
  await waitFor(() => w.events.length === 2);
  t.deepEqual(w.events.map((e) => [e.type, e.object.metadata.name]), [['ADDED', 'a'], ['ADDED', 'b']]);
  api.create(serviceObject({ name: 'other-kind', ports: [{ port: 80 }] })); // moves the version, not this watch
  api.bookmark();
  await waitFor(() => w.events.length === 3);
  t.like(w.events[2], { type: 'BOOKMARK', object: { kind: 'Namespace', apiVersion: 'v1', metadata: { resourceVersion: api.resourceVersion } } });

  const streamed = watch(t, api, '/api/v1/namespaces?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true');
  await waitFor(() => streamed.events.length === 3);
  t.like(streamed.events[2], { type: 'BOOKMARK', object: { metadata: { annotations: { 'k8s.io/initial-events-end': 'true' } } } });
});

test('field and label selectors: spec.nodeName for pods; an object leaving a selection is DELETED for that watch, entering it ADDED', async (t) => {
  const api = await server(t);
  api.create(podObject({ name: 'here', nodeName: 'node-a', labels: { app: 'web' } }));
  api.create(podObject({ name: 'there', nodeName: 'node-b', labels: { app: 'web' } }));
  const byNode = await get(api, '/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a');
  t.deepEqual(byNode.body.items.map((p: any) => p.metadata.name), ['here']);
  const byLabel = await get(api, `/api/v1/namespaces/default/pods?labelSelector=${encodeURIComponent('app in (web,api),!canary')}`);
  t.is(byLabel.body.items.length, 2);

  const w = watch(t, api, `/api/v1/pods?resourceVersion=${api.resourceVersion}&labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dnode-a`);
  await waitFor(() => api.openWatches('pods') === 1);
  api.patch('Pod', 'default', 'there', (o) => (o.metadata.annotations = { x: '1' })); // not selected: nothing
  api.patch('Pod', 'default', 'here', (o) => (o.metadata.labels = { app: 'db' }));
  api.patch('Pod', 'default', 'here', (o) => (o.metadata.labels = { app: 'web' }));
  await waitFor(() => w.events.length === 2);
  t.deepEqual(w.events.map((e) => [e.type, e.object.metadata.labels.app]), [['DELETED', 'web'], ['ADDED', 'web']]);
  t.is(Number(w.events[0].object.metadata.resourceVersion), Number(api.resourceVersion) - 1, 'the DELETED carries the previous state at the event version');

  const bad = await get(api, '/api/v1/pods?fieldSelector=spec.hostname%3Dx');
  t.like(bad, { status: 400, body: { reason: 'BadRequest', message: 'field label not supported: spec.hostname' } });
  const badLabel = await get(api, '/api/v1/pods?labelSelector=a%3D%3D%3Db');
  t.is(badLabel.status, 400);
  t.regex(badLabel.body.message, /unable to parse requirement/);
});

test('holdWatchEvents: the events it selects, and all after them on the same watch, wait until the release, in order; other watches get them at once', async (t) => {
  const api = await server(t);
  const nodeA = watch(t, api, `/api/v1/pods?resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dnode-a`);
  const all = watch(t, api, `/api/v1/pods?resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true`);
  await waitFor(() => api.openWatches('pods') === 2);
  // Node a's pod watch learns of the new pod late (the watch another node's agent or the controller has does not).
  const release = api.holdWatchEvents((w, o) => w.fieldSelector === 'spec.nodeName=node-a' && o.metadata.name === 'new');
  api.create(podObject({ name: 'new', nodeName: 'node-a' }));
  api.create(podObject({ name: 'after', nodeName: 'node-a' }));
  api.bookmark();
  await waitFor(() => all.events.length === 3);
  t.deepEqual(all.events.map((e) => e.type), ['ADDED', 'ADDED', 'BOOKMARK']);
  t.is(nodeA.events.length, 0, 'held: the new pod, and what came after it (a bookmark must not move the watch past it)');
  release();
  await waitFor(() => nodeA.events.length === 3);
  t.deepEqual(nodeA.events.map((e) => [e.type, e.object.metadata.name ?? null]), [['ADDED', 'new'], ['ADDED', 'after'], ['BOOKMARK', null]]);
  api.create(podObject({ name: 'later', nodeName: 'node-a' }));
  await waitFor(() => nodeA.events.length === 4);
  t.is(nodeA.events[3].object.metadata.name, 'later', 'released: no longer held');
});

test('stallRequests: a request it selects gets no answer until the release, then the usual one; others are answered at once', async (t) => {
  const api = await server(t);
  api.create(podObject({ name: 'a', nodeName: 'node-a' }));
  const { stalled, release } = api.stallRequests((r) => r.resource === 'pods' && r.query.fieldSelector === 'metadata.name=a');
  let answered = false;
  const stuck = get(api, '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Da').then((r) => ((answered = true), r));
  t.is((await stalled).query.fieldSelector, 'metadata.name=a');
  t.is((await get(api, '/api/v1/namespaces/default/pods')).body.items.length, 1, 'another read is answered');
  t.false(answered, 'the selected read is still waiting');
  release();
  const r = await stuck;
  t.deepEqual([r.status, r.body.items.map((o: any) => o.metadata.name)], [200, ['a']]);
});

test('lists page in key order (limit, metadata.continue at the first page\'s version); a continue token from before a compaction is 410 Expired', async (t) => {
  const api = await server(t);
  for (const n of ['c', 'a', 'e', 'b', 'd']) api.create(podObject({ name: n, nodeName: 'node-a' }));
  const names = (r: { body: any }) => r.body.items.map((o: any) => o.metadata.name);
  const p1 = await get(api, '/api/v1/pods?limit=2');
  t.deepEqual(names(p1), ['a', 'b']);
  api.create(podObject({ name: 'f', nodeName: 'node-a' }));
  const p2 = await get(api, `/api/v1/pods?limit=2&continue=${p1.body.metadata.continue}`);
  t.deepEqual([names(p2), p2.body.metadata.resourceVersion], [['c', 'd'], p1.body.metadata.resourceVersion]);
  t.is((await get(api, '/api/v1/pods')).body.items.length, 6, 'no limit: all');
  api.compact();
  const expired = await get(api, `/api/v1/pods?limit=2&continue=${p2.body.metadata.continue}`);
  t.deepEqual([expired.status, expired.body.reason, expired.body.code], [410, 'Expired', 410]);
  t.is((await get(api, '/api/v1/pods?limit=2&continue=nonsense')).status, 400);
});

test('Services get a ClusterIP from the service CIDR, the defaults the real server sets, and its validation', async (t) => {
  const api = await server(t, { serviceCidr: '10.96.0.0/16' });
  const a = api.create(serviceObject({ name: 'a', ports: [{ port: 80 }] }));
  const b = api.create(serviceObject({ name: 'b', ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'grpc', port: 9090, appProtocol: 'kubernetes.io/h2c' }] }));
  t.is(a.spec.clusterIP, '10.96.0.10');
  t.is(b.spec.clusterIP, '10.96.0.11');
  t.deepEqual(a.spec.clusterIPs, [a.spec.clusterIP]);
  t.like(a.spec, { type: 'ClusterIP', sessionAffinity: 'None', ipFamilies: ['IPv4'], ipFamilyPolicy: 'SingleStack', internalTrafficPolicy: 'Cluster' });
  t.like(a.spec.ports[0], { port: 80, targetPort: 80, protocol: 'TCP' });
  t.notThrows(() => new Service(b as any).validate());
  const headless = api.create(serviceObject({ name: 'h', headless: true, ports: [{ port: 80 }] }));
  t.is(headless.spec.clusterIP, 'None');
  const fixed = api.create(serviceObject({ name: 'fixed', clusterIP: '10.96.7.7', ports: [{ port: 80 }] }));
  t.is(fixed.spec.clusterIP, '10.96.7.7');

  t.throws(() => api.create(serviceObject({ name: 'dup', clusterIP: '10.96.7.7', ports: [{ port: 80 }] })), { message: /provided IP is already allocated/ });
  t.throws(() => api.create(serviceObject({ name: 'out', clusterIP: '10.97.0.1', ports: [{ port: 80 }] })), { message: /not in the valid range; the range of valid IPs is 10\.96\.0\.0\/16/ });
  t.throws(() => api.create(serviceObject({ name: 'bad', ports: [{ port: 0 }] })), { message: /spec\.ports\[0\]\.port: Invalid value: 0: must be between 1 and 65535/ });
  t.throws(() => api.create(serviceObject({ name: 'two', ports: [{ port: 80 }, { port: 81 }] })), { message: /spec\.ports\[0\]\.name: Required value/ });
  t.throws(() => api.create(serviceObject({ name: 'named', ports: [{ port: 80, targetPort: 'not_a-valid-name!' }] })), { message: /targetPort/ });
  t.throws(() => api.create(serviceObject({ name: 'a', ports: [{ port: 80 }] })), { message: /"a" already exists/ });
  t.throws(() => api.patch('Service', 'default', 'a', (o) => (o.spec.clusterIP = '10.96.9.9')), { message: /spec\.clusterIP: Invalid value: "10\.96\.9\.9": field is immutable/ });
  // An update that leaves the ClusterIP out keeps it, as kubectl apply does.
  t.is(api.apply(serviceObject({ name: 'a', ports: [{ port: 81 }] })).spec.clusterIP, '10.96.0.10');

  api.delete('Service', 'default', 'fixed');
  t.is(api.create(serviceObject({ name: 'again', clusterIP: '10.96.7.7', ports: [{ port: 80 }] })).spec.clusterIP, '10.96.7.7', 'a deleted Service frees its ClusterIP');
});

test('objects are checked as the real server checks the fields we use; stored objects are frozen', async (t) => {
  const api = await server(t);
  t.throws(() => api.create(podObject({ name: 'Bad_Name' })), { message: /Pod "Bad_Name" is invalid: metadata\.name/ });
  t.throws(() => api.create({ ...podObject({ name: 'p' }), spec: { containers: [{ name: 'app', image: 'x', ports: [{ name: 'way-too-long-port-name', containerPort: 80 }] }] } }), { message: /ports\[0\]\.name/ });
  t.throws(() => api.create({ apiVersion: 'v2', kind: 'Pod', metadata: { name: 'p' } }), { message: /served as apiVersion v1, not v2/ });
  t.throws(() => api.create({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 's' }, addressType: 'IPv4', endpoints: [{ addresses: ['not-an-ip'] }] }), { message: /must be a valid IPv4 address/ });
  const p = api.create(podObject({ name: 'p' }));
  t.is(p.spec.serviceAccountName, 'default', 'the ServiceAccount admission default');
  t.throws(() => {
    p.metadata.name = 'changed';
  });
  const gen = api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: '', generateName: 'web-' }, spec: { containers: [{ name: 'a', image: 'b' }] } });
  t.regex(gen.metadata.name, /^web-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  const one = await get(api, `/api/v1/namespaces/default/pods/${gen.metadata.name}`);
  t.like(one, { status: 200, body: { kind: 'Pod', metadata: { name: gen.metadata.name } } });
  const missing = await get(api, '/api/v1/namespaces/default/pods/nope');
  t.like(missing, { status: 404, body: { reason: 'NotFound', message: 'pods "nope" not found' } });
  t.like(await get(api, '/api/v1/pods', 'DELETE'), { status: 405 });
});

test('the history is bounded per kind: a watch from before the kept window gets 410, one inside it resumes', async (t) => {
  const api = await server(t, { historyLimit: 5 });
  const start = api.resourceVersion;
  for (let i = 0; i < 5; i++) api.create(namespaceObject(`ns-${i}`));
  const inside = api.resourceVersion;
  for (let i = 0; i < 5; i++) api.create(namespaceObject(`later-${i}`));
  const old = watch(t, api, `/api/v1/namespaces?resourceVersion=${start}`);
  await old.ended;
  t.is(old.events[0]?.object?.code, 410);
  const ok = watch(t, api, `/api/v1/namespaces?resourceVersion=${inside}`);
  await waitFor(() => ok.events.length === 5);
  t.deepEqual(ok.events.map((e) => e.object.metadata.name), ['later-0', 'later-1', 'later-2', 'later-3', 'later-4']);
});

test('a kind added later is served by the same protocol; a review kind answers POST and stores nothing', async (t) => {
  const api = await server(t);
  api.register({ group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true });
  api.register({
    group: 'authorization.k8s.io',
    version: 'v1',
    kind: 'SubjectAccessReview',
    plural: 'subjectaccessreviews',
    namespaced: false,
    review: (o) => ({ ...o, status: { allowed: o.spec?.user === 'good' } }),
  });
  const w = watch(t, api, `/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes?resourceVersion=${api.resourceVersion}`);
  await waitFor(() => api.openWatches('httproutes') === 1);
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'elsewhere', namespace: 'other' }, spec: {} });
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' }, spec: { parentRefs: [{ kind: 'Service', name: 'web' }] } });
  await waitFor(() => w.events.length === 1);
  t.like(w.events[0], { type: 'ADDED', object: { kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' } } });
  const review = await get(api, '/apis/authorization.k8s.io/v1/subjectaccessreviews', 'POST', JSON.stringify({ apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview', spec: { user: 'good' } }));
  t.like(review, { status: 201, body: { status: { allowed: true } } });
  t.like(await get(api, '/api/v1/pods', 'POST', '{}'), { status: 405 });
  t.throws(() => api.register({ group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true }), { message: /already registered/ });
});

test('two groups serving one kind name (Gateway API\'s and Linkerd\'s HTTPRoute): each its own objects, lists and watches; a kind name alone is refused once it is ambiguous', async (t) => {
  const api = await server(t);
  api.register(ROUTE_RESOURCES.find((r) => r.kind === 'HTTPRoute')!);
  api.create({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' }, spec: { rules: [{}] } });
  t.is(api.get('HTTPRoute', 'shop', 'r')?.apiVersion, 'gateway.networking.k8s.io/v1', 'one group serving it: the kind name is enough');
  api.register(LINKERD_HTTPROUTE_RESOURCE);
  const gw = watch(t, api, `/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes?resourceVersion=${api.resourceVersion}`);
  const l5d = watch(t, api, `/apis/policy.linkerd.io/v1beta3/namespaces/shop/httproutes?resourceVersion=${api.resourceVersion}`);
  await waitFor(() => api.openWatches('httproutes') === 2);
  // The same namespace and name in both groups: two objects.
  api.create({ apiVersion: 'policy.linkerd.io/v1beta3', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' }, spec: { rules: [{}, {}] } });
  await waitFor(() => l5d.events.length === 1);
  t.like(l5d.events[0], { type: 'ADDED', object: { apiVersion: 'policy.linkerd.io/v1beta3', metadata: { name: 'r' } } });
  t.is(gw.events.length, 0, 'the Gateway API watch saw nothing of the other group');
  const rulesListed = async (path: string) => (await get(api, path)).body.items.map((o: KubeObject) => o.spec.rules.length);
  t.deepEqual(await rulesListed('/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes'), [1]);
  t.deepEqual(await rulesListed('/apis/policy.linkerd.io/v1beta3/namespaces/shop/httproutes'), [2]);
  t.throws(() => api.get('HTTPRoute', 'shop', 'r'), { message: /kind HTTPRoute is served by more than one group: name one of HTTPRoute\.gateway\.networking\.k8s\.io, HTTPRoute\.policy\.linkerd\.io/ });
  api.delete('HTTPRoute.policy.linkerd.io', 'shop', 'r');
  await waitFor(() => l5d.events.length === 2);
  t.is(l5d.events[1].type, 'DELETED');
  t.is(api.get('HTTPRoute.gateway.networking.k8s.io', 'shop', 'r')?.spec.rules.length, 1, 'deleting one group\'s route left the other\'s');
  t.is(gw.events.length, 0);
  t.throws(() => api.create({ apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'HTTPRoute', metadata: { name: 'old', namespace: 'shop' }, spec: {} }), { message: /served as apiVersion policy\.linkerd\.io\/v1beta3, not policy\.linkerd\.io\/v1alpha1/ });
  t.throws(() => api.register(LINKERD_HTTPROUTE_RESOURCE), { message: /kind HTTPRoute\.policy\.linkerd\.io is already registered/ });
});

test('TokenRequest: the real wire format; a request with a token the server minted is authorized by the RBAC given (resourceNames too), one bound to a deleted pod is refused; the admin kubeconfig\'s is not checked', async (t) => {
  const api = await server(t);
  api.applyAccess(installManifests());
  const agent = api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent-agent', pod: 'agent-1' });
  const post = (sa: string, token: string, spec: object = { expirationSeconds: 600 }) =>
    get(api, `/api/v1/namespaces/mesh-agent/serviceaccounts/${sa}/token`, 'POST', JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec }), token);
  const r = await post('mesh-agent-cni', agent);
  t.is(r.status, 201);
  t.like(r.body, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', metadata: { name: 'mesh-agent-cni', namespace: 'mesh-agent' }, spec: { audiences: ['https://kubernetes.default.svc.cluster.local'], expirationSeconds: 600, boundObjectRef: null } });
  t.regex(r.body.status.expirationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.like(api.tokens.authenticate(r.body.status.token), { authenticated: true, user: { username: 'system:serviceaccount:mesh-agent:mesh-agent-cni' } });
  const other = await post('mesh-agent-controller', agent);
  t.is(other.status, 403, 'resourceNames: only the plugin\'s ServiceAccount');
  t.regex(other.body.message, /serviceaccounts "mesh-agent-controller" is forbidden: User "system:serviceaccount:mesh-agent:mesh-agent-agent" cannot create resource "serviceaccounts\/token" in API group "" in the namespace "mesh-agent"/);
  t.is((await post('mesh-agent-cni', agent, { expirationSeconds: 599 })).status, 422);
  t.is((await post('mesh-agent-cni', 'sim')).status, 201, 'the admin kubeconfig\'s token');
  api.tokens.revokePod('mesh-agent', 'agent-1');
  const gone = await post('mesh-agent-cni', agent);
  t.is(gone.status, 401);
  t.regex(gone.body.message, /pods "agent-1" not found/);
  t.like(api.requests.at(-1), { resource: 'serviceaccounts/token', method: 'POST', status: 401 });
});

test('TokenRequest for a ServiceAccount the server does not hold: 404 NotFound as kube-apiserver answers, 201 once it is created; applyAccess() creates the install manifests\' ServiceAccounts', async (t) => {
  const api = await server(t);
  api.rbac.apply(installManifests()); // the grants, not the ServiceAccounts
  const agent = api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent-agent', pod: 'agent-1' });
  const body = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 600 } });
  const post = (token: string) => get(api, '/api/v1/namespaces/mesh-agent/serviceaccounts/mesh-agent-cni/token', 'POST', body, token);
  for (const token of [agent, 'sim']) {
    const r = await post(token);
    t.is(r.status, 404);
    t.like(r.body, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: 'serviceaccounts "mesh-agent-cni" not found' });
  }
  api.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'mesh-agent-cni', namespace: 'mesh-agent' } });
  t.is((await post(agent)).status, 201);
  api.delete('ServiceAccount', 'mesh-agent', 'mesh-agent-cni');
  t.is((await post(agent)).status, 404, 'deleted');
  api.applyAccess(installManifests());
  t.deepEqual(api.list('ServiceAccount', { namespace: 'mesh-agent' }).map((o) => o.metadata.name).sort(), ['mesh-agent-agent', 'mesh-agent-cni', 'mesh-agent-controller']);
  t.is((await post(agent)).status, 201);
  t.is((await get(api, '/api/v1/namespaces/mesh-agent/serviceaccounts/mesh-agent-cni')).body.kind, 'ServiceAccount', 'served as the other kinds');
});

test('tls: the stand-in serves HTTPS with the certificate given; a client checking it against the CA\'s PEM lists, one without that CA is refused', async (t) => {
  const now = Date.now();
  const ca = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  const tls = await issueServingCertificate(ca, { ips: ['127.0.0.1'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  const api = await server(t, { tls });
  t.regex(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  api.create(namespaceObject('shop'));
  const list = await new LeanKubeApi({ server: api.url, ca: Buffer.from(ca.certPem), insecure: false, token: 'sim' }).list('/api/v1/namespaces', {});
  t.deepEqual(list.items.map((o) => o.metadata.name), ['shop']);
  const e = await new LeanKubeApi({ server: api.url, insecure: false, token: 'sim' }).list('/api/v1/namespaces', {}).catch((err: Error) => err);
  t.regex(String(e), /self.signed|unable to (get|verify)/i);
});

test('TokenReview: a token the server minted, bound to a node, reviews as its ServiceAccount with the node in extra; others are refused with the reason', async (t) => {
  const api = await server(t);
  const review = async (token: string, audiences?: string[]) =>
    (await get(api, '/apis/authentication.k8s.io/v1/tokenreviews', 'POST', JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } }))).body.status;
  const token = api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent', node: 'node-1', audiences: ['mesh-agent-identity'] });
  const ok = await review(token, ['mesh-agent-identity']);
  t.like(ok, { authenticated: true, audiences: ['mesh-agent-identity'], user: { username: 'system:serviceaccount:mesh-agent:mesh-agent', groups: ['system:serviceaccounts', 'system:serviceaccounts:mesh-agent', 'system:authenticated'] } });
  t.deepEqual(ok.user.extra['authentication.kubernetes.io/node-name'], ['node-1']);
  t.false((await review(token)).authenticated);
  t.regex((await review(token)).error, /token audiences \["mesh-agent-identity"\] is invalid for the target audiences/);
  const [h, c] = token.split('.');
  const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(c!, 'base64url').toString()), sub: 'system:serviceaccount:kube-system:admin' })).toString('base64url')}.${token.split('.')[2]}`;
  t.regex((await review(forged, ['mesh-agent-identity'])).error, /could not be validated/);
  const expired = api.tokens.mint({ namespace: 'a', serviceAccount: 'b', audiences: ['x'], expirationSeconds: 60, now: Date.now() - 120_000 });
  t.regex((await review(expired, ['x'])).error, /has expired/);
  t.regex((await review('not-a-jwt', ['x'])).error, /invalid bearer token/);
});
