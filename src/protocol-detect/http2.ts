import { needMore, type Detection } from './detection.ts';

/** RFC 9113 §3.4: the client connection preface for prior-knowledge HTTP/2. */
export const H2_PREFACE = new TextEncoder().encode('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * http2 for the full preface, need-more for a proper prefix of it, null once
 * the bytes diverge (the caller then tries HTTP/1, which rejects "PRI").
 */
export function detectHttp2(buf: Uint8Array): Detection | null {
  const n = Math.min(buf.length, H2_PREFACE.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== H2_PREFACE[i]) return null;
  }
  return n === H2_PREFACE.length ? { kind: 'http2' } : needMore();
}
