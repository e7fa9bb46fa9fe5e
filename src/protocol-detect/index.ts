/**
 * Protocol detection over a client connection's first bytes: pure, never
 * throws, and each call reads at most maxBytes of its input.
 * See docs/protocol-detect.md for the verdicts and the opaque reasons.
 */
import { needMore, opaque } from './detection.ts';
import type { Detection } from './detection.ts';
import { detectHttp1 } from './http1.ts';
import { detectHttp2 } from './http2.ts';
import { detectTls } from './tls.ts';
import { CONTENT_TYPE_HANDSHAKE } from './tls-records.ts';

export type { Detection, OpaqueReason } from './detection.ts';
export { OPAQUE_REASONS } from './detection.ts';
export { MAX_METHOD_BYTES, MAX_REQUEST_LINE_BYTES } from './http1.ts';

export const DEFAULT_MAX_DETECT_BYTES = 16384;

/** Called again with all bytes so far each time more arrive. */
export function detect(buf: Uint8Array, maxBytes?: number): Detection {
  if (!(buf instanceof Uint8Array)) return opaque('invalid-input');
  const max = budget(maxBytes);
  const view = buf.length > max ? buf.subarray(0, max) : buf;
  if (view.length === 0) return needMore();

  // 22 is not a tchar, so the first byte alone picks TLS or HTTP.
  const verdict =
    view[0] === CONTENT_TYPE_HANDSHAKE ? detectTls(view, max) : (detectHttp2(view) ?? detectHttp1(view));
  if (verdict.kind === 'need-more' && view.length >= max) return opaque('max-bytes');
  return verdict;
}

/** A usable byte budget: a positive integer, else the default. */
function budget(maxBytes: number | undefined): number {
  if (maxBytes === undefined || !Number.isFinite(maxBytes) || maxBytes < 1) return DEFAULT_MAX_DETECT_BYTES;
  return Math.floor(maxBytes);
}
