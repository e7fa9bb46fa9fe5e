// Idle keep-alive upstream connections, per destination ip:port. A connection is parked here
// only after a complete response that both sides meant to keep alive. While parked it is
// watched: any byte, FIN, error or idle timeout removes and destroys it.

import type * as net from 'node:net';
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

class IdleConn {
  readonly socket: net.Socket;
  readonly key: string;
  /** The pool's clock when parked. */
  parkedAt = 0;
  private readonly pool: UpstreamPool;
  private readonly drop: () => void;

  constructor(pool: UpstreamPool, key: string, socket: net.Socket) {
    this.pool = pool;
    this.key = key;
    this.socket = socket;
    this.drop = () => this.pool.evict(this);
  }

  park(idleTimeoutMs: number): void {
    const s = this.socket;
    this.parkedAt = this.pool.now();
    s.on('data', this.drop); // a parked connection must be silent
    s.on('end', this.drop);
    s.on('error', this.drop);
    s.on('close', this.drop);
    s.on('timeout', this.drop);
    s.setTimeout(idleTimeoutMs);
    s.resume(); // read so a FIN is noticed while parked
  }

  unpark(): void {
    const s = this.socket;
    s.pause();
    s.setTimeout(0);
    s.off('data', this.drop);
    s.off('end', this.drop);
    s.off('error', this.drop);
    s.off('close', this.drop);
    s.off('timeout', this.drop);
  }
}

export class UpstreamPool {
  private readonly idle = new Map<string, IdleConn[]>();
  private readonly maxIdlePerDest: number;
  /** Also the longest a connection stays bound to an idle client before it is replaced. */
  readonly idleTimeoutMs: number;
  private closed = false;
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
   */
  acquire(key: string, maxIdleMs = Infinity): net.Socket | null {
    const list = this.idle.get(key);
    if (list === undefined) return null;
    while (list.length > 0) {
      if (this.now() - list[list.length - 1]!.parkedAt > maxIdleMs) return null; // the freshest is too old

      const c = list.pop()!;
      c.unpark();
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

  /** Parks a connection with no listeners of the caller left on it. */
  release(key: string, socket: net.Socket): void {
    if (this.closed || socket.destroyed || !socket.writable || !socket.readable) {
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
      const oldest = list.shift()!;
      oldest.unpark();
      oldest.socket.destroy();
    }
    const c = new IdleConn(this, key, socket);
    c.park(this.idleTimeoutMs);
    list.push(c);
  }

  /** Removes and destroys one parked connection. */
  evict(c: IdleConn): void {
    const list = this.idle.get(c.key);
    if (list !== undefined) {
      const i = list.indexOf(c);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.idle.delete(c.key);
    }
    c.unpark();
    c.socket.destroy();
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
    for (const list of this.idle.values()) {
      for (const c of list) {
        c.unpark();
        c.socket.destroy();
      }
    }
    this.idle.clear();
  }
}
