// Forwards one client stream to a Service with routes, retries or timeouts (route.policy):
// the request's rule (404, gRPC UNIMPLEMENTED, when none matches), then per attempt a backend
// by weight, one of its endpoints and an upstream stream. A response is retried only before
// anything of it reached the client: a status the policy retries (gRPC: a trailers-only
// grpc-status), REFUSED_STREAM, or a connection that failed; the request body (up to 64 KiB)
// is kept to send again, a larger one is never retried. One timer covers the request, attempt
// and response-head timeouts, idle and the backoff; a timeout answers 504 (gRPC DEADLINE_EXCEEDED)
// and cancels the upstream stream (RST_STREAM CANCEL). Unrouted streams: forward-stream.ts.
import type * as http2 from 'node:http2';
import { endpointPoolKey, endpointRequestAuthz, type ConnContext, type ProxyLimits } from '../context.ts';
import { rttSample, sessionReady, type Http2SessionPool, type UpstreamSession } from './pool.ts';
import type { ServiceRoute } from '../../routing/router.ts';
import type { RetryPolicy } from '../../routing/route-model.ts';
import type { RetryBudget } from '../../routing/retry-budget.ts';
import { findRoute, type CompiledRule } from '../../routing/route-table.ts';
import type { RouteRequest } from '../../routing/route-match.ts';
import { backoffMs, MAX_REPLAY_BYTES, retryableResponse } from '../../routing/retry.ts';
import { admitRetry, AttemptSlot, ClientRouting, errorLabel, nearestDeadline, newRouteReport, noteRetried, onDeadline, pickAttempt, reportBackend, timerDelay, type Deadlines } from '../../routing/client-routing.ts';
import type { AuthzOutcome, RouteReport } from '../../telemetry/events.ts';
import { pathOf, queryParam } from '../../util/request-target.ts';
import { downstreamHeaders, isGrpc, isSuccess, parseGrpcStatus, proxyErrorResponse, headerString, requestHeader, upstreamRequestHeaders, type ProxyFailure } from './headers.ts';
import type { StreamHooks } from './forward-stream.ts';
import { relay, type Relay } from './relay.ts';
import { answeredClose, RESPOND_COMPLETE, RESPOND_WITH_BODY, responseShape, unansweredClose } from './upstream-response.ts';
import { drainUnread } from '../../util/http2-drain.ts';
import { resetAfterResponseEnd } from './stop-after-end.ts';
import { NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_INTERNAL_ERROR } from './codes.ts';

/** An HTTP/2 request as its route's matches read it. */
export class H2RouteRequest implements RouteRequest {
  readonly method: string;
  readonly path: string;
  private readonly h: http2.IncomingHttpHeaders;
  private readonly target: string;
  constructor(h: http2.IncomingHttpHeaders) {
    this.h = h;
    this.method = headerString(h[':method']);
    this.target = headerString(h[':path']);
    this.path = pathOf(this.target);
  }
  query(name: string): string | undefined {
    return queryParam(this.target, name);
  }
  header(name: string): string | undefined {
    return requestHeader(this.h, name);
  }
}

export function forwardRoutedStream(
  client: http2.ServerHttp2Stream, reqHeaders: http2.IncomingHttpHeaders, noBody: boolean,
  ctx: ConnContext, route: ServiceRoute, pool: Http2SessionPool, limits: ProxyLimits, hooks: StreamHooks,
): void {
  new RoutedStream(client, reqHeaders, noBody, ctx, route, pool, limits, hooks).start();
}

class RoutedStream {
  private readonly client: http2.ServerHttp2Stream;
  private readonly reqHeaders: http2.IncomingHttpHeaders;
  private readonly noBody: boolean;
  private readonly ctx: ConnContext;
  private readonly route: ServiceRoute;
  private readonly pool: Http2SessionPool;
  private readonly limits: ProxyLimits;
  private readonly hooks: StreamHooks;
  private readonly startedAt = Date.now();
  private readonly t0 = performance.now();
  private readonly grpc: boolean;
  private rule: CompiledRule | null = null;
  private retry: RetryPolicy | null = null;
  private budget: RetryBudget | null = null;
  private report: RouteReport | null = null;
  private readonly slot = new AttemptSlot();
  private leaseOpen = false;
  private destIp: string;
  private destPort: number;
  /** The inbound decision of the current attempt's endpoint, when this request counts it. */
  private authz: AuthzOutcome | undefined;

