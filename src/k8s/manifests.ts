// The objects `mesh-agent install` prints: plain data, so tests can validate every one against
// the Kubernetes schemas and the CLI only has to serialize them.
import { createHash } from 'node:crypto';
import { parsePorts } from './annotations.ts';
import { IDENTITY_MOUNTS, identityNames, identityObjects, TOKEN_SECONDS, TOKENS_VOLUME, TUNNEL_PORT, withIdentity, type IdentityInstall } from './identity-manifests.ts';
import { CONTROLLER_AUDIENCE } from '../controller/agent-auth.ts';
import { CONTROLLER_TOKEN_FILE } from '../controller/agent-token.ts';
import { DEFAULT_CLUSTER_NETWORKS, DEFAULT_INBOUND_POLICY, parseDefaultPolicy, parseNetworks } from '../policy/model.ts';
import { parseProxyWorkers } from '../workers/cpus.ts';
import { PLUGIN_SERVICE_ACCOUNT } from '../cni/plugin-token.ts';

/** The controller token's file name in the tokens volume (run --controller-token-file's default). */
const CONTROLLER_TOKEN_PATH = CONTROLLER_TOKEN_FILE.slice(IDENTITY_MOUNTS.tokens.length + 1);

/** Where the agent container mounts the mesh-agent-config ConfigMap (`run --config`). */
export const CONFIG_MOUNT = '/etc/mesh-agent';

export interface InstallOptions {
  namespace?: string;
  image?: string;
  proxyPort?: number;
  adminPort?: number;
  controllerPort?: number;
  /** The controller's web dashboard, a second port of its Service (ClusterIP: reach it with `mesh-agent dashboard`). */
  dashboardPort?: number;
  /** Ports every meshed pod connects to directly (cluster-wide), e.g. "3306,5000-5010". */
  skipOutboundPorts?: string;
  /**
   * The pods' cgroup directory inside the agent's container. The default fits kubelet's systemd
   * cgroup driver (kubeadm's default since 1.22); cgroupfs-driver nodes use /sys/fs/cgroup/kubepods.
   */
  cgroupRoot?: string;
  /**
   * mTLS between nodes (docs/identity.md): the identity service, its issuer Secret and trust
   * roots, and the agents' identity settings. `mesh-agent install` always gives it (generating
   * the trust anchor and issuer unless files are given); without it nothing of identity is made.
   */
  identity?: IdentityInstall;
  /** A meshed pod's inbound policy without its own annotation (docs/policy.md), Linkerd's values. */
  defaultInboundPolicy?: string;
  /** The cluster-* policies' networks. */
  clusterNetworks?: string;
  /** The port the kernel hands captured inbound connections to on the node IP; 0: no inbound capture. */
  inboundPort?: number;
  /** Proxies per agent: a number, or auto (one per CPU the agent's container may use). */
  proxyWorkers?: string;
  /** The chained CNI plugin (docs/install.md): a meshed pod's sandbox waits for its node's agent. Default on. */
  cni?: boolean;
}

export const INSTALL_DEFAULTS = {
  namespace: 'mesh-agent',
  image: 'ghcr.io/mesh-agent/mesh-agent:0.1.0',
  proxyPort: 15001,
  adminPort: 4191,
  controllerPort: 8086,
  dashboardPort: 8084,
  skipOutboundPorts: '',
  cgroupRoot: '/sys/fs/cgroup/kubepods.slice',
  defaultInboundPolicy: DEFAULT_INBOUND_POLICY as string,
  clusterNetworks: DEFAULT_CLUSTER_NETWORKS as string,
  inboundPort: 15006,
  proxyWorkers: 'auto',
  cni: true,
} as const;

/** Where the plugin and the agent meet on every node (hostPath on both sides, the same path). */
export const CNI_HOST_PATHS = {
  socketDir: '/var/run/mesh-agent-cni',
  socket: '/var/run/mesh-agent-cni/cni.sock',
  stateDir: '/var/lib/mesh-agent',
  stateFile: '/var/lib/mesh-agent/cni-state.json',
  confDir: '/etc/cni/net.d',
  binDir: '/opt/cni/bin',
} as const;

