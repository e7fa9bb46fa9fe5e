// Linkerd's policy resources (policy.linkerd.io Server, AuthorizationPolicy, ServerAuthorization, MeshTLSAuthentication,
// NetworkAuthentication, and the HTTPRoutes an AuthorizationPolicy targets) as the agents receive
// them: one ServerRecord per Server, with every authorization that applies to it resolved by the
// controller (linkerd-policy.ts). The agent of a pod picks the Servers whose podSelector matches
// the pod and resolves their port (a number, or a container port's name) against the pod's own
// ports (serversForPod); authorize.ts decides with them. Validated like AccessRecord: the
// controller gates its output with the same parser the agents read it with.
import { isName, isPort, recordReader, type Fail } from '../util/record-reader.ts';
import { show } from '../util/show.ts';
import { DEFAULT_POLICIES, parseNetworks, PolicyError, type DefaultPolicy, type Identity } from './model.ts';
import { parseMatch, RouteError, type RouteMatch } from '../routing/route-model.ts';
import { fullMatch } from '../routing/http-match.ts';

export const LINKERD_POLICY_GROUP = 'policy.linkerd.io';
export const SERVER_VERSIONS = ['policy.linkerd.io/v1beta1', 'policy.linkerd.io/v1beta2', 'policy.linkerd.io/v1beta3'];
export const LINKERD_V1ALPHA1 = 'policy.linkerd.io/v1alpha1';
/** ServerAuthorization's only version. */
export const LINKERD_V1BETA1 = 'policy.linkerd.io/v1beta1';

export interface SelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: SelectorRequirement[];
}

/** An identity a MeshTLSAuthentication or a ServiceAccount reference allows; '*' in a field: any. */
export interface IdentityPattern {
  namespace: string;
  serviceAccount: string;
}

/** A NetworkAuthentication's network: the client's address is in `cidr` and in none of `except`. */
export interface NetworkRule {
  cidr: string;
  except?: string[];
}

/**
 * One AuthorizationPolicy, its required authentications resolved. Linkerd requires ALL of them,
 * and allows at most one identity kind (MeshTLSAuthentication or ServiceAccount) and one
 * NetworkAuthentication: a client passes when its identity matches one of `identities` (absent:
 * no identity required, unauthenticated clients too) and its address is in one of `networks`
 * (absent: from anywhere).
 */
export interface ServerAuthz {
  /** The AuthorizationPolicy's (or ServerAuthorization's) name; it is in the Server's namespace. */
  name: string;
  /** Set for a ServerAuthorization (the metrics' authz_kind); absent: an AuthorizationPolicy. */
  kind?: 'ServerAuthorization';
  /**
   * A ServerAuthorization without networks: only from the agent's cluster networks (Linkerd's
   * controller gives its proxies clusterNetworks for an empty list), which the controller does not know.
   */
  clusterNetworks?: true;
  identities?: IdentityPattern[];
  networks?: NetworkRule[];
}

/** An HTTPRoute whose parentRef is the Server: requests matching it are allowed to the clients of `authorizations` and of the Server's own. */
export interface ServerRoute {
  group: string;
  name: string;
  /**
   * ORed (every rule's matches); a rule without matches is {}, every request. The router's shape
   * (routing/http-match.ts reads them, routing/route-match.ts matches them): one rule, one meaning.
   */
  matches: RouteMatch[];
  authorizations: ServerAuthz[];
}

export interface ServerRecord {
  kind: 'Server';
  namespace: string;
  name: string;
  podSelector: LabelSelector;
  /** A port number, or the name of a container port (spec.containers[].ports[].name). */
  port: number | string;
  proxyProtocol?: string;
  /** v1beta3's accessPolicy: clients it admits are allowed when no AuthorizationPolicy is (Linkerd's default: deny). */
  accessPolicy: DefaultPolicy;
  /** AuthorizationPolicies targeting the Server or its Namespace: every request and connection to the Server. */
  authorizations: ServerAuthz[];
  /** HTTPRoutes attached to it: once one is, only requests matching one are allowed (Linkerd answers others 404). */
  routes: ServerRoute[];
  /** Objects that apply to it but were ignored (a missing authentication, a malformed policy), or its last good version's reason. */
  problems?: string[];
}

/** A streamed access record that is a Server's (the others are TrafficTargets'). */
export const isServerRecord = (r: object): r is ServerRecord => (r as { kind?: unknown }).kind === 'Server';

export const serverKey = (r: { namespace: string; name: string }): string => `Server/${r.namespace}/${r.name}`;

export const MAX_SERVER_AUTHZ = 256;
export const MAX_PATTERNS = 256;
export const MAX_ROUTES = 64;
export const MAX_ROUTE_MATCHES = 128;

const read = recordReader((m) => new PolicyError(m));
const fail: Fail = read.fail;
const { obj, name, list } = read;

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function labelKey(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length > 317 || !LABEL_KEY.test(v)) fail(where, `expected a label key, got ${show(v)}`);
  return v;
}

function labelValue(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) fail(where, `expected a label value, got ${show(v)}`);
  return v;
}