  private up: http2.ClientHttp2Stream | null = null;
  /** The current attempt's response body to the client, once it answered. */
  private responseRelay: Relay | null = null;
  private upSession: UpstreamSession | null = null;
  private attemptAt = 0;
  /** The request body while it can be sent again; null: no retry possible. */
  private body: Buffer[] | null = null;
  private bodyBytes = 0;
  private clientEnded: boolean;
  private requestTrailers: http2.IncomingHttpHeaders | undefined;

  private requestDeadline = 0;
  private attemptDeadline = 0;
  private headDeadline = 0;
  private retryAt = 0;
  /** timeout.linkerd.io/idle: no bytes either way for this long ends the request. */
  private idleMs = 0;
  private lastIo = 0;
  private timer: NodeJS.Timeout | null = null;

  private status = 0;
  private respGrpc: boolean;
  private grpcStatus: number | undefined;
  private latencyMs = 0;
  private requestBytes = 0;
  private responseBytes = 0;
  private error: string | undefined;
  private responseDone = false;
  /** The proxy answered the stream itself (answer()): the rest of the body is drained, not relayed. */
  private answered = false;
  private resetByProxy = false;
  private responseTrailers: http2.IncomingHttpHeaders | undefined;

  constructor(client: http2.ServerHttp2Stream, reqHeaders: http2.IncomingHttpHeaders, noBody: boolean, ctx: ConnContext, route: ServiceRoute, pool: Http2SessionPool, limits: ProxyLimits, hooks: StreamHooks) {
    this.client = client;
    this.reqHeaders = reqHeaders;
    this.noBody = noBody;
    this.clientEnded = noBody;
    this.ctx = ctx;
    this.route = route;
    this.pool = pool;
    this.limits = limits;
    this.hooks = hooks;
    this.grpc = isGrpc(reqHeaders['content-type']);
    this.respGrpc = this.grpc;
    this.destIp = ctx.endpoints.destIp;
    this.destPort = ctx.endpoints.destPort;
  }

  start(): void {
    const client = this.client;
    client.on('error', (err: Error) => { this.error ??= err.message; });
    client.once('close', () => this.onClientClose());
    const routing = (this.ctx.routing ??= new ClientRouting(this.route.router, this.ctx.endpoints.sourceIp));
    const rule = findRoute(routing.tableFor(this.route), new H2RouteRequest(this.reqHeaders), this.grpc);
    if (rule === null) {
      const { namespace, name, port } = this.route.ref;
      this.answer('no-route', `no route of Service ${namespace}/${name} port ${port} matches ${headerString(this.reqHeaders[':method'])} ${pathOf(headerString(this.reqHeaders[':path']))}`);
      return;
    }
    this.rule = rule;
    this.report = newRouteReport(this.route, rule);
    if (rule.redirect !== null) {
      this.redirect(rule);
      return;
    }
    this.retry = rule.retryFor(this.grpc);
    if (this.retry !== null) {
      this.budget = routing.budgetFor(this.route);
      this.budget.deposit();
      if (!this.noBody) this.body = [];
    }
    const t = rule.timeouts;
    if (t?.requestMs !== undefined) this.requestDeadline = this.t0 + t.requestMs;
    if (t?.idleMs !== undefined) {
      this.idleMs = t.idleMs;
      this.lastIo = this.t0;
    }
    if (!this.noBody) {
      client.on('data', (chunk: Buffer) => this.onClientData(chunk));
      client.on('end', () => this.onClientEnd());
      client.on('trailers', (tr) => { this.requestTrailers = tr; });
    }
    this.attempt();
  }

  // ---- attempts ----

  /**
   * The request's headers for the upstream (a new object per attempt), with the rule's
   * RequestHeaderModifier, and this attempt's backend's after it (one modifier compiled for both).
   */
  private upstreamHeaders(): http2.OutgoingHttpHeaders {
    const h = upstreamRequestHeaders(this.reqHeaders);
    this.rule!.requestEdits(this.slot.backend)?.applyToH2(h);
    return h;
  }

