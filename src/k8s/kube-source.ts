// Cluster pod source, the twin of PodFileSource: the pods of this node and all namespaces, kept
// current by list+watch against the API server, handed out as coalesced Snapshots.
import { kubeConfigOf, LeanKubeApi, type KubeApi } from './kube-api.ts';
import { namespaceFromObject, podFromObject, type NamespaceInfo, type PodInfo, type Snapshot } from './objects.ts';
import type { BackoffOptions } from './watch-errors.ts';
import { acceptedLine, Reflector, type Refusal, type RefusalStatus } from './watch-reflector.ts';

export interface KubeSourceOptions {
  /** Watch only pods with spec.nodeName == nodeName (a server-side fieldSelector). */
  nodeName: string;
  /** Kubeconfig path; default: in-cluster config when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG / ~/.kube/config. */
  kubeconfig?: string;
  /** A ready client (tests point one at a stand-in server); wins over kubeconfig. */
  api?: KubeApi;
  /** After the initial lists (the snapshot start() resolves with) and after every change, bursts coalesced. */
  onSnapshot: (s: Snapshot) => void;
  /** Every failed list and every watch restart, with what to do about it; a refusal (403, 401) once, when it begins. */
  onError: (e: Error) => void;
  /** Lines that are news but not trouble: a refused list or watch accepted again. */
  log?: (msg: string) => void;
  /** A watch without events or bookmarks for this long is restarted; default 5 min. */
  watchdogMs?: number;
  /** Reconnect backoff (with jitter); default 800 ms doubling to 30 s, as client-go. */
  backoff?: BackoffOptions;
  /** Window in which changes become one snapshot; default 50 ms. */
  coalesceMs?: number;
}

export interface KubeSourceState {
  /** Both watches (pods and namespaces) have an open stream. */
  connected: boolean;
  /** Wall-clock ms of the last watch event of either kind, bookmarks included; 0 before any. */
  lastEventAt: number;
  /** Watch restarts of any cause, both kinds together. */
  restarts: number;
  /** Where the pod watch resumes from. */
  resourceVersion: string;
  /** The kinds ("pods", "namespaces") the API server refuses now (403, with the rule to grant; 401, the token), said once each. */
  refused: Record<string, RefusalStatus>;
}

/**
 * The client for the agent's config: the lean one (kube-api.ts) unless the config needs a
 * credential plugin or a proxy, which @kubernetes/client-node handles (loaded only then: it costs
 * ~60 MB of RSS).
 */
async function apiFor(o: KubeSourceOptions, watchdogMs: number): Promise<KubeApi> {
  if (o.api) return o.api;
  const c = kubeConfigOf(o.kubeconfig);
  if ('config' in c) return new LeanKubeApi(c.config);
  const { clientNodeApi, loadKubeConfig } = await import('./client-node-api.ts');
  return clientNodeApi(loadKubeConfig(o.kubeconfig), watchdogMs);
}

export class KubeSource {
  private readonly o: KubeSourceOptions;
  private pods?: Reflector;
  private namespaces?: Reflector;
  private timer?: NodeJS.Timeout;
  private started = false;
  private stopped = false;
  private pending?: { resolve: (s: Snapshot) => void; reject: (e: Error) => void };
  private api?: KubeApi;
  /** Aborted by stop(): a pod read in flight (getPod) ends then, not at its 60 s timeout. */
  private readonly stopping = new AbortController();

  constructor(o: KubeSourceOptions) {
    this.o = o;
  }

  /**
   * Resolves with the first snapshot once pods and namespaces have both been listed. Failures
   * (API server unreachable, RBAC missing) do not reject: they go to onError and are retried with
   * backoff, so an agent started before its ClusterRole recovers without a crash loop; the agent
   * reports not-ready meanwhile. Rejects only if stop() comes first, or the kubeconfig is unusable.
   */
  start(): Promise<Snapshot> {
    if (this.started) throw new Error('KubeSource already started');
    this.started = true;
    const watchdogMs = this.o.watchdogMs ?? 5 * 60_000;
    const first = new Promise<Snapshot>((resolve, reject) => (this.pending = { resolve, reject }));
    apiFor(this.o, watchdogMs).then((api) => this.run(api, watchdogMs), (e) => {
      this.pending?.reject(e as Error);
      this.pending = undefined;
    });
    return first;
  }