/** A label selector as Kubernetes writes it; throws PolicyError naming the field. */
export function parseSelector(v: unknown, where: string): LabelSelector {
  const o = obj(v, where);
  const out: LabelSelector = {};
  if (o.matchLabels !== undefined && o.matchLabels !== null) {
    const ml = obj(o.matchLabels, `${where}.matchLabels`);
    out.matchLabels = Object.fromEntries(Object.entries(ml).map(([k, x]) => [labelKey(k, `${where}.matchLabels`), labelValue(x, `${where}.matchLabels.${k}`)]));
  }
  if (o.matchExpressions !== undefined && o.matchExpressions !== null) {
    out.matchExpressions = list(o.matchExpressions, `${where}.matchExpressions`, 64).map((e, i) => {
      const w = `${where}.matchExpressions[${i}]`;
      const eo = obj(e, w);
      const key = labelKey(eo.key, `${w}.key`);
      const op = eo.operator;
      if (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist') fail(`${w}.operator`, `expected In, NotIn, Exists or DoesNotExist, got ${show(op)}`);
      if (op === 'In' || op === 'NotIn') {
        const values = list(eo.values, `${w}.values`, 256).map((x, j) => labelValue(x, `${w}.values[${j}]`));
        if (values.length === 0) fail(`${w}.values`, `${op} needs at least one value`);
        return { key, operator: op, values };
      }
      if (eo.values !== undefined && eo.values !== null && !(Array.isArray(eo.values) && eo.values.length === 0)) fail(`${w}.values`, `${op} takes no values`);
      return { key, operator: op };
    });
  }
  return out;
}

/** Kubernetes' selector semantics: every label and every expression must hold; an empty selector selects every pod. */
export function selects(s: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of s.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const v = labels[e.key];
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
    if (e.operator === 'In' && !(has && e.values!.includes(v!))) return false;
    if (e.operator === 'NotIn' && has && e.values!.includes(v!)) return false;
  }
  return true;
}

function parsePattern(v: unknown, where: string): IdentityPattern {
  const o = obj(v, where);
  const ns = o.namespace === '*' ? '*' : name(o.namespace, `${where}.namespace`);
  const sa = o.serviceAccount === '*' ? '*' : name(o.serviceAccount, `${where}.serviceAccount`);
  if (ns === '*' && sa !== '*') fail(where, 'a ServiceAccount of any namespace is not an identity; use * for both');
  return { namespace: ns, serviceAccount: sa };
}

function parseNetworkRule(v: unknown, where: string): NetworkRule {
  const o = obj(v, where);
  if (typeof o.cidr !== 'string') fail(`${where}.cidr`, `expected a network such as 10.0.0.0/8, got ${show(o.cidr)}`);
  const cidr = o.cidr;
  if (!cidr.includes(':')) parseNetworks(cidr, `${where}.cidr`);
  const out: NetworkRule = { cidr };
  if (o.except !== undefined) {
    out.except = list(o.except, `${where}.except`, 64).map((x, i) => {
      if (typeof x !== 'string') fail(`${where}.except[${i}]`, `expected a network, got ${show(x)}`);
      if (!x.includes(':')) parseNetworks(x, `${where}.except[${i}]`);
      return x;
    });
  }
  return out;
}

export function parseServerAuthz(v: unknown, where: string): ServerAuthz {
  const o = obj(v, where);
  const out: ServerAuthz = { name: name(o.name, `${where}.name`) };
  if (o.kind !== undefined) {
    if (o.kind !== 'ServerAuthorization') fail(`${where}.kind`, `expected "ServerAuthorization" or none, got ${show(o.kind)}`);
    out.kind = o.kind;
  }
  if (o.clusterNetworks !== undefined) {
    if (o.clusterNetworks !== true || o.networks !== undefined) fail(`${where}.clusterNetworks`, 'expected true, and no networks beside it');
    out.clusterNetworks = true;
  }
  if (o.identities !== undefined) out.identities = list(o.identities, `${where}.identities`, MAX_PATTERNS).map((p, i) => parsePattern(p, `${where}.identities[${i}]`));
  if (o.networks !== undefined) out.networks = list(o.networks, `${where}.networks`, 64).map((n, i) => parseNetworkRule(n, `${where}.networks[${i}]`));
  return out;
}

/**
 * The discovery version from which a Server route's matches are the route model's (regular
 * expressions anchored by the controller, queryParams). Version 7 carried policy's own shape: the
 * same fields, regular expressions unanchored and matched whole by the agent.
 */
export const ROUTE_MODEL_MATCHES = 8;

/** A version 7 match in the route model's shape: its regular expressions anchored as it meant them (whole value). */
function fromV7(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  const m = v as { path?: { type?: unknown; value?: unknown }; headers?: unknown };
  const whole = (x: { type?: unknown; value?: unknown }) => (x?.type === 'RegularExpression' && typeof x.value === 'string' ? { ...x, value: fullMatch(x.value) } : x);
  return { ...m, ...(m.path !== undefined ? { path: whole(m.path) } : {}), ...(Array.isArray(m.headers) ? { headers: m.headers.map(whole) } : {}) };
}

