import test from 'ava';
import { execFile } from 'node:child_process';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { promisify } from 'node:util';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream, startHarness, type HarnessOptions } from '../src/proxy/http2/harness.ts';
import { waitFor } from './helpers/until.ts';
import { freePort } from './helpers/ports.ts';
import { frame, PREFACE, rstFrame } from './helpers/h2-raw.ts';

const run = promisify(execFile);
const C = http2.constants;

function route(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) {
  switch (headers[':path']) {
    case '/refuse':
      stream.close(C.NGHTTP2_REFUSED_STREAM);
      return;
    case '/reset-mid':
      stream.respond({ ':status': 200 });
      stream.write('partial');
      setTimeout(() => stream.close(C.NGHTTP2_INTERNAL_ERROR), 30);
      return;
    case '/die-mid':
      stream.respond({ ':status': 200 });
      stream.write('partial', () => setTimeout(() => stream.session?.socket.destroy(), 30));
      return;
    case '/hang':
      stream.respond({ ':status': 200 });
      stream.write('waiting');
      return; // until the client gives up
    default:
      stream.respond({ ':status': 200 });
      stream.end('ok');
  }
}

async function setup(t: { teardown(fn: () => unknown): void }, extra: Partial<HarnessOptions> = {}, handlerOpts = {}) {
  const up = await startH2Upstream(route);
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool, ...handlerOpts }), dest: { ip: '127.0.0.1', port: up.port }, ...extra });
  t.teardown(async () => { pool.close(); await proxy.close(); await up.close(); });
  return { up, pool, proxy };
}

function connect(port: number) {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  return client;
}

/** Resolves with the response headers (or null) and the stream's close code. */
function exchange(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, endStream = true) {
  const req = client.request(headers, { endStream });
  req.on('error', () => {});
  let response: http2.IncomingHttpHeaders | null = null;
  let body = '';
  req.on('response', (h) => { response = h; });
  req.on('data', (c: Buffer) => { body += c; });
  return new Promise<{ response: http2.IncomingHttpHeaders | null; body: string; rstCode: number }>((resolve) =>
    req.on('close', () => resolve({ response, body, rstCode: req.rstCode ?? 0 })));
}

test('a client reset reaches the server stream with the same code', async (t) => {
  const { proxy, up } = await setup(t);
  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  for (const code of [C.NGHTTP2_CANCEL, C.NGHTTP2_INTERNAL_ERROR]) {
    const before = up.closeCodes.length;
    const req = client.request({ ':path': '/hang' });
    req.on('error', () => {});
    await new Promise((r) => req.once('data', r));
    req.close(code);
    await waitFor(() => up.closeCodes.length === before + 1);
    t.is(up.closeCodes.at(-1), code);
  }
  await waitFor(() => proxy.sink.requests.length === 2);
  t.true(proxy.sink.requests.every((e) => !e.success && e.status === 200));
});

test('an upstream reset reaches the client with the same code, before or after headers', async (t) => {
  const { proxy } = await setup(t);
  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  const refused = await exchange(client, { ':path': '/refuse' });
  t.is(refused.response, null);
  t.is(refused.rstCode, C.NGHTTP2_REFUSED_STREAM);
  // Request body left open: node's server turns close(code) on a half-closed stream into a
  // clean END_STREAM, so only an open stream makes it send RST_STREAM.
  const mid = await exchange(client, { ':method': 'POST', ':path': '/reset-mid' }, false);
  t.is(Number(mid.response?.[':status']), 200);
  t.is(mid.body, 'partial');
  t.is(mid.rstCode, C.NGHTTP2_INTERNAL_ERROR);
  // The upstream connection dying mid-body must not leave the client stream hanging.
  const died = await exchange(client, { ':path': '/die-mid' });
  t.is(died.body, 'partial');
  t.not(died.rstCode, C.NGHTTP2_NO_ERROR);
  // The session to the client survives stream resets.
  t.is((await exchange(client, { ':path': '/' })).body, 'ok');
});

