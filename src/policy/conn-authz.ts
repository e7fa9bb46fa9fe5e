// One connection's authorization as the forwarders use it (proxy/context.ts ConnAuthz): the
// destination pod's compiled policy, the client, the port. The connection verdict is decided once
// at accept; each request and the TCP decision are asked as the forwarders reach them, and reuse
// it (a request is only matched against the routes the connection's decision found). Denials
// go to onDeny, which logs the first one per (client, server).
import type { ConnAuthz } from '../proxy/context.ts';
import type { AuthzOutcome } from '../telemetry/events.ts';
import { DEFAULT_ROUTE, type Client, type ConnDecision, type ServerPolicy } from './authorize.ts';

export class PolicyConnAuthz implements ConnAuthz {
  readonly #policy: ServerPolicy;
  readonly #client: Client;
  readonly #decision: ConnDecision;
  readonly #onDeny: (reason: string) => void;
  /**
   * Every request's outcome when the connection's decision is whole (allow or deny): nothing in
   * it is per request (the counters key on server, authz and route), so one frozen object serves
   * them all. null when each request is matched (verdict http).
   */
  readonly #wholeRequest: Readonly<AuthzOutcome> | null;

  constructor(policy: ServerPolicy, client: Client, port: number, onDeny: (reason: string) => void) {
    this.#policy = policy;
    this.#client = client;
    const d = (this.#decision = policy.connection(client, port));
    this.#onDeny = onDeny;
    // As requestOn() decides a request on a whole decision: the default route.
    this.#wholeRequest = d.verdict === 'allow'
      ? Object.freeze({ allowed: true, server: d.server, authz: d.authz, route: DEFAULT_ROUTE })
      : d.verdict === 'deny' ? Object.freeze({ allowed: false, server: d.server, route: DEFAULT_ROUTE }) : null;
  }

  get verdict(): 'allow' | 'http' | 'deny' {
    return this.#decision.verdict;
  }

  tcp(): AuthzOutcome {
    const d = this.#decision;
    if (d.verdict === 'allow') return { allowed: true, server: d.server, authz: d.authz };
    this.#onDeny(d.verdict === 'deny' ? d.reason : 'only HTTP requests may be allowed by the TrafficTargets of this client, and this connection is not HTTP');
    return { allowed: false, server: d.server };
  }

  request(method: string, target: string, header: (name: string) => string | undefined): AuthzOutcome {
    const c = this.#decision;
    if (c.verdict !== 'http') {
      if (c.verdict === 'deny') this.#onDeny(c.reason);
      return this.#wholeRequest!;
    }
    const d = this.#policy.requestOn(this.#decision, this.#client, { method, target, header });
    if (d.allowed) return { allowed: true, server: d.server, authz: d.authz, route: d.route };
    this.#onDeny(d.reason);
    return { allowed: false, server: d.server, route: d.route };
  }
}

/**
 * The decision where the policy could not be evaluated (it threw): everything refused, under a
 * server named for it, so the denials are counted and never taken for the pod's own policy.
 */
export function unevaluated(port: number): ConnAuthz {
  const denied: AuthzOutcome = { allowed: false, server: { group: '', kind: 'default', name: 'unevaluated', port } };
  return { verdict: 'deny', tcp: () => denied, request: () => denied };
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
