// Route records attached to one Service port, compiled for the per-request path: which routes
// apply to a client namespace (precedence), the order matches are tried in (specificity), and
// the pure decisions findRoute(table, request) and pickBackend(rule, random).
//
// Precedence, per client namespace (GAMMA, as Linkerd implements it):
//   1. routes in the client's own namespace that name this Service (consumer routes), if any;
//   2. else HTTPRoutes and GRPCRoutes in the Service's namespace (producer routes), if any;
//   3. else SMI TrafficSplits on the Service (the older first);
//   4. else, with Linkerd retry or timeout annotations on the Service, a default route to the
//      Service itself; else no table at all (the forwarders' unrouted path).
// A gRPC request (content-type application/grpc) uses the GRPCRoutes when any apply, else the
// HTTPRoutes; other requests use the HTTPRoutes. Once a route applies, a request no rule
// matches is answered 404 (gRPC: UNIMPLEMENTED) by the forwarder.
//
// Within the routes that apply, the most specific match wins (Gateway API): an Exact path, then
// a regular expression, then the longest PathPrefix; then a method; then the most headers; then
// the most query parameters. gRPC: the longest service, then method, then the most headers. Ties
// go to the older route, then the route's namespace/name, then the rule's order. A route the
// agent could not read (RouteRecord.refused) goes before all of them: it fails closed.
import type { AnnotationPolicy } from './linkerd-annotations.ts';
import { CompiledHeaderModifier } from './header-modifier.ts';
import { CompiledRedirect } from './redirect.ts';
import { SAME_PORT, type BackendRef, type HeaderModifier, type RetryPolicy, type RouteMatch, type RouteRecord, type Source, type Timeouts } from './route-model.ts';
import { CompiledMatch, PATH_NONE, type RouteRequest } from './route-match.ts';

/** A route as Linkerd's route_* labels name it. */
export interface RouteMeta {
  group: string;
  kind: string;
  namespace: string;
  name: string;
}

export class CompiledBackend {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  readonly weight: number;
  /** Set when the reference cannot be used: this backend's share answers 500 with it. */
  readonly problem: string | undefined;
  /** Its labels (backend_*). */
  readonly ref: { namespace: string; name: string; port: number };
  /**
   * With a RequestHeaderModifier of its own: the rule's and then its own, as one modifier, for the
   * attempts sent to it. null: an attempt to it takes the rule's (CompiledRule.requestHeaders).
   */
  readonly requestHeaders: CompiledHeaderModifier | null;
  /** With a ResponseHeaderModifier of its own: its own and then the rule's, for the responses it gives; null: the rule's. */
  readonly responseHeaders: CompiledHeaderModifier | null;
  /** Its own filters as the route gave them (diagnostics policy). */
  readonly filters: Pick<BackendRef, 'requestHeaders' | 'responseHeaders'>;
  /** The backend's balancer, resolved and cached by the Router (router.ts). */
  target: unknown = null;
  targetGen = -1;

  constructor(ref: BackendRef, parentPort: number, rule?: { requestHeaders?: HeaderModifier | undefined; responseHeaders?: HeaderModifier | undefined }) {
    this.namespace = ref.namespace;
    this.name = ref.name;
    this.port = ref.port === SAME_PORT ? parentPort : ref.port;
    this.weight = ref.weight;
    this.problem = ref.problem;
    this.ref = { namespace: this.namespace, name: this.name, port: this.port };
    const req = ref.requestHeaders;
    const res = ref.responseHeaders;
    // Request: the rule's edits, then the backend's (the more specific level last, so it wins);
    // the response passes the levels the other way round: the backend's, then the rule's.
    this.requestHeaders = req === undefined ? null : rule?.requestHeaders !== undefined ? new CompiledHeaderModifier(rule.requestHeaders, req) : new CompiledHeaderModifier(req);
    this.responseHeaders = res === undefined ? null : new CompiledHeaderModifier(res, rule?.responseHeaders);
    this.filters = {};
    if (req !== undefined) this.filters.requestHeaders = req;
    if (res !== undefined) this.filters.responseHeaders = res;
  }
}

/** The first rank element of a refused route's rule (route-model.ts refusedRoute): above any match's. */
const REFUSED = Number.MAX_SAFE_INTEGER;

/** One rule, ready for requests: its backends with cumulative weights, its timeouts and retries. */
export class CompiledRule {
  readonly route: RouteMeta;
  readonly ruleIndex: number;
  readonly ruleName: string | undefined;
  /** Empty: the parent Service itself. */
  readonly backends: CompiledBackend[];
  private readonly cumulative: number[];
  readonly totalWeight: number;
  /** null: no timeout of any kind. */
  readonly timeouts: Timeouts | null;
  readonly httpRetry: RetryPolicy | null;
  readonly grpcRetry: RetryPolicy | null;
  readonly timeoutSources: Source[];
  readonly retrySources: Source[];
  readonly matches: RouteMatch[];
  /** The rule's RequestHeaderModifier; null (most rules) leaves the request's headers alone. */
  readonly requestHeaders: CompiledHeaderModifier | null;
  /** The rule's ResponseHeaderModifier; null leaves the response's headers alone. */
  readonly responseHeaders: CompiledHeaderModifier | null;
  /** The rule's RequestRedirect: the forwarder answers with it and picks no backend; null for most rules. */
  readonly redirect: CompiledRedirect | null;
  /** The request edits for an attempt sent to `backend` (null: the parent Service): its own folded with the rule's, else the rule's; null for none. */
  requestEdits(backend: CompiledBackend | null): CompiledHeaderModifier | null {
    return backend?.requestHeaders ?? this.requestHeaders;
  }