/** A route's match, by the route records' parser; gRPC matches are the router's only. `version`: of the stream it came in. */
function parseRouteMatch(v: unknown, where: string, version: number): RouteMatch {
  let m: RouteMatch;
  try {
    m = parseMatch(version < ROUTE_MODEL_MATCHES ? fromV7(v) : v, where);
  } catch (e) {
    if (e instanceof RouteError) throw new PolicyError(e.message);
    throw e;
  }
  if (m.grpc !== undefined) fail(`${where}.grpc`, 'a Server route matches HTTP requests by path, method, headers and query; write the gRPC method as its path');
  return m;
}

export function parseServerRoute(r: unknown, rw: string, version = ROUTE_MODEL_MATCHES): ServerRoute {
  const ro = obj(r, rw);
  if (typeof ro.group !== 'string' || ro.group.length > 253) fail(`${rw}.group`, 'expected an API group');
  return {
    group: ro.group,
    name: name(ro.name, `${rw}.name`),
    matches: list(ro.matches, `${rw}.matches`, MAX_ROUTE_MATCHES).map((m, j) => parseRouteMatch(m, `${rw}.matches[${j}]`, version)),
    authorizations: list(ro.authorizations, `${rw}.authorizations`, MAX_SERVER_AUTHZ).map((a, j) => parseServerAuthz(a, `${rw}.authorizations[${j}]`)),
  };
}

/** Validates a Server record as the agent receives it; `version`: the discovery stream's (an older one's matches are read as it meant them). */
export function parseServerRecord(v: unknown, version = ROUTE_MODEL_MATCHES): ServerRecord {
  const o = obj(v, 'server');
  if (o.kind !== 'Server') fail('server.kind', `expected "Server", got ${show(o.kind)}`);
  const ns = name(o.namespace, 'server.namespace');
  const nm = name(o.name, 'server.name');
  const w = `Server ${ns}/${nm}`;
  const port = o.port;
  if (!isPort(port) && !(typeof port === 'string' && /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/.test(port) && /[a-z]/.test(port))) fail(`${w}: port`, `expected a port 1-65535 or a container port's name, got ${show(port)}`);
  if (typeof o.accessPolicy !== 'string' || !(DEFAULT_POLICIES as readonly string[]).includes(o.accessPolicy)) fail(`${w}: accessPolicy`, `expected one of ${DEFAULT_POLICIES.join(', ')}, got ${show(o.accessPolicy)}`);
  const out: ServerRecord = {
    kind: 'Server',
    namespace: ns,
    name: nm,
    podSelector: parseSelector(o.podSelector, `${w}: podSelector`),
    port,
    accessPolicy: o.accessPolicy as DefaultPolicy,
    authorizations: list(o.authorizations, `${w}: authorizations`, MAX_SERVER_AUTHZ).map((a, i) => parseServerAuthz(a, `${w}: authorizations[${i}]`)),
    routes: list(o.routes, `${w}: routes`, MAX_ROUTES).map((r, i) => parseServerRoute(r, `${w}: routes[${i}]`, version)),
  };
  if (o.proxyProtocol !== undefined) {
    if (typeof o.proxyProtocol !== 'string' || o.proxyProtocol.length > 32) fail(`${w}: proxyProtocol`, 'expected a short string');
    out.proxyProtocol = o.proxyProtocol;
  }
  if (o.problems !== undefined) {
    out.problems = list(o.problems, `${w}: problems`, 16).map((p, i) => (typeof p === 'string' && p.length <= 2048 ? p : fail(`${w}: problems[${i}]`, 'expected a short string')));
  }
  return out;
}

export function parseServerKey(key: string): { namespace: string; name: string } | null {
  const m = /^Server\/([^/]+)\/([^/]+)$/.exec(key);
  return m && isName(m[1]) && isName(m[2]) ? { namespace: m[1]!, name: m[2]! } : null;
}

/** A Server selecting one pod: its record and the pod's port numbers it covers. */
export interface PodServer {
  record: ServerRecord;
  ports: number[];
}

/**
 * The Servers of the pod's namespace that select it, each with the port it covers: its number
 * (Linkerd: only a port the pod declares; here any, since a pod need not declare a port it
 * serves), or the pod's named TCP container port of that name (PodInfo.namedPorts, the first
 * of a name, as Linkerd's lookup). A Server whose named port the pod does not have selects
 * nothing of it.
 */
export function serversForPod(servers: readonly ServerRecord[], pod: { labels: Readonly<Record<string, string>>; namedPorts?: Readonly<Record<string, number>> }): PodServer[] {
  const out: PodServer[] = [];
  for (const s of servers) {
    if (!selects(s.podSelector, pod.labels)) continue;
    const port = typeof s.port === 'number' ? s.port : Object.hasOwn(pod.namedPorts ?? {}, s.port) ? pod.namedPorts![s.port] : undefined;
    if (port !== undefined) out.push({ record: s, ports: [port] });
  }
  return out;
}

export const identityMatches = (p: IdentityPattern, id: Identity): boolean =>
  (p.namespace === '*' || p.namespace === id.namespace) && (p.serviceAccount === '*' || p.serviceAccount === id.serviceAccount);
