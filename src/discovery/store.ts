// The agent's copy of the cluster, fed by one writer (the discovery client) through apply().
// Readers ask by ClusterIP:port (byVip) and by pod IP (podByIp); listeners hear which Services
// changed, so balancers update only those. A "reset" stages a fresh world and the old one keeps
// answering until "synced" swaps them (DESIGN.md: an agent serves from its last state).
import type { WorkloadResolver } from '../telemetry/workload.ts';
import { routeKey, type RouteRecord } from '../routing/route-model.ts';
import { accessKey, type AccessRecord } from '../policy/model.ts';
import { isServerRecord, serverKey, type ServerRecord } from '../policy/server-model.ts';
import { availableForTopology, topologyMode, type Locality } from './topology.ts';
import { DISCOVERY_VERSION, keyOf, type DiscoEndpoint, type DiscoMessage, type DiscoPod, type DiscoService, type DiscoServicePort, type DiscoSlice } from './model.ts';

/** A ready endpoint of one Service port: the address to dial and who is behind it. */
export interface ServiceEndpoint {
  ip: string;
  port: number;
  pod?: string;
  node?: string;
  zone?: string;
}

/** A ClusterIP:port, resolved. `endpoints` are the ready ones (none: those terminating that still serve), deduplicated, in a stable order. */
export interface ServiceTarget {
  service: DiscoService;
  port: DiscoServicePort;
  endpoints: ServiceEndpoint[];
  /** Why some endpoints were left out (a named targetPort no slice resolves, ...); empty when none. */
  problems: string[];
  /**
   * Topology aware routing (topology.ts): the mode used and how many of the ready endpoints it
   * kept, or why the hints are ignored. Absent when no endpoint carries hints.
   */
  topology?: string;
}

interface World {
  services: Map<string, DiscoService>;
  slices: Map<string, DiscoSlice>;
  /** service key -> its slices' keys */
  slicesOf: Map<string, Set<string>>;
  pods: Map<string, DiscoPod>;
  /** ip -> the pods holding it, newest last: an address freed by one pod may already be another's. */
  podsByIp: Map<string, DiscoPod[]>;
  /** "ip:port" -> service key */
  vips: Map<string, string>;
  /** service key -> port -> resolved target, built on demand, dropped when the Service or one of its slices changes */
  targets: Map<string, Map<number, ServiceTarget>>;
  /** "Kind/ns/name" -> route */
  routes: Map<string, RouteRecord>;
  /** parent Service key -> the keys of the routes attached to it */
  routesOf: Map<string, Set<string>>;
  /** "TrafficTarget/ns/name" -> access record */
  access: Map<string, AccessRecord>;
  /** destination "ns/serviceAccount" -> the keys of the TrafficTargets selecting it */
  accessOf: Map<string, Set<string>>;
  /** "Server/ns/name" -> a Linkerd Server's record */
  servers: Map<string, ServerRecord>;
}

const emptyWorld = (): World => ({
  services: new Map(), slices: new Map(), slicesOf: new Map(), pods: new Map(), podsByIp: new Map(), vips: new Map(), targets: new Map(),
  routes: new Map(), routesOf: new Map(), access: new Map(), accessOf: new Map(), servers: new Map(),
});

export interface DiscoveryCounts {
  services: number;
  slices: number;
  endpoints: number;
  pods: number;
  routes: number;
  /** Routes this agent could not read whole, failing closed (route-model.ts parseStreamedRoute). */
  failedClosed: number;
  access: number;
}

export class DiscoveryStore {
  /** This agent's node: a Service with internalTrafficPolicy Local resolves to its endpoints on it (none known: every node's). */
  readonly node: string | undefined;
  /** This agent's node's zone (topology.kubernetes.io/zone), once read: zone hints apply then (setZone). */
  private myZone: string | undefined;
  private live = emptyWorld();
  private staging: World | null = null;
  /** A full world has been received at least once. */
  synced = false;
  /** Wall-clock ms of the last applied message (0: never). */
  lastUpdateAt = 0;
  /** Moves with every change that may change podByIp's or byVip's answers. */
  generation = 0;
  /** Moves only when podByIp's answers may have changed (metrics' label caches follow this one). */
  podGeneration = 0;
  /** Moves when accessFor()'s answers may have changed (the agent recompiles its pods' policies). */
  accessGeneration = 0;
  private listeners = new Set<(serviceKeys: ReadonlySet<string> | 'all') => void>();
  private mirrors = new Set<(m: DiscoMessage | 'drop-staged') => void>();
  /** The version of the last snapshot begun (what replay() says it is). */
  private version = DISCOVERY_VERSION;

