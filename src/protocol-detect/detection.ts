/** The verdict over a connection's first bytes. Re-exported unchanged by index.ts. */
export type Detection =
  | { kind: 'need-more' } // ask the caller for more bytes
  | { kind: 'http1'; method: string; target: string; version: '1.0' | '1.1' }
  | { kind: 'http2' } // prior-knowledge preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
  | { kind: 'tls'; sni: string | null; alpn: string[] } // TLS ClientHello
  | { kind: 'opaque'; reason: string };

/**
 * Every reason an opaque verdict can carry. A closed set so it is safe as a
 * metrics label; docs/protocol-detect.md says what each one means.
 */
export const OPAQUE_REASONS = [
  'not-http', // bytes cannot be the start of an HTTP/1 request line
  'method-too-long', // method token longer than MAX_METHOD_BYTES
  'bad-target', // request-target not in a form its method allows
  'http-version', // HTTP/x.y other than 1.0 or 1.1 (0.9, 2.0, 1.2...)
  'request-line-too-long', // no end of line within MAX_REQUEST_LINE_BYTES
  'h2-preface-mismatch', // starts like the HTTP/2 preface, then diverges
  'not-tls', // first byte 22 but not a ClientHello record
  'max-bytes', // maxBytes seen without a verdict
  'invalid-input', // not a Uint8Array (only reachable from untyped callers)
] as const;

export type OpaqueReason = (typeof OPAQUE_REASONS)[number];

export const needMore = (): Detection => ({ kind: 'need-more' });
export const opaque = (reason: OpaqueReason): Detection => ({ kind: 'opaque', reason });
