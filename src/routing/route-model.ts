// The one route model (DESIGN.md, "Routing"): what HTTPRoute, GRPCRoute, SMI TrafficSplit and
// Linkerd's retry/timeout annotations become, as plain data. The controller converts each
// object once (gateway-api.ts, smi.ts, linkerd-annotations.ts) and streams the record to the
// agents in the discovery protocol; the agent validates it here (the same parser the controller
// gates its output with, so it never sends a record an agent refuses) and compiles it into
// route tables (route-table.ts). The forwarders see none of this: they ask the table.
import { isName, isPort, recordReader, type Fail } from '../util/record-reader.ts';
import { regexProblem } from '../util/regex-check.ts';
import { show } from '../util/show.ts';
import { MAX_TIMER_MS } from '../util/timer-bound.ts';

export type RouteKind = 'HTTPRoute' | 'GRPCRoute' | 'TrafficSplit';
export const ROUTE_KINDS: readonly RouteKind[] = ['HTTPRoute', 'GRPCRoute', 'TrafficSplit'];

/** Where a setting came from, for `diagnostics policy`: an object, and a field or an annotation of it. */
export interface Source {
  kind: string;
  namespace: string;
  name: string;
  /** e.g. spec.rules[0].timeouts.request */
  field?: string;
  /** e.g. retry.linkerd.io/http */
  annotation?: string;
}

/**
 * RegularExpression values are JavaScript regular expressions searched in the value; the
 * converters anchor them as their spec says (Gateway API: the whole value; SMI's pathRegex:
 * the start of the path).
 */
export type StringMatchType = 'Exact' | 'PathPrefix' | 'RegularExpression';

export interface HeaderMatch {
  /** Lower-case header name. */
  name: string;
  type: 'Exact' | 'RegularExpression';
  value: string;
}

export interface QueryParamMatch {
  /** As written: query parameter names are case-sensitive. */
  name: string;
  type: 'Exact' | 'RegularExpression';
  value: string;
}

/** All present parts must match (AND); a rule matches when any of its matches does (OR). */
export interface RouteMatch {
  path?: { type: StringMatchType; value: string };
  /** Upper-case HTTP method. */
  method?: string;
  headers?: HeaderMatch[];
  /** Compared with the request's first value of each parameter, percent-decoded (route-table.ts). */
  queryParams?: QueryParamMatch[];
  /** GRPCRoute: the request's :path is /service/method. Exact when a part is given; absent parts match anything. */
  grpc?: { type: 'Exact' | 'RegularExpression'; service?: string; method?: string };
}

export interface BackendRef {
  namespace: string;
  name: string;
  /** SAME_PORT (0): the port the client called on the parent (SMI backends have no port). */
  port: number;
  /** 0 to 1,000,000: the share of the rule's requests is weight / sum of weights; every weight 0: none is sent, each answers 500. */
  weight: number;
  /** Set when the reference cannot be used (not found, not permitted): its share answers 500. */
  problem?: string;
  /**
   * Gateway API backendRefs[].filters of type RequestHeaderModifier: applied after the rule's,
   * to the request of an attempt sent to this backend only.
   */
  requestHeaders?: HeaderModifier;
  /** ... of type ResponseHeaderModifier: applied before the rule's, to a response this backend gave. */
  responseHeaders?: HeaderModifier;
}

export interface Timeouts {
  /** The whole request, retries included (timeouts.request, timeout.linkerd.io/request). */
  requestMs?: number;
  /** Each attempt, to the end of its response (timeouts.backendRequest, timeout.linkerd.io/response). */
  backendRequestMs?: number;
  /** No bytes either way on the request for this long (timeout.linkerd.io/idle). */
  idleMs?: number;
}

export interface RetryPolicy {
  /** Retries after the first attempt (retry.linkerd.io/limit, retry.attempts). */
  limit: number;
  /** Inclusive HTTP status ranges that are retried; absent for gRPC-only policies. */
  httpStatuses?: Array<[number, number]>;
  /** gRPC status codes that are retried. */
  grpcCodes?: number[];
  /** The shortest wait before a retry (retry.backoff); default DEFAULT_BACKOFF_MS. */
  backoffMs?: number;
  /** An attempt without a response head for this long is cancelled and retried (retry.linkerd.io/timeout). */
  timeoutMs?: number;
}

