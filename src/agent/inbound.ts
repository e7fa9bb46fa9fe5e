// The agent's inbound side (docs/policy.md): what applies to each meshed pod of this node (its
// default policy from its annotations, the TrafficTargets of its ServiceAccount from discovery),
// as the PolicyTable every proxy loads, and the capture table's pods. Pure: the agent runs the
// capture's I/O and sends the table to its proxy workers.
import type { PodState } from './pod-sync.ts';
import type { DiscoveryStore } from '../discovery/store.ts';
import { Authorizer, type PolicyTable } from '../policy/authorizer.ts';
import type { ServerPolicy } from '../policy/authorize.ts';
import { spiffeId } from '../policy/model.ts';
import { serversForPod } from '../policy/server-model.ts';
import type { CapturePod, CaptureRuleset } from '../datapath/inbound-capture.ts';

export interface InboundPodStatus {
  namespace: string;
  name: string;
  ip: string;
  serviceAccount: string;
  defaultPolicy: string;
  defaultFrom: string;
  /** 'default': its default policy decides; 'smi': TrafficTargets do. */
  mode: 'default' | 'smi';
  failsClosed: boolean;
  trafficTargets: string[];
  /** Linkerd Servers selecting the pod: "name (ports 8080)". */
  servers?: string[];
  /** Problems of the TrafficTargets and Servers that apply (their last good version is enforced). */
  problems: string[];
}

export class InboundPolicies {
  readonly #networks: string;
  readonly #store: DiscoveryStore;
  /** The main thread's proxy's view; the workers load the same table. */
  readonly authorizer: Authorizer;
  #table: PolicyTable;
  #states = new Map<string, PodState>();
  /** Whether the TrafficTargets are known (with a controller: once discovery has synced). */
  readonly #complete: () => boolean;
  /** Pods a previous agent's capture left failing closed: they stay closed until the TrafficTargets are known. */
  #closedUntilKnown = new Set<string>();

