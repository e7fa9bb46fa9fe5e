// The node agent: loads the datapath under the pods' cgroup root, keeps the pod map in step
// with this node's pods, runs the proxy the pods are redirected to, and serves its admin API.
import * as os from 'node:os';
import { VERSION } from '../version.ts';
import { Datapath, type PortRange } from '../datapath/datapath.ts';
import type { SocketOrigLookup } from '../datapath/socket-lookup.ts';
import { missingRequired, probeFeatures, type Feature } from '../datapath/features.ts';
import { PodFileSource } from '../k8s/pod-file.ts';
import { zoneOfNode, zoneReadFailed, type ZoneState } from './node-zone.ts';
import type { KubeSource } from '../k8s/kube-source.ts';
import type { Snapshot } from '../k8s/objects.ts';
import { DEFAULT_MAX_CONNECTIONS, Proxy } from '../proxy/index.ts';
import type { OrigDst } from '../proxy/context.ts';
import { PodSync } from './pod-sync.ts';
import { AdminServer } from './admin.ts';
import type { Logger } from './log.ts';
import type { TelemetrySink } from '../telemetry/events.ts';
import { TelemetryHub } from '../telemetry/hub.ts';
import { firstKnown, workloadOf } from '../telemetry/workload.ts';
import { MetricsSink } from '../telemetry/metrics.ts';
import { DEFAULT_OPAQUE_PORTS, type PortSet } from '../proxy/ports.ts';
import { ReportClient } from '../telemetry/report-client.ts';
import { DiscoveryStore, storeWorkloads } from '../discovery/store.ts';
import { DiscoveryClient } from '../discovery/client.ts';
import { controllerBearer } from '../controller/agent-token.ts';
import { DEFAULT_FIRST_SYNC_WAIT_MS, FirstSyncWait } from '../discovery/first-sync.ts';
import { Listeners } from '../util/listeners.ts';
import { clientsOf, Router } from '../routing/router.ts';
import type { AgentQuery } from '../controller/protocol.ts';
import { answerQuery } from './diagnostics.ts';
import { MAX_SUMMARY_CERTIFICATES, MAX_SUMMARY_PROGRAMS, MAX_SUMMARY_REASONS, type AgentSummary } from '../telemetry/report.ts';
import { assessHealth } from './health.ts';
import * as net from 'node:net';
import { WorkerPool, type WorkerStatus } from '../workers/pool.ts';
import type { PodsTable } from '../workers/protocol.ts';
import { mergeBalancerCounts, mergeDescribed, sumProxyStats, type DescribedPort } from '../workers/merge.ts';
import type { GaugeLedger } from '../telemetry/recorder.ts';
import type { PairLedger } from '../telemetry/report.ts';
import type { Endpoints, TlsIds } from '../telemetry/events.ts';
import { defaultLimits } from '../proxy/context.ts';
import { ANNOTATIONS } from '../k8s/annotations.ts';
import type { NamespaceInfo } from '../k8s/objects.ts';
// Identity's modules (node:tls, node:https, the tunnels) load only when identity is on (start()).
import type { IdentityManager } from '../identity/manager.ts';
import { spiffeId, type WorkloadId } from '../identity/spiffe.ts';
import type { NodeTunnels } from '../tunnel/node-tunnels.ts';
import type { LocalPod } from '../tunnel/server.ts';
import type { AnchorStatus } from '../identity/anchors.ts';

const TUNNEL_PORT = 15008;

/** How often the agent reads its Node's zone label again, and how soon after a failure that may pass. */
const ZONE_REFRESH_MS = 5 * 60_000;
const ZONE_RETRY_MS = 30_000;

/** mTLS between nodes (docs/identity.md): certificates from the identity service, tunnels between agents. */
export interface AgentIdentityOptions {
  /** The identity service, HOST:PORT. */
  addr: string;
  trustDomain: string;
  /** PEM trust anchor(s). */
  anchorsPem: string;
  /** The agent's projected ServiceAccount token, read at each request. */
  tokenFile: string;
  /** Who the identity service must be. */
  serverId: WorkloadId;
  /** The tunnel listener's port on the node IP (default 15008). */
  tunnelPort?: number;
  /** With a controller: how long meshed pods' connections wait for discovery's first sync (docs/identity.md). */
  firstSyncWaitMs?: number;
}
import { InboundPolicies } from './inbound.ts';
import { failClosedInKernel, InboundCapture } from '../datapath/inbound-capture.ts';
import { dialerFrom, listenTransparent } from '../datapath/transparent.ts';
import { Coalescer } from '../util/coalesce.ts';
import { FirstTimes } from '../policy/conn-authz.ts';
import { DEFAULT_CLUSTER_NETWORKS, DEFAULT_INBOUND_POLICY, type DefaultPolicy } from '../policy/model.ts';
import { CniServer } from './cni-server.ts';
import { CniPods, meshedNamespaces } from './cni-pods.ts';
import { ipv4Of, type AdmitAnswer, type AdmitRequest } from '../cni/protocol.ts';
import { writeState } from '../cni/state.ts';
import { gcLock } from '../util/shrink-heap.ts';
import type { PodInfo } from '../k8s/objects.ts';

/** How long the agent holds a pod's CNI ADD waiting for its pod list, the pod and its policy in the kernel. */
export const CNI_ADMIT_WAIT_MS = 10_000;

export interface AgentOptions {
  nodeName?: string;
  cgroupRoot: string;
  proxy: { ip: string; port: number };
  /**
   * Inbound capture (docs/policy.md): where the kernel hands connections to this node's meshed
   * pods that did not come through the agent. null: none (policies then bind meshed clients of
   * this node only). Default: none.
   */
  inbound?: { ip: string; port: number } | null;
  /** A meshed pod's policy without an annotation of its own (install --default-inbound-policy). */
  defaultInboundPolicy?: DefaultPolicy;
  /** The cluster-* policies' networks, "10.0.0.0/8,..." (default Linkerd's). */
  clusterNetworks?: string;
  /** Standalone mode: Pod and Namespace objects from a file. */
  podsFile?: string;
  /** Cluster mode (no podsFile): kubeconfig path; default in-cluster config, else $KUBECONFIG or ~/.kube/config. */
  kubeconfig?: string;
  admin?: { host: string; port: number } | null;
  /** The controller's URL (--controller, or the ConfigMap's controller-addr); the controller link reports there. */
  controllerUrl?: string;
  /** The agent's token for the controller (run --controller-token-file), read at each request; absent or no such file: the links send none. */
  controllerTokenFile?: string;
  skipOutbound?: PortRange[];
  opaquePorts?: PortSet;
  detectTimeoutMs?: number;
  maxConnections?: number;
  allowRootCgroup?: boolean;
  /** Opaque tunnels' bytes moved by a BPF sockhash instead of the proxy (experimental, docs/proxy.md). */
  kernelSplice?: boolean;
  /** HTTP/1 connections' sockets driven from C++, not Node's streams (docs/proxy.md); default true, false is Node's streams. */
  nativeIo?: boolean;
  /** Prometheus labels and cardinality (docs/metrics.md). */
  metrics?: { podLabels?: boolean; maxSeries?: number };
  /** Controller reports: interval and backlog bound (the URL is controllerUrl). */
  report?: { intervalMs?: number; backlog?: number };
  /**
   * Proxies: the main thread's and proxyWorkers - 1 worker threads, all listening on the proxy
   * address (SO_REUSEPORT). Default 1; `run` defaults to the CPUs the agent may use.
   */
  proxyWorkers?: number;
  /** An extra consumer of the main thread's proxy events (tests); metrics, tap and reports are added by the agent. */
  telemetry?: TelemetrySink;
  /** mTLS between nodes; without it meshed pods' bytes cross the network as the pods sent them. */
  identity?: AgentIdentityOptions;
  /** The chained CNI plugin's socket and the state file it reads when the agent does not answer (docs/install.md). */
  cni?: { socket: string; stateFile: string };
  log: Logger;
}

