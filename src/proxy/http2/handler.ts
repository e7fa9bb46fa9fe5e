// Terminates HTTP/2 (prior knowledge) client connections with one node:http2 server object
// that never listens: each redirected socket is handed to it as if it had been accepted.
import type * as http2 from 'node:http2';
import { endpointPoolKey, type ConnContext, type ProtocolHandler, type ProxyLimits } from '../context.ts';
import { Http2SessionPool } from './pool.ts';
import { ScopedPools } from '../scoped-pools.ts';
import { ResetBudget } from './reset-budget.ts';
import { forwardStream } from './forward-stream.ts';
import { isGrpc, isSuccess, proxyErrorResponse, headerString, requestHeader } from './headers.ts';
import type { AuthzOutcome } from '../../telemetry/events.ts';
import { IdleTimer } from '../../util/idle-timer.ts';
import { drainUnread } from '../../util/http2-drain.ts';
import { resetAfterResponseEnd } from './stop-after-end.ts';
import { nodeHttp2 } from '../../util/builtins.ts';
import { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_FLAG_END_STREAM } from './codes.ts';

export interface Http2HandlerOptions {
  pool?: Http2SessionPool;
  /** SETTINGS_MAX_CONCURRENT_STREAMS we advertise to clients. */
  maxConcurrentStreams?: number;
  /** Client-reset streams allowed per session within resetWindowMs before GOAWAY. */
  maxResetsPerWindow?: number;
  resetWindowMs?: number;
}

interface ClientConn {
  ctx: ConnContext;
  pool: Http2SessionPool;
  limits: ProxyLimits;
  resets: ResetBudget;
  session?: http2.ServerHttp2Session;
  /** Open streams; a connection without any for idleTimeoutMs is closed gracefully (GOAWAY). */
  idle: IdleTimer;
  /** The 'close' listener of every stream of this connection: one function, not one per stream. */
  streamClosed: () => void;
}

