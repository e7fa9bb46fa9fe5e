// RST_STREAM(NO_ERROR) to a client still sending a request body nobody reads, once its response is
// complete. RFC 9113 8.1 allows that reset only "after sending a complete response", and the order
// is not node:http2's to keep: a response without trailers ends with an empty DATA frame carrying
// END_STREAM, which is flow-controlled, so with the client's connection window at 0 (other streams
// share it) nghttp2 holds that frame, and a reset submitted meanwhile goes out first and drops it:
// the client got a reset, not its response's end (test/http2-window-end.test.ts). So the reset
// waits until nghttp2 has sent the END_STREAM (`state.localClose`). node:http2 says so by no event:
// it is checked as more of the body comes (what the reset is there to stop) and on a timer that
// backs off from 1 ms (a response not held back is out within a turn or two of the event loop) to
// 1 s; after `graceMs` the stream is reset anyway, as it was at once before: a client that
// opens no window for that long is not reading its response.
import type * as http2 from 'node:http2';
import { NGHTTP2_NO_ERROR } from './codes.ts';
import { DRAIN_GRACE_MS } from '../../util/http2-drain.ts';

const MAX_WAIT_MS = 1000;

/**
 * Resets `stream` with NO_ERROR once its response's END_STREAM is out (or after `graceMs`); nothing
 * if its request ends first or the stream is gone. Sets the stream flowing (a relay paused it for
 * an upstream that is gone now): the forwarders' own 'data' listeners drop what comes once the
 * upstream is gone.
 */
export function resetAfterResponseEnd(stream: http2.ServerHttp2Stream, graceMs = DRAIN_GRACE_MS): void {
  const until = performance.now() + graceMs;
  let timer: NodeJS.Timeout | undefined;
  let waitMs = 0;
  const settled = (): boolean => {
    if (stream.readableEnded || stream.closed || stream.destroyed) return true;
    if (stream.state.localClose !== 1 && performance.now() < until) return false;
    stream.close(NGHTTP2_NO_ERROR);
    return true;
  };
  const stop = (): void => {
    stream.off('data', onData);
    stream.off('close', stop);
    if (timer !== undefined) clearTimeout(timer);
  };
  const onData = (): void => {
    if (settled()) stop();
  };
  const tick = (): void => {
    timer = undefined;
    if (settled()) {
      stop();
      return;
    }
    waitMs = Math.min(Math.max(1, waitMs * 2), MAX_WAIT_MS);
    timer = setTimeout(tick, waitMs);
  };
  stream.on('data', onData);
  stream.once('close', stop);
  stream.resume();
  tick();
}