/** Gateway API's Request/ResponseHeaderModifier: applied to the request sent upstream (every attempt), or the response. */
export interface HeaderModifier {
  /** Lower-case names. Replace every value of the header, or add it. */
  set?: Array<{ name: string; value: string }>;
  /** Append a value (another field line) to whatever the request carries. */
  add?: Array<{ name: string; value: string }>;
  /** Lower-case names to delete. */
  remove?: string[];
}

/** Gateway API's RequestRedirect: the Location is the request's URL with these parts replaced (routing/redirect.ts). */
export interface Redirect {
  statusCode: RedirectStatus;
  scheme?: 'http' | 'https';
  /** Replaces the request's host (without its port). */
  hostname?: string;
  port?: number;
  /**
   * ReplaceFullPath: the whole path; ReplacePrefixMatch: `prefix` (the rule's one PathPrefix
   * match, "/" for none) is replaced by `value`. The query is kept either way.
   */
  path?: { type: 'ReplaceFullPath'; value: string } | { type: 'ReplacePrefixMatch'; value: string; prefix: string };
}

export type RedirectStatus = 301 | 302 | 303 | 307 | 308;
export const REDIRECT_STATUSES: readonly number[] = [301, 302, 303, 307, 308];

export interface RouteRule {
  /** HTTPRoute rules[].name, or the SMI match name. */
  name?: string;
  /** HTTPRoute and GRPCRoute rules[].filters[] of type RequestHeaderModifier. */
  requestHeaders?: HeaderModifier;
  /** ... of type ResponseHeaderModifier: applied to the response head the client gets. */
  responseHeaders?: HeaderModifier;
  /** HTTPRoute rules[].filters[] of type RequestRedirect: the proxy answers; such a rule has no backends. */
  redirect?: Redirect;
  /** Empty: matches every request (Gateway API's default PathPrefix "/"). */
  matches: RouteMatch[];
  /** Empty: the parent Service itself. */
  backends: BackendRef[];
  /** Absent: the parent Service's annotations apply (as Linkerd does); present, even empty (Gateway API "0s"), the rule's own. */
  timeouts?: Timeouts;
  retry?: RetryPolicy | null;
  /** Provenance of timeouts and retry, shown by diagnostics policy. */
  timeoutSources?: Source[];
  retrySources?: Source[];
}

export interface ParentRef {
  namespace: string;
  name: string;
  /** Absent: every port of the Service. */
  port?: number;
}

/** One route object, converted. */
export interface RouteRecord {
  kind: RouteKind;
  namespace: string;
  name: string;
  /** creationTimestamp in ms: the older route wins a tie (Gateway API's precedence). */
  createdAt: number;
  parents: ParentRef[];
  rules: RouteRule[];
  /**
   * Set by an agent for a record from the controller it could not read whole (parseStreamedRoute):
   * why. Its rules are then one rule whose one backend answers 500 with that, tried before every
   * other rule of the route's kind on its parents: the route fails closed.
   */
  refused?: string;
}

// Gateway API v1's list bounds, so no record is larger than the CRD allows.
export const MAX_RULES = 16;
export const MAX_MATCHES = 64;
export const MAX_HEADERS = 16;
export const MAX_QUERY_PARAMS = 16;
/** Each of a RequestHeaderModifier's set, add and remove (the CRD's bound). */
export const MAX_HEADER_EDITS = 16;
export const MAX_BACKENDS = 64;
export const MAX_PARENTS = 32;
export const MAX_WEIGHT = 1_000_000;
export const MAX_RETRY_LIMIT = 10;
/** Retry backoff: the first wait is at least this, the waits double up to DEFAULT_MAX_BACKOFF_MS. */
export const DEFAULT_BACKOFF_MS = 25;
export const DEFAULT_MAX_BACKOFF_MS = 250;
/** The longest timeout or backoff a record holds: setTimeout's longest delay (24.8 days); longer ones are held as this. */
export const MAX_MS = MAX_TIMER_MS;

/** A backend port meaning "the port the client called on the parent Service". */
export const SAME_PORT = 0;

export class RouteError extends Error {}

const read = recordReader((m) => new RouteError(m));
const fail: Fail = read.fail;
const { obj, name, list } = read;

