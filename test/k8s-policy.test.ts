import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolvePolicy } from '../src/k8s/annotations.ts';
import { parseObjects } from '../src/k8s/documents.ts';
import { podFromObject } from '../src/k8s/objects.ts';
import { candidatePaths, findPodCgroup } from '../src/k8s/pod-cgroup.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const A = (o: Record<string, string>) => ({ annotations: o });

test('inject is opt-in, per namespace or pod, the pod wins', (t) => {
  t.false(resolvePolicy({}, undefined).meshed);
  t.is(resolvePolicy({}, undefined).reason, 'not-injected');
  t.true(resolvePolicy({}, A({ 'mesh-agent.io/inject': 'enabled' })).meshed);
  t.false(resolvePolicy(A({ 'mesh-agent.io/inject': 'disabled' }), A({ 'mesh-agent.io/inject': 'enabled' })).meshed);
  t.true(resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled' }), A({ 'mesh-agent.io/inject': 'disabled' })).meshed);
});

test('hostNetwork and finished pods are never meshed', (t) => {
  const ns = A({ 'mesh-agent.io/inject': 'enabled' });
  t.is(resolvePolicy({ hostNetwork: true }, ns).reason, 'host-network');
  t.is(resolvePolicy({ phase: 'Succeeded' }, ns).reason, 'not-running');
  t.true(resolvePolicy({ phase: 'Running' }, ns).meshed);
});

test('port annotations parse lists and ranges; namespace values apply unless the pod sets its own', (t) => {
  const p = resolvePolicy(
    A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '3306,5000-5010' }),
    A({ 'mesh-agent.io/skip-inbound-ports': '9090', 'mesh-agent.io/skip-outbound-ports': '1-100' }),
  );
  t.deepEqual(p.skipOutbound.ranges(), [[3306, 3306], [5000, 5010]]);
  t.deepEqual(p.skipInbound.ranges(), [[9090, 9090]]);
  t.is(p.opaquePorts, null);
  t.deepEqual(p.errors, []);
});

test('Linkerd\'s port annotations are read too: pod over namespace, ours over Linkerd\'s on each; a bad Linkerd value names its annotation', (t) => {
  const p = resolvePolicy(
    A({ 'mesh-agent.io/inject': 'enabled', 'config.linkerd.io/skip-outbound-ports': '3306', 'config.linkerd.io/opaque-ports': '4222' }),
    A({ 'config.linkerd.io/skip-inbound-ports': '9090', 'config.linkerd.io/skip-outbound-ports': '1-100' }),
  );
  t.deepEqual(p.skipOutbound.ranges(), [[3306, 3306]], 'the pod\'s Linkerd annotation over the namespace\'s');
  t.deepEqual(p.skipInbound.ranges(), [[9090, 9090]], 'the namespace\'s Linkerd annotation');
  t.deepEqual(p.opaquePorts?.ranges(), [[4222, 4222]]);
  const both = resolvePolicy(A({ 'mesh-agent.io/skip-inbound-ports': '8081', 'config.linkerd.io/skip-inbound-ports': '9090' }), A({ 'mesh-agent.io/skip-inbound-ports': '7070' }));
  t.deepEqual(both.skipInbound.ranges(), [[8081, 8081]], 'ours over Linkerd\'s on the pod');
  const nsOurs = resolvePolicy(A({ 'config.linkerd.io/skip-inbound-ports': '9090' }), A({ 'mesh-agent.io/skip-inbound-ports': '7070' }));
  t.deepEqual(nsOurs.skipInbound.ranges(), [[9090, 9090]], 'the pod\'s Linkerd annotation over the namespace\'s own');
  t.regex(resolvePolicy(A({ 'config.linkerd.io/opaque-ports': 'x' }), undefined).errors[0]!, /^config\.linkerd\.io\/opaque-ports: /);
});

