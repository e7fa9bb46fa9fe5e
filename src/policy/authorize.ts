// Who may connect to a pod, decided per connection and per HTTP request (docs/policy.md). Pure:
// the agent gives a pod's PolicySpec (plain data, what the discovery store and the pod's
// annotations say) and a client (its address and, when known, its identity); this says allow or
// deny and why, with the labels Linkerd's inbound authorization metrics carry.
//
// - With no TrafficTarget selecting the pod's ServiceAccount, its default policy decides, with
//   Linkerd's meaning: all-unauthenticated (anyone), all-authenticated (any client with a mesh
//   identity), cluster-authenticated (with an identity, from the cluster networks),
//   cluster-unauthenticated (anyone from the cluster networks), deny (no one).
// - Once a TrafficTarget selects it, only what TrafficTargets allow passes: a client whose
//   identity is a source of a TrafficTarget covering the port, whole connections by a TCPRoute,
//   single requests by an HTTPRouteGroup's matches (the connection is then decided per request).
import {
  inNetworks, restricts, spiffeId, type AccessRecord, type Cidr, type DefaultPolicy, type Identity,
} from './model.ts';
import { userRegExp } from '../util/regex-check.ts';
import { pathOf } from '../util/request-target.ts';
import { normalizePath } from './normalize-path.ts';

/** What applies to one pod, as plain data (structured-cloneable: the proxy workers get it too). */
export interface PolicySpec {
  namespace: string;
  pod: string;
  serviceAccount: string;
  defaultPolicy: DefaultPolicy;
  /** Where the default policy came from, for diagnostics ("pod annotation mesh-agent.io/...", "cluster default"). */
  defaultFrom: string;
  /** TrafficTargets whose destination is the pod's ServiceAccount. */
  targets: AccessRecord[];
}

export interface Client {
  ip: string;
  /** null: no mesh identity (an unmeshed client, or a meshed one whose identity this agent cannot verify). */
  identity: Identity | null;
}

/** Linkerd's srv_* labels: the server (port) a decision is about. */
export interface ServerRef {
  group: string;
  kind: string;
  name: string;
  port: number;
}

/** Linkerd's authz_* and route_* labels. */
export interface ObjectRef {
  group: string;
  kind: string;
  name: string;
}

export type ConnDecision =
  | { verdict: 'allow'; server: ServerRef; authz: ObjectRef }
  /**
   * Only HTTP routes can allow this client: each request is decided (requestOn(), against
   * `targets`, the TrafficTargets naming the client on this port); anything else is denied.
   */
  | { verdict: 'http'; server: ServerRef; targets: readonly CompiledTarget[] }
  | { verdict: 'deny'; server: ServerRef; reason: string };

export type RequestDecision =
  | { allowed: true; server: ServerRef; authz: ObjectRef; route: ObjectRef }
  | { allowed: false; server: ServerRef; route: ObjectRef; reason: string };

export interface HttpRequestView {
  method: string;
  /** The request target as sent (origin form, or absolute form). */
  target: string;
  /** A header's value (lower-case name); undefined when absent. */
  header(name: string): string | undefined;
}

export const DEFAULT_ROUTE: ObjectRef = { group: '', kind: 'default', name: 'default' };
const SMI_ACCESS: ObjectRef = { group: 'access.smi-spec.io', kind: 'traffictarget', name: '' };

interface CompiledMatch {
  group: string;
  name: string;
  path: RegExp | null;
  methods: readonly string[] | null;
  headers: Array<{ name: string; re: RegExp }>;
}

/** A TrafficTarget with its HTTP matches compiled. */
export interface CompiledTarget {
  record: AccessRecord;
  http: CompiledMatch[];
}

const whole = (re: string): RegExp => userRegExp(`^(?:${re})$`);

/** The path a policy judges: the request target's (util/request-target.ts), also without a fragment ("/a#b" is "/a"). */
export function pathOfTarget(target: string): string {
  const p = pathOf(target);
  const h = p.indexOf('#');
  return h < 0 ? p : p.slice(0, h);
}

export const sameIdentity = (a: Identity, b: Identity): boolean => a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;

export class ServerPolicy {
  readonly spec: PolicySpec;
  readonly networks: readonly Cidr[];
  readonly failsClosed: boolean;
  readonly #targets: CompiledTarget[];

