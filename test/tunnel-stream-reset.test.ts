// A tunnel stream (tunnel/upstream.ts) whose peer resets it with NO_ERROR after our side of it
// ended and before its own END_STREAM. RFC 9113 8.1 gives NO_ERROR the meaning "complete, stop
// sending" only after the sender's END_STREAM; before it, the sender's direction was cut, as a TCP
// reset cuts it (the other agent destroys a stream without an error: its idle timeout, an HTTP/1
// pool dropping a connection). Node ends such a stream's readable side cleanly ('end'), and only
// when our side was still open does it say 'aborted': with ours ended first, the forwarders passed
// the cut on as a FIN, and the other leg took a truncated stream for a whole one. Both ends: the
// client's agent (a ClientHttp2Stream) and the destination's (a ServerHttp2Stream), over h2c.
import test, { type ExecutionContext } from 'ava';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { once } from 'node:events';
import * as netMod from 'node:net';
import { clientUpstream, serverDownstream } from '../src/tunnel/upstream.ts';
import { forwardOpaque, ignoreError, type OpaqueCloseEvent } from '../src/proxy/opaque.ts';
import { defaultLimits, type ConnContext } from '../src/proxy/context.ts';
import { RecordingSink } from '../src/telemetry/events.ts';

async function h2Server(t: ExecutionContext, onStream: (stream: http2.ServerHttp2Stream) => void): Promise<http2.ClientHttp2Session> {
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    onStream(stream);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  session.on('error', () => {});
  t.teardown(() => {
    session.destroy();
    server.close();
  });
  return session;
}

/** A CONNECT from the client's agent, answered, once the destination's handler holds its stream. */
async function answeredConnect(session: http2.ClientHttp2Session, handled: Promise<void>): Promise<http2.ClientHttp2Stream> {
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  req.on('error', () => {});
  req.resume();
  await once(req, 'response');
  await handled;
  return req;
}

/** How a tunnel stream's readable side ended: 'end' (a FIN for the other leg) or the error's code; and what it read. */
function outcome(sock: net.Socket): Promise<{ end: string; read: string }> {
  let read = '';
  sock.on('data', (d: Buffer) => { read += d.toString(); });
  sock.resume(); // a 'data' listener alone does not restart a paused stream
  return new Promise((resolve) => {
    sock.once('end', () => resolve({ end: 'end', read }));
    sock.once('error', (err: NodeJS.ErrnoException) => resolve({ end: err.code ?? err.message, read }));
  });
}

test('the client\'s agent: the destination\'s RST_STREAM(NO_ERROR) after our END_STREAM, before its own, is a reset (ECONNRESET), not a FIN', async (t) => {
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.resume();
    // Once the client's side ended: some of an answer, then a reset with no END_STREAM.
    stream.once('end', () => stream.write('partial', () => stream.destroy()));
  });
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  const sock = clientUpstream(req, '10.0.0.1:80');
  const result = outcome(sock);
  await once(sock, 'connect');
  sock.end('request');
  t.deepEqual(await result, { end: 'ECONNRESET', read: 'partial' });
  t.is(req.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the reset came with NO_ERROR');
});

test('the destination\'s agent: the client\'s RST_STREAM(NO_ERROR) after our END_STREAM, before its own, is a reset (ECONNRESET), not a FIN', async (t) => {
  let result!: Promise<{ end: string; read: string }>;
  let got!: () => void;
  const gotStream = new Promise<void>((resolve) => { got = resolve; });
  const session = await h2Server(t, (stream) => {
    const sock = serverDownstream(stream);
    result = outcome(sock);
    stream.respond({ ':status': 200 });
    sock.end(); // the pod's FIN: our side ended
    got();
  });
  const req = await answeredConnect(session, gotStream);
  // The client's agent sends part of an upload, then drops the stream (destroy(): RST_STREAM NO_ERROR).
  req.write('part of an upload', () => req.destroy());
  t.deepEqual(await result, { end: 'ECONNRESET', read: 'part of an upload' });
});

