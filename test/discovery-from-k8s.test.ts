// Kubernetes objects to discovery records, table-driven: what a Service, an EndpointSlice and a
// Pod become, and for bad input, that the bad part is left out with a problem naming it while
// the rest of the object is kept. Every record that comes out passes the agent's parser.
import test from 'ava';
import { convert, describeObject, kindOf, namespaceProblem, podFromK8s, serviceFromK8s, sliceFromK8s, type Converted } from '../src/discovery/from-k8s.ts';
import { joinNamespace, prepare } from '../src/discovery/hub.ts';
import { NamespaceAnnotations } from '../src/discovery/namespaces.ts';
import { resolvePolicy } from '../src/k8s/annotations.ts';
import { parseMessage } from '../src/discovery/model.ts';

type Obj = Record<string, any>;

const svcObj = (spec: Obj, annotations: Obj = {}): Obj => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', resourceVersion: '7', annotations }, spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ...spec } });
const sliceObj = (o: Obj): Obj => ({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], endpoints: [], ...o });
const podObj = (o: Obj = {}, status: Obj = {}, spec: Obj = {}): Obj => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web-5d9f-x1', namespace: 'shop', uid: 'u1', labels: { 'pod-template-hash': '5d9f' }, ownerReferences: [{ kind: 'ReplicaSet', name: 'web-5d9f', controller: true }], ...o },
  spec: { nodeName: 'n1', serviceAccountName: 'web', containers: [], ...spec },
  status: { phase: 'Running', hostIP: '10.244.0.1', podIP: '10.1.0.5', podIPs: [{ ip: '10.1.0.5' }], ...status },
});

/** Every record must be a line the agent accepts as is. */
function accepted(t: any, kind: 'service' | 'slice' | 'pod', c: Converted<any>) {
  if (c.record === null) return;
  const m = parseMessage(JSON.stringify({ type: kind, op: 'set', [kind]: c.record }));
  t.deepEqual((m as any)[kind], c.record, 'the agent parses the record unchanged');
}

