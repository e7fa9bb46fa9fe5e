// What the HTTP forwarders share for routed requests (a Service with routes, retries or
// timeouts): the client connection's route table and retry budget, resolved once per
// connection and again only when the Service's policy is replaced, and the pick of one
// attempt's backend and endpoint. The forwarders keep the I/O: attempts, timers, replay.
import type { BalancedEndpoint } from './balancer.ts';
import type { ClientIdentity, Router, ServiceRoute } from './router.ts';
import type { RetryBudget } from './retry-budget.ts';
import type { CompiledBackend, CompiledRule, ParentPolicy, RouteTable } from './route-table.ts';
import type { AttemptReport, RouteReport, ServicePortRef } from '../telemetry/events.ts';
import type { RetryPolicy, Timeouts } from './route-model.ts';
import { MAX_TIMER_MS } from '../util/timer-bound.ts';

/** One client connection's view of the routes of the Service it called. */
export class ClientRouting {
  client: ClientIdentity;
  private readonly router: Router;
  private readonly sourceIp: string;
  private policy: ParentPolicy | null = null;
  private table: RouteTable | null = null;
  private budgetOf: ServiceRoute | null = null;
  private budgetV: RetryBudget | null = null;

  constructor(router: Router, sourceIp: string) {
    this.router = router;
    this.sourceIp = sourceIp;
    this.client = router.client(sourceIp);
  }

  /**
   * A client the agent did not know when its connection opened (a pod that dialled before the
   * agent heard of it) is asked again per request until known: else a long-lived connection
   * would keep another namespace's routes and an IP's retry budget for its whole life.
   */
  private refreshClient(): void {
    if (this.client.namespace !== '') return;
    const c = this.router.knownClient(this.sourceIp);
    if (c === null || c.namespace === '') return;
    this.client = c;
    this.policy = null;
    this.budgetOf = null;
  }

  /** The table for this client; `route.policy` must be set. */
  tableFor(route: ServiceRoute): RouteTable {
    this.refreshClient();
    const p = route.policy!;
    if (p !== this.policy) {
      this.policy = p;
      this.table = p.forClient(this.client.namespace);
    }
    return this.table!;
  }

  budgetFor(route: ServiceRoute): RetryBudget {
    if (this.budgetOf !== route) {
      this.budgetOf = route;
      this.budgetV = route.router.budget(this.client, route);
    }
    return this.budgetV!;
  }
}

/** One attempt's choice, written into a slot the forwarder owns (no object per attempt). */
export class AttemptSlot {
  backend: CompiledBackend | null = null;
  target: ServiceRoute | null = null;
  lease: BalancedEndpoint | null = null;
  /** Why there is nothing to send to, and the status that says so (500 or 503). */
  status = 0;
  why = '';
  /** The rule sends nowhere (every backendRef weighs 0): no backend was picked, not even the parent. */
  backendless = false;
}

/**
 * Picks the rule's backend (by weight; the parent when the rule names none) and one of its
 * endpoints (a `retry`: another than the failed attempt's, when there is one). False, with slot.status and slot.why, when the backend cannot be used (500, as
 * Gateway API says for an unresolved backendRef), every backend weighs 0 (500), or it has no
 * ready endpoint (503).
 */
export function pickAttempt(parent: ServiceRoute, rule: CompiledRule, slot: AttemptSlot, ready?: (b: BalancedEndpoint, drawn: boolean) => boolean, retry = false): boolean {
  // A retry avoids the endpoint the attempt before it went to, when its backend is picked again.
  const prevLease = retry ? slot.lease : null;
  const prevTarget = slot.target;
  slot.lease = null;
  slot.backendless = rule.totalWeight === 0 && rule.backends.length > 0;
  if (slot.backendless) {
    // Backends named, every one weight 0 (a drain): no traffic to any, nor to the parent.
    slot.backend = null;
    return fail(slot, 500, "every backendRef of the rule has weight 0: no backend takes its requests");
  }
  const b = rule.pickBackend(parent.router.random);
  slot.backend = b;
  let target: ServiceRoute | null = parent;
  if (b !== null) {
    if (b.problem !== undefined) return fail(slot, 500, `backend unavailable: ${b.problem}`);
    target = parent.router.backend(b);
    if (target === null) return fail(slot, 500, parent.router.missingBackend(b));
  }
  slot.target = target;
  const lease = target.balancer.pick(ready, prevTarget === target ? prevLease : null);
  if (lease === null) {
    const { namespace, name, port } = target.ref;
    return fail(slot, 503, `no ready endpoints for Service ${namespace}/${name} port ${port}`);
  }
  slot.lease = lease;
  return true;
}

function fail(slot: AttemptSlot, status: number, why: string): false {
  slot.status = status;
  slot.why = why;
  return false;
}

/** A backend's labels: the backend's Service port, or the parent's when the rule names none. */
export function backendRef(parent: ServiceRoute, b: CompiledBackend | null): ServicePortRef {
  return b === null ? parent.ref : b.ref;
}

/** The attempt's backend into the request's report (none at all when the rule sends nowhere). */
export function reportBackend(report: RouteReport, parent: ServiceRoute, slot: AttemptSlot): void {
  report.backend = backendRef(parent, slot.backend);
  if (slot.backendless) report.backendless = true;
}