  /** The response edits for an answer from `backend`: its own folded with the rule's, else the rule's; null for none. */
  responseEdits(backend: CompiledBackend | null): CompiledHeaderModifier | null {
    return backend?.responseHeaders ?? this.responseHeaders;
  }

  /** Some backend has a RequestHeaderModifier of its own: a retry rebuilds the head for its backend. */
  readonly backendRequestHeaders: boolean;

  constructor(route: RouteMeta, index: number, rule: RouteRecord['rules'][number] | null, parentPort: number, service: AnnotationPolicy) {
    this.route = route;
    this.ruleIndex = index;
    this.ruleName = rule?.name;
    this.matches = rule?.matches ?? [];
    this.requestHeaders = rule?.requestHeaders !== undefined ? new CompiledHeaderModifier(rule.requestHeaders) : null;
    this.responseHeaders = rule?.responseHeaders !== undefined ? new CompiledHeaderModifier(rule.responseHeaders) : null;
    this.redirect = rule?.redirect !== undefined ? new CompiledRedirect(rule.redirect) : null;
    this.backends = (rule?.backends ?? []).map((b) => new CompiledBackend(b, parentPort, rule ?? undefined));
    this.backendRequestHeaders = this.backends.some((b) => b.requestHeaders !== null);
    this.cumulative = [];
    let total = 0;
    for (const b of this.backends) this.cumulative.push((total += b.weight));
    this.totalWeight = total;
    // A rule without timeouts or retries of its own takes the Service's, as Linkerd does.
    const t = rule?.timeouts ?? service.timeouts;
    this.timeouts = t !== undefined && (t.requestMs !== undefined || t.backendRequestMs !== undefined || t.idleMs !== undefined) ? t : null;
    this.timeoutSources = rule?.timeouts !== undefined ? rule.timeoutSources ?? [] : service.timeoutSources;
    if (rule?.retry !== undefined) {
      this.httpRetry = this.grpcRetry = rule.retry;
      this.retrySources = rule.retrySources ?? [];
    } else {
      this.httpRetry = service.httpRetry ?? null;
      this.grpcRetry = service.grpcRetry ?? null;
      this.retrySources = service.retrySources;
    }
  }

  retryFor(grpc: boolean): RetryPolicy | null {
    const r = grpc ? this.grpcRetry : this.httpRetry;
    return r !== null && r.limit > 0 ? r : null;
  }

  /**
   * The backend for one request: weight / total of the rule's requests each. null when the rule
   * has none (the parent Service takes the request).
   */
  pickBackend(random: () => number): CompiledBackend | null {
    const n = this.backends.length;
    if (n === 0) return null;
    if (n === 1) return this.backends[0]!;
    const r = random() * this.totalWeight;
    const c = this.cumulative;
    for (let i = 0; i < n; i++) if (r < c[i]!) return this.backends[i]!;
    // random() is below 1, so r is below the total; a total of 0 never gets here (pickAttempt answers 500).
    return this.backends[n - 1]!;
  }
}

interface Entry {
  match: CompiledMatch | null;
  rule: CompiledRule;
}

/** The routes one client namespace's requests to one Service port go through. */
export class RouteTable {
  /** Tried in order; the first entry that matches wins. Null: no route for such requests (404). */
  readonly http: readonly Entry[] | null;
  readonly grpc: readonly Entry[] | null;
  /** The route objects that apply (diagnostics), in precedence order; empty for the default route. */
  readonly routes: readonly RouteRecord[];
  /** Rules, each once, in the routes' order (diagnostics). */
  readonly rules: readonly CompiledRule[];

