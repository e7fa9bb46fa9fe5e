/**
 * Per-connection protocol dispatch: dials the original destination at once and, in
 * parallel, reads the client's first bytes through the detector. Whoever acts first decides:
 *   - upstream sends (or closes) first      => opaque ('server-first'), no waiting
 *   - client bytes detected http1 / http2   => the protocol handler, with head and upstream
 *   - client bytes detected TLS             => passthrough (opaque, SNI as authority)
 *   - client bytes opaque                   => opaque ('opaque:<reason>')
 *   - nobody decided within the deadline    => opaque ('deadline')
 * Destination ports in the opaque set skip all this ('opaque-port'). Destinations last seen
 * answering HTTP/1 client-first (`knownHttp1`) are not dialled eagerly: an HTTP/1 request goes
 * to the handler with no upstream (it takes a pooled one); anything else, or the deadline,
 * dials then and carries on as above (docs/proxy.md). A connection whose destination's inbound
 * policy allows only some requests, or nothing (ctx.authz, docs/policy.md), is not dialled: HTTP
 * goes to its handler, which asks the policy per request; anything else is closed.
 */
import { performance } from 'node:perf_hooks';
import type * as net from 'node:net';
import { detect, DEFAULT_MAX_DETECT_BYTES } from '../protocol-detect/index.ts';
import type { Detection } from '../protocol-detect/index.ts';
import { DRAIN_IDLE_GRACE_MS, dialsDirect, endpointAllowed, terminateOnRevoke, type ConnAuthz, type ConnContext, type ProtocolHandler, type ProxyLimits } from './context.ts';
import type { ConnCloseEvent, Protocol } from '../telemetry/events.ts';
import { abortSocket, DEFAULT_BYTES_REPORT_MS, forwardOpaque, ignoreError } from './opaque.ts';
import type { PortSet } from './ports.ts';
import type { KernelSplicer } from './kernel-splice.ts';
import { forwardTls } from './tls-passthrough.ts';
import { KnownHttp1 } from './known-http1.ts';
import { sharedSweeper, type Sweeper } from './sweep.ts';
import { NativeSocket } from './native-socket.ts';

export interface DispatchConfig {
  limits: ProxyLimits;
  detectTimeoutMs: number;
  maxDetectBytes?: number;
  opaquePorts: PortSet;
  /** The destination's own opaque ports (a pod's opaque-ports annotation); they replace the default list. */
  opaquePortsOf?: (destIp: string) => PortSet | null;
  handlers: { http1?: ProtocolHandler; http2?: ProtocolHandler };
  bytesReportMs?: number;
  /** Runs idle timeouts and byte reports; default the shared timers (sweep.ts). */
  sweeper?: Sweeper;
  /** Called once when the protocol is decided (not for connections that fail before). */
  onDecision?: (protocol: Protocol, detectedBy: string) => void;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;
  /** Kernel splice for opaque and TLS-passthrough tunnels (--kernel-splice); null = Node copies. */
  splicer?: KernelSplicer | null;
  onSplice?: (error: string | null) => void;
  /** Destinations known to speak HTTP/1 client-first: no eager dial (null: always dial). */
  knownHttp1?: KnownHttp1 | null;
  /** A connection to a known destination: true = HTTP/1 without an eager dial, false = dialled late. */
  onKnownHttp1?: (skippedDial: boolean) => void;
  /** A connection to a Service without a ready endpoint (closed, or answered 503 by its handler). */
  onNoEndpoints?: () => void;
  /**
   * HTTP/1 connections' client and plain TCP upstreams are driven from C++ (--native-io,
   * native-socket.ts); a socket that cannot be adopted stays on Node. Default false.
   */
  nativeIo?: boolean;
}

/** Takes over an accepted client socket (paused, with an 'error' listener already attached). */
export function dispatch(ctx: ConnContext, cfg: DispatchConfig): void {
  new Dispatcher(ctx, cfg).start();
}

