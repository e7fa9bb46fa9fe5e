import type * as net from 'node:net';
import type { ForwarderSocket } from './forwarder-socket.ts';
import type { AuthzOutcome, Endpoints, TelemetrySink } from '../telemetry/events.ts';
import type { BalancedEndpoint } from '../routing/balancer.ts';
import type { ServiceRoute } from '../routing/router.ts';
import type { ClientRouting } from '../routing/client-routing.ts';
import type { HttpRequestView } from '../policy/authorize.ts';

/** Original destination of a redirected connection, as the datapath recorded it. */
export interface OrigDst {
  ip: string;
  port: number;
  /** The source pod's datapath key (its pod cgroup id). */
  podKey: bigint;
}

/** Looks up the datapath record of an accepted connection by its remote (pod IP, pod port). */
export type OrigDstLookup = (remoteIp: string, remotePort: number) => OrigDst | null;

/** Opens a connection to the original destination (the proxy's own cgroup is never redirected). */
export type Dialer = (ip: string, port: number) => net.Socket;

/**
 * Who may use one connection to a meshed pod of this node, decided by its inbound policy
 * (src/policy, docs/policy.md) when the connection is accepted, and again when that pod's policy
 * changes. The forwarders ask it: HTTP per request (a denied one is answered 403, gRPC status 7),
 * anything else once (denied: closed), and a connection allowed whole watches it (watch()).
 */
export interface ConnAuthz {
  /** allow: the connection may go anywhere; http: only some requests may; deny: nothing may. Under the policy in force. */
  readonly verdict: 'allow' | 'http' | 'deny';
  /** The decision for a connection that is not HTTP (opaque, TLS, silent). */
  tcp(): AuthzOutcome;
  /** The decision for one HTTP request, under the policy in force. */
  request(method: string, target: string, header: (name: string) => string | undefined): AuthzOutcome;
  /**
   * For a connection allowed whole: `revoked` runs once, with the server of the policy now in force,
   * when a policy change no longer allows it whole (the caller terminates it); `upgrade`, the request
   * an HTTP/1 connection was upgraded by, keeps it while that request is still allowed. Returns the
   * remover, to call when the connection closes.
   */
  watch(revoked: (by: AuthzOutcome['server']) => void, upgrade?: HttpRequestView): () => void;
}

/**
 * Terminates a connection allowed whole when a policy change no longer allows it (ConnAuthz
 * watch()): its close event carries its allowed decision and the server that terminated it
 * (counted in inbound_tcp_authz_terminate_total), and `abort` resets it. Watches until the client closes.
 */
export function terminateOnRevoke(ctx: ConnContext, az: ConnAuthz, allowed: AuthzOutcome, abort: () => void, upgrade?: HttpRequestView): void {
  const off = az.watch((by) => {
    ctx.endpoints = { ...ctx.endpoints, authz: { ...allowed, terminatedBy: by } };
    abort();
  }, upgrade);
  ctx.client.once('close', off);
}

/** Everything a protocol handler needs to forward one accepted client connection. */
export interface ConnContext {
  connId: number;
  client: net.Socket;
  endpoints: Endpoints;
  telemetry: TelemetrySink;
  dial: Dialer;
  openedAt: number;
  /** The Service behind the original destination (a ClusterIP the discovery store knows), else null. */
  route?: ServiceRoute | null;
  /**
   * The endpoint the dispatcher picked for its eager dial to a Service; whoever adopts the eager
   * upstream owns it and hands it back to route.balancer.done() once.
   */
  lease?: BalancedEndpoint | null;
  /** The client's route table and retry budget for `route`, made on its first routed request. */
  routing?: ClientRouting;
  /** The proxy's drain (it stopped accepting): keep-alive connections end between exchanges. */
  drain?: DrainSignal;
  /** The destination pod's inbound policy for this client; absent when no policy governs the destination. */
  authz?: ConnAuthz | null;
  /**
   * A Service connection's inbound policy at an endpoint its balancer chose: the endpoint pod's
   * decision for this client when it is a meshed pod of this node (null otherwise), made once per
   * connection and endpoint. The dial applies it; endpointAllowed() gives it to be counted.
   */
  endpointAuthz?: (ip: string, port: number) => ConnAuthz | null;
  /**
   * Whose pooled upstreams this connection may share: the source workload's SPIFFE ID when the
   * client is a meshed pod, identity on or off (a tunnel stream carries its client's identity, and
   * an upstream to a pod of this node its client's authorization, so it must never serve another's
   * requests); `client:IP` for a captured inbound connection (its upstream carries its client's
   * address, IP_TRANSPARENT); '' otherwise; with `|checked` appended when the policy checks this
   * connection's requests one by one (listener.ts). The HTTP handlers keep a pool per scope.
   */
  poolScope?: string;
  /**
   * An HTTP/1 connection's sockets driven from C++ (--native-io, native-socket.ts): its client,
   * adopted after detection (ctx.client stays as its shell), and what its plain TCP upstreams
   * become (others pass through). Absent: Node's sockets.
   */
  io?: { client: ForwarderSocket; upstream(s: ForwarderSocket): ForwarderSocket };
}

/**
 * The policy of a Service connection's endpoint at `ip:port` when it allows this client whole
 * connections: the dial went straight to the pod, so this connection's events carry the decision
 * (its TCP decision with its close, or each request's). null otherwise: an endpoint the policy does
 * not allow whole is served in-process by the inbound side, which counts its own (local-pair.ts).
 */
