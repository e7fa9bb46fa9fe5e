// Linkerd's policy resources converted into the ServerRecord the agents enforce (server-model.ts).
// Pure: the caller says which objects exist. Linkerd's semantics (its authorization-policy
// reference), and where this follows them:
// - a Server selects a port of the pods its podSelector matches in its namespace; once one does,
//   that port is denied to every client no AuthorizationPolicy allows (v1beta3's accessPolicy,
//   default deny, admits its clients too); the pod's default policy applies to its other ports;
// - an AuthorizationPolicy targets a Server, a Namespace (its own: every Server in it) or an
//   HTTPRoute whose parentRef is a Server (that route's requests only); ALL its
//   requiredAuthenticationRefs must hold (at most one MeshTLSAuthentication or ServiceAccount and
//   one NetworkAuthentication, as Linkerd's admission requires); none: any client;
// - one whose authentication object does not exist is ignored (Linkerd: "the authorization will
//   be ignored"), so it allows nothing: the Server stays closed and the problem is recorded;
// - a ServerAuthorization (v1beta1, deprecated) names its Server (spec.server.name) or selects
//   Servers by their labels (spec.server.selector; none: every Server of its namespace) and
//   allows its spec.client like an AuthorizationPolicy: `unauthenticated` (anyone), or `meshTLS`
//   `identities` and `serviceAccounts` ({name, namespace: its own by default}), each within
//   `networks` when set (else from anywhere); meshTLS `unauthenticatedTLS` (TLS without a client
//   certificate, which Linkerd's identity controller takes) is read as any meshed client, since
//   every TLS client here has an identity; without `networks` only from the cluster networks
//   (the agents'), as Linkerd's controller fills them in;
// - MeshTLSAuthentication: `identities` ("*", Linkerd's DNS-like identity
//   sa.ns.serviceaccount.identity.linkerd.<domain>, "*.ns.serviceaccount.identity.linkerd.<domain>",
//   or a SPIFFE ID) or `identityRefs` (ServiceAccount, Namespace: every ServiceAccount of it; a
//   name "*" matches no client in Linkerd, so it is refused here);
//   the trust domain is not compared (this mesh issues one);
// - NetworkAuthentication: `networks` of cidr and except (IPv6 entries never match: the capture is IPv4);
// - once an HTTPRoute is attached to a Server, only requests matching one of its routes are
//   allowed, to the clients of the route's own AuthorizationPolicies and of the Server's; its
//   matches (path, method, headers, queryParams) are read by the router's reader
//   (routing/http-match.ts), so they mean what a Service's HTTPRoute means.
// A Server that does not convert has no record (its last good version is kept by the index).
import { isName, isPort } from '../util/record-reader.ts';
import { objectName } from '../k8s/objects.ts';
import { show } from '../util/show.ts';
import { DEFAULT_POLICIES, PolicyError, type DefaultPolicy } from './model.ts';
import {
  LINKERD_POLICY_GROUP, LINKERD_V1BETA1, MAX_ROUTE_MATCHES, parseSelector, selects, parseServerAuthz, parseServerRecord, parseServerRoute, type IdentityPattern, type NetworkRule,
  type ServerAuthz, type ServerRecord, type ServerRoute,
} from './server-model.ts';
import { httpMatch, InvalidMatch } from '../routing/http-match.ts';
import type { RouteMatch } from '../routing/route-model.ts';

type Obj = Record<string, any>;

export type LinkerdKind = 'Server' | 'AuthorizationPolicy' | 'ServerAuthorization' | 'MeshTLSAuthentication' | 'NetworkAuthentication' | 'HTTPRoute';

/** What the caller holds: an object by kind, namespace and name, and one kind's objects of a namespace. */
export interface LinkerdLookup {
  /** `group`: an HTTPRoute's API group (Gateway API's and Linkerd's may share a name). */
  get(kind: LinkerdKind, namespace: string, name: string, group?: string): Obj | undefined;
  list(kind: 'AuthorizationPolicy' | 'ServerAuthorization' | 'HTTPRoute', namespace: string): Obj[];
}