/** The main thread's lag probe period, ms. */
const LAG_PROBE_MS = 1000;

/** After the detach on stop, how long the proxy still accepts what was redirected before it. */
export const ACCEPT_GRACE_MS = 100;

export class Agent {
  readonly opts: AgentOptions;
  readonly startedAt = Date.now();
  datapath!: Datapath;
  /** The main thread's proxy's lookup by socket (bound once the datapath is open). */
  private socketLookup: SocketOrigLookup | null = null;
  proxy!: Proxy;
  pods!: PodSync;
  private source?: PodFileSource;
  private kube?: KubeSource;
  private podsSynced = false;
  /** Told after each pod snapshot: a tunnel to a pod not known yet waits for one that has it (tunnel/server.ts). */
  private readonly podChanges = new Listeners();
  private admin?: AdminServer;
  private reporter?: ReportClient;
  /** Feeds `discovery` from the controller (--controller); its one writer. */
  private discoveryLink?: DiscoveryClient;
  readonly recentErrors: Array<{ at: string; msg: string }> = [];
  /** The kernel's BPF features, probed at start. */
  features: Feature[] = [];
  private ready = false;
  /** Every request and connection event of the proxy goes here, then to each consumer. */
  readonly telemetry: TelemetryHub;
  /** Prometheus metrics, served at the admin API's /metrics. */
  readonly metrics: MetricsSink;
  /** The cluster as the controller streams it (Services, endpoints, every pod); empty without a controller. */
  readonly discovery: DiscoveryStore;
  /** ClusterIP:port -> Service route with its balancer, from `discovery`. */
  readonly router: Router;
  /** How late the main thread's once-a-second lag probe last ran, ms (its event-loop lag). */
  private mainLagMs: number | null = null;
  private lagProbe?: NodeJS.Timeout;
  /** This node's zone (topology hints), or why it has none; read from its Node in cluster mode. */
  private zone: ZoneState = { zone: null, why: 'not read yet' };
  private zoneTimer?: NodeJS.Timeout;
  /** The proxy worker threads (proxyWorkers > 1); the main thread's proxy is `proxy`. */
  private pool?: WorkerPool<{ gauges: GaugeLedger; pairs: PairLedger }>;
  /** The main thread's tunnels (identity on). */
  tunnels?: NodeTunnels;
  /** The node's certificates (identity on). */
  identities?: IdentityManager;
  /** Identity's status helpers, loaded with it. */
  private identityLib?: { sumTunnelStats: typeof import('../tunnel/node-tunnels.ts').sumTunnelStats; anchorsStatus: (pem: string) => AnchorStatus[] };
  /** The namespaces as the pod source last listed them: their inject annotation decides whether remote pods are meshed. */
  private namespaces = new Map<string, NamespaceInfo>();
  /** This node's meshed pods' inbound policies, as every proxy authorizes with them (docs/policy.md). */
  readonly inbound: InboundPolicies;
  private capture?: InboundCapture;
  private captureQueue?: Coalescer;
  /**
   * off: not configured; waiting: not yet ready (a previous agent's table stays as it was);
   * starting: pods known, TrafficTargets not yet: nothing is captured and fail-closed pods' SYNs
   * are dropped, as held, but the tunnel port is open (identity on); capturing: the kernel hands
   * connections to our listener; held: stopping, no new connection is captured or tunnelled,
   * fail-closed pods' SYNs are dropped.
   */
  private captureMode: 'off' | 'waiting' | 'starting' | 'capturing' | 'held' = 'off';
  private captureError: string | null = null;
  /** What the table this agent last applied does with SYNs to its tunnel port (null: it applied none, or identity is off). */
  private tunnelSyns: 'open' | 'dropped' | null = null;
  private readonly saidProblems = new FirstTimes(256);
  private cniServer?: CniServer;
  /** What pods' CNI ADDs taught before the watch did (their addresses, pods fetched). */
  private readonly cniPods = new CniPods();
  /** Wakes admissions waiting for the pod list or a capture applied. */
  private readonly changes = new Listeners();
  /** The pod source's last snapshot, before cniPods is merged in. */
  private lastSnapshot: Snapshot = { pods: [], namespaces: new Map() };
  /** The meshed namespaces last written to the CNI state file. */
  private writtenNamespaces: string | null = null;
  /** The pods the capture table last applied hands to this agent's listener. */
  private capturedIps = new Set<string>();
  private stopping = false;
  private readonly cniCounts = { meshed: 0, notMeshed: 0, retry: 0 };
  /** Pod tables sent to the proxy workers, counted before the kernel acts on each (workers/table-seq.ts). */
  private readonly tablesSent = new Int32Array(new SharedArrayBuffer(4));

  constructor(opts: AgentOptions) {
    this.opts = opts;
    // Its node: Services with internalTrafficPolicy Local resolve to endpoints on it.
    this.discovery = new DiscoveryStore({ node: opts.nodeName });
    this.telemetry = new TelemetryHub({
      // This node's pods first (PodSync knows them before the controller does), then every node's.
      workloads: firstKnown({
        byIp: (ip) => {
          const pod = this.pods?.podByIp(ip);
          return pod ? workloadOf(pod) : null;
        },
        generation: () => this.pods?.generation ?? 0,
      }, storeWorkloads(this.discovery)),
      onError: (msg) => this.recordError(msg),
    });
    this.router = new Router(this.discovery, {
      log: (msg) => this.recordError(msg),
      // Consumer routes and retry budgets go by the client pod's namespace and workload.
      clients: clientsOf(this.telemetry.workloads),
      // Each proxy (this thread's and every worker's) keeps its own budgets over its share of the connections.
      budgetShare: 1 / (opts.proxyWorkers ?? 1),
    });
    this.inbound = new InboundPolicies({
      networks: opts.clusterNetworks ?? DEFAULT_CLUSTER_NETWORKS, store: this.discovery, onDeny: (msg) => opts.log.warn(msg),
      // TrafficTargets come from the controller: unknown until discovery has synced once.
      complete: () => !opts.controllerUrl || this.discovery.synced,
    });
    this.metrics = new MetricsSink({ workloads: this.telemetry.workloads, ...opts.metrics, tls: (ep) => this.tlsOf(ep), localPods: this.localPods(), datapathCounters: () => this.datapath?.counters() ?? null, datapathMaps: () => this.datapath?.describe().maps ?? null });
    this.telemetry.add(this.metrics);
    if (opts.telemetry) this.telemetry.add(opts.telemetry);
  }

