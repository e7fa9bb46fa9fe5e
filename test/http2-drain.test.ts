// drainUnread's grace (src/util/http2-drain.ts) on a real node:http2 server on loopback: a stream
// answered before its body was read is gone within the grace, also when something paused it (its
// unread data then keeps node from ever ending a stream closed by both sides), and a client that
// never finishes its declared body gets RST_STREAM NO_ERROR after its answer.
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { drainUnread } from '../src/util/http2-drain.ts';
import { HOST } from './helpers/backends.ts';

const GRACE_MS = 300;
const CHUNK = Buffer.alloc(8 * 1024, 'x');

/** A server that answers 200 at once and drains; `pause` pauses the stream on its first chunk (a careless caller). */
async function server(t: ExecutionContext, pause: boolean): Promise<{ url: string; closed: Promise<void> }> {
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  const s = http2.createServer();
  s.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200 });
    stream.end('answered');
    if (pause) stream.once('data', () => stream.pause());
    t.true(drainUnread(stream, headers['content-length'], GRACE_MS), 'a declared body under the limit is drained');
    stream.once('close', closedResolve);
  });
  await new Promise<void>((r) => s.listen(0, HOST, r));
  t.teardown(() => s.close());
  return { url: `http://${HOST}:${(s.address() as AddressInfo).port}`, closed };
}

/** A POST that declares `declared` bytes and sends `chunks` of 8 KiB (and its end if `end`) once answered; its close, awaited from the start. */
async function post(t: ExecutionContext, url: string, chunks: number, declared: number, end: boolean): Promise<{ req: http2.ClientHttp2Stream; closed: Promise<unknown> }> {
  const session = http2.connect(url);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const req = session.request({ ':method': 'POST', ':path': '/', 'content-length': declared }, { endStream: false });
  req.on('error', () => {});
  const closed = once(req, 'close');
  const [head] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  t.is(Number(head[':status']), 200);
  req.resume();
  for (let i = 0; i < chunks; i++) req.write(CHUNK);
  if (end) req.end();
  return { req, closed };
}

test('a drained stream that a caller paused is still gone within the grace (closed by both sides, its unread data would hold it for good)', async (t) => {
  const { url, closed } = await server(t, true);
  const { req, closed: reqClosed } = await post(t, url, 6, 6 * CHUNK.length, true);
  await closed; // the server's stream: with close() alone it never comes
  await reqClosed;
  t.is(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
});

test('a client that never finishes its declared body gets RST_STREAM NO_ERROR after its answer, within the grace', async (t) => {
  const { url, closed } = await server(t, false);
  const { req, closed: reqClosed } = await post(t, url, 2, 6 * CHUNK.length, false);
  await reqClosed;
  t.is(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  await closed;
});