export interface ServerConversion {
  namespace: string;
  name: string;
  /** null when the Server itself could not be converted (problems say why). */
  record: ServerRecord | null;
  /** Why it, or an object applying to it, was not taken (the latter leave the record valid, and closed). */
  problems: string[];
}

class Invalid extends Error {}

const PROXY_PROTOCOLS = ['unknown', 'HTTP/1', 'HTTP/2', 'gRPC', 'opaque', 'TLS'];
const HTTP_ROUTE_GROUPS = [LINKERD_POLICY_GROUP, 'gateway.networking.k8s.io'];
const isCore = (g: unknown): boolean => g === undefined || g === null || g === '' || g === 'core';

/** "web.shop.serviceaccount.identity.linkerd.cluster.local", "*.shop.serviceaccount...", "*", or a SPIFFE ID. */
export function identityPattern(s: unknown, where: string): IdentityPattern {
  if (s === '*') return { namespace: '*', serviceAccount: '*' };
  if (typeof s === 'string') {
    const dns = /^([^.]+)\.([^.]+)\.serviceaccount\.identity\.linkerd\.[a-z0-9.-]+$/.exec(s);
    if (dns && (dns[1] === '*' || isName(dns[1])) && isName(dns[2])) return { namespace: dns[2]!, serviceAccount: dns[1]! };
    if (/^\*\.serviceaccount\.identity\.linkerd\.[a-z0-9.-]+$/.test(s)) return { namespace: '*', serviceAccount: '*' };
    const spiffe = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(s);
    if (spiffe && isName(spiffe[1]) && isName(spiffe[2])) return { namespace: spiffe[1]!, serviceAccount: spiffe[2]! };
  }
  throw new Invalid(`${where}: ${show(s)} is not an identity this mesh issues; write "*", SA.NAMESPACE.serviceaccount.identity.linkerd.cluster.local (or *.NAMESPACE...), or spiffe://cluster.local/ns/NAMESPACE/sa/SA`);
}

function meshTls(o: Obj): IdentityPattern[] {
  const { namespace } = objectName(o);
  const spec: Obj = o?.spec ?? {};
  const hasIds = spec.identities !== undefined && spec.identities !== null;
  const hasRefs = spec.identityRefs !== undefined && spec.identityRefs !== null;
  if (hasIds === hasRefs) throw new Invalid('spec: set exactly one of identities and identityRefs');
  const raw: unknown = hasIds ? spec.identities : spec.identityRefs;
  if (!Array.isArray(raw) || raw.length === 0) throw new Invalid(`spec.${hasIds ? 'identities' : 'identityRefs'}: expected a non-empty list`);
  if (raw.length > 256) throw new Invalid(`spec.${hasIds ? 'identities' : 'identityRefs'}: more than 256 entries`);
  if (hasIds) return raw.map((s, i) => identityPattern(s, `spec.identities[${i}]`));
  return raw.map((r: Obj, i: number) => {
    const w = `spec.identityRefs[${i}]`;
    if (!isCore(r?.group)) throw new Invalid(`${w}.group: ${show(r?.group)}: only core ServiceAccount and Namespace are read`);
    // "*" is no wildcard here: Linkerd makes a ServiceAccount "*" the exact identity
    // "*.NS.serviceaccount.identity.linkerd.DOMAIN" and a Namespace "*" the suffix
    // "*.serviceaccount..." under a namespace named "*", so neither matches any client.
    if (r?.kind === 'ServiceAccount') {
      const ns = r.namespace ?? namespace;
      if (r.name === '*') throw new Invalid(`${w}.name: "*" names no ServiceAccount (Linkerd matches no client with it); for every ServiceAccount of ${show(ns)} use {kind: Namespace, name: ${show(ns)}}`);
      if (!isName(r.name) || !isName(ns)) throw new Invalid(`${w}: ${show(r.name)} in ${show(ns)} is not a ServiceAccount`);
      return { namespace: ns, serviceAccount: r.name };
    }
    if (r?.kind === 'Namespace') {
      if (r.name === '*') throw new Invalid(`${w}.name: "*" names no Namespace (Linkerd matches no client with it); for any meshed client use identities: ["*"]`);
      if (!isName(r.name)) throw new Invalid(`${w}.name: ${show(r.name)} is not a namespace`);
      return { namespace: r.name, serviceAccount: '*' };
    }
    throw new Invalid(`${w}.kind: ${show(r?.kind)} is not read; use ServiceAccount or Namespace`);
  });
}

