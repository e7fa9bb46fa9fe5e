// The one shape every forwarder reports in. The telemetry issue consumes these
// (Prometheus, tap, controller reports); forwarders never talk to those directly.

export type Protocol = 'http1' | 'http2' | 'tls' | 'opaque';
export type Direction = 'outbound' | 'inbound';

/** Who opened the connection and where it was going before the datapath redirected it. */
export interface Endpoints {
  direction: Direction;
  /** Source pod IP as the proxy sees it (the connection's remote address). */
  sourceIp: string;
  sourcePort: number;
  /** Datapath key of the source pod (its pod cgroup id), 0n when unknown. */
  sourcePodKey: bigint;
  /**
   * Where the connection or request went: the original destination from the datapath record,
   * or, for a request balanced across a Service, the endpoint chosen for it.
   */
  destIp: string;
  destPort: number;
  /** The Service whose ClusterIP the client dialled (routing/router.ts); absent for anything else. */
  dstService?: { namespace: string; name: string };
  /**
   * Set by the destination's agent on a connection it took out of an mTLS tunnel: both SPIFFE IDs,
   * the client's as its verified certificate names it. On the client's agent the identities of a
   * tunnelled connection come from the telemetry's TLS resolver (tunnel/path.ts decides both).
   */
  tls?: TlsIds;
  /**
   * The client's mesh identity (SPIFFE ID) when the agent knows it without a tunnel: a meshed pod
   * of this node, from the node's own pod list (docs/policy.md). Its inbound side carries
   * client_id without tls="true" (the connection never left the node); a client with neither this
   * nor `tls` is labelled tls="no_identity".
   */
  clientId?: string;
  /**
   * An inbound authorization decision (docs/policy.md): on a connection's close event the TCP
   * decision of a non-HTTP connection, on a request event that request's.
   */
  authz?: AuthzOutcome;
}

/** The two ends of an mTLS tunnel, as Linkerd's client_id and server_id labels name them. */
export interface TlsIds {
  clientId: string;
  serverId: string;
}

/** A policy object as Linkerd's srv_*, authz_* and route_* labels name it. */
export interface PolicyRef {
  group: string;
  kind: string;
  name: string;
}

export interface AuthzOutcome {
  allowed: boolean;
  server: PolicyRef & { port: number };
  /** What allowed it (absent when denied). */
  authz?: PolicyRef;
  /** HTTP decisions: the route that matched (default when none). */
  route?: PolicyRef;
  /**
   * A connection allowed whole, then reset because a policy change no longer allowed it: the server
   * (srv_*) of the policy that no longer did (inbound_tcp_authz_terminate_total, labelled as Linkerd's:
   * as a denial).
   */
  terminatedBy?: PolicyRef & { port: number };
  /**
   * An HTTP/1 connection upgraded to a byte stream (101, 2xx to CONNECT): allowed by its request's
   * decision, already counted in inbound_http_authz_allow_total, so as a connection only its
   * termination is counted.
   */
  upgraded?: true;
}

export interface ConnOpenEvent extends Endpoints {
  connId: number;
  openedAt: number; // ms since epoch
}

export interface ConnCloseEvent extends Endpoints {
  connId: number;
  protocol: Protocol;
  /** How detection ended: the detector's verdict, 'server-first', 'deadline', 'opaque-port', 'drain' (closed silent by the drain). */
  detectedBy: string;
  detectMs: number;
  bytesIn: number; // client -> upstream
  bytesOut: number; // upstream -> client
  durationMs: number;
  error?: string;
}

/** Bytes moved on a live connection since the last report (metrics update while it lives). */
export interface ConnBytesEvent extends Endpoints {
  connId: number;
  bytesIn: number;
  bytesOut: number;
}

/** A Service port as route metrics label it (parent_* and backend_*). */
export interface ServicePortRef {
  namespace: string;
  name: string;
  port: number;
}

/** A route object as Linkerd's route_* labels name it (kind "default" for a Service's own route). */
export interface RouteObjectRef {
  group: string;
  kind: string;
  namespace: string;
  name: string;
}

/** An attempt that failed and was retried (backend metrics count every attempt). */
export interface AttemptReport {
  backend: ServicePortRef;
  /** 0 when no response head came. */
  status: number;
  grpcStatus?: number;
  /** Linkerd's error label when no response came: RESPONSE_HEADERS_TIMEOUT, IO, REFUSED, ... */
  error?: string;
  durationMs: number;
}

/** How a routed request went through its route (docs/routing.md, metrics). */
export interface RouteReport {
  /** The Service the client called. */
  parent: ServicePortRef;
  route: RouteObjectRef;
  /** The final attempt's backend (the parent itself when the rule names none). */
  backend: ServicePortRef;
  /** Retries sent (attempts - 1). */
  retries: number;
  /**
   * Linkerd's retry counters: 'success' when a retry's answer was not retryable; 'limit_exceeded'
   * when the last answer was retryable but the limit was reached; 'overflow' when the retry budget
   * refused a retry.
   */
  retryOutcome?: 'success' | 'limit_exceeded' | 'overflow';
  /** The failed attempts before the final one. */
  earlier?: AttemptReport[];
  /** Linkerd's error label of the final outcome when the proxy answered for it (REQUEST_TIMEOUT, FAIL_FAST, ...). */
  error?: string;
  /** The final attempt, from its start to the end of its response, ms. */
  backendMs: number;
  /** The final attempt got a response head from the backend (else the proxy answered, or nobody). */
  backendResponded: boolean;
  /** The rule's RequestRedirect answered: no backend was asked, the status is the redirect's. */
  redirected?: boolean;
  /**
   * Every backendRef of the rule weighs 0: the proxy answered 500 and no backend was picked
   * (`backend` still names the parent, which got nothing either), so no backend series counts it.
   */
  backendless?: boolean;
}

export interface RequestEvent extends Endpoints {
  connId: number;
  protocol: 'http1' | 'http2';
  /** :authority or Host, or SNI for TLS. */
  authority: string;
  method: string;
  path: string;
  status: number; // 0 when no response arrived
  grpcStatus?: number;
  success: boolean;
  /** Time to the response's first byte (headers), ms. */
  latencyMs: number;
  durationMs: number;
  requestBytes: number;
  responseBytes: number;
  error?: string;
  startedAt: number;
  /** Set when the request went through a route (a Service with routes, retries or timeouts). */
  route?: RouteReport;
}

export interface TelemetrySink {
  connOpen(ev: ConnOpenEvent): void;
  connBytes(ev: ConnBytesEvent): void;
  connClose(ev: ConnCloseEvent): void;
  request(ev: RequestEvent): void;
}

/** A sink that drops everything, for tests of forwarders that do not look at telemetry. */
export const nullSink: TelemetrySink = {
  connOpen() {},
  connBytes() {},
  connClose() {},
  request() {},
};

/** A sink that keeps every event, for tests. */
export class RecordingSink implements TelemetrySink {
  readonly opens: ConnOpenEvent[] = [];
  readonly bytes: ConnBytesEvent[] = [];
  readonly closes: ConnCloseEvent[] = [];
  readonly requests: RequestEvent[] = [];
  connOpen(ev: ConnOpenEvent) { this.opens.push(ev); }
  connBytes(ev: ConnBytesEvent) { this.bytes.push(ev); }
  connClose(ev: ConnCloseEvent) { this.closes.push(ev); }
  request(ev: RequestEvent) { this.requests.push(ev); }
}