test('a whole stream the peer ends (END_STREAM) and then resets with NO_ERROR is ended, not reset: its bytes and FIN go on', async (t) => {
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.resume();
    stream.once('end', () => stream.end('whole answer', () => stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  });
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  const sock = clientUpstream(req, '10.0.0.1:80');
  const result = outcome(sock);
  await once(sock, 'connect');
  sock.end('request');
  t.deepEqual(await result, { end: 'end', read: 'whole answer' });
});

test('the same, read only after the reset came (its bytes and END_STREAM held unread meanwhile): still ended, not reset', async (t) => {
  let serverClosed!: () => void;
  const closed = new Promise<void>((resolve) => { serverClosed = resolve; });
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.resume();
    stream.once('close', serverClosed);
    stream.once('end', () => stream.end('whole answer', () => stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  });
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  const sock = clientUpstream(req, '10.0.0.1:80');
  sock.pause();
  await once(sock, 'connect');
  sock.end('request');
  await closed;
  // A PING round trip: the client session has read what the server sent before its answer.
  await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
  t.deepEqual(await outcome(sock), { end: 'end', read: 'whole answer' });
});

// RFC 9113 8.1: a server may send its whole response and then RST_STREAM(NO_ERROR) to tell the
// client to stop sending; the response must still be delivered. With our side still open, node
// reports that reset as 'aborted' (at once, whatever the reader has taken of the stream): a reader
// paused by backpressure (a slow client) lost the buffered answer and its FIN.

/** A PING round trip: the session has read every frame the peer sent before answering it. */
const pinged = (session: http2.ClientHttp2Session) =>
  new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));

/** outcome() for a reader paused until `read()`: its end or error is caught from now on. */
function held(sock: net.Socket): { read(): Promise<{ end: string; read: string }> } {
  let read = '';
  const end = new Promise<string>((resolve) => {
    sock.once('end', () => resolve('end'));
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  return {
    read() {
      sock.on('data', (d: Buffer) => { read += d.toString(); });
      sock.resume();
      return end.then((e) => ({ end: e, read }));
    },
  };
}

/** The client's agent, its reader paused: the destination answers the request, then `after(stream)`. */
async function pausedClient(t: ExecutionContext, after: (stream: http2.ServerHttp2Stream) => void) {
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.once('data', () => after(stream));
  });
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  const sock = clientUpstream(req, '10.0.0.1:80');
  sock.pause();
  const result = held(sock);
  await once(sock, 'connect');
  sock.write('request'); // our side stays open
  return { session, req, sock, result };
}