/**
 * Refuses a field this parser does not know. Read without it, a record would route otherwise
 * than the controller meant (an unknown match kind would match every request, an unknown filter
 * would be skipped), so a record is read whole or not at all. A field whose value is undefined
 * is absent (the converters' objects before JSON).
 */
function only(o: Record<string, unknown>, where: string, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (o[k] !== undefined && !known.includes(k)) fail(`${where}.${k}`, `unknown field ${show(k, 64)}: this agent does not know it (a controller of a newer release?); fields read here: ${known.join(', ')}`);
  }
}

function ms(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_MS) fail(where, `expected milliseconds 1-${MAX_MS}, got ${show(v)}`);
  return v;
}

function shortString(v: unknown, where: string, max = 256): string {
  if (typeof v !== 'string' || v.length > max) fail(where, `expected a string of at most ${max} characters`);
  return v;
}

/** A regular expression as a route may carry it: bounded, and compiled once here to prove it is one. */
export function checkRegex(v: string, where: string): string {
  const problem = regexProblem(v);
  if (problem !== null) fail(where, problem);
  return v;
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const METHOD = /^[A-Z]{1,32}$/;
/** Gateway API's HTTPHeaderName: an RFC 9110 token, case as written (query parameter names keep it). */
export const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$/;
/** A field value we can write in an HTTP/1 head and node:http2 accepts: no CR, LF, NUL or other controls but tab. */
export const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]{0,4096}$/;

/**
 * Headers a RequestHeaderModifier may not touch: the hop-by-hop and framing fields the proxy
 * owns (changing them would break the message or the connection), and host, which the proxy
 * keeps as the client sent it (Envoy refuses it too; HTTP/2's :authority is not a header).
 */
export const UNMODIFIABLE_HEADERS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'content-length', 'http2-settings', 'host',
]);

/**
 * Why a lower-case header name may not be modified; null when it may. Responses: the same
 * hop-by-hop and framing fields (te and http2-settings mean nothing there but are refused alike),
 * host is not refused (a response's host field is an ordinary header).
 */
export function unmodifiableHeader(name: string, response = false): string | null {
  if (response && name === 'host') return null;
  if (UNMODIFIABLE_HEADERS.has(name)) return `${show(name)} is ${name === 'host' ? 'the request\'s authority, which the proxy keeps as the client sent it' : 'a hop-by-hop or framing header the proxy manages'}; modify another header`;
  return null;
}

function parseHeaderModifier(v: unknown, where: string, response = false): HeaderModifier {
  const o = obj(v, where);
  only(o, where, ['set', 'add', 'remove']);
  const out: HeaderModifier = {};
  const seen = (names: string[], w: string) => {
    for (const [i, n] of names.entries()) {
      if (typeof n !== 'string' || !HEADER_NAME.test(n) || n.length > 256) fail(`${w}[${i}]`, `expected a lower-case header name, got ${show(n)}`);
      const why = unmodifiableHeader(n, response);
      if (why !== null) fail(`${w}[${i}]`, why);
      if (names.indexOf(n) !== i) fail(`${w}[${i}]`, `${show(n)} is named twice`);
    }
  };
  for (const part of ['set', 'add'] as const) {
    if (o[part] === undefined) continue;
    const l = list(o[part], `${where}.${part}`, MAX_HEADER_EDITS).map((h, i) => {
      const ho = obj(h, `${where}.${part}[${i}]`);
      only(ho, `${where}.${part}[${i}]`, ['name', 'value']);
      if (typeof ho.value !== 'string' || !FIELD_VALUE.test(ho.value)) fail(`${where}.${part}[${i}].value`, 'expected a header value without control characters, at most 4096 characters');
      return { name: ho.name as string, value: ho.value };
    });
    seen(l.map((h) => h.name), `${where}.${part}`);
    out[part] = l;
  }
  if (o.remove !== undefined) {
    const l = list(o.remove, `${where}.remove`, MAX_HEADER_EDITS) as string[];
    seen(l, `${where}.remove`);
    out.remove = [...l];
  }
  return out;
}

/** A host name for a Location: RFC 1123 labels (Gateway API's PreciseHostname), lower-case. */
export const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
/** A path for a Location: "/" then URI path characters (no "?", "#", spaces or controls). */
export const REDIRECT_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]{0,1023}$/;