const NAME = 'mesh-agent';

function labels(component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': NAME,
    'app.kubernetes.io/part-of': NAME,
    'app.kubernetes.io/component': component,
  };
}

function checkPort(name: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${name}: ${port} is not a port (1-65535)`);
  return port;
}

export function installManifests(options: InstallOptions = {}): object[] {
  const o = { ...INSTALL_DEFAULTS, ...stripUndefined(options) };
  const proxyPort = checkPort('--proxy-port', o.proxyPort);
  const adminPort = checkPort('--admin-port', o.adminPort);
  const controllerPort = checkPort('--controller-port', o.controllerPort);
  const dashboardPort = checkPort('--dashboard-port', o.dashboardPort);
  if (dashboardPort === controllerPort) throw new Error(`--dashboard-port ${dashboardPort}: the controller port is ${controllerPort}; pick another`);
  // The agent puts these in the datapath, which holds MAX_PORT_RANGES: more and no agent starts.
  const skipOutbound = parsePorts(o.skipOutboundPorts, '--skip-outbound-ports').toString();
  const defaultInboundPolicy = parseDefaultPolicy(o.defaultInboundPolicy, '--default-inbound-policy');
  parseNetworks(o.clusterNetworks, '--cluster-networks');
  const inboundPort = o.inboundPort === 0 ? 0 : checkPort('--inbound-port', o.inboundPort);
  const proxyWorkers = parseProxyWorkers(o.proxyWorkers, '--proxy-workers');
  // The agent is on the host network: each of its listeners takes its port on the node. The same
  // port twice is a duplicate hostPort the API server refuses, or an agent failing with EADDRINUSE.
  const nodePorts: Array<[string, number]> = [['--proxy-port', proxyPort], ['--admin-port', adminPort]];
  if (inboundPort !== 0) nodePorts.push(['--inbound-port', inboundPort]);
  if (options.identity) nodePorts.push(['the mTLS tunnel port', TUNNEL_PORT]);
  for (const [i, [a, p]] of nodePorts.entries()) {
    const b = nodePorts.slice(i + 1).find(([, q]) => q === p)?.[0];
    if (b) throw new Error(`${a} and ${b} are both ${p}: the agent listens on each on the node; pick another for one`);
  }
  if (!o.cgroupRoot.startsWith('/')) throw new Error(`--cgroup-root ${o.cgroupRoot}: not an absolute path (the agent refuses it at start); use the pods' cgroup directory, e.g. ${INSTALL_DEFAULTS.cgroupRoot}`);
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(o.namespace) || o.namespace.length > 63) {
    throw new Error(`--namespace: "${o.namespace}" is not a valid namespace name`);
  }
  const ns = o.namespace;
  const agent = labels('agent');
  const controller = labels('controller');
  const meta = (name: string, l: Record<string, string>) => ({ name, namespace: ns, labels: l });
  // ClusterRole names are global: suffix with the namespace only when it is not the default, so two installs never share one.
  const clusterName = ns === INSTALL_DEFAULTS.namespace ? NAME : `${NAME}-${ns}`;
  // The agent reads these at start (`run --config`, src/cli/run-config.ts); the DaemonSet passes no duplicate flags.
  const config = {
    'proxy-port': String(proxyPort),
    'admin-port': String(adminPort),
    'controller-addr': `${NAME}-controller.${ns}.svc:${controllerPort}`,
    'skip-outbound-ports': skipOutbound,
    'cgroup-root': o.cgroupRoot,
    ...(options.identity ? { 'identity-addr': identityNames(ns).addr } : {}),
    'inbound-port': inboundPort === 0 ? 'off' : String(inboundPort),
    'default-inbound-policy': defaultInboundPolicy,
    'cluster-networks': o.clusterNetworks,
    'proxy-workers': String(proxyWorkers),
  };
  const ds = agentDaemonSet(ns, o.image, agent, proxyPort, adminPort, config) as any;
  if (options.identity) withIdentity(ds.spec.template.spec, ns, options.identity);
  const cni = options.cni ?? INSTALL_DEFAULTS.cni;
  if (cni) withCni(ds.spec.template.spec, ns, o.image);

  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: labels('namespace') } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(`${NAME}-agent`, agent), automountServiceAccountToken: true },
    // The controller watches Services, EndpointSlices and Pods for discovery: it needs its token.
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(`${NAME}-controller`, controller), automountServiceAccountToken: true },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: `${clusterName}-agent`, labels: agent },
      // Read-only, and only what policy needs: pods and namespaces (annotations, IPs, cgroup ids), its own node (its zone label: topology hints).
      rules: [
        { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: `${clusterName}-agent`, labels: agent },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${clusterName}-agent` },
      subjects: [{ kind: 'ServiceAccount', name: `${NAME}-agent`, namespace: ns }],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: `${clusterName}-controller`, labels: controller },
      // Cluster-wide, once for every node: discovery (Services, their EndpointSlices, every pod's
      // workload, the namespaces' skip-inbound ports) and routes (Gateway API, SMI) read-only; the routes' status written back. The
      // route CRDs are not installed by us (docs/install.md).
      rules: [
        { apiGroups: [''], resources: ['services', 'pods', 'namespaces'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes', 'grpcroutes'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes/status', 'grpcroutes/status'], verbs: ['get', 'update', 'patch'] },
        { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['split.smi-spec.io'], resources: ['trafficsplits/status'], verbs: ['get', 'update', 'patch'] },
        { apiGroups: ['specs.smi-spec.io'], resources: ['httproutegroups', 'tcproutes'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['access.smi-spec.io'], resources: ['traffictargets'], verbs: ['get', 'list', 'watch'] },
        // Linkerd's policy resources (docs/policy.md); their CRDs are Linkerd's, not installed here.
        { apiGroups: ['policy.linkerd.io'], resources: ['servers', 'authorizationpolicies', 'serverauthorizations', 'meshtlsauthentications', 'networkauthentications', 'httproutes'], verbs: ['get', 'list', 'watch'] },
        // --agent-auth token: whose token an agent presents, and which node it is bound to.
        { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: `${clusterName}-controller`, labels: controller },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${clusterName}-controller` },
      subjects: [{ kind: 'ServiceAccount', name: `${NAME}-controller`, namespace: ns }],
    },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(`${NAME}-config`, labels('config')), data: config },
    ds,
    controllerDeployment(ns, o.image, controller, controllerPort, dashboardPort),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(`${NAME}-controller`, controller),
      spec: {
        type: 'ClusterIP',
        selector: controller,
        ports: [
          { name: 'grpc', port: controllerPort, targetPort: 'grpc', protocol: 'TCP', appProtocol: 'kubernetes.io/h2c' },
          { name: 'http', port: dashboardPort, targetPort: 'http', protocol: 'TCP', appProtocol: 'http' },
        ],
      },
    },
    ...(options.identity ? identityObjects(ns, o.image, clusterName, labels('identity'), `${NAME}-agent`, options.identity) : []),
    ...(cni ? cniObjects(ns, clusterName, agent) : []),
  ];
}

