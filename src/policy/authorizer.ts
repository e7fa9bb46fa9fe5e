// Every proxy's view of this node's inbound policies (docs/policy.md): the main thread computes
// a PolicyTable (plain data: each meshed pod's identity and PolicySpec) and every proxy, on the
// main thread or a worker thread, loads it into an Authorizer, which answers the proxy's
// authorize(): the destination pod's decisions for this client, and the client's identity.
import type { Authorize, ConnectionInfo } from '../proxy/listener.ts';
import { ServerPolicy, type PolicySpec } from './authorize.ts';
import { FirstTimes, PolicyConnAuthz } from './conn-authz.ts';
import { parseNetworks, parseSpiffeId, spiffeId, type Cidr, type Identity } from './model.ts';
import type { ConnAuthz } from '../proxy/context.ts';
import { KeyedWaits } from '../util/keyed-waits.ts';

export interface PolicyTable {
  /** The cluster networks (the cluster-* policies), as written: "10.0.0.0/8,...". */
  networks: string;
  /** This node's meshed pods. */
  pods: Array<{ ip: string; identity: Identity; spec: PolicySpec }>;
  /**
   * Pods whose policy is not yet known (a starting agent without the TrafficTargets yet, for a
   * pod the previous agent left failing closed): their specs say `deny` until it is.
   */
  pending?: string[];
}


export class Authorizer {
  #networksText = '';
  #networks: readonly Cidr[] = [];
  #policies = new Map<string, ServerPolicy>();
  /** Meshed pods of this node by IP: their identity is known from the node's own pod list. */
  #identities = new Map<string, Identity>();
  readonly #denied = new FirstTimes();
  readonly #onDeny: (msg: string) => void;
  #pending = new Set<string>();
  readonly #waits = new KeyedWaits<string>();

  constructor(onDeny: (msg: string) => void) {
    this.#onDeny = onDeny;
  }

  /** A new table: policies whose spec did not change keep their compiled form. */
  load(t: PolicyTable): void {
    if (t.networks !== this.#networksText) {
      this.#networks = parseNetworks(t.networks);
      this.#networksText = t.networks;
      this.#policies.clear();
    }
    const next = new Map<string, ServerPolicy>();
    const ids = new Map<string, Identity>();
    for (const p of t.pods) {
      ids.set(p.ip, p.identity);
      const prev = this.#policies.get(p.ip);
      next.set(p.ip, prev !== undefined && JSON.stringify(prev.spec) === JSON.stringify(p.spec) ? prev : new ServerPolicy(p.spec, this.#networks));
    }
    this.#policies = next;
    this.#identities = ids;
    this.#pending = new Set(t.pending ?? []);
    this.#waits.releaseWhere((ip) => !this.#pending.has(ip));
  }

  /**
   * Null when the pod's policy is known; else a promise that settles when it is, or after
   * timeoutMs (the decision then is the pending spec's `deny`). A connection waits, paused,
   * rather than being refused while a starting agent learns the TrafficTargets.
   */
  ready(ip: string, timeoutMs: number): Promise<boolean> | null {
    return this.#pending.has(ip) ? this.#waits.wait(ip, timeoutMs) : null;
  }

  get networks(): readonly Cidr[] {
    return this.#networks;
  }

  policy(ip: string): ServerPolicy | undefined {
    return this.#policies.get(ip);
  }

  policies(): IterableIterator<[string, ServerPolicy]> {
    return this.#policies.entries();
  }

  /** The proxy's authorize(): the destination pod's policy if it is a meshed pod of this node. */
  readonly authorize: Authorize = (c: ConnectionInfo) => {
    const id = this.#identities.get(c.sourceIp) ?? null;
    const clientId = id === null ? undefined : spiffeId(id);
    return { clientId, authz: this.#decide(c, id, clientId) };
  };

  /**
   * A connection that arrived through an mTLS tunnel (docs/identity.md): its client's identity
   * is the SPIFFE ID of the certificate the tunnel verified, whatever its address. null when the
   * destination is not a meshed pod of this node (the tunnel refuses those anyway).
   */
  authorizeVerified(c: ConnectionInfo, clientUri: string): ConnAuthz | null {
    const id = parseSpiffeId(clientUri);
    return this.#decide(c, id, id === null ? undefined : clientUri);
  }

  #decide(c: ConnectionInfo, id: Identity | null, clientId: string | undefined): ConnAuthz | null {
    const policy = this.#policies.get(c.destIp);
    if (policy === undefined) return null;
    const s = policy.spec;
    return new PolicyConnAuthz(policy, { ip: c.sourceIp, identity: id }, c.destPort, (reason) => {
      if (!this.#denied.first(`${clientId ?? ''}|${c.sourceIp}>${c.destIp}:${c.destPort}`)) return;
      this.#onDeny(`inbound policy denied ${clientId ?? 'a client without mesh identity'} (${c.sourceIp}) to pod ${s.namespace}/${s.pod} port ${c.destPort}: ${reason}; said once per client and server`);
    });
  }
}
