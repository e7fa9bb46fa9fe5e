// The routes' kinds from the API server, for the controller's discovery source
// (discovery/kube-source.ts): HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1), SMI
// TrafficSplit (split.smi-spec.io/v1alpha4) and HTTPRouteGroup (specs.smi-spec.io/v1alpha4),
// SMI access control's TrafficTarget (access.smi-spec.io/v1alpha3) and TCPRoute
// (specs.smi-spec.io/v1alpha4), and Linkerd's Server, AuthorizationPolicy, ServerAuthorization,
// MeshTLSAuthentication and NetworkAuthentication (policy.linkerd.io; Server and its HTTPRoute at the
// newest version served, older Linkerd CRDs serving older ones), each listed and watched once with the same reflector, into the
// route and access indexes (discovery/mesh-objects.ts). Their CRDs are
// not ours to install: a kind whose CRD is missing (404), or a route kind the controller may not
// read (403: a ClusterRole from before the kind was read), counts as listed and empty, is said
// once, and is watched for, so routes work once the CRDs are installed or the grant applied. A
// 403 on an access kind (ACCESS_KINDS; the Gateway API HTTPRoute while Linkerd's Server may be served,
// restrictsNow) is an error: empty, it would open what it restricts. The status API writes
// the routes' status through the status subresource (route-status.ts).
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { abortable } from '../k8s/client-node-signal.ts';
import type { WatchClient } from '../k8s/kube-api.ts';
import { grantFor, statusOf, type BackoffOptions } from '../k8s/watch-errors.ts';
import { expiredListMessage, listPaged, type Page } from '../k8s/pager.ts';
import { acceptedLine, Reflector } from '../k8s/watch-reflector.ts';
import { listFirstServed } from '../k8s/served-version.ts';
import type { MeshObjectKind, MeshObjects } from '../discovery/mesh-objects.ts';
import { ROUTE_PLURALS, type StatusApi } from './route-status.ts';
import { ROUTING_ANNOTATION_PREFIXES } from '../discovery/model.ts';

type Obj = Record<string, any>;

/** A kind as listed: `version` the newest read; `older` the versions older CRDs serve instead, tried in order when it is not served (404). */
export interface RouteKindDef { kind: MeshObjectKind; group: string; version: string; older?: string[]; plural: string; crd: string }

export const ROUTE_KINDS: RouteKindDef[] = [
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', crd: "Gateway API's (standard channel)" },
  { kind: 'GRPCRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes', crd: "Gateway API's (standard channel)" },
  { kind: 'TrafficSplit', group: 'split.smi-spec.io', version: 'v1alpha4', plural: 'trafficsplits', crd: "SMI's" },
  { kind: 'HTTPRouteGroup', group: 'specs.smi-spec.io', version: 'v1alpha4', plural: 'httproutegroups', crd: "SMI's" },
  { kind: 'TCPRoute', group: 'specs.smi-spec.io', version: 'v1alpha4', plural: 'tcproutes', crd: "SMI's" },
  { kind: 'TrafficTarget', group: 'access.smi-spec.io', version: 'v1alpha3', plural: 'traffictargets', crd: "SMI's" },
  // Linkerd's policy resources (docs/policy.md). Server at v1beta3, which Linkerd's CRDs serve
  // since 2.16 (with accessPolicy); 2.12-2.15's serve v1beta1 (and v1beta2 from 2.15), without
  // accessPolicy: read there, their Servers deny what no policy allows. Never "none" for a 404
  // on v1beta3 alone: that would open every port a Server restricts.
  { kind: 'Server', group: 'policy.linkerd.io', version: 'v1beta3', older: ['v1beta2', 'v1beta1'], plural: 'servers', crd: "Linkerd's" },
  { kind: 'AuthorizationPolicy', group: 'policy.linkerd.io', version: 'v1alpha1', plural: 'authorizationpolicies', crd: "Linkerd's" },
  // Deprecated, still served by Linkerd's CRDs (v1beta1 only) and widely deployed.
  { kind: 'ServerAuthorization', group: 'policy.linkerd.io', version: 'v1beta1', plural: 'serverauthorizations', crd: "Linkerd's" },
  { kind: 'MeshTLSAuthentication', group: 'policy.linkerd.io', version: 'v1alpha1', plural: 'meshtlsauthentications', crd: "Linkerd's" },
  { kind: 'NetworkAuthentication', group: 'policy.linkerd.io', version: 'v1alpha1', plural: 'networkauthentications', crd: "Linkerd's" },
  // Linkerd's own HTTPRoutes (per-route authorization targets, parented by Servers): the access index's alone.
  { kind: 'HTTPRoute', group: 'policy.linkerd.io', version: 'v1beta3', older: ['v1beta2', 'v1beta1'], plural: 'httproutes', crd: "Linkerd's" },
];

