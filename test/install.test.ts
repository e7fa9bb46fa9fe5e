import test from 'ava';
import { ROUTE_KINDS } from '../src/routing/route-kube-source.ts';
import { ROUTE_PLURALS } from '../src/routing/route-status.ts';
import { parseAllDocuments } from 'yaml';
import { installManifests, INSTALL_DEFAULTS } from '../src/k8s/manifests.ts';
import { manifestsToYaml } from '../src/cli/install.ts';
import { validateObject } from './fixtures/manifests/k8s-schema.ts';
import { runCli } from './fixtures/manifests/run-cli.ts';

const find = (objs: any[], kind: string, name?: string) => objs.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
const agentDs = (objs: any[]) => find(objs, 'DaemonSet');
const agentContainer = (objs: any[]) => agentDs(objs).spec.template.spec.containers[0];

test('every object install prints validates against the Kubernetes schemas', async (t) => {
  const objs = installManifests() as any[];
  t.deepEqual(objs.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Deployment', 'Service']);
  for (const o of objs) t.deepEqual(await validateObject(o), [], `${o.kind} ${o.metadata.name}`);
  // And with every flag changed.
  const custom = installManifests({ namespace: 'mesh', image: 'reg/x:1', proxyPort: 16001, adminPort: 5191, controllerPort: 9000, dashboardPort: 9001, skipOutboundPorts: '22,3306' }) as any[];
  for (const o of custom) t.deepEqual(await validateObject(o), [], `${o.kind} ${o.metadata.name}`);
});

test('the validator rejects invalid objects: missing required, wrong type, unknown field', async (t) => {
  const ds: any = structuredClone(agentDs(installManifests() as any[]));
  delete ds.spec.selector;
  ds.spec.template.spec.hostNetwork = 'yes';
  ds.spec.template.spec.containers[0].volumeMounts[1].readonly = true; // misspelled readOnly
  ds.spec.template.spec.toleration = [{ operator: 'Exists' }];
  const problems = await validateObject(ds);
  t.true(problems.some((p) => p.includes('selector')), problems.join('\n'));
  t.true(problems.some((p) => p.startsWith('/spec/template/spec/hostNetwork')), problems.join('\n'));
  t.true(problems.includes('/spec/template/spec/containers/0/volumeMounts/1/readonly: unknown field'), problems.join('\n'));
  t.true(problems.includes('/spec/template/spec/toleration: unknown field'), problems.join('\n'));
  t.notDeepEqual(await validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 'http' }] } }), []);
  t.notDeepEqual(await validateObject({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: {} }] }), []);
});

test('every object carries the app.kubernetes.io labels', (t) => {
  for (const o of installManifests() as any[]) {
    const l = o.metadata.labels;
    t.is(l['app.kubernetes.io/name'], 'mesh-agent', o.kind);
    t.is(l['app.kubernetes.io/part-of'], 'mesh-agent', o.kind);
    t.truthy(l['app.kubernetes.io/component'], o.kind);
  }
});

