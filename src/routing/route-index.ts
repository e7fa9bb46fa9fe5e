// The controller's routes: HTTPRoute, GRPCRoute, TrafficSplit and HTTPRouteGroup objects from
// the cluster or --resources files, converted once (gateway-api.ts, smi.ts) into route records
// the discovery hub streams to the agents, with each route's status (Accepted, ResolvedRefs)
// for the source to write back. A route whose new version is invalid keeps its last good record
// on the agents and gets Accepted=False with the reason, in its status and the log. A route is
// converted again when what it depends on changes: a Service it names (parent or backend)
// appearing, going or changing its ports, an HTTPRouteGroup a TrafficSplit reads, or (for a
// TrafficSplit) a Gateway API route taking over its Service.
import { KindStore, objKey } from '../k8s/kind-store.ts';
import { ChangeLog } from '../util/change-log.ts';
import { Dependents } from '../util/dependents.ts';
import { HeldConversions } from '../util/held-conversions.ts';
import { CONTROLLER_NAME, isServerRoute, routeFromGateway, type Condition, type ParentStatus, type RouteConversion, type ServiceInfo } from './gateway-api.ts';
import type { Addressing } from '../discovery/model.ts';
import { routeFromTrafficSplit, type SplitConversion } from './smi.ts';
import type { RouteKind, RouteRecord } from './route-model.ts';
import { showsStatus } from './route-status.ts';

type Obj = Record<string, any>;

export type RouteObjectKind = RouteKind | 'HTTPRouteGroup';

/** apiVersions read per kind (others are refused with a message naming the one to use). */
export const ROUTE_API_VERSIONS: Record<RouteObjectKind, string[]> = {
  HTTPRoute: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
  GRPCRoute: ['gateway.networking.k8s.io/v1'],
  TrafficSplit: ['split.smi-spec.io/v1alpha4'],
  HTTPRouteGroup: ['specs.smi-spec.io/v1alpha4'],
};

export function routeObjectKind(o: Obj): RouteObjectKind | null {
  const k = o?.kind;
  return k === 'HTTPRoute' || k === 'GRPCRoute' || k === 'TrafficSplit' || k === 'HTTPRouteGroup' ? k : null;
}

/** The status the controller wants an object to have: Gateway routes per parent, a TrafficSplit as conditions. */
export interface DesiredStatus {
  kind: RouteKind;
  namespace: string;
  name: string;
  /** Gateway API routes: our status.parents entries (controllerName set). */
  parents?: Array<ParentStatus & { controllerName: string }>;
  /** TrafficSplit: status.conditions. */
  conditions?: Condition[];
  /** metadata.generation the conditions were computed from. */
  generation: number;
}

export interface RouteSink {
  put(key: string, line: string): void;
  remove(key: string): void;
}

export interface RouteIndexOptions {
  sink: RouteSink;
  log: (level: 'info' | 'warn', msg: string) => void;
  /** Called when an object's wanted status changed (the API-server source writes it back). */
  onStatus?: (want: DesiredStatus, obj: Obj) => void;
}

export interface RouteState {
  key: string;
  accepted: boolean;
  /** Serving: the agents have a record of it (this version's, or the last good one). */
  serving: boolean;
  conditions: Condition[];
}

export class RouteIndex {
  private readonly o: RouteIndexOptions;
  /** Services by ns/name -> ports and addressing. */
  private readonly services = new Map<string, ServiceInfo>();
  /** Route objects and HTTPRouteGroups by Kind/ns/name. */
  private readonly objects: KindStore<RouteObjectKind>;
  /** Route key -> its last good record (what the agents have). */
  private readonly good = new Map<string, RouteRecord>();
  /** Route key -> the line last put into the sink. */
  private readonly sent = new Map<string, string>();
  /** Route key -> its current conditions (flattened), for state() and change detection. */
  private readonly states = new Map<string, RouteState>();
  private readonly statusSent = new Map<string, string>();
  /** Route key -> the object's status it was last asked again over (showsOther). */
  private readonly askedAgainFor = new Map<string, string>();
  private readonly logged: ChangeLog;
  /** Service or HTTPRouteGroup key ("Service/ns/name", "HTTPRouteGroup/ns/name") -> routes that read it. */
  private readonly dependents = new Dependents();

  private readonly holding = new HeldConversions();

  constructor(o: RouteIndexOptions) {
    this.o = o;
    this.logged = new ChangeLog((msg) => o.log('warn', `routes: ${msg}`));
    this.objects = new KindStore({
      kindOf: routeObjectKind,
      versions: ROUTE_API_VERSIONS,
      logged: this.logged,
      changed: (kind, key) => (kind === 'HTTPRouteGroup' ? this.reconvertDependents(key) : this.convert(key)),
    });
  }