  constructor(o: { node?: string; zone?: string } = {}) {
    this.node = o.node;
    this.myZone = o.zone;
  }

  get zone(): string | undefined {
    return this.myZone;
  }

  /**
   * Learns (or forgets) this node's zone: every Service port is resolved again, as zone hints may
   * now apply, and listeners hear 'all'.
   */
  setZone(zone: string | undefined): void {
    if (zone === this.myZone) return;
    this.myZone = zone;
    this.live.targets.clear();
    if (this.staging !== null) this.staging.targets.clear();
    this.generation++;
    this.emit('all');
  }

  /**
   * Hears every message once applied, and 'drop-staged': the agent feeds its proxy workers'
   * replicas with exactly what this store applied (docs/proxy.md, "Workers").
   */
  onApply(fn: (m: DiscoMessage | 'drop-staged') => void): () => void {
    this.mirrors.add(fn);
    return () => this.mirrors.delete(fn);
  }

  /**
   * The messages that rebuild this store in an empty one: the live world, then, while a snapshot
   * is being received, what of it came so far (its synced comes later, as here). A pod that shares
   * an address with another keeps its rank.
   */
  replay(): DiscoMessage[] {
    const out: DiscoMessage[] = [];
    const world = (w: World) => {
      out.push({ type: 'reset', version: this.version });
      for (const service of w.services.values()) out.push({ type: 'service', op: 'set', service });
      for (const slice of w.slices.values()) out.push({ type: 'slice', op: 'set', slice });
      for (const holders of w.podsByIp.values()) for (const pod of holders) out.push({ type: 'pod', op: 'set', pod });
      for (const route of w.routes.values()) out.push({ type: 'route', op: 'set', route });
      for (const access of w.access.values()) out.push({ type: 'access', op: 'set', access });
      for (const access of w.servers.values()) out.push({ type: 'access', op: 'set', access });
    };
    if (this.synced) {
      world(this.live);
      out.push({ type: 'synced' });
    }
    if (this.staging !== null) world(this.staging);
    return out;
  }

