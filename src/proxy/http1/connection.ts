// One client connection's HTTP/1 forwarding: the I/O around the pure parser and framers.
// Requests are served one at a time (see docs/http1.md, pipelining). Each request first gets
// its endpoint: the original destination, or for a Service (ctx.route) the one its balancer
// picks for this request (docs/routing.md). Then a connection to it: the dispatcher's eager one
// (first request), the one still bound from the previous request when the endpoint is the same,
// else one from the pool, else a new dial. A bound upstream whose endpoint is not chosen again
// goes back to the pool. It also goes to the pool when the client leaves while it is idle and
// healthy, including a client that asked `Connection: close`: that token is hop-by-hop, so it is
// not forwarded and the upstream leg stays reusable (hop.ts).
//
// A Service with routes, retries or timeouts (route.policy) routes each request first: its rule
// (404 when none matches), then per attempt a backend by weight and one of its endpoints. A
// retry is decided when a response head is parsed, before any of it reaches the client; the
// request's upstream bytes (a body up to 64 KiB) are kept to send again. One timer per exchange
// covers the request, attempt, response-head and idle timeouts and the backoff; a timed-out
// attempt's connection is closed, never pooled (docs/routing.md).

// Imported, not the globals: Node defines globalThis.Buffer and .performance as getters, a call
// per use on the per-request path.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { ForwarderSocket } from '../forwarder-socket.ts';
import { DRAIN_IDLE_GRACE_MS, endpointPoolKey, endpointRequestAuthz, terminateOnRevoke, type ConnContext, type ProxyLimits } from '../context.ts';
import { abortSocket } from '../opaque.ts';
import type { HttpRequestView } from '../../policy/authorize.ts';
import type { BalancedEndpoint } from '../../routing/balancer.ts';
import type { ServiceRoute } from '../../routing/router.ts';
import type { RetryPolicy } from '../../routing/route-model.ts';
import type { RetryBudget } from '../../routing/retry-budget.ts';
import { findRoute, type CompiledRule } from '../../routing/route-table.ts';
import { backoffMs, MAX_REPLAY_BYTES, retryableResponse } from '../../routing/retry.ts';
import { admitRetry, AttemptSlot, ClientRouting, errorLabel, nearestDeadline, newRouteReport, noteRetried, onDeadline, pickAttempt, reportBackend, timerDelay, type Deadlines } from '../../routing/client-routing.ts';
import type { AuthzOutcome, RequestEvent, RouteReport } from '../../telemetry/events.ts';
import { headerValue, Http1RouteRequest } from './route-request.ts';
import { pathOf } from '../../util/request-target.ts';
import { HEAD_MALFORMED, HEAD_NEED_MORE, HEAD_TOO_LARGE, HeadReader, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from './parse-head.ts';
import { ChunkedFramer, FRAME_ERROR, LengthFramer, type BodyFramer } from './body-framer.ts';
import { isRetryable, isUpgradeRequest, requestBodyKind, responseBodyKind, wantsKeepAlive, type BodyKind } from './framing.ts';
import { errorReply } from './replies.ts';
import { finNow, writeWithFin } from '../fin-now.ts';
import { own, UpstreamPool, type UpstreamOwner } from './pool.ts';
import { closingResponseHead, keepUpstreamFor, modifiedHead, upgradesToHttp, upstreamRequestHead, withoutUpgrade } from './hop.ts';

const ST_HEAD = 0; // waiting for a request head
const ST_EXCHANGE = 1; // a request is in flight
const ST_TUNNEL = 2; // raw bytes both ways (after 101 or 2xx to CONNECT)
const ST_CLOSING = 3; // FIN sent to the client, draining its input until it closes
const ST_CLOSED = 4;

/** Response heads can legitimately be larger than what we accept from clients. */
const MIN_RESPONSE_HEAD_LIMIT = 128 * 1024;
/** How long to keep reading (and discarding) after our FIN before a hard close. */
const LINGER_MS = 2000;
/** Below the shortest common server keep-alive timeout (gunicorn's 2 s). */
const NON_RETRYABLE_MAX_IDLE_MS = 1000;

export class Http1Connection implements UpstreamOwner {
  private readonly ctx: ConnContext;
  /** The client as the forwarder drives it: ctx.client, or its socket driven from C++ (ctx.io, --native-io). */
  private readonly client: ForwarderSocket;
  private readonly limits: ProxyLimits;
  private readonly pool: UpstreamPool;
  private route: ServiceRoute | null;
  /** The current request's endpoint: its address and pool key (the original destination without a route). */
  private targetIp: string;
  private targetPort: number;
  private targetKey: string;
  /** The balancer's endpoint for the request in flight (routes only); handed back once, in emit(). */
  private lease: BalancedEndpoint | null = null;
  /** Whose balancer `lease` came from: the Service called, or a route's backend. */
  private leaseRoute: ServiceRoute | null = null;
  /** The endpoint the dispatcher dialled eagerly for a Service, until the first request takes it. */
  private eagerLease: BalancedEndpoint | null;
  /** Pool key of `up`. */
  private upKey = '';
  private state = ST_HEAD;
  private readonly reqReader: HeadReader;
  private readonly resReader: HeadReader;
  /** The dispatcher's eagerly opened upstream, until the first request adopts it. */
  private eager: ForwarderSocket | null;
  /** Client bytes read past the current request (a pipelined request or early tunnel data). */
  private pending: Buffer | null = null;
  private clientEnded = false;
  private clientReading = false;
  /** The client is paused until the upstream drains. */
  private upWaitDrain = false;
  /** The upstream is paused until the client drains. */
  private clientWaitDrain = false;
  private active = true;
  private idleTimer: NodeJS.Timeout | null = null;
  private headerTimer: NodeJS.Timeout | null = null;
  private lingerTimer: NodeJS.Timeout | null = null;
  /** Our FIN went out with the response (finNow), ahead of end(). */
  private finSent = false;

  // The exchange in flight.
  private req: RequestHead | null = null;
  private reqKind: BodyKind = 'none';
  private reqBody: BodyFramer | null = null;
  private reqBodyDone = true;
  /** The request head as sent upstream (re-sent on a retry). */
  private reqHead: Buffer | null = null;
  /**
   * The client asked to close after this exchange but the upstream was asked to keep the
   * connection (docs/http1.md, hop-by-hop): the response head tells the client close.
   */
  private closeOnlyClient = false;
  /** The proxy is draining: this response tells the client close, and the client is closed after it. */
  private closeForDrain = false;
  /**
   * The response head came before the request body ended (an early 413/401): the client is closed
   * after it, its unread body being where a next request would start, and the head says so.
   */
  private closeEarly = false;
  private res: ResponseHead | null = null;
  private resKind: BodyKind = 'none';
  private resBody: BodyFramer | null = null;
  private resHeadSent = false;
  /** Removes the drain-deadline reset of a close-delimited response in flight (ctx.drain). */
  private offCut: (() => void) | null = null;
  /** Closes the connection at the end of the drain's grace if it is still idle (onDrain). */
  private drainIdleTimer: NodeJS.Timeout | null = null;
  /** Removes onDrain from ctx.drain. */
  private offDrain: (() => void) | null = null;
  private upExtra = false;
  private up: ForwarderSocket | null = null;
  /** `up` served an earlier response (bound or pooled): it may have been closed by the server. */
  private upReused = false;
  /** `up` is bound between exchanges (idle, healthy as far as we know), since `upIdleSince`. */
  private upIdle = false;
  private upIdleSince = 0;
  private upError = '';
  private connectTimer: NodeJS.Timeout | null = null;
  private retried = false;
  private emitted = true;
  private startedAt = 0;
  private t0 = 0;
  private latencyMs = 0;
  private status = 0;
  private requestBytes = 0;
  private responseBytes = 0;
  /** The destination's inbound policy on this request (ctx.authz), reported with it. */
  private authz: AuthzOutcome | null = null;
  /** An upgrade (or CONNECT) request to a pod with a policy, as the policy reads it: kept for the tunnel it may become. */
  private upgradeAsk: HttpRequestView | null = null;

  // Routed requests (route.policy set); all unused, and never allocated, without a policy.
  private routing: ClientRouting | null = null;
  private rreq: Http1RouteRequest | null = null;
  private slot: AttemptSlot | null = null;
  /** The exchange's rule; null for an unrouted request. */
  private rule: CompiledRule | null = null;
  private retryPolicy: RetryPolicy | null = null;
  private budget: RetryBudget | null = null;
  private report: RouteReport | null = null;
  /** The request's upstream bytes while they can be sent again; null: no retry possible. */
  private replay: Buffer[] | null = null;
  private replayBody = 0;
  private attemptAt = 0;
  /** Absolute performance.now() deadlines; 0 when unset. */
  private requestDeadline = 0;
  private attemptDeadline = 0;
  private headDeadline = 0;
  private retryAt = 0;
  private idleMs = 0;
  private lastIo = 0;
  /** One timer per exchange, for the nearest of the deadlines above. */
  private exTimer: NodeJS.Timeout | null = null;
  private exTimerAt = 0;
  /** `up` has connected (a failure before that is a connect error, which a retry policy retries). */
  private upConnected = false;

  constructor(ctx: ConnContext, upstream: ForwarderSocket | null, limits: ProxyLimits, pool: UpstreamPool) {
    this.ctx = ctx;
    this.client = ctx.io?.client ?? ctx.client;
    this.limits = limits;
    this.pool = pool;
    this.route = ctx.route ?? null;
    this.targetIp = ctx.endpoints.destIp;
    this.targetPort = ctx.endpoints.destPort;
    this.targetKey = UpstreamPool.key(this.targetIp, this.targetPort);
    this.eager = upstream !== null && ctx.io ? ctx.io.upstream(upstream) : upstream;
    this.eagerLease = ctx.lease ?? null;
    ctx.lease = null;
    this.reqReader = new HeadReader(limits.maxHeaderBytes, true);
    this.resReader = new HeadReader(Math.max(limits.maxHeaderBytes, MIN_RESPONSE_HEAD_LIMIT), false);
    this.onClientData = this.onClientData.bind(this);
    this.onClientEnd = this.onClientEnd.bind(this);
    this.onClientError = this.onClientError.bind(this);
    this.onClientClose = this.onClientClose.bind(this);
    this.onClientDrain = this.onClientDrain.bind(this);
    this.onUpDrain = this.onUpDrain.bind(this);
    this.onUpConnect = this.onUpConnect.bind(this);
    this.onEagerError = this.onEagerError.bind(this);
    this.onExchangeTimer = this.onExchangeTimer.bind(this);
  }

  start(head: Buffer): void {
    const c = this.client;
    c.on('data', this.onClientData);
    c.on('end', this.onClientEnd);
    c.on('error', this.onClientError);
    c.on('close', this.onClientClose);
    c.setNoDelay(true);
    if (this.eager !== null) this.eager.on('error', this.onEagerError);
    this.idleTimer = setInterval(() => this.onIdleCheck(), this.limits.idleTimeoutMs);
    this.idleTimer.unref();
    // Started while the proxy drains (a tunnel's stream, the accept queue): its first request is
    // served, with `Connection: close` (readResponse), not closed unread.
    const drain = this.ctx.drain;
    if (drain !== undefined && !drain.draining) this.offDrain = drain.onDrain(() => this.onDrain());
    if (c.destroyed) {
      this.teardown();
      return;
    }
    if (head.length > 0) this.onClientData(head);
    this.updateClientFlow();
  }

  // ---- client side ----

  private onClientData(chunk: Buffer): void {
    // A head's bytes are activity once readHead knows they are not only empty lines.
    if (this.state !== ST_HEAD) this.active = true;
    if (this.idleMs > 0) this.lastIo = performance.now();
    try {
      switch (this.state) {
        case ST_HEAD:
          this.readHead(chunk);
          break;
        case ST_EXCHANGE:
          if (this.reqBodyDone) this.stash(chunk);
          else this.forwardRequestBody(chunk);
          break;
        case ST_TUNNEL:
          this.writeUp(chunk);
          break;
        default: // closing: discard
      }
    } catch (err) {
      this.internalError(err);
    }
  }

  private readHead(chunk: Buffer): void {
    const end = this.reqReader.push(chunk);
    // Only empty lines so far (skipped, RFC 9112 2.2): not activity, or a client sending one now
    // and then would hold the connection past both the idle and the head timeout.
    if (end === HEAD_NEED_MORE && !this.reqReader.partial) return;
    this.active = true;
    if (end === HEAD_NEED_MORE) {
      if (this.headerTimer === null) {
        this.headerTimer = setTimeout(() => this.reject(408, 'request head timeout', null), this.limits.headerTimeoutMs);
        this.headerTimer.unref();
      }
      return;
    }
    this.clearHeaderTimer();
    if (end === HEAD_TOO_LARGE) {
      this.reject(431, 'request head too large', null);
      return;
    }
    if (end === HEAD_MALFORMED) {
      this.reject(400, 'malformed request head: a bare LF or CR, or no method and space at its start', null);
      return;
    }
    const buf = this.reqReader.buffer;
    const start = this.reqReader.start;
    this.reqReader.reset();
    let req: RequestHead;
    let kind: BodyKind;
    try {
      req = parseRequestHead(buf, start, end);
    } catch (err) {
      this.reject(400, (err as Error).message, null);
      return;
    }
    try {
      kind = requestBodyKind(req);
    } catch (err) {
      this.reject(400, (err as Error).message, req);
      return;
    }
    this.beginExchange(req, kind, buf, start, end);
  }

  private beginExchange(req: RequestHead, kind: BodyKind, buf: Buffer, start: number, end: number): void {
    this.state = ST_EXCHANGE;
    this.req = req;
    this.reqKind = kind;
    this.res = null;
    this.resKind = 'none';
    this.resBody = null;
    this.resHeadSent = false;
    this.upExtra = false;
    this.upError = '';
    this.retried = false;
    this.emitted = false;
    this.status = 0;
    this.latencyMs = 0;
    this.startedAt = Date.now();
    this.t0 = performance.now();
    this.reqBody = kind === 'length' ? new LengthFramer(req.contentLength) : kind === 'chunked' ? new ChunkedFramer(this.limits.maxHeaderBytes) : null;
    let bodyEnd = end;
    if (this.reqBody !== null) {
      const n = this.reqBody.push(buf, end);
      if (n === FRAME_ERROR) {
        this.reject(400, 'bad chunked request body', req);
        return;
      }
      bodyEnd += n;
    }
    this.reqBodyDone = this.reqBody === null || this.reqBody.done;
    this.closeOnlyClient = keepUpstreamFor(req);
    // A head that is the whole read (the common keep-alive request) is that read: no view made.
    this.reqHead = this.closeOnlyClient ? upstreamRequestHead(buf, start, end, req) : start === 0 && end === buf.length ? buf : buf.subarray(start, end);
    this.requestBytes = bodyEnd - start;
    this.responseBytes = 0;
    const az = this.ctx.authz;
    let upgradeStripped = false;
    this.upgradeAsk = (az || this.ctx.endpointAuthz) && (isUpgradeRequest(req) || req.method === 'CONNECT') ? upgradeAsk(req, buf, start, end) : null;
    if (az) {
      // Before any upstream sees it: a denied request is answered here (docs/policy.md).
      this.authz = az.request(req.method, req.target, (name) => headerValue(buf, start, end, name));
      if (!this.authz.allowed) {
        this.abortExchange(403, 'forbidden by the inbound policy', 'forbidden: the destination\'s inbound policy does not allow this request');
        return;
      }
      // An upgrade to HTTP/2 (h2c) would make the connection HTTP/2 forwarded as bytes: none of
      // its requests would be decided. Where the policy decides request by request it is not
      // passed on (as Linkerd's proxy strips h2c upgrades): the request goes as plain HTTP/1.
      if (req.upgrade !== '' && az.verdict === 'http' && upgradesToHttp(req.upgrade)) {
        this.reqHead = withoutUpgrade(this.reqHead);
        req.upgrade = '';
        req.connUpgrade = false;
        this.upgradeAsk = null;
        upgradeStripped = true;
      }
    }
    if (this.route !== null && !this.pickEndpoint(req, buf, start, end)) return;
    if (this.upIdle) {
      this.upIdle = false;
      const idle = this.pool.now() - this.upIdleSince;
      // Idle longer than the pool keeps connections: the server may be about to close it
      // (node:http's default is 5 s); a new one avoids the stale keep-alive race.
      if (idle > this.pool.idleTimeoutMs) this.detachUpstream()?.destroy();
      else if (this.upKey !== this.targetKey || (idle > NON_RETRYABLE_MAX_IDLE_MS && !isRetryable(req, kind))) {
        // Another endpoint's, or too long idle for a request we could not re-send (as for a
        // pooled one, attachUpstream): parked for others, with its idle age.
        const s = this.detachUpstream();
        if (s !== null) this.pool.release(this.upKey, s, this.upIdleSince);
      }
    }
    // The rule's RequestHeaderModifier, and the chosen backend's after it (one modifier), change
    // the head this attempt sends; rules without one leave the client's bytes as they are.
    let headChanged = this.closeOnlyClient || upgradeStripped;
    const rule = this.rule;
    const mod = rule === null ? null : rule.requestEdits(this.slot!.backend);
    const clientHead = this.reqHead!;
    if (mod !== null) {
      this.reqHead = modifiedHead(clientHead, mod);
      headChanged = true;
    }
    if (this.up === null && !this.attachUpstream(false)) return;
    const first = !headChanged ? (bodyEnd === end ? clientHead : buf.subarray(start, bodyEnd))
      : bodyEnd === end ? this.reqHead! : Buffer.concat([this.reqHead!, buf.subarray(end, bodyEnd)]);
    if (this.replay !== null) {
      // A retry may go to a backend with other edits: it rebuilds its head from the client's, kept apart (resumeRetry).
      if (rule!.backendRequestHeaders) {
        this.keep(clientHead, 0);
        if (bodyEnd > end) this.keep(buf.subarray(end, bodyEnd), bodyEnd - end);
      } else this.keep(first, bodyEnd - end);
    }
    this.writeUp(first);
    if (bodyEnd < buf.length) this.stash(buf.subarray(bodyEnd));
    if (this.rule !== null) this.armTimer();
    this.updateClientFlow();
  }

  /** Chooses this request's endpoint of the Service; false when the request was answered instead (404, 500, 503). */
  private pickEndpoint(req: RequestHead, buf: Buffer, start: number, end: number): boolean {
    let route = this.route!;
    if (route.stale) {
      // The Service changed or went while this client stayed connected: resolve again.
      const { destIp, destPort } = this.ctx.endpoints;
      const next = route.current(destIp, destPort);
      this.dropEager();
      if (next === null) {
        this.route = null;
        this.targetIp = destIp;
        this.targetPort = destPort;
        this.targetKey = UpstreamPool.key(destIp, destPort);
        return true;
      }
      this.route = route = next;
    }
    if (route.policy !== null) return this.routeRequest(route, req, buf, start, end);
    let lease: BalancedEndpoint | null;
    if (this.eagerLease !== null) {
      // The first request takes the endpoint the dispatcher already connected to.
      lease = this.eagerLease;
      this.eagerLease = null;
    } else lease = route.balancer.pick();
    if (lease === null) {
      const { namespace, name, port } = route.ref;
      const why = `no ready endpoints for Service ${namespace}/${name} port ${port}`;
      this.abortExchange(503, why, why);
      return false;
    }
    this.lease = lease;
    this.leaseRoute = route;
    this.targetIp = lease.ep.ip;
    this.targetPort = lease.ep.port;
    this.targetKey = lease.key;
    this.authorizeEndpoint();
    return true;
  }

  /**
   * The request goes to the endpoint just chosen: when that is a pod of this node whose policy
   * allows this client whole, the request carries the decision (a retry's endpoint replaces an
   * earlier attempt's); any other endpoint of this node counts its own (local-pair.ts).
   */
  private authorizeEndpoint(): void {
    const req = this.req;
    // An endpoint its policy does not allow this client whole takes no direct upstream, even one
    // pooled before a policy change: its requests go in-process and are decided there.
    this.targetKey = endpointPoolKey(this.ctx, this.targetIp, this.targetPort, this.targetKey);
    this.authz = req === null ? null : endpointRequestAuthz(this.ctx, this.targetIp, this.targetPort, req.method, req.target) ?? null;
  }

  // ---- routed requests ----

  /** Finds the request's rule and starts its first attempt; false when answered instead. */
  private routeRequest(route: ServiceRoute, req: RequestHead, buf: Buffer, start: number, end: number): boolean {
    const routing = (this.routing ??= new ClientRouting(route.router, this.ctx.endpoints.sourceIp));
    const rreq = (this.rreq ??= new Http1RouteRequest());
    rreq.set(req.method, req.target, buf, start, end);
    const rule = findRoute(routing.tableFor(route), rreq, false);
    if (rule === null) {
      this.dropEager();
      const { namespace, name, port } = route.ref;
      const why = `no route of Service ${namespace}/${name} port ${port} matches ${req.method} ${pathOf(req.target)}`;
      this.abortExchange(404, 'no route matched', why);
      return false;
    }
    this.rule = rule;
    this.report = newRouteReport(route, rule);
    if (rule.redirect !== null) {
      this.redirect(route, rule, req);
      return false;
    }
    const retry = rule.retryFor(false);
    this.retryPolicy = retry;
    if (retry !== null) {
      this.budget = routing.budgetFor(route);
      this.budget.deposit();
      // A body we may have to send again is kept up to 64 KiB; a larger one is never retried.
      this.replay = this.reqKind === 'length' && req.contentLength > MAX_REPLAY_BYTES ? null : [];
      this.replayBody = 0;
    }
    const t = rule.timeouts;
    if (t !== null) {
      if (t.requestMs !== undefined) this.requestDeadline = this.t0 + t.requestMs;
      if (t.idleMs !== undefined) {
        this.idleMs = t.idleMs;
        this.lastIo = this.t0;
      }
    }
    return this.startAttempt();
  }

  /**
   * The rule's RequestRedirect: answered here, no backend picked and no upstream written to. The
   * connection is closed after it, as after the proxy's other own replies (replies.ts): the
   * request's body, if any, is not read, so where the next request would start is unknown.
   */
  private redirect(route: ServiceRoute, rule: CompiledRule, req: RequestHead): void {
    this.dropEager();
    this.releaseUpstream();
    this.detachUpstream()?.destroy();
    const r = rule.redirect!;
    const loc = r.location(req.target, req.host, route.authority, route.ref.port);
    const head = Buffer.from(`HTTP/1.1 ${r.status} ${r.reason}\r\nlocation: ${loc}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`, 'latin1');
    const reply = rule.responseHeaders !== null ? modifiedHead(head, rule.responseHeaders) : head;
    this.report!.redirected = true;
    this.status = r.status;
    this.resHeadSent = true;
    this.latencyMs = performance.now() - this.t0;
    this.responseBytes = reply.length;
    this.emit(undefined);
    this.endExchange();
    if (this.state < ST_CLOSING) this.finSent = writeWithFin(this.client, () => this.client.write(reply));
    else this.client.write(reply);
    this.closeClient();
  }

  /** Picks this attempt's backend and endpoint; false when there is none (answered 500 or 503). */
  private startAttempt(): boolean {
    const route = this.route!;
    const rule = this.rule!;
    const slot = (this.slot ??= new AttemptSlot());
    let ok: boolean;
    if (this.eagerLease !== null && rule.backends.length === 0) {
      // The dispatcher already connected to an endpoint of the Service called: the rule sends there.
      slot.backend = null;
      slot.target = route;
      slot.lease = this.eagerLease;
      this.eagerLease = null;
      ok = true;
    } else {
      this.dropEager();
      ok = pickAttempt(route, rule, slot, undefined, this.report!.retries > 0);
    }
    this.attemptAt = performance.now();
    const report = this.report!;
    reportBackend(report, route, slot);
    if (!ok) {
      report.error = slot.status === 503 ? 'FAIL_FAST' : 'UNKNOWN';
      this.abortExchange(slot.status, slot.why, slot.why);
      return false;
    }
    const lease = slot.lease!;
    this.lease = lease;
    this.leaseRoute = slot.target;
    this.targetIp = lease.ep.ip;
    this.targetPort = lease.ep.port;
    this.targetKey = lease.key;
    this.authorizeEndpoint();
    const backendMs = rule.timeouts?.backendRequestMs;
    this.attemptDeadline = backendMs !== undefined ? this.attemptAt + backendMs : 0;
    const headMs = this.retryPolicy?.timeoutMs;
    this.headDeadline = headMs !== undefined ? this.attemptAt + headMs : 0;
    return true;
  }

  /** Keeps request bytes for a retry; a body past 64 KiB makes the request not retryable. */
  private keep(b: Buffer, bodyBytes: number): void {
    this.replayBody += bodyBytes;
    if (this.replayBody > MAX_REPLAY_BYTES) this.replay = null;
    else this.replay!.push(b);
  }

  /**
   * May this exchange send another attempt now? Only with the whole request kept and nothing of
   * the response sent, within the limit and the retry budget (which counts it when it says yes).
   */
  private mayRetry(): boolean {
    const p = this.retryPolicy;
    if (p === null || this.replay === null || !this.reqBodyDone || this.resHeadSent) return false;
    return admitRetry(p, this.report!, this.budget!);
  }

  /** Gives up the attempt (its connection is closed, never pooled) and schedules the next after a backoff. */
  private retryLater(status: number, error: string | undefined): void {
    const now = performance.now();
    const report = this.report!;
    noteRetried(report, status, undefined, error, now - this.attemptAt);
    const lease = this.lease;
    if (lease !== null) {
      this.lease = null;
      this.leaseRoute!.balancer.done(lease, status > 0 ? now - this.attemptAt : null, status === 0 || status >= 500 ? 'failure' : 'success');
    }
    this.detachUpstream()?.destroy();
    this.resReader.reset();
    this.res = null;
    this.resKind = 'none';
    this.resBody = null;
    this.status = 0;
    this.upError = '';
    this.upExtra = false;
    this.responseBytes = 0;
    this.attemptDeadline = 0;
    this.headDeadline = 0;
    this.retryAt = now + backoffMs(this.retryPolicy!, report.retries + 1, Math.random);
    this.armTimer();
  }

  /** The backoff is over: the next attempt, with the kept request. */
  private resumeRetry(): void {
    this.report!.retries++;
    if (!this.startAttempt()) return;
    if (!this.attachUpstream(false)) return;
    const replay = this.replay!;
    const rule = this.rule!;
    let i = 0;
    if (rule.backendRequestHeaders) {
      // replay[0] is the client's head: this attempt's backend's edits (or the rule's) go on it.
      const mod = rule.requestEdits(this.slot!.backend);
      this.reqHead = mod !== null ? modifiedHead(replay[0]!, mod) : replay[0]!;
      this.writeUp(this.reqHead);
      i = 1;
    }
    for (; i < replay.length; i++) this.writeUp(replay[i]!);
    this.armTimer();
  }

  /** Arms the exchange's one timer for its nearest deadline. */
  private armTimer(): void {
    const at = nearestDeadline(this.deadlines());
    if (at === Infinity) {
      this.clearExchangeTimer();
      return;
    }
    if (this.exTimer !== null) {
      if (this.exTimerAt === at) return;
      clearTimeout(this.exTimer);
    }
    this.exTimerAt = at;
    this.exTimer = setTimeout(this.onExchangeTimer, timerDelay(at, performance.now()));
  }

  /** The exchange's deadlines; the head's counts only until the response head reached the client. */
  private deadlines(): Deadlines {
    return { request: this.requestDeadline, attempt: this.attemptDeadline, head: this.resHeadSent ? 0 : this.headDeadline, retryAt: this.retryAt, idleMs: this.idleMs, lastIo: this.lastIo };
  }

  private clearExchangeTimer(): void {
    if (this.exTimer !== null) clearTimeout(this.exTimer);
    this.exTimer = null;
  }

  private onExchangeTimer(): void {
    this.exTimer = null;
    if (this.state !== ST_EXCHANGE || this.rule === null) return;
    try {
      onDeadline(this.deadlines(), this.rule.timeouts, performance.now(), {
        timedOut: (label, why) => this.timedOut(label, why),
        nextAttempt: () => {
          this.retryAt = 0;
          this.resumeRetry();
        },
        mayRetry: () => this.mayRetry(),
        retryNow: (label) => this.retryLater(0, label),
        clearHead: () => {
          this.headDeadline = 0;
        },
        arm: () => this.armTimer(),
      });
    } catch (err) {
      this.internalError(err);
    }
  }

  /** A timeout ends the exchange: 504 (or a closed client once the response has started); the upstream request is cancelled by closing its connection. */
  private timedOut(error: string, why: string): void {
    this.report!.error = error;
    this.abortExchange(504, why, why);
  }

  private forwardRequestBody(chunk: Buffer): void {
    const n = this.reqBody!.push(chunk, 0);
    if (n === FRAME_ERROR) {
      this.abortExchange(400, 'bad chunked request body');
      return;
    }
    this.requestBytes += n;
    const b = n === chunk.length ? chunk : chunk.subarray(0, n);
    if (this.replay !== null) this.keep(b, b.length);
    this.writeUp(b);
    if (this.reqBody!.done) {
      this.reqBodyDone = true;
      if (n < chunk.length) this.stash(chunk.subarray(n));
      this.updateClientFlow();
    }
  }

  private stash(b: Buffer): void {
    this.pending = this.pending === null ? b : Buffer.concat([this.pending, b]);
  }

  private onClientEnd(): void {
    this.clientEnded = true;
    switch (this.state) {
      case ST_HEAD:
        this.endedBetweenRequests();
        break;
      case ST_EXCHANGE:
        // Without the rest of the body the upstream would wait forever.
        if (!this.reqBodyDone) this.abortExchange(0, 'client closed mid-request');
        break;
      case ST_TUNNEL:
        this.up?.end();
        break;
      default:
    }
  }

  private onClientError(): void {
    // 'close' follows and tears down.
  }

  private onClientClose(hadError: boolean): void {
    if (this.state === ST_TUNNEL && this.up !== null) {
      const up = this.up;
      this.up = null;
      // A reset goes on as a reset (as in the opaque tunnel): a FIN would read as the client's orderly end.
      if (hadError) abortSocket(up);
      // Else let what the client sent reach the upstream before closing it.
      else up.end(() => up.destroy());
    }
    if (this.state === ST_EXCHANGE) this.emit('client closed');
    this.teardown();
  }

  private onClientDrain(): void {
    this.clientWaitDrain = false;
    if (this.up !== null && this.state !== ST_CLOSED) this.up.resume();
  }

  private updateClientFlow(): void {
    const s = this.state;
    const want =
      s === ST_HEAD || s === ST_CLOSING ||
      ((s === ST_EXCHANGE && !this.reqBodyDone) || s === ST_TUNNEL) && !this.upWaitDrain;
    if (want === this.clientReading) return;
    this.clientReading = want;
    if (want) this.client.resume();
    else this.client.pause();
  }

  /** Whether the client connection outlives this exchange (its request and our framing allow it). */
  private clientPersists(): boolean {
    return this.reqBodyDone && this.resKind !== 'close' && wantsKeepAlive(this.res!) && wantsKeepAlive(this.req!) && !this.closeForDrain && !this.closeEarly;
  }

  /**
   * The response's last bytes. When the client is not kept, our FIN leaves with them
   * (fin-now.ts): a client that closes on reading the response would otherwise close first
   * and keep the TIME_WAIT in its pod.
   */
  private writeClientLast(b: Buffer): void {
    if (this.state < ST_CLOSING && !this.clientPersists()) this.finSent = writeWithFin(this.client, () => this.writeClient(b));
    else this.writeClient(b);
  }

  private writeClient(b: Buffer): void {
    if (b.length === 0) return;
    if (!this.client.write(b) && !this.clientWaitDrain) {
      this.clientWaitDrain = true;
      this.client.once('drain', this.onClientDrain);
      this.up?.pause();
    }
  }

  // ---- upstream side ----

  /** Borrows an upstream for the current exchange; false when the exchange already failed. */
  private attachUpstream(fresh: boolean): boolean {
    let s: ForwarderSocket | null = null;
    let reused = false;
    // The first exchange adopts the eager upstream; with a route its endpoint is the eager lease's.
    if (!fresh && this.eager !== null) {
      s = this.eager;
      this.eager = null;
      s.off('error', this.onEagerError);
      if (s.destroyed) s = null; // it failed while we read the head; a new dial reports why
    }
    if (s === null && !fresh) {
      // A request we could not re-send takes only a recently used connection: one idle
      // longer may be closed by its server just as we write (docs/http1.md).
      s = this.pool.acquire(this.targetKey, this.req !== null && isRetryable(this.req, this.reqKind) ? Infinity : NON_RETRYABLE_MAX_IDLE_MS);
      reused = s !== null;
    }
    if (s === null) {
      try {
        const dialed = this.ctx.dial(this.targetIp, this.targetPort);
        s = this.ctx.io ? this.ctx.io.upstream(dialed) : dialed;
      } catch (err) {
        this.abortExchange(502, (err as Error).message);
        return false;
      }
      s.setNoDelay(true);
    }
    this.up = s;
    this.upKey = this.targetKey;
    this.upReused = reused;
    this.upConnected = !s.connecting;
    own(s, this);
    if (s.connecting) {
      s.once('connect', this.onUpConnect);
      this.connectTimer = setTimeout(() => this.onConnectTimeout(), this.limits.upstreamConnectTimeoutMs);
      this.connectTimer.unref();
    }
    if (this.clientWaitDrain) s.pause();
    else s.resume();
    return true;
  }

  /** Stops taking the upstream's events; the caller pools or destroys the socket. */
  private detachUpstream(): ForwarderSocket | null {
    const s = this.up;
    if (s === null) return null;
    this.up = null;
    own(s, null);
    if (!this.upConnected) s.off('connect', this.onUpConnect);
    this.clearConnectTimer();
    if (this.upWaitDrain) {
      s.off('drain', this.onUpDrain);
      this.upWaitDrain = false;
      this.updateClientFlow();
    }
    return s;
  }

  private writeUp(b: Buffer): void {
    if (b.length === 0 || this.up === null) return;
    if (!this.up.write(b) && !this.upWaitDrain) {
      this.upWaitDrain = true;
      this.up.once('drain', this.onUpDrain);
      this.updateClientFlow();
    }
  }

  private onUpDrain(): void {
    this.upWaitDrain = false;
    this.updateClientFlow();
  }

  private onUpConnect(): void {
    this.upConnected = true;
    this.clearConnectTimer();
  }

  private onConnectTimeout(): void {
    this.connectTimer = null;
    if (this.state !== ST_EXCHANGE) return;
    if (this.mayRetry()) this.retryLater(0, 'IO');
    else this.abortExchange(504, 'upstream connect timeout');
  }

  private onEagerError(): void {
    // Reported when the first request dials again.
  }

  upstreamError(err: NodeJS.ErrnoException): void {
    this.upError = err.code ?? err.message;
  }

  upstreamEnd(): void {
    try {
      if (this.upIdle) {
        this.dropIdleUpstream();
        return;
      }
      if (this.state === ST_TUNNEL) {
        this.client.end();
        return;
      }
      if (this.state !== ST_EXCHANGE) return;
      if (this.resKind === 'close' && this.resHeadSent) this.completeResponse(false);
      else this.upstreamLost(this.upError || 'upstream closed');
    } catch (err) {
      this.internalError(err);
    }
  }

  upstreamClose(hadError: boolean): void {
    try {
      if (this.upIdle) {
        this.dropIdleUpstream();
        return;
      }
      if (this.state === ST_TUNNEL) {
        this.up = null;
        // A reset goes on as a reset (as in the opaque tunnel): a FIN would read as the server's orderly end.
        if (hadError) abortSocket(this.client);
        else this.client.end();
        return;
      }
      if (this.state !== ST_EXCHANGE) return;
      if (this.resKind === 'close' && this.resHeadSent && !hadError) this.completeResponse(false);
      else this.upstreamLost(this.upError || 'upstream closed');
    } catch (err) {
      this.internalError(err);
    }
  }

  /** The bound upstream closed or spoke between exchanges: the next request gets another. */
  private dropIdleUpstream(): void {
    this.upIdle = false;
    this.detachUpstream()?.destroy();
  }

  /** The client is leaving: an idle bound upstream is still good for another client. */
  private releaseUpstream(): void {
    if (!this.upIdle) return;
    this.upIdle = false;
    const up = this.detachUpstream();
    if (up !== null) this.pool.release(this.upKey, up, this.upIdleSince);
  }

  /** The upstream went away before the response completed. */
  private upstreamLost(why: string): void {
    if (!this.resHeadSent) {
      // A connect error: retried under a retry policy (the request never reached a server).
      if (!this.upConnected && this.mayRetry()) {
        this.retryLater(0, 'IO');
        return;
      }
      if (this.upReused && !this.retried && this.responseBytes === 0 && this.reqBodyDone && isRetryable(this.req!, this.reqKind)) {
        // Likely the stale keep-alive race: the server closed an idle connection as we sent.
        this.retried = true;
        this.detachUpstream()?.destroy();
        this.resReader.reset();
        if (this.attachUpstream(true)) this.writeUp(this.reqHead!);
        return;
      }
      this.abortExchange(502, why);
      return;
    }
    this.abortExchange(0, why);
  }

  upstreamData(chunk: Buffer): void {
    this.active = true;
    if (this.idleMs > 0) this.lastIo = performance.now();
    try {
      // An idle upstream must be silent; bytes now belong to no request.
      if (this.upIdle) this.dropIdleUpstream();
      else if (this.state === ST_TUNNEL) this.writeClient(chunk);
      else if (this.state === ST_EXCHANGE) this.readResponse(chunk);
    } catch (err) {
      this.internalError(err);
    }
  }

  private readResponse(chunk: Buffer): void {
    if (this.resHeadSent) {
      // Body bytes.
      let n: number;
      if (this.resBody === null) n = chunk.length; // close-delimited
      else {
        n = this.resBody.push(chunk, 0);
        if (n === FRAME_ERROR) {
          this.abortExchange(0, 'bad chunked response body');
          return;
        }
      }
      this.responseBytes += n;
      const out = n === chunk.length ? chunk : chunk.subarray(0, n);
      if (this.resBody !== null && this.resBody.done) {
        this.writeClientLast(out);
        this.completeResponse(n < chunk.length);
      } else this.writeClient(out);
      return;
    }
    let next: Buffer = chunk;
    for (;;) {
      const end = this.resReader.push(next);
      if (end === HEAD_NEED_MORE) return;
      if (end === HEAD_TOO_LARGE) {
        this.abortExchange(502, 'response head too large');
        return;
      }
      if (end === HEAD_MALFORMED) {
        this.abortExchange(502, 'bad response: not an HTTP/1 head (a bare LF or CR, or no HTTP/1. status line)');
        return;
      }
      const buf = this.resReader.buffer;
      this.resReader.reset();
      const req = this.req!;
      let res: ResponseHead;
      let kind: BodyKind;
      try {
        res = parseResponseHead(buf, 0, end);
        kind = responseBodyKind(req, res);
      } catch (err) {
        this.abortExchange(502, 'bad response: ' + (err as Error).message);
        return;
      }
      this.responseBytes += end;
      if (kind === 'interim') {
        // RFC 9110 15.2: no 1xx to an HTTP/1.0 client.
        if (req.versionMinor === 1) this.writeClient(buf.subarray(0, end));
        if (end === buf.length) return;
        next = buf.subarray(end);
        continue;
      }
      if (this.rule !== null && kind !== 'tunnel') {
        const p = this.retryPolicy;
        if (p !== null && retryableResponse(p, res.status, undefined)) {
          if (this.mayRetry()) {
            this.retryLater(res.status, undefined);
            return;
          }
        } else if (this.report!.retries > 0) this.report!.retryOutcome = 'success';
        this.report!.backendResponded = true;
      }
      this.res = res;
      this.status = res.status;
      this.resHeadSent = true;
      this.latencyMs = performance.now() - this.t0;
      if (kind === 'tunnel') {
        this.writeClient(buf);
        this.responseBytes += buf.length - end;
        this.beginTunnel();
        return;
      }
      this.resKind = kind;
      let bodyEnd = end;
      if (kind === 'close') {
        bodyEnd = buf.length;
        // Cut at the drain deadline, its end must reach the client as a reset (teardown), not
        // as the listener's FIN, which would read as the end of a whole body.
        this.offCut = this.ctx.drain?.onCut(() => {
          if (this.state === ST_EXCHANGE) this.emit('drain deadline');
          this.teardown();
        }) ?? null;
      } else if (kind !== 'none') {
        this.resBody = kind === 'length' ? new LengthFramer(res.contentLength) : new ChunkedFramer(MIN_RESPONSE_HEAD_LIMIT);
        const n = this.resBody.push(buf, end);
        if (n === FRAME_ERROR) {
          this.resHeadSent = false;
          this.abortExchange(502, 'bad chunked response body');
          return;
        }
        bodyEnd += n;
      }
      this.responseBytes += bodyEnd - end;
      this.closeForDrain = !this.closeOnlyClient && this.ctx.drain?.draining === true;
      this.closeEarly = !this.reqBodyDone;
      let head = this.closeOnlyClient || this.closeForDrain || this.closeEarly ? closingResponseHead(buf, 0, end, res) : null;
      // The answering backend's ResponseHeaderModifier then the rule's (one modifier); rules
      // without one send the upstream's head as it came.
      const rule = this.rule;
      const mod = rule === null ? null : rule.responseEdits(this.slot!.backend);
      if (mod !== null) head = modifiedHead(head ?? buf.subarray(0, end), mod);
      const out = head !== null
        ? (bodyEnd === end ? head : Buffer.concat([head, buf.subarray(end, bodyEnd)]))
        : (bodyEnd === buf.length ? buf : buf.subarray(0, bodyEnd));
      if (kind === 'none' || (this.resBody !== null && this.resBody.done)) {
        this.writeClientLast(out);
        this.completeResponse(bodyEnd < buf.length);
      } else this.writeClient(out);
      return;
    }
  }

  private completeResponse(extra: boolean): void {
    if (extra) this.upExtra = true;
    const req = this.req!;
    const res = this.res!;
    // Each leg persists on its own terms (hop-by-hop): the upstream as the request we sent it
    // and its response said, the client as its own request said.
    const framed = this.reqBodyDone && this.resKind !== 'close' && wantsKeepAlive(res);
    const upKeep = framed && !this.upExtra && this.up !== null && (this.closeOnlyClient || wantsKeepAlive(req));
    const persistent = this.clientPersists();
    this.emit(undefined);
    if (upKeep) {
      // Bound to this client, or pooled by closeClient() below when the client goes.
      this.upIdle = true;
      this.upIdleSince = this.pool.now();
      this.upReused = true;
    } else {
      this.detachUpstream()?.destroy();
    }
    this.endExchange();
    if (!persistent) {
      this.closeClient();
      return;
    }
    this.state = ST_HEAD;
    if (this.pending !== null) {
      const p = this.pending;
      this.pending = null;
      this.readHead(p);
    }
    if (this.state === ST_HEAD && this.clientEnded) {
      // The client half-closed after its last request; nothing more can come.
      this.endedBetweenRequests();
      return;
    }
    this.updateClientFlow();
  }

  /**
   * The client half-closed with no exchange open: a head it started can never end, so it gets a
   * 400 it can still read (as Node's http server answers an EOF mid-head); else the connection
   * just closes. One rule, whether its first request or one pipelined behind an exchange.
   */
  private endedBetweenRequests(): void {
    if (this.reqReader.partial) this.reject(400, 'incomplete request head', null);
    else this.closeClient();
  }

  private endExchange(): void {
    this.dropCut();
    this.req = null;
    this.res = null;
    this.reqBody = null;
    this.resBody = null;
    this.reqHead = null;
    this.reqBodyDone = true;
    this.resReader.reset();
  }

  private beginTunnel(): void {
    const allowed = this.authz; // the request's decision, before emit() reports it
    this.state = ST_TUNNEL;
    this.emit(undefined);
    this.watchTunnel(allowed);
    this.endExchange();
    if (this.pending !== null) {
      const p = this.pending;
      this.pending = null;
      this.writeUp(p);
    }
    if (this.clientEnded) this.up?.end();
    this.updateClientFlow();
  }

  /**
   * The connection is bytes from now on: as an opaque one allowed whole, it is reset (both sides)
   * and counted as terminated when a policy change no longer allows its upgrade request
   * (docs/policy.md, "When the policy changes"). Its allow was counted with that request.
   */
  private watchTunnel(allowed: AuthzOutcome | null): void {
    const ask = this.upgradeAsk;
    this.upgradeAsk = null;
    if (ask === null || allowed === null || !allowed.allowed) return;
    // The endpoint's policy as it is now, allowing whole or not: its watch checks it at once.
    const az = this.ctx.authz ?? this.ctx.endpointAuthz?.(this.targetIp, this.targetPort) ?? null;
    if (!az) return;
    const outcome: AuthzOutcome = { allowed: true, server: allowed.server, upgraded: true };
    if (allowed.authz) outcome.authz = allowed.authz;
    terminateOnRevoke(this.ctx, az, outcome, () => {
      if (this.up !== null) abortSocket(this.up);
      abortSocket(this.client);
    }, ask);
  }

  // ---- endings ----

  /** Fails the exchange: an error reply when the client has no response head yet, else a hard close. */
  private abortExchange(status: number, why: string, body?: string): void {
    this.releaseUpstream(); // a request refused before it reached the upstream leaves it idle
    this.detachUpstream()?.destroy();
    if (!this.resHeadSent && status !== 0) {
      this.status = status;
      this.emit(why);
      this.endExchange();
      const reply = errorReply(status, body);
      if (this.state < ST_CLOSING) this.finSent = writeWithFin(this.client, () => this.client.write(reply));
      else this.client.write(reply);
      this.closeClient();
      return;
    }
    this.emit(why);
    this.endExchange();
    this.teardown();
  }

  /** Refuses a request before any upstream saw it. */
  private reject(status: number, why: string, req: RequestHead | null): void {
    this.clearHeaderTimer();
    if (this.state === ST_HEAD) {
      this.req = req;
      this.startedAt = Date.now();
      this.t0 = performance.now();
      this.requestBytes = 0;
      this.responseBytes = 0;
      this.latencyMs = 0;
      this.emitted = false;
    }
    this.resHeadSent = false;
    this.abortExchange(status, why);
  }

  private closeClient(): void {
    if (this.state >= ST_CLOSING) return;
    this.releaseUpstream();
    this.state = ST_CLOSING;
    this.pending = null;
    this.clearHeaderTimer();
    this.dropEager();
    const c = this.client;
    if (!this.finSent) this.finSent = finNow(c);
    c.end(() => {
      // Our FIN is out; wait a little for the client's, so unread input does not turn into an
      // RST that could wipe the reply before the client reads it.
      if (!c.destroyed) {
        this.lingerTimer = setTimeout(() => c.destroy(), LINGER_MS);
        this.lingerTimer.unref();
      }
    });
    this.updateClientFlow();
  }

  /** Destroys everything this connection holds; idempotent. */
  private teardown(): void {
    if (this.state === ST_CLOSED) return;
    // A close-delimited response ends where the connection ends: cut short (the upstream reset, a
    // timeout), only a reset tells the client it is not whole; a FIN would read as its end.
    const cut = this.state === ST_EXCHANGE && this.resHeadSent && this.resKind === 'close';
    this.state = ST_CLOSED;
    this.dropCut();
    this.offDrain?.();
    this.offDrain = null;
    this.releaseUpstream();
    this.detachUpstream()?.destroy();
    this.dropEager();
    this.pending = null;
    this.clearHeaderTimer();
    if (this.idleTimer !== null) clearInterval(this.idleTimer);
    if (this.lingerTimer !== null) clearTimeout(this.lingerTimer);
    if (this.drainIdleTimer !== null) clearTimeout(this.drainIdleTimer);
    this.drainIdleTimer = null;
    this.clearExchangeTimer();
    this.idleTimer = null;
    this.lingerTimer = null;
    if (cut) abortSocket(this.client);
    else this.client.destroy();
  }

  private dropCut(): void {
    if (this.offCut === null) return;
    this.offCut();
    this.offCut = null;
  }

  /** The eager upstream no request took, and its endpoint's place in the balancer. */
  private dropEager(): void {
    this.eager?.destroy();
    this.eager = null;
    if (this.eagerLease !== null) {
      this.route!.balancer.done(this.eagerLease, null, 'cancel');
      this.eagerLease = null;
    }
  }

  /**
   * The proxy started draining. Idle between requests, the connection is closed if it is still
   * idle DRAIN_IDLE_GRACE_MS later, or it would hold the drain to its deadline. Not at once: a
   * client in a loop has its next request on the way in that instant, and a close then fails it
   * ("socket hang up": Node's agent does not retry); within the grace that request is answered
   * with `Connection: close`. A request in flight finishes, and the connection closes after its
   * response (`Connection: close` when its head is still to come). A tunnel keeps going until
   * the deadline.
   */
  private onDrain(): void {
    this.offDrain = null;
    if (this.state === ST_HEAD && !this.reqReader.partial) {
      this.drainIdleTimer = setTimeout(() => {
        this.drainIdleTimer = null;
        if (this.state === ST_HEAD && !this.reqReader.partial) this.closeClient();
      }, DRAIN_IDLE_GRACE_MS);
      this.drainIdleTimer.unref();
    } else if (this.state === ST_EXCHANGE) this.closeForDrain = true;
  }

  private onIdleCheck(): void {
    if (this.active) {
      this.active = false;
      return;
    }
    if (this.state === ST_HEAD && !this.reqReader.partial) this.closeClient();
    else {
      if (this.state === ST_EXCHANGE) this.emit('idle timeout');
      this.teardown();
    }
  }

  private internalError(err: unknown): void {
    // A bug here must cost one connection, never the process.
    if (this.state === ST_EXCHANGE) this.emit('internal error: ' + String(err));
    this.teardown();
  }

  private clearHeaderTimer(): void {
    if (this.headerTimer !== null) clearTimeout(this.headerTimer);
    this.headerTimer = null;
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  /** Forgets the exchange's routing state (its report went with the event). */
  private endRouted(): void {
    this.rule = null;
    this.report = null;
    this.retryPolicy = null;
    this.replay = null;
    this.requestDeadline = 0;
    this.attemptDeadline = 0;
    this.headDeadline = 0;
    this.retryAt = 0;
    this.idleMs = 0;
    this.clearExchangeTimer();
  }

  /** Reports the current exchange once. */
  private emit(error: string | undefined): void {
    if (this.emitted) return;
    this.emitted = true;
    const now = performance.now();
    const req = this.req;
    const status = this.status;
    const e = this.ctx.endpoints;
    const route = this.route;
    if (this.lease !== null) {
      // A response (head) is the balancer's RTT sample; a 5xx or a failed upstream counts against
      // the endpoint, a request the client gave up on or we refused does not.
      const lease = this.lease;
      this.lease = null;
      const upstreamFailed = !this.resHeadSent && status >= 500;
      // Routed: the RTT of the attempt that answered, not of the retries before it.
      const rtt = this.rule !== null ? this.t0 + this.latencyMs - this.attemptAt : this.latencyMs;
      this.leaseRoute!.balancer.done(lease, this.resHeadSent ? rtt : null,
        (this.resHeadSent && status >= 500) || upstreamFailed ? 'failure' : this.resHeadSent ? 'success' : 'cancel');
    }
    // Fields spelled out, not spread: one object shape, no generic property copy per request.
    const ev: RequestEvent = {
      direction: e.direction,
      sourceIp: e.sourceIp,
      sourcePort: e.sourcePort,
      sourcePodKey: e.sourcePodKey,
      destIp: this.targetIp,
      destPort: this.targetPort,
      dstService: e.dstService,
      connId: this.ctx.connId,
      protocol: 'http1',
      // A Service's requests are reported under its name, as Linkerd's authority label has it.
      authority: route !== null ? route.authority : req === null ? '' : req.method === 'CONNECT' ? req.target : req.host,
      method: req === null ? '' : req.method,
      path: req === null ? '' : req.target,
      status,
      // A proxy-generated 4xx is the client's fault, not a failure of the service.
      success: status > 0 && status < 500 && (error === undefined || !this.resHeadSent),
      latencyMs: this.resHeadSent ? this.latencyMs : now - this.t0,
      durationMs: this.state === ST_TUNNEL ? this.latencyMs : now - this.t0,
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
      startedAt: this.startedAt,
    };
    if (error !== undefined) ev.error = error;
    if (e.clientId !== undefined) ev.clientId = e.clientId;
    if (e.tls !== undefined) ev.tls = e.tls; // a tunnelled connection its destination's agent serves (tunnel/server.ts)
    if (this.authz !== null) {
      ev.authz = this.authz;
      this.authz = null;
    }
    const report = this.report;
    if (report !== null) {
      report.backendMs = now - this.attemptAt;
      if (!this.resHeadSent && report.error === undefined) report.error = errorLabel(error);
      ev.route = report;
      this.endRouted();
    }
    try {
      this.ctx.telemetry.request(ev);
    } catch {
      // Telemetry must never break forwarding.
    }
  }
}

/** An upgrade request as the policy reads it; its head copied, so the connection's buffers are not held. */
function upgradeAsk(req: RequestHead, buf: Buffer, start: number, end: number): HttpRequestView {
  const head = Buffer.from(buf.subarray(start, end));
  return { method: req.method, target: req.target, header: (name) => headerValue(head, 0, head.length, name) };
}