test('opaque ports may name the pod\'s container ports, as Linkerd\'s annotation does; an unknown name on the pod is an error, on its namespace it does not apply', (t) => {
  const pod = podFromObject({
    kind: 'Pod',
    metadata: { uid: 'u1', name: 'db', namespace: 'shop', annotations: { 'mesh-agent.io/inject': 'enabled', 'config.linkerd.io/opaque-ports': 'mysql, 9000-9001,nats' } },
    spec: { containers: [{ name: 'db', ports: [{ name: 'mysql', containerPort: 3306 }, { containerPort: 8080 }] }, { name: 'bus', ports: [{ name: 'nats', containerPort: 4222, protocol: 'TCP' }, { name: 'dns', containerPort: 53, protocol: 'UDP' }] }] },
  })!;
  t.deepEqual(pod.namedPorts, { mysql: 3306, nats: 4222 }, 'TCP container ports with a name');
  const p = resolvePolicy(pod, undefined);
  t.deepEqual(p.errors, []);
  t.deepEqual(p.opaquePorts?.ranges(), [[3306, 3306], [4222, 4222], [9000, 9001]]);
  // A name the pod does not have: the pod's own annotation is wrong, said with the names it has.
  const bad = resolvePolicy({ ...pod, annotations: { 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/opaque-ports': 'postgres' } }, undefined, p);
  t.deepEqual(bad.errors, ['mesh-agent.io/opaque-ports: no TCP container port named "postgres" on the pod (its named ports: mysql, nats); name one of them or give the number']);
  t.deepEqual(bad.opaquePorts?.ranges(), p.opaquePorts?.ranges(), 'the last good value kept');
  // On the namespace, a name is each pod's own: a pod without it is not opaque on it, and no error.
  const fromNs = resolvePolicy({ annotations: { 'mesh-agent.io/inject': 'enabled' }, namedPorts: { http: 8080 } }, A({ 'mesh-agent.io/opaque-ports': 'mysql,25' }));
  t.deepEqual(fromNs.errors, []);
  t.deepEqual(fromNs.opaquePorts?.ranges(), [[25, 25]]);
  // A token that is neither a number, a range nor a valid port name is named, with the rule for names.
  const rule = 'port names are lowercase IANA_SVC_NAME \\(at most 15 characters of a-z, 0-9 and -, with at least one letter, no -- and no - at either end\\)';
  const upper = resolvePolicy({ ...pod, annotations: { 'mesh-agent.io/inject': 'enabled', 'config.linkerd.io/opaque-ports': 'mysql,HTTP' } }, undefined, p);
  t.regex(upper.errors.join('\n'), new RegExp(`^config\\.linkerd\\.io/opaque-ports: "HTTP" is not a port number, range or container port name: ${rule}; did you mean "http"\\?$`));
  t.deepEqual(upper.opaquePorts?.ranges(), p.opaquePorts?.ranges(), 'the last good value kept');
  for (const bad of ['my_sql', 'a-very-long-port-name', 'my--sql', '-mysql']) {
    const ns = resolvePolicy({ annotations: { 'mesh-agent.io/inject': 'enabled' }, namedPorts: {} }, A({ 'mesh-agent.io/opaque-ports': `25,${bad}` }));
    t.regex(ns.errors.join('\n'), new RegExp(`^mesh-agent\\.io/opaque-ports: "${bad}" is not a port number, range or container port name: ${rule}$`), `${bad}: wrong on a namespace too`);
  }
  // Skip ports go to the kernel as numbers, as Linkerd's take them: a name there stays an error.
  t.regex(resolvePolicy({ annotations: { 'mesh-agent.io/skip-inbound-ports': 'mysql' }, namedPorts: { mysql: 3306 } }, undefined).errors[0]!, /skip-inbound-ports: invalid port list "mysql"/);
});

test('a container port whose name is also a property of every object (constructor, a valid port name) is read like any other (the map opaque-ports and a Server\'s named port resolve against)', (t) => {
  const pod = podFromObject({
    kind: 'Pod',
    metadata: { uid: 'u1', name: 'odd', namespace: 'shop', annotations: { 'mesh-agent.io/inject': 'enabled', 'config.linkerd.io/opaque-ports': 'constructor' } },
    spec: { containers: [{ name: 'app', ports: [{ name: 'constructor', containerPort: 7000 }] }] },
  })!;
  t.deepEqual(pod.namedPorts, { constructor: 7000 });
  const p = resolvePolicy(pod, undefined);
  t.deepEqual(p.errors, []);
  t.deepEqual(p.opaquePorts?.ranges(), [[7000, 7000]]);
});

test('a bad value is reported with the annotation and value, and the last good value is kept', (t) => {
  const good = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '3306' }), undefined);
  const bad = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/skip-outbound-ports': '33o6' }), undefined, good);
  t.deepEqual(bad.skipOutbound.ranges(), [[3306, 3306]]);
  t.is(bad.errors.length, 1);
  t.regex(bad.errors[0]!, /skip-outbound-ports.*33o6/);
  const fresh = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/opaque-ports': '70000' }), undefined);
  t.is(fresh.opaquePorts, null);
  t.regex(fresh.errors[0]!, /opaque-ports.*70000.*1-65535/);
  const tooMany = Array.from({ length: 17 }, (_, i) => String(1000 + i * 2)).join(',');
  t.regex(resolvePolicy(A({ 'mesh-agent.io/skip-outbound-ports': tooMany }), undefined).errors[0]!, /17 separate ranges/);
  // The opaque list never reaches the kernel (the proxy's PortSet holds any number): 17 ports
  // taken from Linkerd's annotation were refused, and the default list applied instead.
  for (const key of ['mesh-agent.io/opaque-ports', 'config.linkerd.io/opaque-ports']) {
    const opaque = resolvePolicy(A({ [key]: tooMany }), undefined);
    t.deepEqual(opaque.errors, [], key);
    t.is(opaque.opaquePorts?.ranges().length, 17, key);
    t.true(opaque.opaquePorts!.has(1032), key);
  }
  t.regex(resolvePolicy(A({ 'mesh-agent.io/inject': 'yes' }), undefined).errors[0]!, /"yes" is not enabled or disabled/);
});

