// The EndpointSlice controller stand-in: keeps every selector Service's EndpointSlices in step
// with its pods (and the pods' nodes' zones) in the stand-in API server, like
// kube-controller-manager's. The decisions are reconcileSlices() (pure); this is the wiring.
import type { KubeObject } from './api-resources.ts';
import type { ChangeEvent, SimApiServer } from './apiserver.ts';
import { Coalescer } from '../util/coalesce.ts';
import { MANAGED_BY, MANAGED_BY_LABEL, reconcileSlices, SERVICE_NAME_LABEL } from './endpointslices.ts';
import { mapSelector } from './selectors.ts';

const ZONE_LABEL = 'topology.kubernetes.io/zone';

export class EndpointSliceController {
  readonly #api: SimApiServer;
  readonly #dirty = new Set<string>(); // ns/name of Services
  readonly #queue: Coalescer;
  readonly #unsubscribe: (() => void)[] = [];

  constructor(api: SimApiServer, onError: (e: Error) => void) {
    this.#api = api;
    this.#queue = new Coalescer(() => this.#reconcile(), onError);
    this.#unsubscribe.push(
      api.subscribe('Service', (e) => this.#mark(`${e.object.metadata.namespace}/${e.object.metadata.name}`)),
      api.subscribe('Pod', (e) => this.#podChanged(e)),
      api.subscribe('Node', (e) => {
        if (e.prev?.metadata.labels?.[ZONE_LABEL] !== e.object.metadata.labels?.[ZONE_LABEL]) this.#markAll();
      }),
      // Someone else's write to a managed slice (or its removal) is undone, as upstream does.
      api.subscribe('EndpointSlice', (e) => {
        const l = e.object.metadata.labels ?? {};
        if (l[MANAGED_BY_LABEL] === MANAGED_BY && l[SERVICE_NAME_LABEL]) this.#mark(`${e.object.metadata.namespace}/${l[SERVICE_NAME_LABEL]}`);
      }),
    );
    this.#markAll();
  }

  #mark(key: string): void {
    this.#dirty.add(key);
    this.#queue.poke();
  }

  #markAll(): void {
    for (const s of this.#api.list('Service')) this.#mark(`${s.metadata.namespace}/${s.metadata.name}`);
  }

  /** The Services that selected the pod before or select it now. */
  #podChanged(e: ChangeEvent): void {
    const ns = e.object.metadata.namespace;
    for (const svc of this.#api.list('Service', { namespace: ns })) {
      const sel = mapSelector(svc.spec?.selector);
      if (!sel) continue;
      const hit = (p: KubeObject | undefined) => p !== undefined && sel((k) => p.metadata.labels?.[k]);
      if (hit(e.object) || hit(e.prev)) this.#mark(`${ns}/${svc.metadata.name}`);
    }
  }

  #reconcile(): void {
    const keys = [...this.#dirty];
    this.#dirty.clear();
    const zones = new Map(this.#api.list('Node').map((n) => [n.metadata.name, n.metadata.labels?.[ZONE_LABEL]]));
    // Zones of the nodes that run pods (not the control plane's): topology-mode Auto hints only when each has an endpoint.
    const allZones = new Set(this.#api.list('Node').filter((n) => n.metadata.labels?.['node-role.kubernetes.io/control-plane'] === undefined).map((n) => n.metadata.labels?.[ZONE_LABEL]).filter((z): z is string => typeof z === 'string' && z !== ''));
    for (const key of keys) {
      const [ns, name] = key.split('/');
      const owned = this.#api.list('EndpointSlice', { namespace: ns, labelSelector: `${SERVICE_NAME_LABEL}=${name},${MANAGED_BY_LABEL}=${MANAGED_BY}` });
      const svc = this.#api.get('Service', ns, name);
      if (!svc) {
        // Garbage collection of the Service's slices (ownerReferences), done here.
        for (const s of owned) this.#api.delete('EndpointSlice', ns, s.metadata.name);
        continue;
      }
      const changes = reconcileSlices(svc, this.#api.list('Pod', { namespace: ns }), (n) => zones.get(n), owned, undefined, allZones);
      for (const s of changes.delete) this.#api.delete('EndpointSlice', ns, s.metadata.name);
      for (const s of changes.update) this.#api.apply(s);
      for (const s of changes.create) this.#api.create(s);
    }
    // Our own writes marked these Services again; they are in step now.
    for (const k of keys) this.#dirty.delete(k);
  }

  idle(): Promise<void> {
    return this.#queue.idle();
  }

  async stop(): Promise<void> {
    for (const u of this.#unsubscribe) u();
    await this.#queue.stop();
  }
}
