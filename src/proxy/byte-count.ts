// A Duplex that is not a socket (an in-process pair's end, a tunnel's stream) given
// net.Socket's `bytesRead` and `bytesWritten`, which the forwarders' connection telemetry reads
// from a client (dispatch.ts watchHandledConn): counted as its reads are pushed and its writes
// handed down (_write, and _writev where the stream has one).
import type { Duplex } from 'node:stream';

export type ByteCounted<T extends Duplex> = T & { bytesRead: number; bytesWritten: number };

type WriteCb = (e?: Error | null) => void;

export function countBytes<T extends Duplex>(d: T): ByteCounted<T> {
  const s = d as ByteCounted<T>;
  s.bytesRead = 0;
  s.bytesWritten = 0;
  const push = d.push;
  d.push = function (this: T, chunk: any, encoding?: BufferEncoding): boolean {
    if (chunk !== null && chunk !== undefined) s.bytesRead += typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.length;
    return push.call(this, chunk, encoding);
  };
  const w = d as unknown as { _write: (c: Buffer, e: BufferEncoding, cb: WriteCb) => void; _writev?: ((cs: Array<{ chunk: Buffer }>, cb: WriteCb) => void) | null };
  const write = w._write;
  w._write = function (this: T, chunk, encoding, cb) {
    s.bytesWritten += chunk.length;
    return write.call(this, chunk, encoding, cb);
  };
  const writev = w._writev;
  if (typeof writev === 'function') {
    w._writev = function (this: T, chunks, cb) {
      for (const c of chunks) s.bytesWritten += c.chunk.length;
      return writev.call(this, chunks, cb);
    };
  }
  return s;
}