function parseRedirect(v: unknown, where: string): Redirect {
  const o = obj(v, where);
  only(o, where, ['statusCode', 'scheme', 'hostname', 'port', 'path']);
  if (!REDIRECT_STATUSES.includes(o.statusCode as number)) fail(`${where}.statusCode`, `expected one of ${REDIRECT_STATUSES.join(', ')}, got ${show(o.statusCode)}`);
  const out: Redirect = { statusCode: o.statusCode as RedirectStatus };
  if (o.scheme !== undefined) {
    if (o.scheme !== 'http' && o.scheme !== 'https') fail(`${where}.scheme`, `expected http or https, got ${show(o.scheme)}`);
    out.scheme = o.scheme;
  }
  if (o.hostname !== undefined) {
    if (typeof o.hostname !== 'string' || !HOSTNAME.test(o.hostname)) fail(`${where}.hostname`, `expected a lower-case host name, got ${show(o.hostname)}`);
    out.hostname = o.hostname;
  }
  if (o.port !== undefined) {
    if (!isPort(o.port)) fail(`${where}.port`, `expected a port 1-65535, got ${show(o.port)}`);
    out.port = o.port;
  }
  if (o.path !== undefined) {
    const p = obj(o.path, `${where}.path`);
    const path = (x: unknown, w: string): string => {
      if (typeof x !== 'string' || !REDIRECT_PATH.test(x)) fail(w, `expected a path starting with "/" (no query), got ${show(x)}`);
      return x as string;
    };
    only(p, `${where}.path`, p.type === 'ReplacePrefixMatch' ? ['type', 'value', 'prefix'] : ['type', 'value']);
    if (p.type === 'ReplaceFullPath') out.path = { type: 'ReplaceFullPath', value: path(p.value, `${where}.path.value`) };
    else if (p.type === 'ReplacePrefixMatch') out.path = { type: 'ReplacePrefixMatch', value: path(p.value, `${where}.path.value`), prefix: path(p.prefix, `${where}.path.prefix`) };
    else fail(`${where}.path.type`, `expected ReplaceFullPath or ReplacePrefixMatch, got ${show(p.type)}`);
  }
  return out;
}

/** One match as a record carries it (a route's, or a Linkerd Server route's: policy/server-model.ts); throws RouteError naming the field. */
export function parseMatch(v: unknown, where: string): RouteMatch {
  const o = obj(v, where);
  only(o, where, ['path', 'method', 'headers', 'queryParams', 'grpc']);
  const out: RouteMatch = {};
  if (o.path !== undefined) {
    const p = obj(o.path, `${where}.path`);
    only(p, `${where}.path`, ['type', 'value']);
    if (p.type !== 'Exact' && p.type !== 'PathPrefix' && p.type !== 'RegularExpression') fail(`${where}.path.type`, `expected Exact, PathPrefix or RegularExpression, got ${show(p.type)}`);
    const value = shortString(p.value, `${where}.path.value`, 1024);
    if (p.type !== 'RegularExpression' && !value.startsWith('/')) fail(`${where}.path.value`, `must start with "/", got ${show(value)}`);
    if (p.type === 'RegularExpression') checkRegex(value, `${where}.path.value`);
    out.path = { type: p.type, value };
  }
  if (o.method !== undefined) {
    if (typeof o.method !== 'string' || !METHOD.test(o.method)) fail(`${where}.method`, `expected an upper-case HTTP method, got ${show(o.method)}`);
    out.method = o.method;
  }
  if (o.headers !== undefined) {
    out.headers = list(o.headers, `${where}.headers`, MAX_HEADERS).map((h, i) => {
      const w = `${where}.headers[${i}]`;
      const ho = obj(h, w);
      only(ho, w, ['name', 'type', 'value']);
      if (typeof ho.name !== 'string' || !HEADER_NAME.test(ho.name) || ho.name.length > 256) fail(`${w}.name`, `expected a lower-case header name, got ${show(ho.name)}`);
      if (ho.type !== 'Exact' && ho.type !== 'RegularExpression') fail(`${w}.type`, `expected Exact or RegularExpression, got ${show(ho.type)}`);
      const value = shortString(ho.value, `${w}.value`, 4096);
      if (ho.type === 'RegularExpression') checkRegex(value, `${w}.value`);
      return { name: ho.name, type: ho.type, value };
    });
  }
  if (o.queryParams !== undefined) {
    out.queryParams = list(o.queryParams, `${where}.queryParams`, MAX_QUERY_PARAMS).map((q, i) => {
      const w = `${where}.queryParams[${i}]`;
      const qo = obj(q, w);
      only(qo, w, ['name', 'type', 'value']);
      if (typeof qo.name !== 'string' || !TOKEN.test(qo.name)) fail(`${w}.name`, `expected a query parameter name (letters, digits and !#$%&'*+-.^_\`|~), got ${show(qo.name)}`);
      if (qo.type !== 'Exact' && qo.type !== 'RegularExpression') fail(`${w}.type`, `expected Exact or RegularExpression, got ${show(qo.type)}`);
      const value = shortString(qo.value, `${w}.value`, 1024);
      if (qo.type === 'RegularExpression') checkRegex(value, `${w}.value`);
      return { name: qo.name, type: qo.type, value };
    });
  }
  if (o.grpc !== undefined) {
    const g = obj(o.grpc, `${where}.grpc`);
    only(g, `${where}.grpc`, ['type', 'service', 'method']);
    if (g.type !== 'Exact' && g.type !== 'RegularExpression') fail(`${where}.grpc.type`, `expected Exact or RegularExpression, got ${show(g.type)}`);
    const grpc: NonNullable<RouteMatch['grpc']> = { type: g.type };
    for (const part of ['service', 'method'] as const) {
      if (g[part] === undefined) continue;
      const s = shortString(g[part], `${where}.grpc.${part}`, 1024);
      if (s === '') fail(`${where}.grpc.${part}`, 'must not be empty');
      if (g.type === 'RegularExpression') checkRegex(s, `${where}.grpc.${part}`);
      grpc[part] = s;
    }
    out.grpc = grpc;
  }
  return out;
}