  constructor(routes: RouteRecord[], parentPort: number, service: AnnotationPolicy) {
    this.routes = routes;
    const rules: CompiledRule[] = [];
    const http: Array<Entry & { rank: number[]; order: number }> = [];
    const grpc: Array<Entry & { rank: number[]; order: number }> = [];
    if (routes.length === 0) {
      // Linkerd's default routes: group "", kind "default", name http or grpc.
      const h = new CompiledRule({ group: '', kind: 'default', namespace: '', name: 'http' }, 0, null, parentPort, service);
      const g = new CompiledRule({ group: '', kind: 'default', namespace: '', name: 'grpc' }, 0, null, parentPort, service);
      rules.push(h, g);
      this.http = [{ match: null, rule: h }];
      this.grpc = [{ match: null, rule: g }];
      this.rules = rules;
      return;
    }
    let order = 0;
    for (const r of routes) {
      const meta: RouteMeta = { group: r.kind === 'TrafficSplit' ? 'split.smi-spec.io' : 'gateway.networking.k8s.io', kind: r.kind, namespace: r.namespace, name: r.name };
      const isGrpc = r.kind === 'GRPCRoute';
      const into = isGrpc ? grpc : http;
      r.rules.forEach((rule, i) => {
        const c = new CompiledRule(meta, i, rule, parentPort, service);
        rules.push(c);
        // A route the agent could not read fails closed: its one rule before every other.
        if (r.refused !== undefined) into.push({ match: null, rule: c, rank: isGrpc ? [REFUSED, 0, 0] : [REFUSED, 0, 0, 0, 0], order: order++ });
        else if (rule.matches.length === 0) into.push({ match: null, rule: c, rank: isGrpc ? [0, 0, 0] : [PATH_NONE, 1, 0, 0, 0], order: order++ });
        for (const m of rule.matches) {
          const cm = new CompiledMatch(m);
          into.push({ match: cm, rule: c, rank: cm.rank(isGrpc), order: order++ });
        }
      });
    }
    const sort = (l: Array<Entry & { rank: number[]; order: number }>): Entry[] | null => {
      if (l.length === 0) return null;
      l.sort((a, b) => compareRank(b.rank, a.rank) || a.order - b.order);
      return l.map((e) => ({ match: e.match, rule: e.rule }));
    };
    this.http = sort(http);
    this.grpc = sort(grpc);
    this.rules = rules;
  }
}

function compareRank(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** The rule a request goes by, or null: no rule matches (404 / UNIMPLEMENTED). */
export function findRoute(table: RouteTable, req: RouteRequest, grpc: boolean): CompiledRule | null {
  const entries = grpc && table.grpc !== null ? table.grpc : table.http;
  if (entries === null) return null;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.match === null || e.match.matches(req)) return e.rule;
  }
  return null;
}

/** Route precedence among records: the older first, then namespace/name (Gateway API's tie-break). */
export function byPrecedence(a: RouteRecord, b: RouteRecord): number {
  if (a.createdAt !== b.createdAt) return a.createdAt - b.createdAt;
  const ka = `${a.namespace}/${a.name}`;
  const kb = `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export interface Overridden {
  route: RouteRecord;
  /** Why it applies to no client, e.g. "HTTPRoute shop/api-split is attached to the same Service". */
  reason: string;
}

/**
 * Everything attached to one Service port, and the table per client namespace (built on first
 * use, then cached until the inputs change, when the Router builds a new ParentPolicy).
 */
export class ParentPolicy {
  readonly parent: { namespace: string; name: string; port: number };
  readonly service: AnnotationPolicy;
  readonly producer: RouteRecord[];
  readonly consumers: Map<string, RouteRecord[]>;
  readonly splits: RouteRecord[];
  readonly overridden: Overridden[];
  private readonly tables = new Map<string, RouteTable>();

  constructor(parent: { namespace: string; name: string; port: number }, service: AnnotationPolicy, attached: RouteRecord[]) {
    this.parent = parent;
    this.service = service;
    const routes = [...attached].sort(byPrecedence);
    this.producer = routes.filter((r) => r.kind !== 'TrafficSplit' && r.namespace === parent.namespace);
    this.consumers = new Map();
    for (const r of routes) {
      if (r.kind === 'TrafficSplit' || r.namespace === parent.namespace) continue;
      const l = this.consumers.get(r.namespace);
      if (l) l.push(r);
      else this.consumers.set(r.namespace, [r]);
    }
    this.splits = routes.filter((r) => r.kind === 'TrafficSplit');
    this.overridden = [];
    if (this.producer.length > 0) {
      const by = this.producer[0]!;
      for (const s of this.splits) this.overridden.push({ route: s, reason: `${by.kind} ${by.namespace}/${by.name} is attached to the same Service; Gateway API routes win over a TrafficSplit` });
    }
  }

  /** Whether this port needs the routed path at all (else requests take the unrouted one). */
  static needed(service: AnnotationPolicy, attached: readonly RouteRecord[]): boolean {
    return attached.length > 0 || service.timeouts !== undefined || service.httpRetry !== undefined || service.grpcRetry !== undefined;
  }

  /** The routes that apply to a client namespace, in precedence order. */
  routesFor(clientNamespace: string): RouteRecord[] {
    const consumer = clientNamespace !== this.parent.namespace ? this.consumers.get(clientNamespace) : undefined;
    if (consumer !== undefined) return consumer;
    if (this.producer.length > 0) return this.producer;
    return this.splits;
  }

  forClient(clientNamespace: string): RouteTable {
    const consumer = clientNamespace !== this.parent.namespace && this.consumers.has(clientNamespace);
    // Every namespace without consumer routes shares one table.
    const key = consumer ? clientNamespace : '';
    let t = this.tables.get(key);
    if (t === undefined) {
      t = new RouteTable(this.routesFor(clientNamespace), this.parent.port, this.service);
      this.tables.set(key, t);
    }
    return t;
  }
}