  constructor(o: { networks: string; store: DiscoveryStore; onDeny: (msg: string) => void; complete?: () => boolean }) {
    this.#networks = o.networks;
    this.#store = o.store;
    this.#complete = o.complete ?? (() => true);
    this.authorizer = new Authorizer(o.onDeny);
    this.#table = { networks: o.networks, pods: [], generation: 0 };
    this.authorizer.load(this.#table);
  }

  get table(): PolicyTable {
    return this.#table;
  }

  /**
   * The pods the kernel's capture table (a previous agent's) says fail closed. Until this agent
   * knows the TrafficTargets, such a pod is pending: its clients through this agent (meshed pods
   * of the node, tunnels) wait for its policy (Authorizer.ready), and what is decided without it
   * is `deny`: a TrafficTarget may be what made it fail closed, and its annotations alone cannot
   * say (docs/policy.md).
   */
  closeUntilKnown(ips: Iterable<string>): void {
    this.#closedUntilKnown = new Set(ips);
  }

  /** Computes every meshed pod's policy again (pods or TrafficTargets changed); true when the table changed. */
  refresh(states: readonly PodState[]): boolean {
    const pods: PolicyTable['pods'] = [];
    const byIp = new Map<string, PodState>();
    const unknown = this.#closedUntilKnown.size > 0 && !this.#complete();
    if (!unknown) this.#closedUntilKnown.clear();
    for (const state of states) {
      const { pod, policy } = state;
      if (!policy.meshed || !pod.ip) continue;
      const sa = pod.serviceAccount ?? 'default';
      byIp.set(pod.ip, state);
      const servers = serversForPod(this.#store.serversIn(pod.namespace), pod);
      pods.push({
        ip: pod.ip,
        identity: { namespace: pod.namespace, serviceAccount: sa },
        ...(policy.skipInbound.ranges().length > 0 ? { skipInbound: policy.skipInbound.toString() } : {}),
        spec: unknown && this.#closedUntilKnown.has(pod.ip)
          ? { namespace: pod.namespace, pod: pod.name, serviceAccount: sa, defaultPolicy: 'deny', defaultFrom: 'not yet known: it failed closed under the previous agent, and this agent waits for the controller\'s TrafficTargets', targets: [] }
          : { namespace: pod.namespace, pod: pod.name, serviceAccount: sa, defaultPolicy: policy.inboundPolicy, defaultFrom: policy.inboundPolicyFrom, targets: this.#store.accessFor(pod.namespace, sa), ...(servers.length > 0 ? { servers } : {}) },
      });
    }
    const pending = unknown ? pods.filter((p) => this.#closedUntilKnown.has(p.ip)).map((p) => p.ip) : [];
    const generation = this.#table.generation ?? 0;
    const next: PolicyTable = { networks: this.#networks, pods, ...(pending.length > 0 ? { pending } : {}), generation };
    const changed = JSON.stringify(next) !== JSON.stringify(this.#table);
    this.#states = byIp;
    if (!changed) return false;
    next.generation = generation + 1;
    this.#table = next;
    this.authorizer.load(next);
    return true;
  }

  /** The capture table's pods: every meshed pod of this node, its fail-closed flag and skip-inbound ports. */
  capture(listener: CaptureRuleset['listener'], tunnel: CaptureRuleset['tunnel'] = null): CaptureRuleset {
    const pods: CapturePod[] = [];
    for (const [ip, policy] of this.authorizer.policies()) {
      pods.push({ ip, failClosed: policy.failsClosed, skipInbound: this.#states.get(ip)?.policy.skipInbound.ranges() ?? [] });
    }
    return { listener, pods, tunnel };
  }

  status(): InboundPodStatus[] {
    return [...this.authorizer.policies()].map(([ip, policy]) => ({
      namespace: policy.spec.namespace,
      name: policy.spec.pod,
      ip,
      serviceAccount: policy.spec.serviceAccount,
      defaultPolicy: policy.spec.defaultPolicy,
      defaultFrom: policy.spec.defaultFrom,
      mode: policy.mode,
      failsClosed: policy.failsClosed,
      trafficTargets: policy.spec.targets.map((t) => t.name),
      ...(policy.spec.servers !== undefined ? { servers: policy.spec.servers.map((s) => `${s.record.name} (ports ${s.ports.join(', ')})`) } : {}),
      problems: [...policy.spec.targets.flatMap((t) => t.problems ?? []), ...(policy.spec.servers ?? []).flatMap((s) => s.record.problems ?? [])],
    }));
  }

  /** `diagnostics authz`: what applies to one pod of this node and why, or null when it is not one. */
  describe(namespace: string, name: string): object | null {
    for (const [ip, policy] of this.authorizer.policies()) {
      const s = policy.spec;
      if (s.namespace !== namespace || s.pod !== name) continue;
      return {
        pod: `${namespace}/${name}`,
        ip,
        serviceAccount: `${s.namespace}/${s.serviceAccount}`,
        identity: spiffeId({ namespace: s.namespace, serviceAccount: s.serviceAccount }),
        defaultPolicy: s.defaultPolicy,
        defaultFrom: s.defaultFrom,
        mode: policy.mode,
        decidedBy: decidedBy(policy),
        failsClosed: policy.failsClosed,
        skipInboundPorts: this.#states.get(ip)?.policy.skipInbound.toString() ?? '',
        clusterNetworks: this.authorizer.networks.map((n) => n.text),
        trafficTargets: s.targets,
        servers: (s.servers ?? []).map((x) => ({ ...x.record, ports: x.ports })),
      };
    }
    return null;
  }
}

/** `diagnostics authz`'s "decided by": the Servers for the ports they select, then what decides the others. */
function decidedBy(policy: ServerPolicy): string {
  const s = policy.spec;
  const rest = policy.mode === 'smi'
    ? `the TrafficTargets of ServiceAccount ${s.namespace}/${s.serviceAccount} (its default policy ${s.defaultPolicy} does not apply while one selects it)`
    : `its default policy ${s.defaultPolicy} (${s.defaultFrom}); no TrafficTarget selects ServiceAccount ${s.namespace}/${s.serviceAccount}`;
  const servers = s.servers ?? [];
  if (servers.length === 0) return rest;
  const lines = servers.map(({ record: r, ports }) => {
    const authz = r.authorizations.map((a) => (a.kind === undefined ? a.name : `${a.kind} ${a.name}`));
    const routes = r.routes.map((x) => `${x.name}${x.authorizations.length > 0 ? ` (${x.authorizations.map((a) => a.name).join(', ')})` : ''}`);
    return `Server ${r.namespace}/${r.name} on port${ports.length > 1 ? 's' : ''} ${ports.join(', ')}: AuthorizationPolicies ${authz.length > 0 ? authz.join(', ') : 'none (denied to all'}${authz.length > 0 ? '' : r.accessPolicy === 'deny' ? ')' : ` but accessPolicy ${r.accessPolicy})`}${r.accessPolicy === 'audit' ? ', audit: what they do not allow passes, counted as authz default/audit' : ''}`
      + `${routes.length > 0 ? `; per request on HTTPRoutes ${routes.join(', ')}` : ''}${policy.mode === 'smi' ? ', or the TrafficTargets' : ''}`;
  });
  return `${lines.join('; ')}; other ports: ${rest}`;
}