function parseBackend(v: unknown, where: string): BackendRef {
  const o = obj(v, where);
  only(o, where, ['namespace', 'name', 'port', 'weight', 'problem', 'requestHeaders', 'responseHeaders']);
  if (typeof o.weight !== 'number' || !Number.isInteger(o.weight) || o.weight < 0 || o.weight > MAX_WEIGHT) fail(`${where}.weight`, `expected an integer 0-${MAX_WEIGHT}, got ${show(o.weight)}`);
  if (o.port !== SAME_PORT && !isPort(o.port)) fail(`${where}.port`, `expected a port 1-65535 (or 0: the parent's), got ${show(o.port)}`);
  const out: BackendRef = { namespace: name(o.namespace, `${where}.namespace`), name: name(o.name, `${where}.name`), port: o.port, weight: o.weight };
  if (o.problem !== undefined) out.problem = shortString(o.problem, `${where}.problem`, 512);
  if (o.requestHeaders !== undefined) out.requestHeaders = parseHeaderModifier(o.requestHeaders, `${where}.requestHeaders`);
  if (o.responseHeaders !== undefined) out.responseHeaders = parseHeaderModifier(o.responseHeaders, `${where}.responseHeaders`, true);
  return out;
}

function parseSource(v: unknown, where: string): Source {
  const o = obj(v, where);
  only(o, where, ['kind', 'namespace', 'name', 'field', 'annotation']);
  const out: Source = { kind: shortString(o.kind, `${where}.kind`, 64), namespace: name(o.namespace, `${where}.namespace`), name: name(o.name, `${where}.name`) };
  if (o.field !== undefined) out.field = shortString(o.field, `${where}.field`);
  if (o.annotation !== undefined) out.annotation = shortString(o.annotation, `${where}.annotation`);
  return out;
}

export function parseTimeouts(v: unknown, where: string): Timeouts {
  const o = obj(v, where);
  only(o, where, ['requestMs', 'backendRequestMs', 'idleMs']);
  const out: Timeouts = {};
  const r = ms(o.requestMs, `${where}.requestMs`);
  const b = ms(o.backendRequestMs, `${where}.backendRequestMs`);
  const i = ms(o.idleMs, `${where}.idleMs`);
  if (r !== undefined) out.requestMs = r;
  if (b !== undefined) out.backendRequestMs = b;
  if (i !== undefined) out.idleMs = i;
  return out;
}