  /** While held (a source still listing), conversions wait: a route listed before its Service is not "not found". */
  hold(): void {
    this.holding.hold();
  }

  /** Converts everything that waited; call once every kind has been listed. */
  release(): void {
    this.holding.release((k) => this.convert(k));
  }

  // ---- inputs ----

  /** A Service's ports (null: deleted) and addressing (a backend naming an ExternalName Service is unresolved). */
  setService(key: string, ports: number[] | null, addressing: Addressing = 'clusterIP'): void {
    const prev = this.services.get(key);
    if (ports === null) {
      if (prev === undefined) return;
      this.services.delete(key);
    } else {
      if (prev !== undefined && (prev.addressing ?? 'clusterIP') === addressing && prev.ports.length === ports.length && prev.ports.every((p, i) => p === ports[i])) return;
      this.services.set(key, addressing === 'clusterIP' ? { ports } : { ports, addressing });
    }
    this.reconvertDependents(`Service/${key}`);
  }

  /** A route object or HTTPRouteGroup added or changed. False (and logged) for a kind or apiVersion not read. */
  upsert(o: Obj): boolean {
    return this.objects.upsert(o);
  }

  remove(kind: RouteObjectKind, namespace: string, name: string): void {
    this.objects.remove(kind, namespace, name);
  }

  /** After a (re)list of one kind: upserts each, removes what is gone. */
  replaceAll(kind: RouteObjectKind, objs: Iterable<Obj>): void {
    this.objects.replaceAll(kind, objs);
  }

  // ---- outputs ----

  state(): { routes: number; serving: number; notAccepted: RouteState[] } {
    const all = [...this.states.values()];
    return { routes: all.length, serving: this.good.size, notAccepted: all.filter((s) => !s.accepted).slice(0, 50) };
  }

  /** The status the controller wants an object to have, or undefined (for the writer's retries). */
  desired(kind: RouteKind, namespace: string, name: string): DesiredStatus | undefined {
    const key = objKey(kind, namespace, name);
    const o = this.objects.get(key);
    return o === undefined || !this.lastConv.has(key) ? undefined : this.wanted(key, o);
  }

  // ---- conversion ----

  private convert(key: string): void {
    if (this.holding.defer(key)) return;
    const [kind, namespace, name] = key.split('/') as [RouteKind, string, string];
    const o = this.objects.get(key);
    if (o === undefined) {
      this.forget(key);
      return;
    }
    const lookup = (ns: string, n: string) => this.services.get(`${ns}/${n}`);
    const reads: string[] = [];
    let conv: RouteConversion | SplitConversion;
    if (kind === 'TrafficSplit') {
      conv = routeFromTrafficSplit(o, lookup, (ns, n) => this.objects.get(objKey('HTTPRouteGroup', ns, n)));
      for (const g of (conv as SplitConversion).groups) reads.push(`HTTPRouteGroup/${g}`);
      if (typeof o.spec?.service === 'string') reads.push(`Service/${namespace}/${o.spec.service}`);
    } else {
      conv = routeFromGateway(o, lookup);
      for (const p of o.spec?.parentRefs ?? []) if (typeof p?.name === 'string') reads.push(`Service/${p.namespace ?? namespace}/${p.name}`);
    }
    for (const r of o.spec?.rules ?? []) for (const b of r?.backendRefs ?? []) if (typeof b?.name === 'string') reads.push(`Service/${b.namespace ?? namespace}/${b.name}`);
    for (const b of o.spec?.backends ?? []) if (typeof b?.service === 'string') reads.push(`Service/${namespace}/${b.service}`);
    this.dependents.track(key, reads);

    const before = this.good.get(key);
    if (conv.record !== null) {
      this.good.set(key, conv.record);
      const line = JSON.stringify({ type: 'route', op: 'set', route: conv.record });
      if (this.sent.get(key) !== line) {
        this.sent.set(key, line);
        this.o.sink.put(key, line);
      }
    }
    if (conv.record === null && before !== undefined) conv.problems.push(`${kind} ${namespace}/${name}: the agents keep its last good version`);
    if (kind !== 'TrafficSplit' && conv.record === null && isServerRoute(o.spec?.parentRefs)) {
      // Linkerd inbound policy's (the access index's): no route (one that was a Service's is withdrawn), no status, no state.
      // Our entries for the Service parents it had would otherwise stay on the object, saying Accepted.
      if (this.statusSent.has(key)) this.o.onStatus?.({ kind, namespace, name, parents: [], generation: generationOf(o) }, o);
      this.forget(key);
      return;
    }
    this.lastConv.set(key, conv);
    this.updateState(key, o);
    // A Gateway API route joining or leaving a Service decides whether its TrafficSplits apply.
    if (kind !== 'TrafficSplit') {
      this.recheckSplits(before);
      if (conv.record !== before) this.recheckSplits(conv.record ?? undefined);
    }
  }