  /** A connection's tunnel identities, for metrics and tap (null: not tunnelled, or identity off). */
  private tlsOf(ep: Endpoints): TlsIds | null {
    return this.tunnels ? this.tunnels.tunnels.tlsOf(ep) : ep.tls ?? null;
  }

  /** A pod of this node as the tunnels see it. */
  private localPod(ip: string): LocalPod | null {
    const st = this.pods?.stateByIp(ip);
    if (st === undefined) return null;
    return { namespace: st.pod.namespace, name: st.pod.name, serviceAccount: st.pod.serviceAccount ?? 'default', meshed: st.policy.meshed && st.key !== null };
  }

  /** The SPIFFE IDs of this node's meshed pods: the certificates the node needs. */
  private wantedIdentities(trustDomain: string): Set<string> {
    const out = new Set<string>();
    for (const st of this.pods.states()) {
      if (st.policy.meshed) out.add(spiffeId({ trustDomain, namespace: st.pod.namespace, serviceAccount: st.pod.serviceAccount ?? 'default' }));
    }
    return out;
  }

  /**
   * With inbound capture, each node's agent records the server side of its own pods' traffic
   * (docs/policy.md): an outbound event's inbound side only for a pod of this node, and not on a
   * skip-inbound port of it (no one's inbound side sees those, as Linkerd's proxy does not).
   */
  private localPods(): ((ip: string, port: number) => boolean) | undefined {
    return this.opts.inbound ? (ip, port) => this.pods?.podByIp(ip) !== undefined && !this.inbound.authorizer.skipsInbound(ip, port) : undefined;
  }

  recordError(msg: string) {
    this.recentErrors.push({ at: new Date().toISOString(), msg });
    if (this.recentErrors.length > 50) this.recentErrors.shift();
    this.opts.log.warn(msg);
  }

