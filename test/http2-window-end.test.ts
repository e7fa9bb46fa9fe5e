// The proxy tells a client still sending a request body nobody reads to stop (RST_STREAM NO_ERROR)
// once the upstream's response is complete; RFC 9113 8.1 allows that only after the response's
// END_STREAM. A response without trailers ends with an empty DATA frame, which is flow-controlled:
// with the client's connection window used up (here by another stream, as a client reading many
// downloads at once does) nghttp2 holds it, and a reset sent meanwhile went out first and dropped
// it: the client saw its body cut by a reset, never its end. Read by a raw client that opens its
// windows only when the test says (a node client opens them as it reads, and reads a NO_ERROR
// reset as a clean end anyway).
import test, { type ExecutionContext } from 'ava';
import * as http2 from 'node:http2';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream, startHarness } from '../src/proxy/http2/harness.ts';
import { Router } from '../src/routing/router.ts';
import { HOST, routedWorld } from './helpers/backends.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';
import { FLAG, FRAME, frame, rawClient, requestBlock, type Frame, type RawPeer } from './helpers/h2-raw.ts';

/** The connection's initial flow-control window (RFC 9113 6.9.2): SETTINGS cannot change it. */
const CONN_WINDOW = 65_535;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
/** POST /upload's response body; GET /download's is longer than the connection window. */
const ANSWER = 1000;

/**
 * POST /upload: answered with ANSWER bytes once `release` runs, and then closed (RST_STREAM NO_ERROR
 * after its END_STREAM) without reading the request. GET /download: a body longer than the window.
 */
async function upstream(t: ExecutionContext) {
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  let uploadClosed!: () => void;
  const closed = new Promise<void>((resolve) => { uploadClosed = resolve; });
  const up = await startH2Upstream((stream, headers) => {
    stream.respond({ ':status': 200 });
    if (headers[':path'] === '/upload') {
      stream.once('close', uploadClosed);
      void held.then(() => {
        stream.end(Buffer.alloc(ANSWER, 'a'));
        stream.close(http2.constants.NGHTTP2_NO_ERROR);
      });
    } else stream.end(Buffer.alloc(CONN_WINDOW + 5000, 'b'));
  });
  t.teardown(() => up.close());
  return { port: up.port, release, closed };
}


let pings = 0;
/** Two PING round trips: the proxy has acted on what it had read before (its timers and immediates included). */
async function settle(client: RawPeer): Promise<void> {
  for (let i = 0; i < 2; i++) {
    const payload = Buffer.alloc(8);
    const n = ++pings;
    payload.writeUInt32BE(n);
    client.write(frame(FRAME.PING, 0, 0, payload));
    await client.next((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0 && f.payload.readUInt32BE(0) === n);
  }
}

function windowUpdate(streamId: number, n: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(n);
  return frame(FRAME.WINDOW_UPDATE, 0, streamId, p);
}

const describe = (f: Frame) => (f.type === FRAME.RST_STREAM ? `reset ${f.payload.readUInt32BE(0)}` : 'end');

/**
 * Stream 1 POSTs /upload and never ends its body; stream 3 downloads. The download takes the whole
 * connection window, then /upload is answered; the client opens the connection window by ANSWER
 * (the answer's body goes out) and by ANSWER again (the upload's end and ANSWER bytes of the
 * download compete for it), then wide, and sends more of its body. How stream 1 ended first, its
 * body's length, and what came after (the reset telling the client to stop, expected).
 */
async function exchange(port: number, up: Awaited<ReturnType<typeof upstream>>) {
  const client = await rawClient(port);
  try {
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 0);
    settings.writeUInt32BE(1 << 20, 2); // streams' windows wide: the connection's is the one that runs out
    client.write(frame(FRAME.SETTINGS, 0, 0, settings));
    const received = (id: number) => client.frames.filter((f) => f.streamId === id && f.type === FRAME.DATA).reduce((n, f) => n + f.payload.length, 0);
    client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock('POST', '/upload')));
    client.write(frame(FRAME.DATA, 0, 1, Buffer.from('first part of a long upload')));
    await client.next((f) => f.streamId === 1 && f.type === FRAME.HEADERS);
    client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock('GET', '/download')));
    await client.next(() => received(3) >= CONN_WINDOW);
    up.release();
    await up.closed;
    await settle(client);
    client.write(windowUpdate(0, ANSWER));
    await client.next(() => received(1) >= ANSWER);
    await settle(client);
    client.write(windowUpdate(0, ANSWER));
    await settle(client);
    client.write(windowUpdate(0, 1 << 20));
    client.write(frame(FRAME.DATA, 0, 1, Buffer.from('more of it')));
    const ends = (f: Frame) => f.streamId === 1 && (f.type === FRAME.RST_STREAM || (f.type === FRAME.DATA && (f.flags & FLAG.END_STREAM) !== 0));
    const first = await client.next(ends);
    const then = first.type === FRAME.RST_STREAM ? 'nothing' : describe(await client.next((f) => f.streamId === 1 && f.type === FRAME.RST_STREAM));
    return { first: describe(first), body: received(1), then };
  } finally {
    client.sock.destroy();
  }
}

test('a response the client\'s connection window holds back ends (END_STREAM) before the reset that stops its unread request body (no route)', async (t) => {
  const up = await upstream(t);
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: HOST, port: up.port } });
  t.teardown(async () => { pool.close(); await proxy.close(); });
  t.deepEqual(await exchange(proxy.port, up), { first: 'end', body: ANSWER, then: 'reset 0' });
});

test('a response the client\'s connection window holds back ends (END_STREAM) before the reset that stops its unread request body (with a route)', async (t) => {
  const up = await upstream(t);
  const { port } = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
  t.deepEqual(await exchange(port, up), { first: 'end', body: ANSWER, then: 'reset 0' });
});