function networkAuth(o: Obj): NetworkRule[] {
  return networkRules(o?.spec?.networks, 'spec.networks');
}

/** A list of {cidr, except}, as NetworkAuthentication and ServerAuthorization write it. */
function networkRules(nets: unknown, where: string): NetworkRule[] {
  if (!Array.isArray(nets) || nets.length === 0) throw new Invalid(`${where}: expected a non-empty list of {cidr, except}`);
  if (nets.length > 64) throw new Invalid(`${where}: more than 64 entries`);
  // One network per entry, as Linkerd parses each: the agents' network lists are comma-separated,
  // and "10.0.0.0/8,0.0.0.0/0" read as two would admit what Linkerd refuses.
  const one = (v: unknown, w: string) => {
    if (typeof v === 'string' && v.includes(',')) throw new Invalid(`${w}: ${show(v)} is a list; write one network per entry`);
  };
  return nets.map((n: Obj, i: number) => {
    one(n?.cidr, `${where}[${i}].cidr`);
    const out: NetworkRule = { cidr: n?.cidr };
    if (n?.except !== undefined && n.except !== null) {
      if (Array.isArray(n.except)) n.except.forEach((x: unknown, j: number) => one(x, `${where}[${i}].except[${j}]`));
      out.except = n.except;
    }
    return out;
  });
}

/** Through the agents' own parser, so the controller never sends what they refuse. */
function gate<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PolicyError) throw new Invalid(e.message);
    throw e;
  }
}

/** One AuthorizationPolicy's required authentications, resolved (throws Invalid: the policy is ignored). */
function authzOf(ap: Obj, lookup: LinkerdLookup): ServerAuthz {
  const { namespace, name } = objectName(ap);
  const refs: unknown = ap?.spec?.requiredAuthenticationRefs ?? [];
  if (!Array.isArray(refs)) throw new Invalid('spec.requiredAuthenticationRefs: expected a list');
  const out: ServerAuthz = { name };
  refs.forEach((r: Obj, i: number) => {
    const w = `spec.requiredAuthenticationRefs[${i}]`;
    const ns = r?.namespace ?? namespace;
    if (!isName(r?.name) || !isName(ns)) throw new Invalid(`${w}: ${show(r?.name)} in ${show(ns)} is not an object name`);
    const kind = r?.kind;
    if (kind === 'ServiceAccount' && isCore(r.group)) {
      if (out.identities !== undefined) throw new Invalid(`${w}: only one MeshTLSAuthentication or ServiceAccount may be required (Linkerd's rule)`);
      out.identities = [{ namespace: ns, serviceAccount: r.name }];
      return;
    }
    if (r?.group !== LINKERD_POLICY_GROUP || (kind !== 'MeshTLSAuthentication' && kind !== 'NetworkAuthentication')) {
      throw new Invalid(`${w}: ${show(r?.group)}/${show(kind)} is not read; use policy.linkerd.io MeshTLSAuthentication or NetworkAuthentication, or a core ServiceAccount`);
    }
    const obj = lookup.get(kind, ns, r.name);
    if (obj === undefined) throw new Invalid(`${w}: ${kind} ${ns}/${r.name} not found, so the policy allows nothing (Linkerd ignores it too)`);
    try {
      if (kind === 'MeshTLSAuthentication') {
        if (out.identities !== undefined) throw new Invalid('only one MeshTLSAuthentication or ServiceAccount may be required (Linkerd\'s rule)');
        out.identities = meshTls(obj);
      } else {
        if (out.networks !== undefined) throw new Invalid('only one NetworkAuthentication may be required (Linkerd\'s rule)');
        out.networks = networkAuth(obj);
      }
    } catch (e) {
      if (e instanceof Invalid) throw new Invalid(`${w}: ${kind} ${ns}/${r.name}: ${e.message}`);
      throw e;
    }
  });
  return gate(() => parseServerAuthz(out, 'authorization'));
}

