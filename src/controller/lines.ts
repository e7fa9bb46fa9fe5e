// Newline-delimited messages from a peer, with a bound: readline would buffer a line that
// never ends until memory runs out, and these streams come from the network.
import type { Readable } from 'node:stream';

export const MAX_LINE_BYTES = 1 << 20;

/**
 * Calls onLine for each complete line (without the newline; a trailing \r is dropped). A line
 * longer than maxBytes (as UTF-8) stops reading and calls onTooLong once: the caller closes the
 * stream. The verdict does not depend on how the stream's reads cut the lines.
 */
export function readLines(stream: Readable, onLine: (line: string) => void, onTooLong: (bytes: number) => void, maxBytes = MAX_LINE_BYTES): void {
  let partial = '';
  /** UTF-8 bytes of `partial`: counted in bytes, not UTF-16 units, which would let three times the bound through. */
  let partialBytes = 0;
  let stopped = false;
  const stop = (bytes: number) => {
    stopped = true;
    partial = '';
    onTooLong(bytes);
  };
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    if (stopped) return;
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      const piece = chunk.slice(start, nl);
      let line = partial + piece;
      let bytes = partialBytes + Buffer.byteLength(piece);
      partial = '';
      partialBytes = 0;
      start = nl + 1;
      if (line.endsWith('\r')) {
        line = line.slice(0, -1);
        bytes--;
      }
      if (bytes > maxBytes) {
        // Complete, but over the bound all the same (its end came in the chunk that crossed it).
        stop(bytes);
        return;
      }
      onLine(line);
      if (stopped) return;
    }
    const rest = chunk.slice(start);
    partial += rest;
    partialBytes += Buffer.byteLength(rest);
    // A last \r may be the line's CRLF cut by the read: it is dropped if a \n follows, so it does
    // not count yet (else a line at the bound would pass whole and fail when cut there).
    if (partialBytes - (partial.endsWith('\r') ? 1 : 0) > maxBytes) stop(partialBytes);
  });
  stream.on('end', () => {
    if (!stopped && partial !== '') {
      // An unterminated last line keeps its \r, so the exemption above no longer applies.
      if (partialBytes > maxBytes) stop(partialBytes);
      else onLine(partial);
    }
    partial = '';
  });
}