test('upstream refusing connections: 502 for HTTP, trailers-only UNAVAILABLE for gRPC', async (t) => {
  const port = await freePort(); // nothing listens there, and no listen(0) or dial can take it (helpers/ports.ts)
  const proxy = await startHarness({ handler: createHttp2Handler({ pool: new Http2SessionPool() }), dest: { ip: '127.0.0.1', port } });
  t.teardown(() => proxy.close());
  const { stdout } = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${proxy.port}/x`]);
  t.is(stdout, '502');
  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  const g = await exchange(client, { ':method': 'POST', ':path': '/pkg.Svc/M', 'content-type': 'application/grpc', te: 'trailers' });
  t.is(Number(g.response?.[':status']), 200);
  t.is(g.response?.['grpc-status'], '14');
  t.regex(String(g.response?.['grpc-message']), /unreachable.*ECONNREFUSED/);
  t.is(g.response?.['mesh-proxy-error'], 'unreachable');
  await waitFor(() => proxy.sink.requests.length === 2);
  t.like(proxy.sink.requests[0], { status: 502, success: false });
  t.like(proxy.sink.requests[1], { status: 200, grpcStatus: 14, success: false });
  t.truthy(proxy.sink.requests[1].error);
});

test('upstream connect timeout: 504 for HTTP, UNAVAILABLE for gRPC', async (t) => {
  // A connect whose name lookup never answers stays "connecting" forever, like a SYN
  // nobody answers, without sending a packet anywhere.
  const dial = () => net.connect({ host: 'blackhole.invalid', port: 9, lookup: (() => {}) as unknown as net.LookupFunction });
  const proxy = await startHarness({
    handler: createHttp2Handler({ pool: new Http2SessionPool() }),
    dest: { ip: '127.0.0.1', port: 9 },
    dial,
    limits: { upstreamConnectTimeoutMs: 150 },
  });
  t.teardown(() => proxy.close());
  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  const started = Date.now();
  const r = await exchange(client, { ':path': '/' });
  t.is(Number(r.response?.[':status']), 504);
  t.true(Date.now() - started >= 140);
  t.is(r.response?.['mesh-proxy-error'], 'connect-timeout');
  const g = await exchange(client, { ':method': 'POST', ':path': '/p.S/M', 'content-type': 'application/grpc+proto' });
  t.is(g.response?.['grpc-status'], '14');
  t.is(g.response?.['mesh-proxy-error'], 'connect-timeout');
});

// --- raw frames -------------------------------------------------------------

// :method GET, :scheme http, :path /, :authority x (HPACK static table indexes).
const GET_BLOCK = Buffer.from([0x82, 0x86, 0x84, 0x41, 0x01, 0x78]);
const headersFrame = (id: number) => frame(0x1, 0x5, id, GET_BLOCK);

/** Reads frames until the peer closes; resolves with the GOAWAY error code, if any. */
function watchGoaway(sock: net.Socket): Promise<{ goaway: number | null; closed: true }> {
  let buf = Buffer.alloc(0);
  let goaway: number | null = null;
  sock.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      if (buf[3] === 0x7 && goaway === null) goaway = buf.readUInt32BE(9 + 4);
      buf = buf.subarray(9 + len);
    }
  });
  sock.on('error', () => {});
  return new Promise((resolve) => sock.on('close', () => resolve({ goaway, closed: true })));
}

test('malformed frames get GOAWAY and the proxy keeps serving other clients', async (t) => {
  const { proxy } = await setup(t);
  const sock = net.connect(proxy.port, '127.0.0.1');
  const done = watchGoaway(sock);
  // SETTINGS with a length that is not a multiple of 6, then DATA on stream 0.
  sock.write(Buffer.concat([PREFACE, frame(0x4, 0, 0), frame(0x4, 0, 0, Buffer.alloc(5)), frame(0x0, 0, 0, Buffer.from('x'))]));
  const { goaway } = await done;
  t.is(goaway, C.NGHTTP2_FRAME_SIZE_ERROR);

  const garbage = net.connect(proxy.port, '127.0.0.1');
  const g = watchGoaway(garbage);
  garbage.write(Buffer.concat([PREFACE, Buffer.from('this is not a frame at all, just text\r\n\r\n')]));
  t.not((await g).goaway, null);

  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  t.is((await exchange(client, { ':path': '/' })).body, 'ok');
});

test('rapid reset flood: GOAWAY ENHANCE_YOUR_CALM, few upstream streams, bounded memory', async (t) => {
  const { proxy, up } = await setup(t, {}, { maxResetsPerWindow: 1000, resetWindowMs: 10_000 });
  const sock = net.connect(proxy.port, '127.0.0.1');
  const done = watchGoaway(sock);
  await new Promise((r) => sock.once('connect', r));
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  sock.write(Buffer.concat([PREFACE, frame(0x4, 0, 0)]));
  // 50,000 streams opened and cancelled at once, written in batches as a flood would.
  const pairs = 50_000;
  let id = 1;
  const writeBatch = () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 500 && id < pairs * 2; i++, id += 2) parts.push(headersFrame(id), rstFrame(id, C.NGHTTP2_CANCEL));
    if (parts.length === 0 || sock.destroyed) return;
    if (sock.write(Buffer.concat(parts))) setImmediate(writeBatch);
    else sock.once('drain', writeBatch);
  };
  writeBatch();
  const { goaway } = await done;
  t.is(goaway, C.NGHTTP2_ENHANCE_YOUR_CALM);
  t.true(id < pairs * 2, 'the proxy closed the connection before the flood ended');
  // Streams that were already reset when JS saw them never cost an upstream stream.
  t.true(up.streams < 1100, `upstream streams: ${up.streams}`);
  t.true(process.memoryUsage().heapUsed - heapBefore < 64 * 1024 * 1024);

  const client = connect(proxy.port);
  t.teardown(() => client.destroy());
  t.is((await exchange(client, { ':path': '/' })).body, 'ok');
});
