// One connection's authorization as the forwarders use it (proxy/context.ts ConnAuthz): the
// destination pod's current policy (pod-policy.ts), the client, the port. The connection's
// decision is made at accept and made again only when the pod's policy was replaced since (a
// reference compare per ask): each request and the TCP decision are asked against the policy in
// force, and a request is only matched against the routes the connection's decision found. A
// connection allowed whole watches the policy: one that no longer allows it is terminated
// (watch()). Denials go to onDeny, terminations to onTerminate; each logs its first per (client, server).
import type { ConnAuthz } from '../proxy/context.ts';
import type { AuthzOutcome } from '../telemetry/events.ts';
import { DEFAULT_ROUTE, type Client, type ConnDecision, type HttpRequestView, type ServerPolicy } from './authorize.ts';
import { PodPolicy } from './pod-policy.ts';

const NOT_HTTP = 'only HTTP requests may be allowed by the TrafficTargets of this client, and this connection is not HTTP';

export class PolicyConnAuthz implements ConnAuthz {
  readonly #pod: PodPolicy;
  readonly #client: Client;
  readonly #port: number;
  /** The policy #decision was made with. */
  #policy: ServerPolicy;
  #decision!: ConnDecision;
  /**
   * Every request's outcome when the connection's decision is whole (allow or deny): nothing in
   * it is per request (the counters key on server, authz and route), so one frozen object serves
   * them all. null when each request is matched (verdict http).
   */
  #wholeRequest: Readonly<AuthzOutcome> | null = null;
  readonly #onDeny: (reason: string) => void;
  readonly #onTerminate: (reason: string) => void;

  /** `pod`: the pod's live policy; a ServerPolicy alone is one that never changes. */
  constructor(pod: PodPolicy | ServerPolicy, client: Client, port: number, onDeny: (reason: string) => void, onTerminate: (reason: string) => void = onDeny) {
    this.#pod = pod instanceof PodPolicy ? pod : new PodPolicy(pod);
    this.#client = client;
    this.#port = port;
    this.#policy = this.#pod.policy;
    this.#decide();
    this.#onDeny = onDeny;
    this.#onTerminate = onTerminate;
  }

  #decide(): void {
    const d = (this.#decision = this.#policy.connection(this.#client, this.#port));
    // As requestOn() decides a request on a whole decision: the default route.
    this.#wholeRequest = d.verdict === 'allow'
      ? Object.freeze({ allowed: true, server: d.server, authz: d.authz, route: DEFAULT_ROUTE })
      : d.verdict === 'deny' ? Object.freeze({ allowed: false, server: d.server, route: DEFAULT_ROUTE }) : null;
  }

  /** The decision under the policy in force: made again only when the pod's policy was replaced. */
  #current(): ConnDecision {
    const p = this.#pod.policy;
    if (p !== this.#policy) {
      this.#policy = p;
      this.#decide();
    }
    return this.#decision;
  }

  get verdict(): 'allow' | 'http' | 'deny' {
    return this.#current().verdict;
  }

  tcp(): AuthzOutcome {
    const d = this.#current();
    if (d.verdict === 'allow') return { allowed: true, server: d.server, authz: d.authz };
    this.#onDeny(d.verdict === 'deny' ? d.reason : NOT_HTTP);
    return { allowed: false, server: d.server };
  }

  request(method: string, target: string, header: (name: string) => string | undefined): AuthzOutcome {
    const c = this.#current();
    if (c.verdict !== 'http') {
      if (c.verdict === 'deny') this.#onDeny(c.reason);
      return this.#wholeRequest!;
    }
    const d = this.#policy.requestOn(c, this.#client, { method, target, header });
    if (d.allowed) return { allowed: true, server: d.server, authz: d.authz, route: d.route };
    this.#onDeny(d.reason);
    return { allowed: false, server: d.server, route: d.route };
  }

  /**
   * A connection allowed whole (its tcp() was allowed) from now on: `revoked` runs once, with the
   * server of the policy now in force, when a replaced policy no longer allows it whole (denied,
   * or only some HTTP requests), and the termination is logged with why (once per client and
   * server). `upgrade`: an HTTP/1 connection that became a byte stream after this request (101,
   * 2xx to CONNECT), kept while the policy still allows that request (an HTTPRouteGroup may).
   * The policy in force is also checked once now, after the caller's turn: an upgrade is decided
   * at its request and watched from its response, and a change in between must not be missed.
   * Returns the remover (call it on close).
   */
  watch(revoked: (by: AuthzOutcome['server']) => void, upgrade?: HttpRequestView): () => void {
    let off: (() => void) | null = null;
    const check = () => {
      const d = this.#current();
      if (d.verdict === 'allow' || off === null) return;
      let why = d.verdict === 'deny' ? d.reason : NOT_HTTP;
      let by = d.server;
      if (d.verdict === 'http' && upgrade !== undefined) {
        const r = this.#policy.requestOn(d, this.#client, upgrade);
        if (r.allowed) return;
        why = r.reason;
        by = r.server;
      }
      off();
      off = null;
      this.#onTerminate(why);
      revoked(by);
    };
    off = this.#pod.watch(check);
    queueMicrotask(check);
    return () => {
      off?.();
      off = null;
    };
  }
}

/**
 * The decision where the policy could not be evaluated (it threw): everything refused, under a
 * server named for it, so the denials are counted and never taken for the pod's own policy.
 */
export function unevaluated(port: number): ConnAuthz {
  const denied: AuthzOutcome = { allowed: false, server: { group: '', kind: 'default', name: 'unevaluated', port } };
  return { verdict: 'deny', tcp: () => denied, request: () => denied, watch: () => () => {} };
}

/** Says once per key (bounded: the oldest keys are forgotten first). */
export class FirstTimes {
  readonly #seen = new Set<string>();
  readonly #max: number;

  constructor(max = 4096) {
    this.#max = max;
  }

  /** True the first time a key is seen (again after it was forgotten). */
  first(key: string): boolean {
    if (this.#seen.has(key)) return false;
    if (this.#seen.size >= this.#max) this.#seen.delete(this.#seen.values().next().value!);
    this.#seen.add(key);
    return true;
  }
}
