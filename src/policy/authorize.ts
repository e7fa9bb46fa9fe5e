// Who may connect to a pod, decided per connection and per HTTP request (docs/policy.md). Pure:
// the agent gives a pod's PolicySpec (plain data, what the discovery store and the pod's
// annotations say) and a client (its address and, when known, its identity); this says allow or
// deny and why, with the labels Linkerd's inbound authorization metrics carry.
//
// - With no TrafficTarget selecting the pod's ServiceAccount, its default policy decides, with
//   Linkerd's meaning: all-unauthenticated (anyone), all-authenticated (any client with a mesh
//   identity), cluster-authenticated (with an identity, from the cluster networks),
//   cluster-unauthenticated (anyone from the cluster networks), deny (no one), audit (anyone,
//   counted under authz default/audit: what enforcement would deny, as Linkerd 2.15+ labels it).
// - Once a TrafficTarget selects it, only what TrafficTargets allow passes: a client whose
//   identity is a source of a TrafficTarget covering the port, whole connections by a TCPRoute,
//   single requests by an HTTPRouteGroup's matches (the connection is then decided per request).
// - A port a Linkerd Server selects (server-model.ts) is decided by it instead of the default
//   policy: the clients its AuthorizationPolicies (and v1beta3 accessPolicy) admit, on its
//   HTTPRoutes when it has some, or the TrafficTargets of the pod's ServiceAccount: the union of
//   what either allows (docs/policy.md, "Linkerd's policy resources").
import {
  inNetworks, parseNetworks, restricts, spiffeId, type AccessRecord, type Cidr, type DefaultPolicy, type Identity,
} from './model.ts';
import { identityMatches, LINKERD_POLICY_GROUP, type PodServer, type ServerAuthz } from './server-model.ts';
import { pathOf, queryParam } from '../util/request-target.ts';
import { normalizePath } from './normalize-path.ts';
import { CompiledMatch, type RouteRequest } from '../routing/route-match.ts';
import { fullMatch } from '../routing/http-match.ts';
import type { RouteMatch } from '../routing/route-model.ts';

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
  /** Linkerd Servers selecting the pod, with the pod's ports each covers (absent: none). */
  servers?: PodServer[];
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
   * `matches`, those of the TrafficTargets naming the client on this port and of the Server's
   * routes open to it); anything else is denied. `from` names them for a denial's reason.
   */
  | { verdict: 'http'; server: ServerRef; matches: readonly PolicyMatch[]; from: string }
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
/** Linkerd's authz_* labels for an AuthorizationPolicy or a ServerAuthorization. */
const linkerdAuthz = (a: ServerAuthz): ObjectRef => ({ group: LINKERD_POLICY_GROUP, kind: a.kind === 'ServerAuthorization' ? 'serverauthorization' : 'authorizationpolicy', name: a.name });

/** A match that allows the requests it matches (route-match.ts, the router's matcher). */
export interface PolicyMatch {
  match: CompiledMatch;
  /** What allows a request it matches, and the route it is counted under. */
  authz: ObjectRef;
  route: ObjectRef;
}

/** A Server's AuthorizationPolicy, compiled: its networks parsed. */
interface CompiledAuthz {
  authz: ServerAuthz;
  networks: Array<{ in: Cidr[]; except: Cidr[] }> | null;
}

interface CompiledRoute {
  group: string;
  name: string;
  matches: CompiledMatch[];
  authorizations: CompiledAuthz[];
}

interface CompiledServer {
  server: PodServer;
  authorizations: CompiledAuthz[];
  routes: CompiledRoute[];
}

/**
 * An SMI HTTPRouteGroup match in the router's shape: its pathRegex and header regexes match the
 * whole value (as this policy always read them), one match per method of its list.
 */
function smiMatches(m: { pathRegex?: string; methods?: string[]; headers?: Array<{ name: string; regex: string }> }): RouteMatch[] {
  const base: RouteMatch = {};
  if (m.pathRegex !== undefined) base.path = { type: 'RegularExpression', value: fullMatch(m.pathRegex) };
  if (m.headers !== undefined && m.headers.length > 0) base.headers = m.headers.map((h) => ({ name: h.name, type: 'RegularExpression', value: fullMatch(h.regex) }));
  return m.methods === undefined ? [base] : m.methods.map((method) => ({ ...base, method }));
}

