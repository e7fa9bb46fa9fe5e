// HTTP/2's error codes and frame flags the forwarder uses (RFC 9113 7 and 6.2), ours so that a
// module reading them need not load node:http2 (src/util/builtins.ts, nodeHttp2()); named as
// node:http2's constants, which test/http2-codes.test.ts checks they equal.
export const NGHTTP2_NO_ERROR = 0x0;
export const NGHTTP2_PROTOCOL_ERROR = 0x1;
export const NGHTTP2_INTERNAL_ERROR = 0x2;
export const NGHTTP2_REFUSED_STREAM = 0x7;
export const NGHTTP2_CANCEL = 0x8;
export const NGHTTP2_ENHANCE_YOUR_CALM = 0xb;
/** HEADERS and DATA: the last frame of the stream from this side. */
export const NGHTTP2_FLAG_END_STREAM = 0x1;