export function parseRetry(v: unknown, where: string): RetryPolicy {
  const o = obj(v, where);
  only(o, where, ['limit', 'httpStatuses', 'grpcCodes', 'backoffMs', 'timeoutMs']);
  if (typeof o.limit !== 'number' || !Number.isInteger(o.limit) || o.limit < 0 || o.limit > MAX_RETRY_LIMIT) fail(`${where}.limit`, `expected an integer 0-${MAX_RETRY_LIMIT}, got ${show(o.limit)}`);
  const out: RetryPolicy = { limit: o.limit };
  if (o.httpStatuses !== undefined) {
    out.httpStatuses = list(o.httpStatuses, `${where}.httpStatuses`, 64).map((r, i) => {
      const w = `${where}.httpStatuses[${i}]`;
      if (!Array.isArray(r) || r.length !== 2 || !r.every((n) => Number.isInteger(n) && n >= 100 && n <= 599) || r[0] > r[1]) fail(w, `expected [low, high] status codes 100-599, got ${show(r)}`);
      return [r[0], r[1]] as [number, number];
    });
  }
  if (o.grpcCodes !== undefined) {
    out.grpcCodes = list(o.grpcCodes, `${where}.grpcCodes`, 17).map((c, i) => {
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 0 || c > 16) fail(`${where}.grpcCodes[${i}]`, `expected a gRPC status code 0-16, got ${show(c)}`);
      return c;
    });
  }
  const b = ms(o.backoffMs, `${where}.backoffMs`);
  const t = ms(o.timeoutMs, `${where}.timeoutMs`);
  if (b !== undefined) out.backoffMs = b;
  if (t !== undefined) out.timeoutMs = t;
  return out;
}

const RULE_FIELDS = ['name', 'requestHeaders', 'responseHeaders', 'redirect', 'matches', 'backends', 'timeouts', 'retry', 'timeoutSources', 'retrySources'];

function parseRule(v: unknown, where: string): RouteRule {
  const o = obj(v, where);
  only(o, where, RULE_FIELDS);
  const out: RouteRule = {
    matches: list(o.matches, `${where}.matches`, MAX_MATCHES).map((m, i) => parseMatch(m, `${where}.matches[${i}]`)),
    backends: list(o.backends, `${where}.backends`, MAX_BACKENDS).map((b, i) => parseBackend(b, `${where}.backends[${i}]`)),
  };
  if (o.name !== undefined) out.name = shortString(o.name, `${where}.name`, 253);
  if (o.requestHeaders !== undefined) out.requestHeaders = parseHeaderModifier(o.requestHeaders, `${where}.requestHeaders`);
  if (o.responseHeaders !== undefined) out.responseHeaders = parseHeaderModifier(o.responseHeaders, `${where}.responseHeaders`, true);
  if (o.redirect !== undefined) {
    out.redirect = parseRedirect(o.redirect, `${where}.redirect`);
    if (out.backends.length > 0) fail(`${where}.redirect`, 'a redirect rule has no backends');
  }
  if (o.timeouts !== undefined) out.timeouts = parseTimeouts(o.timeouts, `${where}.timeouts`);
  if (o.retry !== undefined) out.retry = o.retry === null ? null : parseRetry(o.retry, `${where}.retry`);
  if (o.timeoutSources !== undefined) out.timeoutSources = list(o.timeoutSources, `${where}.timeoutSources`, 8).map((s, i) => parseSource(s, `${where}.timeoutSources[${i}]`));
  if (o.retrySources !== undefined) out.retrySources = list(o.retrySources, `${where}.retrySources`, 8).map((s, i) => parseSource(s, `${where}.retrySources[${i}]`));
  return out;
}

type RouteHead = Omit<RouteRecord, 'rules' | 'refused'>;

