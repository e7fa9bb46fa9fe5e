// The mesh's own kinds a discovery source hands on, besides Services, slices and pods: route
// objects to the route index (routing/route-index.ts) and SMI access objects to the access index
// (policy/access-index.ts). HTTPRouteGroup feeds both: TrafficSplits and TrafficTargets read it;
// so does HTTPRoute: routes parented by Services, Linkerd's AuthorizationPolicies by Servers.
import { routeObjectKind, type RouteIndex, type RouteObjectKind } from '../routing/route-index.ts';
import { accessObjectKind, type AccessIndex, type AccessObjectKind } from '../policy/access-index.ts';

type Obj = Record<string, any>;

export type MeshObjectKind = RouteObjectKind | AccessObjectKind;

const ROUTE_KINDS = new Set<MeshObjectKind>(['HTTPRoute', 'GRPCRoute', 'TrafficSplit', 'HTTPRouteGroup']);
const ACCESS_KINDS = new Set<MeshObjectKind>(['TrafficTarget', 'HTTPRouteGroup', 'TCPRoute', 'Server', 'AuthorizationPolicy', 'ServerAuthorization', 'MeshTLSAuthentication', 'NetworkAuthentication', 'HTTPRoute']);
const LINKERD_GROUP = 'policy.linkerd.io';
/** Linkerd's own HTTPRoute (policy.linkerd.io) parents Servers only: inbound policy, not routing. */
const isLinkerdGroup = (o: Obj): boolean => typeof o?.apiVersion === 'string' && o.apiVersion.startsWith(`${LINKERD_GROUP}/`);
const isRouteKind = (k: MeshObjectKind): k is RouteObjectKind => ROUTE_KINDS.has(k);
const isAccessKind = (k: MeshObjectKind): k is AccessObjectKind => ACCESS_KINDS.has(k);

export function meshObjectKind(o: Obj): MeshObjectKind | null {
  return routeObjectKind(o) ?? accessObjectKind(o);
}

/** What the sources call; hold() while listing, release() once every kind is in. */
export class MeshObjects {
  readonly routes: RouteIndex | undefined;
  readonly access: AccessIndex | undefined;

  constructor(routes?: RouteIndex, access?: AccessIndex) {
    this.routes = routes;
    this.access = access;
  }

  hold(): void {
    this.routes?.hold();
    this.access?.hold();
  }

  release(): void {
    this.routes?.release();
    this.access?.release();
  }

  /** False when no index reads this object's kind and apiVersion. */
  upsert(o: Obj): boolean {
    const r = routeObjectKind(o) !== null && !isLinkerdGroup(o) && this.routes !== undefined ? this.routes.upsert(o) : false;
    const a = accessObjectKind(o) !== null && this.access !== undefined ? this.access.upsert(o) : false;
    return r || a;
  }

  /** `group`: the object's API group, when the kind is served by two (HTTPRoute: policy.linkerd.io's are the access index's alone). */
  remove(kind: MeshObjectKind, namespace: string, name: string, group?: string): void {
    if (isRouteKind(kind) && group !== LINKERD_GROUP) this.routes?.remove(kind, namespace, name);
    if (isAccessKind(kind)) this.access?.remove(kind, namespace, name, group);
  }

  /** `group`: the list was of that API group only, so another group's objects of the kind stay. */
  replaceAll(kind: MeshObjectKind, items: Iterable<Obj>, group?: string): void {
    const objs = [...items];
    if (isRouteKind(kind) && group !== LINKERD_GROUP) this.routes?.replaceAll(kind, objs);
    if (isAccessKind(kind)) this.access?.replaceAll(kind, objs, group);
  }
}
