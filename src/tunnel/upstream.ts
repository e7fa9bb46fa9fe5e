// A stream inside a tunnel, given to the forwarders where they expect a TCP socket. They are
// written against net.Socket; what they use of it (audited: src/proxy/opaque.ts, dispatch.ts,
// tls-passthrough.ts, http1/connection.ts and pool.ts, http2/pool.ts) is a Duplex with half-close
// plus `connecting` and a 'connect' event (HTTP/1's connect timer, the dispatcher's eager race),
// `setNoDelay`, `setTimeout` and 'timeout' (the HTTP/1 pool), `resetAndDestroy` (abortSocket), and
// `_handle` only through kernel-splice.ts's socketFd, which finds none and so never splices a
// tunnelled connection (the bytes are encrypted in user space). An HTTP/2 stream has all of that
// but `connecting`, 'connect', `setNoDelay` and `resetAndDestroy`, which this module adds. fin-now.ts
// touches only the client's socket, never an upstream. So one cast, here, instead of widening
// net.Socket in every forwarder.
import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import { Duplex, type Readable } from 'node:stream';
import { subscribe } from 'node:diagnostics_channel';
import { countBytes } from '../proxy/byte-count.ts';

type Decorated = http2.Http2Stream & { connecting: boolean; setNoDelay(): unknown; resetAndDestroy(): unknown };

function noDelay(this: Decorated): Decorated {
  return this;
}

/**
 * RST_STREAM: the peer's side of the tunnel resets its TCP leg. Not close(code): that ends the
 * writable side first, and the peer reads the END_STREAM it sends as a FIN (its client sees a
 * clean end) before the RST_STREAM arrives. Destroyed with an error, the stream sends RST_STREAM
 * (INTERNAL_ERROR) alone; the error is ours, not news, so it is not reported.
 */
function resetStream(this: Decorated): Decorated {
  if (this.destroyed) return this;
  if (this.closed) {
    this.destroy();
    return this;
  }
  this.on('error', ignoreReset);
  this.destroy(STREAM_RESET);
  return this;
}

const STREAM_RESET = Object.assign(new Error('reset by the proxy'), { code: 'ECONNRESET' });
function ignoreReset(): void {}

const resetByPeer = (): Error => Object.assign(new Error('stream reset by the other agent'), { code: 'ECONNRESET' });

/**
 * The peer's RST_STREAM is the TCP reset it stands for: the stream fails with ECONNRESET and the
 * forwarders reset the other leg. Node reports one with NO_ERROR (what a stream's destroy() sends)
 * only as 'aborted' (our side was still open), then ends the stream and closes it cleanly:
 * forwarded as a FIN, the other leg took a cut connection for a whole one, and what it sent after
 * was read and thrown away for as long as it lasted. With our side ended first there is no
 * 'aborted' at all: cutShort() below.
 *
 * One exception, RFC 9113 8.1: NO_ERROR after the peer's END_STREAM means "complete, stop
 * sending" (a server that has sent its whole answer). Node says 'aborted' then too, whatever our
 * reader has taken: destroyed there, a reader paused by backpressure (a slow client) lost the
 * buffered answer and its FIN. Left alone, node delivers both and closes the stream after 'end';
 * it ends our writable side itself (nothing more goes out), and the forwarders drop what their
 * other leg sends after (a writable-ended upstream takes nothing).
 */
function resetOnAbort(stream: http2.Http2Stream): void {
  tunnelStreams.add(stream);
  watchCloses();
  stream.once('aborted', () => {
    if (stream.destroyed || stoppedAfterEnd(stream)) return;
    stream.destroy(resetByPeer());
  });
}

/** The peer's reset is NO_ERROR and came after its END_STREAM (EOF already read, 'end' maybe not yet emitted). */
function stoppedAfterEnd(stream: http2.Http2Stream): boolean {
  // `_readableState.ended` is Node's, not its API: without it, a reset stays a reset.
  return stream.rstCode === NO_ERROR && (stream as Closing)._readableState?.ended === true;
}
const NO_ERROR = 0;

