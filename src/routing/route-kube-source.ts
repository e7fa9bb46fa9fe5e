// The routes' kinds from the API server, for the controller's discovery source
// (discovery/kube-source.ts): HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1), SMI
// TrafficSplit (split.smi-spec.io/v1alpha4) and HTTPRouteGroup (specs.smi-spec.io/v1alpha4),
// and SMI access control's TrafficTarget (access.smi-spec.io/v1alpha3) and TCPRoute
// (specs.smi-spec.io/v1alpha4), each listed and watched once with the same reflector, into the
// route and access indexes (discovery/mesh-objects.ts). Their CRDs are
// not ours to install: a kind whose CRD is missing (404), or a route kind the controller may not
// read (403: a ClusterRole from before the kind was read), counts as listed and empty, is said
// once, and is watched for, so routes work once the CRDs are installed or the grant applied. A
// 403 on an access kind (ACCESS_KINDS) is an error: empty, it would open what it restricts. The status API writes
// the routes' status through the status subresource (route-status.ts).
import { CustomObjectsApi, type KubeConfig, type Watch } from '@kubernetes/client-node';
import type { BackoffOptions } from '../k8s/watch-errors.ts';
import { statusOf } from '../k8s/watch-errors.ts';
import { expiredListMessage, listPaged, type Page } from '../k8s/pager.ts';
import { Reflector } from '../k8s/watch-reflector.ts';
import type { MeshObjectKind, MeshObjects } from '../discovery/mesh-objects.ts';
import { ROUTE_PLURALS, type StatusApi } from './route-status.ts';
import { ROUTING_ANNOTATION_PREFIXES } from '../discovery/model.ts';

type Obj = Record<string, any>;

export const ROUTE_KINDS: Array<{ kind: MeshObjectKind; group: string; version: string; plural: string; crd: string }> = [
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', crd: "Gateway API's (standard channel)" },
  { kind: 'GRPCRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes', crd: "Gateway API's (standard channel)" },
  { kind: 'TrafficSplit', group: 'split.smi-spec.io', version: 'v1alpha4', plural: 'trafficsplits', crd: "SMI's" },
  { kind: 'HTTPRouteGroup', group: 'specs.smi-spec.io', version: 'v1alpha4', plural: 'httproutegroups', crd: "SMI's" },
  { kind: 'TCPRoute', group: 'specs.smi-spec.io', version: 'v1alpha4', plural: 'tcproutes', crd: "SMI's" },
  { kind: 'TrafficTarget', group: 'access.smi-spec.io', version: 'v1alpha3', plural: 'traffictargets', crd: "SMI's" },
];

/**
 * The kinds that restrict who may connect (TrafficTarget and the route groups its rules name).
 * A 403 on them is not "none": listed as empty, it would drop every restriction they make, so
 * the list fails and is retried, keeping what was last read (discovery waits for it at start).
 */
const ACCESS_KINDS: ReadonlySet<MeshObjectKind> = new Set(['TrafficTarget', 'HTTPRouteGroup', 'TCPRoute']);

export const ROUTES_RBAC_HINT = "the controller's ServiceAccount lacks list/watch on httproutes and grpcroutes (gateway.networking.k8s.io), trafficsplits (split.smi-spec.io), httproutegroups and tcproutes (specs.smi-spec.io) or traffictargets (access.smi-spec.io); apply the ClusterRole from mesh-agent install";

/** What conversion and the status writer read of a route object: the rest is dropped. */
export function slimRoute(o: Obj, kind: MeshObjectKind, apiVersion: string): Obj {
  const md: Obj = o?.metadata ?? {};
  const ann = Object.entries((md.annotations ?? {}) as Obj).filter(([k]) => ROUTING_ANNOTATION_PREFIXES.some((p) => k.startsWith(p)));
  const meta: Obj = { name: md.name, namespace: md.namespace, resourceVersion: md.resourceVersion, generation: md.generation, creationTimestamp: md.creationTimestamp };
  if (ann.length > 0) meta.annotations = Object.fromEntries(ann);
  // Lists leave kind and apiVersion out of their items.
  const out: Obj = { apiVersion: o?.apiVersion ?? apiVersion, kind: o?.kind ?? kind, metadata: meta, spec: o?.spec };
  if (kind === 'HTTPRouteGroup' && o?.matches !== undefined) out.matches = o.matches; // v1alpha2 kept matches at the top
  if (o?.status !== undefined) out.status = o.status;
  return out;
}

