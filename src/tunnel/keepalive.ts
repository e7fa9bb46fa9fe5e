// HTTP/2 keepalive on the tunnels' connections, both ends (as ztunnel's, through hyper's http2
// keep-alive): a PING every interval, and a connection whose PING goes unanswered for the timeout
// is taken for dead. Without it, an agent or node that vanishes without a FIN or RST (power lost,
// a partition, a hung process) left the client's pool handing new streams to a connection that
// would never answer (each failing at the connect timeout, for as long as the kernel kept
// retransmitting: some 15 minutes), and the listener a TLS socket open for good.
import type * as http2 from 'node:http2';

export interface KeepaliveOptions {
  intervalMs: number;
  timeoutMs: number;
}

/** hyper's keep-alive timeout (20 s), a PING every 10 s. */
export const DEFAULT_KEEPALIVE: KeepaliveOptions = { intervalMs: 10_000, timeoutMs: 20_000 };

/**
 * Pings `session` every intervalMs from now (call it once the session is connected); `dead` runs
 * once if a PING is not answered within timeoutMs (the caller destroys the session). A ping goes
 * only when none is waiting. Stops when the session closes.
 */
export function keepAlive(session: http2.Http2Session, o: KeepaliveOptions, dead: (err: NodeJS.ErrnoException) => void): void {
  let waiting: NodeJS.Timeout | null = null;
  const answered = (): void => {
    if (waiting !== null) clearTimeout(waiting);
    waiting = null;
  };
  const tick = setInterval(() => {
    if (waiting !== null || session.destroyed) return;
    waiting = setTimeout(() => {
      clearInterval(tick);
      dead(Object.assign(new Error(`no answer to a keepalive PING within ${o.timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, o.timeoutMs);
    waiting.unref();
    try {
      if (!session.ping(answered)) answered(); // too many unanswered already: the next tick
    } catch {
      answered(); // closing: its 'close' stops this
    }
  }, o.intervalMs);
  tick.unref();
  session.once('close', () => {
    clearInterval(tick);
    answered();
  });
}
