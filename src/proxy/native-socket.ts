/**
 * Sockets driven from C++ (`mesh-agent run --native-io`, the default; docs/proxy.md): a
 * connected TCP socket's fd is handed to the addon (native/addon/socket-io.cc), which reads and
 * writes it from libuv poll handles on this thread's loop. Node's streams are out of the path: a
 * read is one call into JavaScript, `(id, kind, value)` over one shared buffer made once per
 * thread, and each read's bytes are copied into a Buffer of their own (the forwarder keeps
 * chunks past the call: pipelined requests, heads across reads, a retry's replay), which is one
 * small copy a read against a stream's machinery (docs/benchmarks.md).
 *
 * NativeSocket gives the HTTP/1 forwarder what it uses of net.Socket (ForwarderSocket): events
 * data/end/drain/connect/error/close, write() false and a later 'drain' when the kernel did not
 * take everything, end() as a half-close (the FIN once what is kept is written; reading goes
 * on), destroy and reset. A socket still connecting is adopted when it connects; writes wait in
 * JavaScript until then.
 */
import { Buffer } from 'node:buffer'; // not the global, a getter per use (a Buffer is made per read)
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as util from 'node:util';
import { loadAddon, type Addon } from '../datapath/addon.ts';
import type { ForwarderSocket } from './forwarder-socket.ts';
import { socketFd, stopReading } from './kernel-splice.ts';

type IoOps = Pick<Addon, 'ioInit' | 'ioAdopt' | 'ioRead' | 'ioWrite' | 'ioEnd' | 'ioCork' | 'ioNoDelay' | 'ioClose' | 'ioCount'>;

// Event kinds from socket-io.cc.
const EV_DATA = 0;
const EV_EOF = 1;
const EV_DRAIN = 2;
const EV_FINISH = 3;
const EV_ERROR = 4;
/** The call an error came from, by the high half of its value (socket-io.cc's kOp*). */
const ERROR_CALLS = ['read', 'write', 'shutdown'];

/** One read's most: 64 KiB, Node's own read size. */
const SHARED_BYTES = 64 * 1024;

/** Writes queued while connecting before write() says wait (net.Socket's highWaterMark). */
const CONNECTING_HIGH_WATER = 16 * 1024;

let ops: IoOps | null | undefined;
let shared: Buffer;
/** This thread's adopted sockets by id (the addon's ids are per thread, as is this module). */
const live = new Map<number, NativeSocket>();

function onEvent(id: number, kind: number, value: number): void {
  live.get(id)?.onNative(kind, value);
}

/** The addon's socket calls, set up once on this thread; null without the addon (or an addon without them). */
export function nativeIoOps(): IoOps | null {
  if (ops === undefined) {
    try {
      const a = loadAddon();
      if (typeof a.ioInit !== 'function') ops = null;
      else {
        const ab = new ArrayBuffer(SHARED_BYTES);
        shared = Buffer.from(ab);
        a.ioInit(ab, onEvent);
        ops = a;
      }
    } catch {
      ops = null;
    }
  }
  return ops;
}

/** Sockets adopted on this thread so far: clients, and upstreams (at connect for those still connecting). */
export const nativeIoCounts = { clients: 0, upstreams: 0 };

/** Adopted sockets open on this thread, as the addon counts them (tests: nothing left behind). */
export function nativeSocketCount(): number {
  return nativeIoOps()?.ioCount() ?? 0;
}

interface TcpHandle {
  constructor?: { name?: string };
}

/** A plain TCP net.Socket (not TLS, not a tunnel's stream or an in-process pair): the kind adopted. */
export function isPlainTcp(sock: net.Socket): boolean {
  // A TLSSocket says `encrypted`: checked so, this module does not load node:tls.
  if ((sock as { encrypted?: boolean }).encrypted === true) return false;
  const h = (sock as unknown as { _handle?: TcpHandle | null })._handle;
  return h?.constructor?.name === 'TCP';
}

function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  let code: string;
  try {
    code = util.getSystemErrorName(-errno);
  } catch {
    code = `E${errno}`;
  }
  const e = new Error(`${syscall} ${code}`) as NodeJS.ErrnoException;
  e.errno = -errno;
  e.code = code;
  e.syscall = syscall;
  return e;
}

function ignoreError(): void {}

/** EventEmitter's listener table: a function for one listener, an array for more. */
interface Emitting {
  _events: { data?: ((b: Buffer) => void) | Array<(b: Buffer) => void> };
}

