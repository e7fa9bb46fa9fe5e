// Pure header logic for the HTTP/2 forwarder: what crosses the proxy, what a proxy-made
// error response looks like, and how a finished exchange is classified.
import type * as http2 from 'node:http2';
import { nodeHttp2 } from '../../util/builtins.ts';

type InHeaders = http2.IncomingHttpHeaders;
type OutHeaders = http2.OutgoingHttpHeaders;

// Connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2); a peer that sends
// them anyway must not make us emit a malformed message upstream.
const hopByHop = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings',
]);

function copyWithout(src: InHeaders, drop: (name: string) => boolean): OutHeaders {
  const out: OutHeaders = {};
  for (const name of Object.keys(src)) {
    if (drop(name)) continue;
    const v = src[name];
    if (v !== undefined) out[name] = v;
  }
  // Keep HPACK never-index marking (e.g. authorization) on the other hop too.
  // Headers from node:http2, so it is loaded already; taken here, not at import (builtins.ts).
  const key = nodeHttp2().sensitiveHeaders;
  const sensitive = (src as Record<symbol, unknown>)[key];
  if (Array.isArray(sensitive) && sensitive.length > 0) {
    (out as Record<symbol, unknown>)[key] = sensitive.filter((n) => typeof n === 'string' && !drop(n.toLowerCase()));
  }
  return out;
}

/**
 * A request header as routes and the inbound policy read it, the same as the HTTP/1 reader
 * (route-request.ts headerValue): a repeated one joined by ", ", an empty one '' (present), an
 * absent one undefined. HTTP/2 carries Host as :authority (RFC 9113 8.3.1; Node, curl and grpc-go
 * send no host field), so a match on host reads :authority, which wins over a differing host field:
 * it names the target the pod is asked for, and a host field must not get a request past a host
 * match (RFC 9113: malformed).
 */
export function requestHeader(h: http2.IncomingHttpHeaders, name: string): string | undefined {
  const v = name === 'host' ? h[':authority'] ?? h.host : h[name];
  return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v);
}

/** A header's value as one string: a repeated one joined by commas, an absent one ''. */
export function headerString(v: string | string[] | undefined): string {
  return Array.isArray(v) ? v.join(',') : (v ?? '');
}

/**
 * Request headers for the upstream hop. `te` is the one connection-specific field HTTP/2 allows,
 * with the value `trailers` only (RFC 9113 8.2.2): nghttp2 takes it in any case (the token is
 * case-insensitive), node:http2 sends only the exact `trailers` and throws for any other spelling
 * (the request answered 502), so it goes on spelled so. Any other value nghttp2 refuses before us.
 */
export function upstreamRequestHeaders(h: InHeaders): OutHeaders {
  const out = copyWithout(h, (n) => hopByHop.has(n) || (n === 'te' && !isTrailersTe(h.te)));
  if (out.te !== undefined) out.te = 'trailers';
  // A request may carry Host instead of :authority; node would otherwise fill in the
  // upstream IP, and the server would see a different authority than the client sent.
  if (out[':authority'] === undefined && typeof h.host === 'string') out[':authority'] = h.host;
  return out;
}

function isTrailersTe(te: string | string[] | undefined): boolean {
  return typeof te === 'string' && te.trim().toLowerCase() === 'trailers';
}

/** Response headers (and trailers) for the client hop. */
export function downstreamHeaders(h: InHeaders): OutHeaders {
  return copyWithout(h, (n) => hopByHop.has(n));
}

/**
 * A response without content whatever the upstream's framing (204, 205, 304, or to HEAD): node:http2
 * ends the client's response with its HEADERS itself, and no 'wantTrailers' comes.
 */
export function headersOnly(status: number, method: string | string[] | undefined): boolean {
  return status === 204 || status === 205 || status === 304 || method === 'HEAD';
}

export function isGrpc(contentType: string | string[] | undefined): boolean {
  return typeof contentType === 'string' && /^application\/grpc(\+|;|$)/i.test(contentType.trim());
}