  async start(): Promise<void> {
    const { log } = this.opts;
    const proxies = this.opts.proxyWorkers ?? 1;
    if (!Number.isInteger(proxies) || proxies < 1) throw new Error(`proxy workers: ${proxies} is not a positive whole number; pass --proxy-workers N with N >= 1`);
    const reusePort = proxies > 1;
    // The cap on open connections holds for all proxies together: each counts in its own slot.
    const openSlots = new SharedArrayBuffer(4 * proxies);
    const idOpts = this.opts.identity;
    if (idOpts) {
      const [{ NodeTunnels, sumTunnelStats }, { IdentityManager }, { httpsCertifyClient }, { anchorsStatus }] = await Promise.all([
        import('../tunnel/node-tunnels.ts'), import('../identity/manager.ts'), import('../identity/client.ts'), import('../identity/anchors.ts'),
      ]);
      this.identityLib = { sumTunnelStats, anchorsStatus };
      this.tunnels = new NodeTunnels({
        node: this.opts.nodeName ?? os.hostname(),
        trustDomain: idOpts.trustDomain,
        anchorsPem: idOpts.anchorsPem,
        listen: { host: this.opts.proxy.ip, port: idOpts.tunnelPort ?? TUNNEL_PORT, reusePort },
        podByIp: (ip) => this.discovery.podByIp(ip),
        firstSync: this.opts.controllerUrl ? new FirstSyncWait(this.discovery, idOpts.firstSyncWaitMs ?? DEFAULT_FIRST_SYNC_WAIT_MS, (msg) => this.recordError(msg)) : null,
        local: { byIp: (ip) => this.localPod(ip), namespaceInject: (ns) => this.namespaces.get(ns)?.annotations[ANNOTATIONS.inject], onChange: (fn) => this.podChanges.add(fn) },
        inbound: this.metrics,
        policy: () => this.proxy ? {
          authorize: (c, uri) => this.inbound.authorizer.authorizeVerified(c, uri),
          ready: (ip) => this.inbound.authorizer.ready(ip, defaultLimits.upstreamConnectTimeoutMs),
          serve: (ctx) => this.proxy!.serveTunnelled(ctx),
        } : null,
        limits: defaultLimits,
        log: (level, msg, fields) => (level === 'info' ? log.info(msg, fields) : this.recordError(msg)),
      });
      this.identities = new IdentityManager({
        client: httpsCertifyClient({ addr: idOpts.addr, anchorsPem: idOpts.anchorsPem, serverId: idOpts.serverId, tokenFile: idOpts.tokenFile }),
        publish: (u) => {
          this.tunnels!.apply([u]);
          this.pool?.credentials([u]);
        },
        log: (level, msg, fields) => (level === 'info' ? log.info(msg, fields) : this.recordError(msg)),
      });
    }
    // The proxy listens first: the datapath must never redirect to a port nobody answers.
    this.proxy = new Proxy({
      listen: { host: this.opts.proxy.ip, port: this.opts.proxy.port, reusePort },
      openSlots: reusePort ? { counts: new Int32Array(openSlots), slot: 0 } : undefined,
      lookup: (ip, port) => this.lookup(ip, port),
      lookupSocket: (fd) => (this.socketLookup ??= this.datapath.socketLookup())(fd),
      router: this.router,
      telemetry: this.telemetry,
      tunnels: this.tunnels?.tunnels,
      opaquePorts: this.opts.opaquePorts,
      opaquePortsOf: (ip) => this.pods?.opaquePortsOf(ip) ?? null,
      detectTimeoutMs: this.opts.detectTimeoutMs,
      maxConnections: this.opts.maxConnections,
      authorize: this.inbound.authorizer.authorize,
      policyReady: (ip) => this.inbound.authorizer.ready(ip, defaultLimits.upstreamConnectTimeoutMs),
      decisions: this.metrics,
      ...(this.opts.inbound ? { inbound: { host: this.opts.inbound.ip, port: this.opts.inbound.port, listenFd: listenTransparent, dialFrom: dialerFrom } } : {}),
      // The datapath opens after the proxy listens: bind late.
      splicer: this.opts.kernelSplice ? {
        splice: (a, b) => this.datapath.splicer().splice(a, b),
        unsplice: (a, b) => this.datapath.splicer().unsplice(a, b),
        splicedBytes: (c) => this.datapath.splicer().splicedBytes(c),
        sentBytes: (fd) => this.datapath.splicer().sentBytes(fd),
      } : null,
      nativeIo: this.opts.nativeIo ?? true,
      log: (level, msg, fields) => log[level](msg, fields),
    });
    try {
      // SO_REUSEPORT would let this agent join another's listeners instead of failing: take the
      // port alone first, so a second agent still hears EADDRINUSE.
      if (reusePort) await listenAlone(this.opts.proxy.ip, this.opts.proxy.port);
      await this.proxy.listen();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const fix = err.code === 'EADDRNOTAVAIL' ? `; ${this.opts.proxy.ip} is not an address of this host, pass --proxy-addr with the node IP` : err.code === 'EADDRINUSE' ? '; another agent may be running, or pass another port with --proxy-addr' : '';
      throw new Error(`proxy listen on ${this.opts.proxy.ip}:${this.opts.proxy.port} failed: ${err.message}${fix}`);
    }
    if (this.tunnels) {
      const port = idOpts!.tunnelPort ?? TUNNEL_PORT;
      try {
        if (reusePort) await listenAlone(this.opts.proxy.ip, port);
        await this.tunnels.listen();
      } catch (e) {
        throw new Error(`tunnel listen on ${this.opts.proxy.ip}:${port} failed: ${(e as Error).message}; another agent may be running, or pass another port with --tunnel-port`);
      }
    }
    this.metrics.registerWorkers(() => this.workers());
    this.metrics.registerBalancers(() => mergeBalancerCounts([this.router.balancerCounts(), ...(this.pool?.balancerCounts() ?? [])]));
    // The main thread's event-loop lag, for status and metrics: how late a 1 s timer fires.
    let due = performance.now() + LAG_PROBE_MS;
    this.lagProbe = setInterval(() => {
      const now = performance.now();
      this.mainLagMs = Math.max(0, now - due);
      due = now + LAG_PROBE_MS;
    }, LAG_PROBE_MS);
    this.lagProbe.unref();
    if (this.opts.inbound) {
      // Before any pod is known: what a previous agent left failing closed stays closed (inbound.ts).
      const left = await failClosedInKernel().catch(() => []);
      if (left.length > 0) {
        this.inbound.closeUntilKnown(left);
        log.info('pods failing closed under the previous agent stay closed until their policies are known', { pods: left });
      }
      this.capture = new InboundCapture();
      this.captureQueue = new Coalescer(() => this.syncCapture(), (e) => this.recordError(e.message));
      this.captureMode = 'waiting';
    }
    this.features = probeFeatures(os.release(), { kernelSplice: this.opts.kernelSplice });
    const missing = missingRequired(this.features);
    for (const m of missing) this.recordError(`BPF feature missing: ${m}`);
    try {
      this.datapath = Datapath.open({
        cgroupRoot: this.opts.cgroupRoot,
        proxyIp: this.opts.proxy.ip,
        proxyPort: this.opts.proxy.port,
        skipOutbound: this.opts.skipOutbound,
        allowRootCgroup: this.opts.allowRootCgroup,
        kernelSplice: this.opts.kernelSplice,
      });
    } catch (e) {
      // The probe usually knows why better than the loader's errno.
      if (missing.length) (e as Error).message += `\nthis kernel lacks what the datapath needs:\n  ${missing.join('\n  ')}`;
      throw e;
    }
    log.info('datapath attached', { cgroup: this.datapath.cgroupRoot, proxy: `${this.opts.proxy.ip}:${this.opts.proxy.port}` });
    this.pods = new PodSync({
      datapath: this.datapath,
      cgroupRoot: this.datapath.cgroupRoot,
      nodeName: this.opts.nodeName,
      defaultInboundPolicy: this.opts.defaultInboundPolicy,
      log: (level, msg) => (level === 'warn' ? this.recordError(msg) : log.info(msg)),
    });
    if (proxies > 1) await this.startWorkers(proxies - 1, openSlots);
    if (this.opts.cni) {
      // Before the pod list: a plugin asking meanwhile is held until the agent can answer, not refused.
      this.cniServer = new CniServer(this.opts.cni.socket, { admit: (r) => this.admitCni(r), release: (r) => this.releaseCni(r), onError: (m) => this.recordError(m) });
      await this.cniServer.listen();
      log.info('CNI plugin socket listening', { socket: this.opts.cni.socket, stateFile: this.opts.cni.stateFile });
    }
    if (this.opts.podsFile) {
      this.source = new PodFileSource(this.opts.podsFile, (s) => this.applySnapshot(s), (e) => this.recordError(`pods file: ${e.message}; keeping the last good pods`));
      this.applySnapshot(this.source.start());
      this.podsListed();
      this.setZone({ zone: null, why: 'no API server to read the Node\'s zone from (--pods FILE): topology hints are ignored, every endpoint is used' });
    } else {
      if (!this.opts.nodeName) throw new Error('no node name: pass --node or set NODE_NAME (the DaemonSet sets it from spec.nodeName), or use --pods FILE');
      // Loaded only in cluster mode: @kubernetes/client-node alone costs ~110 MB of RSS.
      const { KubeSource } = await import('../k8s/kube-source.ts');
      this.kube = new KubeSource({
        nodeName: this.opts.nodeName,
        kubeconfig: this.opts.kubeconfig,
        onSnapshot: (s) => this.applySnapshot(s),
        onError: (e) => this.recordError(`kubernetes: ${e.message}`),
        log: (m) => log.info(`kubernetes: ${m}`),
      });
      // Not ready until the first list: pods are proxied only once we know them.
      this.kube.start().then(
        () => {
          log.info('pods listed from the API server', { pods: this.pods.states().length });
          this.podsListed();
          void this.readZone();
        },
        (e) => this.recordError(`kubernetes: ${(e as Error).message}`),
      );
    }
    if (this.opts.controllerUrl) {
      const auth = controllerBearer(this.opts.controllerTokenFile, (level, msg) => (level === 'warn' ? this.recordError(msg) : log.info(msg)));
      this.reporter = new ReportClient({
        auth,
        url: this.opts.controllerUrl,
        ...this.opts.report,
        node: this.opts.nodeName ?? os.hostname(),
        hub: this.telemetry,
        localPods: this.localPods(),
        onQuery: (q) => this.answerQuery(q),
        inventory: () => this.pods.states().map((s) => {
          const w = workloadOf(s.pod);
          return { namespace: s.pod.namespace, name: s.pod.name, ip: s.pod.ip ?? null, kind: w.kind, owner: w.name, meshed: s.policy.meshed && s.key !== null };
        }),
        summary: () => this.summary(),
        tls: (ep) => this.tlsOf(ep),
        beforeInterval: () => this.collect(),
        onTapFilters: (filters) => this.pool?.setTaps(filters),
        log: (level, msg, fields) => (level === 'warn' ? this.recordError(msg) : log.info(msg, fields)),
      });
      this.reporter.start();
      this.discoveryLink = new DiscoveryClient({
        url: this.opts.controllerUrl,
        node: this.opts.nodeName ?? os.hostname(),
        agentId: this.reporter.agentId,
        store: this.discovery,
        auth,
        log: (level, msg, fields) => log[level](msg, fields),
        onError: (msg) => this.recordError(msg),
      });
      this.discoveryLink.start();
    }
    // TrafficTargets come with discovery: a change, or a new world, compiles the pods' policies again.
    // At the first `synced` this runs in the same step that makes Services resolvable (and the
    // workers get the policies before that snapshot's discovery batch): a Service connection never
    // meets a pod whose policy is pending (docs/policy.md), so only direct ones wait for it.
    this.discovery.onApply((m) => {
      if (m === 'drop-staged') return;
      // A TrafficTarget the controller could not convert again: enforced in its last good version, said once.
      if (m.type === 'access' && m.op === 'set') {
        for (const p of m.access.problems ?? []) if (this.saidProblems.first(p)) this.recordError(`policy: ${p}`);
      }
      if (m.type === 'synced' || (m.type === 'access' && !this.discovery.staged)) {
        this.refreshPolicies();
        this.maybeCapture();
      }
    });
    if (this.opts.admin) {
      this.admin = new AdminServer(this);
      await this.admin.listen(this.opts.admin.host, this.opts.admin.port);
    }
    this.ready = true;
  }

