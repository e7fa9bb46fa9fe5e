// Linkerd's inbound authorization metrics (linkerd/app/inbound/src/metrics/authz.rs): every
// decision of a destination pod's inbound policy (docs/policy.md), HTTP per request, TCP per
// non-HTTP connection. Labels as linkerd2-proxy's: target_addr, srv_* (the server: the pod's
// default policy, or its ServiceAccount under TrafficTargets), authz_* (what allowed it), route_*
// (HTTP), the TLS labels (tls and client_id, client_id alone on the same node, or
// tls="no_identity" and no_tls_reason); plus the server workload's own
// labels (namespace, <kind>, pod), which Linkerd's Prometheus scrape adds from the pod.
import type { AuthzOutcome, Endpoints, PolicyRef } from './events.ts';
import { BoundedCache } from './bounded-cache.ts';
import { serverTlsLabels, WORKLOAD_KINDS, type Labels } from './labels.ts';
import { add, type CounterSeries, type SeriesFamily } from './series.ts';

type Make = (type: 'counter', name: string, help: string, labelNames: string[], keep: string[]) => SeriesFamily<CounterSeries>;

const SERVER = ['namespace', ...WORKLOAD_KINDS, 'pod', 'target_addr', 'srv_group', 'srv_kind', 'srv_name', 'srv_port'];
const TLS = ['tls', 'client_id', 'no_tls_reason'];
const ref = (scope: string, r: PolicyRef | undefined): Labels => (r === undefined ? {} : { [`${scope}_group`]: r.group, [`${scope}_kind`]: r.kind, [`${scope}_name`]: r.name });
const scoped = (scope: string) => [`${scope}_group`, `${scope}_kind`, `${scope}_name`];

export class AuthzMetrics {
  readonly #httpAllow: SeriesFamily<CounterSeries>;
  readonly #httpDeny: SeriesFamily<CounterSeries>;
  readonly #tcpAllow: SeriesFamily<CounterSeries>;
  readonly #tcpDeny: SeriesFamily<CounterSeries>;
  readonly #tcpTerminate: SeriesFamily<CounterSeries>;
  /** A decision's identity (everything its labels are made of) to its series. */
  readonly #resolved: BoundedCache<CounterSeries>;

  constructor(make: Make, generation: () => number) {
    this.#httpAllow = make('counter', 'inbound_http_authz_allow_total', 'The total number of inbound HTTP requests that were authorized', [...SERVER, ...scoped('route'), ...scoped('authz'), ...TLS, 'overflow'], ['srv_name']);
    this.#httpDeny = make('counter', 'inbound_http_authz_deny_total', 'The total number of inbound HTTP requests that were denied by the inbound policy', [...SERVER, ...scoped('route'), ...TLS, 'overflow'], ['srv_name']);
    this.#tcpAllow = make('counter', 'inbound_tcp_authz_allow_total', 'The total number of inbound TCP connections that were authorized', [...SERVER, ...scoped('authz'), ...TLS, 'overflow'], ['srv_name']);
    this.#tcpDeny = make('counter', 'inbound_tcp_authz_deny_total', 'The total number of inbound TCP connections that were denied', [...SERVER, ...TLS, 'overflow'], ['srv_name']);
    // Linkerd's: an allowed connection closed because a policy change no longer allows it (its
    // allow is counted too), labelled as a denial by the server now in force.
    this.#tcpTerminate = make('counter', 'inbound_tcp_authz_terminate_total', 'The total number of inbound TCP connections that were terminated due to an authorization change', [...SERVER, ...TLS, 'overflow'], ['srv_name']);
    this.#resolved = new BoundedCache(1024, generation);
  }

  /** One decision: `http` for a request, else a connection's. `server` is the destination workload's labels. */
  record(ev: Endpoints & { authz: AuthzOutcome }, http: boolean, server: () => Labels): void {
    const a = ev.authz;
    if (!http && a.upgraded) return this.#terminated(ev, server);
    const key = `${http ? 'h' : 't'}${a.allowed ? '+' : '-'}|${ev.destIp}:${ev.destPort}|${ev.tls?.clientId ?? ''}|${ev.clientId ?? ''}|${a.server.kind}/${a.server.name}|${a.authz?.kind}/${a.authz?.name}|${a.route?.kind}/${a.route?.name}`;
    let s = this.#resolved.get(key);
    if (s === undefined) {
      const labels = this.#labels(ev, http, server);
      const f = http ? (a.allowed ? this.#httpAllow : this.#httpDeny) : a.allowed ? this.#tcpAllow : this.#tcpDeny;
      s = f.resolve(labels);
      this.#resolved.set(key, s);
    }
    add(s, 1);
    if (!http) this.#terminated(ev, server);
  }

  /** A connection's termination by a policy change (terminatedBy), if it was terminated. */
  #terminated(ev: Endpoints & { authz: AuthzOutcome }, server: () => Labels): void {
    const by = ev.authz.terminatedBy;
    if (by === undefined) return;
    const tkey = `x|${ev.destIp}:${ev.destPort}|${ev.tls?.clientId ?? ''}|${ev.clientId ?? ''}|${by.kind}/${by.name}`;
    let t = this.#resolved.get(tkey);
    if (t === undefined) {
      t = this.#tcpTerminate.resolve(this.#labels({ ...ev, authz: { allowed: false, server: by } }, false, server));
      this.#resolved.set(tkey, t);
    }
    add(t, 1);
  }

  #labels(ev: Endpoints & { authz: AuthzOutcome }, http: boolean, server: () => Labels): Labels {
    const a = ev.authz;
    return {
      ...server(),
      target_addr: `${ev.destIp}:${ev.destPort}`,
      srv_group: a.server.group, srv_kind: a.server.kind, srv_name: a.server.name, srv_port: String(a.server.port),
      ...(http ? ref('route', a.route) : {}),
      ...(a.allowed ? ref('authz', a.authz) : {}),
      ...serverTlsLabels(ev),
    };
  }
}