  constructor(spec: PolicySpec, networks: readonly Cidr[]) {
    this.spec = spec;
    this.networks = networks;
    this.failsClosed = spec.targets.length > 0 || restricts(spec.defaultPolicy);
    this.#targets = spec.targets.map((record) => ({
      record,
      http: record.rules.flatMap((r) => (r.kind !== 'HTTPRouteGroup' ? [] : r.matches.map((m) => ({
        group: r.name,
        name: m.name,
        path: m.pathRegex === undefined ? null : whole(m.pathRegex),
        methods: m.methods ?? null,
        headers: (m.headers ?? []).map((h) => ({ name: h.name, re: whole(h.regex) })),
      })))),
    }));
  }

  /** 'default' (the default policy decides) or 'smi' (TrafficTargets decide). */
  get mode(): 'default' | 'smi' {
    return this.#targets.length > 0 ? 'smi' : 'default';
  }

  server(port: number): ServerRef {
    return this.mode === 'smi'
      ? { group: '', kind: 'serviceaccount', name: this.spec.serviceAccount, port }
      : { group: '', kind: 'default', name: this.spec.defaultPolicy, port };
  }

  connection(client: Client, port: number): ConnDecision {
    const server = this.server(port);
    if (this.mode === 'default') {
      const p = this.spec.defaultPolicy;
      const allow = (): ConnDecision => ({ verdict: 'allow', server, authz: { group: '', kind: 'default', name: p } });
      const deny = (reason: string): ConnDecision => ({ verdict: 'deny', server, reason: `${p}: ${reason}` });
      const fromCluster = inNetworks(client.ip, this.networks);
      switch (p) {
        case 'all-unauthenticated':
          return allow();
        case 'all-authenticated':
          return client.identity ? allow() : deny('the client has no mesh identity');
        case 'cluster-authenticated':
          if (!client.identity) return deny('the client has no mesh identity');
          return fromCluster ? allow() : deny(`${client.ip} is outside the cluster networks`);
        case 'cluster-unauthenticated':
          return fromCluster ? allow() : deny(`${client.ip} is outside the cluster networks`);
        case 'deny':
          return deny('no client may connect');
      }
    }
    const mine = this.#applicable(client, port);
    if (typeof mine === 'string') return { verdict: 'deny', server, reason: mine };
    for (const t of mine) {
      for (const r of t.record.rules) {
        if (r.kind === 'TCPRoute' && (r.ports === undefined || r.ports.includes(port))) return { verdict: 'allow', server, authz: { ...SMI_ACCESS, name: t.record.name } };
      }
    }
    if (mine.some((t) => t.http.length > 0)) return { verdict: 'http', server, targets: mine };
    return { verdict: 'deny', server, reason: `the TrafficTargets allowing ${spiffeId(client.identity!)} (${mine.map((t) => t.record.name).join(', ')}) have no TCPRoute with port ${port} and no HTTPRouteGroup` };
  }

  /** One HTTP request on a connection to `port`. */
  request(client: Client, port: number, req: HttpRequestView): RequestDecision {
    return this.requestOn(this.connection(client, port), client, req);
  }

  /**
   * One HTTP request on a connection this policy has decided (`conn`, connection() for the same
   * client and port): a connection's requests reuse its decision rather than make it again.
   */
  requestOn(conn: ConnDecision, client: Client, req: HttpRequestView): RequestDecision {
    if (conn.verdict === 'allow') return { allowed: true, server: conn.server, authz: conn.authz, route: DEFAULT_ROUTE };
    if (conn.verdict === 'deny') return { allowed: false, server: conn.server, route: DEFAULT_ROUTE, reason: conn.reason };
    const mine = conn.targets;
    const path = normalizePath(pathOfTarget(req.target)); // as the pod will resolve it
    for (const t of mine) {
      for (const m of t.http) {
        if (m.methods !== null && !m.methods.includes(req.method)) continue;
        if (m.path !== null && !m.path.test(path)) continue;
        if (!m.headers.every((h) => {
          const v = req.header(h.name);
          return v !== undefined && h.re.test(v);
        })) continue;
        return { allowed: true, server: conn.server, authz: { ...SMI_ACCESS, name: t.record.name }, route: { group: 'specs.smi-spec.io', kind: 'httproutegroup', name: m.group } };
      }
    }
    return {
      allowed: false, server: conn.server, route: DEFAULT_ROUTE,
      reason: `no HTTPRouteGroup match of ${mine.map((t) => t.record.name).join(', ')} allows ${req.method} ${path.slice(0, 200)} for ${spiffeId(client.identity!)}`,
    };
  }

  /** TrafficTargets covering the port with the client as a source, or why there are none. */
  #applicable(client: Client, port: number): CompiledTarget[] | string {
    const { namespace, serviceAccount } = this.spec;
    const onPort = this.#targets.filter((t) => t.record.destination.port === undefined || t.record.destination.port === port);
    if (onPort.length === 0) return `no TrafficTarget of ServiceAccount ${namespace}/${serviceAccount} covers port ${port}`;
    if (client.identity === null) return `TrafficTargets select ServiceAccount ${namespace}/${serviceAccount} and allow ServiceAccounts only; ${client.ip} has no mesh identity`;
    const id = client.identity;
    const mine = onPort.filter((t) => t.record.sources.some((s) => sameIdentity(s, id)));
    if (mine.length === 0) return `no TrafficTarget of ServiceAccount ${namespace}/${serviceAccount} on port ${port} allows ${spiffeId(id)}`;
    return mine;
  }
}