/** Whether a ServerAuthorization's spec.server picks this Server (by name, or its labels; neither: all). */
function sazSelects(saz: Obj, server: Obj): boolean {
  const sel: Obj = saz?.spec?.server ?? {};
  if (sel.name !== undefined && sel.name !== null) {
    if (!isName(sel.name)) throw new Invalid(`spec.server.name: ${show(sel.name)} is not a name`);
    return sel.name === objectName(server).name;
  }
  const selector = gate(() => parseSelector(sel.selector ?? {}, 'spec.server.selector'));
  const labels: unknown = server?.metadata?.labels;
  return selects(selector, labels !== null && typeof labels === 'object' ? (labels as Record<string, string>) : {});
}

/** A ServerAuthorization's spec.client as the authorization the agents enforce (throws Invalid: it allows nothing). */
function serverAuthorizationOf(saz: Obj): ServerAuthz {
  const { namespace, name } = objectName(saz);
  const client: Obj | undefined = saz?.spec?.client;
  if (client === undefined || client === null || typeof client !== 'object') throw new Invalid('spec.client: required');
  const out: ServerAuthz = { name, kind: 'ServerAuthorization' };
  const mtls: Obj | undefined = client.meshTLS ?? undefined;
  if (client.unauthenticated === true) {
    if (mtls !== undefined) throw new Invalid('spec.client: unauthenticated must be false when meshTLS is set (Linkerd\'s rule)');
  } else if (mtls !== undefined && typeof mtls === 'object') {
    const ids: unknown[] = Array.isArray(mtls.identities) ? mtls.identities : [];
    const sas: Obj[] = Array.isArray(mtls.serviceAccounts) ? mtls.serviceAccounts : [];
    if (mtls.unauthenticatedTLS === true) {
      if (ids.length + sas.length > 0) throw new Invalid('spec.client.meshTLS: unauthenticatedTLS must be false when identities or serviceAccounts are set (Linkerd\'s rule)');
      out.identities = [{ namespace: '*', serviceAccount: '*' }];
    } else {
      if (ids.length + sas.length === 0) throw new Invalid('spec.client.meshTLS: names no client; set identities or serviceAccounts');
      if (ids.length + sas.length > 256) throw new Invalid('spec.client.meshTLS: more than 256 identities and serviceAccounts');
      out.identities = [
        ...ids.map((s, i) => identityPattern(s, `spec.client.meshTLS.identities[${i}]`)),
        ...sas.map((sa, i) => {
          const ns = sa?.namespace ?? namespace;
          if (!isName(sa?.name) || !isName(ns)) throw new Invalid(`spec.client.meshTLS.serviceAccounts[${i}]: ${show(sa?.name)} in ${show(ns)} is not a ServiceAccount`);
          return { namespace: ns, serviceAccount: sa.name };
        }),
      ];
    }
  } else {
    throw new Invalid('spec.client: set unauthenticated: true or meshTLS (Linkerd authorizes no client otherwise)');
  }
  // None, or an empty list: Linkerd's controller gives the proxy its clusterNetworks instead.
  if (client.networks === undefined || client.networks === null || (Array.isArray(client.networks) && client.networks.length === 0)) out.clusterNetworks = true;
  else out.networks = networkRules(client.networks, 'spec.client.networks');
  return gate(() => parseServerAuthz(out, 'authorization'));
}

type Target = { kind: 'server'; name: string } | { kind: 'namespace'; name: string } | { kind: 'route'; group: string; name: string };

