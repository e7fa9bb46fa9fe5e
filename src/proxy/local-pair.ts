// An in-process connection between the outbound side of the proxy and its own inbound side
// (docs/policy.md): a meshed pod's connection to a Service whose chosen endpoint is a pod of this
// node that the pod's policy does not allow whole. The outbound forwarder gets `upstream` as if
// it had dialled the pod; the proxy serves `downstream` as it serves a tunnelled connection
// (Proxy.serveTunnelled): HTTP decided request by request (403, gRPC status 7), anything else
// closed, and what is allowed dialled to the pod. No socket, no TLS: the bytes never leave the
// agent.
//
// The forwarders are written against net.Socket; what they use of it is a Duplex with half-close
// plus `connecting` and 'connect' (the upstream end), `setNoDelay`, `setTimeout` and 'timeout'
// (the HTTP/1 pool parks idle upstreams with one), `resetAndDestroy` (abortSocket), and
// `bytesRead`/`bytesWritten` (the served end's connection telemetry), as tunnel/upstream.ts
// audits for a tunnel's stream. A reset or a destroy of either end before both directions ended
// reaches the other as ECONNRESET; half-closes pass both ways, as TCP's.
import type * as net from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import { countBytes } from './byte-count.ts';

type Sock = Duplex & {
  connecting: boolean;
  bytesRead: number;
  bytesWritten: number;
  setNoDelay(): Sock;
  setTimeout(ms: number, cb?: () => void): Sock;
  resetAndDestroy(): Sock;
};

const reset = () => Object.assign(new Error('connection reset by peer'), { code: 'ECONNRESET' });

function decorate(d: Duplex, connecting: boolean, peer: () => Sock): Sock {
  const s = d as Sock;
  s.connecting = connecting;
  let timer: NodeJS.Timeout | undefined;
  s.setNoDelay = () => s;
  s.setTimeout = (ms: number, cb?: () => void) => {
    clearTimeout(timer);
    timer = undefined;
    if (cb) s.once('timeout', cb);
    if (ms > 0) {
      timer = setTimeout(() => s.emit('timeout'), ms);
      timer.unref();
    }
    return s;
  };
  // The peer first, with the error a TCP reset gives (node's pair would close it quietly).
  s.resetAndDestroy = () => {
    const p = peer();
    if (!p.destroyed) p.destroy(reset());
    s.destroy();
    return s;
  };
  s.once('close', () => clearTimeout(timer));
  // As the listener does for its clients (and the tunnel for its streams): an error is a close;
  // the forwarders listen for what they need.
  s.on('error', () => {});
  countBytes(s);
  return s;
}

/** `upstream` connects on the next tick (its 'connect'); `downstream` is connected. */
export function localPair(): { upstream: net.Socket; downstream: net.Socket } {
  const [a, b] = duplexPair({ allowHalfOpen: true });
  // eslint-disable-next-line prefer-const
  let up: Sock, down: Sock;
  up = decorate(a, true, () => down);
  down = decorate(b, false, () => up);
  // node's pair does not tell the other end of a destroy: one before both directions ended
  // (an error, a forwarder giving up) resets the other, as a TCP close with data unsent would.
  const link = (x: Sock, y: Sock) => x.once('close', () => {
    if (!y.destroyed && !(x.writableFinished && x.readableEnded)) y.destroy(reset());
  });
  link(up, down);
  link(down, up);
  process.nextTick(() => {
    if (up.destroyed) return;
    up.connecting = false;
    up.emit('connect');
  });
  return { upstream: up as unknown as net.Socket, downstream: down as unknown as net.Socket };
}
