/**
 * What the HTTP/1 forwarder and its pool use of a socket (http1/connection.ts, http1/pool.ts):
 * a net.Socket, the tunnel's stream and an in-process pair are one (all typed net.Socket), and so
 * is a NativeSocket (--native-io, native-socket.ts), whose reads and writes are driven from C++.
 */
export interface ForwarderSocket {
  readonly destroyed: boolean;
  /** Still connecting: writes are queued until it connects. */
  readonly connecting: boolean;
  readonly readable: boolean;
  readonly writable: boolean;
  /** Bytes written that the kernel has not taken yet. */
  readonly writableLength: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  write(b: Buffer): boolean;
  end(cb?: () => void): this;
  destroy(err?: Error): this;
  resetAndDestroy(): this;
  pause(): this;
  resume(): this;
  setNoDelay(noDelay?: boolean): this;
  // Events: 'data' (Buffer), 'end', 'drain', 'connect', 'error' (ErrnoException), 'close' (hadError).
  on(event: string, listener: (...args: any[]) => void): this;
  once(event: string, listener: (...args: any[]) => void): this;
  off(event: string, listener: (...args: any[]) => void): this;
  /**
   * Sends the last bytes `write` writes and the FIN together (fin-now.ts), when the socket can
   * do it itself; absent on Node's sockets, which fin-now.ts drives through their fd.
   */
  writeWithFin?(write: () => void): boolean;
}