const services: Array<[string, Obj, Obj | null, RegExp[]]> = [
  ['a ClusterIP Service, numbered and named targetPorts, routing annotations only',
    svcObj({ ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP', appProtocol: 'http' }, { name: 'admin', port: 9000, targetPort: 9001 }] },
      { 'balancer.linkerd.io/failure-accrual': 'consecutive', 'retry.linkerd.io/http': '5xx', 'kubectl.kubernetes.io/last-applied-configuration': '{...}', 'team': 'a' }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }, { name: 'admin', port: 9000, targetPort: 9001 }], annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive', 'retry.linkerd.io/http': '5xx' } }, []],
  ['headless (clusterIP None): no ClusterIPs, marked headless (a route backend balances over its endpoints)', svcObj({ clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 5432 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: [], headless: true, ports: [{ name: '', port: 5432, targetPort: 5432 }], annotations: {} }, []],
  ['headless without ports (clusterIP only, as in a hand-written file)', { kind: 'Service', metadata: { name: 'db' }, spec: { clusterIP: 'None' } },
    { namespace: 'default', name: 'db', clusterIPs: [], headless: true, ports: [], annotations: {} }, []],
  ['dual-stack: the IPv4 ClusterIP only, in either order', svcObj({ clusterIP: 'fd00::10', clusterIPs: ['fd00::10', '10.96.0.10'], ports: [{ port: 80, targetPort: 8080 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: '', port: 80, targetPort: 8080 }], annotations: {} }, []],
  ['clusterIP only (no clusterIPs, as in a hand-written file); targetPort defaults to port', { kind: 'Service', metadata: { name: 'web' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } },
    { namespace: 'default', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: '', port: 80, targetPort: 80 }], annotations: {} }, []],
  ['ExternalName: nothing to route', svcObj({ type: 'ExternalName', externalName: 'db.example.com', clusterIP: undefined, clusterIPs: undefined, ports: [] }),
    { namespace: 'shop', name: 'web', clusterIPs: [], ports: [], annotations: {} }, []],
  ['UDP ports are not proxied (kube-dns: 53/UDP and 53/TCP)', svcObj({ ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'dns-tcp', port: 53, targetPort: 53 }], annotations: {} }, []],
  ['a targetPort written as a numeric string is a number', svcObj({ ports: [{ port: 80, targetPort: '8080' }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: '', port: 80, targetPort: 8080 }], annotations: {} }, []],
  // Bad input: the bad part goes, the rest stays.
  ['a missing targetPort name: that port is ignored, the others kept', svcObj({ ports: [{ name: 'http', port: 80, targetPort: '' }, { name: 'admin', port: 9000, targetPort: 9001 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'admin', port: 9000, targetPort: 9001 }], annotations: {} }, [/^port "http": targetPort "" is neither a port number nor a container port name; port ignored$/]],
  ['a targetPort name that is no port name', svcObj({ ports: [{ name: 'http', port: 80, targetPort: 'Not A Name' }, { name: 'b', port: 81, targetPort: 'web-http-long-name' }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [], annotations: {} }, [/port "http": targetPort "Not A Name"/, /port "b": targetPort "web-http-long-name"/]],
  ['ports out of range', svcObj({ ports: [{ name: 'a', port: 0 }, { name: 'b', port: 65536, targetPort: 1 }, { name: 'c', port: 80, targetPort: 70000 }, { name: 'd', port: 81, targetPort: 8081 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'd', port: 81, targetPort: 8081 }], annotations: {} },
    [/port "a": port 0 is out of range 1-65535; port ignored/, /port "b": port 65536 is out of range/, /port "c": targetPort 70000 is out of range/]],
  ['the same port twice, a bad port name', svcObj({ ports: [{ name: 'a', port: 80 }, { name: 'b', port: 80 }, { name: 'Bad_Name', port: 81 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'a', port: 80, targetPort: 80 }], annotations: {} },
    [/port "b": port 80 appears twice/, /port "Bad_Name": name "Bad_Name" is not a port name/]],
  ['a clusterIP that is not an IP', svcObj({ clusterIP: 'ten', clusterIPs: ['ten'], ports: [{ port: 80 }] }),
    { namespace: 'shop', name: 'web', clusterIPs: [], ports: [{ name: '', port: 80, targetPort: 80 }], annotations: {} }, [/clusterIP "ten" is not an IP address; ignored/]],
  ['an oversized routing annotation', svcObj({ ports: [{ port: 80 }] }, { 'mesh-agent.io/x': 'v'.repeat(5000), 'mesh-agent.io/y': 'ok' }),
    { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: '', port: 80, targetPort: 80 }], annotations: { 'mesh-agent.io/y': 'ok' } }, [/annotation mesh-agent\.io\/x: value is not a string of at most 4096/]],
  ['a name the API would refuse: the whole object', { kind: 'Service', metadata: { name: 'Web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } },
    null, [/^left out: service\.name: expected a Kubernetes name, got "Web"/]],
  ['no name at all', { kind: 'Service', metadata: {}, spec: {} }, null, [/left out: service\.name/]],
];

for (const [what, obj, want, problems] of services) {
  test(`Service: ${what}`, (t) => {
    const c = serviceFromK8s(obj);
    t.deepEqual(c.record, want);
    t.is(c.problems.length, problems.length, c.problems.join('\n'));
    problems.forEach((re, i) => t.regex(c.problems[i]!, re));
    accepted(t, 'service', c);
  });
}

const ep = (addresses: unknown[], o: Obj = {}) => ({ addresses, ...o });
const slices: Array<[string, Obj, Obj | null, RegExp[]]> = [
  ['one endpoint per address; ready from conditions (absent is ready), terminating while still serving; pod, node, zone',
    sliceObj({ endpoints: [
      ep(['10.1.0.5'], { conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-1', namespace: 'shop' }, nodeName: 'n1', zone: 'z-a' }),
      ep(['10.1.0.6', '10.1.0.7'], { conditions: { ready: false, serving: true, terminating: true } }),
      ep(['10.1.0.8'], { targetRef: { kind: 'Node', name: 'n1' } }),
    ] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [
      { ip: '10.1.0.5', ready: true, pod: 'web-1', node: 'n1', zone: 'z-a' }, { ip: '10.1.0.6', ready: false, terminating: true }, { ip: '10.1.0.7', ready: false, terminating: true }, { ip: '10.1.0.8', ready: true },
    ] }, []],
  ['unnamed and UDP ports; a port without a number means all ports (nothing to resolve)',
    sliceObj({ ports: [{ port: 53, protocol: 'UDP', name: 'dns' }, { port: 8080 }, { name: 'any' }], endpoints: [] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: '', port: 8080 }], endpoints: [] }, []],
  ['an IPv6 slice is not ours: no record, no problem', sliceObj({ addressType: 'IPv6', endpoints: [ep(['fd00::5'])] }), null, []],
  ['an FQDN slice is not ours', sliceObj({ addressType: 'FQDN', endpoints: [ep(['db.example.com'])] }), null, []],
  // Bad input.
  ['an address that is not an IP: that address is ignored, the rest kept',
    sliceObj({ endpoints: [ep(['10.1.0.5']), ep(['web-1.shop.pod']), ep(['10.1.0.300', '10.1.0.6']), ep([null])] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true }, { ip: '10.1.0.6', ready: true }] },
    [/^endpoint #1: address "web-1\.shop\.pod" is not an IPv4 address; ignored$/, /endpoint #2: address "10\.1\.0\.300"/, /endpoint #3: address null/]],
  ['a port out of range: that port ignored', sliceObj({ ports: [{ name: 'http', port: 0 }, { name: 'admin', port: 99999 }, { name: 'ok', port: 9000 }], endpoints: [ep(['10.1.0.5'])] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'ok', port: 9000 }], endpoints: [{ ip: '10.1.0.5', ready: true }] },
    [/port "http": port 0 is out of range 1-65535; port ignored/, /port "admin": port 99999 is out of range/]],
  ['no service-name label: not tied to a Service', { ...sliceObj({}), metadata: { name: 'custom', namespace: 'shop' } }, null, [/no kubernetes\.io\/service-name label/]],
  ['a bad node name, pod name or zone: that field ignored, the endpoint kept',
    sliceObj({ endpoints: [ep(['10.1.0.5'], { nodeName: 'Node_1', targetRef: { kind: 'Pod', name: 'Web 1' }, zone: 5 })] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true }] },
    [/endpoint #0: targetRef name "Web 1" is not a pod name; ignored/, /endpoint #0: nodeName "Node_1" is not a node name; ignored/, /endpoint #0: zone 5 is not a short string/]],
  ['topology hints: forZones and forNodes names, repeats dropped',
    sliceObj({ endpoints: [ep(['10.1.0.5'], { zone: 'z-a', hints: { forZones: [{ name: 'z-a' }, { name: 'z-b' }, { name: 'z-a' }], forNodes: [{ name: 'n1' }] } }), ep(['10.1.0.6'], { hints: {} })] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, zone: 'z-a', forZones: ['z-a', 'z-b'], forNodes: ['n1'] }, { ip: '10.1.0.6', ready: true }] }, []],
  ['bad topology hints: the bad entries ignored (an endpoint left without any counts as unhinted), the endpoint kept',
    sliceObj({ endpoints: [ep(['10.1.0.5'], { hints: { forZones: [{ name: '' }, { name: 'z-b' }], forNodes: 'n1' } }), ep(['10.1.0.6'], { hints: { forZones: [{ zone: 'z-a' }], forNodes: [{ name: 'Node_1' }] } })] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, forZones: ['z-b'] }, { ip: '10.1.0.6', ready: true }] },
    [/^endpoint #0: hints\.forZones entry "" is not a zone name; ignored$/, /^endpoint #0: hints\.forNodes is not a list; ignored$/,
      /^endpoint #1: hints\.forZones entry undefined is not a zone name; ignored$/, /^endpoint #1: hints\.forNodes entry "Node_1" is not a node name; ignored$/]],
  ['more than 8 hints: cut at the API\'s bound, with a problem',
    sliceObj({ endpoints: [ep(['10.1.0.5'], { hints: { forZones: Array.from({ length: 9 }, (_, i) => ({ name: `z${i}` })) } })] }),
    { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, forZones: ['z0', 'z1', 'z2', 'z3', 'z4', 'z5', 'z6', 'z7'] }] },
    [/^endpoint #0: hints\.forZones has more than 8 entries; the rest are ignored$/]],
  ['a name the API would refuse: the whole slice', { ...sliceObj({}), metadata: { name: 'web_abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } } }, null, [/^left out: slice\.name: expected a Kubernetes name, got "web_abc"/]],
];

for (const [what, obj, want, problems] of slices) {
  test(`EndpointSlice: ${what}`, (t) => {
    const c = sliceFromK8s(obj);
    t.is(c.key, `${obj.metadata.namespace}/${obj.metadata.name}`);
    t.deepEqual(c.record, want);
    t.is(c.problems.length, problems.length, c.problems.join('\n'));
    problems.forEach((re, i) => t.regex(c.problems[i]!, re));
    accepted(t, 'slice', c);
  });
}

test('EndpointSlice: more than 1000 addresses are cut at the bound, with a problem', (t) => {
  const c = sliceFromK8s(sliceObj({ endpoints: Array.from({ length: 1001 }, (_, i) => ep([`10.1.${i >> 8}.${i & 255}`])) }));
  t.is(c.record!.endpoints.length, 1000);
  t.deepEqual(c.problems, ['more than 1000 addresses; the rest are ignored']);
});

const pods: Array<[string, Obj, Obj | null, RegExp[]]> = [
  ['its own inject annotation travels (the namespace\'s is the agent\'s to read)', podObj({ annotations: { 'mesh-agent.io/inject': 'enabled', team: 'a' } }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', inject: 'enabled', hostIp: '10.244.0.1' }, []],
  ['a bad inject annotation: left out with a problem; a bad hostIP: left out (no tunnel)', podObj({ annotations: { 'mesh-agent.io/inject': 'yes' } }, { hostIP: 'node-1' }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web' },
    [/^annotation mesh-agent\.io\/inject "yes" is not enabled or disabled; the namespace's decides$/, /^hostIP "node-1" is not an IPv4 address/]],
  ['its own skip-inbound ports travel, ours before Linkerd\'s (the agent reads them the same way)', podObj({ annotations: { 'mesh-agent.io/skip-inbound-ports': '9000-9100, 7001', 'config.linkerd.io/skip-inbound-ports': '22' } }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1', skipInbound: [[7001, 7001], [9000, 9100]] }, []],
  ['Linkerd\'s skip-inbound annotation alone', podObj({ annotations: { 'config.linkerd.io/skip-inbound-ports': '3306' } }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1', skipInbound: [[3306, 3306]] }, []],
  ['a bad skip-inbound annotation: left out with a problem (tunnelled, as before)', podObj({ annotations: { 'mesh-agent.io/skip-inbound-ports': '70000' } }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1' },
    [/^annotation mesh-agent\.io\/skip-inbound-ports "70000": invalid port list "70000": "70000" is outside 1-65535; ignored \(clients of other nodes reach every port through the tunnel\)$/]],
  ['a Deployment\'s pod: owner as workload.ts names it, node, ServiceAccount', podObj(),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1' }, []],
  ['a bare pod with no ServiceAccount: its own workload, "default"', podObj({ ownerReferences: undefined, labels: {} }, {}, { serviceAccountName: undefined, nodeName: undefined }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'pod', owner: 'web-5d9f-x1', serviceAccount: 'default', hostIp: '10.244.0.1' }, []],
  ['a StatefulSet pod', podObj({ name: 'db-0', ownerReferences: [{ kind: 'StatefulSet', name: 'db', controller: true }] }),
    { namespace: 'shop', name: 'db-0', ip: '10.1.0.5', kind: 'statefulset', owner: 'db', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1' }, []],
  ['dual-stack with the IPv6 address first: the IPv4 one', podObj({}, { podIP: 'fd00::5', podIPs: [{ ip: 'fd00::5' }, { ip: '10.1.0.9' }] }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.9', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1' }, []],
  ['no IP yet (pending): no record', podObj({}, { phase: 'Pending', podIP: undefined, podIPs: undefined }), null, []],
  ['host network: the node\'s address, not the pod\'s', podObj({}, { podIP: '192.168.1.10' }, { hostNetwork: true }), null, []],
  ['finished: its address may be another pod\'s already', podObj({}, { phase: 'Succeeded' }), null, []],
  ['a podIP that is not an IP', podObj({}, { podIP: 'ten', podIPs: [] }), null, [/^podIP "ten" is not an IP address; ignored$/]],
  ['an owner kind no label can carry: the pod is its own workload', podObj({ ownerReferences: [{ kind: 'Thing.v2', name: 'x', controller: true }] }),
    { namespace: 'shop', name: 'web-5d9f-x1', ip: '10.1.0.5', kind: 'pod', owner: 'web-5d9f-x1', node: 'n1', serviceAccount: 'web', hostIp: '10.244.0.1' }, [/owner kind "thing\.v2" is not a plain kind name/]],
];

for (const [what, obj, want, problems] of pods) {
  test(`Pod: ${what}`, (t) => {
    const c = podFromK8s(obj);
    t.deepEqual(c.record, want);
    t.is(c.problems.length, problems.length, c.problems.join('\n'));
    problems.forEach((re, i) => t.regex(c.problems[i]!, re));
    accepted(t, 'pod', c);
  });
}

test('Pod: skip-inbound ports set on its namespace apply to a pod that sets none, resolved as its own agent resolves them (resolvePolicy); joinNamespace gives the same line later', (t) => {
  const cases: Array<[Obj, Obj, Array<[number, number]> | undefined]> = [
    [{}, { 'mesh-agent.io/skip-inbound-ports': '7001' }, [[7001, 7001]]],
    [{}, { 'config.linkerd.io/skip-inbound-ports': '3306', 'mesh-agent.io/skip-inbound-ports': '7001' }, [[7001, 7001]]],
    [{}, { 'config.linkerd.io/skip-inbound-ports': '3306' }, [[3306, 3306]]],
    [{ 'config.linkerd.io/skip-inbound-ports': '22' }, { 'mesh-agent.io/skip-inbound-ports': '7001' }, [[22, 22]]],
    [{ 'mesh-agent.io/inject': 'enabled' }, {}, undefined],
  ];
  for (const [own, ns, want] of cases) {
    const obj = podObj({ annotations: own });
    const c = podFromK8s(obj, ns);
    t.deepEqual(c.record!.skipInbound, want, JSON.stringify([own, ns]));
    t.deepEqual(resolvePolicy({ annotations: own }, { annotations: ns }).skipInbound.ranges(), want ?? [], 'as the agent reads them');
    t.is(c.followsNamespace, own['config.linkerd.io/skip-inbound-ports'] === undefined ? true : undefined);
    t.deepEqual(c.problems, []);
    accepted(t, 'pod', c);
    t.is(joinNamespace(prepare('pod', obj), ns).line, prepare('pod', obj, ns).line, 'joined later: the same line');
    t.is(joinNamespace(prepare('pod', obj, ns), undefined).line, prepare('pod', obj).line, 'and back');
  }
  // A namespace's bad value: left out of its pods' records, said once for the namespace, not per pod.
  const bad = podFromK8s(podObj(), { 'mesh-agent.io/skip-inbound-ports': '70000' });
  t.is(bad.record!.skipInbound, undefined);
  t.deepEqual(bad.problems, []);
  t.regex(String(namespaceProblem('shop', { 'mesh-agent.io/skip-inbound-ports': '70000' })), /^Namespace shop: annotation mesh-agent\.io\/skip-inbound-ports "70000": invalid port list/);
  t.is(namespaceProblem('shop', { 'mesh-agent.io/skip-inbound-ports': '7001' }), null);
});

test('NamespaceAnnotations says which namespaces changed since a mark (those a pod list in progress must join again), and forgets what came before it', (t) => {
  const ns = new NamespaceAnnotations(() => {});
  const obj = (name: string, ports?: string) => ({ metadata: { name, annotations: ports === undefined ? {} : { 'mesh-agent.io/skip-inbound-ports': ports } } });
  ns.set(obj('shop', '7001'));
  ns.set(obj('bank', '7002'));
  const mark = ns.changes; // a pod list begins
  t.false(ns.set(obj('shop', '7001')), 'no change');
  t.false(ns.set(obj('plain')), 'a namespace without the annotations is no change');
  t.true(ns.set(obj('bank', '7003')));
  t.true(ns.delete('shop'));
  t.deepEqual([...ns.changedSince(mark)].sort(), ['bank', 'shop'], 'only what changed during the list');
  const later = ns.changes;
  t.deepEqual([...ns.changedSince(later)], [], 'nothing since');
  t.true(ns.set(obj('zoo', '9')));
  t.deepEqual([...ns.changedSince(later)], ['zoo']);
});

test('kinds: Service, EndpointSlice and Pod are read; the rest are not', (t) => {
  t.is(kindOf({ kind: 'Service' }), 'service');
  t.is(kindOf({ kind: 'EndpointSlice' }), 'slice');
  t.is(kindOf({ kind: 'Pod' }), 'pod');
  t.is(kindOf({ kind: 'Namespace' }), null);
  t.is(kindOf({ kind: 'Endpoints' }), null);
  t.is((convert('pod', podObj()).record as any)?.owner, 'web');
  t.is(describeObject('slice', 'shop/web-abc'), 'EndpointSlice shop/web-abc');
});

test('garbage never throws: every kind of nonsense becomes a record or a problem', (t) => {
  const junk: unknown[] = [null, 7, 'x', [], {}, { metadata: null }, { metadata: { name: 5 } }, { spec: { ports: 'all' } }, { spec: { ports: [null, 3, { port: {} }] } }, { endpoints: [null, { addresses: 'x' }] }, { status: { podIPs: 'x' } }];
  for (const j of junk) {
    for (const kind of ['service', 'slice', 'pod'] as const) {
      const c = convert(kind, j as Obj);
      t.is(typeof c.key, 'string');
      accepted(t, kind, c);
    }
  }
});