test('objects: several documents, Lists, Pods and Namespaces; YAML errors carry the line', (t) => {
  const text = [
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {mesh-agent.io/inject: enabled}}',
    JSON.stringify({ kind: 'PodList', items: [{ kind: 'Pod', metadata: { name: 'a', namespace: 'shop', uid: 'u1', ownerReferences: [{ kind: 'ReplicaSet', name: 'a-1', controller: true }] }, spec: { nodeName: 'n1' }, status: { podIP: '10.0.0.1', phase: 'Running' } }] }),
    'kind: Pod\nmetadata: {name: b, uid: u2}\nspec: {hostNetwork: true}',
    'kind: ConfigMap\nmetadata: {name: c}',
  ].join('\n---\n');
  const s = parseObjects(text);
  t.deepEqual(s.pods.map((p) => [p.name, p.namespace, p.ip, p.hostNetwork]), [['a', 'shop', '10.0.0.1', false], ['b', 'default', undefined, true]]);
  t.deepEqual(s.pods[0]!.owner, { kind: 'ReplicaSet', name: 'a-1' });
  t.is(s.namespaces.get('shop')!.annotations['mesh-agent.io/inject'], 'enabled');
  // An unquoted port list is a YAML number: read as its text, as the controller's discovery reads it (namespaces.ts, podFromK8s).
  const unquoted = parseObjects('kind: Namespace\nmetadata: {name: shop, annotations: {mesh-agent.io/skip-inbound-ports: 7002}}\n---\nkind: Pod\nmetadata: {name: a, namespace: shop, uid: u3, annotations: {config.linkerd.io/skip-outbound-ports: 3306}}');
  const p = resolvePolicy(unquoted.pods[0]!, unquoted.namespaces.get('shop'));
  t.deepEqual([p.skipInbound.ranges(), p.skipOutbound.ranges(), p.errors], [[[7002, 7002]], [[3306, 3306]], []]);
  const err = t.throws(() => parseObjects('kind: Pod\nmetadata:\n  name: [unclosed\n', 'pods.yaml'));
  t.regex(err!.message, /^pods\.yaml:\d+: invalid YAML/);
});

