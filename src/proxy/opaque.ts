/**
 * Opaque TCP forwarding between an accepted client and its upstream: both directions with
 * backpressure, half-close, reset propagation, connect and idle timeouts, byte counts.
 * Also used for TLS passthrough (protocol 'tls', SNI as authority).
 *
 * Hot path: one tunnel object per connection whose bound handlers are created once; per
 * chunk we only add to counters and write (no closures, no copies).
 */
import type * as net from 'node:net';
import type { ConnContext, ProxyLimits } from './context.ts';
import type { ConnCloseEvent } from '../telemetry/events.ts';

/** connClose plus what passthrough knows about the peer (the SNI of a TLS ClientHello). */
export type OpaqueCloseEvent = ConnCloseEvent & { authority?: string; alpn?: string[] };

export interface OpaqueOptions {
  protocol: 'opaque' | 'tls';
  /** 'tls', 'opaque:<reason>', 'server-first', 'deadline', 'opaque-port', ... */
  detectedBy: string;
  detectMs: number;
  /** Client bytes already read (during detection); sent upstream first. */
  clientHead?: Buffer | null;
  /** Upstream bytes already read (a server-first banner); sent to the client first. */
  upstreamHead?: Buffer | null;
  /** SNI for TLS passthrough. */
  authority?: string | null;
  alpn?: string[];
  /** When the upstream dial started, so the connect timeout counts from the dial. */
  dialedAt?: number;
  /** Interval of connBytes reports while the connection lives (ms). */
  bytesReportMs?: number;
  /** Called once after both sockets closed, with the event also sent to telemetry. */
  onClose?: (ev: OpaqueCloseEvent) => void;
}

export const DEFAULT_BYTES_REPORT_MS = 5000;

/** Forwards `ctx.client` <-> `upstream` until both sides are done. Never throws on peer behaviour. */
export function forwardOpaque(ctx: ConnContext, upstream: net.Socket, limits: ProxyLimits, opts: OpaqueOptions): void {
  new OpaqueTunnel(ctx, upstream, limits, opts).start();
}

/** Tears a socket down with an RST when it is connected, plainly when it is not (no handshake to abort). */
export function abortSocket(sock: net.Socket): void {
  if (sock.destroyed) return;
  if (sock.connecting) {
    sock.destroy();
    return;
  }
  try {
    sock.resetAndDestroy();
  } catch {
    sock.destroy(); // not a TCP handle (e.g. a test double over a pipe)
  }
}

