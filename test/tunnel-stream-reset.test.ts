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
import { clientUpstream, serverDownstream } from '../src/tunnel/upstream.ts';

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
  const req = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  req.on('error', () => {});
  req.resume();
  await once(req, 'response');
  await gotStream;
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