export function endpointAllowed(ctx: ConnContext, ip: string, port: number): ConnAuthz | null {
  const az = ctx.endpointAuthz?.(ip, port) ?? null;
  return az !== null && az.verdict === 'allow' ? az : null;
}

/**
 * Whether a dial to an endpoint whose inbound policy for this client is `az` goes straight to the
 * pod: no policy governs it, or it allows the client whole connections. Otherwise the connection
 * is served in-process and decided there (local-pair.ts). The Service's dialer (listener.ts) and
 * the dispatcher's check after detection (dispatch.ts) both go by it.
 */
export function dialsDirect(az: ConnAuthz | null): boolean {
  return az === null || az.verdict === 'allow';
}

/** Headers for endpointRequestAuthz()'s request(): a policy that allows the client whole reads none. */
const noHeader = (): undefined => undefined;

/**
 * One request's decision to count when it goes to a Service endpoint at `ip:port` that the policy
 * allows whole (endpointAllowed); undefined for any other endpoint, which counts its own.
 */
export function endpointRequestAuthz(ctx: ConnContext, ip: string, port: number, method: string, target: string): AuthzOutcome | undefined {
  return endpointAllowed(ctx, ip, port)?.request(method, target, noHeader);
}

/**
 * Pool key suffix of a Service connection's upstreams to an endpoint of this node whose policy does
 * not allow the client whole: in-process pairs (local-pair.ts), which decide each request. Kept
 * apart so that a direct upstream dialled while the policy allowed the client whole is never
 * reused once a policy change no longer does (docs/policy.md, "When the policy changes").
 */
export const INSPECTED = '|inspected';

/** The pool key of a Service connection's upstreams to the endpoint ip:port (`key`, its lease's), INSPECTED apart, under the policy in force. */
export function endpointPoolKey(ctx: ConnContext, ip: string, port: number, key: string): string {
  return dialsDirect(ctx.endpointAuthz?.(ip, port) ?? null) ? key : key + INSPECTED;
}

/** What the proxy asks of the tunnels (src/tunnel/tunnels.ts). */
export interface TunnelRouter {
  identityOf(sourceIp: string): string | null;
  waitFor(srcUri: string | null): Promise<unknown> | null;
  dial(srcUri: string | null, sourceIp: string, ip: string, port: number): net.Socket;
}

/**
 * Set when the proxy stops accepting (SIGTERM). Handlers end their keep-alive connections at the
 * next point where the client loses nothing: HTTP/1 after the response in flight (`Connection:
 * close`), HTTP/2 with a GOAWAY (streams in flight finish). Clients then reconnect, and with the
 * datapath detached they connect directly (docs/proxy.md).
 */
/** Empties fns and runs each: one connection's trouble must not keep the others from draining or closing. */
function runEach(fns: Set<() => void>): void {
  const all = [...fns];
  fns.clear();
  for (const fn of all) {
    try {
      fn();
    } catch {
      // the others still run
    }
  }
}

/**
 * How long a connection silent at drain start (idle between HTTP/1 requests, or still in
 * detection with nothing sent) may still bring a request before the drain closes it.
 */
export const DRAIN_IDLE_GRACE_MS = 1000;

export class DrainSignal {
  draining = false;
  /** performance.now() when the drain started (0: not draining). */
  startedAt = 0;
  private fns = new Set<() => void>();

  /** Runs fn when the drain starts (at once if it has); returns the remover. */
  onDrain(fn: () => void): () => void {
    if (this.draining) {
      fn();
      return () => {};
    }
    this.fns.add(fn);
    return () => this.fns.delete(fn);
  }

  private cuts = new Set<() => void>();

  /**
   * Runs fn at the drain deadline, before the connections still open are closed (a FIN each),
   * for one whose cut only a reset reports; returns the remover.
   */
  onCut(fn: () => void): () => void {
    this.cuts.add(fn);
    return () => this.cuts.delete(fn);
  }

  /** The drain deadline: the connections still open are about to be closed. */
  cut(): void {
    runEach(this.cuts);
  }

  start(): void {
    if (this.draining) return;
    this.draining = true;
    this.startedAt = performance.now();
    runEach(this.fns);
  }
}

/** Resolves an original destination to a Service route (routing/router.ts), or null. */
export interface RouteResolver {
  resolve(ip: string, port: number): ServiceRoute | null;
}

/** Limits every handler honours; the agent's flags set them. */
export interface ProxyLimits {
  /** Request head larger than this: 431 (HTTP/1). */
  maxHeaderBytes: number;
  /** Request head not complete within this: 408 (HTTP/1). */
  headerTimeoutMs: number;
  /** Upstream not connected within this: 504 for HTTP, reset for opaque. */
  upstreamConnectTimeoutMs: number;
  /** No bytes either way for this long: close (opaque) or drop the keep-alive connection. */
  idleTimeoutMs: number;
}

export const defaultLimits: ProxyLimits = {
  maxHeaderBytes: 64 * 1024,
  headerTimeoutMs: 10_000,
  upstreamConnectTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
};

/**
 * A protocol forwarder takes over an accepted client connection after detection.
 * `head` holds the client bytes already read (to be forwarded first); `upstream` is the
 * connection the dispatcher opened eagerly to the original destination (possibly still
 * connecting), which the handler may adopt (e.g. as the first pooled connection) or destroy.
 * The client socket is paused and has no 'data' listeners when handed over.
 */
export type ProtocolHandler = (ctx: ConnContext, head: Buffer, upstream: import('node:net').Socket | null, limits: ProxyLimits) => void;