export interface RouteReflectorsOptions {
  kc: KubeConfig;
  watch: Watch;
  server: string;
  routes: MeshObjects;
  watchdogMs: number;
  backoff: BackoffOptions;
  pageSize: number;
  onSynced: () => void;
  onError: (e: Error) => void;
  log: (msg: string) => void;
}

/** One reflector per route kind, feeding the route index. */
export function routeReflectors(o: RouteReflectorsOptions): Reflector[] {
  const api = o.kc.makeApiClient(CustomObjectsApi);
  /** Kinds listed as empty because the API server refused them: no CRD (404), or no grant (403). */
  const absent = new Map<MeshObjectKind, 403 | 404>();
  return ROUTE_KINDS.map((d) => {
    const apiVersion = `${d.group}/${d.version}`;
    const keep = (x: Obj) => slimRoute(x, d.kind, apiVersion);
    const r: Reflector = new Reflector({
      name: d.plural,
      path: `/apis/${d.group}/${d.version}/${d.plural}`,
      list: async (signal) => {
        let listed: { items: Obj[]; resourceVersion: string };
        try {
          listed = await listPaged({
            page: async (limit, cont) => (await api.listClusterCustomObject({ group: d.group, version: d.version, plural: d.plural, limit, _continue: cont })) as Page,
            limit: o.pageSize,
            keep,
            onExpired: (n) => o.log(expiredListMessage(d.plural, n)),
            signal,
          });
        } catch (e) {
          const status = statusOf(e);
          if (status !== 404 && !(status === 403 && !ACCESS_KINDS.has(d.kind))) throw e;
          // No CRD, or a ClusterRole from before this kind was read: listed and empty, so the rest
          // of discovery is not held back; the watch from "now" (retried with backoff) picks the
          // objects up once the CRD is installed or the grant applied.
          if (absent.get(d.kind) !== status) {
            absent.set(d.kind, status);
            o.log(status === 404
              ? `${d.kind} (${apiVersion}) is not served by the API server: its CRD is not installed. ${d.kind} routes take effect once ${d.crd} CRDs are installed; mesh-agent does not install them`
              : `${d.kind} (${apiVersion}): HTTP 403: the controller's ServiceAccount may not list/watch ${d.plural} (${d.group}); going on without ${d.kind} objects until it may: apply the ClusterRole from mesh-agent install`);
          }
          return { items: [], resourceVersion: '' };
        }
        absent.delete(d.kind);
        return listed;
      },
      watch: o.watch,
      server: o.server,
      watchdogMs: o.watchdogMs,
      backoff: o.backoff,
      rbacHint: ROUTES_RBAC_HINT,
      transform: keep,
      onError: (e) => {
        // A missing CRD's or grant's watch fails the same way every time: said once, in list().
        const why = absent.get(d.kind);
        if (why === 404 && / 404|HTTP 404|not found/i.test(e.message)) return;
        if (why === 403 && /HTTP 403/.test(e.message)) return;
        o.onError(e);
      },
      onChange: (op, key, obj) => {
        absent.delete(d.kind);
        if (op === 'set') o.routes.upsert(obj);
        else {
          const [ns, name] = key.split('/');
          o.routes.remove(d.kind, ns!, name!);
        }
      },
      onSynced: () => {
        o.routes.replaceAll(d.kind, r.store.values());
        o.onSynced();
      },
    });
    return r;
  });
}

/** The status subresource over the custom objects API. */
export function statusApi(kc: KubeConfig): StatusApi {
  const api = kc.makeApiClient(CustomObjectsApi);
  return {
    async get(kind, namespace, name) {
      const p = ROUTE_PLURALS[kind];
      return (await api.getNamespacedCustomObject({ ...p, namespace, name })) as Obj;
    },
    async replaceStatus(kind, namespace, name, body) {
      const p = ROUTE_PLURALS[kind];
      return (await api.replaceNamespacedCustomObjectStatus({ ...p, namespace, name, body })) as Obj;
    },
  };
}