  /** The meshed namespaces on the node's disk, for the plugin when no agent answers; rewritten when they change. */
  private writeCniState(): void {
    const file = this.opts.cni?.stateFile;
    if (!file) return;
    const names = meshedNamespaces(this.namespaces);
    const text = names.join(',');
    if (text === this.writtenNamespaces) return;
    try {
      writeState(file, { version: 1, node: this.opts.nodeName ?? os.hostname(), meshedNamespaces: names });
      this.writtenNamespaces = text;
    } catch (e) {
      this.recordError(`CNI state file ${file}: ${(e as Error).message}; while it is stale a pod of a newly meshed namespace may start open when no agent runs; the DaemonSet mounts /var/lib/mesh-agent from the host`);
    }
  }

  /**
   * A pod's sandbox is being set up (the CNI plugin's ADD): answers once its redirection and its
   * inbound policy are in the kernel, so its first connection is already decided, or that it is
   * not meshed. The pod may be ahead of the watch (fetched from the API server then) and has no
   * address in its object yet (the runtime's is used). Bounded: "retry" after CNI_ADMIT_WAIT_MS,
   * and the runtime retries the ADD.
   */
  async admitCni(req: AdmitRequest): Promise<AdmitAnswer> {
    const a = await this.admitCniOnce(req, performance.now() + CNI_ADMIT_WAIT_MS);
    this.cniCounts[a.result === 'not-meshed' ? 'notMeshed' : a.result]++;
    if (a.result === 'retry') this.opts.log.warn(`CNI ADD of pod ${req.namespace}/${req.name} not admitted: ${a.message}`);
    return a;
  }

  private async admitCniOnce(req: AdmitRequest, deadline: number): Promise<AdmitAnswer> {
    const who = `pod ${req.namespace}/${req.name}`;
    const retry = (meshed: boolean | null, message: string): AdmitAnswer => ({ result: 'retry', meshed, message });
    while (!this.podsSynced) {
      if (this.stopping) return retry(null, 'the agent is stopping');
      if (!(await this.changes.next(deadline))) return retry(null, `the agent has not listed its node's pods within ${CNI_ADMIT_WAIT_MS} ms (mesh-agent status, podSource)`);
    }
    if (this.stopping) return retry(null, 'the agent is stopping');
    let pod: PodInfo | null = null;
    let fetched = false;
    for (;;) {
      const known = this.lastSnapshot.pods.find((p) => p.namespace === req.namespace && p.name === req.name) ?? null;
      if (known && (req.uid === undefined || known.uid === req.uid)) {
        pod = known;
        break;
      }
      if (this.kube) {
        // Ahead of the watch: read it now, within what is left of the admit wait. Unbounded, a
        // silent API server held the ADD for the client's 60 s: past the plugin's own wait, whose
        // runtime then heard only "no answer", and past the runtime's own CNI timeout.
        const left = Math.max(1, Math.ceil(deadline - performance.now()));
        const bound = AbortSignal.timeout(left);
        try {
          pod = await this.kube.getPod(req.namespace, req.name, bound);
          fetched = true;
        } catch (e) {
          if (bound.aborted && !this.stopping) return retry(null, `${who} is not known to the agent yet, and the API server did not answer its read within the agent's admit wait (${CNI_ADMIT_WAIT_MS} ms); check the API server and the agent's pod watch (mesh-agent status, podSource)`);
          return retry(null, `reading ${who} from the API server failed: ${(e as Error).message}`);
        }
        break;
      }
      // A pods file: it may not have been rewritten yet.
      if (this.stopping || !(await this.changes.next(deadline))) break;
    }
    // The read may return after stop() took the datapath down (the CNI socket has answered "retry").
    if (this.stopping) return retry(null, 'the agent is stopping');
    if (!pod) return retry(null, `${who} is not known to the agent${this.kube ? ' nor to the API server' : ` (not in the pods file ${this.opts.podsFile})`}`);
    if (req.uid !== undefined && pod.uid !== req.uid) return retry(null, `${who} has uid ${pod.uid}, the sandbox is for uid ${req.uid} (the pod was recreated)`);
    const ip = ipv4Of(req.ips) ?? pod.ip ?? null;
    this.cniPods.admit(pod, req.containerId, ip, fetched && !this.lastSnapshot.pods.some((p) => p.uid === pod.uid));
    this.applySnapshot(this.lastSnapshot);
    const st = this.pods.states().find((x) => x.pod.uid === pod.uid);
    if (!st) return retry(null, `${who} is not on this node (${pod.nodeName ?? 'not scheduled'}, the agent is on ${this.opts.nodeName})`);
    if (!st.policy.meshed) return { result: 'not-meshed', reason: st.policy.reason ?? 'not injected' };
    if (st.key === null) return retry(true, `its pod cgroup is not in the datapath: ${st.problem ?? 'not yet written'}`);
    if (!this.opts.inbound || ip === null) return { result: 'meshed', policy: st.policy.inboundPolicy, failsClosed: false };
    // Its inbound capture: this agent's table hands the pod's connections to the listener.
    for (;;) {
      if (this.stopping) return retry(true, 'the agent is stopping');
      if (this.captureMode === 'capturing' && this.capturedIps.has(ip)) break;
      // A capture that cannot be applied (its error is in status, the pods it leaves unenforced
      // listed) must not keep a pod that fails open from starting: while no agent captures, its
      // clients reach it directly anyway. A restrictive pod waits, and its ADD names the error.
      if (this.captureError !== null && this.inbound.authorizer.policy(ip)?.failsClosed === false) break;
      if (!(await this.changes.next(deadline))) {
        const why = this.captureMode !== 'capturing'
          ? `the capture is ${this.captureMode}${this.opts.controllerUrl && !this.discovery.synced ? ' (the TrafficTargets are not known yet: the controller has not synced)' : ''}${this.captureError ? `: ${this.captureError}` : ''}`
          : `the capture table has not taken ${ip} yet${this.captureError ? `: ${this.captureError}` : ''}`;
        return retry(true, `its inbound policy is not in the kernel within ${CNI_ADMIT_WAIT_MS} ms: ${why}`);
      }
    }
    // And every proxy thread decides with it: a worker that had not applied the table would take
    // the pod's first captured connection as one to a pod it does not know, undecided.
    const generation = this.inbound.table.generation ?? 0;
    while (this.pool && !this.pool.policyLoaded(generation)) {
      if (this.stopping) return retry(true, 'the agent is stopping');
      if (!(await this.changes.next(deadline))) return retry(true, `its inbound policy is in the kernel, but not every proxy thread has loaded it within ${CNI_ADMIT_WAIT_MS} ms (mesh-agent status: workers, inbound.policyGeneration)`);
    }
    const policy = this.inbound.authorizer.policy(ip);
    return { result: 'meshed', policy: policy?.mode === 'smi' ? 'TrafficTargets' : (policy?.spec.defaultPolicy ?? st.policy.inboundPolicy), failsClosed: policy?.failsClosed ?? false };
  }

