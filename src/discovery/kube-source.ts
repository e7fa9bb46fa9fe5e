// The controller's cluster source: Services, EndpointSlices and Pods of every namespace, and the
// Namespaces (what pods' records read of them: namespaces.ts), listed and watched once (the
// agents open no cluster-wide watch), fed to the discovery hub. Each kind runs the same reflector the agent's pod watch uses (src/k8s/watch-reflector.ts); the stores
// keep each object as the hub takes it (its record's line, hub.ts prepare), not the object, so
// 100,000 pods cost what their lines cost.
import { CoreV1Api, DiscoveryV1Api, type KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from '../k8s/client-node-api.ts';
import { abortable, abortableWatch } from '../k8s/client-node-signal.ts';
import { expiredListMessage, listPaged, type Page } from '../k8s/pager.ts';
import { grantFor, type BackoffOptions } from '../k8s/watch-errors.ts';
import { acceptedLine, Reflector } from '../k8s/watch-reflector.ts';
import type { ResourceKind } from './from-k8s.ts';
import { joinNamespace, prepare, type DiscoveryHub, type Prepared } from './hub.ts';
import type { MeshObjects } from './mesh-objects.ts';
import { keepNamespace, NamespaceAnnotations } from './namespaces.ts';
import { routeReflectors } from '../routing/route-kube-source.ts';

type Obj = Record<string, any>;

export const CONTROLLER_RBAC_HINT = "the controller's ServiceAccount lacks list/watch on services, pods, namespaces and endpointslices (discovery.k8s.io); apply the ClusterRole from mesh-agent install";

export interface DiscoveryKubeSourceOptions {
  hub: DiscoveryHub;
  /** Kubeconfig path; default: in-cluster config when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG / ~/.kube/config. */
  kubeconfig?: string;
  /** A ready KubeConfig (tests point one at a stand-in server); wins over kubeconfig. */
  kubeConfig?: KubeConfig;
  onError: (e: Error) => void;
  /** A watch without events or bookmarks for this long is restarted; default 5 min. */
  watchdogMs?: number;
  backoff?: BackoffOptions;
  /** Items per list page; default 500, as client-go. */
  pageSize?: number;
  /**
   * Routes (HTTPRoute, GRPCRoute, TrafficSplit, HTTPRouteGroup) and SMI access (TrafficTarget,
   * TCPRoute) too: the agents' first world then has them.
   */
  routes?: MeshObjects;
  /** Lines worth saying once (a route kind whose CRD is missing). */
  log?: (msg: string) => void;
}

/** What a reflector stores of an object: the metadata it keys and resumes by, and the hub's form of the rest. */
interface Kept {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  prepared: Prepared;
}

function keep(kind: ResourceKind, o: Obj, namespaces: NamespaceAnnotations): Kept {
  if ((o as Kept).prepared !== undefined) return o as Kept; // a list page's items are kept already
  const md = o?.metadata ?? {};
  return { metadata: { name: md.name, namespace: md.namespace, resourceVersion: md.resourceVersion }, prepared: prepare(kind, o, kind === 'pod' ? namespaces.get(md.namespace) : undefined) };
}

export class DiscoveryKubeSource {
  private readonly o: DiscoveryKubeSourceOptions;
  private reflectors = new Map<ResourceKind, Reflector>();
  private routeReflectors: Reflector[] = [];
  private nsReflector?: Reflector;
  private namespaces!: NamespaceAnnotations;
  /** namespaces.changes when the pods' last list began. */
  private podListFrom = 0;
  private server = '';
  private started = false;
  private lastError: string | null = null;

  constructor(o: DiscoveryKubeSourceOptions) {
    this.o = o;
  }

  /** Starts the four list+watch loops; the hub is synced once all four have listed. Failures are retried (onError says why). */
  start(): void {
    if (this.started) throw new Error('DiscoveryKubeSource already started');
    this.started = true;
    const kc = this.o.kubeConfig ?? loadKubeConfig(this.o.kubeconfig);
    const server = kc.getCurrentCluster()?.server;
    if (!server) throw new Error('kubeconfig has no current cluster; pass --kubeconfig FILE or run in a cluster');
    this.server = server;
    const core = kc.makeApiClient(CoreV1Api);
    const disco = kc.makeApiClient(DiscoveryV1Api);
    const watchdogMs = this.o.watchdogMs ?? 5 * 60_000;
    // As the agent's KubeSource: silence is our watchdog's call, and stop() aborts a watch not answered yet (client-node-signal.ts).
    const watch = abortableWatch(kc, watchdogMs + 1_000);
    const limit = this.o.pageSize ?? 500;
    const say = (msg: string) => (this.o.log ?? ((m: string) => this.o.onError(new Error(m))))(msg);
    const namespaces = (this.namespaces = new NamespaceAnnotations((msg) => say(`discovery: ${msg}`)));
    const onError = (e: Error) => {
      this.lastError = e.message;
      this.o.onError(e);
    };
    // `signal` (the reflector's stop) aborts the page in flight, not only the pages after it.
    const pages = (kind: ResourceKind, name: string, page: (limit: number | undefined, cont: string | undefined, signal: AbortSignal) => Promise<Page>) => async (signal: AbortSignal) => {
      // Page by page, each prepared before the next is fetched: a 100,000-pod list never sits whole in memory.
      if (kind === 'pod') this.podListFrom = namespaces.changes;
      return listPaged({ page: (l, c) => page(l, c, signal), limit, keep: (i) => keep(kind, i, namespaces), onExpired: (n) => say(`discovery: ${expiredListMessage(name, n)}`), signal });
    };
    const defs: Array<{ kind: ResourceKind; name: string; path: string; list: (signal: AbortSignal) => Promise<{ items: Obj[]; resourceVersion: string }> }> = [
      { kind: 'service', name: 'services', path: '/api/v1/services', list: pages('service', 'services', (l, c, s) => core.listServiceForAllNamespaces({ limit: l, _continue: c }, abortable(s))) },
      { kind: 'slice', name: 'endpointslices', path: '/apis/discovery.k8s.io/v1/endpointslices', list: pages('slice', 'endpointslices', (l, c, s) => disco.listEndpointSliceForAllNamespaces({ limit: l, _continue: c }, abortable(s))) },
      { kind: 'pod', name: 'pods', path: '/api/v1/pods', list: pages('pod', 'pods', (l, c, s) => core.listPodForAllNamespaces({ limit: l, _continue: c }, abortable(s))) },
    ];
    for (const d of defs) {
      const r: Reflector = new Reflector({
        name: d.name,
        path: d.path,
        list: d.list,
        watch,
        server,
        watchdogMs,
        backoff: this.o.backoff ?? { initialMs: 800, maxMs: 30_000 },
        rbacHint: CONTROLLER_RBAC_HINT,
        transform: (obj) => keep(d.kind, obj, namespaces),
        onError,
        // The refusal is said once, by onError; its end once too, or the log never says the grant took.
        onAccepted: (was) => say(`discovery: ${acceptedLine(d.name, was)}`),
        onChange: (op, key, obj) => (op === 'set' ? this.o.hub.put(d.kind, (obj as Kept).prepared) : this.o.hub.remove(d.kind, key)),
        onSynced: () => {
          // A namespace that changed while pods were listed: the pages prepared before it are joined again.
          if (d.kind === 'pod' && namespaces.changes !== this.podListFrom) this.rejoin(namespaces.changedSince(this.podListFrom));
          // A (re)list: the hub sends only what differs from what the agents have.
          this.o.hub.replaceAll(d.kind, [...r.store.values()].map((o) => (o as Kept).prepared));
          this.maybeSynced();
        },
      });
      this.reflectors.set(d.kind, r);
    }
    const nsr: Reflector = new Reflector({
      name: 'namespaces',
      path: '/api/v1/namespaces',
      list: async (signal) => {
        const l = await core.listNamespace({}, abortable(signal)); // a cluster has few: one page
        return { items: l.items.map(keepNamespace), resourceVersion: l.metadata?.resourceVersion ?? '' };
      },
      watch,
      server,
      watchdogMs,
      backoff: this.o.backoff ?? { initialMs: 800, maxMs: 30_000 },
      rbacHint: CONTROLLER_RBAC_HINT,
      transform: keepNamespace,
      // A ClusterRole from before namespaces were read: the rest of discovery does not wait for
      // them (the agents would get no world at all). Listed as none; the watch from "now" starts
      // with every namespace as ADDED once it is granted. The reflector says each change of the
      // refused state once, however often the watch is retried meanwhile.
      emptyWhenRefused: () => true,
      onRefused: (r) => {
        const lost = r.verb === 'list' ? 'going on without them' : 'going on with the namespaces last read, blind to their changes';
        say(`discovery: ${r.verb} namespaces: HTTP 403: ${lost}, so skip-inbound ports set only on a namespace are tunnelled from other nodes until it is granted (a pod's own apply); ${CONTROLLER_RBAC_HINT}, which grants ${grantFor('/api/v1/namespaces')} (the API server: ${r.message})`);
      },
      onAccepted: (was) => say(`discovery: ${acceptedLine('namespaces', was)}`),
      onError,
      onChange: (op, key, obj) => {
        if (op === 'set' ? namespaces.set(obj) : namespaces.delete(key)) this.rejoin(new Set([key]));
      },
      onSynced: () => {
        this.rejoin(new Set(namespaces.replaceAll(nsr.store.values())));
        this.maybeSynced();
      },
    });
    this.nsReflector = nsr;
    const routes = this.o.routes;
    if (routes !== undefined) {
      routes.hold();
      this.routeReflectors = routeReflectors({
        kc, watch, server, routes, watchdogMs, pageSize: limit,
        backoff: this.o.backoff ?? { initialMs: 800, maxMs: 30_000 },
        onSynced: () => this.maybeSynced(),
        onError,
        log: say,
      });
    }
    for (const r of this.reflectors.values()) void r.run();
    void nsr.run();
    for (const r of this.routeReflectors) void r.run();
  }

  /** These namespaces' annotations changed: their pods that follow them are sent again (those that changed). */
  private rejoin(names: Set<string>): void {
    if (names.size === 0) return;
    for (const o of this.reflectors.get('pod')!.store.values()) {
      const k = o as Kept;
      if (!k.prepared.followsNamespace || !names.has(k.metadata.namespace ?? '')) continue;
      const p = joinNamespace(k.prepared, this.namespaces.get(k.metadata.namespace!));
      if (p === k.prepared) continue;
      k.prepared = p;
      this.o.hub.put('pod', p);
    }
  }

  /** Every kind listed: routes convert (their Services are known now), then the agents get the world. */
  private maybeSynced(): void {
    if (![...this.reflectors.values(), this.nsReflector!, ...this.routeReflectors].every((x) => x.synced)) return;
    this.o.routes?.release();
    this.o.hub.markSynced();
  }

  stop(): void {
    for (const r of this.reflectors.values()) r.stop();
    this.nsReflector?.stop();
    for (const r of this.routeReflectors) r.stop();
  }

  state() {
    const rs: Array<[string, Reflector]> = [...this.reflectors.entries()];
    if (this.nsReflector) rs.push(['namespace', this.nsReflector]);
    return {
      kind: 'kubernetes',
      server: this.server,
      connected: rs.length === 4 && rs.every(([, r]) => r.connected),
      lastError: this.lastError,
      resources: Object.fromEntries([...rs, ...this.routeReflectors.map((r) => [r.kindName, r] as const)].map(([k, r]) => [k, { synced: r.synced, connected: r.connected, resourceVersion: r.resourceVersion, restarts: r.restarts, lastEventAt: r.lastEventAt ? new Date(r.lastEventAt).toISOString() : null, objects: r.store.size, refused: r.refusedStatus() }])),
    };
  }
}