test('agent DaemonSet: host network, capabilities, mounts, tolerations, probes, downward API', (t) => {
  const objs = installManifests() as any[];
  const ds = agentDs(objs);
  const pod = ds.spec.template.spec;
  const c = agentContainer(objs);
  t.true(pod.hostNetwork);
  t.is(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  t.false(pod.hostPID);
  t.is(pod.priorityClassName, 'system-node-critical');
  t.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  t.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  t.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  t.false(c.securityContext.privileged);
  t.deepEqual(c.securityContext.capabilities, { add: ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_RESOURCE'], drop: ['ALL'] });
  const vol = (name: string) => pod.volumes.find((v: any) => v.name === name);
  const mount = (path: string) => c.volumeMounts.find((m: any) => m.mountPath === path);
  t.deepEqual(vol(mount('/sys/fs/bpf').name).hostPath, { path: '/sys/fs/bpf', type: 'Directory' });
  t.is(vol(mount('/sys/fs/cgroup').name).hostPath.path, '/sys/fs/cgroup');
  t.true(mount('/sys/fs/cgroup').readOnly);
  t.deepEqual(c.env, [
    { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
  ]);
  t.deepEqual(c.ports.map((p: any) => [p.name, p.containerPort]), [['proxy', 15001], ['admin', 4191]]);
  t.is(c.startupProbe.httpGet.path, '/live');
  t.is(c.livenessProbe.httpGet.path, '/live');
  t.is(c.readinessProbe.httpGet.path, '/ready');
  for (const p of [c.startupProbe, c.livenessProbe, c.readinessProbe]) t.is(p.httpGet.port, 'admin');
  t.truthy(c.resources.requests.cpu);
  t.truthy(c.resources.limits.memory);
  // Settings come from the ConfigMap alone, mounted where --config points.
  t.deepEqual(c.args, ['run', '--config', '/etc/mesh-agent']);
  t.deepEqual(vol(mount('/etc/mesh-agent').name).configMap, { name: find(objs, 'ConfigMap').metadata.name });
  t.true(mount('/etc/mesh-agent').readOnly);
  t.deepEqual(find(objs, 'ConfigMap').data, {
    'proxy-port': '15001',
    'admin-port': '4191',
    'controller-addr': 'mesh-agent-controller.mesh-agent.svc:8086',
    'skip-outbound-ports': '',
    'cgroup-root': '/sys/fs/cgroup/kubepods.slice',
  });
  const ann = ds.spec.template.metadata.annotations;
  t.is(ann['prometheus.io/scrape'], 'true');
  t.is(ann['prometheus.io/port'], '4191');
  t.is(ann['prometheus.io/path'], '/metrics');
});

test('agent RBAC is read-only: get/list/watch pods and namespaces, get nodes, nothing else', (t) => {
  const objs = installManifests() as any[];
  const role = find(objs, 'ClusterRole');
  t.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
  ]);
  const binding = find(objs, 'ClusterRoleBinding');
  t.is(binding.roleRef.name, role.metadata.name);
  t.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: agentDs(objs).spec.template.spec.serviceAccountName, namespace: 'mesh-agent' }]);
});

test('controller: one non-root replica, read-only root, Service on the controller port', (t) => {
  const objs = installManifests() as any[];
  const dep = find(objs, 'Deployment');
  const c = dep.spec.template.spec.containers[0];
  t.is(dep.spec.replicas, 1);
  t.is(c.args[0], 'controller');
  t.true(dep.spec.template.spec.securityContext.runAsNonRoot);
  t.true(c.securityContext.readOnlyRootFilesystem);
  const svc = find(objs, 'Service');
  t.is(svc.spec.type, 'ClusterIP');
  t.deepEqual(svc.spec.selector, dep.spec.template.metadata.labels);
  t.is(svc.spec.ports[0].port, INSTALL_DEFAULTS.controllerPort);
  t.is(svc.spec.ports[0].name, 'grpc');
  // The dashboard: a second port of the same ClusterIP Service, served by the same container.
  t.deepEqual(svc.spec.ports.map((p: any) => [p.name, p.port, p.targetPort]), [['grpc', 8086, 'grpc'], ['http', 8084, 'http']]);
  t.deepEqual(c.ports.map((p: any) => [p.name, p.containerPort]), [['grpc', 8086], ['http', 8084]]);
  t.deepEqual(c.args, ['controller', '--listen', '0.0.0.0:8086', '--dashboard-listen', '0.0.0.0:8084']);
});

