// Gateway API for meshes (GAMMA): HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1) whose
// parentRefs name a Service, converted into the route model (route-model.ts), with the status
// conditions the controller writes back (Accepted, ResolvedRefs, with the spec's reasons).
// Pure: the caller says which Services exist (with their ports); the route is converted whole,
// and a route that cannot be (a bad duration, a weight out of range, a filter or
// match we do not support, a bad Linkerd annotation) comes out with no record and
// Accepted=False, so the controller keeps serving its last good version.
import { policyFromAnnotations, type AnnotatedKind } from './linkerd-annotations.ts';
import { checkRegexOr, fullMatch, headerMatches, httpMatch } from './http-match.ts';
import {
  FIELD_VALUE, HOSTNAME, REDIRECT_PATH, REDIRECT_STATUSES, MAX_BACKENDS, MAX_HEADER_EDITS, MAX_MATCHES, MAX_MS, MAX_RETRY_LIMIT, MAX_RULES, MAX_WEIGHT, parseRouteRecord, TOKEN, unmodifiableHeader,
  type BackendRef, type HeaderModifier, type ParentRef, type Redirect, type RetryPolicy, type RouteMatch, type RouteRecord, type RouteRule, type Source, type Timeouts,
} from './route-model.ts';
import { isName, isPort } from '../util/record-reader.ts';
import { objectName } from '../k8s/objects.ts';
import { show } from '../util/show.ts';
import type { Addressing } from '../discovery/model.ts';

type Obj = Record<string, any>;

export const GATEWAY_GROUP = 'gateway.networking.k8s.io';
/** The controllerName our status entries carry (Gateway API wants a domain-prefixed path). */
export const CONTROLLER_NAME = 'mesh-agent.io/mesh-controller';

/**
 * What the converter needs to know of a Service: that it exists, its ports, and its addressing
 * (absent: a ClusterIP). A headless Service is a backend as a ClusterIP one (one without ports
 * at any port); an ExternalName or IPv6-only one has no endpoints the agents can balance.
 */
export interface ServiceInfo {
  ports: number[];
  addressing?: Addressing;
}
export type ServiceLookup = (namespace: string, name: string) => ServiceInfo | undefined;

/** Whether a backend naming this Service at `port` resolves to a port of it (store.ts serviceUsesPort, on the agent). */
export const backendPortOf = (svc: ServiceInfo, port: number): boolean => svc.ports.includes(port) || (svc.addressing === 'headless' && svc.ports.length === 0);

/** Why a backend naming this Service has nothing to balance over, or null (router.ts missingBackend says the same to its requests). */
export function unbalanced(svc: ServiceInfo, namespace: string, name: string): string | null {
  if (svc.addressing !== 'none') return null;
  return `Service ${namespace}/${name} has neither an IPv4 ClusterIP nor clusterIP None (an ExternalName or IPv6-only Service): there are no endpoints to balance its requests over; name a Service with an IPv4 ClusterIP or a headless one`;
}

/**
 * Why this Service cannot be a route's parent, or null. GAMMA (GEP-1426) attaches a route to a
 * Service's frontend, its ClusterIP: the agents route connections to an IPv4 ClusterIP only, so a
 * headless, ExternalName or IPv6-only parent would be Accepted yet never applied (Linkerd answers
 * NoMatchingParent, "parent service must have a ClusterIP").
 */
export function frontless(svc: ServiceInfo, namespace: string, name: string): string | null {
  const fix = 'name a Service with an IPv4 ClusterIP as the parent';
  if (svc.addressing === 'headless') return `Service ${namespace}/${name} is headless (clusterIP None): it has no ClusterIP for the route to attach to, and connections to its pods go to their original destination; ${fix} (a headless Service can be a backendRef)`;
  if (svc.addressing === 'none') return `Service ${namespace}/${name} has no IPv4 ClusterIP (an ExternalName or IPv6-only Service): no connection to it is routed; ${fix}`;
  return null;
}

export interface Condition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface ParentStatus {
  /** As written in spec.parentRefs (group, kind, namespace, name, port), so kubectl users recognise it. */
  parentRef: Obj;
  conditions: Condition[];
}