function targetOf(ap: Obj): Target {
  const t: Obj | undefined = ap?.spec?.targetRef;
  if (t === undefined || t === null || typeof t !== 'object') throw new Invalid('spec.targetRef: expected {group, kind, name}');
  if (!isName(t.name)) throw new Invalid(`spec.targetRef.name: ${show(t.name)} is not a name`);
  if (t.kind === 'Server' && t.group === LINKERD_POLICY_GROUP) return { kind: 'server', name: t.name };
  if (t.kind === 'Namespace' && isCore(t.group)) return { kind: 'namespace', name: t.name };
  if (t.kind === 'HTTPRoute' && HTTP_ROUTE_GROUPS.includes(t.group)) return { kind: 'route', group: t.group, name: t.name };
  throw new Invalid(`spec.targetRef: ${show(t.group)}/${show(t.kind)} is not read; target a policy.linkerd.io Server, a core Namespace, or an HTTPRoute (${HTTP_ROUTE_GROUPS.join(' or ')})`);
}

function routeParentsServer(route: Obj, server: string): boolean {
  const { namespace } = objectName(route);
  const parents: unknown = route?.spec?.parentRefs;
  return Array.isArray(parents) && parents.some((p: Obj) => p?.kind === 'Server' && p?.group === LINKERD_POLICY_GROUP && p?.name === server && (p.namespace ?? namespace) === namespace);
}

function routeMatches(route: Obj): RouteMatch[] {
  const rules: unknown = route?.spec?.rules ?? [{}];
  if (!Array.isArray(rules)) throw new Invalid('spec.rules: expected a list');
  const out: RouteMatch[] = [];
  const all = rules.length === 0 ? [{}] : rules;
  all.forEach((rule: Obj, i: number) => {
    const ms: unknown = rule?.matches ?? [];
    if (!Array.isArray(ms)) throw new Invalid(`spec.rules[${i}].matches: expected a list`);
    const list = ms.length === 0 ? [{}] : ms;
    list.forEach((m: Obj, j: number) => {
      try {
        out.push(httpMatch(m, `spec.rules[${i}].matches[${j}]`));
      } catch (e) {
        if (e instanceof InvalidMatch) throw new Invalid(e.message);
        throw e;
      }
    });
  });
  if (out.length > MAX_ROUTE_MATCHES) throw new Invalid(`more than ${MAX_ROUTE_MATCHES} matches`);
  return out;
}

function accessPolicyOf(o: Obj): DefaultPolicy {
  const v: unknown = o?.spec?.accessPolicy;
  if (v === undefined || v === null) return 'deny';
  if (o.apiVersion !== 'policy.linkerd.io/v1beta3') throw new Invalid(`spec.accessPolicy: read from policy.linkerd.io/v1beta3 only, this Server is ${show(o.apiVersion)}`);
  if (typeof v !== 'string' || !(DEFAULT_POLICIES as readonly string[]).includes(v)) throw new Invalid(`spec.accessPolicy: ${show(v)} is not one of ${DEFAULT_POLICIES.join(', ')}`);
  return v as DefaultPolicy;
}

