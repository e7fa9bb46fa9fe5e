// Newline-delimited messages from a peer, with a bound: readline would buffer a line that
// never ends until memory runs out, and these streams come from the network.
import type { Readable } from 'node:stream';

export const MAX_LINE_BYTES = 1 << 20;

/**
 * Calls onLine for each complete line (without the newline; a trailing \r is dropped). A line
 * longer than maxBytes stops reading and calls onTooLong once: the caller closes the stream.
 */
export function readLines(stream: Readable, onLine: (line: string) => void, onTooLong: (bytes: number) => void, maxBytes = MAX_LINE_BYTES): void {
  let partial = '';
  let stopped = false;
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    if (stopped) return;
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      let line = partial + chunk.slice(start, nl);
      partial = '';
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line.length > maxBytes) {
        // Complete, but over the bound all the same (its end came in the chunk that crossed it).
        stopped = true;
        onTooLong(line.length);
        return;
      }
      onLine(line);
      if (stopped) return;
    }
    partial += chunk.slice(start);
    if (partial.length > maxBytes) {
      stopped = true;
      const n = partial.length;
      partial = '';
      onTooLong(n);
    }
  });
  stream.on('end', () => {
    if (!stopped && partial !== '') onLine(partial);
    partial = '';
  });
}