  /** The sandbox is gone (CNI DEL): what its ADD taught goes; the watch removes the pod itself. */
  private releaseCni(req: AdmitRequest): void {
    this.cniPods.release(req.namespace, req.name, req.containerId);
  }

  /**
   * The controller relays `mesh-agent diagnostics` questions; answered from this agent's own
   * state (diagnostics.ts). Endpoints: every proxy balances on its own, their views merged
   * (workers/merge.ts); policy: every proxy holds the same routes, the main thread's answer.
   */
  async answerQuery(q: AgentQuery): Promise<unknown> {
    const answer = answerQuery(this.router, this.discovery, q, this.inbound) as { ports: unknown[] };
    if (q.kind !== 'endpoints' || !this.pool) return answer;
    const views: Array<{ worker: number; ports: DescribedPort[] }> = [{ worker: 0, ports: answer.ports as DescribedPort[] }];
    for (const a of await this.pool.describe(q.namespace, q.name)) if (Array.isArray(a.result)) views.push({ worker: a.index, ports: a.result as DescribedPort[] });
    return { ports: mergeDescribed(views) };
  }

  applySnapshot(raw: Snapshot) {
    this.lastSnapshot = raw;
    const s = this.cniPods.merge(raw);
    this.namespaces = s.namespaces;
    this.writeCniState();
    // Counted before the kernel has the change: a worker meeting a connection redirected for it waits for its table (workers/table-seq.ts).
    if (this.pool) Atomics.add(this.tablesSent, 0, 1);
    this.pods.apply(s);
    this.podChanges.emit();
    this.inbound.refresh(this.pods.states());
    this.pool?.setPods(this.podsTable());
    // A new pod's certificate is asked for now, so its first connection finds it (docs/identity.md).
    if (this.identities) this.identities.want(this.wantedIdentities(this.opts.identity!.trustDomain));
    this.captureQueue?.poke();
    this.changes.emit();
  }

  /**
   * Reads this node's zone from its Node (as kube-proxy does), then again every 5 minutes (a
   * relabelled node) or, after a failure that may pass, every 30 s. A failed read keeps a zone
   * already known.
   */
  private async readZone(): Promise<void> {
    if (this.stopping || !this.kube) return;
    const node = this.opts.nodeName!;
    let next = ZONE_REFRESH_MS;
    try {
      this.setZone(zoneOfNode(await this.kube.getNode(), node));
    } catch (e) {
      const failed = zoneReadFailed(e, node);
      // A stop ends the read in flight: that is no failure, and there is no next read.
      if (failed === null || this.stopping) return;
      if (!failed.lasting) next = ZONE_RETRY_MS;
      if (this.zone.zone === null) this.setZone({ zone: null, why: failed.why, warn: true });
    }
    if (this.stopping) return;
    this.zoneTimer = setTimeout(() => void this.readZone(), next);
    this.zoneTimer.unref();
  }

  /** Applies a zone (or its absence) to every proxy's store; said once per change. */
  private setZone(z: ZoneState): void {
    const same = z.zone === this.zone.zone && z.why === this.zone.why;
    this.zone = z;
    if (same) return;
    if (z.zone !== null) this.opts.log.info(`topology: this node's zone is ${z.zone}: Services whose endpoints carry zone hints (trafficDistribution PreferClose, topology-mode Auto) keep to it`, { node: this.opts.nodeName, zone: z.zone });
    else if (z.warn) this.recordError(`topology: ${z.why}`);
    else this.opts.log.info(`topology: ${z.why}`);
    this.discovery.setZone(z.zone ?? undefined);
    this.pool?.setZone(z.zone ?? undefined);
  }

  /** The first list of this node's pods is in: the capture may start. */
  private podsListed(): void {
    this.podsSynced = true;
    this.changes.emit();
    this.maybeCapture();
  }

  /** Pods or TrafficTargets changed: every proxy authorizes with the new policies, the capture follows. */
  private refreshPolicies(): void {
    if (!this.pods) return;
    if (!this.inbound.refresh(this.pods.states())) return;
    this.pool?.setPods(this.podsTable());
    this.captureQueue?.poke();
  }

  /**
   * The capture starts handing connections to this agent once it knows its pods and, with a
   * controller, the TrafficTargets: until then a fail-closed pod is never open while its policy
   * is unknown. Before, a previous agent's table stays as it was; with identity on, once the pods
   * are known and while the TrafficTargets are not (the controller down), the held table with
   * the tunnel port open: tunnels are served (pods a previous agent had failing closed are
   * pending, inbound.ts, so they are not let in), rather than every tunnel to the node dropped
   * until the controller is back.
   */
  private maybeCapture(): void {
    // A pod list coming in after stop() looked (the API server's first list) would otherwise put a
    // capture in place that stop() does not know to remove.
    if (this.stopping) return;
    const from = this.captureMode;
    if ((from !== 'waiting' && from !== 'starting') || !this.podsSynced) return;
    if (this.opts.controllerUrl && !this.discovery.synced) {
      if (from === 'waiting' && this.tunnels) {
        this.captureMode = 'starting';
        this.opts.log.info('tunnels served before the TrafficTargets are known; capture waits for them', { pendingPods: this.inbound.table.pending ?? [] });
        this.captureQueue?.poke();
      }
      return;
    }
    this.captureMode = 'capturing';
    void this.proxy.listenInbound().then(
      (addr) => {
        this.opts.log.info('inbound capture on', { listen: `${addr.host}:${addr.port}`, pods: this.inbound.table.pods.length });
        this.captureQueue?.poke();
      },
      (e) => {
        this.captureMode = from;
        this.captureError = inboundListenError(this.opts.inbound!, e as Error);
        this.recordError(this.captureError);
      },
    );
  }

  /** Puts the capture table in step with the pods' policies and the capture mode (one run at a time). */
  private async syncCapture(): Promise<void> {
    const mode = this.captureMode;
    if (!this.capture || mode === 'off' || mode === 'waiting') return;
    const listener = mode === 'capturing' && this.proxy.inboundAddress() !== null ? { ip: this.opts.inbound!.ip, port: this.opts.inbound!.port } : null;
    try {
      const id = this.opts.identity;
      const tunnel = id ? { ip: this.opts.proxy.ip, port: id.tunnelPort ?? TUNNEL_PORT, open: mode !== 'held' } : null;
      const ruleset = this.inbound.capture(listener, tunnel);
      await this.capture.apply(ruleset);
      this.capturedIps = new Set(listener ? ruleset.pods.map((p) => p.ip) : []);
      this.tunnelSyns = tunnel ? (tunnel.open ? 'open' : 'dropped') : null;
      this.captureError = null;
    } catch (e) {
      this.captureError = (e as Error).message;
      throw e;
    } finally {
      this.changes.emit();
    }
  }

