/**
 * Opaque TCP forwarding between an accepted client and its upstream: both directions with
 * backpressure, half-close, reset propagation, connect and idle timeouts, byte counts.
 * Also used for TLS passthrough (protocol 'tls', SNI as authority).
 *
 * Memory: an idle tunnel is most of the proxy's cost per connection (issue 6: under 10 KB
 * with its two sockets), so a tunnel allocates nothing per connection beyond its own object:
 * the socket listeners are shared functions that find the tunnel through a symbol on the
 * socket, and the idle timeout and byte reports run from one shared sweep (sweep.ts) over
 * the byte counters instead of a Node timer per socket. Hot path: per chunk we only add to
 * counters and write (no closures, no copies).
 */
import * as net from 'node:net';
import type { ConnContext, ProxyLimits } from './context.ts';
import type { ConnCloseEvent } from '../telemetry/events.ts';
import { resumeReading, sawEof, socketFd, stopReading, type KernelSplicer } from './kernel-splice.ts';
import { sharedSweeper, type Sweepable, type Sweeper } from './sweep.ts';

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
  /** Interval of connBytes reports while the connection lives (ms; 0: none), kept to within half a sweep tick. */
  bytesReportMs?: number;
  /** Runs the idle timeout and byte reports; default the shared timers (sweep.ts). */
  sweeper?: Sweeper;
  /** Called once after both sockets closed, with the event also sent to telemetry. */
  onClose?: (ev: OpaqueCloseEvent) => void;
  /** Hand the byte copying to the kernel once the heads are through (--kernel-splice). */
  splicer?: KernelSplicer | null;
  /** Told whether the hand-over to the kernel worked (error: why it did not; the tunnel then copies in Node). */
  onSplice?: (error: string | null) => void;
}

/** A tunnel whose bytes the kernel moves: what it needs for FINs, counts and the idle check. */
interface SpliceState {
  splicer: KernelSplicer;
  /** [client, upstream] socket cookies. */
  cookies: [bigint, bigint];
  /** sentBytes of [client, upstream] just before the splice. */
  baseSent: [number, number];
  /** Bytes Node forwarded (in, out) before the splice. */
  preIn: number;
  preOut: number;
}

export const DEFAULT_BYTES_REPORT_MS = 5000;

/** Forwards `ctx.client` <-> `upstream` until both sides are done. Never throws on peer behaviour. */
export function forwardOpaque(ctx: ConnContext, upstream: net.Socket, limits: ProxyLimits, opts: OpaqueOptions): void {
  new OpaqueTunnel(ctx, upstream, limits, opts).start(opts);
}

/**
 * Tears a socket down with an RST when it is connected, plainly when it is not (no handshake to
 * abort), or when it is Node's and its end() may have started a shutdown: libuv refuses the RST
 * then (EINVAL) and Node drops the handle without closing it, so the socket would never close.
 * Ended with nothing left to write is that case (with bytes left, the shutdown waits for them);
 * its FIN was asked for anyway.
 */
export function abortSocket(sock: { readonly destroyed: boolean; readonly connecting: boolean; destroy(): unknown; resetAndDestroy(): unknown }): void {
  if (sock.destroyed) return;
  if (sock.connecting || (sock instanceof net.Socket && sock.writableEnded && !sock.writableFinished && sock.writableLength === 0)) {
    sock.destroy();
    return;
  }
  try {
    sock.resetAndDestroy();
  } catch {
    sock.destroy(); // not a TCP handle (e.g. a test double over a pipe)
  }
}

/** An 'error' listener that only keeps an unowned socket's errors from crashing us. */
export function ignoreError(): void {}