/**
 * The install-cni container (the agent's ServiceAccount) reads its own DaemonSet at SIGTERM
 * (deleted: an uninstall) and asks for the plugin's token; the plugin's own ServiceAccount
 * (src/cni/plugin-token.ts) only gets pods (src/cni/pod-read.ts), and no pod runs as it.
 */
function cniObjects(ns: string, clusterName: string, l: Record<string, string>): object[] {
  const rbac = 'rbac.authorization.k8s.io';
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: PLUGIN_SERVICE_ACCOUNT, namespace: ns, labels: l }, automountServiceAccountToken: false },
    { apiVersion: `${rbac}/v1`, kind: 'ClusterRole', metadata: { name: `${clusterName}-cni`, labels: l }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }] },
    {
      apiVersion: `${rbac}/v1`, kind: 'ClusterRoleBinding', metadata: { name: `${clusterName}-cni`, labels: l },
      roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: `${clusterName}-cni` },
      subjects: [{ kind: 'ServiceAccount', name: PLUGIN_SERVICE_ACCOUNT, namespace: ns }],
    },
    {
      apiVersion: `${rbac}/v1`, kind: 'Role', metadata: { name: `${NAME}-cni`, namespace: ns, labels: l },
      rules: [
        { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get', 'list'] },
        { apiGroups: [''], resources: ['serviceaccounts/token'], resourceNames: [PLUGIN_SERVICE_ACCOUNT], verbs: ['create'] },
      ],
    },
    {
      apiVersion: `${rbac}/v1`, kind: 'RoleBinding', metadata: { name: `${NAME}-cni`, namespace: ns, labels: l },
      roleRef: { apiGroup: rbac, kind: 'Role', name: `${NAME}-cni` },
      subjects: [{ kind: 'ServiceAccount', name: `${NAME}-agent`, namespace: ns }],
    },
  ];
}