function errCode(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

/** Eager dials per Service connection before a connect failure fails the connection. */
const MAX_EAGER_DIALS = 3;

class Dispatcher {
  readonly ctx: ConnContext;
  readonly cfg: DispatchConfig;
  readonly startedAt = performance.now();
  upstream: net.Socket | null = null;
  dialedAt = 0;
  upstreamUp = false;
  /** Client bytes so far; at most one buffer (re-joined on each arrival, bounded by the detect budget). */
  head: Buffer | null = null;
  upstreamHead: Buffer | null = null;
  deadline: NodeJS.Timeout | undefined;
  /** A plain timer, not upstream.setTimeout(): that one leaves its Timeout on the socket for good. */
  connectTimer: NodeJS.Timeout | undefined;
  done = false;
  /** The destination is in knownHttp1 and nothing is dialled yet. */
  lazy = false;
  /** A Service with no endpoint to dial: HTTP gets 503s from its handler, anything else is closed. */
  noEndpoints = false;
  /** The connOpen of a Service connection went out (opened()). */
  openReported = false;
  /** When the eager upstream of a Service connection connected, ms after the dial (the balancer's RTT for a connection). */
  connectMs: number | null = null;
  /** Eager dials so far: a Service connection whose endpoint refused tries another. */
  dials = 0;
  /** The inbound policy allows this client no whole connection: nothing is dialled before a request is allowed. */
  guarded = false;
  /**
   * The upstream goes straight to the pod (not an in-process pair, local-pair.ts): dialled while
   * the policy allowed this client whole connections, or where no policy governs.
   */
  dialledDirect = false;

  constructor(ctx: ConnContext, cfg: DispatchConfig) {
    this.ctx = ctx;
    this.cfg = cfg;
  }

  start(): void {
    const { ctx, cfg } = this;
    const client = ctx.client;
    const { destIp, destPort } = ctx.endpoints;
    this.guarded = ctx.authz != null && ctx.authz.verdict !== 'allow';
    const opaque = cfg.opaquePortsOf?.(destIp) ?? cfg.opaquePorts;
    if (opaque.has(destPort)) {
      if (this.guarded) this.deny();
      else if (this.dial()) this.toOpaque('opaque', 'opaque-port');
      return;
    }
    this.lazy = !this.guarded && cfg.knownHttp1?.has(KnownHttp1.key(destIp, destPort)) === true && cfg.handlers.http1 !== undefined;
    // A Service with nothing to dial still needs the client's first bytes: HTTP gets a 503 that names it.
    if (this.guarded) {
      // nothing dialled: the client's first bytes decide between a handler and a refusal
    } else if (!this.lazy && ctx.route && ctx.route.balancer.size === 0) this.noEndpoints = true;
    else if (!this.lazy && !this.dialAndRace()) return;
    client.on('data', this.onClientData);
    client.on('end', this.onClientEnd);
    client.on('error', this.onClientError);
    client.on('close', this.onClientClose);
    this.deadline = setTimeout(this.onDeadline, cfg.detectTimeoutMs);
    client.resume();
  }

  /**
   * Opens the upstream: the original destination, or for a Service the endpoint its balancer
   * picks (held in ctx.lease). False (and the connection failed) when there is none or the dialer throws.
   */
  dial(): boolean {
    const ctx = this.ctx;
    let ip = ctx.endpoints.destIp;
    let port = ctx.endpoints.destPort;
    if (ctx.route) {
      const lease = ctx.route.balancer.pick();
      if (lease === null) {
        this.failNoEndpoints();
        return false;
      }
      ctx.lease = lease;
      ip = lease.ep.ip;
      port = lease.ep.port;
    }
    let upstream: net.Socket;
    this.dials++;
    this.dialedAt = Date.now();
    const t0 = performance.now();
    this.dialledDirect = dialsDirect(ctx.route ? ctx.endpointAuthz?.(ip, port) ?? null : null);
    try {
      upstream = ctx.dial(ip, port);
    } catch (err) {
      this.fail(`dial: ${errCode(err as Error)}`);
      return false;
    }
    this.upstream = upstream;
    // Stays for the socket's life: whoever owns it later, a peer's error never crashes us.
    upstream.on('error', ignoreError);
    if (ctx.lease) upstream.once('connect', () => (this.connectMs = performance.now() - t0));
    return true;
  }

  /** Dials and lets the upstream take part in detection: a server that speaks first decides. */
  dialAndRace(): boolean {
    if (!this.dial()) return false;
    const upstream = this.upstream!;
    upstream.on('data', this.onUpstreamData);
    upstream.on('end', this.onUpstreamEnd);
    upstream.on('error', this.onUpstreamError);
    if (upstream.connecting) {
      // A connect timeout past the detection deadline cannot fire during detection: the
      // deadline ends it first, and whoever takes the upstream then times its connect from
      // the dial (opaque.ts). Only a shorter one needs a timer here, one less per connection.
      const ms = this.cfg.limits.upstreamConnectTimeoutMs;
      if (ms <= this.cfg.detectTimeoutMs) this.connectTimer = setTimeout(this.onUpstreamTimeout, ms);
      upstream.on('connect', this.onUpstreamConnect);
    } else {
      this.upstreamUp = !upstream.destroyed;
    }
    return true;
  }

  /**
   * A known-HTTP/1 connection (nothing dialled yet) to a pod whose policy no longer allows the
   * client whole since accept: guarded from now on, as if denied at accept, so that the pod sees
   * no dial from a client it does not allow whole. (A Service's endpoint is decided at its dial.)
   * Returns whether the connection is guarded.
   */
  guardIfRevoked(): boolean {
    if (this.lazy && this.ctx.authz != null && this.ctx.authz.verdict !== 'allow') {
      this.lazy = false;
      this.guarded = true;
    }
    return this.guarded;
  }

  /**
   * A known-HTTP/1 destination whose client did not (yet) send HTTP/1: forget it, dial now and
   * carry on as for any destination. False when the dial failed (the connection is done).
   */
  fallBack(): boolean {
    this.lazy = false;
    const { destIp, destPort } = this.ctx.endpoints;
    this.cfg.knownHttp1?.delete(KnownHttp1.key(destIp, destPort));
    this.cfg.onKnownHttp1?.(false);
    return this.dialAndRace();
  }

  onClientData = (chunk: Buffer): void => {
    if (this.done) return;
    // Bounded: the detector decides within maxDetectBytes, so this joins at most that much.
    this.head = this.head === null ? chunk : Buffer.concat([this.head, chunk]);
    const d = detect(this.head, this.cfg.maxDetectBytes ?? DEFAULT_MAX_DETECT_BYTES);
    if (d.kind !== 'need-more') this.decide(d);
  };

  onClientEnd = (): void => {
    if (this.done) return;
    const d = this.head === null ? null : detect(this.head, this.cfg.maxDetectBytes ?? DEFAULT_MAX_DETECT_BYTES);
    if (d !== null && d.kind !== 'need-more') this.decide(d);
    else if (this.guardIfRevoked()) this.deny();
    else if (this.noEndpoints) this.failNoEndpoints();
    else if (!this.lazy || this.fallBack()) this.toOpaque('opaque', 'opaque:client-eof');
  };

  onUpstreamData = (chunk: Buffer): void => {
    if (this.done) return;
    if (this.upstreamHead === null && looksLikeH2ServerPreface(chunk)) {
      // An h2c server greets with SETTINGS as soon as TCP connects, often before the client's
      // preface arrives: hold it and keep detecting; the client decides.
      this.upstreamHead = chunk;
      this.upstream?.pause();
      return;
    }
    this.upstreamHead = this.upstreamHead === null ? chunk : Buffer.concat([this.upstreamHead, chunk]);
    this.toOpaque('opaque', 'server-first');
  };

  /** The server closed before the client spoke: also server-first; the tunnel passes the FIN on. */
  onUpstreamEnd = (): void => {
    if (this.done) return;
    this.toOpaque('opaque', 'server-first');
  };

  onUpstreamConnect = (): void => {
    this.upstreamUp = true;
    clearTimeout(this.connectTimer);
  };

  onUpstreamTimeout = (): void => {
    if (this.done || !this.upstream?.connecting) return;
    if (this.redial()) return;
    this.fail('upstream connect: timeout');
  };

  onUpstreamError = (err: Error): void => {
    if (this.done) return;
    if (!this.upstreamUp && this.redial()) return;
    this.fail(this.upstreamUp ? `upstream: ${errCode(err)}` : `upstream connect: ${errCode(err)}`);
  };

  /**
   * A Service connection whose eager connect failed dials another endpoint the balancer picks
   * (MAX_EAGER_DIALS in all): one dead endpoint must not cost the client its connection. The
   * failed endpoint's lease is handed back as a failure. False when this is not such a case.
   */
  redial(): boolean {
    const { route, lease } = this.ctx;
    if (!route || this.dials >= MAX_EAGER_DIALS || this.upstreamHead !== null) return false;
    const up = this.upstream!;
    up.removeListener('data', this.onUpstreamData);
    up.removeListener('end', this.onUpstreamEnd);
    up.removeListener('error', this.onUpstreamError);
    up.removeListener('connect', this.onUpstreamConnect);
    up.destroy();
    clearTimeout(this.connectTimer);
    this.upstream = null;
    if (lease) {
      this.ctx.lease = null;
      route.balancer.done(lease, null, 'failure');
    }
    this.dialAndRace(); // on failure it has already failed the connection
    return true;
  }

  onClientError = (err: Error): void => {
    if (this.done) return;
    this.fail(`client: ${errCode(err)}`);
  };

  onClientClose = (): void => {
    if (this.done) return;
    this.fail('client closed during detection');
  };

  onDeadline = (): void => {
    if (this.done) return;
    if (this.head === null && this.upstreamHead === null && this.ctx.drain?.draining) {
      // Nobody spoke and the proxy drains: as an idle keep-alive connection, it is closed once
      // the grace since the drain began is over (a tunnel would hold the drain to its deadline).
      const left = this.ctx.drain.startedAt + DRAIN_IDLE_GRACE_MS - performance.now();
      if (left <= 0) this.closeSilentForDrain();
      else this.deadline = setTimeout(this.onDeadline, left);
      return;
    }
    if (this.guardIfRevoked()) {
      this.deny();
      return;
    }
    if (this.noEndpoints) {
      this.failNoEndpoints();
      return;
    }
    if (this.lazy) {
      // The client is silent: perhaps the server now speaks first. Dial and race as usual.
      if (this.fallBack()) this.deadline = setTimeout(this.onDeadline, this.cfg.detectTimeoutMs);
      return;
    }
    this.toOpaque('opaque', 'deadline');
  };

  decide(d: Detection): void {
    if (d.kind !== 'need-more') this.guardIfRevoked();
    if (this.guarded && d.kind !== 'need-more') {
      const handler = d.kind === 'http1' || d.kind === 'http2' ? this.cfg.handlers[d.kind] : undefined;
      if (handler) this.toHandler(d.kind as 'http1' | 'http2', handler);
      else this.deny();
      return;
    }
    if (this.noEndpoints && d.kind !== 'need-more') {
      const handler = d.kind === 'http1' || d.kind === 'http2' ? this.cfg.handlers[d.kind] : undefined;
      if (handler) {
        this.cfg.onNoEndpoints?.();
        this.toHandler(d.kind as 'http1' | 'http2', handler);
      } else this.failNoEndpoints();
      return;
    }
    if (this.lazy && d.kind !== 'need-more') {
      if (d.kind === 'http1') {
        const { destIp, destPort } = this.ctx.endpoints;
        this.cfg.knownHttp1!.add(KnownHttp1.key(destIp, destPort)); // most recently used
        this.cfg.onKnownHttp1?.(true);
        this.toHandler('http1', this.cfg.handlers.http1!);
        return;
      }
      if (!this.fallBack()) return;
    }
    // A held server greeting (h2c SETTINGS) suits only an HTTP/2 client; anything else had
    // the server speak first, and the greeting must reach the client as bytes.
    if (this.upstreamHead !== null && d.kind !== 'http2' && d.kind !== 'need-more') {
      this.toOpaque('opaque', 'server-first');
      return;
    }
    switch (d.kind) {
      case 'http1':
      case 'http2': {
        const handler = this.cfg.handlers[d.kind];
        // The client spoke HTTP/1 and the server had said nothing: next time, skip the dial.
        if (handler && d.kind === 'http1') this.cfg.knownHttp1?.add(KnownHttp1.key(this.ctx.endpoints.destIp, this.ctx.endpoints.destPort));
        if (handler) this.toHandler(d.kind, handler);
        else this.toOpaque('opaque', `${d.kind}:no-handler`);
        return;
      }
      case 'tls':
        this.toTls(d.sni, d.alpn);
        return;
      case 'opaque':
        this.toOpaque('opaque', `opaque:${d.reason}`);
        return;
      case 'need-more':
        return;
    }
  }

  /**
   * Ends detection: our listeners off, both sockets paused with whatever they buffered, or left
   * flowing (`pause` false) for a taker that adds its 'data' listeners at once, before anything
   * can be emitted: the opaque tunnel, which would resume them (a tick each) straight away.
   */
  release(pause = true): number {
    this.done = true;
    if (this.deadline) clearTimeout(this.deadline);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    const client = this.ctx.client;
    if (pause) client.pause();
    client.removeListener('data', this.onClientData);
    client.removeListener('end', this.onClientEnd);
    client.removeListener('error', this.onClientError);
    client.removeListener('close', this.onClientClose);
    const up = this.upstream;
    if (up) {
      if (pause) up.pause();
      up.removeListener('data', this.onUpstreamData);
      up.removeListener('end', this.onUpstreamEnd);
      up.removeListener('error', this.onUpstreamError);
      up.removeListener('connect', this.onUpstreamConnect);
    }
    return Math.round((performance.now() - this.startedAt) * 1000) / 1000;
  }

  /**
   * A connection to a Service is reported open once it is known where it goes: to the endpoint
   * when one carries all of it (opaque, TLS), else to the ClusterIP (HTTP: each request names
   * its own endpoint). Other connections were reported at accept.
   */
  opened(toEndpoint: boolean): void {
    const { ctx } = this;
    if (!ctx.route || this.openReported) return;
    this.openReported = true;
    if (toEndpoint && ctx.lease) ctx.endpoints = { ...ctx.endpoints, destIp: ctx.lease.ep.ip, destPort: ctx.lease.ep.port };
    try {
      ctx.telemetry.connOpen({ ...ctx.endpoints, connId: ctx.connId, openedAt: ctx.openedAt });
    } catch {
      // a broken sink must not take the proxy down
    }
  }

  toHandler(kind: 'http1' | 'http2', handler: ProtocolHandler): void {
    const detectMs = this.release();
    // A Service's upstream dialled straight to its endpoint while the policy allowed the client
    // whole, which it no longer does: it must carry no request (they go in-process and are
    // decided there: the handler dials again). A connection to the pod itself asks its own
    // authz per request, so its upstream stays.
    if (this.ctx.lease && this.revokedSinceDial() !== null) this.dropUpstream();
    this.opened(false);
    this.cfg.onDecision?.(kind, kind);
    let head = this.head ?? Buffer.alloc(0);
    if (kind === 'http1' && this.cfg.nativeIo) {
      const adopted = NativeSocket.adoptClient(this.ctx.client, head);
      if (adopted !== null) {
        head = adopted.head;
        this.ctx.io = { client: adopted.socket, upstream: NativeSocket.wrap };
      }
    }
    // HTTP/2 has no TCP half-close (streams end with END_STREAM): a client FIN ends the
    // connection, as node:http2 expects of its sockets. The listener's sockets are
    // half-open for the opaque and HTTP/1-tunnel paths.
    if (kind === 'http2') this.ctx.client.allowHalfOpen = false;
    // A held server greeting goes back where the handler will read it.
    if (this.upstreamHead !== null) this.upstream?.unshift(this.upstreamHead);
    watchHandledConn(this.ctx, kind, detectMs, this.cfg.bytesReportMs ?? DEFAULT_BYTES_REPORT_MS, this.cfg.sweeper ?? sharedSweeper);
    try {
      handler(this.ctx, head, this.upstream, this.cfg.limits);
    } catch (err) {
      this.cfg.log?.('error', 'protocol handler threw; resetting the connection', {
        connId: this.ctx.connId, protocol: kind, detectMs, error: String(err),
      });
      abortSocket(this.ctx.client);
      if (this.upstream) abortSocket(this.upstream);
    }
  }

  toOpaque(protocol: 'opaque', detectedBy: string): void {
    if (this.refuseRevoked()) return;
    const spent = this.release(false);
    const detectMs = detectedBy === 'opaque-port' ? 0 : spent;
    this.opened(true);
    this.allowTcp();
    this.cfg.onDecision?.(protocol, detectedBy);
    forwardOpaque(this.ctx, this.upstream!, this.cfg.limits, {
      protocol,
      detectedBy,
      detectMs,
      clientHead: this.head,
      upstreamHead: this.upstreamHead,
      dialedAt: this.dialedAt,
      bytesReportMs: this.cfg.bytesReportMs,
      sweeper: this.cfg.sweeper,
      splicer: this.cfg.splicer,
      onSplice: this.cfg.onSplice,
      onClose: this.releaseLeaseOnClose(),
    });
  }

  toTls(sni: string | null, alpn: string[]): void {
    if (this.refuseRevoked()) return;
    const detectMs = this.release();
    this.opened(true);
    this.allowTcp();
    this.cfg.onDecision?.('tls', 'tls');
    forwardTls(this.ctx, this.upstream!, this.cfg.limits, {
      sni,
      alpn,
      detectMs,
      clientHead: this.head,
      dialedAt: this.dialedAt,
      bytesReportMs: this.cfg.bytesReportMs,
      sweeper: this.cfg.sweeper,
      splicer: this.cfg.splicer,
      onSplice: this.cfg.onSplice,
      onClose: this.releaseLeaseOnClose(),
    });
  }

  /**
   * A tunnel to a Service endpoint holds its lease for its whole life (the balancer counts open
   * connections as in flight); its RTT is the connect time, and only a failed connect is a failure.
   */
  releaseLeaseOnClose(): ((ev: ConnCloseEvent) => void) | undefined {
    const { route, lease } = this.ctx;
    if (!route || !lease) return undefined;
    this.ctx.lease = null;
    return (ev) => route.balancer.done(lease, this.connectMs, ev.error?.startsWith('upstream connect') ? 'failure' : 'success');
  }

  /**
   * A connection the inbound policy allows whole: its decision goes with its close event. For a
   * Service, the policy of the endpoint it went to, when that is a pod of this node (opened()
   * has already made the endpoint its destination).
   */
  allowTcp(): void {
    const { ctx } = this;
    const az = ctx.authz ?? (ctx.lease ? endpointAllowed(ctx, ctx.lease.ep.ip, ctx.lease.ep.port) : null);
    if (!az) return;
    const outcome = az.tcp();
    ctx.endpoints = { ...ctx.endpoints, authz: outcome };
    // A policy change that no longer allows it resets both sides (the forwarder propagates the
    // client's reset upstream): a FIN could pass for the server's own end of the stream.
    if (outcome.allowed) terminateOnRevoke(ctx, az, outcome, () => abortSocket(ctx.client));
  }

  /** Not HTTP, and the inbound policy allows this client no whole connection: closed, nothing dialled, counted. */
  deny(az: ConnAuthz = this.ctx.authz!): void {
    // Refused by the decision at accept (or at the dial, or before a known HTTP/1 pod's late dial): a denial, though a change may allow it by now.
    const o = az.tcp();
    this.ctx.endpoints = { ...this.ctx.endpoints, authz: o.allowed ? { allowed: false, server: o.server } : o };
    this.fail('denied by the inbound policy');
  }

  /**
   * The policy that allowed this connection whole when its upstream was dialled straight to the
   * pod (at accept, or a Service's endpoint when picked), if it no longer does: detection takes up
   * to the detect timeout, and a change meanwhile must be seen before anything is forwarded. null
   * when nothing changed, or the upstream is not a direct one.
   */
  revokedSinceDial(): ConnAuthz | null {
    if (this.upstream === null || !this.dialledDirect) return null;
    const ctx = this.ctx;
    const az = ctx.lease ? ctx.endpointAuthz?.(ctx.lease.ep.ip, ctx.lease.ep.port) ?? null : ctx.authz ?? null;
    return az !== null && !dialsDirect(az) ? az : null;
  }

  /**
   * About to be forwarded whole (opaque, TLS) on a direct upstream the policy no longer allows:
   * refused and counted as a denial at accept is (for a Service, under its endpoint), never forwarded.
   */
  refuseRevoked(): boolean {
    const az = this.revokedSinceDial();
    if (az === null) return false;
    this.opened(true);
    this.deny(az);
    return true;
  }

  /** The eager upstream closed unused (reset: it carried nothing), its lease handed back. */
  dropUpstream(): void {
    const { route, lease } = this.ctx;
    if (this.upstream) abortSocket(this.upstream);
    this.upstream = null;
    this.upstreamHead = null;
    if (route && lease) {
      this.ctx.lease = null;
      route.balancer.done(lease, null, 'cancel');
    }
  }

  /** A Service connection with no endpoint to go to: closed at once, as kube-proxy rejects it, and counted. */
  failNoEndpoints(): void {
    this.cfg.onNoEndpoints?.();
    this.fail('no ready endpoints');
  }

  /** The drain closes a connection nobody spoke on: a FIN to the client, nothing forwarded, no error. */
  closeSilentForDrain(): void {
    const detectMs = this.release();
    this.opened(false);
    const client = this.ctx.client;
    // The FIN, then the fd: a client that never closes its side must not hold the drain either.
    client.end(() => client.destroy());
    if (this.upstream) this.upstream.destroy();
    this.endLease('cancel');
    this.reportClosed('drain', detectMs);
  }

  /** Failed before any forwarding: reset the client (as a refused connect would), report, done. */
  fail(error: string): void {
    const detectMs = this.release();
    this.opened(false);
    abortSocket(this.ctx.client);
    if (this.upstream) abortSocket(this.upstream);
    this.endLease(error.startsWith('upstream connect') || error.startsWith('dial') ? 'failure' : 'cancel');
    this.reportClosed('none', detectMs, error);
  }

  private endLease(outcome: 'failure' | 'cancel'): void {
    const { route, lease } = this.ctx;
    if (route && lease) {
      this.ctx.lease = null;
      route.balancer.done(lease, null, outcome);
    }
  }

  /** The close of a connection nothing was forwarded on. */
  private reportClosed(detectedBy: string, detectMs: number, error?: string): void {
    const ev: ConnCloseEvent = {
      ...this.ctx.endpoints,
      connId: this.ctx.connId,
      protocol: 'opaque',
      detectedBy,
      detectMs,
      bytesIn: 0,
      bytesOut: 0,
      durationMs: Date.now() - this.ctx.openedAt,
      ...(error !== undefined ? { error } : {}),
    };
    try {
      this.ctx.telemetry.connClose(ev);
    } catch {
      // a broken sink must not take the proxy down
    }
  }
}

/**
 * Connection-level telemetry for connections a protocol handler owns: handlers report
 * requests; the connection's open/bytes/close are reported here, from the client socket's
 * own counters (client-side bytes: pooled upstreams are shared between clients).
 */
function watchHandledConn(ctx: ConnContext, protocol: 'http1' | 'http2', detectMs: number, everyMs: number, sweeper: Sweeper): void {
  const client = ctx.client;
  // The adopted socket's counts go on from the shell's (native-socket.ts); the shell closes after it.
  const io = ctx.io?.client ?? client;
  let reportedIn = 0;
  let reportedOut = 0;
  let error: string | undefined;
  const report = (): void => {
    const bytesIn = io.bytesRead - reportedIn;
    const bytesOut = io.bytesWritten - reportedOut;
    if (bytesIn === 0 && bytesOut === 0) return;
    reportedIn += bytesIn;
    reportedOut += bytesOut;
    try {
      ctx.telemetry.connBytes({ ...ctx.endpoints, connId: ctx.connId, bytesIn, bytesOut });
    } catch {
      // see fail()
    }
  };
  // The shared sweep (sweep.ts), not a Node timer per connection.
  const swept = everyMs > 0 ? { sweep: report } : null;
  if (swept) sweeper.every(everyMs, swept);
  io.on('error', (err: Error) => (error ??= `client: ${errCode(err)}`));
  client.once('close', () => {
    if (swept) sweeper.stop(everyMs, swept);
    report();
    const ev: ConnCloseEvent = {
      ...ctx.endpoints,
      connId: ctx.connId,
      protocol,
      detectedBy: protocol,
      detectMs,
      bytesIn: reportedIn,
      bytesOut: reportedOut,
      durationMs: Date.now() - ctx.openedAt,
    };
    if (error !== undefined) ev.error = error;
    try {
      ctx.telemetry.connClose(ev);
    } catch {
      // see fail()
    }
  });
}

/**
 * The first bytes of an HTTP/2 server's connection preface: a SETTINGS frame header
 * (type 4, flags 0 or ACK, stream 0, length a multiple of 6; RFC 9113 3.4, 6.5). No
 * server-speaks-first protocol we know starts like this (MySQL's 4th byte is its sequence
 * number 0, SMTP and NATS start with text).
 */
export function looksLikeH2ServerPreface(b: Buffer): boolean {
  if (b.length < 9 || b[3] !== 0x04 || (b[4]! & ~0x01) !== 0 || b.readUInt32BE(5) !== 0) return false;
  const len = (b[0]! << 16) | (b[1]! << 8) | b[2]!;
  return len % 6 === 0 && len <= 16_384;
}