// A peer's RST_STREAM(NO_ERROR) after our END_STREAM and before its own: its direction was cut
// (RFC 9113 8.1 reads NO_ERROR as "complete" only after the sender's END_STREAM), but node:http2
// emits no 'aborted' (our side is not open) and ends the readable side as if the peer had sent its
// END_STREAM: a FIN for the other leg. Only the order tells the two apart, and only node's
// stream-close channels run while it is still there (as relay.ts for the HTTP/2 forwarders): the
// stream closes with its readable side not ended. Destroyed there, before the 'end' node queues
// next, it fails with ECONNRESET like any other reset. Our own destroy() publishes too, with the
// stream already destroyed: not the peer's doing (the tunnel never closes a stream with close()).
const tunnelStreams = new WeakSet<object>();
let watching = false;

type Closing = Readable & { rstCode?: number; _readableState?: { ended?: boolean } };

function cutShort(msg: unknown): void {
  const s = (msg as { stream?: Closing } | undefined)?.stream;
  if (s === undefined || !tunnelStreams.has(s) || s.destroyed) return;
  // `_readableState.ended` (EOF read, before 'end') is Node's, not its API: without it, never cut.
  if (s.rstCode === NO_ERROR && s._readableState?.ended === false && !s.readableEnded) s.destroy(resetByPeer());
}

function watchCloses(): void {
  if (watching) return;
  watching = true;
  subscribe('http2.client.stream.close', cutShort);
  subscribe('http2.server.stream.close', cutShort);
}

/** What a refused CONNECT becomes: the errno a direct connect would have given, so error labels stay meaningful. */
export function errnoForStatus(status: number): string {
  if (status === 403) return 'EACCES';
  if (status === 504) return 'ETIMEDOUT';
  if (status === 502 || status === 503) return 'ECONNREFUSED';
  return 'EPROTO';
}

/**
 * The client end: `connecting` until the destination's agent answers the CONNECT; 200 emits
 * 'connect', anything else an error named like the connect() failure it stands for.
 */
export function clientUpstream(stream: http2.ClientHttp2Stream, describe: string): net.Socket {
  const s = stream as unknown as Decorated;
  s.connecting = true;
  s.setNoDelay = noDelay;
  s.resetAndDestroy = resetStream;
  resetOnAbort(stream);
  stream.once('response', (headers) => {
    const status = Number(headers[':status']);
    if (status === 200) {
      s.connecting = false;
      stream.emit('connect');
      return;
    }
    const reason = typeof headers['mesh-agent-error'] === 'string' ? `: ${headers['mesh-agent-error']}` : '';
    const err = Object.assign(new Error(`tunnel to ${describe} refused with ${status}${reason}`), { code: errnoForStatus(status) });
    stream.destroy(err);
  });
  return s as unknown as net.Socket;
}

/**
 * The server end (the destination's agent): a connected "client socket" for forwardOpaque, and
 * for the proxy's handlers when the pod's inbound policy decides request by request (they count
 * a handled connection's bytes from the client socket's bytesRead and bytesWritten, which a
 * stream has not: proxy/byte-count.ts counts them).
 */
export function serverDownstream(stream: http2.ServerHttp2Stream): net.Socket {
  const s = stream as unknown as Decorated;
  s.connecting = false;
  s.setNoDelay = noDelay;
  s.resetAndDestroy = resetStream;
  resetOnAbort(stream);
  countBytes(stream);
  return s as unknown as net.Socket;
}

/**
 * An upstream that fails as a connect() would, for a tunnel that cannot be opened (no certificate
 * for the source): the forwarders report the reason like any connect error (502, reset).
 */
export function failedUpstream(message: string, code: string): net.Socket {
  const d = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } }) as Duplex & { connecting: boolean; setNoDelay(): unknown; resetAndDestroy(): unknown; setTimeout(): unknown };
  d.connecting = true;
  d.setNoDelay = () => d;
  d.setTimeout = () => d;
  d.resetAndDestroy = () => d.destroy();
  process.nextTick(() => d.destroy(Object.assign(new Error(message), { code })));
  return d as unknown as net.Socket;
}