  /** This node's pods as the proxy workers need them: workload, declared opaque ports, identity and mesh state, and the meshed ones' inbound policies, by IP. */
  private podsTable(): PodsTable {
    const pods: PodsTable['pods'] = [];
    for (const s of this.pods.states()) {
      if (s.pod.ip) pods.push({ ip: s.pod.ip, workload: workloadOf(s.pod), opaquePorts: s.policy.opaquePorts?.toString() ?? null, serviceAccount: s.pod.serviceAccount ?? 'default', meshed: s.policy.meshed && s.key !== null });
    }
    const namespaces: Record<string, string> = {};
    for (const [name, ns] of this.namespaces) {
      const v = ns.annotations[ANNOTATIONS.inject];
      if (v !== undefined) namespaces[name] = v;
    }
    return { generation: this.pods.generation, seq: Atomics.load(this.tablesSent, 0), pods, namespaces, policies: this.inbound.table };
  }

  private async startWorkers(count: number, openSlots: SharedArrayBuffer): Promise<void> {
    const { log } = this.opts;
    const mapFds = this.datapath.mapFds();
    this.pool = new WorkerPool({
      count,
      init: (index) => ({
        index,
        listen: { host: this.opts.proxy.ip, port: this.opts.proxy.port },
        mapFds,
        kernelSplice: this.opts.kernelSplice ?? false,
        nativeIo: this.opts.nativeIo ?? true,
        opaquePorts: this.opts.opaquePorts?.toString() ?? DEFAULT_OPAQUE_PORTS,
        detectTimeoutMs: this.opts.detectTimeoutMs,
        maxConnections: this.opts.maxConnections,
        openSlots,
        gcLock: gcLock(),
        tablesSent: this.tablesSent.buffer as SharedArrayBuffer,
        metrics: { ...this.opts.metrics },
        inbound: this.opts.inbound != null,
        pods: this.podsTable(),
        discovery: this.discovery.replay(),
        node: this.opts.nodeName,
        ...(this.discovery.zone !== undefined ? { zone: this.discovery.zone } : {}),
        taps: this.reporter?.tapFilters() ?? [],
        identity: this.opts.identity ? {
          node: this.opts.nodeName ?? os.hostname(),
          trustDomain: this.opts.identity.trustDomain,
          anchorsPem: this.opts.identity.anchorsPem,
          tunnelPort: this.opts.identity.tunnelPort ?? TUNNEL_PORT,
          credentials: this.identities?.snapshot() ?? [],
          firstSyncWaitMs: this.opts.controllerUrl !== undefined ? (this.opts.identity.firstSyncWaitMs ?? DEFAULT_FIRST_SYNC_WAIT_MS) : null,
        } : undefined,
        budgetShare: 1 / (this.opts.proxyWorkers ?? 1),
      }),
      ledger: () => ({ gauges: new Map(), pairs: new Map() }),
      merge: (batch, ledger) => {
        this.metrics.merge(batch.series, ledger.gauges);
        this.reporter?.aggregator.merge(batch.pairs, ledger.pairs);
      },
      forget: (ledger) => {
        this.metrics.forget(ledger.gauges);
        this.reporter?.aggregator.forget(ledger.pairs);
      },
      tap: (id, rec) => this.reporter?.offerTap(id, rec),
      log: (level, msg, fields) => (level === 'info' ? log.info(msg, fields) : this.recordError(msg)),
      onPolicyLoaded: () => this.changes.emit(),
    });
    this.discovery.onApply((m) => this.pool?.discovery(m));
    await this.pool.start();
    log.info('proxy workers listening', { workers: count + 1 });
  }

  /** The proxy workers' telemetry since the last collect, merged into metrics and the report (a scrape, a report, a status). */
  async collect(): Promise<void> {
    await this.pool?.collect();
  }

  /** Ends proxy worker `index` as a crash would (tests): the pool restarts it. */
  killWorker(index: number): Promise<number> {
    if (!this.pool) return Promise.reject(new Error('no proxy worker threads: run with --proxy-workers 2 or more'));
    return this.pool.kill(index);
  }

  /** Every proxy: the main thread's (0) and the worker threads. */
  workers(): Array<WorkerStatus & { thread: 'main' | 'worker' }> {
    const main = this.proxy?.stats();
    const cpu = process.threadCpuUsage();
    return [
      { index: 0, thread: 'main', state: 'running', restarts: 0, stuck: 0, cpuSeconds: (cpu.user + cpu.system) / 1e6, lagMs: this.mainLagMs, accepted: main?.accepted ?? 0, open: main?.open ?? 0, startedAt: new Date(this.startedAt).toISOString(), lastExit: null },
      ...(this.pool?.status() ?? []).map((w) => ({ ...w, thread: 'worker' as const })),
    ];
  }

  private lookup(ip: string, port: number): OrigDst | null {
    return this.datapath.lookup(ip, port);
  }

  isReady(): boolean {
    return this.ready && this.podsSynced;
  }

  status() {
    const d = this.datapath.describe();
    return {
      version: VERSION,
      node: this.opts.nodeName ?? os.hostname(),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      kernel: os.release(),
      features: this.features,
      datapath: { cgroup: d.cgroup, programs: d.programs, maps: d.maps, counters: this.datapath.counters() },
      proxy: { listen: `${this.opts.proxy.ip}:${this.opts.proxy.port}`, maxConnections: this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS, ...sumProxyStats([this.proxy.stats(), ...(this.pool?.proxyStats() ?? [])]), workers: this.workers() },
      pods: this.pods.states().map((s) => ({
        namespace: s.pod.namespace,
        name: s.pod.name,
        ip: s.pod.ip ?? null,
        meshed: s.policy.meshed && s.key !== null,
        reason: s.policy.reason ?? s.problem ?? null,
        cgroup: s.cgroup,
        skipOutboundPorts: s.policy.skipOutbound.toString(),
        skipInboundPorts: s.policy.skipInbound.toString(),
        opaquePorts: s.policy.opaquePorts?.toString() ?? null,
        annotationErrors: s.policy.errors,
      })),
      podSource: this.kube ? { kind: 'kubernetes', synced: this.podsSynced, ...this.kube.state() } : { kind: 'file', file: this.opts.podsFile, synced: this.podsSynced },
      inbound: this.inboundStatus(),
      cni: this.opts.cni ? { socket: this.opts.cni.socket, stateFile: this.opts.cni.stateFile, admissions: { ...this.cniCounts } } : null,
      controller: this.reporter?.state() ?? null,
      discovery: this.discoveryLink?.status() ?? null,
      topology: { node: this.opts.nodeName ?? null, zone: this.zone.zone, why: this.zone.why },
      identity: this.identityStatus(),
      recentErrors: this.recentErrors.slice(-10),
    };
  }

  /** Certificates, trust anchors and tunnels, for status (null: identity off). */
  identityStatus() {
    const o = this.opts.identity;
    if (!o || !this.identities || !this.tunnels || !this.identityLib) return null;
    const { anchorsStatus, sumTunnelStats } = this.identityLib;
    return {
      trustDomain: o.trustDomain,
      identityService: o.addr,
      trustAnchors: anchorsStatus(o.anchorsPem),
      certificates: this.identities.states(),
      tunnels: { port: o.tunnelPort ?? TUNNEL_PORT, ...sumTunnelStats([this.tunnels.stats(), ...(this.pool?.tunnelStats() ?? [])]) },
    };
  }

