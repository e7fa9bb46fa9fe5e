// Where a connection's original destination goes (DESIGN.md, "Routing"): a ClusterIP:port of a
// Service the discovery store knows becomes a ServiceRoute with its balancer; anything else
// (pod IPs, headless Services' pods, addresses outside the cluster) goes to the original
// destination, as before discovery. A route's backendRef resolves by Service name and port, a
// headless Service's too: its requests are balanced over the Service's ready endpoints. One
// balancer per Service port, created on first use and kept in step with the store's changes,
// so an endpoint that leaves gets no new request once the store hears of it.
import { serviceUsesPort, type DiscoveryStore, type ServiceTarget } from '../discovery/store.ts';
import { keyOf, serviceAuthority, type DiscoService, type DiscoServicePort } from '../discovery/model.ts';
import { Balancer, type EndpointSnapshot, type EwmaParams } from './balancer.ts';
import { accrualFromAnnotations } from './failure-accrual.ts';
import { policyFromAnnotations } from './linkerd-annotations.ts';
import { ParentPolicy, type CompiledBackend } from './route-table.ts';
import { DEFAULT_BUDGET, RetryBudget } from './retry-budget.ts';
import { policyView, type PolicyView } from './policy-view.ts';

/** A Service port as the telemetry names it. */
export interface ServiceRef {
  namespace: string;
  name: string;
  port: number;
}

/** A balancer's endpoints by state, for the outbound_http_balancer_endpoints gauge. */
export interface BalancerCount {
  namespace: string;
  name: string;
  port: number;
  ready: number;
  pending: number;
}

export interface ServiceRoute {
  readonly ref: ServiceRef;
  /** name.namespace.svc.cluster.local:port: the authority requests to it are reported under. */
  readonly authority: string;
  readonly balancer: Balancer;
  /** Why some or all endpoints are missing, or an annotation was refused; empty when none. */
  problems: string[];
  /** Topology aware routing: the mode and the endpoints it kept, or why hints are ignored (store.ts ServiceTarget). */
  topology?: string;
  /**
   * The route is no longer current (Service deleted or changed, port removed): in-flight work
   * finishes; a connection holding it resolves its destination again (current()).
   */
  stale: boolean;
  /** The route its connections should use now: itself, its successor, or null (no longer a Service). */
  current(ip: string, port: number): ServiceRoute | null;
  /**
   * Routes, retries and timeouts of this Service port (route-table.ts); null when it has none,
   * and requests take the plain balanced path. Replaced, never mutated, when its inputs change.
   */
  policy: ParentPolicy | null;
  /** The router that made it: backends and retry budgets of routed requests are resolved there. */
  readonly router: Router;
}

/** Who a client pod is, for consumer routes (its namespace) and retry budgets (its workload). */
export interface ClientIdentity {
  namespace: string;
  /** namespace/kind/name of its workload. */
  workload: string;
}

export interface RouterOptions {
  ewma?: EwmaParams;
  log?: (msg: string) => void;
  /** The pod behind a source IP (the agent's pods and the discovery store); null when unknown. */
  clients?: (ip: string) => ClientIdentity | null;
  /** Picks among weighted backends (tests seed it). */
  random?: () => number;
  /** The retry budgets' clock. */
  now?: () => number;
  /**
   * This router's share of each retry budget's per-second minimum (default 1): an agent with N
   * proxies (threads) gives each 1/N, so a client's retries stay within the budget however the
   * kernel spreads its connections over them. The ratio part needs no share: each proxy counts
   * the requests it carries.
   */
  budgetShare?: number;
}

/** Client identity from a workload resolver (the agent's pods, then the discovery store's). */
export function clientsOf(w: { byIp(ip: string): { namespace: string; kind: string; name: string } | null }): (ip: string) => ClientIdentity | null {
  return (ip) => {
    const x = w.byIp(ip);
    return x === null ? null : { namespace: x.namespace, workload: `${x.namespace}/${x.kind}/${x.name}` };
  };
}

/**
 * Whether a Service has endpoints a balancer can hold: a ClusterIP one's, or a headless one's
 * (as a route backend). ExternalName and IPv6-only Services have none here.
 */
const balanced = (svc: DiscoService): boolean => svc.clusterIPs.length > 0 || svc.headless === true;

/** Budgets kept, per client workload and Service; past this the oldest are dropped. */
const MAX_BUDGETS = 10_000;