/** `cluster`: the agent's cluster networks, for a ServerAuthorization without networks of its own. */
function compileAuthz(a: ServerAuthz, cluster: readonly Cidr[]): CompiledAuthz {
  if (a.clusterNetworks === true) return { authz: a, networks: [{ in: [...cluster], except: [] }] };
  return { authz: a, networks: a.networks === undefined ? null : a.networks.map((n) => ({ in: parseNetworks(n.cidr), except: parseNetworks((n.except ?? []).join(',')) })) };
}

/** Why a default policy (or a Server's accessPolicy, the same values) refuses the client; null: it admits it. */
function refusal(p: DefaultPolicy, client: Client, networks: readonly Cidr[]): string | null {
  const fromCluster = (): boolean => inNetworks(client.ip, networks);
  switch (p) {
    case 'all-unauthenticated':
    case 'audit': // admits all; the decision's authz names it "audit", which the metrics and tap show
      return null;
    case 'all-authenticated':
      return client.identity ? null : 'the client has no mesh identity';
    case 'cluster-authenticated':
      if (!client.identity) return 'the client has no mesh identity';
      return fromCluster() ? null : `${client.ip} is outside the cluster networks`;
    case 'cluster-unauthenticated':
      return fromCluster() ? null : `${client.ip} is outside the cluster networks`;
    case 'deny':
      return 'no client may connect';
  }
}

/** Whether one AuthorizationPolicy admits the client: all it requires holds. */
function admits(a: CompiledAuthz, client: Client): boolean {
  const ids = a.authz.identities;
  if (ids !== undefined && (client.identity === null || !ids.some((p) => identityMatches(p, client.identity!)))) return false;
  if (a.networks !== null && !a.networks.some((n) => inNetworks(client.ip, n.in) && !inNetworks(client.ip, n.except))) return false;
  return true;
}