export function parseGrpcStatus(v: string | string[] | undefined): number | undefined {
  if (typeof v !== 'string' || !/^\d{1,2}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

/**
 * Why the proxy answers a stream itself: the upstream unreachable, no ready endpoint, no route
 * of the Service matches (404), a route's backend cannot be used (500), a route's timeout (504),
 * the destination's inbound policy denies it (403, gRPC PERMISSION_DENIED), the upstream answered a
 * :status outside 200-599 (502, gRPC INTERNAL: RFC 9110 15 reads it as a 5xx; node:http2 cannot send it).
 */
export type ProxyFailure = 'unreachable' | 'connect-timeout' | 'no-endpoints' | 'no-route' | 'backend' | 'timeout' | 'forbidden' | 'bad-response';

export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_INTERNAL = 13;
export const GRPC_UNIMPLEMENTED = 12;
export const GRPC_UNAVAILABLE = 14;
export const GRPC_PERMISSION_DENIED = 7;

/** The status a route's failure (or a response the proxy cannot pass on) answers with, and its gRPC equivalent. */
const ROUTE_FAILURES: Partial<Record<ProxyFailure, [number, number]>> = {
  'no-route': [404, GRPC_UNIMPLEMENTED],
  backend: [500, GRPC_INTERNAL],
  timeout: [504, GRPC_DEADLINE_EXCEEDED],
  forbidden: [403, GRPC_PERMISSION_DENIED],
  'bad-response': [502, GRPC_INTERNAL],
};

export interface SyntheticResponse {
  headers: OutHeaders;
  status: number;
  grpcStatus?: number;
  /** A text body (plain HTTP only); absent: the headers end the stream. */
  body?: string;
}

/**
 * The response the proxy sends when the upstream could not be reached. gRPC callers get a
 * trailers-only response with UNAVAILABLE in both cases: the request never reached the
 * server, so the call is safe to retry, which is what UNAVAILABLE tells a gRPC client;
 * DEADLINE_EXCEEDED would claim the caller's own deadline passed. Plain HTTP gets 502 or 504.
 */
export function proxyErrorResponse(failure: ProxyFailure, grpc: boolean, detail: string): SyntheticResponse {
  const errorHeader = { 'mesh-proxy-error': failure };
  const routed = ROUTE_FAILURES[failure];
  if (routed !== undefined) {
    // A route's own answers: gRPC callers get the matching status, trailers-only; HTTP a text body.
    const [status, code] = routed;
    if (grpc) {
      return { status: 200, grpcStatus: code, headers: { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(detail), ...errorHeader } };
    }
    const body = detail + '\n';
    return { status, body, headers: { ':status': status, 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), ...errorHeader } };
  }
  if (grpc) {
    return {
      status: 200,
      grpcStatus: GRPC_UNAVAILABLE,
      headers: {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(GRPC_UNAVAILABLE),
        'grpc-message': encodeGrpcMessage(failure === 'no-endpoints' ? detail : `upstream ${failure}: ${detail}`),
        ...errorHeader,
      },
    };
  }
  if (failure === 'no-endpoints') {
    // As a load balancer without backends answers; the body names the Service.
    const body = detail + '\n';
    return { status: 503, body, headers: { ':status': 503, 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), ...errorHeader } };
  }
  const status = failure === 'connect-timeout' ? 504 : 502;
  return { status, headers: { ':status': status, 'content-length': '0', ...errorHeader } };
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec). */
export function encodeGrpcMessage(msg: string): string {
  return Array.from(Buffer.from(msg, 'utf8'), (b) =>
    b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0'),
  ).join('');
}

/** Linkerd's rule: HTTP succeeds below 500; gRPC succeeds only with grpc-status 0. */
export function isSuccess(status: number, grpc: boolean, grpcStatus: number | undefined): boolean {
  if (status <= 0 || status >= 500) return false;
  return grpc ? grpcStatus === 0 : true;
}