test('the client\'s agent, its reader paused: a whole answer (END_STREAM) then RST_STREAM(NO_ERROR) while our side is open is delivered with its FIN; our direction stops', async (t) => {
  const { session, req, sock, result } = await pausedClient(t, (stream) => stream.end('whole answer', () => stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  await once(req, 'aborted');
  await pinged(session);
  t.is(req.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the reset came with NO_ERROR');
  t.deepEqual(await result.read(), { end: 'end', read: 'whole answer' });
  t.true(sock.writableEnded, 'our direction stopped: nothing more is sent on the stream');
  if (!sock.closed) await once(sock, 'close');
  t.true(sock.writableFinished, 'a clean close for the forwarders (not an abort to pass on)');
});

test('the destination\'s agent, its reader paused: a whole upload (END_STREAM) then RST_STREAM(NO_ERROR) while our side is open is delivered with its FIN', async (t) => {
  let result!: ReturnType<typeof held>;
  let aborted!: Promise<unknown>;
  let got!: () => void;
  const gotStream = new Promise<void>((resolve) => { got = resolve; });
  let sock!: net.Socket;
  const session = await h2Server(t, (stream) => {
    sock = serverDownstream(stream);
    sock.pause();
    result = held(sock);
    aborted = once(stream, 'aborted');
    stream.respond({ ':status': 200 });
    sock.write('part of an answer'); // our side stays open
    got();
  });
  const req = await answeredConnect(session, gotStream);
  req.end('whole upload', () => req.close(http2.constants.NGHTTP2_NO_ERROR));
  await aborted;
  t.deepEqual(await result.read(), { end: 'end', read: 'whole upload' });
  t.true(sock.writableEnded, 'our direction stopped');
});

test('a reset with an error code after the peer\'s END_STREAM, our side open, stays a reset (ECONNRESET)', async (t) => {
  const { session, req, sock, result } = await pausedClient(t, (stream) => stream.end('whole answer', () => stream.close(http2.constants.NGHTTP2_CANCEL)));
  await once(req, 'aborted');
  await pinged(session);
  t.like(await result.read(), { end: 'ECONNRESET' });
});

test('a RST_STREAM(NO_ERROR) before the peer\'s END_STREAM, our side open, stays a reset (ECONNRESET)', async (t) => {
  const { session, req, sock, result } = await pausedClient(t, (stream) => stream.write('partial', () => stream.destroy()));
  await once(req, 'aborted');
  await pinged(session);
  t.is(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  t.like(await result.read(), { end: 'ECONNRESET' });
});

/**
 * The opaque forwarder between a client's TCP connection and a tunnel stream (a CONNECT on
 * `session`), handed over once `detected(stream)` resolves (protocol detection's wait): its port,
 * the stream, its 'close' once the forwarder has handled it, and the connection's close event.
 */
async function opaqueOverTunnel(t: ExecutionContext, session: http2.ClientHttp2Session, detected: (up: net.Socket) => Promise<unknown> = async () => {}) {
  let closeEv!: (ev: OpaqueCloseEvent) => void;
  const closed = new Promise<OpaqueCloseEvent>((resolve) => { closeEv = resolve; });
  let gotUp!: (up: net.Socket) => void;
  const upstream = new Promise<net.Socket>((resolve) => { gotUp = resolve; });
  let upClose!: () => void;
  const upClosed = new Promise<void>((resolve) => { upClose = resolve; });
  const proxy = netMod.createServer({ allowHalfOpen: true, pauseOnConnect: true }, async (client) => {
    const ctx: ConnContext = {
      connId: 1, client, telemetry: new RecordingSink(), openedAt: Date.now(),
      endpoints: { direction: 'outbound', sourceIp: '127.0.0.1', sourcePort: 0, sourcePodKey: 0n, destIp: '10.0.0.1', destPort: 80 },
      dial: () => { throw new Error('the test gives the forwarder its upstream'); },
    };
    const up = clientUpstream(session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' }), '10.0.0.1:80');
    up.on('error', ignoreError); // as the dispatcher's, until the forwarder takes the stream
    up.pause();
    gotUp(up);
    await detected(up);
    forwardOpaque(ctx, up, defaultLimits, { protocol: 'opaque', detectedBy: 'test', detectMs: 0, onClose: closeEv });
    up.once('close', upClose); // after the forwarder's own listener
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  t.teardown(() => proxy.close());
  return { port: (proxy.address() as net.AddressInfo).port, upstream, upClosed, closed };
}

test('the opaque forwarder over a tunnel stream: a whole answer then RST_STREAM(NO_ERROR) reaches the client with its FIN, and the connection closes without an error', async (t) => {
  let serverClosed!: Promise<unknown>;
  const session = await h2Server(t, (stream) => {
    serverClosed = once(stream, 'close');
    stream.respond({ ':status': 200 });
    stream.once('data', () => stream.end('whole answer', () => stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  });
  const proxy = await opaqueOverTunnel(t, session);
  const c = netMod.connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
  c.on('error', () => {});
  c.write('request');
  const result = outcome(c);
  t.deepEqual(await result, { end: 'end', read: 'whole answer' });
  await serverClosed;
  c.end();
  const ev = await proxy.closed;
  t.is(ev.error, undefined, 'a complete exchange, not an upstream reset');
  t.is(ev.bytesOut, 'whole answer'.length);
});

// A server that speaks first, answers whole and says "stop sending" while detection still waits
// for the client: the tunnel stream is closed, cleanly, before the forwarder gets it, its answer
// and END_STREAM unread. The forwarder took any socket closed before the hand-over for a dead one
// and reset the client; the answer and a FIN are the client's. A stream reset before the
// hand-over stays a reset.
async function closedBeforeHandOver(t: ExecutionContext, rstCode: number) {
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.end('banner and all', () => stream.close(rstCode));
  });
  // An HTTP/2 stream's `closed` is its state (the peer's RST_STREAM came), 'aborted' its news; a
  // stream that still holds unread bytes emits 'close' only once they are read.
  const proxy = await opaqueOverTunnel(t, session, async (up) => {
    if (!up.closed) await once(up, 'aborted');
  });
  const c = netMod.connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
  c.on('error', () => {});
  const up = await proxy.upstream;
  const result = outcome(c);
  return { c, up, result: await result, closed: proxy.closed };
}

test('the opaque forwarder gets a tunnel stream the peer answered, ended and reset with NO_ERROR during detection: the client gets the answer and a FIN', async (t) => {
  const { c, up, result, closed } = await closedBeforeHandOver(t, http2.constants.NGHTTP2_NO_ERROR);
  t.is((up as unknown as http2.ClientHttp2Stream).rstCode, http2.constants.NGHTTP2_NO_ERROR);
  t.deepEqual(result, { end: 'end', read: 'banner and all' }, 'the answer and a FIN, not ECONNRESET');
  c.end('dropped: the peer said stop');
  const ev = await closed;
  t.is(ev.error, undefined, 'a complete exchange');
  t.is(ev.bytesOut, 'banner and all'.length);
});

test('the same reset with an error code (CANCEL) during detection stays a reset', async (t) => {
  const { result, closed } = await closedBeforeHandOver(t, http2.constants.NGHTTP2_CANCEL);
  t.is(result.end, 'ECONNRESET');
  t.truthy((await closed).error, 'recorded as a failed connection');
});

// The same with a slow client still uploading: the destination reads no more of the upload (its
// stream paused: no WINDOW_UPDATE), so what the client sends after waits in our side of the tunnel
// stream, never to be sent, when the answer, END_STREAM and RST_STREAM come. That queue is what
// "stop sending" drops; it made the stream's close look unclean (writes not finished), and the
// forwarder reset the client, which lost the answer it had not read yet.
const UPLOAD = Buffer.alloc(1 << 20, 'u');

/** A client that uploads UPLOAD without reading until the tunnel stream closed; then how its download ended. */
async function slowUploader(t: ExecutionContext, rstCode: number) {
  const session = await h2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.once('data', () => {
      stream.pause();
      stream.end('whole answer', () => stream.close(rstCode));
    });
  });
  const proxy = await opaqueOverTunnel(t, session);
  const c = netMod.connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
  c.on('error', () => {});
  const download = held(c); // paused: the answer waits in the kernel for it
  c.write(UPLOAD);
  const up = await proxy.upstream;
  await proxy.upClosed;
  t.false(up.writableFinished, 'part of the upload never went out');
  return { c, result: await download.read(), closed: proxy.closed };
}

test('the opaque forwarder over a tunnel stream, a slow client still uploading: a whole answer then RST_STREAM(NO_ERROR) reaches it with its FIN; its further upload is dropped', async (t) => {
  const { c, result, closed } = await slowUploader(t, http2.constants.NGHTTP2_NO_ERROR);
  t.deepEqual(result, { end: 'end', read: 'whole answer' }, 'the whole answer and a FIN, not ECONNRESET');
  c.end(UPLOAD); // read and dropped: the destination said stop
  const ev = await closed;
  t.is(ev.error, undefined, 'a complete exchange, not an upstream reset');
  t.is(ev.bytesOut, 'whole answer'.length);
});

test('the same with RST_STREAM(CANCEL) stays a reset', async (t) => {
  const { result } = await slowUploader(t, http2.constants.NGHTTP2_CANCEL);
  t.is(result.end, 'ECONNRESET');
});
