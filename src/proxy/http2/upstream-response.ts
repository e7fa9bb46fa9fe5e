// How the two forwarders read an upstream stream's response and its close: forward-stream.ts
// (one attempt) and routed-stream.ts (attempts, retries) differ in what they do next, not in
// what the upstream's frames mean, so that is said once here.
import type * as http2 from 'node:http2';
import { headersOnly } from './headers.ts';
import type { UpstreamSession } from './pool.ts';
import { endedByReset } from './relay.ts';
import { NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } from './codes.ts';

export type ResponseShape =
  /** Not a status node:http2 can send: the proxy answers 502 and resets the upstream stream (error says why). */
  | { kind: 'bad-status'; error: string }
  /** The headers carried END_STREAM (how gRPC sends most errors): the grpc-status is in them. */
  | { kind: 'trailers-only' }
  /** 204, 205, 304 or a HEAD's response: complete with its headers, whatever the upstream sends after. */
  | { kind: 'headers-only' }
  | { kind: 'body' };

// One object per shape, not per response (this runs for every HTTP/2 response, issue 16).
const TRAILERS_ONLY: ResponseShape = { kind: 'trailers-only' };
const HEADERS_ONLY: ResponseShape = { kind: 'headers-only' };
const BODY: ResponseShape = { kind: 'body' };
const COMPLETE: AnsweredClose = { kind: 'complete' };
const PENDING: AnsweredClose = { kind: 'pending' };
const FAILED: UnansweredClose = { kind: 'failed' };

export function responseShape(status: number, flags: number, method: string | string[] | undefined): ResponseShape {
  // nghttp2 takes any three digits, node's respond() only 200-599 (it threw: the process's
  // uncaught exception). RFC 9110 15: an unknown status is processed as a 5xx.
  if (status < 200 || status > 599) return { kind: 'bad-status', error: `upstream answered :status ${status}, outside 200-599` };
  if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) return TRAILERS_ONLY;
  // The upstream ends these later (an empty DATA frame): node:http2 ends the client's response
  // with the headers and never asks for trailers, so the exchange is complete at the headers,
  // not at 'wantTrailers' (which would never come: a client reset, a failure, otherwise).
  if (headersOnly(status, method)) return HEADERS_ONLY;
  return BODY;
}

/** respond() options for a response the headers complete, and for one a body and trailers follow. */
export const RESPOND_COMPLETE = { endStream: true, sendDate: false } as http2.ServerStreamResponseOptions;
export const RESPOND_WITH_BODY = { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions;

export type AnsweredClose =
  /** Reset the client's stream with code; the response is not whole. */
  | { kind: 'reset'; code: number; error: string }
  /** The response went out whole: only the request body may still be flowing. */
  | { kind: 'complete' }
  /** Closed cleanly with the response's end still on its way to the client ('wantTrailers' completes it). */
  | { kind: 'pending' };

/**
 * The upstream stream closed after the client's response headers were sent. responseDone: the
 * response's end reached the client.
 */
export function answeredClose(up: http2.ClientHttp2Stream, responseDone: boolean): AnsweredClose {
  const code = up.rstCode ?? NGHTTP2_NO_ERROR;
  if (code !== NGHTTP2_NO_ERROR) return { kind: 'reset', code, error: `upstream reset (code ${code})` };
  // RST_STREAM(NO_ERROR) before the response's END_STREAM: the body is cut short. Passed on as
  // NO_ERROR, a client (node:http2 among them) could take it for a complete body.
  if (!responseDone && endedByReset(up)) return { kind: 'reset', code: NGHTTP2_INTERNAL_ERROR, error: 'upstream reset (code 0) before the end of its response' };
  return responseDone ? COMPLETE : PENDING;
}

export type UnansweredClose =
  /** The connection failed, or the stream closed cleanly with no response: the proxy answers (502/504, gRPC UNAVAILABLE). */
  | { kind: 'failed' }
  /** The server reset the stream: passed on with its code (REFUSED_STREAM lets the client retry, RFC 9113 8.7). */
  | { kind: 'reset'; code: number; error: string };

/** The upstream stream closed before the client was answered. */
export function unansweredClose(up: http2.ClientHttp2Stream, session: UpstreamSession | null | undefined): UnansweredClose {
  const code = up.rstCode ?? NGHTTP2_NO_ERROR;
  if (session?.failure !== undefined || session?.session.destroyed === true || code === NGHTTP2_NO_ERROR) return FAILED;
  return { kind: 'reset', code, error: `upstream reset (code ${code})` };
}