export class Router {
  private readonly store: DiscoveryStore;
  private readonly opts: RouterOptions;
  /** service key -> port -> route */
  private readonly routes = new Map<string, Map<number, ServiceRoute>>();
  /** Problems already logged, per route, so a repeated update does not repeat the line. */
  private readonly logged = new Map<string, string>();
  private readonly unsubscribe: () => void;

  constructor(store: DiscoveryStore, opts: RouterOptions = {}) {
    this.store = store;
    this.opts = opts;
    this.random = opts.random ?? Math.random;
    this.unsubscribe = store.onChange((keys) => this.refresh(keys));
  }

  /** Random numbers for weighted picks. */
  readonly random: () => number;
  private readonly budgets = new Map<string, RetryBudget>();

  /** The Service route of an original destination, or null: go to the destination itself. */
  resolve(ip: string, port: number): ServiceRoute | null {
    const target = this.store.byVip(ip, port);
    if (target === null) return null;
    return this.routeOf(target);
  }

  /**
   * A route's backend as a Service route with its balancer, or null when the store has no such
   * Service port, or the Service has no endpoints to balance (ExternalName, IPv6 only). A
   * headless Service is balanced over its endpoints as a ClusterIP one. Cached on the backend
   * until the store changes.
   */
  backend(b: CompiledBackend): ServiceRoute | null {
    const gen = this.store.generation;
    if (b.targetGen === gen) return b.target as ServiceRoute | null;
    const t = this.store.target(`${b.namespace}/${b.name}`, b.port);
    const r = t === null || !balanced(t.service) ? null : this.routeOf(t);
    b.target = r;
    b.targetGen = gen;
    return r;
  }

  /** Why backend(b) is null, as the 500 its requests are answered says. */
  missingBackend(b: CompiledBackend): string {
    const svc = this.store.service(`${b.namespace}/${b.name}`);
    if (svc === undefined) return `backend Service ${b.namespace}/${b.name} port ${b.port} not found`;
    if (serviceUsesPort(svc, b.port) === undefined) return `backend Service ${b.namespace}/${b.name} has no port ${b.port}`;
    return `backend Service ${b.namespace}/${b.name} port ${b.port} has neither an IPv4 ClusterIP nor clusterIP None (an ExternalName or IPv6-only Service): there is nothing to balance its requests over; name a Service with an IPv4 ClusterIP or a headless one`;
  }

  /** Who is behind a source IP; a pod the agent does not know is its own workload. */
  client(ip: string): ClientIdentity {
    return this.knownClient(ip) ?? { namespace: '', workload: `ip/${ip}` };
  }

  /** The pod behind a source IP, or null while the agent does not know it. */
  knownClient(ip: string): ClientIdentity | null {
    return this.opts.clients?.(ip) ?? null;
  }

  /** The retry budget of a client workload towards a Service (GEP-3388: per client and Service). */
  budget(client: ClientIdentity, route: ServiceRoute): RetryBudget {
    const k = `${client.workload}|${route.ref.namespace}/${route.ref.name}`;
    let b = this.budgets.get(k);
    if (b === undefined) {
      if (this.budgets.size >= MAX_BUDGETS) this.budgets.delete(this.budgets.keys().next().value!);
      const share = this.opts.budgetShare ?? 1;
      b = new RetryBudget(share === 1 ? DEFAULT_BUDGET : { ...DEFAULT_BUDGET, minPerSecond: DEFAULT_BUDGET.minPerSecond * share }, this.opts.now);
      this.budgets.set(k, b);
    }
    return b;
  }

  private routeOf(target: ServiceTarget): ServiceRoute {
    const key = keyOf(target.service);
    let byPort = this.routes.get(key);
    const existing = byPort?.get(target.port.port);
    if (existing !== undefined) return existing;
    const route = this.create(target);
    if (byPort === undefined) this.routes.set(key, (byPort = new Map()));
    byPort.set(target.port.port, route);
    return route;
  }

  /** Routes currently held (diagnostics). */
  route(namespace: string, name: string, port?: number): ServiceRoute[] {
    const byPort = this.routes.get(`${namespace}/${name}`);
    if (byPort === undefined) return [];
    return [...byPort.values()].filter((r) => port === undefined || r.ref.port === port);
  }

  /**
   * Endpoints of every balancer this router holds (the Service ports requests or connections
   * have used): ready ones take requests, pending ones failure accrual holds back.
   */
  balancerCounts(): BalancerCount[] {
    const out: BalancerCount[] = [];
    for (const byPort of this.routes.values()) {
      for (const r of byPort.values()) {
        const pending = r.balancer.heldBack();
        out.push({ namespace: r.ref.namespace, name: r.ref.name, port: r.ref.port, ready: r.balancer.size - pending, pending });
      }
    }
    return out;
  }