/** A fresh report for one routed request. */
export function newRouteReport(parent: ServiceRoute, rule: CompiledRule): RouteReport {
  return { parent: parent.ref, route: rule.route, backend: parent.ref, retries: 0, backendMs: 0, backendResponded: false };
}

/**
 * May a request whose answer the policy retries send another attempt? Within the limit and the
 * budget (which counts the retry when it says yes); when not, the report says why
 * (Linkerd's limit_exceeded and overflow). The forwarder has checked the request can be sent again.
 */
export function admitRetry(p: RetryPolicy, r: RouteReport, budget: RetryBudget): boolean {
  if (r.retries >= p.limit) {
    r.retryOutcome = 'limit_exceeded';
    return false;
  }
  if (!budget.withdraw()) {
    r.retryOutcome = 'overflow';
    return false;
  }
  return true;
}

/** Notes a failed attempt that is about to be retried (`retries` counts when the retry is sent). */
export function noteRetried(r: RouteReport, status: number, grpcStatus: number | undefined, error: string | undefined, durationMs: number): void {
  const a: AttemptReport = { backend: r.backend, status, durationMs };
  if (grpcStatus !== undefined) a.grpcStatus = grpcStatus;
  if (error !== undefined) a.error = error;
  (r.earlier ??= []).push(a);
}

/**
 * A routed request's deadlines (absolute performance.now() ms; 0: unset): the whole request's,
 * the attempt's, its response head's (give 0 once the head reached the client), the backoff's
 * end between attempts, and the idle limit counted from the last byte either way.
 */
export interface Deadlines {
  request: number;
  attempt: number;
  head: number;
  retryAt: number;
  idleMs: number;
  lastIo: number;
}

/** The earliest of a request's deadlines, or Infinity; between attempts only the request's, the backoff's and idle. */
export function nearestDeadline(d: Deadlines): number {
  let at = d.request > 0 ? d.request : Infinity;
  if (d.retryAt > 0) at = Math.min(at, d.retryAt);
  else {
    if (d.attempt > 0) at = Math.min(at, d.attempt);
    if (d.head > 0) at = Math.min(at, d.head);
  }
  if (d.idleMs > 0) at = Math.min(at, d.lastIo + d.idleMs);
  return at;
}


/** The delay to arm a request's one timer with for its nearest deadline `at` (finite); a deadline further off than a timer holds is armed again when it fires early. */
export function timerDelay(at: number, now: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, at - now));
}

/** What a forwarder does when its routed request's one timer fires (onDeadline). */
export interface DeadlineActions {
  /** The request is over: 504, or a reset once the response started; `label` is Linkerd's error label. */
  timedOut(label: string, why: string): void;
  /** The backoff between attempts is over: send the next attempt. */
  nextAttempt(): void;
  /** May the request be tried again now (limit, budget, a replayable body)? */
  mayRetry(): boolean;
  /** Try again after an attempt that timed out. */
  retryNow(label: string): void;
  /** The head deadline passed and is not retried on: forget it. */
  clearHead(): void;
  /** Nothing has passed yet: arm the timer for the nearest deadline. */
  arm(): void;
}

/**
 * Acts on the deadline that has passed at `now`, first the request's, then the backoff's
 * (between attempts) or the attempt's, then its head's (retry.linkerd.io/timeout: retried while
 * retries remain, the last attempt may take its time, as Linkerd), then idle.
 */
export function onDeadline(d: Deadlines, timeouts: Timeouts | null | undefined, now: number, x: DeadlineActions): void {
  if (d.request > 0 && now >= d.request) return x.timedOut('REQUEST_TIMEOUT', `request timeout (${timeouts?.requestMs} ms)`);
  if (d.retryAt > 0) {
    if (now >= d.retryAt) return x.nextAttempt();
  } else if (d.attempt > 0 && now >= d.attempt) {
    if (x.mayRetry()) return x.retryNow('RESPONSE_STREAM_TIMEOUT');
    return x.timedOut('RESPONSE_STREAM_TIMEOUT', `backend request timeout (${timeouts?.backendRequestMs} ms)`);
  } else if (d.head > 0 && now >= d.head) {
    x.clearHead();
    if (x.mayRetry()) return x.retryNow('RESPONSE_HEADERS_TIMEOUT');
  }
  if (d.idleMs > 0 && now >= d.lastIo + d.idleMs) return x.timedOut('IDLE_TIMEOUT', `idle timeout (${d.idleMs} ms)`);
  x.arm();
}

/** Linkerd's error label for a request the proxy had to answer itself, from the forwarder's reason. */
export function errorLabel(why: string | undefined): string {
  if (why === undefined) return 'UNKNOWN';
  if (/client (closed|reset)/.test(why)) return 'CANCEL';
  if (/no ready endpoints/.test(why)) return 'FAIL_FAST';
  if (/REFUSED_STREAM|code 7\b/.test(why)) return 'REFUSED';
  if (/reset/.test(why)) return 'RESET';
  if (/timeout/.test(why)) return 'RESPONSE_HEADERS_TIMEOUT';
  if (/upstream|connect|E[A-Z]{3,}/.test(why)) return 'IO';
  return 'UNKNOWN';
}
