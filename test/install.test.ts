import test from 'ava';
import { CONTROLLER_TOKEN_FILE } from '../src/controller/agent-token.ts';
import { ROUTE_KINDS } from '../src/routing/route-kube-source.ts';
import { ROUTE_PLURALS } from '../src/routing/route-status.ts';
import { parseAllDocuments } from 'yaml';
import { installManifests, INSTALL_DEFAULTS } from '../src/k8s/manifests.ts';
import { DEFAULT_DASHBOARD_PORT } from '../src/controller/addr.ts';
import { manifestsToYaml } from '../src/cli/install.ts';
import { validateObject } from './fixtures/manifests/k8s-schema.ts';
import { runCli } from './fixtures/manifests/run-cli.ts';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createIssuer, createTrustAnchor, loadIssuer } from '../src/identity/x509.ts';
import { IDENTITY_DEFAULTS, IDENTITY_RUN_DEFAULTS } from '../src/cli/identity-flags.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const find = (objs: any[], kind: string, name?: string) => objs.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
const agentDs = (objs: any[]) => find(objs, 'DaemonSet');
const agentContainer = (objs: any[]) => agentDs(objs).spec.template.spec.containers[0];

test('every object install prints validates against the Kubernetes schemas', async (t) => {
  const objs = installManifests() as any[];
  t.deepEqual(objs.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Deployment', 'Service', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding']);
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
  t.deepEqual(c.securityContext.capabilities, { add: ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_RESOURCE', 'SYS_NICE'], drop: ['ALL'] });
  const vol = (name: string) => pod.volumes.find((v: any) => v.name === name);
  const mount = (path: string) => c.volumeMounts.find((m: any) => m.mountPath === path);
  t.deepEqual(vol(mount('/sys/fs/bpf').name).hostPath, { path: '/sys/fs/bpf', type: 'Directory' });
  t.is(vol(mount('/sys/fs/cgroup').name).hostPath.path, '/sys/fs/cgroup');
  t.true(mount('/sys/fs/cgroup').readOnly);
  // The agent's token for the controller, at run --controller-token-file's default, bound to its pod and node.
  t.deepEqual(vol(mount('/var/run/secrets/tokens').name).projected.sources, [{ serviceAccountToken: { audience: 'mesh-agent-controller', expirationSeconds: 3600, path: 'mesh-agent-controller' } }]);
  t.true(mount('/var/run/secrets/tokens').readOnly);
  t.is(CONTROLLER_TOKEN_FILE, '/var/run/secrets/tokens/mesh-agent-controller');
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
  // Settings come from the ConfigMap, mounted where --config points; the CNI plugin's host paths are flags (test below).
  t.deepEqual(c.args, ['run', '--config', '/etc/mesh-agent', '--cni-socket', '/var/run/mesh-agent-cni/cni.sock', '--cni-state', '/var/lib/mesh-agent/cni-state.json']);
  t.deepEqual(vol(mount('/etc/mesh-agent').name).configMap, { name: find(objs, 'ConfigMap').metadata.name });
  t.true(mount('/etc/mesh-agent').readOnly);
  t.deepEqual(find(objs, 'ConfigMap').data, {
    'proxy-port': '15001',
    'admin-port': '4191',
    'controller-addr': 'mesh-agent-controller.mesh-agent.svc:8086',
    'skip-outbound-ports': '',
    'cgroup-root': '/sys/fs/cgroup/kubepods.slice',
    'inbound-port': '15006',
    'default-inbound-policy': 'all-unauthenticated',
    'cluster-networks': '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16',
    'proxy-workers': 'auto',
  });
  const withPolicy = installManifests({ defaultInboundPolicy: 'all-authenticated', inboundPort: 0 }) as any[];
  t.like(find(withPolicy, 'ConfigMap').data, { 'default-inbound-policy': 'all-authenticated', 'inbound-port': 'off' });
  t.throws(() => installManifests({ defaultInboundPolicy: 'open' }), { message: /--default-inbound-policy: "open" is not a policy/ });
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

test('the CNI plugin: an install-cni container chains it into the host\'s CNI configuration; the agent answers it on a hostPath socket and keeps its state file on the host; --cni=false leaves all of it out', async (t) => {
  const objs = installManifests() as any[];
  const pod = agentDs(objs).spec.template.spec;
  const [agent, install] = pod.containers;
  t.is(install.name, 'install-cni');
  t.deepEqual(install.args, ['cni-install', '--watch', '--conf-dir', '/host/etc/cni/net.d', '--bin-dir', '/host/opt/cni/bin', '--agent-socket', '/var/run/mesh-agent-cni/cni.sock', '--state-file', '/var/lib/mesh-agent/cni-state.json', '--namespace', 'mesh-agent', '--daemonset', 'mesh-agent-agent', '--plugin-service-account', 'mesh-agent-cni']);
  t.is(install.image, agent.image);
  t.deepEqual(install.securityContext.capabilities, { drop: ['ALL'] });
  t.true(install.securityContext.readOnlyRootFilesystem);
  const host = (c: any, mountPath: string) => pod.volumes.find((v: any) => v.name === c.volumeMounts.find((m: any) => m.mountPath === mountPath)?.name)?.hostPath;
  t.deepEqual(host(install, '/host/etc/cni/net.d'), { path: '/etc/cni/net.d', type: 'DirectoryOrCreate' });
  t.deepEqual(host(install, '/host/opt/cni/bin'), { path: '/opt/cni/bin', type: 'DirectoryOrCreate' });
  // The plugin runs on the host: the agent's socket and state file are at the same paths inside and out.
  t.deepEqual(host(agent, '/var/run/mesh-agent-cni'), { path: '/var/run/mesh-agent-cni', type: 'DirectoryOrCreate' });
  t.deepEqual(host(agent, '/var/lib/mesh-agent'), { path: '/var/lib/mesh-agent', type: 'DirectoryOrCreate' });
  t.deepEqual(host(install, '/var/lib/mesh-agent'), { path: '/var/lib/mesh-agent', type: 'DirectoryOrCreate' });
  // It reads its own DaemonSet at SIGTERM (deleted: uninstall) and asks for the plugin's token, nothing else.
  t.deepEqual(find(objs, 'Role', 'mesh-agent-cni').rules, [
    { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get', 'list'] },
    { apiGroups: [''], resources: ['serviceaccounts/token'], resourceNames: ['mesh-agent-cni'], verbs: ['create'] },
  ]);
  t.deepEqual(find(objs, 'RoleBinding', 'mesh-agent-cni').subjects, [{ kind: 'ServiceAccount', name: 'mesh-agent-agent', namespace: 'mesh-agent' }]);
  // The plugin's own ServiceAccount: no pod mounts its token; it gets pods, nothing else.
  t.false(find(objs, 'ServiceAccount', 'mesh-agent-cni').automountServiceAccountToken);
  t.deepEqual(find(objs, 'ClusterRole', 'mesh-agent-cni').rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }]);
  t.deepEqual(find(objs, 'ClusterRoleBinding', 'mesh-agent-cni').subjects, [{ kind: 'ServiceAccount', name: 'mesh-agent-cni', namespace: 'mesh-agent' }]);
  t.is(find(installManifests({ namespace: 'mesh' }) as any[], 'ClusterRole', 'mesh-agent-mesh-cni').rules[0].verbs[0], 'get', 'a ClusterRole per namespace');
  for (const o of objs.filter((x) => x.kind === 'DaemonSet' || /Role|ServiceAccount/.test(x.kind))) t.deepEqual(await validateObject(o), [], `${o.kind} ${o.metadata.name}`);

  const off = installManifests({ cni: false }) as any[];
  t.deepEqual(agentDs(off).spec.template.spec.containers.map((c: any) => c.name), ['agent']);
  t.deepEqual(agentContainer(off).args, ['run', '--config', '/etc/mesh-agent']);
  t.false(off.some((o) => o.kind === 'Role' || o.kind === 'RoleBinding' || o.metadata.name.endsWith('-cni')));
  t.false(JSON.stringify(off).includes('cni'));
  // The flag, through the CLI.
  const r = runCli(['install', '--cni=false']);
  t.is(r.status, 0, r.stderr);
  t.false(r.stdout.includes('install-cni'));
  const bad = runCli(['install', '--cni=maybe']);
  t.not(bad.status, 0);
  t.regex(bad.stderr, /--cni/);
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
  // Agents authenticate (docs/controller.md): only the agents' ServiceAccount, bound to the node a
  // request speaks for. The CLI's endpoints and the dashboard only through kubectl port-forward
  // (loopback in the pod): the agents need 8086 on the pod IP, nobody needs 8084 there.
  t.deepEqual(c.args, ['controller', '--listen', '0.0.0.0:8086', '--cli-access', 'loopback', '--dashboard-listen', '127.0.0.1:8084', '--agent-auth', 'token', '--agent-service-account', 'mesh-agent/mesh-agent-agent']);
  // `mesh-agent dashboard` port-forwards the Service's dashboard port: its target is where the dashboard listens.
  const dashPort = svc.spec.ports.find((p: any) => p.port === DEFAULT_DASHBOARD_PORT);
  t.is(c.args[c.args.indexOf('--dashboard-listen') + 1], `127.0.0.1:${c.ports.find((p: any) => p.name === dashPort.targetPort).containerPort}`);
  t.is(find(installManifests({ namespace: 'mesh' }) as any[], 'Deployment', 'mesh-agent-controller').spec.template.spec.containers[0].args.at(-1), 'mesh/mesh-agent-agent');
});

test('controller RBAC: list and watch of Services, Pods, Namespaces, EndpointSlices and the route kinds cluster-wide, the routes\' status written, bound to its ServiceAccount, whose token is mounted', (t) => {
  const objs = installManifests() as any[];
  const role = find(objs, 'ClusterRole', 'mesh-agent-controller');
  t.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['services', 'pods', 'namespaces'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes', 'grpcroutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes/status', 'grpcroutes/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: ['specs.smi-spec.io'], resources: ['httproutegroups', 'tcproutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['access.smi-spec.io'], resources: ['traffictargets'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['policy.linkerd.io'], resources: ['servers', 'authorizationpolicies', 'serverauthorizations', 'meshtlsauthentications', 'networkauthentications', 'httproutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
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
  t.is(data['proxy-workers'], 'auto', 'by default each agent runs one proxy per CPU its container may use');
  t.is(find(installManifests({ proxyWorkers: '2' }) as any[], 'ConfigMap').data['proxy-workers'], '2');
  t.is(agentDs(objs).spec.template.metadata.annotations['prometheus.io/port'], '5191');
  t.is(find(objs, 'Service').spec.ports[0].port, 9000);
  t.is(find(objs, 'Service').spec.ports[1].port, 9001);
  t.true(find(objs, 'Deployment').spec.template.spec.containers[0].args.includes('127.0.0.1:9001'));
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
  t.throws(() => installManifests({ proxyWorkers: '0' }), { message: /--proxy-workers: "0" is not a number of proxies; give a whole number from 1 to 1024, or auto/ });
});

test('--skip-outbound-ports holds at most the datapath\'s 16 ranges: more is an install error, not agents failing at start', (t) => {
  t.throws(() => installManifests({ skipOutboundPorts: '1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33' }), { message: /--skip-outbound-ports: 17 separate ranges, the datapath holds 16/ });
});

test('ports that share the node (host network) must differ: a collision is refused naming both flags, as is a relative --cgroup-root', (t) => {
  // The agent's proxy, admin API, inbound listener and tunnel all listen on the node: the same port twice
  // is a DaemonSet the API server rejects (duplicate hostPort) or an agent that never starts (EADDRINUSE).
  const identity = { trustDomain: 'cluster.local', anchorsPem: 'a', issuerCertPem: 'c', issuerKeyPem: 'k', certificateLifetime: '24h' };
  const cases: Array<[object, RegExp]> = [
    [{ adminPort: 15001 }, /^--proxy-port and --admin-port are both 15001/],
    [{ adminPort: 15006 }, /^--admin-port and --inbound-port are both 15006/],
    [{ adminPort: 15008, identity }, /^--admin-port and the mTLS tunnel port are both 15008/],
    [{ proxyPort: 15008, identity }, /^--proxy-port and the mTLS tunnel port are both 15008/],
    [{ inboundPort: 15008, identity }, /^--inbound-port and the mTLS tunnel port are both 15008/],
    [{ inboundPort: 4191 }, /^--admin-port and --inbound-port are both 4191/],
    [{ cgroupRoot: 'kubepods.slice' }, /^--cgroup-root kubepods\.slice: not an absolute path/],
  ];
  for (const [opts, message] of cases) t.throws(() => installManifests(opts), { message }, JSON.stringify(opts));
  // Without identity nothing listens on the tunnel port; inbound off frees its port.
  t.notThrows(() => installManifests({ adminPort: 15008 }));
  t.notThrows(() => installManifests({ adminPort: 15006, inboundPort: 0 }));
  for (const o of [installManifests(), installManifests({ identity })] as any[][]) {
    const ports = agentContainer(o).ports.map((p: any) => p.containerPort);
    t.is(new Set(ports).size, ports.length, 'no hostPort twice');
  }
});

test('CLI: prints multi-document YAML that parses back to the same objects', async (t) => {
  const dir = testTempDir(t);
  const files = await pkiFiles(dir);
  const r = runCli(['install', '--namespace', 'mesh', '--proxy-port', '16001', ...files.flags]);
  t.is(r.status, 0, r.stderr);
  const want = installManifests({ namespace: 'mesh', proxyPort: 16001, identity: files.identity });
  t.is(r.stdout, manifestsToYaml(want));
  const docs = parseAllDocuments(r.stdout) as any[];
  t.deepEqual(docs.map((d) => d.toJS()), want);
  const bad = runCli(['install', '--admin-port', 'x']);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /--admin-port: "x" is not a port number/);
});

test('install\'s YAML reads back the same as kubectl reads it (YAML 1.1): --inbound-port off stays the string "off"', (t) => {
  // kubectl apply reads with go-yaml v2: a plain `off` is false there, and a ConfigMap's data must be strings.
  for (const opts of [{}, { inboundPort: 0 }, { namespace: 'on', cni: false }]) {
    const want = installManifests(opts);
    const docs = parseAllDocuments(manifestsToYaml(want), { version: '1.1' }) as any[];
    t.deepEqual(docs.map((d) => d.toJS()), want, JSON.stringify(opts));
  }
});

/** A trust anchor and issuer in files, as an operator bringing their own would pass them. */
async function pkiFiles(dir: string) {
  const now = Date.now();
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const issuer = await createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const f = (n: string, text: string) => {
    fs.writeFileSync(path.join(dir, n), text);
    return path.join(dir, n);
  };
  const flags = ['--identity-trust-anchors-file', f('ca.crt', anchor.certPem), '--identity-issuer-certificate-file', f('issuer.crt', issuer.certPem), '--identity-issuer-key-file', f('issuer.key', issuer.keyPem)];
  return { anchor, issuer, flags, identity: { trustDomain: 'cluster.local', anchorsPem: anchor.certPem, issuerCertPem: issuer.certPem, issuerKeyPem: issuer.keyPem, certificateLifetime: '24h' } };
}

test('identity: every object validates; the issuer key is in the Secret and nowhere else; the agents get the trust roots, a node-bound token for the identity audience, the tunnel port', async (t) => {
  const dir = testTempDir(t);
  const { identity } = await pkiFiles(dir);
  const objs = installManifests({ identity }) as any[];
  for (const o of objs) t.deepEqual(await validateObject(o), [], `${o.kind} ${o.metadata.name}`);
  t.deepEqual(objs.slice(11).map((o) => `${o.kind}/${o.metadata.name}`), [
    'ServiceAccount/mesh-agent-identity', 'ClusterRole/mesh-agent-identity', 'ClusterRoleBinding/mesh-agent-identity',
    'ConfigMap/mesh-agent-identity-trust-roots', 'Secret/mesh-agent-identity-issuer', 'Deployment/mesh-agent-identity', 'Service/mesh-agent-identity',
    'ServiceAccount/mesh-agent-cni', 'ClusterRole/mesh-agent-cni', 'ClusterRoleBinding/mesh-agent-cni', 'Role/mesh-agent-cni', 'RoleBinding/mesh-agent-cni',
  ]);
  const yaml = manifestsToYaml(objs);
  const keyBody = identity.issuerKeyPem.split('\n')[1]!;
  t.is(yaml.split(keyBody).length - 1, 1, 'the key appears once');
  const secret = find(objs, 'Secret');
  t.is(secret.type, 'kubernetes.io/tls');
  t.is(secret.stringData['tls.key'], identity.issuerKeyPem);
  t.deepEqual(find(objs, 'ClusterRole', 'mesh-agent-identity').rules, [
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
  ]);
  const dep = find(objs, 'Deployment', 'mesh-agent-identity');
  const c = dep.spec.template.spec.containers[0];
  t.deepEqual(c.args, ['identity', '--listen', '0.0.0.0:8080', '--trust-domain', 'cluster.local', '--agent-service-account', 'mesh-agent/mesh-agent-agent', '--service-account', 'mesh-agent/mesh-agent-identity', '--certificate-lifetime', '24h', '--status-access', 'loopback']);
  t.is(dep.spec.template.spec.serviceAccountName, 'mesh-agent-identity');
  const mounts = Object.fromEntries(c.volumeMounts.map((m: any) => [m.name, m.mountPath]));
  t.deepEqual(mounts, { issuer: '/var/run/mesh-agent/identity/issuer', 'trust-roots': '/var/run/mesh-agent/identity/trust-roots' });
  // The agent: config names the identity service; trust roots and a projected token mounted; 15008 declared.
  t.is(find(objs, 'ConfigMap', 'mesh-agent-config').data['identity-addr'], 'mesh-agent-identity.mesh-agent.svc:8080');
  const pod = agentDs(objs).spec.template.spec;
  const ac = pod.containers[0];
  t.deepEqual(ac.args, ['run', '--config', '/etc/mesh-agent', '--trust-domain', 'cluster.local', '--identity-service-account', 'mesh-agent/mesh-agent-identity', '--cni-socket', '/var/run/mesh-agent-cni/cni.sock', '--cni-state', '/var/lib/mesh-agent/cni-state.json']);
  t.deepEqual(ac.ports.map((p: any) => [p.name, p.containerPort]), [['proxy', 15001], ['admin', 4191], ['tunnel', 15008]]);
  // One projected volume, a token per audience: the controller's (its cleartext port never sees the identity service's) and the identity service's.
  const token = pod.volumes.find((v: any) => v.name === 'tokens');
  t.deepEqual(token.projected.sources, [
    { serviceAccountToken: { audience: 'mesh-agent-controller', expirationSeconds: 3600, path: 'mesh-agent-controller' } },
    { serviceAccountToken: { audience: 'mesh-agent-identity', expirationSeconds: 3600, path: 'mesh-agent-identity' } },
  ]);
  t.is(ac.volumeMounts.find((m: any) => m.name === 'tokens').mountPath, '/var/run/secrets/tokens');
  // The paths install mounts are the ones the agent and the identity service read by default.
  t.is(IDENTITY_DEFAULTS.issuerCertificateFile, '/var/run/mesh-agent/identity/issuer/tls.crt');
  t.is(IDENTITY_DEFAULTS.trustAnchorsFile, '/var/run/mesh-agent/identity/trust-roots/ca-bundle.crt');
  t.is(IDENTITY_RUN_DEFAULTS.tokenFile, '/var/run/secrets/tokens/mesh-agent-identity');
  t.is(IDENTITY_DEFAULTS.agentServiceAccount, `mesh-agent/${pod.serviceAccountName}`);
});

test('CLI: without files, install makes a trust anchor and an issuer that chain; partial or mismatched files are refused, naming the fix', async (t) => {
  const dir = testTempDir(t);
  const r = runCli(['install']);
  t.is(r.status, 0, r.stderr);
  const objs = (parseAllDocuments(r.stdout) as any[]).map((d) => d.toJS());
  const anchors = find(objs, 'ConfigMap', 'mesh-agent-identity-trust-roots').data['ca-bundle.crt'];
  const secret = find(objs, 'Secret', 'mesh-agent-identity-issuer').stringData;
  const issuer = await loadIssuer(secret['tls.crt'], secret['tls.key'], anchors);
  t.true(issuer.notAfter.getTime() - Date.now() > 360 * 86_400_000, 'the issuer lives a year');
  t.not(runCli(['install']).stdout, r.stdout, 'each install makes its own');
  const files = await pkiFiles(dir);
  const partial = runCli(['install', ...files.flags.slice(0, 2)]);
  t.is(partial.status, 1);
  t.regex(partial.stderr, /pass all three of --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file, or none/);
  const other = await pkiFiles(fs.mkdtempSync(path.join(dir, 'o-')));
  const mismatched = runCli(['install', ...files.flags.slice(0, 4), '--identity-issuer-key-file', other.flags[5]!]);
  t.is(mismatched.status, 1);
  t.regex(mismatched.stderr, /issuer key: it is not the key of the issuer certificate/);
});