export class NativeSocket extends EventEmitter implements ForwarderSocket {
  /** The addon's id; 0 before adoption (connecting) and after close. */
  #id = 0;
  readonly #io: IoOps;
  /** The net.Socket while it connects. */
  #pre: net.Socket | null = null;
  /** Writes made while connecting, and an end() asked then. */
  #queued: Buffer[] | null = null;
  #queuedBytes = 0;
  #endQueued = false;
  /** Bytes the addon keeps (the kernel did not take them yet), as of the last write. */
  #kept = 0;
  #needDrain = false;
  #flowing = false;
  #nativeReading = false;
  /**
   * What came while paused: pause() does not stop the addon's reads, the first read after it
   * does (and is kept here). The forwarder pauses its client for every exchange and nothing
   * comes meanwhile, so a pause and resume cost no call into the addon (docs/proxy.md).
   */
  #held: Buffer[] | null = null;
  #eofHeld = false;
  #flushQueued = false;
  #readEnded = false;
  #ending = false;
  #finished = false;
  #destroyed = false;
  #bytesRead = 0;
  #bytesWritten = 0;
  readonly allowHalfOpen: boolean;

  private constructor(io: IoOps, allowHalfOpen: boolean) {
    super();
    this.#io = io;
    this.allowHalfOpen = allowHalfOpen;
    // A peer's error must never be an uncaught exception, whoever owns the socket at the time.
    this.on('error', ignoreError);
  }

  /**
   * The forwarder's client: `sock` (detected HTTP/1, paused) is adopted now. Node keeps the
   * net.Socket as the connection's shell, neither reading nor writing: the listener counts open
   * connections and drains by it, and policy watches end on its 'close'. It is destroyed when the
   * adopted socket closes, and destroying it destroys the adopted socket. Bytes Node read past the
   * detected head come back appended to it. null: not a plain TCP socket, or already gone.
   */
  static adoptClient(sock: net.Socket, head: Buffer): { socket: NativeSocket; head: Buffer } | null {
    const io = nativeIoOps();
    if (io === null || sock.destroyed || !isPlainTcp(sock)) return null;
    const fd = socketFd(sock);
    if (fd === null) return null;
    // The dup first: refused (EMFILE at the open-file limit), the caller carries on with Node's
    // socket, which must still read and still hold what it buffered. The addon reads nothing yet.
    let id: number;
    try {
      id = io.ioAdopt(fd);
    } catch {
      return null;
    }
    if (!stopReading(sock)) {
      io.ioClose(id, false); // closes the dup only: Node's fd keeps the connection
      return null;
    }
    // Whatever Node read before reads stopped is the connection's next bytes; its EOF is not
    // lost (a read of the dup returns 0 again).
    const extra: Buffer[] = [];
    for (let c = sock.read() as Buffer | null; c !== null; c = sock.read() as Buffer | null) extra.push(c);
    const s = new NativeSocket(io, sock.allowHalfOpen);
    s.#id = id;
    s.#bytesRead = sock.bytesRead; // the connection's counts go on from Node's (the head included)
    s.#bytesWritten = sock.bytesWritten;
    live.set(id, s);
    nativeIoCounts.clients++;
    s.once('close', () => sock.destroy());
    sock.once('close', () => s.destroy());
    return { socket: s, head: extra.length === 0 ? head : Buffer.concat([head, ...extra]) };
  }

