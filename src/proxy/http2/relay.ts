// One direction of a stream's body: what src.pipe(dst) did for the forwarders, with two
// listeners on src instead of pipe's six listeners across both streams (data, end, and on dst
// unpipe, drain, error, close, finish), each added and removed again per HTTP/2 stream (issue 16).
// The forwarders watch both streams' 'close' and 'error' themselves, so pipe's own handling of
// them was redundant.
import type { Readable, Writable } from 'node:stream';
import { subscribe } from 'node:diagnostics_channel';

// An upstream that resets a stream with NO_ERROR before the END_STREAM of its response (RFC 9113
// 8.1 allows that code only after a complete response): node:http2 then ends the stream's readable
// side as if the body were complete ('end', rstCode 0), so relayed on it would hand the client a
// truncated body as a whole one. Only the order tells the two apart: a reset closes the stream
// before its readable side ends, an END_STREAM ends it first; and only node's stream-close channel
// runs at that moment (in 'end' or 'close' the order is gone: through a JS stream, as through a
// tunnel, a complete stream is already closed by its 'end'). Client streams only: the upstream's.
const cutShort = new WeakSet<Readable>();
let watching = false;

/** Starts noting upstream streams reset with NO_ERROR before their end (once; pool.ts calls it when it opens a session). */
export function watchCutShort(): void {
  if (watching) return;
  watching = true;
  subscribe('http2.client.stream.close', (msg) => {
    // `_readableState.ended` (EOF read, before 'end') is Node's, not its API: read defensively, as
    // a subscriber's throw would be the process's uncaught exception. Without it: never marked.
    const s = (msg as { stream?: Readable & { rstCode?: number; _readableState?: { ended?: boolean } } } | undefined)?.stream;
    if (s !== undefined && s.rstCode === 0 && s._readableState?.ended === false) cutShort.add(s);
  });
}

/** The upstream reset the stream with NO_ERROR before the end of its body: it ended, but the body is not whole. */
export function endedByReset(src: Readable): boolean {
  return cutShort.has(src);
}

export interface Relay {
  /** Forward nothing more (pipe's unpipe): the caller is resetting the destination. */
  stop(): void;
}

/**
 * Writes src's chunks to dst as they arrive, pausing src while dst's buffer is full, and ends
 * dst when src ends (not when a reset cut it short: endedByReset; the caller resets dst on src's
 * 'close'). onChunk sees every chunk's size first. It sets src flowing, so call it only
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
    if (!stopped && !dst.destroyed && !cutShort.has(src)) dst.end();
  });
  return { stop: () => { stopped = true; } };
}