function errCode(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

/**
 * The sweep tick of tunnels with these limits: an idle tunnel closes between idleTimeoutMs
 * and idleTimeoutMs plus two ticks after its last byte (never early), byte reports come
 * within half a tick of due. One second for the defaults (300 s idle, 5 s reports).
 */
export function sweepPeriodMs(idleTimeoutMs: number, bytesReportMs: number): number {
  let p = idleTimeoutMs > 0 ? Math.min(1000, Math.max(10, Math.floor(idleTimeoutMs / 5))) : 1000;
  if (bytesReportMs > 0) p = Math.min(p, Math.max(10, Math.floor(bytesReportMs)));
  return p;
}

// Shared listeners: `this` is the socket, the tunnel hangs off it under TUNNEL. One closure
// per listener per connection would cost ~60 bytes each, for 17 of them.
const TUNNEL = Symbol('opaqueTunnel');
type TunnelSocket = net.Socket & { [TUNNEL]?: OpaqueTunnel };
const tunnelOf = (s: net.Socket): OpaqueTunnel => (s as TunnelSocket)[TUNNEL]!;
const EMPTY = Buffer.alloc(0);

function onClientData(this: net.Socket, chunk: Buffer): void { tunnelOf(this).onClientData(chunk); }
function onUpstreamData(this: net.Socket, chunk: Buffer): void { tunnelOf(this).onUpstreamData(chunk); }
function onClientDrain(this: net.Socket): void { tunnelOf(this).onClientDrain(); }
function onUpstreamDrain(this: net.Socket): void { tunnelOf(this).onUpstreamDrain(); }
function onClientEnd(this: net.Socket): void { tunnelOf(this).onClientEnd(); }
function onUpstreamEnd(this: net.Socket): void { tunnelOf(this).onUpstreamEnd(); }
function onClientError(this: net.Socket, err: Error): void { tunnelOf(this).onClientError(err); }
function onUpstreamError(this: net.Socket, err: Error): void { tunnelOf(this).onUpstreamError(err); }
function onClientClose(this: net.Socket, hadError: boolean): void { tunnelOf(this).onClientClose(hadError); }
function onUpstreamClose(this: net.Socket, hadError: boolean): void { tunnelOf(this).onUpstreamClose(hadError); }
function onUpstreamConnect(this: net.Socket): void { tunnelOf(this).onUpstreamConnect(); }
function onSplicedData(this: net.Socket): void { tunnelOf(this).onSplicedData(); }
function onSplicedClientEnd(this: net.Socket): void { tunnelOf(this).endAfterSpliced(0); }
function onSplicedUpstreamEnd(this: net.Socket): void { tunnelOf(this).endAfterSpliced(1); }
function onConnectTimeout(t: OpaqueTunnel): void { t.onConnectTimeout(); }

class OpaqueTunnel implements Sweepable {
  readonly ctx: ConnContext;
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly limits: ProxyLimits;
  // What the close event needs of the options (not the options: they hold the heads).
  readonly protocol: 'opaque' | 'tls';
  readonly detectedBy: string;
  readonly detectMs: number;
  readonly authority: string | null | undefined;
  readonly alpn: string[] | undefined;
  readonly onClose: ((ev: OpaqueCloseEvent) => void) | undefined;
  readonly splicer: KernelSplicer | null | undefined;
  readonly onSplice: ((error: string | null) => void) | undefined;
  readonly reportEveryMs: number;
  readonly sweepMs: number;
  readonly sweeper: Sweeper;
  bytesIn = 0;
  bytesOut = 0;
  reportedIn = 0;
  reportedOut = 0;
  /** The sweep's view: byte total at its last look, when it last changed, when bytes were last reported. */
  activeTotal = 0;
  activeAt = 0;
  reportedAt = 0;
  clientClosed = false;
  upstreamClosed = false;
  finished = false;
  /** passFin() closed a socket that was done both ways: its 'close' is a clean one. */
  closedDone = false;
  upstreamUp = false;
  error: string | undefined;
  connectTimer: NodeJS.Timeout | undefined;
  spliceStarted = false;
  spliced: SpliceState | null = null;

  constructor(ctx: ConnContext, upstream: net.Socket, limits: ProxyLimits, opts: OpaqueOptions) {
    this.ctx = ctx;
    this.client = ctx.client;
    this.upstream = upstream;
    this.limits = limits;
    this.protocol = opts.protocol;
    this.detectedBy = opts.detectedBy;
    this.detectMs = opts.detectMs;
    this.authority = opts.authority;
    this.alpn = opts.alpn;
    this.onClose = opts.onClose;
    this.splicer = opts.splicer;
    this.onSplice = opts.onSplice;
    this.reportEveryMs = opts.bytesReportMs ?? DEFAULT_BYTES_REPORT_MS;
    this.sweepMs = sweepPeriodMs(limits.idleTimeoutMs, this.reportEveryMs);
    this.sweeper = opts.sweeper ?? sharedSweeper;
  }

  start(opts: OpaqueOptions): void {
    const { client, upstream } = this;
    (client as TunnelSocket)[TUNNEL] = this;
    (upstream as TunnelSocket)[TUNNEL] = this;
    client.on('data', onClientData);
    client.on('end', onClientEnd);
    client.on('drain', onClientDrain);
    client.on('error', onClientError);
    client.on('close', onClientClose);
    upstream.on('data', onUpstreamData);
    upstream.on('end', onUpstreamEnd);
    upstream.on('drain', onUpstreamDrain);
    upstream.on('error', onUpstreamError);
    upstream.on('close', onUpstreamClose);
    // Our 'error' listeners stay for the sockets' lives: the placeholders the listener and
    // dispatch attached can go (one listener is a function, two are an array).
    client.removeListener('error', ignoreError);
    upstream.removeListener('error', ignoreError);

    if (upstream.connecting) {
      const spent = opts.dialedAt === undefined ? 0 : Date.now() - opts.dialedAt;
      this.connectTimer = setTimeout(onConnectTimeout, Math.max(1, this.limits.upstreamConnectTimeoutMs - spent), this);
      upstream.once('connect', onUpstreamConnect);
    } else {
      this.upstreamUp = true;
    }

    const { clientHead, upstreamHead } = opts;
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

    // The idle clock starts at the hand-over, as a socket timeout armed here would.
    const now = this.sweeper.now();
    this.activeTotal = this.bytesIn + this.bytesOut;
    this.activeAt = now;
    this.reportedAt = now;
    this.sweeper.every(this.sweepMs, this);

    // A socket destroyed before the hand-over may have emitted its 'error' and 'close' already:
    // judged now as they would have been (a later 'close' is ignored). Only destroyed: an HTTP/2
    // stream (a tunnel's) is `closed` once its peer's RST_STREAM came, and after the peer's whole
    // answer and a NO_ERROR one (RFC 9113 8.1, "complete, stop sending") it still delivers what it
    // holds, its 'end', then its 'close'. Taken for dead, the client lost that answer to a reset.
    if (client.destroyed) {
      if (client.errored) this.onClientError(client.errored);
      this.onClientClose(!!client.errored);
    }
    if (upstream.destroyed) {
      if (upstream.errored) this.onUpstreamError(upstream.errored);
      this.onUpstreamClose(!!upstream.errored);
    }

    // Handed over paused (pauseOnConnect, TLS passthrough) or flowing (from detection, which
    // does not pause them for us: each resume() costs a tick); flowing from here on unless a
    // head write already filled the other side's buffer ('drain' resumes it then).
    if (!client.destroyed && !holdClient) client.resume();
    if (!upstream.destroyed && !holdUpstream) upstream.resume();
    if (this.upstreamUp) this.trySplice();
  }

  /**
   * The shared tick: byte reports when due, and the idle timeout, judged by the byte
   * counters (every byte read on one side is written to the other, so no change in the
   * total means no bytes moved either way, as both sockets' timeouts would have seen).
   */
  sweep(now: number): void {
    if (this.finished) return;
    const every = this.reportEveryMs;
    const reportDue = every > 0 && now - this.reportedAt >= every - this.sweepMs / 2;
    if (reportDue) {
      this.reportedAt = now;
      this.reportBytes(); // also folds in the kernel's counts of a spliced tunnel
    }
    const idleMs = this.limits.idleTimeoutMs;
    if (!(idleMs > 0)) return;
    // Spliced: the kernel's counts cost a map lookup, so read them only before calling it idle.
    if (this.spliced && !reportDue && this.bytesIn + this.bytesOut === this.activeTotal && now - this.activeAt >= idleMs) {
      this.syncSplicedBytes();
    }
    const total = this.bytesIn + this.bytesOut;
    if (total !== this.activeTotal) {
      this.activeTotal = total;
      this.activeAt = now;
      return;
    }
    if (now - this.activeAt < idleMs) return;
    this.error ??= 'idle timeout';
    const { client, upstream } = this;
    if (client.writableLength > 0 || upstream.writableLength > 0) {
      // Stalled, not silent: a reader stopped with bytes still held here for it. They are lost,
      // and a FIN after what did get through would pass the cut stream for a whole one.
      abortSocket(client);
      abortSocket(upstream);
      return;
    }
    client.destroy();
    upstream.destroy();
  }

  // Kernel splice. Order matters: stop Node reading (synchronously), forward what Node
  // already holds, wait until Node's writes are in the kernel, then insert both sockets
  // (the addon also pushes what is queued in their receive queues through the verdict, so
  // nothing is reordered or left behind). Node keeps reading afterwards only to see EOF and
  // errors, which are propagated as in the copying tunnel.
  trySplice(): void {
    const { client, upstream } = this;
    if (!this.splicer || this.spliceStarted || this.finished || client.destroyed || upstream.destroyed) return;
    if (sawEof(client) || sawEof(upstream) || client.writableEnded || upstream.writableEnded) return;
    if (socketFd(client) === null || socketFd(upstream) === null) return;
    if (!stopReading(client) || !stopReading(upstream)) {
      resumeReading(client);
      resumeReading(upstream);
      return;
    }
    this.spliceStarted = true;
    // read() emits 'data', so the copying handlers forward what the streams buffered.
    while (client.readableLength > 0 && client.read() !== null);
    while (upstream.readableLength > 0 && upstream.read() !== null);
    this.awaitFlushed();
  }

  /**
   * Waits, reads stopped, for the socket(s) still holding writes to hand them to the kernel. Not
   * 'drain': it follows only a write that returned false, not a smaller one still in flight (a
   * send queue full). An empty write's callback runs once every write before it is done, or with
   * an error once the socket is destroyed; the close handlers own the tunnel then.
   */
  awaitFlushed(): void {
    const { client, upstream } = this;
    if (this.finished || client.destroyed || upstream.destroyed) return;
    const held = client.writableLength > 0 ? client : upstream.writableLength > 0 ? upstream : null;
    if (held === null) this.enterSplice();
    else held.write(EMPTY, () => this.awaitFlushed());
  }

  enterSplice(): void {
    const { client, upstream } = this;
    const splicer = this.splicer!;
    const fds = [socketFd(client), socketFd(upstream)];
    let cookies: [bigint, bigint];
    let baseSent: [number, number];
    try {
      if (fds[0] === null || fds[1] === null) throw new Error('a socket lost its file descriptor');
      baseSent = [splicer.sentBytes(fds[0]), splicer.sentBytes(fds[1])];
      if (baseSent[0] < 0 || baseSent[1] < 0) throw new Error('TCP_INFO unreadable');
      cookies = splicer.splice(fds[0], fds[1]);
    } catch (e) {
      this.onSplice?.((e as Error).message);
      if ((e as { spliced?: boolean }).spliced) {
        this.error ??= `kernel splice: ${(e as Error).message}`;
        abortSocket(client);
        abortSocket(upstream);
        return;
      }
      resumeReading(client);
      resumeReading(upstream);
      return;
    }
    this.spliced = { splicer, cookies, baseSent, preIn: this.bytesIn, preOut: this.bytesOut };
    client.off('data', onClientData).on('data', onSplicedData);
    upstream.off('data', onUpstreamData).on('data', onSplicedData);
    client.off('end', onClientEnd).on('end', onSplicedClientEnd);
    upstream.off('end', onUpstreamEnd).on('end', onSplicedUpstreamEnd);
    this.onSplice?.(null);
    resumeReading(client);
    resumeReading(upstream);
    this.syncSplicedBytes();
  }

  /** The verdict redirects every byte; one reaching Node means order can no longer be promised. */
  onSplicedData(): void {
    this.error ??= 'kernel splice: bytes reached the proxy';
    abortSocket(this.client);
    abortSocket(this.upstream);
  }

  // A FIN must not overtake bytes the kernel still holds for the peer (the verdict queues
  // them for a worker that writes them to the peer's socket): end() once the peer's send
  // path has taken everything redirected to it.
  endAfterSpliced(from: 0 | 1): void {
    const sp = this.spliced!;
    const to = from === 0 ? this.upstream : this.client;
    let wait = 1;
    const check = (): void => {
      if (to.destroyed || to.writableEnded) return;
      const fd = socketFd(to);
      const redirected = sp.splicer.splicedBytes(sp.cookies[from])?.bytes ?? 0;
      const sent = fd === null ? -1 : sp.splicer.sentBytes(fd);
      if (sent < 0 || sent - sp.baseSent[1 - from] >= redirected) {
        to.end();
        return;
      }
      setTimeout(check, wait);
      wait = Math.min(wait * 2, 50);
    };
    check();
  }

  /**
   * Spliced bytes are counted by the verdict; fold them into the tunnel's counters. A
   * segment the verdict could not redirect (its peer not, or no longer, in the sockhash) is
   * lost: while both sockets are open that breaks the stream, so the tunnel is reset rather
   * than left to hang. Checked after the insert, with every byte report and before an
   * idle close.
   */
  syncSplicedBytes(): void {
    const sp = this.spliced;
    if (!sp) return;
    const c = sp.splicer.splicedBytes(sp.cookies[0]);
    const u = sp.splicer.splicedBytes(sp.cookies[1]);
    if (c) this.bytesIn = sp.preIn + c.bytes;
    if (u) this.bytesOut = sp.preOut + u.bytes;
    const drops = (c?.drops ?? 0) + (u?.drops ?? 0);
    if (drops > 0 && !this.clientClosed && !this.upstreamClosed && this.error === undefined) {
      this.error = `kernel splice: ${drops} segment(s) could not be redirected`;
      abortSocket(this.client);
      abortSocket(this.upstream);
    }
  }

  onClientData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    const up = this.upstream;
    if (up.destroyed || up.writableEnded) return;
    if (!up.write(chunk)) this.client.pause();
  }

  onUpstreamData(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    const cl = this.client;
    if (cl.destroyed || cl.writableEnded) return;
    if (!cl.write(chunk)) this.upstream.pause();
  }

  onUpstreamDrain(): void {
    if (!this.client.readableEnded) this.client.resume();
  }

  onClientDrain(): void {
    if (!this.upstream.readableEnded) this.upstream.resume();
  }

  // Half-close: a FIN from one side becomes a FIN to the other after the pending bytes;
  // the other direction keeps flowing (both sockets are allowHalfOpen).
  onClientEnd(): void {
    this.passFin(this.upstream);
  }

  onUpstreamEnd(): void {
    this.passFin(this.client);
  }

  /**
   * Sends `to` its FIN. When its peer's FIN is already read and Node holds nothing unsent for
   * it, a socket is done both ways: close(2) sends the FIN itself (its receive queue is
   * empty, so no RST); a shutdown(2) first, with its request and callback, would be a system
   * call for nothing (docs/benchmarks.md, "A new connection"). Sockets only: a tunnel's HTTP/2
   * stream or an in-process pair (local-pair.ts) would reset or cut its peer when destroyed.
   */
  passFin(to: net.Socket): void {
    if (to.destroyed || to.writableEnded) return;
    if (to.readableEnded && to.writableLength === 0 && to instanceof net.Socket) {
      this.closedDone = true;
      to.destroy();
    } else to.end();
  }

  onUpstreamConnect(): void {
    this.upstreamUp = true;
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.trySplice();
  }

  onConnectTimeout(): void {
    this.connectTimer = undefined;
    if (this.finished || this.upstream.destroyed || !this.upstream.connecting) return;
    this.error ??= 'upstream connect: timeout';
    this.upstream.destroy();
    abortSocket(this.client);
  }

  onClientError(err: Error): void {
    this.error ??= `client: ${errCode(err)}`;
    abortSocket(this.upstream);
  }

  onUpstreamError(err: Error): void {
    this.error ??= this.upstreamUp ? `upstream: ${errCode(err)}` : `upstream connect: ${errCode(err)}`;
    abortSocket(this.client);
  }

  // A clean close leaves the other side to finish flushing; anything else is an abort and is
  // propagated as one (RST).
  onClientClose(hadError: boolean): void {
    if (this.clientClosed) return;
    this.clientClosed = true;
    if (this.closedClean(this.client, hadError)) this.upstream.resume();
    else abortSocket(this.upstream);
    if (this.upstreamClosed) this.finish();
  }

  onUpstreamClose(hadError: boolean): void {
    if (this.upstreamClosed) return;
    this.upstreamClosed = true;
    if (this.closedClean(this.upstream, hadError)) this.client.resume();
    else abortSocket(this.client);
    if (this.clientClosed) this.finish();
  }

  /**
   * Both FINs exchanged and our writes flushed (or passFin() closed it so). Or closed without an
   * error, read to its end, with our side ended but not all of it sent: a tunnel stream whose peer
   * sent its whole stream and then RST_STREAM(NO_ERROR), RFC 9113 8.1's "complete, stop sending"
   * (Node ends our side itself). What it still held for the peer (a slow client's upload) is what
   * the peer refused; the other leg gets its bytes and FIN, and is read on (it may be paused for
   * this socket's backpressure) with what it sends dropped. A socket only gets there by our own
   * destroy(), which has decided already.
   */
  closedClean(s: net.Socket, hadError: boolean): boolean {
    if (hadError) return false;
    return this.closedDone || (!s.errored && s.readableEnded && (s.writableFinished || s.writableEnded));
  }

  reportBytes(): void {
    this.syncSplicedBytes();
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
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.sweeper.stop(this.sweepMs, this);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    // Final delta first: the connBytes of a connection always sum to its connClose totals.
    this.reportBytes();
    if (this.spliced) {
      try {
        this.spliced.splicer.unsplice(...this.spliced.cookies);
      } catch {
        // the map entries are bounded; a failed delete must not lose the close event
      }
    }
    const ev: OpaqueCloseEvent = {
      ...this.ctx.endpoints,
      connId: this.ctx.connId,
      protocol: this.protocol,
      detectedBy: this.detectedBy,
      detectMs: this.detectMs,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs: Date.now() - this.ctx.openedAt,
    };
    if (this.error !== undefined) ev.error = this.error;
    if (this.authority) ev.authority = this.authority;
    if (this.alpn && this.alpn.length > 0) ev.alpn = this.alpn;
    try {
      this.ctx.telemetry.connClose(ev);
    } catch {
      // see reportBytes
    }
    this.onClose?.(ev);
  }
}