export interface RouteConversion {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** null: the route cannot be served (Accepted=False on every parent); keep the last good one. */
  record: RouteRecord | null;
  /** One entry per Service parentRef; parentRefs to Gateways are not ours and get none. */
  parents: ParentStatus[];
  /** Everything worth a log line, each naming the object. */
  problems: string[];
}

/** GEP-2257 durations: 1 to 4 number+unit pairs, units h, m, s, ms. */
const GATEWAY_DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

export function parseGatewayDuration(v: unknown, where: string): number {
  if (typeof v !== 'string' || !GATEWAY_DURATION.test(v)) throw new Invalid(`${where}: ${show(v)} is not a Gateway API duration; write it like 500ms, 10s or 1m30s`);
  let total = 0;
  for (const m of v.matchAll(/([0-9]{1,5})(h|ms|m|s)/g)) total += Number(m[1]) * UNIT[m[2]!]!;
  return total;
}

class Invalid extends Error {}

/** A Service reference's group is "" or "core", its kind Service (the default for backendRefs, not for parentRefs). */
function isServiceRef(r: Obj, kindDefault: string | undefined): boolean {
  const group = r?.group ?? '';
  const kind = r?.kind ?? kindDefault;
  return (group === '' || group === 'core') && kind === 'Service';
}


/** Every parentRef is a Linkerd Server (policy.linkerd.io): a per-route authorization target, not a route of a Service. */
export function isServerRoute(parentRefs: unknown): boolean {
  return Array.isArray(parentRefs) && parentRefs.length > 0 && parentRefs.every((p: Obj) => p?.group === 'policy.linkerd.io' && p?.kind === 'Server');
}

export function createdAtOf(o: Obj): number {
  const t = Date.parse(o?.metadata?.creationTimestamp ?? '');
  return Number.isFinite(t) ? t : 0;
}