export function serverFromLinkerd(o: Obj, lookup: LinkerdLookup): ServerConversion {
  const { namespace, name } = objectName(o);
  const what = `Server ${namespace}/${name}`;
  const spec: Obj = o?.spec ?? {};
  let base: Omit<ServerRecord, 'authorizations' | 'routes'>;
  try {
    if (spec.externalWorkloadSelector !== undefined) throw new Invalid('spec.externalWorkloadSelector: external workloads are not meshed here; use podSelector');
    if (spec.podSelector === undefined || spec.podSelector === null) throw new Invalid('spec.podSelector: required');
    let podSelector;
    try {
      podSelector = parseSelector(spec.podSelector, 'spec.podSelector');
    } catch (e) {
      if (e instanceof PolicyError) throw new Invalid(e.message);
      throw e;
    }
    const port: unknown = spec.port;
    if (!isPort(port) && !(typeof port === 'string' && /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/.test(port) && /[a-z]/.test(port))) {
      throw new Invalid(`spec.port: ${show(port)} is neither a port 1-65535 nor a container port's name (up to 15 lower-case letters, digits, -)`);
    }
    base = { kind: 'Server', namespace, name, podSelector, port, accessPolicy: accessPolicyOf(o) };
    if (spec.proxyProtocol !== undefined && spec.proxyProtocol !== null) {
      if (!PROXY_PROTOCOLS.includes(spec.proxyProtocol)) throw new Invalid(`spec.proxyProtocol: ${show(spec.proxyProtocol)} is not one of ${PROXY_PROTOCOLS.join(', ')}`);
      base.proxyProtocol = spec.proxyProtocol;
    }
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    return { namespace, name, record: null, problems: [`${what}: not accepted: ${e.message}`] };
  }

  const problems: string[] = [];
  const authorizations: ServerAuthz[] = [];
  /** By "group/name": a Gateway API and a Linkerd HTTPRoute may share a name, each its own target. */
  const routeAuthz = new Map<string, ServerAuthz[]>();
  for (const ap of lookup.list('AuthorizationPolicy', namespace)) {
    const apName = `AuthorizationPolicy ${namespace}/${objectName(ap).name}`;
    try {
      if (ap?.apiVersion !== 'policy.linkerd.io/v1alpha1') throw new Invalid(`apiVersion ${show(ap?.apiVersion)} is not read; use policy.linkerd.io/v1alpha1`);
      const t = targetOf(ap);
      if (t.kind === 'server' && t.name !== name) continue;
      if (t.kind === 'namespace' && t.name !== namespace) throw new Invalid(`spec.targetRef: Namespace ${t.name} is not the policy's own namespace ${namespace}; a policy can target only its own (Linkerd's admission refuses it)`);
      if (t.kind === 'route') {
        const route = lookup.get('HTTPRoute', namespace, t.name, t.group);
        if (route === undefined || !routeParentsServer(route, name)) continue;
        const list = routeAuthz.get(`${t.group}/${t.name}`) ?? [];
        list.push(authzOf(ap, lookup));
        routeAuthz.set(`${t.group}/${t.name}`, list);
        continue;
      }
      authorizations.push(authzOf(ap, lookup));
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      problems.push(`${apName}: ignored, it allows nothing on ${what}: ${e.message}`);
    }
  }
  for (const saz of lookup.list('ServerAuthorization', namespace)) {
    try {
      if (saz?.apiVersion !== LINKERD_V1BETA1) throw new Invalid(`apiVersion ${show(saz?.apiVersion)} is not read; use ${LINKERD_V1BETA1}`);
      if (!sazSelects(saz, o)) continue;
      authorizations.push(serverAuthorizationOf(saz));
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      problems.push(`ServerAuthorization ${namespace}/${objectName(saz).name}: ignored, it allows nothing on ${what}: ${e.message}`);
    }
  }
  const routes: ServerRoute[] = [];
  for (const r of lookup.list('HTTPRoute', namespace)) {
    if (!routeParentsServer(r, name)) continue;
    const rn = objectName(r).name;
    const group = typeof r?.apiVersion === 'string' ? r.apiVersion.split('/')[0] : '';
    try {
      const route: ServerRoute = { group, name: rn, matches: routeMatches(r), authorizations: routeAuthz.get(`${group}/${rn}`) ?? [] };
      routes.push(gate(() => parseServerRoute(route, 'route')));
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      // Still attached: requests matching none of the Server's routes are refused, so leaving
      // it out denies what it would have allowed, never more.
      problems.push(`HTTPRoute ${namespace}/${rn}: ignored, its requests are denied on ${what}: ${e.message}`);
    }
  }
  authorizations.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // By name, then group: two groups' routes of one name keep one order, whichever came first.
  routes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
  const candidate: ServerRecord = { ...base, authorizations, routes, ...(problems.length > 0 ? { problems: problems.map((p) => p.slice(0, 2048)).slice(0, 16) } : {}) };
  try {
    return { namespace, name, record: parseServerRecord(candidate), problems };
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    return { namespace, name, record: null, problems: [...problems, `${what}: not accepted: ${e.message}`] };
  }
}
