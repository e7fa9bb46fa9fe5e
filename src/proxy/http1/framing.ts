// Pure message-framing and persistence rules (RFC 9112 6 and 9) for a forwarder that passes
// heads through unchanged: it must reach the same conclusions as both peers do.

import { HeadError, type RequestHead, type ResponseHead } from './parse-head.ts';

/** How a message body is delimited. */
export type BodyKind =
  | 'none' // no body
  | 'length' // Content-Length bytes
  | 'chunked' // chunked transfer coding
  | 'close' // until the upstream closes (responses only)
  | 'tunnel' // the connection becomes a raw tunnel after this head (101, 2xx to CONNECT)
  | 'interim'; // a 1xx head; the final response is still to come

/** Request body framing; throws HeadError on framing a proxy must refuse (smuggling vectors). */
export function requestBodyKind(req: RequestHead): BodyKind {
  if (req.hasTransferEncoding) {
    // RFC 9112 6.1: both headers is an attack or a broken client: refuse, never guess.
    if (req.contentLength >= 0) throw new HeadError('both Content-Length and Transfer-Encoding');
    if (req.versionMinor === 0) throw new HeadError('Transfer-Encoding in HTTP/1.0');
    if (!req.chunked) throw new HeadError('request Transfer-Encoding not ending in chunked');
    return 'chunked';
  }
  return req.contentLength > 0 ? 'length' : 'none';
}

/** Response body framing given the request it answers; throws HeadError on framing to refuse. */
export function responseBodyKind(req: RequestHead, res: ResponseHead): BodyKind {
  const s = res.status;
  if (s < 200) {
    if (s === 101) {
      if (!isUpgradeRequest(req)) throw new HeadError('101 without an Upgrade request');
      return 'tunnel';
    }
    return 'interim';
  }
  if (req.method === 'CONNECT' && s < 300) return 'tunnel';
  if (req.method === 'HEAD' || s === 204 || s === 304) return 'none';
  if (res.hasTransferEncoding) {
    // TE overrides CL; forwarding both would let the client frame differently from us.
    if (res.contentLength >= 0) throw new HeadError('both Content-Length and Transfer-Encoding');
    return res.chunked ? 'chunked' : 'close';
  }
  if (res.contentLength >= 0) return res.contentLength > 0 ? 'length' : 'none';
  return 'close';
}

export function isUpgradeRequest(req: RequestHead): boolean {
  return req.upgrade !== '' && req.connUpgrade;
}

/** Whether the sender of this head expects the connection to persist after the message. */
export function wantsKeepAlive(head: RequestHead | ResponseHead): boolean {
  if (head.connClose) return false;
  return head.versionMinor === 1 || head.connKeepAlive;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** A bodiless idempotent request may be re-sent when a reused connection died before answering. */
export function isRetryable(req: RequestHead, bodyKind: BodyKind): boolean {
  return bodyKind === 'none' && IDEMPOTENT.has(req.method);
}
