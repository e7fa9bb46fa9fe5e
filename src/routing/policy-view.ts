// What `mesh-agent diagnostics policy` shows of one Service port, for clients of one namespace:
// the routes that apply (and why those), their rules with matches, backends and weights,
// timeouts and retry policy, each setting with where it came from (which object, which field
// or annotation), the routes that apply to no client, and the annotations that could not be
// read. Plain data (the agent answers it as JSON; the CLI renders it). Pure.
import { DEFAULT_BUDGET } from './retry-budget.ts';
import { DEFAULT_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS, type HeaderModifier, type Redirect, type RetryPolicy, type RouteMatch, type Source, type Timeouts } from './route-model.ts';
import type { ParentPolicy } from './route-table.ts';

export interface BackendView {
  namespace: string;
  name: string;
  port: number;
  weight: number;
  /** weight / total, in percent. */
  share: number;
  problem?: string;
  /** The backendRef's own RequestHeaderModifier (applied after the rule's), when it has one. */
  requestHeaders?: HeaderModifier;
  /** The backendRef's own ResponseHeaderModifier (applied before the rule's), when it has one. */
  responseHeaders?: HeaderModifier;
}

export interface RuleView {
  route: { group: string; kind: string; namespace: string; name: string };
  rule: number;
  name?: string;
  /** Empty: every request. */
  matches: RouteMatch[];
  /** The rule's RequestHeaderModifier, when it has one. */
  requestHeaders?: HeaderModifier;
  /** The rule's ResponseHeaderModifier, when it has one. */
  responseHeaders?: HeaderModifier;
  /** The rule's RequestRedirect, when it has one (then it has no backends). */
  redirect?: Redirect;
  /** Empty: the Service itself. */
  backends: BackendView[];
  timeouts: Timeouts | null;
  timeoutSources: Source[];
  httpRetry: RetryPolicy | null;
  grpcRetry: RetryPolicy | null;
  retrySources: Source[];
}

export interface PolicyView {
  service: { namespace: string; name: string; port: number };
  clientNamespace: string;
  /** Why these routes: consumer, producer, trafficsplit, default (the Service's annotations only), none. */
  selected: 'consumer' | 'producer' | 'trafficsplit' | 'default' | 'none';
  routes: Array<{ kind: string; namespace: string; name: string }>;
  rules: RuleView[];
  overridden: Array<{ kind: string; namespace: string; name: string; reason: string }>;
  /** Retry and timeout annotations of the Service that could not be read. */
  annotationErrors: string[];
  budget: { ratio: number; minPerSecond: number; windowSeconds: number };
  backoff: { minMs: number; maxMs: number };
}

export function policyView(service: { namespace: string; name: string; port: number }, policy: ParentPolicy | null, clientNamespace: string, annotationErrors: string[]): PolicyView {
  const base = {
    service, clientNamespace, annotationErrors, budget: { ...DEFAULT_BUDGET }, backoff: { minMs: DEFAULT_BACKOFF_MS, maxMs: DEFAULT_MAX_BACKOFF_MS },
  };
  if (policy === null) return { ...base, selected: 'none', routes: [], rules: [], overridden: [] };
  const routes = policy.routesFor(clientNamespace);
  const selected = routes.length === 0 ? 'default' : routes[0]!.kind === 'TrafficSplit' ? 'trafficsplit' : routes[0]!.namespace === service.namespace ? 'producer' : 'consumer';
  const table = policy.forClient(clientNamespace);
  const rules: RuleView[] = table.rules
    // The default route has an http and a grpc rule; they are the same policy.
    .filter((r) => !(r.route.kind === 'default' && r.route.name === 'grpc'))
    .map((r) => ({
      route: { ...r.route, ...(r.route.kind === 'default' ? { name: 'default' } : {}) },
      rule: r.ruleIndex,
      ...(r.ruleName !== undefined ? { name: r.ruleName } : {}),
      matches: r.matches,
      ...(r.requestHeaders !== null ? { requestHeaders: r.requestHeaders.spec } : {}),
      ...(r.responseHeaders !== null ? { responseHeaders: r.responseHeaders.spec } : {}),
      ...(r.redirect !== null ? { redirect: r.redirect.spec } : {}),
      backends: r.backends.map((b) => ({
        namespace: b.namespace, name: b.name, port: b.port, weight: b.weight,
        share: r.totalWeight > 0 ? Math.round((b.weight / r.totalWeight) * 10_000) / 100 : 0,
        ...(b.problem !== undefined ? { problem: b.problem } : {}),
        ...b.filters,
      })),
      timeouts: r.timeouts,
      timeoutSources: r.timeoutSources,
      httpRetry: r.httpRetry,
      grpcRetry: r.grpcRetry,
      retrySources: r.retrySources,
    }));
  return {
    ...base,
    selected,
    routes: routes.map((r) => ({ kind: r.kind, namespace: r.namespace, name: r.name })),
    rules,
    overridden: policy.overridden.map((o) => ({ kind: o.route.kind, namespace: o.route.namespace, name: o.route.name, reason: o.reason })),
  };
}