function errCode(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

class OpaqueTunnel {
  readonly ctx: ConnContext;
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly limits: ProxyLimits;
  readonly opts: OpaqueOptions;
  bytesIn = 0;
  bytesOut = 0;
  reportedIn = 0;
  reportedOut = 0;
  clientClosed = false;
  upstreamClosed = false;
  finished = false;
  upstreamUp = false;
  error: string | undefined;
  reportTimer: NodeJS.Timeout | undefined;

  constructor(ctx: ConnContext, upstream: net.Socket, limits: ProxyLimits, opts: OpaqueOptions) {
    this.ctx = ctx;
    this.client = ctx.client;
    this.upstream = upstream;
    this.limits = limits;
    this.opts = opts;
  }

  start(): void {
    const { client, upstream } = this;
    client.on('data', this.onClientData);
    client.on('end', this.onClientEnd);
    client.on('drain', this.onClientDrain);
    client.on('error', this.onClientError);
    client.on('close', this.onClientClose);
    client.on('timeout', this.onIdle);
    upstream.on('data', this.onUpstreamData);
    upstream.on('end', this.onUpstreamEnd);
    upstream.on('drain', this.onUpstreamDrain);
    upstream.on('error', this.onUpstreamError);
    upstream.on('close', this.onUpstreamClose);
    upstream.on('timeout', this.onUpstreamTimeout);

    // Both sockets count reads and writes as activity, so either one idle means no bytes
    // moved either way; arming both still covers the side that outlives the other.
    client.setTimeout(this.limits.idleTimeoutMs);
    if (upstream.connecting) {
      const spent = this.opts.dialedAt === undefined ? 0 : Date.now() - this.opts.dialedAt;
      upstream.setTimeout(Math.max(1, this.limits.upstreamConnectTimeoutMs - spent));
      upstream.once('connect', this.onUpstreamConnect);
    } else {
      this.upstreamUp = true;
      upstream.setTimeout(this.limits.idleTimeoutMs);
    }

    const { clientHead, upstreamHead } = this.opts;
    let holdUpstream = false;
    let holdClient = false;
    if (upstreamHead && upstreamHead.length > 0) {
      this.bytesOut += upstreamHead.length;
      if (!client.destroyed && !client.write(upstreamHead)) {
        holdUpstream = true;
        upstream.pause();
      }
    }
    if (clientHead && clientHead.length > 0) {
      this.bytesIn += clientHead.length;
      if (!upstream.destroyed && !upstream.write(clientHead)) {
        holdClient = true;
        client.pause();
      }
    }
    // Either side may have half-closed while detection was reading it.
    if (client.readableEnded) this.onClientEnd();
    if (upstream.readableEnded) this.onUpstreamEnd();

    const every = this.opts.bytesReportMs ?? DEFAULT_BYTES_REPORT_MS;
    if (every > 0) {
      this.reportTimer = setInterval(this.reportBytes, every);
      this.reportTimer.unref();
    }

    // Sockets that died before the hand-over will not emit 'close' again.
    if (client.closed) this.onClientClose(true);
    else if (client.destroyed) abortSocket(upstream);
    if (upstream.closed) this.onUpstreamClose(true);
    else if (upstream.destroyed) abortSocket(client);

    // Handed over paused (pauseOnConnect / detection); flowing from here on unless a head
    // write already filled the other side's buffer ('drain' resumes it then).
    if (!client.destroyed && !holdClient) client.resume();
    if (!upstream.destroyed && !holdUpstream) upstream.resume();
  }

  onClientData = (chunk: Buffer): void => {
    this.bytesIn += chunk.length;
    const up = this.upstream;
    if (up.destroyed || up.writableEnded) return;
    if (!up.write(chunk)) this.client.pause();
  };

  onUpstreamData = (chunk: Buffer): void => {
    this.bytesOut += chunk.length;
    const cl = this.client;
    if (cl.destroyed || cl.writableEnded) return;
    if (!cl.write(chunk)) this.upstream.pause();
  };

  onUpstreamDrain = (): void => {
    if (!this.client.readableEnded) this.client.resume();
  };

  onClientDrain = (): void => {
    if (!this.upstream.readableEnded) this.upstream.resume();
  };

  // Half-close: a FIN from one side becomes a FIN to the other after the pending bytes;
  // the other direction keeps flowing (both sockets are allowHalfOpen).
  onClientEnd = (): void => {
    if (!this.upstream.destroyed && !this.upstream.writableEnded) this.upstream.end();
  };

  onUpstreamEnd = (): void => {
    if (!this.client.destroyed && !this.client.writableEnded) this.client.end();
  };

  onUpstreamConnect = (): void => {
    this.upstreamUp = true;
    this.upstream.setTimeout(this.limits.idleTimeoutMs);
  };

  onClientError = (err: Error): void => {
    this.error ??= `client: ${errCode(err)}`;
    abortSocket(this.upstream);
  };

  onUpstreamError = (err: Error): void => {
    this.error ??= this.upstreamUp ? `upstream: ${errCode(err)}` : `upstream connect: ${errCode(err)}`;
    abortSocket(this.client);
  };

  onUpstreamTimeout = (): void => {
    if (this.upstream.connecting) {
      this.error ??= 'upstream connect: timeout';
      this.upstream.destroy();
      abortSocket(this.client);
      return;
    }
    this.onIdle();
  };

  onIdle = (): void => {
    this.error ??= 'idle timeout';
    this.client.destroy();
    this.upstream.destroy();
  };

  // A clean close (both FINs exchanged and our writes flushed) leaves the other side to
  // finish flushing; anything else is an abort and is propagated as one (RST).
  onClientClose = (hadError: boolean): void => {
    if (this.clientClosed) return;
    this.clientClosed = true;
    const c = this.client;
    if (hadError || !(c.readableEnded && c.writableFinished)) abortSocket(this.upstream);
    if (this.upstreamClosed) this.finish();
  };

  onUpstreamClose = (hadError: boolean): void => {
    if (this.upstreamClosed) return;
    this.upstreamClosed = true;
    const u = this.upstream;
    if (hadError || !(u.readableEnded && u.writableFinished)) abortSocket(this.client);
    if (this.clientClosed) this.finish();
  };

  reportBytes = (): void => {
    const dIn = this.bytesIn - this.reportedIn;
    const dOut = this.bytesOut - this.reportedOut;
    if (dIn === 0 && dOut === 0) return;
    this.reportedIn = this.bytesIn;
    this.reportedOut = this.bytesOut;
    try {
      this.ctx.telemetry.connBytes({ ...this.ctx.endpoints, connId: this.ctx.connId, bytesIn: dIn, bytesOut: dOut });
    } catch {
      // a broken sink must not take the connection down
    }
  };

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.reportTimer) clearInterval(this.reportTimer);
    // Final delta first: the connBytes of a connection always sum to its connClose totals.
    this.reportBytes();
    const ev: OpaqueCloseEvent = {
      ...this.ctx.endpoints,
      connId: this.ctx.connId,
      protocol: this.opts.protocol,
      detectedBy: this.opts.detectedBy,
      detectMs: this.opts.detectMs,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs: Date.now() - this.ctx.openedAt,
    };
    if (this.error !== undefined) ev.error = this.error;
    if (this.opts.authority) ev.authority = this.opts.authority;
    if (this.opts.alpn && this.opts.alpn.length > 0) ev.alpn = this.opts.alpn;
    try {
      this.ctx.telemetry.connClose(ev);
    } catch {
      // see reportBytes
    }
    this.opts.onClose?.(ev);
  }
}