  private attempt(): void {
    const slot = this.slot;
    const ok = pickAttempt(this.route, this.rule!, slot, sessionReady(this.pool, this.ctx, this.limits), this.report!.retries > 0);
    this.attemptAt = performance.now();
    const report = this.report!;
    reportBackend(report, this.route, slot);
    if (!ok) {
      report.error = slot.status === 503 ? 'FAIL_FAST' : 'UNKNOWN';
      this.answer(slot.status === 503 ? 'no-endpoints' : 'backend', slot.why);
      return;
    }
    const lease = slot.lease!;
    this.leaseOpen = true;
    this.destIp = lease.ep.ip;
    this.destPort = lease.ep.port;
    // An endpoint of this node the policy allows whole: the request counts its decision (a retry's replaces an earlier attempt's).
    this.authz = endpointRequestAuthz(this.ctx, this.destIp, this.destPort, headerString(this.reqHeaders[':method']), headerString(this.reqHeaders[':path']));
    const t = this.rule!.timeouts;
    this.attemptDeadline = t?.backendRequestMs !== undefined ? this.attemptAt + t.backendRequestMs : 0;
    this.headDeadline = this.retry?.timeoutMs !== undefined ? this.attemptAt + this.retry.timeoutMs : 0;
    let up: http2.ClientHttp2Stream;
    try {
      const { ip, port } = lease.ep;
      // A Service endpoint its policy does not allow this client whole: in-process sessions only (context.ts INSPECTED).
      this.upSession = this.pool.acquire(ip, port, this.ctx, this.limits.upstreamConnectTimeoutMs, endpointPoolKey(this.ctx, ip, port, lease.key));
      up = this.upSession.request(this.upstreamHeaders(), { endStream: this.noBody, waitForTrailers: true });
    } catch (err) {
      this.error = (err as Error).message;
      this.attemptFailed('unreachable', 'IO');
      return;
    }
    this.up = up;
    up.on('error', (err: Error) => { if (up === this.up) this.error ??= err.message; });
    up.on('headers', (h) => {
      if (up === this.up && !this.client.closed && !this.client.headersSent) this.client.additionalHeaders(downstreamHeaders(h));
    });
    up.on('response', (h, flags) => this.onResponse(up, h, flags));
    up.on('trailers', (tr) => {
      if (up !== this.up) return;
      this.responseTrailers = tr;
      const g = parseGrpcStatus(tr['grpc-status']);
      if (g !== undefined) this.grpcStatus = g;
    });
    up.on('wantTrailers', () => up.sendTrailers(this.requestTrailers ? downstreamHeaders(this.requestTrailers) : {}));
    up.on('drain', () => { if (up === this.up && !this.client.destroyed) this.client.resume(); });
    up.once('close', () => this.onUpClose(up));
    if (!this.noBody) {
      // A retry sends what the client sent so far; the rest follows as it arrives.
      if (this.body !== null) for (const b of this.body) up.write(b);
      if (this.clientEnded) up.end();
      else this.client.resume();
    }
    this.arm();
  }

  private onClientData(chunk: Buffer): void {
    // Drained after the proxy's own answer (stopRequestBody): dropped and not counted, as in
    // forward-stream.ts and the policy's 403 (requestBytes is the body passed on toward the destination).
    if (this.answered) return;
    this.requestBytes += chunk.length;
    if (this.idleMs > 0) this.lastIo = performance.now();
    if (this.body !== null) {
      this.bodyBytes += chunk.length;
      if (this.bodyBytes > MAX_REPLAY_BYTES) this.body = null; // too large to send again: never retried
      else this.body.push(chunk);
    }
    const up = this.up;
    if (up === null || up.destroyed) {
      // Between attempts: hold the client (flow control) until the next attempt takes it.
      if (!this.responseDone) this.client.pause();
      return;
    }
    if (!up.write(chunk)) this.client.pause();
  }

  private onClientEnd(): void {
    this.clientEnded = true;
    if (this.up !== null && !this.up.destroyed) this.up.end();
  }