/**
 * The kinds that restrict who may connect (TrafficTarget and the route groups its rules name).
 * A 403 on them is not "none": listed as empty, it would drop every restriction they make, so
 * the list fails and is retried, keeping what was last read (discovery waits for it at start).
 */
const ACCESS_KINDS: ReadonlySet<MeshObjectKind> = new Set(['TrafficTarget', 'HTTPRouteGroup', 'TCPRoute', 'Server', 'AuthorizationPolicy', 'ServerAuthorization', 'MeshTLSAuthentication', 'NetworkAuthentication']);

/** An access kind, or Linkerd's own HTTPRoute (a per-route authorization target: lost, a Server's clients would get every request, not its routes'). */
const restricts = (d: { kind: MeshObjectKind; group: string }): boolean => ACCESS_KINDS.has(d.kind) || d.group === 'policy.linkerd.io';

/**
 * The Gateway API's HTTPRoute restricts too while Linkerd's Server kind may be served: one whose
 * parentRef is a Server narrows what the Server's AuthorizationPolicies allow to its matches.
 * `serverNotServed`: Server's list was answered 404 on every version (no Linkerd CRDs); until
 * its first list answers, it may be served, and a 403 waits (retried with backoff) rather than
 * open a Server's routes. Pure, for the reflector's refusal rule.
 */
export function restrictsNow(d: { kind: MeshObjectKind; group: string }, serverNotServed: boolean): boolean {
  return restricts(d) || (d.kind === 'HTTPRoute' && d.group === 'gateway.networking.k8s.io' && !serverNotServed);
}

export const ROUTES_RBAC_HINT = "the controller's ServiceAccount lacks list/watch on httproutes and grpcroutes (gateway.networking.k8s.io), trafficsplits (split.smi-spec.io), httproutegroups and tcproutes (specs.smi-spec.io), traffictargets (access.smi-spec.io) or servers, authorizationpolicies, serverauthorizations, meshtlsauthentications and networkauthentications (policy.linkerd.io); apply the ClusterRole from mesh-agent install";

/** What conversion and the status writer read of a route object: the rest is dropped. */
export function slimRoute(o: Obj, kind: MeshObjectKind, apiVersion: string): Obj {
  const md: Obj = o?.metadata ?? {};
  const ann = Object.entries((md.annotations ?? {}) as Obj).filter(([k]) => ROUTING_ANNOTATION_PREFIXES.some((p) => k.startsWith(p)));
  const meta: Obj = { name: md.name, namespace: md.namespace, resourceVersion: md.resourceVersion, generation: md.generation, creationTimestamp: md.creationTimestamp };
  if (ann.length > 0) meta.annotations = Object.fromEntries(ann);
  // A ServerAuthorization's spec.server.selector picks Servers by their labels.
  if (kind === 'Server' && md.labels !== undefined) meta.labels = md.labels;
  // Lists leave kind and apiVersion out of their items.
  const out: Obj = { apiVersion: o?.apiVersion ?? apiVersion, kind: o?.kind ?? kind, metadata: meta, spec: o?.spec };
  if (kind === 'HTTPRouteGroup' && o?.matches !== undefined) out.matches = o.matches; // v1alpha2 kept matches at the top
  if (o?.status !== undefined) out.status = o.status;
  return out;
}

export interface RouteReflectorsOptions {
  kc: KubeConfig;
  watch: WatchClient;
  server: string;
  routes: MeshObjects;
  watchdogMs: number;
  backoff: BackoffOptions;
  pageSize: number;
  onSynced: () => void;
  onError: (e: Error) => void;
  log: (msg: string) => void;
}

/**
 * One reflector per route kind, feeding the route index. The reflector keeps the refused state
 * (404: no CRD; 403: no grant) and says each change of it once: the refusal when it begins,
 * the acceptance when a list or watch is accepted again, with or without objects.
 */