  /** The inbound side for status (docs/status.md): capture, listener, each meshed pod's policy. */
  private inboundStatus() {
    const pods = this.inbound.status();
    const enforced = this.captureMode === 'capturing' && this.captureError === null;
    return {
      capture: this.captureMode,
      listen: this.opts.inbound ? `${this.opts.inbound.ip}:${this.opts.inbound.port}` : null,
      listening: this.proxy?.inboundAddress() !== null && this.proxy?.inboundAddress() !== undefined,
      tunnelSyns: this.tunnelSyns,
      error: this.captureError,
      defaultPolicy: this.opts.defaultInboundPolicy ?? DEFAULT_INBOUND_POLICY,
      // Each proxy's loaded table (main thread first): open connections follow a change once theirs has it.
      policyGeneration: { table: this.inbound.table.generation ?? 0, proxies: [this.inbound.authorizer.generation, ...(this.pool?.policyGenerations() ?? [])] },
      failClosed: pods.filter((p) => p.failsClosed).map((p) => `${p.namespace}/${p.name}`),
      pods: pods.map((p) => ({ ...p, enforcedForUnmeshedClients: enforced })),
    };
  }

  /** What the controller's nodes page shows of this agent, bounded as parseReport requires. */
  summary(): Omit<AgentSummary, 'link'> {
    const s = this.status();
    const h = assessHealth(s);
    return {
      version: VERSION,
      startedAt: this.startedAt,
      kernel: s.kernel,
      programs: s.datapath.programs.slice(0, MAX_SUMMARY_PROGRAMS).map((p) => ({ section: p.section, attached: Boolean(p.attachedTo) })),
      healthy: h.healthy,
      reasons: h.reasons.slice(0, MAX_SUMMARY_REASONS).map((r) => r.slice(0, 512)),
      proxy: { open: s.proxy.open, accepted: s.proxy.accepted },
      ...(s.identity ? {
        identity: {
          trustDomain: s.identity.trustDomain,
          certificates: [...s.identity.certificates]
            // ISO times sort as strings; not localeCompare, whose ICU collator costs 3 MB of RSS.
            .sort((a, b) => ((a.notAfter ?? '') < (b.notAfter ?? '') ? -1 : (a.notAfter ?? '') > (b.notAfter ?? '') ? 1 : 0))
            .slice(0, MAX_SUMMARY_CERTIFICATES)
            .map((c) => ({ identity: c.identity.slice(0, 512), state: c.state, notAfter: c.notAfter })),
          anchorDaysLeft: Math.min(...s.identity.trustAnchors.map((a) => a.daysLeft)),
        },
      } : {}),
    };
  }

  /**
   * Ends stop()'s drain now (a second SIGTERM/SIGINT): the connections still open are closed as at
   * the drain deadline, and stop() goes on to unload as after any drain.
   */
  cutDrain(): void {
    this.proxy?.cutDrain();
    this.pool?.cutDrain();
    this.tunnels?.cutDrain();
  }

  /**
   * Detach, stop accepting, drain for up to drainMs, unload. Pods connect directly from the
   * detach on; no connection is refused: the proxy stays open, and the maps stay loaded, until
   * what was redirected before the detach has been accepted and looked up.
   */
  async stop(drainMs = 10_000): Promise<void> {
    this.ready = false;
    // Plugins from now on go by the state file: pods of meshed namespaces wait for the next agent.
    // The socket answers the ADDs in flight at once, an API read among them (cni-server.ts).
    this.stopping = true;
    this.changes.emit();
    await this.cniServer?.close().catch((e) => this.recordError(`closing the CNI socket: ${(e as Error).message}`));
    clearInterval(this.lagProbe);
    clearTimeout(this.zoneTimer);
    this.source?.stop();
    this.kube?.stop();
    await this.reporter?.stop();
    this.discoveryLink?.stop();
    // The capture stops handing us connections first (fail-closed pods' SYNs are dropped from
    // now on, and retried by their clients until an agent is back), as the outbound detach.
    const captured = this.captureMode === 'capturing' || this.captureMode === 'starting' || this.captureMode === 'held';
    if (this.captureMode === 'capturing' || this.captureMode === 'starting') {
      this.captureMode = 'held';
      this.captureQueue?.poke();
      await this.captureQueue?.idle().catch(() => {});
    }
    const detached = this.datapath?.isAttached ?? false;
    if (detached) this.datapath.detach();
    // A connect() redirected (or a SYN captured) just before may still be in a listener's accept
    // queue, or its SYN on the veth; closing the listener now would reset it.
    if ((detached || captured) && this.proxy) await new Promise((r) => setTimeout(r, ACCEPT_GRACE_MS));
    await this.proxy?.closeInbound();
    this.identities?.stop();
    await Promise.all([this.proxy?.close(drainMs), this.pool?.close(drainMs), this.tunnels?.close(drainMs)]);
    await this.captureQueue?.stop();
    // Nothing to keep closed: nothing is left in the kernel. A fail-closed pod's table stays,
    // dropping its SYNs, until an agent is back (docs/policy.md); `mesh-agent cleanup` removes it.
    if (captured && this.capture) {
      const closed = this.inbound.status().filter((p) => p.failsClosed);
      if (closed.length === 0) await this.capture.remove().catch((e) => this.recordError((e as Error).message));
      else this.opts.log.info('inbound capture held for fail-closed pods until an agent is back', { pods: closed.map((p) => `${p.namespace}/${p.name}`) });
    }
    this.datapath?.close();
    await this.admin?.close();
  }
}

/** Why the inbound listener could not listen, and what to do about it. */
export function inboundListenError(at: { ip: string; port: number }, e: Error & { errno?: number; code?: string }): string {
  const m = e.message;
  // The addon's errors carry the errno and strerror's text; Node's carry the code.
  const is = (code: keyof typeof os.constants.errno, text: RegExp) => e.code === code || e.errno === os.constants.errno[code] || text.test(m);
  const fix = is('EADDRINUSE', /EADDRINUSE|address already in use/i) ? `; another agent (or process) holds port ${at.port} on this node: stop it, or pass another port with --inbound-addr (install: --inbound-port)`
    : is('EADDRNOTAVAIL', /EADDRNOTAVAIL|cannot assign requested address/i) ? `; ${at.ip} is not an address of this host: pass --inbound-addr with the node IP`
      : is('EPERM', /EPERM|not permitted/i) || is('EACCES', /EACCES/) ? '; a transparent listener needs CAP_NET_ADMIN (and CAP_NET_RAW): run as root or grant them'
        : '';
  return `inbound listener on ${at.ip}:${at.port} failed: ${m}${fix}; until it listens nothing is captured (fail-closed pods stay closed)`;
}

/** Binds the address without SO_REUSEPORT and lets it go: EADDRINUSE if anything else holds it. */
function listenAlone(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve()));
  });
}