  private onResponse(up: http2.ClientHttp2Stream, h: http2.IncomingHttpHeaders, flags: number): void {
    if (up !== this.up) return;
    const client = this.client;
    const status = Number(h[':status']) || 0;
    const shape = responseShape(status, flags, this.reqHeaders[':method']);
    if (shape.kind === 'bad-status') {
      this.error ??= shape.error;
      this.up = null;
      up.close(NGHTTP2_PROTOCOL_ERROR);
      this.releaseLease('failure', null);
      this.answer('bad-response', this.error);
      return;
    }
    const trailersOnly = shape.kind === 'trailers-only';
    const grpc = this.grpc || isGrpc(h['content-type']);
    const grpcStatus = trailersOnly ? parseGrpcStatus(h['grpc-status']) : undefined;
    const report = this.report!;
    if (this.retry !== null && retryableResponse(this.retry, status, grpcStatus)) {
      if (this.mayRetry()) {
        this.retryLater(status, grpcStatus, undefined);
        return;
      }
    } else if (report.retries > 0) report.retryOutcome = 'success';
    report.backendResponded = true;
    this.headDeadline = 0;
    this.status = status;
    this.respGrpc = grpc;
    this.latencyMs = performance.now() - this.t0;
    if (client.closed || client.destroyed) return;
    if (trailersOnly) {
      this.grpcStatus = grpcStatus;
      this.responseDone = true;
      client.respond(this.clientHeaders(h), RESPOND_COMPLETE);
      // The request body still goes up: the upstream may read it after answering. Its reset, if
      // it sends one, comes through onUpClose, as in forward-stream.ts.
      return;
    }
    if (shape.kind === 'headers-only') {
      this.responseDone = true;
      client.respond(this.clientHeaders(h), RESPOND_COMPLETE);
      up.resume(); // the upstream's end is read and dropped
      return;
    }
    client.respond(this.clientHeaders(h), RESPOND_WITH_BODY);
    client.on('wantTrailers', () => {
      this.responseDone = true;
      client.sendTrailers(this.responseTrailers ? downstreamHeaders(this.responseTrailers) : {});
      // After the trailers, which node:http2 sends on a setImmediate (forward-stream.ts).
      if (up.closed) setImmediate(() => this.stopRequestBody());
    });
    // Relayed from here (forward-stream.ts says why: an earlier 'data' listener loses DATA read with the headers).
    this.responseRelay = relay(up, client, (n) => {
      this.responseBytes += n;
      if (this.idleMs > 0) this.lastIo = performance.now();
    });
    this.arm();
  }

  private onUpClose(up: http2.ClientHttp2Stream): void {
    if (up !== this.up) return;
    const client = this.client;
    if (client.closed || client.destroyed) return;
    if (!client.headersSent && this.retryAt === 0) {
      // Nothing answered: a connection that failed or a REFUSED_STREAM never reached the
      // application, so a retry policy retries them; otherwise as forward-stream.ts.
      const session = this.upSession;
      const end = unansweredClose(up, session);
      if (end.kind === 'failed') this.attemptFailed(session?.failure ?? 'unreachable', 'IO');
      else if (end.code === NGHTTP2_REFUSED_STREAM) this.attemptFailed(null, 'REFUSED');
      else {
        this.error ??= end.error;
        this.resetClient(end.code);
      }
      return;
    }
    const end = answeredClose(up, this.responseDone);
    if (end.kind === 'reset') {
      this.error ??= end.error;
      this.responseRelay?.stop();
      this.resetClient(end.code);
    } else if (end.kind === 'complete') setImmediate(() => this.stopRequestBody()); // behind the trailers (forward-stream.ts)
  }

  /**
   * The attempt ended without a response: retried when the policy allows, else answered as
   * forward-stream.ts does (a failed connection: 502/504 or UNAVAILABLE; a refused stream: passed on).
   */
  private attemptFailed(failure: ProxyFailure | null, label: string): void {
    if (this.mayRetry()) {
      this.retryLater(0, undefined, label);
      return;
    }
    if (failure === null) {
      this.error ??= 'upstream reset (code 7, REFUSED_STREAM)';
      this.releaseLease('failure', null);
      this.resetClient(NGHTTP2_REFUSED_STREAM);
      return;
    }
    this.error ??= `upstream ${failure}`;
    this.answer(failure, this.upSession?.failureDetail || this.error || 'stream failed');
  }

