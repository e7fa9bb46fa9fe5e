// A reply sent before the request's body was read (the controller's refusals and 404s, the
// proxy's own 403/404/502/503/504) to a client still sending a body. RFC 9113 §8.1 lets a server
// answer first and then reset the stream with NO_ERROR, and node:http2 does so by itself as soon
// as the reply is out when nobody reads the body; the RFC says that must not cost the client the
// reply, but curl 7.88 exits 92 ("Stream error in the HTTP/2 framing layer") without printing it
// when its body was still on the way (from a shell loop, 177 of 300 POSTs). So a body of declared
// length up to DRAIN_LIMIT (curl's --data) is read and dropped, and the stream ends when it does.
// Types only from node:http2: a proxy worker loads it on first use (util/builtins.ts).
import type * as http2 from 'node:http2';

/** The largest declared body of an early-answered request that is read and dropped rather than reset. */
export const DRAIN_LIMIT = 64 * 1024;
/** How long a client that declared a body may take to send it after the reply. */
export const DRAIN_GRACE_MS = 10_000;

/**
 * Call once the reply is written (ended) and nothing will read the request's body: reads the rest
 * of a body of declared length (`declared`, the request's content-length) up to DRAIN_LIMIT and
 * drops it; a stream not gone within `graceMs` is destroyed (RST_STREAM NO_ERROR if still open).
 * Returns false for a body of no declared length (a stream: it may never end) or over
 * DRAIN_LIMIT: the caller resets it (RST_STREAM NO_ERROR), as node:http2 does for one nobody
 * reads. A 'data' listener of the caller still sees the chunks, and must not pause the stream.
 */
export function drainUnread(stream: http2.ServerHttp2Stream, declared: string | undefined, graceMs = DRAIN_GRACE_MS): boolean {
  if (stream.readableEnded || stream.destroyed) return true;
  const length = Number(declared);
  if (declared === undefined || !Number.isSafeInteger(length) || length > DRAIN_LIMIT) return false;
  stream.resume();
  // destroy(), not close(): node keeps a stream closed with NO_ERROR until its readable side
  // ends, which unread data held by a pause never does, so close() alone could leave it for good.
  const timer = setTimeout(() => stream.destroy(), graceMs).unref();
  stream.once('close', () => clearTimeout(timer));
  return true;
}