export function createHttp2Handler(opts: Http2HandlerOptions = {}): ProtocolHandler {
  const shared = opts.pool ?? new Http2SessionPool();
  // One pool per scope (ctx.poolScope, context.ts; see http1/index.ts).
  const scoped = new ScopedPools(() => new Http2SessionPool());
  const poolFor = (scope: string | undefined): Http2SessionPool => (scope ? scoped.get(scope) : shared);
  const maxResets = opts.maxResetsPerWindow ?? 1000;
  const windowMs = opts.resetWindowMs ?? 10_000;
  let adopting: ClientConn | undefined;
  // Made on the first connection: node:http2 (and node:tls) loads then, not in an idle worker.
  let h2: http2.Http2Server | undefined;
  const makeServer = (): http2.Http2Server => {
    const server = nodeHttp2().createServer({
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams ?? 100, enablePush: false },
      // A route's header modifier may `add` a field node:http2 holds single-valued (content-type,
      // location, user-agent...): sent as another field, as HTTP/1 and Envoy do, not thrown
      // from respond() (in an event listener: the process's uncaught exception). pool.ts: the same upstream.
      strictSingleValueFields: false,
      // nghttp2's own token bucket is the native backstop behind ResetBudget: it sees resets
      // before JS does. Keep it looser than ours so our GOAWAY (ENHANCE_YOUR_CALM) normally wins.
      streamResetBurst: maxResets * 2,
      streamResetRate: Math.max(1, Math.ceil((maxResets * 2 * 1000) / windowMs)),
    });
    // Unhandled 'error' on any of these would crash the agent; node already answers protocol
    // errors with GOAWAY and tears the session down.
    server.on('sessionError', () => {});
    server.on('error', () => {});
    server.on('session', (session) => {
      session.on('error', () => {});
      const conn = adopting;
      if (!conn) {
        session.destroy();
        return;
      }
      conn.session = session;
      // The proxy draining: GOAWAY, the streams in flight finish, new ones go to a new connection.
      const offDrain = conn.ctx.drain?.onDrain(() => {
        if (!session.closed && !session.destroyed) session.close();
      });
      session.once('close', () => {
        conn.idle.stop();
        offDrain?.();
      });
      const onClientReset = () => {
        if (conn.resets.record(performance.now()) && !session.destroyed) { // monotonic: the wall clock may step
          session.destroy(new Error('client stream reset rate exceeded'), NGHTTP2_ENHANCE_YOUR_CALM);
        }
      };
      session.on('stream', (stream, headers, flags) => {
        stream.on('error', () => {});
        // HEADERS and RST_STREAM in one read (rapid reset): never open an upstream stream.
        if (stream.closed || stream.destroyed) {
          onClientReset();
          return;
        }
        conn.idle.enter();
        stream.once('close', conn.streamClosed);
        const noBody = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
        let ctx = conn.ctx;
        if (ctx.authz) {
          // The destination's inbound policy, per request, before any upstream sees it (docs/policy.md).
          const outcome = ctx.authz.request(headerString(headers[':method']), headerString(headers[':path']), (n) => requestHeader(headers, n));
          if (!outcome.allowed) {
            denyStream(stream, headers, noBody, ctx, outcome);
            return;
          }
          ctx = { ...ctx, endpoints: { ...ctx.endpoints, authz: outcome } };
        }
        forwardStream(stream, headers, noBody, ctx, conn.pool, conn.limits, { onClientReset });
      });
    });
    return server;
  };

  return (ctx, head, upstream, limits) => {
    const pool = poolFor(ctx.poolScope);
    const idle = new IdleTimer(limits.idleTimeoutMs, () => conn.session?.close());
    const conn: ClientConn = {
      ctx, pool, limits, resets: new ResetBudget(maxResets, windowMs), idle, streamClosed: () => idle.leave(),
    };
    if (upstream) {
      // For a Service the eager connection went to the endpoint the dispatcher picked: it joins
      // that endpoint's sessions; each stream then picks its own endpoint (forward-stream.ts).
      const lease = ctx.lease ?? null;
      ctx.lease = null;
      if (lease !== null) {
        pool.offer(lease.ep.ip, lease.ep.port, upstream, limits.upstreamConnectTimeoutMs, endpointPoolKey(ctx, lease.ep.ip, lease.ep.port, lease.key));
        ctx.route!.balancer.done(lease, null, 'cancel');
      } else pool.offer(ctx.endpoints.destIp, ctx.endpoints.destPort, upstream, limits.upstreamConnectTimeoutMs);
    }
    const socket = ctx.client;
    socket.on('error', () => {});
    // The bytes the dispatcher read (preface onward) go back in front of the socket's
    // stream; node:http2 reads them before the rest (checked by test/http2-handler.test.ts).
    if (head.length > 0) socket.unshift(head);
    adopting = conn;
    try {
      (h2 ??= makeServer()).emit('connection', socket);
    } finally {
      adopting = undefined;
    }
  };
}

/** A request the inbound policy denies: 403 (gRPC: PERMISSION_DENIED, trailers-only), reported with the decision. */
function denyStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, noBody: boolean, ctx: ConnContext, outcome: AuthzOutcome): void {
  const startedAt = Date.now();
  const t0 = performance.now();
  const grpc = isGrpc(headers['content-type']);
  const r = proxyErrorResponse('forbidden', grpc, 'forbidden: the destination\'s inbound policy does not allow this request');
  if (r.body === undefined) stream.respond(r.headers, { endStream: true });
  else {
    stream.respond(r.headers);
    stream.end(r.body);
  }
  // A body nobody will read: drained if declared and small, else RST_STREAM(NO_ERROR) once the
  // response's END_STREAM is out (util/http2-drain.ts, stop-after-end.ts).
  if (!noBody && !drainUnread(stream, headers['content-length'])) resetAfterResponseEnd(stream);
  try {
    ctx.telemetry.request({
      ...ctx.endpoints,
      authz: outcome,
      connId: ctx.connId,
      protocol: 'http2',
      authority: headerString(headers[':authority']) || headerString(headers.host),
      method: headerString(headers[':method']),
      path: headerString(headers[':path']),
      status: r.status,
      ...(grpc ? { grpcStatus: r.grpcStatus } : {}),
      success: isSuccess(r.status, grpc, r.grpcStatus),
      latencyMs: performance.now() - t0,
      durationMs: performance.now() - t0,
      requestBytes: 0,
      responseBytes: r.body === undefined ? 0 : Buffer.byteLength(r.body),
      error: 'forbidden by the inbound policy',
      startedAt,
    });
  } catch {
    // a broken sink must not take the proxy down
  }
}