/** A TrafficTarget with its HTTP matches compiled. */
export interface CompiledTarget {
  record: AccessRecord;
  http: PolicyMatch[];
}

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
  readonly #servers: CompiledServer[];

  constructor(spec: PolicySpec, networks: readonly Cidr[]) {
    this.spec = spec;
    this.networks = networks;
    this.failsClosed = spec.targets.length > 0 || (spec.servers?.length ?? 0) > 0 || restricts(spec.defaultPolicy);
    this.#targets = spec.targets.map((record) => ({
      record,
      http: record.rules.flatMap((r) => (r.kind !== 'HTTPRouteGroup' ? [] : r.matches.flatMap(smiMatches).map((m) => ({
        match: new CompiledMatch(m),
        authz: { ...SMI_ACCESS, name: record.name },
        route: { group: 'specs.smi-spec.io', kind: 'httproutegroup', name: r.name },
      })))),
    }));
    this.#servers = (spec.servers ?? []).map((server) => ({
      server,
      authorizations: server.record.authorizations.map((a) => compileAuthz(a, networks)),
      routes: server.record.routes.map((r) => ({ group: r.group, name: r.name, matches: r.matches.map((m) => new CompiledMatch(m)), authorizations: r.authorizations.map((a) => compileAuthz(a, networks)) })),
    }));
  }

  /** The Linkerd Server that selects `port` of this pod, if one does (the first by name: Linkerd forbids overlaps). */
  serverOn(port: number): PodServer | undefined {
    return this.#compiledServerOn(port)?.server;
  }

  #compiledServerOn(port: number): CompiledServer | undefined {
    let best: CompiledServer | undefined;
    for (const s of this.#servers) if (s.server.ports.includes(port) && (best === undefined || s.server.record.name < best.server.record.name)) best = s;
    return best;
  }

  /** 'default' (the default policy decides) or 'smi' (TrafficTargets decide). */
  get mode(): 'default' | 'smi' {
    return this.#targets.length > 0 ? 'smi' : 'default';
  }

  server(port: number): ServerRef {
    const srv = this.serverOn(port);
    if (srv !== undefined) return { group: LINKERD_POLICY_GROUP, kind: 'server', name: srv.record.name, port };
    return this.mode === 'smi'
      ? { group: '', kind: 'serviceaccount', name: this.spec.serviceAccount, port }
      : { group: '', kind: 'default', name: this.spec.defaultPolicy, port };
  }

  connection(client: Client, port: number): ConnDecision {
    const server = this.server(port);
    const srv = this.#compiledServerOn(port);
    if (srv !== undefined) return this.#linkerd(srv, client, port, server);
    if (this.mode === 'default') {
      const p = this.spec.defaultPolicy;
      const why = refusal(p, client, this.networks);
      return why === null ? { verdict: 'allow', server, authz: { group: '', kind: 'default', name: p } } : { verdict: 'deny', server, reason: `${p}: ${why}` };
    }
    return this.#smi(client, port, server);
  }

  /** What the TrafficTargets of the pod's ServiceAccount say. */
  #smi(client: Client, port: number, server: ServerRef): ConnDecision {
    const mine = this.#applicable(client, port);
    if (typeof mine === 'string') return { verdict: 'deny', server, reason: mine };
    for (const t of mine) {
      for (const r of t.record.rules) {
        if (r.kind === 'TCPRoute' && (r.ports === undefined || r.ports.includes(port))) return { verdict: 'allow', server, authz: { ...SMI_ACCESS, name: t.record.name } };
      }
    }
    const names = mine.map((t) => t.record.name).join(', ');
    if (mine.some((t) => t.http.length > 0)) return { verdict: 'http', server, matches: mine.flatMap((t) => t.http), from: `HTTPRouteGroup match of ${names}` };
    return { verdict: 'deny', server, reason: `the TrafficTargets allowing ${spiffeId(client.identity!)} (${names}) have no TCPRoute with port ${port} and no HTTPRouteGroup` };
  }

  /**
   * A port a Linkerd Server selects: its AuthorizationPolicies (then its accessPolicy) for the
   * whole Server, or per request on its HTTPRoutes when it has some; the TrafficTargets of the
   * pod's ServiceAccount allow what they allow on top (a union of allows).
   */
  #linkerd(srv: CompiledServer, client: Client, port: number, server: ServerRef): ConnDecision {
    const rec = srv.server.record;
    const what = `Server ${rec.namespace}/${rec.name}`;
    const wide = srv.authorizations.find((a) => admits(a, client));
    let serverAuthz: ObjectRef | undefined = wide === undefined ? undefined : linkerdAuthz(wide.authz);
    if (serverAuthz === undefined && refusal(rec.accessPolicy, client, this.networks) === null) serverAuthz = { group: '', kind: 'default', name: rec.accessPolicy };
    const smi = this.#targets.length > 0 ? this.#smi(client, port, server) : null;
    if (smi?.verdict === 'allow') return smi;
    const matches: PolicyMatch[] = smi?.verdict === 'http' ? [...smi.matches] : [];
    if (srv.routes.length === 0) {
      if (serverAuthz !== undefined) return { verdict: 'allow', server, authz: serverAuthz };
    } else {
      for (const r of srv.routes) {
        const own = r.authorizations.find((a) => admits(a, client));
        const authz = own !== undefined ? linkerdAuthz(own.authz) : serverAuthz;
        if (authz === undefined) continue;
        const route: ObjectRef = { group: r.group, kind: 'httproute', name: r.name };
        for (const match of r.matches) matches.push({ match, authz, route });
      }
    }
    const who = client.identity ? spiffeId(client.identity) : `${client.ip} (no mesh identity)`;
    if (matches.length > 0) return { verdict: 'http', server, matches, from: `HTTPRoute match of ${what} open to it${smi?.verdict === 'http' ? ` or ${smi.from}` : ''}` };
    const names = rec.authorizations.map((a) => a.name);
    const routes = rec.routes.length === 0 ? '' : `; with HTTPRoutes (${rec.routes.map((r) => r.name).join(', ')}), none of whose AuthorizationPolicies admits it either`;
    return {
      verdict: 'deny', server,
      reason: `${what} selects port ${port} and no AuthorizationPolicy allows ${who} (${names.length === 0 ? 'none targets it' : `it has ${names.join(', ')}`}; accessPolicy ${rec.accessPolicy}${routes})${smi?.verdict === 'deny' && this.#targets.length > 0 ? `; nor do the TrafficTargets: ${smi.reason}` : ''}`,
    };
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
    // The router's matcher, on the path as the pod will resolve it: routing sends the request on
    // as the client wrote it, so it matches that; a policy decides what the pod will serve, and
    // `/public/../admin` must be judged as `/admin`, or a match on `/public` would let it through.
    const path = normalizePath(pathOfTarget(req.target));
    const view: RouteRequest = { method: req.method, path, header: (n) => req.header(n), query: (n) => queryParam(req.target, n) };
    for (const m of conn.matches) {
      if (m.match.matches(view)) return { allowed: true, server: conn.server, authz: m.authz, route: m.route };
    }
    const who = client.identity ? spiffeId(client.identity) : `${client.ip} (no mesh identity)`;
    return {
      allowed: false, server: conn.server, route: DEFAULT_ROUTE,
      reason: `no ${conn.from} allows ${req.method} ${path.slice(0, 200)} for ${who}`,
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
