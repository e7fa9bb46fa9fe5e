// Every proxy's view of this node's inbound policies (docs/policy.md): the main thread computes
// a PolicyTable (plain data: each meshed pod's identity and PolicySpec) and every proxy, on the
// main thread or a worker thread, loads it into an Authorizer, which answers the proxy's
// authorize(): the destination pod's decisions for this client, and the client's identity.
// A new table replaces, in place, the policy of each pod whose compiled policy changed
// (pod-policy.ts): the open connections to that pod, and only those, are decided again.
import type { Authorize, ConnectionInfo } from '../proxy/listener.ts';
import { ServerPolicy, type PolicySpec } from './authorize.ts';
import { FirstTimes, PolicyConnAuthz } from './conn-authz.ts';
import { parseNetworks, parseSpiffeId, spiffeId, type Cidr, type Identity } from './model.ts';
import { PodPolicy } from './pod-policy.ts';
import { PortSet } from '../proxy/ports.ts';
import type { ConnAuthz } from '../proxy/context.ts';
import { KeyedWaits } from '../util/keyed-waits.ts';

export interface PolicyTable {
  /** The cluster networks (the cluster-* policies), as written: "10.0.0.0/8,...". */
  networks: string;
  /**
   * This node's meshed pods. skipInbound: the pod's skip-inbound ports ("8080,9000-9100"): no
   * policy on them for anyone, as Linkerd's proxy never sees them.
   */
  pods: Array<{ ip: string; identity: Identity; spec: PolicySpec; skipInbound?: string }>;
  /**
   * Pods whose policy is not yet known (a starting agent without the TrafficTargets yet, for a
   * pod the previous agent left failing closed): their specs say `deny` until it is.
   */
  pending?: string[];
  /** Moves with every change of the table (agent/inbound.ts): each proxy reports the one it loaded. */
  generation?: number;
}


export class Authorizer {
  #networksText = '';
  #networks: readonly Cidr[] = [];
  /** Each pod's live policy: replaced in place when its compiled policy changes (open connections follow). */
  #policies = new Map<string, PodPolicy>();
  #skipInbound = new Map<string, PortSet>();
  #generation = 0;
  /** Meshed pods of this node by IP: their identity is known from the node's own pod list. */
  #identities = new Map<string, Identity>();
  readonly #denied = new FirstTimes();
  readonly #terminated = new FirstTimes();
  readonly #onDeny: (msg: string) => void;
  #pending = new Set<string>();
  readonly #waits = new KeyedWaits<string>();

  constructor(onDeny: (msg: string) => void) {
    this.#onDeny = onDeny;
  }

  /**
   * A new table: policies whose spec did not change keep their compiled form; a pod whose did
   * gets its policy replaced in place, which decides its open connections again (after the whole
   * table is in, so a connection closed by it sees the new identities and skip-inbound ports).
   */
  load(t: PolicyTable): void {
    const renetworked = t.networks !== this.#networksText;
    if (renetworked) {
      this.#networks = parseNetworks(t.networks);
      this.#networksText = t.networks;
    }
    const next = new Map<string, PodPolicy>();
    const ids = new Map<string, Identity>();
    const skip = new Map<string, PortSet>();
    const replaced: Array<[PodPolicy, ServerPolicy]> = [];
    for (const p of t.pods) {
      ids.set(p.ip, p.identity);
      if (p.skipInbound) skip.set(p.ip, PortSet.parse(p.skipInbound));
      const prev = this.#policies.get(p.ip);
      if (prev !== undefined && !renetworked && JSON.stringify(prev.policy.spec) === JSON.stringify(p.spec)) next.set(p.ip, prev);
      else if (prev !== undefined) {
        next.set(p.ip, prev);
        replaced.push([prev, new ServerPolicy(p.spec, this.#networks)]);
      } else next.set(p.ip, new PodPolicy(new ServerPolicy(p.spec, this.#networks)));
    }
    this.#policies = next;
    this.#identities = ids;
    this.#skipInbound = skip;
    this.#generation = t.generation ?? this.#generation + 1;
    this.#pending = new Set(t.pending ?? []);
    for (const [pod, policy] of replaced) pod.replace(policy);
    this.#waits.releaseWhere((ip) => !this.#pending.has(ip));
  }

  /** The generation of the table loaded last (PolicyTable.generation). */
  get generation(): number {
    return this.#generation;
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
    return this.#policies.get(ip)?.policy;
  }

  *policies(): IterableIterator<[string, ServerPolicy]> {
    for (const [ip, pod] of this.#policies) yield [ip, pod.policy];
  }

  /** Whether `port` is a skip-inbound port of the meshed pod at `ip`: no policy, no inbound side (docs/policy.md). */
  skipsInbound(ip: string, port: number): boolean {
    return this.#skipInbound.get(ip)?.has(port) === true;
  }

  /** Open connections to the pod at `ip` that watch its policy (allowed whole). */
  watching(ip: string): number {
    return this.#policies.get(ip)?.watching ?? 0;
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

  /** null: no policy governs the connection (not a meshed pod of this node, or a skip-inbound port of one). */
  #decide(c: ConnectionInfo, id: Identity | null, clientId: string | undefined): ConnAuthz | null {
    const pod = this.#policies.get(c.destIp);
    if (pod === undefined || this.skipsInbound(c.destIp, c.destPort)) return null;
    const who = `${clientId ?? 'a client without mesh identity'} (${c.sourceIp})`;
    const key = `${clientId ?? ''}|${c.sourceIp}>${c.destIp}:${c.destPort}`;
    const to = (): string => `pod ${pod.policy.spec.namespace}/${pod.policy.spec.pod} port ${c.destPort}`;
    return new PolicyConnAuthz(pod, { ip: c.sourceIp, identity: id }, c.destPort, (reason) => {
      if (!this.#denied.first(key)) return;
      this.#onDeny(`inbound policy denied ${who} to ${to()}: ${reason}; said once per client and server`);
    }, (reason) => {
      if (!this.#terminated.first(key)) return;
      this.#onDeny(`connection terminated due to policy change: the inbound policy no longer allows ${who} whole connections to ${to()}: ${reason}; said once per client and server`);
    });
  }
}