  private run(api: KubeApi, watchdogMs: number): void {
    if (this.stopped) return;
    this.api = api;
    const common = { watch: api, server: api.server, watchdogMs, backoff: this.o.backoff ?? { initialMs: 800, maxMs: 30_000 }, onError: this.o.onError };
    const onAccepted = (name: string) => (was: Refusal) => this.o.log?.(acceptedLine(name, was));
    const fieldSelector = `spec.nodeName=${this.o.nodeName}`;
    const onSynced = () => this.synced();
    const onChange = () => this.changed();
    this.pods = new Reflector({
      ...common,
      name: 'pods',
      path: '/api/v1/pods',
      fieldSelector,
      onAccepted: onAccepted('pods'),
      onSynced,
      onChange,
      list: async (signal) => {
        const l = await api.list('/api/v1/pods', { fieldSelector }, signal);
        return { items: l.items.map((i) => ({ ...i, kind: 'Pod' })), resourceVersion: l.resourceVersion };
      },
    });
    this.namespaces = new Reflector({
      ...common,
      name: 'namespaces',
      path: '/api/v1/namespaces',
      onAccepted: onAccepted('namespaces'),
      onSynced,
      onChange,
      list: async (signal) => {
        const l = await api.list('/api/v1/namespaces', {}, signal);
        return { items: l.items.map((i) => ({ ...i, kind: 'Namespace' })), resourceVersion: l.resourceVersion };
      },
    });
    void this.pods.run();
    void this.namespaces.run();
  }

  stop(): void {
    this.stopped = true;
    this.stopping.abort();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pods?.stop();
    this.namespaces?.stop();
    this.pending?.reject(new Error('KubeSource stopped before the first list'));
    this.pending = undefined;
  }

  state(): KubeSourceState {
    const rs = [this.pods, this.namespaces].filter((r): r is Reflector => !!r);
    return {
      connected: rs.length === 2 && rs.every((r) => r.connected),
      lastEventAt: Math.max(0, ...rs.map((r) => r.lastEventAt)),
      restarts: rs.reduce((n, r) => n + r.restarts, 0),
      resourceVersion: this.pods?.resourceVersion ?? '',
      refused: Object.fromEntries(rs.flatMap((r) => {
        const s = r.refusedStatus();
        return s ? [[r.kindName, s]] : [];
      })),
    };
  }

  /**
   * One pod read from the API server now (a pod's CNI ADD may come before the watch delivers it);
   * null: no such pod. stop(), or `signal`, abandons the read at once: a stopping agent does not
   * wait for an API server that does not answer.
   */
  async getPod(namespace: string, name: string, signal?: AbortSignal): Promise<PodInfo | null> {
    if (!this.api) throw new Error('the API server client is not set up yet');
    const stopped = () => new Error(`reading pod ${namespace}/${name}: the pod source is stopping`);
    if (this.stopped) throw stopped();
    const either = signal ? AbortSignal.any([this.stopping.signal, signal]) : this.stopping.signal;
    let l;
    try {
      l = await this.api.list(`/api/v1/namespaces/${namespace}/pods`, { fieldSelector: `metadata.name=${name}` }, either);
    } catch (e) {
      if (this.stopping.signal.aborted) throw stopped();
      throw e;
    }
    return l.items.length > 0 ? podFromObject({ kind: 'Pod', ...l.items[0] }) : null;
  }

  /**
   * This node's Node object (its labels: topology.kubernetes.io/zone); rejects with `statusCode` on
   * 403 or 404, and with `stopping: true` when stop() ended the read.
   */
  async getNode(): Promise<Record<string, any>> {
    if (!this.api) throw new Error('the API server client is not set up yet');
    // stop() abandons the read: an agent stopping behind a silent API server does not wait for its timeout.
    try {
      return await this.api.get(`/api/v1/nodes/${encodeURIComponent(this.o.nodeName)}`, this.stopping.signal);
    } catch (e) {
      // Marked, so the reader can tell its own stop from a failed read (node-zone.ts zoneReadFailed).
      if (this.stopping.signal.aborted) throw Object.assign(new Error(`reading Node ${this.o.nodeName}: the source is stopping`), { stopping: true });
      throw e;
    }
  }

  /** The current view: pods of this node, every namespace. */
  snapshot(): Snapshot {
    const pods: PodInfo[] = [];
    for (const o of this.pods?.store.values() ?? []) {
      const p = podFromObject({ kind: 'Pod', ...o });
      if (p) pods.push(p);
    }
    const namespaces = new Map<string, NamespaceInfo>();
    for (const o of this.namespaces?.store.values() ?? []) {
      const n = namespaceFromObject({ kind: 'Namespace', ...o });
      if (n) namespaces.set(n.name, n);
    }
    return { pods, namespaces };
  }

  private synced() {
    if (!this.pods?.synced || !this.namespaces?.synced) return;
    if (this.pending) {
      const p = this.pending;
      this.pending = undefined;
      const snap = this.snapshot();
      this.o.onSnapshot(snap);
      p.resolve(snap);
    } else {
      this.changed(); // a relist may have found changes the broken watch missed
    }
  }

  private changed() {
    if (this.stopped || this.pending || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) this.o.onSnapshot(this.snapshot());
    }, this.o.coalesceMs ?? 50);
  }
}