export function routeReflectors(o: RouteReflectorsOptions): Reflector[] {
  const api = o.kc.makeApiClient(CustomObjectsApi);
  // How Linkerd's Server list was last answered (404: on every version), for whether Gateway API
  // HTTPRoutes restrict (restrictsNow); their first list waits for Server's first answer, so a
  // 403 at start is judged knowing whether Linkerd's CRDs are installed. A refused watch of
  // Server lists again (relistWhenWatchRefused), so a CRD removed later is seen here too.
  let serverAnswer: number | undefined;
  let serverAnswered!: () => void;
  const serverKnown = new Promise<void>((resolve) => (serverAnswered = resolve));
  const serverNotServed = () => serverAnswer === 404;
  return ROUTE_KINDS.map((d) => {
    const versions = [d.version, ...(d.older ?? [])];
    // The version read: the newest served, picked by every list (the watch follows it).
    let version = d.version;
    const apiVersion = () => `${d.group}/${version}`;
    const tried = versions.length > 1 ? `${d.group}/${versions.join(', ')}` : `${d.group}/${d.version}`;
    // Whether a list of this kind was ever answered (not refused, not "no CRD"): a restricting kind
    // refused before that has nothing "last read" in force, and its refusal must say so.
    let everRead = false;
    const keep = (x: Obj) => slimRoute(x, d.kind, apiVersion());
    const listAt = (v: string, signal: AbortSignal) => listPaged({
      page: async (limit, cont) => (await api.listClusterCustomObject({ group: d.group, version: v, plural: d.plural, limit, _continue: cont }, abortable(signal))) as Page,
      limit: o.pageSize,
      keep: (x: Obj) => slimRoute(x, d.kind, `${d.group}/${v}`),
      onExpired: (n) => o.log(expiredListMessage(d.plural, n)),
      signal,
    });
    const r: Reflector = new Reflector({
      // Two groups serve httproutes: Linkerd's is named with its group (status, logs).
      name: d.group === 'policy.linkerd.io' && d.kind === 'HTTPRoute' ? `${d.plural}.${d.group}` : d.plural,
      path: () => `/apis/${d.group}/${version}/${d.plural}`,
      list: versions.length === 1 ? async (signal) => {
        if (d.kind === 'HTTPRoute' && d.group === 'gateway.networking.k8s.io') await untilOrAborted(serverKnown, signal);
        const l = await listAt(d.version, signal);
        everRead = true;
        return l;
      } : async (signal) => {
        let got;
        try {
          got = await listFirstServed(versions, (v) => listAt(v, signal));
          everRead = true;
          if (d.kind === 'Server') serverAnswer = 200;
        } catch (e) {
          if (d.kind === 'Server') serverAnswer = statusOf(e) ?? 0;
          throw e;
        } finally {
          if (d.kind === 'Server') serverAnswered();
        }
        if (got.version !== version) {
          version = got.version;
          o.log(version === d.version
            ? `${d.kind} is served at ${apiVersion()} now: reading it there`
            : `${d.kind} is served at ${apiVersion()}, not ${d.group}/${d.version} (an older release's CRDs): reading it there${d.kind === 'Server' ? '; its Servers have no accessPolicy, so each denies what no AuthorizationPolicy allows' : ''}`);
        }
        return got.result;
      },
      relistWhenWatchRefused: versions.length > 1,
      watch: o.watch,
      server: o.server,
      watchdogMs: o.watchdogMs,
      backoff: o.backoff,
      rbacHint: ROUTES_RBAC_HINT,
      transform: keep,
      refusedOn: [403, 404],
      // No CRD, or a ClusterRole from before this kind was read: listed and empty, so the rest of
      // discovery is not held back; the watch from "now" (retried with backoff) picks the objects
      // up once the CRD is installed or the grant applied. Not a 403 on an access kind.
      emptyWhenRefused: (status) => status === 404 || !restrictsNow(d, serverNotServed()),
      onRefused: (r, line) => {
        const kept = everRead
          ? `until then what was last read of ${d.kind} stays in force, and at start no world is served`
          : `no ${d.kind} was ever read (its CRD was not served when it was listed, or it was refused from the start), so what ${d.kind} objects restrict is not enforced until it is granted (at start no world is served meanwhile)`;
        if (r.status === 404) o.log(`${d.kind} (${tried}) is not served by the API server: its CRD is not installed. ${d.kind} ${restricts(d) ? 'objects' : 'routes'} take effect once ${d.crd} CRDs are installed; mesh-agent does not install them`);
        else if (restricts(d)) o.onError(new Error(`${line}; ${kept}`));
        else if (restrictsNow(d, serverNotServed())) o.onError(new Error(`${line}; Linkerd's Server kind may be served (policy.linkerd.io), and an HTTPRoute whose parent is a Server narrows what the Server allows: ${kept}`));
        else o.log(`${d.kind} (${apiVersion()}): HTTP 403: the controller's ServiceAccount may not list/watch ${d.plural} (${d.group}); going on ${r.verb === 'list' ? 'without' : 'with the last read'} ${d.kind} objects until it may: apply the ClusterRole from mesh-agent install, which grants ${grantFor(`/apis/${d.group}/${d.version}/${d.plural}`)} (the API server: ${r.message})`);
      },
      onAccepted: (was) => o.log(was.status === 404
        ? `${d.kind} (${apiVersion()}) is served now (its CRD was installed): reading ${d.plural}`
        : acceptedLine(`${d.kind} (${apiVersion()})`, was)),
      onError: o.onError,
      onChange: (op, key, obj) => {
        if (op === 'set') o.routes.upsert(obj);
        else {
          const [ns, name] = key.split('/');
          o.routes.remove(d.kind, ns!, name!, d.group);
        }
      },
      onSynced: () => {
        o.routes.replaceAll(d.kind, r.store.values(), d.kind === 'HTTPRoute' ? d.group : undefined);
        o.onSynced();
      },
    });
    return r;
  });
}

/** `p`, or a rejection once `signal` aborts (the reflector stopped). */
function untilOrAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
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
