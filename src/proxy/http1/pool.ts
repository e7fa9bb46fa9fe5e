// Idle keep-alive upstream connections, per destination ip:port. A connection is parked here
// only after a complete response that both sides meant to keep alive. While parked it is
// watched: any byte, FIN or error removes and destroys it, and so does the pool's sweep once it
// has been idle past the timeout.
//
// An upstream socket gets its event listeners once, for its whole life (own()): they call its
// current owner, the client connection it serves or the pool that holds it. A request balanced
// to another endpoint than the previous one moves the connection between a client and the pool
// (docs/routing.md); with listeners added and removed at each move, and a socket timer armed at
// each park, that move cost more than the balancer's pick (docs/benchmarks.md).

import type { ForwarderSocket } from '../forwarder-socket.ts';
import { performance } from 'node:perf_hooks';

export interface UpstreamPoolOptions {
  /** Idle connections kept per destination; extra ones are closed. Default 64. */
  maxIdlePerDest?: number;
  /**
   * How long a connection may sit idle. Default 4000 ms: below node:http's 5 s keepAliveTimeout,
   * so we usually drop a connection before the server does (the stale-connection race).
   */
  idleTimeoutMs?: number;
  /**
   * The clock idle ages are read from (ms, monotonic). Default performance.now(); tests that
   * assert an age limit pass one they advance by hand, which a loaded machine cannot stretch.
   */
  now?: () => number;
}

/** Who an upstream socket's events go to: the client connection using it, or the pool. */
export interface UpstreamOwner {
  upstreamData(chunk: Buffer): void;
  upstreamEnd(): void;
  upstreamError(err: NodeJS.ErrnoException): void;
  upstreamClose(hadError: boolean): void;
}

const kOwner = Symbol('upstreamOwner');
type Owned = ForwarderSocket & { [kOwner]?: UpstreamOwner | null };

function onData(this: Owned, chunk: Buffer): void { this[kOwner]?.upstreamData(chunk); }
function onEnd(this: Owned): void { this[kOwner]?.upstreamEnd(); }
function onError(this: Owned, err: NodeJS.ErrnoException): void { this[kOwner]?.upstreamError(err); }
function onClose(this: Owned, hadError: boolean): void { this[kOwner]?.upstreamClose(hadError); }

/**
 * Sends an upstream socket's data, end, error and close events to `owner` from now on; null: to
 * nobody (the socket is being destroyed, or handed on in the same tick). The listeners are added
 * on the first call and stay; an error with no owner is dropped, never thrown.
 */
export function own(socket: ForwarderSocket, owner: UpstreamOwner | null): void {
  const s = socket as Owned;
  if (s[kOwner] === undefined) {
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    s.on('close', onClose);
  }
  s[kOwner] = owner;
}

class IdleConn implements UpstreamOwner {
  readonly socket: ForwarderSocket;
  readonly key: string;
  /** The pool's clock when it became idle (parked, or before that, finished its last response while bound). */
  readonly parkedAt: number;
  private readonly pool: UpstreamPool;

  constructor(pool: UpstreamPool, key: string, socket: ForwarderSocket, now: number) {
    this.pool = pool;
    this.key = key;
    this.socket = socket;
    this.parkedAt = now;
    own(socket, this);
    socket.resume(); // read so a FIN is noticed while parked
  }

  // A parked connection must be silent: anything it says or does removes it.
  upstreamData(): void { this.pool.evict(this); }
  upstreamEnd(): void { this.pool.evict(this); }
  upstreamError(): void { this.pool.evict(this); }
  upstreamClose(): void { this.pool.evict(this); }
}

export class UpstreamPool {
  private readonly idle = new Map<string, IdleConn[]>();
  private readonly maxIdlePerDest: number;
  /** Also the longest a connection stays bound to an idle client before it is replaced. */
  readonly idleTimeoutMs: number;
  private closed = false;
  /** One timer for the whole pool while it holds connections, instead of one per parked socket. */
  private sweeper: NodeJS.Timeout | null = null;
  /** Connections handed out from the pool (reuses), for tests and metrics. */
  reused = 0;
  /** The clock of idle ages (the pool's, and of upstreams bound to an idle client). */
  readonly now: () => number;

  constructor(opts: UpstreamPoolOptions = {}) {
    this.maxIdlePerDest = opts.maxIdlePerDest ?? 64;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 4000;
    this.now = opts.now ?? (() => performance.now());
  }