  /**
   * An upstream (connected or connecting, paused, nothing read) driven from C++ from now on, or
   * `sock` itself when it cannot be: not plain TCP, Node already holds bytes of it, or no addon.
   * Node's socket is destroyed once its fd is adopted (the dup keeps the connection).
   */
  static wrap(up: ForwarderSocket): ForwarderSocket {
    const io = nativeIoOps();
    if (io === null || !(up instanceof net.Socket)) return up; // already adopted, or not Node's TCP
    const sock = up;
    if (sock.destroyed || !isPlainTcp(sock) || sock.readableLength > 0) return sock;
    const s = new NativeSocket(io, sock.allowHalfOpen);
    if (sock.connecting) {
      sock.pause(); // so Node does not start reading when it connects
      s.#pre = sock;
      s.#queued = [];
      sock.on('error', s.#onPreError);
      sock.once('connect', s.#onPreConnect);
      return s;
    }
    return s.#adopt(sock) ? s : sock;
  }

  #onPreError = (err: Error): void => {
    if (this.#pre !== null) this.destroy(err);
  };

  #onPreConnect = (): void => {
    const sock = this.#pre;
    if (sock === null || this.#destroyed) return;
    this.#pre = null;
    sock.off('error', this.#onPreError);
    if (!this.#adopt(sock)) {
      // Node's socket is no longer ours to hand back (the caller holds this one): close it.
      sock.on('error', ignoreError);
      sock.destroy();
      this.destroy(new Error('adopting the connected upstream failed'));
      return;
    }
    const q = this.#queued!;
    this.#queued = null;
    this.#queuedBytes = 0;
    for (const b of q) this.#writeNative(b);
    if (this.#needDrain && this.#kept === 0) {
      // Everything queued while connecting went at once (a part kept drains with the addon's event).
      this.#needDrain = false;
      process.nextTick(() => { if (!this.#destroyed) this.emit('drain'); });
    }
    if (this.#endQueued) this.#endNative();
    if (this.#flowing) this.#setReading(true);
    this.emit('connect');
  };

  /** Takes over a connected socket's fd and destroys Node's socket. False: left as it was. */
  #adopt(sock: net.Socket): boolean {
    const fd = socketFd(sock);
    if (fd === null || sock.readableLength > 0) return false;
    // The dup before Node's reads stop: refused, Node's socket is left as it was (still reading).
    let id: number;
    try {
      id = this.#io.ioAdopt(fd);
    } catch {
      return false;
    }
    if (!stopReading(sock)) {
      this.#io.ioClose(id, false); // the dup only
      return false;
    }
    this.#id = id;
    this.#bytesWritten += sock.bytesWritten;
    live.set(this.#id, this);
    nativeIoCounts.upstreams++;
    sock.on('error', ignoreError);
    sock.destroy();
    return true;
  }

  get destroyed(): boolean { return this.#destroyed; }
  get connecting(): boolean { return this.#pre !== null; }
  get readable(): boolean { return !this.#destroyed && !this.#readEnded; }
  get writable(): boolean { return !this.#destroyed && !this.#ending; }
  get writableLength(): number { return this.#queuedBytes + this.#kept; }
  get bytesRead(): number { return this.#bytesRead; }
  get bytesWritten(): number { return this.#bytesWritten; }

  /** One event from the addon (socket-io.cc). */
  onNative(kind: number, value: number): void {
    switch (kind) {
      case EV_DATA: {
        const b = Buffer.allocUnsafe(value);
        shared.copy(b, 0, 0, value);
        this.#bytesRead += value;
        if (this.#flowing) {
          // emit('data') as EventEmitter does it, without its generic lookup (megamorphic across
          // the process's emitters) when there is one listener, as there is in the forwarder.
          // `_events` is EventEmitter's own field, not its API: without it (a Node that renamed
          // it) this is emit() as usual.
          const h = (this as unknown as Partial<Emitting>)._events?.data;
          if (typeof h === 'function') h.call(this, b);
          else this.emit('data', b);
        } else {
          (this.#held ??= []).push(b);
          this.#setReading(false);
        }
        return;
      }
      case EV_EOF:
        this.#nativeReading = false; // the addon reads no more
        if (this.#flowing) this.#onEof();
        else this.#eofHeld = true;
        return;
      case EV_DRAIN:
        this.#kept = 0;
        if (this.#needDrain) {
          this.#needDrain = false;
          this.emit('drain');
        }
        return;
      case EV_FINISH:
        this.#kept = 0;
        this.#finish();
        return;
      case EV_ERROR:
        this.destroy(errnoError(value & 0xffff, ERROR_CALLS[value >>> 16] ?? 'poll'));
        return;
      default:
    }
  }

  #onEof(): void {
    this.#readEnded = true;
    this.emit('end');
    if (!this.allowHalfOpen && !this.#ending) this.end();
    this.#maybeClose();
  }

  /** After resume(): what came while paused, in order, then reading again (as a stream resumes, on the next tick). */
  #flushHeld = (): void => {
    this.#flushQueued = false;
    const held = this.#held;
    while (held !== null && held.length > 0 && this.#flowing && !this.#destroyed) this.emit('data', held.shift()!);
    if (!this.#flowing || this.#destroyed) return;
    this.#held = null;
    if (this.#eofHeld) {
      this.#eofHeld = false;
      this.#onEof();
      return;
    }
    this.#setReading(true);
  };

  write(b: Buffer): boolean {
    if (this.#destroyed || this.#ending) {
      const err = new Error('write after end') as NodeJS.ErrnoException;
      err.code = 'ERR_STREAM_WRITE_AFTER_END';
      process.nextTick(() => this.destroy(err));
      return false;
    }
    if (b.length === 0) return this.writableLength === 0;
    this.#bytesWritten += b.length;
    if (this.#queued !== null) {
      this.#queued.push(b);
      this.#queuedBytes += b.length;
      if (this.#queuedBytes < CONNECTING_HIGH_WATER) return true;
      this.#needDrain = true; // drained when it connects and the kernel takes it all
      return false;
    }
    return this.#writeNative(b);
  }

  #writeNative(b: Buffer): boolean {
    const r = this.#io.ioWrite(this.#id, b);
    if (r < 0) {
      const err = errnoError(-r, 'write');
      process.nextTick(() => this.destroy(err));
      return false;
    }
    this.#kept = r;
    if (r > 0) {
      this.#needDrain = true;
      return false;
    }
    return true;
  }

  /** Half-close: the FIN once everything written has gone; reading goes on. `cb` runs then. */
  end(cb?: () => void): this {
    if (cb !== undefined) {
      if (this.#finished) process.nextTick(cb);
      else this.once('finish', cb);
    }
    if (this.#ending || this.#destroyed) return this;
    this.#ending = true;
    if (this.#queued !== null) this.#endQueued = true;
    else this.#endNative();
    return this;
  }

  #endNative(): void {
    const r = this.#io.ioEnd(this.#id);
    if (r === 0) process.nextTick(() => this.#finish());
    else if (r < 0) {
      const err = errnoError(-r, 'shutdown');
      process.nextTick(() => this.destroy(err));
    }
    // 1: the addon sends the FIN after the kept bytes, then a finish event.
  }

  #finish(): void {
    if (this.#finished || this.#destroyed) return;
    this.#finished = true;
    this.emit('finish');
    this.#maybeClose();
  }

  /** Both directions are over: closed, as Node's sockets close themselves then. */
  #maybeClose(): void {
    if (this.#readEnded && this.#finished) this.destroy();
  }

  writeWithFin(write: () => void): boolean {
    if (this.#destroyed || this.#id === 0 || this.writableLength !== 0 || this.#ending || this.#io.ioCork(this.#id, true) !== 0) {
      write();
      return false;
    }
    write();
    if (!this.#destroyed && this.writableLength === 0 && this.#io.ioEnd(this.#id) === 0) return true; // the caller's end() follows
    if (!this.#destroyed) this.#io.ioCork(this.#id, false);
    return false;
  }

  destroy(err?: Error): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#close(false);
    process.nextTick(() => {
      if (err !== undefined) this.emit('error', err);
      this.emit('close', err !== undefined);
    });
    return this;
  }

  /** RST instead of FIN (SO_LINGER 0), then destroyed. */
  resetAndDestroy(): this {
    if (!this.#destroyed) this.#close(true);
    return this.destroy();
  }

  #close(reset: boolean): void {
    if (this.#id !== 0) {
      live.delete(this.#id);
      this.#io.ioClose(this.#id, reset);
      this.#id = 0;
    }
    const pre = this.#pre;
    if (pre !== null) {
      this.#pre = null;
      pre.off('connect', this.#onPreConnect);
      pre.destroy();
    }
    this.#queued = null;
    this.#queuedBytes = 0;
    this.#held = null;
    this.#eofHeld = false;
  }

  /** Stops 'data' and 'end'; the addon is told at the next read (#held). */
  pause(): this {
    this.#flowing = false;
    return this;
  }

  resume(): this {
    this.#flowing = true;
    if (this.#held === null && !this.#eofHeld) this.#setReading(true);
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      process.nextTick(this.#flushHeld);
    }
    return this;
  }

  #setReading(on: boolean): void {
    const want = on && !this.#readEnded && !this.#destroyed && this.#id !== 0;
    if (want === this.#nativeReading) return;
    this.#nativeReading = want;
    this.#io.ioRead(this.#id, want);
  }

  setNoDelay(noDelay = true): this {
    if (this.#id !== 0) this.#io.ioNoDelay(this.#id, noDelay);
    else this.#pre?.setNoDelay(noDelay);
    return this;
  }
}