/**
 * The chained CNI plugin (docs/install.md): the agent answers it on a hostPath socket and keeps
 * its state file on the host; an install-cni container (as linkerd-cni's and istio-cni's)
 * copies it into the host's CNI bin directory and chains it in the host's CNI configuration.
 */
function withCni(spec: any, ns: string, image: string): void {
  const h = CNI_HOST_PATHS;
  const agent = spec.containers[0];
  agent.args.push('--cni-socket', h.socket, '--cni-state', h.stateFile);
  agent.volumeMounts.push({ name: 'cni-socket', mountPath: h.socketDir }, { name: 'cni-state', mountPath: h.stateDir });
  spec.containers.push({
    name: 'install-cni',
    image,
    imagePullPolicy: 'IfNotPresent',
    args: ['cni-install', '--watch', '--conf-dir', `/host${h.confDir}`, '--bin-dir', `/host${h.binDir}`, '--agent-socket', h.socket, '--state-file', h.stateFile, '--namespace', ns, '--daemonset', `${NAME}-agent`, '--plugin-service-account', PLUGIN_SERVICE_ACCOUNT],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Root to write the host's CNI directories (owned by root); no capability beyond that.
    securityContext: { runAsUser: 0, privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
    volumeMounts: [
      { name: 'cni-conf', mountPath: `/host${h.confDir}` },
      { name: 'cni-bin', mountPath: `/host${h.binDir}` },
      { name: 'cni-state', mountPath: h.stateDir },
    ],
  });
  spec.volumes.push(
    { name: 'cni-socket', hostPath: { path: h.socketDir, type: 'DirectoryOrCreate' } },
    { name: 'cni-state', hostPath: { path: h.stateDir, type: 'DirectoryOrCreate' } },
    { name: 'cni-conf', hostPath: { path: h.confDir, type: 'DirectoryOrCreate' } },
    { name: 'cni-bin', hostPath: { path: h.binDir, type: 'DirectoryOrCreate' } },
  );
}

function agentDaemonSet(
  ns: string,
  image: string,
  l: Record<string, string>,
  proxyPort: number,
  adminPort: number,
  config: Record<string, string>,
): object {
  // The proxy listens on $NODE_IP (the host IP: hostNetwork) at the config's proxy-port.
  const args = ['run', '--config', CONFIG_MOUNT];
  const probe = (path: string, extra: object) => ({ httpGet: { path, port: 'admin' }, ...extra });
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: `${NAME}-agent`, namespace: ns, labels: l },
    spec: {
      selector: { matchLabels: l },
      // One node at a time: while an agent restarts, that node's pods connect directly (fail-open).
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: {
          labels: l,
          annotations: {
            'prometheus.io/scrape': 'true',
            'prometheus.io/port': String(adminPort),
            'prometheus.io/path': '/metrics',
            'mesh-agent.io/inject': 'disabled',
            // The agent reads its config at start: a changed ConfigMap rolls the DaemonSet when re-applied.
            'mesh-agent.io/config-hash': createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 16),
          },
        },
        spec: {
          serviceAccountName: `${NAME}-agent`,
          // The proxy listens on the node IP that the BPF program redirects to.
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          hostPID: false,
          priorityClassName: 'system-node-critical',
          // Every node, tainted or not: an unmeshed node is a hole in the mesh.
          tolerations: [{ operator: 'Exists' }],
          terminationGracePeriodSeconds: 30,
          containers: [
            {
              name: 'agent',
              image,
              imagePullPolicy: 'IfNotPresent',
              args,
              env: [
                { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                { name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
              ],
              ports: [
                { name: 'proxy', containerPort: proxyPort, protocol: 'TCP' },
                { name: 'admin', containerPort: adminPort, protocol: 'TCP' },
              ],
              startupProbe: probe('/live', { periodSeconds: 2, failureThreshold: 30 }),
              livenessProbe: probe('/live', { periodSeconds: 10, failureThreshold: 3 }),
              readinessProbe: probe('/ready', { periodSeconds: 5, failureThreshold: 2 }),
              resources: {
                requests: { cpu: '100m', memory: '128Mi' },
                limits: { memory: '512Mi' },
              },
              securityContext: {
                privileged: false,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { add: ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_RESOURCE', 'SYS_NICE'], drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'bpffs', mountPath: '/sys/fs/bpf' },
                // Attaching needs only an fd of the cgroup directory: read-only is enough.
                { name: 'cgroup', mountPath: '/sys/fs/cgroup', readOnly: true },
                { name: 'config', mountPath: CONFIG_MOUNT, readOnly: true },
                { name: TOKENS_VOLUME, mountPath: IDENTITY_MOUNTS.tokens, readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: 'bpffs', hostPath: { path: '/sys/fs/bpf', type: 'Directory' } },
            { name: 'cgroup', hostPath: { path: '/sys/fs/cgroup', type: 'Directory' } },
            { name: 'config', configMap: { name: `${NAME}-config` } },
            // The controller's own audience: a token sent over its cleartext port is worth nothing to
            // the identity service (docs/controller.md). Bound to the pod, and so the node; kubelet rotates it.
            { name: TOKENS_VOLUME, projected: { sources: [{ serviceAccountToken: { audience: CONTROLLER_AUDIENCE, expirationSeconds: TOKEN_SECONDS, path: CONTROLLER_TOKEN_PATH } }] } },
          ],
        },
      },
    },
  };
}

function controllerDeployment(ns: string, image: string, l: Record<string, string>, port: number, dashboardPort: number): object {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: `${NAME}-controller`, namespace: ns, labels: l },
    spec: {
      replicas: 1,
      selector: { matchLabels: l },
      template: {
        metadata: { labels: l, annotations: { 'mesh-agent.io/inject': 'disabled' } },
        spec: {
          serviceAccountName: `${NAME}-controller`,
          // In a pod the controller watches the API server with this token (in-cluster config): discovery is on.
          automountServiceAccountToken: true,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            {
              name: 'controller',
              image,
              imagePullPolicy: 'IfNotPresent',
              // The CLI's endpoints and the dashboard only through kubectl port-forward, which dials
              // localhost in the pod (RBAC on pods/portforward); the agents reach 8086 on the pod IP.
              args: ['controller', '--listen', `0.0.0.0:${port}`, '--cli-access', 'loopback', '--dashboard-listen', `127.0.0.1:${dashboardPort}`, '--agent-auth', 'token', '--agent-service-account', `${ns}/${NAME}-agent`],
              ports: [
                { name: 'grpc', containerPort: port, protocol: 'TCP' },
                { name: 'http', containerPort: dashboardPort, protocol: 'TCP' },
              ],
              readinessProbe: { tcpSocket: { port: 'grpc' }, periodSeconds: 5 },
              livenessProbe: { tcpSocket: { port: 'grpc' }, periodSeconds: 10 },
              // Discovery holds the cluster: 165 MB at 10,000 endpoints and 368 MB at 100,000 with
              // 1,000 agents (docs/benchmarks.md, discovery-scale); 1 GiB is issue 12's bound.
              resources: { requests: { cpu: '100m', memory: '192Mi' }, limits: { memory: '1Gi' } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
            },
          ],
        },
      },
    },
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
