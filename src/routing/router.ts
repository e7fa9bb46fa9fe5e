// Where a connection's original destination goes (DESIGN.md, "Routing"): a ClusterIP:port of a
// Service the discovery store knows becomes a ServiceRoute with its balancer; anything else
// (pod IPs, headless Services, addresses outside the cluster) goes to the original destination,
// as before discovery. One balancer per Service port, created on first use and kept in step with
// the store's changes, so an endpoint that leaves gets no new request once the store hears of it.
import type { DiscoveryStore, ServiceTarget } from '../discovery/store.ts';
import { keyOf, serviceAuthority, type DiscoService, type DiscoServicePort } from '../discovery/model.ts';
import { Balancer, type EndpointSnapshot, type EwmaParams } from './balancer.ts';
import { accrualFromAnnotations } from './failure-accrual.ts';

/** A Service port as the telemetry names it. */
export interface ServiceRef {
  namespace: string;
  name: string;
  port: number;
}

export interface ServiceRoute {
  readonly ref: ServiceRef;
  /** name.namespace.svc.cluster.local:port: the authority requests to it are reported under. */
  readonly authority: string;
  readonly balancer: Balancer;
  /** Why some or all endpoints are missing, or an annotation was refused; empty when none. */
  problems: string[];
  /**
   * The route is no longer current (Service deleted or changed, port removed): in-flight work
   * finishes; a connection holding it resolves its destination again (current()).
   */
  stale: boolean;
  /** The route its connections should use now: itself, its successor, or null (no longer a Service). */
  current(ip: string, port: number): ServiceRoute | null;
}

export interface RouterOptions {
  ewma?: EwmaParams;
  log?: (msg: string) => void;
}

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
    this.unsubscribe = store.onChange((keys) => this.refresh(keys));
  }

  /** The Service route of an original destination, or null: go to the destination itself. */
  resolve(ip: string, port: number): ServiceRoute | null {
    const target = this.store.byVip(ip, port);
    if (target === null) return null;
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
   * The balancer's view of a Service's ports, creating the routes so a Service no request has
   * used yet still shows its endpoints.
   */
  describe(namespace: string, name: string): Array<{ ref: ServiceRef; authority: string; problems: string[]; endpoints: EndpointSnapshot[] }> | null {
    const svc = this.store.service(`${namespace}/${name}`);
    if (svc === undefined) return null;
    const out = [];
    for (const p of svc.ports) {
      for (const ip of svc.clusterIPs.slice(0, 1)) this.resolve(ip, p.port);
      const r = this.routes.get(keyOf(svc))?.get(p.port);
      if (r) out.push({ ref: r.ref, authority: r.authority, problems: r.problems, endpoints: r.balancer.snapshot() });
      else out.push({ ref: { namespace, name, port: p.port }, authority: serviceAuthority(namespace, name, p.port), problems: ['headless Service: requests go to the pod addresses'], endpoints: [] });
    }
    return out;
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
    };
    this.update(route, t);
    return route;
  }

  private update(route: ServiceRoute, t: ServiceTarget): void {
    const accrual = accrualFromAnnotations(t.service.annotations);
    route.balancer.setEndpoints(t.endpoints, accrual.params);
    route.problems = [...t.problems, ...accrual.errors];
    this.logProblems(route, t.service, t.port);
  }

  private refresh(keys: ReadonlySet<string> | 'all'): void {
    const affected = keys === 'all' ? [...this.routes.keys()] : [...keys].filter((k) => this.routes.has(k));
    for (const key of affected) {
      const byPort = this.routes.get(key)!;
      for (const [port, route] of byPort) {
        const t = this.store.target(key, port);
        if (t === null || t.service.clusterIPs.length === 0) {
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
