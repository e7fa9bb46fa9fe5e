// One direction of a stream's body: what src.pipe(dst) did for the forwarders, with two
// listeners on src instead of pipe's six listeners across both streams (data, end, and on dst
// unpipe, drain, error, close, finish), each added and removed again per HTTP/2 stream (issue 16).
// The forwarders watch both streams' 'close' and 'error' themselves, so pipe's own handling of
// them was redundant.
import type { Readable, Writable } from 'node:stream';

export interface Relay {
  /** Forward nothing more (pipe's unpipe): the caller is resetting the destination. */
  stop(): void;
}

/**
 * Writes src's chunks to dst as they arrive, pausing src while dst's buffer is full, and ends
 * dst when src ends. onChunk sees every chunk's size first. It sets src flowing, so call it only
 * once dst may receive (DATA already read with the headers is delivered, not lost).
 */
export function relay(src: Readable, dst: Writable, onChunk: (bytes: number) => void): Relay {
  let stopped = false;
  const resume = () => {
    if (!stopped) src.resume();
  };
  src.on('data', (chunk: Buffer) => {
    if (stopped || dst.destroyed) return;
    onChunk(chunk.length);
    if (!dst.write(chunk)) {
      src.pause();
      dst.once('drain', resume);
    }
  });
  src.once('end', () => {
    if (!stopped && !dst.destroyed) dst.end();
  });
  return { stop: () => { stopped = true; } };
}