  /** Called after changes with the Services whose targets may have changed ('all' after a swap). */
  onChange(fn: (serviceKeys: ReadonlySet<string> | 'all') => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  apply(m: DiscoMessage, now = Date.now()): void {
    try {
      this.applyOnly(m, now);
    } finally {
      // A listener that threw does not undo the change: the mirrors hear it all the same.
      for (const fn of this.mirrors) fn(m);
    }
  }

  private applyOnly(m: DiscoMessage, now: number): void {
    this.lastUpdateAt = now;
    if (m.type === 'reset') {
      this.staging = emptyWorld();
      this.version = m.version;
      return;
    }
    if (m.type === 'synced') {
      if (this.staging !== null) {
        this.live = this.staging;
        this.staging = null;
      }
      this.synced = true;
      this.generation++;
      this.podGeneration++;
      this.accessGeneration++;
      this.emit('all');
      return;
    }
    const w = this.staging ?? this.live;
    const changed = new Set<string>();
    switch (m.type) {
      case 'service':
        if (m.op === 'set') setService(w, m.service);
        else deleteService(w, m.key);
        changed.add(m.op === 'set' ? keyOf(m.service) : m.key);
        break;
      case 'slice': {
        const prev = w.slices.get(m.op === 'set' ? keyOf(m.slice) : m.key);
        if (prev) changed.add(`${prev.namespace}/${prev.service}`);
        if (m.op === 'set') {
          setSlice(w, m.slice);
          changed.add(`${m.slice.namespace}/${m.slice.service}`);
        } else deleteSlice(w, m.key);
        break;
      }
      case 'pod':
        if (m.op === 'set') setPod(w, m.pod);
        else deletePod(w, m.key);
        break;
      case 'route':
        // The Services it was attached to and is attached to now: their policies change.
        for (const k of setRoute(w, m.op === 'set' ? routeKey(m.route) : m.key, m.op === 'set' ? m.route : null)) changed.add(k);
        break;
      case 'access':
        if (m.op === 'set' && isServerRecord(m.access)) w.servers.set(serverKey(m.access), m.access);
        else if (m.op === 'delete' && m.key.startsWith('Server/')) w.servers.delete(m.key);
        else setAccess(w, m.op === 'set' ? accessKey(m.access as AccessRecord) : m.key, m.op === 'set' ? m.access as AccessRecord : null);
        break;
    }
    if (w !== this.live) return; // staged: published at "synced"
    this.generation++;
    if (m.type === 'pod') this.podGeneration++;
    if (m.type === 'access') this.accessGeneration++;
    for (const k of changed) w.targets.delete(k);
    if (changed.size > 0) this.emit(changed);
  }

  /** A snapshot is being received (a reset came, its synced not yet). */
  get staged(): boolean {
    return this.staging !== null;
  }

  /** Forgets a snapshot cut off before its "synced" (the link dropped); the live world stays. */
  dropStaged(): void {
    this.staging = null;
    for (const fn of this.mirrors) fn('drop-staged');
  }

  /** Every listener hears every change; one that throws does not stop the others, and its error is rethrown after them. */
  private emit(keys: ReadonlySet<string> | 'all'): void {
    let first: unknown;
    for (const fn of this.listeners) {
      try {
        fn(keys);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  /** The Service behind a ClusterIP:port, or null (not a ClusterIP we know: go to the original destination). */
  byVip(ip: string, port: number): ServiceTarget | null {
    const w = this.live;
    const key = w.vips.get(`${ip}:${port}`);
    if (key === undefined) return null;
    return this.target(key, port);
  }

  /**
   * The target of a Service port by Service key ("ns/name") and port number: what a route's
   * backendRef resolves to, a headless Service's too (any port of one without ports).
   */
  target(serviceKey: string, port: number): ServiceTarget | null {
    const w = this.live;
    let byPort = w.targets.get(serviceKey);
    const cached = byPort?.get(port);
    if (cached !== undefined) return cached;
    const svc = w.services.get(serviceKey);
    const sp = svc === undefined ? undefined : serviceUsesPort(svc, port);
    if (!svc || !sp) return null;
    const t = resolveTarget(svc, sp, [...(w.slicesOf.get(serviceKey) ?? [])].map((k) => w.slices.get(k)!).filter(Boolean), { node: this.node, zone: this.myZone });
    if (byPort === undefined) w.targets.set(serviceKey, (byPort = new Map()));
    byPort.set(port, t);
    return t;
  }

  podByIp(ip: string): DiscoPod | undefined {
    return this.live.podsByIp.get(ip)?.at(-1);
  }

  service(key: string): DiscoService | undefined {
    return this.live.services.get(key);
  }

  services(): DiscoService[] {
    return [...this.live.services.values()];
  }

  /** The routes whose parents include this Service (any port), in no particular order. */
  routesFor(serviceKey: string): RouteRecord[] {
    const keys = this.live.routesOf.get(serviceKey);
    if (keys === undefined) return [];
    const out: RouteRecord[] = [];
    for (const k of keys) {
      const r = this.live.routes.get(k);
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  /** The TrafficTargets whose destination is this ServiceAccount, by name. */
  accessFor(namespace: string, serviceAccount: string): AccessRecord[] {
    const keys = this.live.accessOf.get(`${namespace}/${serviceAccount}`);
    if (keys === undefined) return [];
    const out: AccessRecord[] = [];
    for (const k of keys) {
      const r = this.live.access.get(k);
      if (r !== undefined) out.push(r);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The Linkerd Servers of a namespace (the agent matches their podSelector against its pods), by name. */
  serversIn(namespace: string): ServerRecord[] {
    const out: ServerRecord[] = [];
    for (const s of this.live.servers.values()) if (s.namespace === namespace) out.push(s);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  counts(): DiscoveryCounts {
    const w = this.live;
    let endpoints = 0;
    for (const s of w.slices.values()) endpoints += s.endpoints.length;
    let failedClosed = 0;
    for (const r of w.routes.values()) if (r.refused !== undefined) failedClosed++;
    return { services: w.services.size, slices: w.slices.size, endpoints, pods: w.pods.size, routes: w.routes.size, failedClosed, access: w.access.size + w.servers.size };
  }
}

/**
 * The Service port a request to `port` uses: the one declared, or for a headless Service that
 * declares none, the port itself (its pods listen on the port clients dial, as DNS gives them
 * the pod addresses). undefined: the Service has no such port.
 */
export function serviceUsesPort(svc: DiscoService, port: number): DiscoServicePort | undefined {
  const sp = svc.ports.find((p) => p.port === port);
  if (sp !== undefined || svc.headless !== true || svc.ports.length > 0) return sp;
  return { name: '', port, targetPort: port };
}

/**
 * Joins a Service port with its slices: the slice ports named like the Service port give the
 * numbers (a headless Service without ports: every slice's endpoints, at the port asked). `me`:
 * the asking agent's node (internalTrafficPolicy Local, node hints) and zone (zone hints);
 * topology hints narrow the ready endpoints as kube-proxy does (topology.ts).
 */
export function resolveTarget(svc: DiscoService, sp: DiscoServicePort, slices: DiscoSlice[], me: Locality = {}): ServiceTarget {
  const node = me.node;
  // Local: this node's endpoints only, and none rather than another node's (kube-proxy drops then).
  const local = svc.nodeLocal === true && node !== undefined;
  const seen = { ready: new Set<string>(), terminating: new Set<string>() };
  const ready: Array<[DiscoEndpoint, number]> = [];
  const terminating: Array<[DiscoEndpoint, number]> = [];
  let matched = false;
  // Its slices carry no ports, or whatever a hand-made one says: the port asked is the endpoints'.
  const portless = svc.headless === true && svc.ports.length === 0 ? { name: '', port: sp.port } : undefined;
  for (const s of slices) {
    const p = portless ?? s.ports.find((x) => x.name === sp.name);
    if (p === undefined) continue;
    matched = true;
    for (const e of s.endpoints) {
      if ((!e.ready && e.terminating !== true) || (local && e.node !== node)) continue;
      const k = `${e.ip}:${p.port}`;
      const set = e.ready ? seen.ready : seen.terminating;
      if (set.has(k)) continue; // an address may sit in two slices while the controller moves it
      set.add(k);
      (e.ready ? ready : terminating).push([e, p.port]);
    }
  }
  // Topology hints apply to a Cluster policy's endpoints only, as in kube-proxy (Local is already this node's).
  const decision = local ? { mode: null } : topologyMode(ready.map(([e]) => e), me);
  const chosen = ready.filter(([e]) => availableForTopology(e, decision.mode, me));
  // The ready endpoints; when there is none, those terminating that still serve (kube-proxy's
  // fallback, KEP-1669: a rollout's last old pod draining still answers the Service), whatever
  // their hints: with no ready endpoint anywhere there is no topology to prefer.
  const endpoints = (chosen.length > 0 ? chosen : terminating).map(([e, port]) => endpointOf(e, port));
  endpoints.sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
  const problems: string[] = [];
  if (!matched && slices.length > 0) {
    problems.push(typeof sp.targetPort === 'string'
      ? `no endpoint declares the container port named "${sp.targetPort}" (targetPort of port ${sp.port})`
      : `no EndpointSlice has a port named "${sp.name}" (port ${sp.port})`);
  } else if (local && endpoints.length === 0 && slices.some((s) => s.endpoints.some((e) => e.ready || e.terminating === true))) {
    problems.push(`internalTrafficPolicy Local: no endpoint on this node (${node})`);
  }
  const out: ServiceTarget = { service: svc, port: sp, endpoints, problems };
  if (decision.mode !== null) {
    out.topology = `${decision.mode}: ${chosen.length} of ${ready.length} ready endpoints, those hinted for ${decision.mode === 'PreferSameNode' ? `node ${me.node}` : `zone ${me.zone}`}`;
  } else if (decision.ignored !== undefined) out.topology = decision.ignored;
  return out;
}

function endpointOf(e: DiscoEndpoint, port: number): ServiceEndpoint {
  const out: ServiceEndpoint = { ip: e.ip, port };
  if (e.pod !== undefined) out.pod = e.pod;
  if (e.node !== undefined) out.node = e.node;
  if (e.zone !== undefined) out.zone = e.zone;
  return out;
}

function setService(w: World, s: DiscoService): void {
  const k = keyOf(s);
  const prev = w.services.get(k);
  if (prev) for (const ip of prev.clusterIPs) for (const p of prev.ports) if (w.vips.get(`${ip}:${p.port}`) === k) w.vips.delete(`${ip}:${p.port}`);
  w.services.set(k, s);
  for (const ip of s.clusterIPs) for (const p of s.ports) w.vips.set(`${ip}:${p.port}`, k);
}

function deleteService(w: World, k: string): void {
  const prev = w.services.get(k);
  if (!prev) return;
  for (const ip of prev.clusterIPs) for (const p of prev.ports) if (w.vips.get(`${ip}:${p.port}`) === k) w.vips.delete(`${ip}:${p.port}`);
  w.services.delete(k);
}

function setSlice(w: World, s: DiscoSlice): void {
  const k = keyOf(s);
  deleteSlice(w, k);
  w.slices.set(k, s);
  const sk = `${s.namespace}/${s.service}`;
  let set = w.slicesOf.get(sk);
  if (!set) w.slicesOf.set(sk, (set = new Set()));
  set.add(k);
}

function deleteSlice(w: World, k: string): void {
  const prev = w.slices.get(k);
  if (!prev) return;
  w.slices.delete(k);
  const sk = `${prev.namespace}/${prev.service}`;
  const set = w.slicesOf.get(sk);
  set?.delete(k);
  if (set?.size === 0) w.slicesOf.delete(sk);
}

/** Replaces (or with null deletes) a route; returns the parent Service keys it touched, before and after. */
function setRoute(w: World, key: string, r: RouteRecord | null): Set<string> {
  const touched = new Set<string>();
  const prev = w.routes.get(key);
  if (prev !== undefined) {
    for (const p of prev.parents) {
      const sk = `${p.namespace}/${p.name}`;
      touched.add(sk);
      const set = w.routesOf.get(sk);
      set?.delete(key);
      if (set?.size === 0) w.routesOf.delete(sk);
    }
    w.routes.delete(key);
  }
  if (r !== null) {
    w.routes.set(key, r);
    for (const p of r.parents) {
      const sk = `${p.namespace}/${p.name}`;
      touched.add(sk);
      let set = w.routesOf.get(sk);
      if (!set) w.routesOf.set(sk, (set = new Set()));
      set.add(key);
    }
  }
  return touched;
}

/** Replaces (or with null deletes) a TrafficTarget's record, indexed by its destination ServiceAccount. */
function setAccess(w: World, key: string, r: AccessRecord | null): void {
  const prev = w.access.get(key);
  if (prev !== undefined) {
    const dk = `${prev.destination.namespace}/${prev.destination.serviceAccount}`;
    const set = w.accessOf.get(dk);
    set?.delete(key);
    if (set?.size === 0) w.accessOf.delete(dk);
    w.access.delete(key);
  }
  if (r === null) return;
  w.access.set(key, r);
  const dk = `${r.destination.namespace}/${r.destination.serviceAccount}`;
  let set = w.accessOf.get(dk);
  if (!set) w.accessOf.set(dk, (set = new Set()));
  set.add(key);
}

function setPod(w: World, p: DiscoPod): void {
  const k = keyOf(p);
  const prev = w.pods.get(k);
  w.pods.set(k, p);
  const holders = w.podsByIp.get(p.ip);
  const at = prev !== undefined && prev.ip === p.ip ? holders?.indexOf(prev) ?? -1 : -1;
  if (at >= 0) {
    holders![at] = p; // an update in place keeps its rank
    return;
  }
  if (prev !== undefined) unindexPod(w, prev);
  if (holders === undefined) w.podsByIp.set(p.ip, [p]);
  else holders.push(p);
}

function deletePod(w: World, k: string): void {
  const prev = w.pods.get(k);
  if (!prev) return;
  w.pods.delete(k);
  unindexPod(w, prev);
}

function unindexPod(w: World, p: DiscoPod): void {
  const holders = w.podsByIp.get(p.ip);
  if (holders === undefined) return;
  const i = holders.indexOf(p);
  if (i >= 0) holders.splice(i, 1);
  if (holders.length === 0) w.podsByIp.delete(p.ip);
}

/** Pods of every node as telemetry names them, for the workload labels of addresses the node does not own. */
export function storeWorkloads(store: DiscoveryStore): WorkloadResolver {
  return {
    byIp(ip) {
      const p = store.podByIp(ip);
      return p ? { namespace: p.namespace, pod: p.name, kind: p.kind, name: p.owner } : null;
    },
    generation: () => store.podGeneration,
  };
}