  private forget(key: string): void {
    const prev = this.good.get(key);
    this.good.delete(key);
    this.states.delete(key);
    this.statusSent.delete(key);
    this.askedAgainFor.delete(key);
    this.logged.forget(key);
    this.lastConv.delete(key);
    this.dependents.track(key, []);
    if (this.sent.delete(key)) this.o.sink.remove(key);
    if (!key.startsWith('TrafficSplit/')) this.recheckSplits(prev);
  }

  /** TrafficSplits on the parents of a Gateway route are checked again (overridden or not). */
  private recheckSplits(r: RouteRecord | undefined): void {
    if (r === undefined) return;
    for (const p of r.parents) {
      for (const key of this.dependents.readersOf(`Service/${p.namespace}/${p.name}`)) {
        if (!key.startsWith('TrafficSplit/')) continue;
        const o = this.objects.get(key);
        if (o !== undefined && this.lastConv.has(key)) this.updateState(key, o);
      }
    }
  }

  /** The Gateway API route (in the Service's namespace) that takes a TrafficSplit's Service, if any. */
  private overriddenBy(namespace: string, service: string): string | null {
    for (const [key, r] of this.good) {
      if (key.startsWith('TrafficSplit/') || r.namespace !== namespace) continue;
      if (r.parents.some((p) => p.namespace === namespace && p.name === service)) return `${r.kind} ${r.namespace}/${r.name}`;
    }
    return null;
  }

  private lastConv = new Map<string, RouteConversion | SplitConversion>();

  private updateState(key: string, o: Obj): void {
    const want = this.wanted(key, o);
    const overridden = want.conditions?.find((c) => c.reason === 'Overridden');
    this.logged.problems(key, [...this.lastConv.get(key)!.problems, ...(overridden ? [`TrafficSplit ${want.namespace}/${want.name} is overridden: ${overridden.message}`] : [])]);
    const conditions = want.parents ? want.parents.flatMap((p) => p.conditions) : want.conditions!;
    const accepted = conditions.some((c) => c.type === 'Accepted' && c.status === 'True');
    this.states.set(key, { key, accepted, serving: this.good.has(key), conditions });
    const text = JSON.stringify(want);
    if (this.statusSent.get(key) === text && !this.showsOther(key, o, want)) return;
    this.statusSent.set(key, text);
    this.o.onStatus?.(want, o);
  }

  /**
   * The object shows a status other than the one asked for: a write the writer skipped, judging
   * by an object from before its last write (a parent Service gone and back before the watch
   * brought that write), or one overwritten since. Asked again once per status seen, so a status
   * the API server keeps in another form is not rewritten in a loop.
   */
  private showsOther(key: string, o: Obj, want: DesiredStatus): boolean {
    if (o.status === undefined || showsStatus(o, want)) return false;
    const seen = JSON.stringify(o.status);
    if (this.askedAgainFor.get(key) === seen) return false;
    this.askedAgainFor.set(key, seen);
    return true;
  }

  private wanted(key: string, o: Obj): DesiredStatus {
    const [kind, namespace, name] = key.split('/') as [RouteKind, string, string];
    const conv = this.lastConv.get(key)!;
    const generation = generationOf(o);
    if (kind === 'TrafficSplit') {
      let conditions = (conv as SplitConversion).conditions;
      const by = conv.record !== null && typeof o.spec?.service === 'string' ? this.overriddenBy(namespace, o.spec.service) : null;
      if (by !== null) {
        const msg = `${by} is attached to Service ${namespace}/${o.spec.service}; Gateway API routes win over a TrafficSplit, so this split applies to no client`;
        conditions = [{ type: 'Accepted', status: 'False', reason: 'Overridden', message: msg }, ...conditions.filter((c) => c.type !== 'Accepted')];
      }
      return { kind, namespace, name, conditions, generation };
    }
    return { kind, namespace, name, parents: conv.parents.map((p) => ({ ...p, controllerName: CONTROLLER_NAME })), generation };
  }

  private reconvertDependents(dep: string): void {
    if (this.holding.held && dep.startsWith('HTTPRouteGroup/')) {
      this.holding.deferPrefixed(this.objects.keys(), `TrafficSplit/${dep.split('/')[1]}/`);
      return;
    }
    for (const key of this.dependents.readersOf(dep)) this.convert(key);
  }

}

const generationOf = (o: Obj): number => (Number.isInteger(o.metadata?.generation) ? o.metadata.generation : 1);