  private mayRetry(): boolean {
    const p = this.retry;
    if (p === null || (!this.noBody && (this.body === null || !this.clientEnded)) || this.client.headersSent || this.client.closed) return false;
    return admitRetry(p, this.report!, this.budget!);
  }

  private retryLater(status: number, grpcStatus: number | undefined, label: string | undefined): void {
    const now = performance.now();
    const report = this.report!;
    noteRetried(report, status, grpcStatus, label, now - this.attemptAt);
    // The sample leaves out a wait for the attempt's new session to connect (pool.ts rttSample).
    this.releaseLease(status === 0 || status >= 500 || (grpcStatus !== undefined && grpcStatus !== 0) ? 'failure' : 'success', status > 0 ? rttSample(this.upSession, this.attemptAt, now) : null);
    const up = this.up;
    this.up = null;
    if (up !== null && !up.closed && !up.destroyed) up.close(NGHTTP2_CANCEL);
    this.attemptDeadline = 0;
    this.headDeadline = 0;
    this.retryAt = now + backoffMs(this.retry!, report.retries + 1, Math.random);
    this.arm();
  }

  // ---- timers ----

  private arm(): void {
    const at = nearestDeadline(this.deadlines());
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = at === Infinity ? null : setTimeout(() => this.onTimer(), timerDelay(at, performance.now()));
  }

  private onTimer(): void {
    this.timer = null;
    if (this.responseDone || this.client.closed) return;
    onDeadline(this.deadlines(), this.rule!.timeouts, performance.now(), {
      timedOut: (label, why) => this.timedOut(label, why),
      nextAttempt: () => {
        this.retryAt = 0;
        this.report!.retries++;
        this.attempt();
      },
      mayRetry: () => this.mayRetry(),
      retryNow: (label) => this.retryLater(0, undefined, label),
      clearHead: () => {
        this.headDeadline = 0;
      },
      arm: () => this.arm(),
    });
  }

  private deadlines(): Deadlines {
    return { request: this.requestDeadline, attempt: this.attemptDeadline, head: this.headDeadline, retryAt: this.retryAt, idleMs: this.idleMs, lastIo: this.lastIo };
  }

  /** 504 (gRPC DEADLINE_EXCEEDED), or a reset once the response has started; the upstream stream is cancelled. */
  private timedOut(label: string, why: string): void {
    this.report!.error = label;
    this.error = why;
    const up = this.up;
    this.up = null;
    if (up !== null && !up.closed && !up.destroyed) {
      this.responseRelay?.stop();
      up.close(NGHTTP2_CANCEL);
    }
    this.releaseLease('failure', null);
    if (this.client.headersSent) {
      this.resetClient(NGHTTP2_CANCEL);
      return;
    }
    this.answer('timeout', why);
  }

  // ---- endings ----

  /** The rule's RequestRedirect: :status and location, no body, no backend picked. */
  private redirect(rule: CompiledRule): void {
    const r = rule.redirect!;
    const h = this.reqHeaders;
    const headers: http2.OutgoingHttpHeaders = {
      ':status': r.status,
      location: r.location(headerString(h[':path']), headerString(h[':authority'] ?? h.host), this.route.authority, this.route.ref.port),
    };
    rule.responseHeaders?.applyToH2(headers);
    this.report!.redirected = true;
    this.status = r.status;
    this.latencyMs = performance.now() - this.t0;
    this.responseDone = true;
    this.answered = true;
    this.client.respond(headers, { endStream: true });
    // Its body, if any, is drained (a declared length up to 64 KiB) or reset, as after an error answer.
    this.stopRequestBody(true);
  }

  /**
   * The response headers for the client: the upstream's, with the answering backend's
   * ResponseHeaderModifier and then the rule's (one modifier compiled for both).
   */
  private clientHeaders(h: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
    const out = downstreamHeaders(h);
    this.rule!.responseEdits(this.slot.backend)?.applyToH2(out);
    return out;
  }