test('controller RBAC: list and watch of Services, Pods, EndpointSlices and the route kinds cluster-wide, the routes\' status written, bound to its ServiceAccount, whose token is mounted', (t) => {
  const objs = installManifests() as any[];
  const role = find(objs, 'ClusterRole', 'mesh-agent-controller');
  t.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['services', 'pods'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes', 'grpcroutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes/status', 'grpcroutes/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: ['specs.smi-spec.io'], resources: ['httproutegroups', 'tcproutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['access.smi-spec.io'], resources: ['traffictargets'], verbs: ['get', 'list', 'watch'] },
  ]);
  // What the controller reads and writes is what the role grants (route-kube-source.ts, route-status.ts).
  for (const k of ROUTE_KINDS) t.true(role.rules.some((r: any) => r.apiGroups.includes(k.group) && r.resources.includes(k.plural) && r.verbs.includes('watch')), k.plural);
  for (const [, p] of Object.entries(ROUTE_PLURALS)) t.true(role.rules.some((r: any) => r.apiGroups.includes(p.group) && r.resources.includes(`${p.plural}/status`) && r.verbs.includes('update')), `${p.plural}/status`);
  const binding = find(objs, 'ClusterRoleBinding', 'mesh-agent-controller');
  const pod = find(objs, 'Deployment').spec.template.spec;
  t.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'mesh-agent-controller' });
  t.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: 'mesh-agent' }]);
  t.true(pod.automountServiceAccountToken, 'in-cluster config needs the token');
  t.is(pod.containers[0].resources.limits.memory, '1Gi', 'room for discovery of 100,000 endpoints (368 MB measured)');
  t.true(find(objs, 'ServiceAccount', pod.serviceAccountName).automountServiceAccountToken);
  // No flag picks the source: in a pod the controller uses its in-cluster config (cli/controller.ts discoveryMode).
  t.false(pod.containers[0].args.includes('--resources'));
  const other = installManifests({ namespace: 'mesh' }) as any[];
  t.is(find(other, 'ClusterRoleBinding', 'mesh-agent-mesh-controller').subjects[0].namespace, 'mesh');
});

test('flags change image, namespace and ports everywhere', (t) => {
  const objs = installManifests({ namespace: 'mesh', image: 'reg/x:1', proxyPort: 16001, adminPort: 5191, controllerPort: 9000, dashboardPort: 9001, skipOutboundPorts: '3306, 22' }) as any[];
  t.is(objs[0].metadata.name, 'mesh');
  for (const o of objs.slice(1)) if (!o.kind.startsWith('Cluster')) t.is(o.metadata.namespace, 'mesh', o.kind);
  t.is(find(objs, 'ClusterRoleBinding').subjects[0].namespace, 'mesh');
  const c = agentContainer(objs);
  t.is(c.image, 'reg/x:1');
  t.is(find(objs, 'Deployment').spec.template.spec.containers[0].image, 'reg/x:1');
  t.deepEqual(c.ports.map((p: any) => p.containerPort), [16001, 5191]);
  const data = find(objs, 'ConfigMap').data;
  t.is(data['proxy-port'], '16001');
  t.is(data['admin-port'], '5191');
  t.is(data['skip-outbound-ports'], '22,3306');
  t.is(agentDs(objs).spec.template.metadata.annotations['prometheus.io/port'], '5191');
  t.is(find(objs, 'Service').spec.ports[0].port, 9000);
  t.is(find(objs, 'Service').spec.ports[1].port, 9001);
  t.true(find(objs, 'Deployment').spec.template.spec.containers[0].args.includes('0.0.0.0:9001'));
  t.is(find(objs, 'ConfigMap').data['controller-addr'], 'mesh-agent-controller.mesh.svc:9000');
  const hash = (o: any[]) => agentDs(o).spec.template.metadata.annotations['mesh-agent.io/config-hash'];
  t.not(hash(objs), hash(installManifests() as any[]), 'a changed config rolls the agents');
  t.is(hash(installManifests() as any[]), hash(installManifests() as any[]));
  t.not(find(objs, 'ClusterRole').metadata.name, (installManifests() as any[])[3].metadata.name, 'two installs do not share a ClusterRole');
});

test('bad options are rejected', (t) => {
  t.throws(() => installManifests({ proxyPort: 0 }), { message: /--proxy-port/ });
  t.throws(() => installManifests({ dashboardPort: 8086 }), { message: /--dashboard-port 8086: the controller port is 8086/ });
  t.throws(() => installManifests({ namespace: 'Bad_NS' }), { message: /--namespace/ });
  t.throws(() => installManifests({ skipOutboundPorts: '1-2-3' }), { message: /invalid port list/ });
});

test('CLI: prints multi-document YAML that parses back to the same objects', (t) => {
  const r = runCli(['install', '--namespace', 'mesh', '--proxy-port', '16001']);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, manifestsToYaml(installManifests({ namespace: 'mesh', proxyPort: 16001 })));
  const docs = parseAllDocuments(r.stdout) as any[];
  t.deepEqual(docs.map((d) => d.toJS()), installManifests({ namespace: 'mesh', proxyPort: 16001 }));
  const bad = runCli(['install', '--admin-port', 'x']);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /--admin-port: "x" is not a port number/);
});