test('pod cgroups are found for both kubelet drivers and every QoS class, from any ancestor', (t) => {
  const root = testTempDir(t);
  const uid = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
  for (const rel of candidatePaths(uid)) {
    const dir = path.join(root, rel);
    fs.mkdirSync(dir, { recursive: true });
    t.is(findPodCgroup(root, uid), dir, rel);
    // The agent may be pointed at kubepods(.slice) itself.
    t.is(findPodCgroup(path.join(root, rel.split('/')[0]!), uid), dir);
    fs.rmSync(path.join(root, rel.split('/')[0]!), { recursive: true });
  }
  const nested = path.join(root, 'kind/kubelet/kubepods/burstable', `pod${uid}`);
  fs.mkdirSync(nested, { recursive: true });
  t.is(findPodCgroup(root, uid), nested);
  t.is(findPodCgroup(root, 'no-such-uid'), null);
});

test('default inbound policy: pod over namespace, ours over Linkerd\'s, else the cluster default', (t) => {
  const on = { 'mesh-agent.io/inject': 'enabled' };
  const at = (pod: Record<string, string>, ns: Record<string, string>, cluster?: 'deny') => {
    const p = resolvePolicy(A({ ...on, ...pod }), A(ns), undefined, cluster);
    return [p.inboundPolicy, p.inboundPolicyFrom];
  };
  t.deepEqual(at({}, {}), ['all-unauthenticated', 'cluster default']);
  t.deepEqual(at({}, {}, 'deny'), ['deny', 'cluster default']);
  t.deepEqual(at({}, { 'config.linkerd.io/default-inbound-policy': 'cluster-authenticated' }), ['cluster-authenticated', 'namespace annotation config.linkerd.io/default-inbound-policy']);
  t.deepEqual(at({}, { 'config.linkerd.io/default-inbound-policy': 'deny', 'mesh-agent.io/default-inbound-policy': 'all-authenticated' }), ['all-authenticated', 'namespace annotation mesh-agent.io/default-inbound-policy']);
  t.deepEqual(at({ 'config.linkerd.io/default-inbound-policy': 'cluster-unauthenticated' }, { 'mesh-agent.io/default-inbound-policy': 'deny' }), ['cluster-unauthenticated', 'pod annotation config.linkerd.io/default-inbound-policy']);
  t.deepEqual(at({ 'mesh-agent.io/default-inbound-policy': 'all-unauthenticated' }, {}, 'deny'), ['all-unauthenticated', 'pod annotation mesh-agent.io/default-inbound-policy']);
});

test('a bad default inbound policy keeps the last good one, and denies when there is none: never a silent allow-all', (t) => {
  const good = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/default-inbound-policy': 'all-authenticated' }), undefined);
  const bad = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled', 'mesh-agent.io/default-inbound-policy': 'allow-all' }), undefined, good);
  t.is(bad.inboundPolicy, 'all-authenticated');
  t.regex(bad.inboundPolicyFrom, /last good value/);
  t.regex(bad.errors[0]!, /mesh-agent.io\/default-inbound-policy on the pod: "allow-all" is not a policy; use one of all-unauthenticated/);
  const fresh = resolvePolicy(A({ 'mesh-agent.io/inject': 'enabled' }), A({ 'config.linkerd.io/default-inbound-policy': 'open' }));
  t.is(fresh.inboundPolicy, 'deny');
  t.regex(fresh.inboundPolicyFrom, /is invalid: denying until it is fixed/);
});