  /**
   * The balancer's view of a Service's ports, creating the routes so a Service no request has
   * used yet still shows its endpoints.
   */
  describe(namespace: string, name: string): Array<{ ref: ServiceRef; authority: string; problems: string[]; topology?: string; endpoints: EndpointSnapshot[] }> | null {
    const svc = this.store.service(`${namespace}/${name}`);
    if (svc === undefined) return null;
    const out = [];
    for (const p of svc.ports) {
      for (const ip of svc.clusterIPs.slice(0, 1)) this.resolve(ip, p.port);
      const r = this.routes.get(keyOf(svc))?.get(p.port);
      if (r) out.push({ ref: r.ref, authority: r.authority, problems: r.problems, ...(r.topology !== undefined ? { topology: r.topology } : {}), endpoints: r.balancer.snapshot() });
      else out.push({ ref: { namespace, name, port: p.port }, authority: serviceAuthority(namespace, name, p.port), problems: ['headless Service: requests go to the pod addresses'], endpoints: [] });
    }
    return out;
  }

  /**
   * What routes, retries and timeouts a Service's ports have for clients of one namespace
   * (diagnostics policy), creating the routes as describe() does. null: no such Service.
   */
  describePolicy(namespace: string, name: string, clientNamespace: string): PolicyView[] | null {
    const svc = this.store.service(`${namespace}/${name}`);
    if (svc === undefined) return null;
    const errors = policyFromAnnotations(svc.annotations, { kind: 'Service', namespace, name }).errors;
    return svc.ports.map((p) => {
      for (const ip of svc.clusterIPs.slice(0, 1)) this.resolve(ip, p.port);
      const r = this.routes.get(keyOf(svc))?.get(p.port);
      return policyView({ namespace, name, port: p.port }, r?.policy ?? null, clientNamespace, errors);
    });
  }

  close(): void {
    this.unsubscribe();
  }

  private create(t: ServiceTarget): ServiceRoute {
    const { service, port } = t;
    const route: ServiceRoute = {
      ref: { namespace: service.namespace, name: service.name, port: port.port },
      authority: serviceAuthority(service.namespace, service.name, port.port),
      balancer: new Balancer({ ewma: this.opts.ewma }),
      problems: [],
      stale: false,
      current: (ip, p) => (route.stale ? this.resolve(ip, p) : route),
      policy: null,
      router: this,
    };
    this.update(route, t);
    return route;
  }

  private update(route: ServiceRoute, t: ServiceTarget): void {
    const accrual = accrualFromAnnotations(t.service.annotations);
    route.balancer.setEndpoints(t.endpoints, accrual.params);
    route.topology = t.topology;
    const { namespace, name } = t.service;
    const port = t.port.port;
    const service = policyFromAnnotations(t.service.annotations, { kind: 'Service', namespace, name });
    const attached = this.store.routesFor(`${namespace}/${name}`).filter((r) => r.parents.some((p) => p.namespace === namespace && p.name === name && (p.port === undefined || p.port === port)));
    route.policy = ParentPolicy.needed(service, attached) ? new ParentPolicy({ namespace, name, port }, service, attached) : null;
    route.problems = [...t.problems, ...accrual.errors, ...service.errors,
      ...(route.policy?.overridden ?? []).map((o) => `${o.route.kind} ${o.route.namespace}/${o.route.name} does not apply: ${o.reason}`)];
    this.logProblems(route, t.service, t.port);
  }

  private refresh(keys: ReadonlySet<string> | 'all'): void {
    const affected = keys === 'all' ? [...this.routes.keys()] : [...keys].filter((k) => this.routes.has(k));
    for (const key of affected) {
      const byPort = this.routes.get(key)!;
      for (const [port, route] of byPort) {
        const t = this.store.target(key, port);
        if (t === null || !balanced(t.service)) {
          route.stale = true;
          route.balancer.setEndpoints([]);
          byPort.delete(port);
          this.logged.delete(`${key}|${port}`);
        } else this.update(route, t);
      }
      if (byPort.size === 0) this.routes.delete(key);
    }
  }

  private logProblems(route: ServiceRoute, svc: DiscoService, port: DiscoServicePort): void {
    const k = `${keyOf(svc)}|${port.port}`;
    const text = route.problems.join('; ');
    if (this.logged.get(k) === text) return;
    this.logged.set(k, text);
    if (text !== '') this.opts.log?.(`Service ${keyOf(svc)} port ${port.port}: ${text}`);
  }
}