function annotationsOf(o: Obj): Record<string, string> {
  const a = o?.metadata?.annotations;
  const out: Record<string, string> = {};
  if (a && typeof a === 'object') for (const [k, v] of Object.entries(a)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** What a rule's filters become. */
interface RuleFilters {
  requestHeaders?: HeaderModifier;
  responseHeaders?: HeaderModifier;
  /** Without ReplacePrefixMatch's prefix, which the rule's match gives (convertSpec). */
  redirect?: Obj;
}

const SERVED_FILTERS: Record<string, { field: string; kinds: ReadonlyArray<'HTTPRoute' | 'GRPCRoute'>; onBackend: boolean }> = {
  RequestHeaderModifier: { field: 'requestHeaderModifier', kinds: ['HTTPRoute', 'GRPCRoute'], onBackend: true },
  ResponseHeaderModifier: { field: 'responseHeaderModifier', kinds: ['HTTPRoute', 'GRPCRoute'], onBackend: true },
  // The proxy answers a redirect itself, so no backend is ever chosen to run it (the spec allows it on rules only).
  RequestRedirect: { field: 'requestRedirect', kinds: ['HTTPRoute'], onBackend: false },
};

/**
 * A rule's or a backendRef's filters: RequestHeaderModifier, ResponseHeaderModifier (HTTPRoute and
 * GRPCRoute) and, on a rule, RequestRedirect (HTTPRoute) are served, each at most once (the CRD's
 * rule); every other type refuses the route, naming it. URLRewrite with RequestRedirect is named as
 * incompatible (the spec forbids the pair) before it is named as unsupported.
 */
function filtersOf(v: unknown, where: string, kind: 'HTTPRoute' | 'GRPCRoute', on: 'rule' | 'backendRef'): RuleFilters {
  if (v === undefined || v === null) return {};
  if (!Array.isArray(v) || v.length > 16) throw new Invalid(`${where}: expected a list of at most 16 filters`);
  const types = v.map((f: Obj) => f?.type);
  if (types.includes('RequestRedirect') && types.includes('URLRewrite')) {
    throw new Invalid(`${where}: RequestRedirect and URLRewrite may not be combined (the spec forbids it); keep one of them`);
  }
  const served = SERVED_FILTERS;
  const serves = (t: string) => Object.hasOwn(served, t) && served[t]!.kinds.includes(kind) && (on === 'rule' || served[t]!.onBackend);
  if (on === 'backendRef' && types.includes('RequestRedirect') && kind === 'HTTPRoute') {
    throw new Invalid(`${where}: a RequestRedirect is not allowed on a backendRef (the proxy answers a redirect without choosing a backend); put it in the rule's filters, in a rule without backendRefs`);
  }
  const unsupported = types.filter((t) => !serves(t));
  if (unsupported.length > 0) {
    throw new Invalid(`${where}: filters of type ${unsupported.map((t) => show(t)).join(', ')} are not supported on a ${on === 'rule' ? kind : `${kind}'s backendRef`}; of the filters only ${Object.keys(served).filter(serves).join(', ')} are, so remove the others or route without them`);
  }
  const out: RuleFilters = {};
  for (const [i, f] of v.entries()) {
    const type = f.type as string;
    if (types.indexOf(type) !== i) throw new Invalid(`${where}: ${type} is given ${types.filter((t) => t === type).length} times; the spec allows it once per ${on}, so merge them`);
    const field = served[type]!.field;
    const w = `${where}[${i}].${field}`;
    if (type === 'RequestRedirect') {
      if (f[field] === undefined || f[field] === null || typeof f[field] !== 'object') throw new Invalid(`${w}: a RequestRedirect filter needs its requestRedirect (statusCode, scheme, hostname, port or path)`);
      out.redirect = f[field];
    } else if (type === 'RequestHeaderModifier') out.requestHeaders = headerModifier(f[field], w, type);
    else out.responseHeaders = headerModifier(f[field], w, 'ResponseHeaderModifier');
  }
  return out;
}

/**
 * A RequestRedirect filter into the model. `matches` are the rule's converted matches (a
 * PathPrefix "/" is left out of them: no path), as the spec's ReplacePrefixMatch needs exactly
 * one PathPrefix match; `rawMatches` tells an absent list (the CRD's default, PathPrefix "/").
 */
function redirectOf(r: Obj, where: string, rawMatches: Obj[], matches: RouteMatch[]): Redirect {
  const code = r.statusCode ?? 302;
  if (!Number.isInteger(code) || !REDIRECT_STATUSES.includes(code)) throw new Invalid(`${where}.statusCode: ${show(code)} is not a redirect status; use ${REDIRECT_STATUSES.join(', ')} (302 when absent)`);
  const out: Redirect = { statusCode: code as Redirect['statusCode'] };
  if (r.scheme !== undefined && r.scheme !== null) {
    if (r.scheme !== 'http' && r.scheme !== 'https') throw new Invalid(`${where}.scheme: ${show(r.scheme)} is not supported; use http or https`);
    out.scheme = r.scheme;
  }
  if (r.hostname !== undefined && r.hostname !== null) {
    if (typeof r.hostname !== 'string' || !HOSTNAME.test(r.hostname)) throw new Invalid(`${where}.hostname: ${show(r.hostname)} is not a host name; write lower-case DNS labels such as api.example.com (no port, no wildcard)`);
    out.hostname = r.hostname;
  }
  if (r.port !== undefined && r.port !== null) {
    if (!isPort(r.port)) throw new Invalid(`${where}.port: ${show(r.port)} is not a port; use 1-65535`);
    out.port = r.port;
  }
  const p = r.path;
  if (p !== undefined && p !== null) {
    const path = (x: unknown, w: string): string => {
      if (typeof x !== 'string' || !REDIRECT_PATH.test(x)) throw new Invalid(`${w}: ${show(x)} is not a path; start it with "/" and use URI path characters (no query, no spaces), at most 1024`);
      return x;
    };
    if (p.type === 'ReplaceFullPath') out.path = { type: 'ReplaceFullPath', value: path(p.replaceFullPath, `${where}.path.replaceFullPath`) };
    else if (p.type === 'ReplacePrefixMatch') {
      const value = path(p.replacePrefixMatch, `${where}.path.replacePrefixMatch`);
      // The spec (a CEL rule of HTTPRouteRule): exactly one match, and its path a PathPrefix.
      const only = rawMatches.length === 0 ? { path: undefined } : rawMatches.length === 1 ? matches[0]! : null;
      if (only === null || (only.path !== undefined && only.path.type !== 'PathPrefix')) {
        throw new Invalid(`${where}.path: ReplacePrefixMatch needs the rule to have exactly one match whose path is a PathPrefix (the spec's rule), this rule has ${rawMatches.length === 1 ? `a ${only?.path?.type ?? 'non-PathPrefix'} path match` : `${rawMatches.length} matches`}; use ReplaceFullPath or split the rule`);
      }
      out.path = { type: 'ReplacePrefixMatch', value, prefix: only.path?.value ?? '/' };
    } else throw new Invalid(`${where}.path.type: ${show(p.type)} is not supported; use ReplaceFullPath or ReplacePrefixMatch`);
  }
  return out;
}

function headerModifier(m: Obj | undefined, where: string, type: 'RequestHeaderModifier' | 'ResponseHeaderModifier'): HeaderModifier {
  if (m === undefined || m === null || typeof m !== 'object') throw new Invalid(`${where}: a ${type} filter needs its ${type === 'RequestHeaderModifier' ? 'requestHeaderModifier' : 'responseHeaderModifier'} (set, add or remove)`);
  const out: HeaderModifier = {};
  const name = (n: unknown, w: string): string => {
    if (typeof n !== 'string' || !TOKEN.test(n)) throw new Invalid(`${w}: ${show(n)} is not a header name; use letters, digits and !#$%&'*+-.^_\`|~ (at most 256)`);
    const lower = n.toLowerCase();
    const why = unmodifiableHeader(lower, type === 'ResponseHeaderModifier');
    if (why !== null) throw new Invalid(`${w}: ${why}`);
    return lower;
  };
  for (const part of ['set', 'add'] as const) {
    const l = m[part];
    if (l === undefined || l === null) continue;
    if (!Array.isArray(l) || l.length > MAX_HEADER_EDITS) throw new Invalid(`${where}.${part}: expected a list of at most ${MAX_HEADER_EDITS} headers`);
    const edits: Array<{ name: string; value: string }> = [];
    for (const [i, h] of l.entries()) {
      const n = name(h?.name, `${where}.${part}[${i}].name`);
      if (typeof h?.value !== 'string' || !FIELD_VALUE.test(h.value)) throw new Invalid(`${where}.${part}[${i}].value: ${show(h?.value)} is not a header value; write at most 4096 characters without CR, LF, NUL or other control characters`);
      if (edits.some((e) => e.name === n)) throw new Invalid(`${where}.${part}[${i}].name: ${show(h.name)} is named twice in ${part} (names are case-insensitive); give each header once`);
      edits.push({ name: n, value: h.value });
    }
    if (edits.length > 0) out[part] = edits;
  }
  const r = m.remove;
  if (r !== undefined && r !== null) {
    if (!Array.isArray(r) || r.length > MAX_HEADER_EDITS) throw new Invalid(`${where}.remove: expected a list of at most ${MAX_HEADER_EDITS} header names`);
    const names: string[] = [];
    for (const [i, h] of r.entries()) {
      const n = name(h, `${where}.remove[${i}]`);
      if (!names.includes(n)) names.push(n);
    }
    if (names.length > 0) out.remove = names;
  }
  return out;
}

function grpcMatch(m: Obj, where: string): RouteMatch {
  const out: RouteMatch = {};
  const method = m?.method;
  if (method !== undefined && method !== null) {
    const type = method.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') throw new Invalid(`${where}.method.type: ${show(type)} is not supported; use Exact or RegularExpression`);
    const g: NonNullable<RouteMatch['grpc']> = { type };
    for (const part of ['service', 'method'] as const) {
      const s = method[part];
      if (s === undefined || s === null) continue;
      if (typeof s !== 'string' || s === '' || s.length > 1024) throw new Invalid(`${where}.method.${part}: expected a non-empty string`);
      if (type === 'RegularExpression') checkRegexOr(s, `${where}.method.${part}`);
      else if (/[/\s]/.test(s)) throw new Invalid(`${where}.method.${part}: ${show(s)} must not contain "/" or spaces`);
      g[part] = type === 'RegularExpression' ? fullMatch(s) : s;
    }
    if (g.service === undefined && g.method === undefined) throw new Invalid(`${where}.method: name a service, a method or both`);
    out.grpc = g;
  }
  const headers = headerMatches(m?.headers, `${where}.headers`);
  if (headers) out.headers = headers;
  return out;
}

function timeoutsOf(t: Obj | undefined, where: string, src: (field: string) => Source): { timeouts?: Timeouts; sources: Source[] } {
  if (t === undefined || t === null) return { sources: [] };
  const out: Timeouts = {};
  const sources: Source[] = [];
  // GEP-1742: zero means no timeout. A field given, even "0s", is the rule's own: the rule then
  // does not take the Service's timeouts (an empty Timeouts is "none", not "the Service's").
  if (t.request !== undefined && t.request !== null) {
    const ms = parseGatewayDuration(t.request, `${where}.request`);
    // GEP-2257 allows up to 99999h; past what a timer holds (24.8 days) it is held as that.
    if (ms > 0) out.requestMs = Math.min(ms, MAX_MS);
    sources.push(src(`${where}.request`));
  }
  if (t.backendRequest !== undefined && t.backendRequest !== null) {
    const ms = parseGatewayDuration(t.backendRequest, `${where}.backendRequest`);
    if (ms > 0) out.backendRequestMs = Math.min(ms, MAX_MS);
    sources.push(src(`${where}.backendRequest`));
  }
  if (out.requestMs !== undefined && out.backendRequestMs !== undefined && out.backendRequestMs > out.requestMs) {
    throw new Invalid(`${where}.backendRequest (${t.backendRequest}) must not be longer than ${where}.request (${t.request})`);
  }
  return sources.length > 0 ? { timeouts: out, sources } : { sources };
}

/** GEP-1731's retry stanza. */
function retryOf(r: Obj | undefined, where: string): RetryPolicy | undefined {
  if (r === undefined || r === null) return undefined;
  let limit = 1;
  if (r.attempts !== undefined && r.attempts !== null) {
    if (!Number.isInteger(r.attempts) || r.attempts < 0 || r.attempts > MAX_RETRY_LIMIT) throw new Invalid(`${where}.attempts: ${show(r.attempts)} is not a retry count; use a whole number from 0 to ${MAX_RETRY_LIMIT}`);
    limit = r.attempts;
  }
  const out: RetryPolicy = { limit, httpStatuses: [[500, 599]] };
  if (r.codes !== undefined && r.codes !== null) {
    if (!Array.isArray(r.codes) || r.codes.length > 64) throw new Invalid(`${where}.codes: expected a list of status codes`);
    out.httpStatuses = r.codes.map((c: unknown, i: number): [number, number] => {
      if (!Number.isInteger(c) || (c as number) < 400 || (c as number) > 599) throw new Invalid(`${where}.codes[${i}]: ${show(c)} is not a retryable status code; use 400-599, e.g. 503`);
      return [c as number, c as number];
    });
  }
  if (r.backoff !== undefined && r.backoff !== null) {
    const ms = parseGatewayDuration(r.backoff, `${where}.backoff`);
    if (ms > 0) out.backoffMs = Math.min(ms, MAX_MS);
  }
  return out;
}

interface ConvertContext {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  services: ServiceLookup;
  /** Parent Services (ns/name) of the route: a consumer route may send to its parent in another namespace. */
  parentKeys: Set<string>;
  /** Backend problems, for ResolvedRefs: [reason, message]. */
  unresolved: Array<[string, string]>;
}

function backendOf(b: Obj, where: string, cx: ConvertContext): BackendRef {
  const weight = b?.weight ?? 1;
  if (!Number.isInteger(weight) || weight < 0 || weight > MAX_WEIGHT) throw new Invalid(`${where}.weight: ${show(weight)} is out of range; use a whole number from 0 to ${MAX_WEIGHT}`);
  if (!isName(b?.name)) throw new Invalid(`${where}.name: ${show(b?.name)} is not a Kubernetes name`);
  const namespace = b.namespace ?? cx.namespace;
  if (!isName(namespace)) throw new Invalid(`${where}.namespace: ${show(namespace)} is not a Kubernetes name`);
  const ref = (port: number, problem?: string): BackendRef => (problem === undefined ? { namespace, name: b.name, port, weight } : { namespace, name: b.name, port, weight, problem });
  if (!isServiceRef(b, 'Service')) {
    const msg = `${where}: ${show(`${b.group ?? ''}/${b.kind}`)} is not a kind we route to; use a Service (group "" or core)`;
    cx.unresolved.push(['InvalidKind', msg]);
    return ref(isPort(b.port) ? b.port : 1, msg);
  }
  if (!isPort(b.port)) throw new Invalid(`${where}.port: a Service backend needs its port (1-65535), got ${show(b.port)}`);
  if (namespace !== cx.namespace && !cx.parentKeys.has(`${namespace}/${b.name}`)) {
    // Without ReferenceGrant (which we do not read), only the parent may be named across namespaces.
    const msg = `${where}: Service ${namespace}/${b.name} is in another namespace; a route may send across namespaces only to its parent Service`;
    cx.unresolved.push(['RefNotPermitted', msg]);
    return ref(b.port, msg);
  }
  const svc = cx.services(namespace, b.name);
  if (svc === undefined) {
    const msg = `${where}: Service ${namespace}/${b.name} not found`;
    cx.unresolved.push(['BackendNotFound', msg]);
    return ref(b.port, msg);
  }
  if (!backendPortOf(svc, b.port)) {
    const msg = `${where}: Service ${namespace}/${b.name} has no port ${b.port}`;
    cx.unresolved.push(['BackendNotFound', msg]);
    return ref(b.port, msg);
  }
  const none = unbalanced(svc, namespace, b.name);
  if (none !== null) {
    const msg = `${where}: ${none}`;
    cx.unresolved.push(['BackendNotFound', msg]);
    return ref(b.port, msg);
  }
  return ref(b.port);
}

/** HTTPRoute or GRPCRoute (gateway.networking.k8s.io/v1) -> the route model and its status. */
export function routeFromGateway(o: Obj, services: ServiceLookup): RouteConversion {
  const kind: 'HTTPRoute' | 'GRPCRoute' = o?.kind === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute';
  const { namespace, name } = objectName(o);
  const spec: Obj = o?.spec ?? {};
  const what = `${kind} ${namespace}/${name}`;
  const problems: string[] = [];
  const parents: ParentStatus[] = [];
  const parentRefs: ParentRef[] = [];
  const accepted: Array<{ status: ParentStatus; ok: boolean; reason: string; message: string }> = [];

  const rawParents: Obj[] = Array.isArray(spec.parentRefs) ? spec.parentRefs : [];
  // A route of Linkerd Servers only is inbound policy (policy/linkerd-policy.ts reads it): not ours, nothing to say.
  if (isServerRoute(rawParents)) return { kind, namespace, name, record: null, parents: [], problems: [] };
  for (const p of rawParents) {
    if (!isServiceRef(p, undefined)) continue; // a Gateway's route, not ours
    const ns = p.namespace ?? namespace;
    const parentRef: Obj = { group: p.group ?? '', kind: 'Service', name: p.name };
    if (p.namespace !== undefined) parentRef.namespace = p.namespace;
    if (p.port !== undefined) parentRef.port = p.port;
    if (p.sectionName !== undefined) parentRef.sectionName = p.sectionName;
    const status: ParentStatus = { parentRef, conditions: [] };
    parents.push(status);
    const svc = isName(p.name) && isName(ns) ? services(ns, p.name) : undefined;
    let ok = true;
    let reason = 'Accepted';
    let message = `attached to Service ${ns}/${p.name}${p.port !== undefined ? ` port ${p.port}` : ''}`;
    if (!isName(p.name) || !isName(ns)) (ok = false), (reason = 'NoMatchingParent'), (message = `parentRef ${show(p.name)} in ${show(ns)} is not a Service name`);
    else if (p.port !== undefined && !isPort(p.port)) (ok = false), (reason = 'NoMatchingParent'), (message = `parentRef port ${show(p.port)} is out of range 1-65535`);
    else if (p.sectionName !== undefined) (ok = false), (reason = 'UnsupportedValue'), (message = 'sectionName is not supported for a Service parent; use port');
    else if (svc === undefined) (ok = false), (reason = 'NoMatchingParent'), (message = `Service ${ns}/${p.name} not found`);
    else if (p.port !== undefined && !svc.ports.includes(p.port)) (ok = false), (reason = 'NoMatchingParent'), (message = `Service ${ns}/${p.name} has no port ${p.port}`);
    else if (frontless(svc, ns, p.name) !== null) (ok = false), (reason = 'NoMatchingParent'), (message = frontless(svc, ns, p.name)!);
    if (isName(p.name) && isName(ns) && (p.port === undefined || isPort(p.port))) {
      const ref: ParentRef = { namespace: ns, name: p.name };
      if (p.port !== undefined) ref.port = p.port;
      if (!parentRefs.some((r) => r.namespace === ref.namespace && r.name === ref.name && r.port === ref.port)) parentRefs.push(ref);
    }
    accepted.push({ status, ok, reason, message });
  }
  const cx: ConvertContext = { kind, namespace, name, services, parentKeys: new Set(parentRefs.map((p) => `${p.namespace}/${p.name}`)), unresolved: [] };

  let record: RouteRecord | null = null;
  let invalid: string | null = null;
  try {
    if (parents.length === 0) throw new Invalid('no parentRef names a Service (group "" or core, kind Service)');
    record = convertSpec(o, spec, cx, parentRefs);
  } catch (e) {
    // Whatever the object holds, it costs this route, never the controller.
    invalid = (e as Error).message;
  }

  for (const a of accepted) {
    const c: Condition[] = a.status.conditions;
    if (invalid !== null) c.push({ type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: invalid });
    else c.push({ type: 'Accepted', status: a.ok ? 'True' : 'False', reason: a.reason, message: a.message });
    if (cx.unresolved.length === 0) c.push({ type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'every backendRef resolved' });
    else c.push({ type: 'ResolvedRefs', status: 'False', reason: cx.unresolved[0]![0], message: cx.unresolved.map((u) => u[1]).join('; ').slice(0, 1024) });
    if (invalid === null && !a.ok) problems.push(`${what}: not accepted by ${a.message.startsWith('Service') ? a.message : `parent ${a.status.parentRef.name}: ${a.message}`}`);
  }
  if (invalid !== null) problems.push(`${what}: not accepted (the last good version keeps serving): ${invalid}`);
  for (const u of cx.unresolved) problems.push(`${what}: ${u[1]}; that backend's share answers 500`);
  return { kind, namespace, name, record, parents, problems };
}

function convertSpec(o: Obj, spec: Obj, cx: ConvertContext, parents: ParentRef[]): RouteRecord {
  const { kind, namespace, name } = cx;
  const objectSrc = (field: string): Source => ({ kind, namespace, name, field });
  const ann = policyFromAnnotations(annotationsOf(o), { kind: kind as AnnotatedKind, namespace, name });
  if (ann.errors.length > 0) throw new Invalid(ann.errors.join('; '));
  const annRetry = kind === 'GRPCRoute' ? ann.grpcRetry : ann.httpRetry;
  const rawRules: Obj[] = spec.rules === undefined || spec.rules === null ? [{}] : spec.rules;
  if (!Array.isArray(rawRules)) throw new Invalid('spec.rules: expected a list');
  if (rawRules.length > MAX_RULES) throw new Invalid(`spec.rules: more than ${MAX_RULES} rules`);
  const rules: RouteRule[] = rawRules.map((r, i) => {
    const w = `spec.rules[${i}]`;
    const filters = filtersOf(r?.filters, `${w}.filters`, kind, 'rule');
    const rawMatches: Obj[] = r?.matches ?? [];
    if (!Array.isArray(rawMatches) || rawMatches.length > MAX_MATCHES) throw new Invalid(`${w}.matches: expected a list of at most ${MAX_MATCHES}`);
    const matches = rawMatches.map((m, j) => (kind === 'GRPCRoute' ? grpcMatch(m, `${w}.matches[${j}]`) : httpMatch(m, `${w}.matches[${j}]`)));
    // A match that constrains nothing matches every request: the rule needs no matches.
    const effective = matches.some((m) => Object.keys(m).length === 0) ? [] : matches;
    const rawBackends: Obj[] = r?.backendRefs ?? [];
    if (!Array.isArray(rawBackends) || rawBackends.length > MAX_BACKENDS) throw new Invalid(`${w}.backendRefs: expected a list of at most ${MAX_BACKENDS}`);
    const backends = rawBackends.map((b, j) => {
      const ref = backendOf(b, `${w}.backendRefs[${j}]`, cx);
      // Applied only when this backend is chosen (the spec), after the rule's request edits and before its response edits.
      const { requestHeaders, responseHeaders } = filtersOf(b?.filters, `${w}.backendRefs[${j}].filters`, kind, 'backendRef');
      if (requestHeaders !== undefined && Object.keys(requestHeaders).length > 0) ref.requestHeaders = requestHeaders;
      if (responseHeaders !== undefined && Object.keys(responseHeaders).length > 0) ref.responseHeaders = responseHeaders;
      return ref;
    });
    // Every weight 0 is served, not refused: no backend gets the rule's requests, which answer 500
    // (client-routing.ts pickAttempt). Refused, the rule would keep its last weights or, new, let
    // its requests through to the parent Service: the traffic a drain meant to stop.
    const rule: RouteRule = { matches: effective, backends };
    if (typeof r?.name === 'string' && r.name !== '') rule.name = r.name;
    const { requestHeaders, responseHeaders } = filters;
    if (requestHeaders !== undefined && Object.keys(requestHeaders).length > 0) rule.requestHeaders = requestHeaders;
    if (responseHeaders !== undefined && Object.keys(responseHeaders).length > 0) rule.responseHeaders = responseHeaders;
    if (filters.redirect !== undefined) {
      // The spec (a CEL rule of HTTPRouteRule): "RequestRedirect filter must not be used together with backendRefs".
      if (rawBackends.length > 0) throw new Invalid(`${w}: RequestRedirect and backendRefs may not be combined (the spec forbids it: the proxy answers a redirect itself); remove the backendRefs or the filter`);
      rule.redirect = redirectOf(filters.redirect, `${w}.filters[${r.filters.findIndex((f: Obj) => f?.type === 'RequestRedirect')}].requestRedirect`, rawMatches, matches);
    }
    // Linkerd's annotations win over the fields, per timeout and as a whole for retries.
    const fields = kind === 'HTTPRoute' ? timeoutsOf(r?.timeouts, `${w}.timeouts`, objectSrc) : { sources: [] as Source[] };
    if (ann.timeouts !== undefined || fields.timeouts !== undefined) {
      rule.timeouts = { ...fields.timeouts, ...ann.timeouts };
      rule.timeoutSources = [...fields.sources.filter((s) => !ann.timeoutSources.some((a) => overrides(a, s))), ...ann.timeoutSources];
      const t = rule.timeouts;
      if (t.requestMs !== undefined && t.backendRequestMs !== undefined && t.backendRequestMs > t.requestMs) {
        throw new Invalid(`the backend request timeout (${t.backendRequestMs} ms) is longer than the request timeout (${t.requestMs} ms)`);
      }
    }
    if (annRetry !== undefined) {
      rule.retry = annRetry;
      rule.retrySources = ann.retrySources;
    } else if (kind === 'HTTPRoute' && r?.retry !== undefined && r.retry !== null) {
      rule.retry = retryOf(r.retry, `${w}.retry`)!;
      rule.retrySources = [objectSrc(`${w}.retry`)];
    }
    return rule;
  });
  const record: RouteRecord = { kind, namespace, name, createdAt: createdAtOf(o), parents, rules };
  try {
    return parseRouteRecord(JSON.parse(JSON.stringify(record)));
  } catch (e) {
    throw new Invalid((e as Error).message);
  }
}

/** An annotation that replaces the field's timeout. */
function overrides(a: Source, field: Source): boolean {
  return (a.annotation === 'timeout.linkerd.io/request' && field.field?.endsWith('.request') === true) ||
    (a.annotation === 'timeout.linkerd.io/response' && field.field?.endsWith('.backendRequest') === true);
}