  /** The proxy answers the stream itself. */
  private answer(failure: ProxyFailure, detail: string): void {
    const client = this.client;
    if (client.headersSent || client.closed || client.destroyed) {
      this.resetClient(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const r = proxyErrorResponse(failure, this.grpc, detail);
    this.status = r.status;
    this.grpcStatus = r.grpcStatus;
    this.latencyMs = performance.now() - this.t0;
    this.error ??= detail;
    this.responseDone = true;
    this.answered = true;
    if (r.body === undefined) client.respond(r.headers, { endStream: true });
    else {
      client.respond(r.headers);
      client.end(r.body);
    }
    this.stopRequestBody(true);
  }

  private resetClient(code: number): void {
    if (this.client.closed || this.client.destroyed) return;
    this.resetByProxy = true;
    this.client.close(code);
  }

  /**
   * The response is complete but the client is still sending a body: RST_STREAM(NO_ERROR) (RFC 9113
   * 8.1); after the proxy's own answer (`ownReply`) a body of declared length up to 64 KiB is
   * drained instead (util/http2-drain.ts).
   */
  private stopRequestBody(ownReply = false): void {
    const client = this.client;
    if (this.noBody || client.readableEnded || client.closed || client.destroyed) return;
    if (ownReply && drainUnread(client, this.reqHeaders['content-length'])) return;
    this.resetByProxy = true;
    // Once the response's END_STREAM is out (stop-after-end.ts).
    resetAfterResponseEnd(client);
  }

  private releaseLease(outcome: 'success' | 'failure' | 'cancel', rttMs: number | null): void {
    if (!this.leaseOpen) return;
    this.leaseOpen = false;
    this.slot.target!.balancer.done(this.slot.lease!, rttMs, outcome);
  }

  private onClientClose(): void {
    const client = this.client;
    const code = client.rstCode ?? NGHTTP2_NO_ERROR;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (!this.responseDone && !this.resetByProxy) {
      this.hooks.onClientReset();
      this.error ??= `client reset (code ${code})`;
    }
    const up = this.up;
    if (up !== null && !up.closed && !up.destroyed) up.close(code === NGHTTP2_NO_ERROR && !this.responseDone ? NGHTTP2_CANCEL : code);
    const ok = this.responseDone && isSuccess(this.status, this.respGrpc, this.grpcStatus);
    // As forward-stream.ts: no answer at all is the client's doing unless we reset it; a response is the RTT sample,
    // from the attempt's start or, when it waited for a new session to connect, from then (pool.ts rttSample).
    const backendAnswered = this.report?.backendResponded === true;
    this.releaseLease(this.status === 0 ? (this.error !== undefined && !this.resetByProxy ? 'cancel' : 'failure') : ok ? 'success' : 'failure',
      backendAnswered ? rttSample(this.upSession, this.attemptAt, this.t0 + this.latencyMs) : null);
    const report = this.report;
    if (report !== null) {
      report.backendMs = performance.now() - this.attemptAt;
      if (!report.backendResponded && report.error === undefined) report.error = errorLabel(this.error);
    }
    try {
      this.ctx.telemetry.request({
        ...this.ctx.endpoints,
        destIp: this.destIp,
        destPort: this.destPort,
        ...(this.authz !== undefined ? { authz: this.authz } : {}),
        connId: this.ctx.connId,
        protocol: 'http2',
        authority: this.route.authority,
        method: headerString(this.reqHeaders[':method']),
        path: headerString(this.reqHeaders[':path']),
        status: this.status,
        ...(this.respGrpc ? { grpcStatus: this.grpcStatus } : {}),
        success: ok,
        latencyMs: this.latencyMs,
        durationMs: performance.now() - this.t0,
        requestBytes: this.requestBytes,
        responseBytes: this.responseBytes,
        ...(this.error && !ok ? { error: this.error } : {}),
        startedAt: this.startedAt,
        ...(report !== null ? { route: report } : {}),
      });
    } catch {
      // a broken sink must not take the proxy down
    }
  }
}
