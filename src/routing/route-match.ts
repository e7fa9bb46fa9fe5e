// One route match (route-model.ts RouteMatch) compiled for the per-request path: the single
// matcher of HTTP requests, used by the router (route-table.ts: which rule a request goes by) and
// by the inbound policy (policy/authorize.ts: which Linkerd HTTPRoute or SMI HTTPRouteGroup match
// allows a request), so that a rule cannot mean one thing to a route and another to a policy
// (PathPrefix element-wise, Exact whole, RegularExpression as the converter anchored it, header
// names lower-case, query parameters percent-decoded). What each passes as the request's path
// differs on purpose; the callers say why.
import type { RouteMatch } from './route-model.ts';
import { userRegExp } from '../util/regex-check.ts';

/** What a matcher reads of a request. */
export interface RouteRequest {
  /** Upper-case method. */
  readonly method: string;
  /** The path without the query string. */
  readonly path: string;
  /** A header's value (several joined with ", "); undefined when absent. `name` is lower-case. */
  header(name: string): string | undefined;
  /**
   * The first value of a query parameter, percent-decoded; undefined when absent. `name` is
   * compared case-sensitively with each parameter's decoded name. Asked only by query matches.
   */
  query(name: string): string | undefined;
}

/** A match's path kinds, in the order of their specificity (rank()). */
export const PATH_NONE = 0;
const PATH_PREFIX = 1;
const PATH_REGEX = 2;
const PATH_EXACT = 3;

/**
 * Named values a match requires (headers, query parameters): each present, and equal to its
 * Exact value or matching its (anchored) expression. The caller reads the request's value of
 * names[i]; one compiled form and one comparison for both kinds.
 */
class NamedValues {
  readonly names: string[];
  private readonly exact: Array<string | null>;
  private readonly re: Array<RegExp | null>;

  constructor(ms: ReadonlyArray<{ name: string; type: 'Exact' | 'RegularExpression'; value: string }>) {
    this.names = ms.map((m) => m.name);
    this.exact = ms.map((m) => (m.type === 'Exact' ? m.value : null));
    this.re = ms.map((m) => (m.type === 'RegularExpression' ? userRegExp(m.value) : null));
  }

  /** Whether `v`, the request's value of names[i] (undefined: absent), satisfies it. */
  ok(i: number, v: string | undefined): boolean {
    if (v === undefined) return false;
    const exact = this.exact[i];
    return exact !== null ? v === exact : this.re[i]!.test(v);
  }
}

/** One RouteMatch, compiled once and asked per request. */
export class CompiledMatch {
  readonly pathKind: number;
  readonly pathValue: string;
  readonly pathRe: RegExp | null;
  readonly method: string | null;
  readonly headers: NamedValues;
  readonly query: NamedValues;
  readonly grpc: boolean;
  readonly grpcService: string | null;
  readonly grpcMethod: string | null;
  readonly grpcServiceRe: RegExp | null;
  readonly grpcMethodRe: RegExp | null;

  constructor(m: RouteMatch) {
    const p = m.path;
    if (p === undefined) (this.pathKind = PATH_NONE), (this.pathValue = '');
    else if (p.type === 'Exact') (this.pathKind = PATH_EXACT), (this.pathValue = p.value);
    else if (p.type === 'RegularExpression') (this.pathKind = PATH_REGEX), (this.pathValue = p.value);
    else {
      // "/foo" and "/foo/" both match /foo, /foo/ and /foo/bar, never /foobar.
      const v = p.value.length > 1 && p.value.endsWith('/') ? p.value.slice(0, -1) : p.value;
      this.pathKind = v === '/' ? PATH_NONE : PATH_PREFIX;
      this.pathValue = v;
    }
    this.pathRe = this.pathKind === PATH_REGEX ? userRegExp(this.pathValue) : null;
    this.method = m.method ?? null;
    this.headers = new NamedValues(m.headers ?? []);
    this.query = new NamedValues(m.queryParams ?? []);
    const g = m.grpc;
    this.grpc = g !== undefined;
    const re = g?.type === 'RegularExpression';
    this.grpcService = !re ? g?.service ?? null : null;
    this.grpcMethod = !re ? g?.method ?? null : null;
    this.grpcServiceRe = re && g?.service !== undefined ? userRegExp(g.service) : null;
    this.grpcMethodRe = re && g?.method !== undefined ? userRegExp(g.method) : null;
  }

  /** Static specificity, compared element by element; greater wins. */
  rank(grpc: boolean): number[] {
    if (grpc) return [this.grpcService?.length ?? (this.grpcServiceRe ? 1 : 0), this.grpcMethod?.length ?? (this.grpcMethodRe ? 1 : 0), this.headers.names.length];
    return [this.pathKind, this.pathKind === PATH_NONE ? 1 : this.pathValue.length, this.method !== null ? 1 : 0, this.headers.names.length, this.query.names.length];
  }

  matches(req: RouteRequest): boolean {
    if (this.method !== null && req.method !== this.method) return false;
    switch (this.pathKind) {
      case PATH_EXACT:
        if (req.path !== this.pathValue) return false;
        break;
      case PATH_PREFIX: {
        const path = req.path;
        const v = this.pathValue;
        if (!path.startsWith(v) || (path.length > v.length && path.charCodeAt(v.length) !== 47 /* / */)) return false;
        break;
      }
      case PATH_REGEX:
        if (!this.pathRe!.test(req.path)) return false;
        break;
    }
    if (this.grpc && !this.grpcMatches(req.path)) return false;
    const h = this.headers;
    for (let i = 0; i < h.names.length; i++) if (!h.ok(i, req.header(h.names[i]!))) return false;
    // Only matches that name query parameters read the query.
    const q = this.query;
    for (let i = 0; i < q.names.length; i++) if (!q.ok(i, req.query(q.names[i]!))) return false;
    return true;
  }

  /** :path is /package.Service/Method. */
  private grpcMatches(path: string): boolean {
    const slash = path.indexOf('/', 1);
    if (path.charCodeAt(0) !== 47 || slash < 0) return false;
    if (this.grpcService !== null || this.grpcServiceRe !== null) {
      const svc = path.slice(1, slash);
      if (this.grpcService !== null ? svc !== this.grpcService : !this.grpcServiceRe!.test(svc)) return false;
    }
    if (this.grpcMethod !== null || this.grpcMethodRe !== null) {
      const m = path.slice(slash + 1);
      if (this.grpcMethod !== null ? m !== this.grpcMethod : !this.grpcMethodRe!.test(m)) return false;
    }
    return true;
  }
}