  static key(ip: string, port: number): string {
    return ip + ':' + port;
  }

  /**
   * An idle connection to `key` (most recently used first), or null. `maxIdleMs`: only one
   * parked at most that long (for requests that cannot be re-sent if the server closes it
   * just as we write, the stale-connection race); the older ones stay parked for others.
   * One parked past the idle timeout is never handed out (the sweep may not have run yet).
   * The caller owns the returned socket: it must own() it or destroy it.
   */
  acquire(key: string, maxIdleMs = Infinity): ForwarderSocket | null {
    const list = this.idle.get(key);
    if (list === undefined) return null;
    const now = this.now();
    while (list.length > 0) {
      const age = now - list[list.length - 1]!.parkedAt;
      if (age > this.idleTimeoutMs) {
        // The freshest is too old, so all are.
        this.evictAll(key, list);
        return null;
      }
      if (age > maxIdleMs) return null; // the freshest is too old for this request
      const c = list.pop()!;
      own(c.socket, null);
      if (!c.socket.destroyed && c.socket.readable && c.socket.writable) {
        if (list.length === 0) this.idle.delete(key);
        this.reused++;
        return c.socket;
      }
      c.socket.destroy();
    }
    this.idle.delete(key);
    return null;
  }

  /**
   * Parks a connection its user no longer owns (own(socket, null), or about to be replaced).
   * `idleSince`: the pool's clock when it last finished a response, when that was before now (a
   * connection bound to a client until now): its idle age goes on from there, so the limits of
   * acquire() and the sweep count all of its idle time.
   */
  release(key: string, socket: ForwarderSocket, idleSince?: number): void {
    const now = this.now();
    const since = idleSince === undefined || idleSince > now ? now : idleSince;
    if (this.closed || socket.destroyed || !socket.writable || !socket.readable || now - since > this.idleTimeoutMs) {
      own(socket, null);
      socket.destroy();
      return;
    }
    let list = this.idle.get(key);
    if (list === undefined) {
      list = [];
      this.idle.set(key, list);
    }
    if (list.length >= this.maxIdlePerDest) {
      // Keep the freshest; the oldest is the likeliest to be timed out by the server.
      if (since < list[0]!.parkedAt) {
        own(socket, null);
        socket.destroy();
        return;
      }
      const oldest = list.shift()!;
      own(oldest.socket, null);
      oldest.socket.destroy();
    }
    // In order of idle age (acquire() takes the last, the sweep closes from the front).
    let i = list.length;
    while (i > 0 && list[i - 1]!.parkedAt > since) i--;
    const c = new IdleConn(this, key, socket, since);
    if (i === list.length) list.push(c);
    else list.splice(i, 0, c);
    if (this.sweeper === null) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(1, this.idleTimeoutMs / 4));
      this.sweeper.unref();
    }
  }

  /** Removes and destroys one parked connection. */
  evict(c: IdleConn): void {
    const list = this.idle.get(c.key);
    if (list !== undefined) {
      const i = list.indexOf(c);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.idle.delete(c.key);
    }
    own(c.socket, null);
    c.socket.destroy();
  }

  /**
   * Closes the connections parked longer than the idle timeout (the timer runs it every quarter
   * of the timeout, so one is closed at most 1.25 timeouts after it was parked); stops the timer
   * when none is left.
   */
  sweep(): void {
    const oldest = this.now() - this.idleTimeoutMs;
    for (const [key, list] of this.idle) {
      // Parked in order: the stale ones are at the front.
      let n = 0;
      while (n < list.length && list[n]!.parkedAt < oldest) n++;
      if (n === list.length) this.evictAll(key, list);
      else if (n > 0) for (const c of list.splice(0, n)) this.destroyParked(c);
    }
    if (this.idle.size === 0) this.stopSweep();
  }

  /** Idle connections, for one destination or all. */
  idleCount(key?: string): number {
    if (key !== undefined) return this.idle.get(key)?.length ?? 0;
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** Closes every idle connection; later releases destroy their connection. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const c of list) this.destroyParked(c);
    this.idle.clear();
    this.stopSweep();
  }

  private evictAll(key: string, list: IdleConn[]): void {
    this.idle.delete(key);
    for (const c of list) this.destroyParked(c);
    list.length = 0;
  }

  private destroyParked(c: IdleConn): void {
    own(c.socket, null);
    c.socket.destroy();
  }

  private stopSweep(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}
