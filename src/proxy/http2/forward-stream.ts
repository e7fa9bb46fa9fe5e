// Forwards one client stream to an upstream stream: headers, bodies both ways under
// stream backpressure, response trailers, resets both ways; reports one RequestEvent.
import type * as http2 from 'node:http2';
import { endpointPoolKey, endpointRequestAuthz, type ConnContext, type ProxyLimits } from '../context.ts';
import { rttSample, sessionReady, type Http2SessionPool, type UpstreamSession } from './pool.ts';
import {
  downstreamHeaders, isGrpc, isSuccess, parseGrpcStatus, proxyErrorResponse, headerString, upstreamRequestHeaders, type ProxyFailure,
} from './headers.ts';
import { forwardRoutedStream } from './routed-stream.ts';
import { relay, type Relay } from './relay.ts';
import { answeredClose, RESPOND_COMPLETE, RESPOND_WITH_BODY, responseShape, unansweredClose } from './upstream-response.ts';
import { drainUnread } from '../../util/http2-drain.ts';
import { resetAfterResponseEnd } from './stop-after-end.ts';
import { NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } from './codes.ts';

export interface StreamHooks {
  /** The client reset a stream whose exchange was not finished. */
  onClientReset(): void;
}

export function forwardStream(
  client: http2.ServerHttp2Stream,
  reqHeaders: http2.IncomingHttpHeaders,
  /** The request HEADERS carried END_STREAM: there is no body to forward. */
  noBody: boolean,
  ctx: ConnContext,
  pool: Http2SessionPool,
  limits: ProxyLimits,
  hooks: StreamHooks,
): void {
  // The endpoint: the original destination, or for a Service the one its balancer picks per stream.
  let route = ctx.route ?? null;
  if (route !== null && route.stale) route = ctx.route = route.current(ctx.endpoints.destIp, ctx.endpoints.destPort);
  if (route !== null && route.policy !== null) {
    // Routes, retries or timeouts: routed-stream.ts.
    forwardRoutedStream(client, reqHeaders, noBody, ctx, route, pool, limits, hooks);
    return;
  }
  const startedAt = Date.now();
  const t0 = performance.now();
  const reqGrpc = isGrpc(reqHeaders['content-type']);
  let status = 0;
  let grpc = reqGrpc;
  let grpcStatus: number | undefined;
  let latencyMs = 0;
  /** The balancer's RTT sample: latencyMs less any wait for a new upstream session to connect (pool.ts rttSample). */
  let rttMs = 0;
  let requestBytes = 0;
  let responseBytes = 0;
  let error: string | undefined;
  let responseDone = false;
  let resetByProxy = false;
  let upstream: http2.ClientHttp2Stream | undefined;
  let upSession: UpstreamSession | undefined;
  const lease = route !== null ? route.balancer.pick(sessionReady(pool, ctx, limits)) : null;
  const destIp = lease !== null ? lease.ep.ip : ctx.endpoints.destIp;
  const destPort = lease !== null ? lease.ep.port : ctx.endpoints.destPort;
  // An endpoint of this node the policy allows whole: this request counts its decision.
  const authz = lease !== null ? endpointRequestAuthz(ctx, destIp, destPort, headerString(reqHeaders[':method']), headerString(reqHeaders[':path'])) : undefined;

  client.on('error', (err: Error) => { error ??= err.message; });
  client.once('close', () => {
    const code = client.rstCode ?? NGHTTP2_NO_ERROR;
    if (!responseDone && !resetByProxy) {
      hooks.onClientReset();
      error ??= `client reset (code ${code})`;
    }
    // The client went away first: the server must stop working on it too, with the same code.
    if (upstream && !upstream.closed && !upstream.destroyed) {
      upstream.close(code === NGHTTP2_NO_ERROR && !responseDone ? NGHTTP2_CANCEL : code);
    }
    const method = headerString(reqHeaders[':method']);
    const ok = responseDone && isSuccess(status, grpc, grpcStatus);
    // The endpoint goes back to the balancer once, here ('close' comes once): a response is its RTT sample.
    if (lease !== null) route!.balancer.done(lease, status === 0 ? null : rttMs, status === 0 ? (error !== undefined && !resetByProxy ? 'cancel' : 'failure') : ok ? 'success' : 'failure');
    try {
      ctx.telemetry.request({
        ...ctx.endpoints,
        destIp,
        destPort,
        ...(authz !== undefined ? { authz } : {}),
        connId: ctx.connId,
        protocol: 'http2',
        authority: route !== null ? route.authority : headerString(reqHeaders[':authority']) || headerString(reqHeaders.host),
        method,
        path: headerString(reqHeaders[':path']),
        status,
        ...(grpc ? { grpcStatus } : {}),
        success: ok,
        latencyMs,
        durationMs: performance.now() - t0,
        requestBytes,
        responseBytes,
        ...(error && !ok ? { error } : {}),
        startedAt,
      });
    } catch {
      // a broken sink must not take the proxy down
    }
  });

  const resetClient = (code: number) => {
    if (client.closed || client.destroyed) return;
    resetByProxy = true;
    client.close(code);
  };

  /** The proxy answered the stream itself: the upstream stream's end changes nothing for the client. */
  let ownAnswer = false;
  const respondWithProxyError = (failure: ProxyFailure = upSession?.failure ?? 'unreachable') => {
    if (client.headersSent || client.closed || client.destroyed) {
      resetClient(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    ownAnswer = true;
    const r = proxyErrorResponse(failure, reqGrpc, upSession?.failureDetail || error || 'stream failed');
    status = r.status;
    grpcStatus = r.grpcStatus;
    const now = performance.now();
    latencyMs = now - t0;
    rttMs = rttSample(upSession, t0, now);
    error ??= `upstream ${failure}`;
    responseDone = true;
    if (r.body === undefined) client.respond(r.headers, { endStream: true });
    else {
      client.respond(r.headers);
      client.end(r.body);
    }
    stopRequestBody(true);
  };

  // The response is complete but the client is still sending a body nobody will read:
  // RST_STREAM(NO_ERROR) tells it to stop (RFC 9113 8.1) instead of stalling on flow control.
  // After the proxy's own answer (`ownReply`) a body of declared length up to 64 KiB is drained
  // instead (util/http2-drain.ts says why); after the upstream's, its reset is passed on.
  // The reset waits for the response's END_STREAM to go out (stop-after-end.ts).
  const stopRequestBody = (ownReply = false) => {
    if (noBody || client.readableEnded || client.closed || client.destroyed) return;
    if (ownReply && drainUnread(client, reqHeaders['content-length'])) return;
    resetByProxy = true;
    resetAfterResponseEnd(client);
  };
  let upClosed = false;

  if (route !== null && lease === null) {
    // No endpoint to send to: 503 naming the Service (gRPC: UNAVAILABLE).
    const { namespace, name, port } = route.ref;
    const r = proxyErrorResponse('no-endpoints', reqGrpc, `no ready endpoints for Service ${namespace}/${name} port ${port}`);
    status = r.status;
    grpcStatus = r.grpcStatus;
    error = 'no ready endpoints';
    responseDone = true;
    if (r.body === undefined) client.respond(r.headers, { endStream: true });
    else {
      client.respond(r.headers);
      client.end(r.body);
    }
    stopRequestBody(true);
    return;
  }
  // The eager connection may be unusable or the pool full: dial on demand.
  try {
    // A Service endpoint its policy does not allow this client whole: in-process sessions only (context.ts INSPECTED).
    upSession = pool.acquire(destIp, destPort, ctx, limits.upstreamConnectTimeoutMs, lease !== null ? endpointPoolKey(ctx, destIp, destPort, lease.key) : undefined);
    upstream = upSession.request(upstreamRequestHeaders(reqHeaders), {
      endStream: noBody,
      waitForTrailers: true,
    });
  } catch (err) {
    error = (err as Error).message;
    respondWithProxyError();
    return;
  }
  const up = upstream;

  // Request body: the relay gives backpressure both ways (client window only reopens as the
  // upstream drains), so no body is held in memory beyond the stream buffers.
  let requestTrailers: http2.IncomingHttpHeaders | undefined;
  client.on('trailers', (t) => { requestTrailers = t; });
  up.on('wantTrailers', () => up.sendTrailers(requestTrailers ? downstreamHeaders(requestTrailers) : {}));
  if (!noBody) relay(client, up, (n) => { requestBytes += n; });
  else client.resume(); // nothing to read; flowing, its end comes and the stream can close

  up.on('error', (err: Error) => { error ??= err.message; });
  // 1xx (e.g. 103 Early Hints, 100 Continue) travel ahead of the final response.
  up.on('headers', (h) => {
    if (!client.closed && !client.headersSent) client.additionalHeaders(downstreamHeaders(h));
  });
  up.on('response', (h, flags) => {
    status = Number(h[':status']) || 0;
    const now = performance.now();
    latencyMs = now - t0;
    rttMs = rttSample(upSession, t0, now);
    grpc = reqGrpc || isGrpc(h['content-type']);
    if (client.closed || client.destroyed) return;
    const shape = responseShape(status, flags, reqHeaders[':method']);
    switch (shape.kind) {
      case 'bad-status':
        error ??= shape.error;
        respondWithProxyError('bad-response');
        up.close(NGHTTP2_PROTOCOL_ERROR);
        return;
      case 'trailers-only':
        grpcStatus = parseGrpcStatus(h['grpc-status']);
        responseDone = true;
        client.respond(downstreamHeaders(h), RESPOND_COMPLETE);
        return;
      case 'headers-only':
        responseDone = true;
        client.respond(downstreamHeaders(h), RESPOND_COMPLETE);
        up.resume(); // the upstream's end is read and dropped
        return;
    }
    client.respond(downstreamHeaders(h), RESPOND_WITH_BODY);
    // Only now: a 'data' listener added earlier would set the stream flowing before the client
    // stream may carry DATA, and DATA read in the same batch as the headers (as through a
    // tunnel, tunnel/upstream.ts) would be lost to the client.
    responseRelay = relay(up, client, (n) => { responseBytes += n; });
  });
  let responseRelay: Relay | undefined;
  let responseTrailers: http2.IncomingHttpHeaders | undefined;
  up.on('trailers', (t) => {
    responseTrailers = t;
    const g = parseGrpcStatus(t['grpc-status']);
    if (g !== undefined) grpcStatus = g;
  });
  // Runs after the last DATA frame went to the client; empty trailers end the stream with
  // an empty DATA frame (node's choice), so non-trailer responses end normally too.
  client.on('wantTrailers', () => {
    responseDone = true;
    client.sendTrailers(responseTrailers ? downstreamHeaders(responseTrailers) : {});
    // node:http2 submits trailers (and the empty END_STREAM DATA) on a setImmediate: a reset
    // now would go first and the client never see its response end. Queued behind them.
    if (upClosed) setImmediate(stopRequestBody);
  });

  up.once('close', () => {
    upClosed = true;
    if (client.closed || client.destroyed || ownAnswer) return;
    if (!client.headersSent) {
      const end = unansweredClose(up, upSession);
      if (end.kind === 'failed') respondWithProxyError();
      else {
        error ??= end.error;
        resetClient(end.code);
      }
      return;
    }
    const end = answeredClose(up, responseDone);
    if (end.kind === 'reset') {
      error ??= end.error;
      responseRelay?.stop();
      resetClient(end.code);
    } else if (end.kind === 'complete') setImmediate(stopRequestBody); // behind the trailers, as above
  });
}