/** What a record is about: its kind, name, age and parents; throws RouteError naming the field. */
function parseHead(o: Record<string, unknown>): RouteHead {
  if (!ROUTE_KINDS.includes(o.kind as RouteKind)) fail('route.kind', `expected one of ${ROUTE_KINDS.join(', ')}, got ${show(o.kind)}`);
  const kind = o.kind as RouteKind;
  const namespace = name(o.namespace, 'route.namespace');
  const nm = name(o.name, 'route.name');
  const w = `${kind} ${namespace}/${nm}`;
  if (typeof o.createdAt !== 'number' || !Number.isFinite(o.createdAt) || o.createdAt < 0) fail(`${w}: createdAt`, 'expected milliseconds since the epoch');
  const parents = list(o.parents, `${w}: parents`, MAX_PARENTS).map((p, i) => {
    const po = obj(p, `${w}: parents[${i}]`);
    only(po, `${w}: parents[${i}]`, ['namespace', 'name', 'port']);
    const out: ParentRef = { namespace: name(po.namespace, `${w}: parents[${i}].namespace`), name: name(po.name, `${w}: parents[${i}].name`) };
    if (po.port !== undefined) {
      if (!isPort(po.port)) fail(`${w}: parents[${i}].port`, `expected a port 1-65535, got ${show(po.port)}`);
      out.port = po.port;
    }
    return out;
  });
  if (parents.length === 0) fail(`${w}: parents`, 'expected at least one parent Service');
  return { kind, namespace, name: nm, createdAt: o.createdAt, parents };
}

/** A route record as the discovery stream carries it, validated whole; throws RouteError naming the field. */
export function parseRouteRecord(v: unknown): RouteRecord {
  const o = obj(v, 'route');
  const head = parseHead(o);
  const w = `${head.kind} ${head.namespace}/${head.name}`;
  only(o, w, ['kind', 'namespace', 'name', 'createdAt', 'parents', 'rules', 'refused']);
  const rules = list(o.rules, `${w}: rules`, MAX_RULES).map((r, i) => parseRule(r, `${w}: rules[${i}]`));
  if (rules.length === 0) fail(`${w}: rules`, 'expected at least one rule');
  const out: RouteRecord = { ...head, rules };
  if (o.refused !== undefined) out.refused = shortString(o.refused, `${w}: refused`, MAX_REFUSED);
  return out;
}

/** Why a route is refused, at most this long: its backend's problem (at most 512) says it with 106 characters more. */
const MAX_REFUSED = 400;

/**
 * An agent's reading of a route record from the controller. A record it cannot read whole but
 * whose kind, name and parents it can is not applied as far as it understood it, nor dropped
 * (the route would route otherwise than the controller meant either way): it fails closed, as
 * Linkerd's proxy does with a policy it cannot apply. Its requests answer 500 naming the
 * problem, until the controller sends a version this agent reads (docs/routing.md, "Bad
 * routes"). A record without a readable head throws RouteError: the stream is garbage.
 */
export function parseStreamedRoute(v: unknown): RouteRecord {
  try {
    return parseRouteRecord(v);
  } catch (e) {
    if (!(e instanceof RouteError)) throw e;
    let head: RouteHead;
    try {
      head = parseHead(obj(v, 'route'));
    } catch {
      throw e;
    }
    return refusedRoute(head, e.message);
  }
}

/** The record that fails a route closed: one rule, before the others, whose one backend answers 500 with `why`. */
export function refusedRoute(head: RouteHead, why: string): RouteRecord {
  const refused = why.length > MAX_REFUSED ? `${why.slice(0, MAX_REFUSED - 3)}...` : why;
  const parent = head.parents[0]!;
  return {
    ...head,
    refused,
    rules: [{
      matches: [],
      backends: [{ namespace: parent.namespace, name: parent.name, port: SAME_PORT, weight: 1, problem: `this agent cannot read the route the controller sent (${refused}); run agents and the controller of the same release` }],
      // Nothing to retry: every attempt would answer the same.
      retry: null,
    }],
  };
}

export const routeKey = (r: { kind: RouteKind; namespace: string; name: string }): string => `${r.kind}/${r.namespace}/${r.name}`;

/** "HTTPRoute/ns/name" -> its parts; null when it is not one. */
export function parseRouteKey(key: string): { kind: RouteKind; namespace: string; name: string } | null {
  const parts = key.split('/');
  if (parts.length !== 3 || !ROUTE_KINDS.includes(parts[0] as RouteKind) || !isName(parts[1]) || !isName(parts[2])) return null;
  return { kind: parts[0] as RouteKind, namespace: parts[1]!, name: parts[2]! };
}
