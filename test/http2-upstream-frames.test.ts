// The forwarders against an upstream whose frames are scripted byte by byte (helpers/h2-raw.ts),
// read back frame by frame by a raw client: what node:http2 peers would not send, or would not
// show (a node client reads RST_STREAM(NO_ERROR) mid-body as a clean end of the body).
import test, { type ExecutionContext } from 'ava';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream, startHarness } from '../src/proxy/http2/harness.ts';
import { Router } from '../src/routing/router.ts';
import type { RecordingSink } from '../src/telemetry/events.ts';
import { HOST, routedWorld } from './helpers/backends.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';
import { FLAG, FRAME, frame, rawClient, requestBlock, responseBlock, rstFrame, startRawH2Server, type Frame, type RawPeer } from './helpers/h2-raw.ts';
import { waitFor } from './helpers/until.ts';

const NO_ERROR = 0;
const INTERNAL_ERROR = 2;

/**
 * A raw upstream: its first request gets HEADERS, DATA 'partial', then RST_STREAM(NO_ERROR) without
 * END_STREAM; any later one the whole 'whole' (no HPACK decoder here to read the path: the tests
 * send one request at a time, /cut first).
 */
async function cuttingUpstream(t: ExecutionContext) {
  let requests = 0;
  const up = await startRawH2Server((f, peer) => {
    if (f.type !== FRAME.HEADERS) return;
    const id = f.streamId;
    peer.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, responseBlock()));
    if (requests++ === 0) {
      peer.write(Buffer.concat([frame(FRAME.DATA, 0, id, Buffer.from('partial')), rstFrame(id, NO_ERROR)]));
    } else {
      peer.write(frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.from('whole')));
    }
  });
  t.teardown(() => up.close());
  return up;
}

/** How stream `id` ended at the raw client: 'end' (END_STREAM) or 'reset N'; and the DATA it carried. */
async function outcome(client: RawPeer, id: number): Promise<{ end: string; body: string }> {
  const last = await client.next((f) => f.streamId === id && (f.type === FRAME.RST_STREAM || (f.flags & FLAG.END_STREAM) !== 0));
  const body = Buffer.concat(client.frames.filter((f: Frame) => f.streamId === id && f.type === FRAME.DATA).map((f) => f.payload)).toString();
  return { end: last.type === FRAME.RST_STREAM ? `reset ${last.payload.readUInt32BE(0)}` : 'end', body };
}

/** Through a JS stream, as through a tunnel (tunnel/upstream.ts): node:http2 then runs its callbacks in another order. */
function viaDuplex(ip: string, port: number): net.Socket {
  const sock = net.connect(port, ip);
  const d = new Duplex({
    read() { sock.resume(); },
    write(chunk, _enc, cb) { sock.write(chunk, cb); },
    final(cb) { sock.end(); cb(); },
    destroy(err, cb) { sock.destroy(); cb(err); },
  });
  sock.on('data', (c) => { if (!d.push(c)) sock.pause(); });
  sock.on('end', () => d.push(null));
  sock.on('error', (e) => d.destroy(e));
  return d as unknown as net.Socket;
}

for (const transport of ['socket', 'JS stream'] as const) {
  test(`an upstream RST_STREAM(NO_ERROR) before the end of its response resets the client stream, never ends it as complete (no route, ${transport})`, async (t) => {
    const up = await cuttingUpstream(t);
    const pool = new Http2SessionPool();
    const proxy = await startHarness({
      handler: createHttp2Handler({ pool }), dest: { ip: HOST, port: up.port },
      ...(transport === 'JS stream' ? { dial: viaDuplex, lazyUpstream: true } : {}),
    });
    t.teardown(async () => { pool.close(); await proxy.close(); });
    const client = await rawClient(proxy.port);
    t.teardown(() => client.sock.destroy());
    client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('GET', '/cut')));
    t.deepEqual(await outcome(client, 1), { end: `reset ${INTERNAL_ERROR}`, body: 'partial' });
    // A response that did end is passed on whole, ended (the check must not take one for the other).
    client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock('GET', '/whole')));
    t.deepEqual(await outcome(client, 3), { end: 'end', body: 'whole' });
    await waitFor(() => proxy.sink.requests.length === 2);
    const cut = proxy.sink.requests.find((e) => e.path === '/cut')!;
    t.false(cut.success);
    t.regex(cut.error ?? '', /upstream reset \(code 0\)/);
    t.true(proxy.sink.requests.find((e) => e.path === '/whole')!.success);
  });
}


test('an upstream RST_STREAM(NO_ERROR) before the end of its response resets the client stream, never ends it as complete (with a route)', async (t) => {
  const up = await cuttingUpstream(t);
  const { port, sink }: { port: number; sink: RecordingSink } = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
  const client = await rawClient(port);
  t.teardown(() => client.sock.destroy());
  client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('GET', '/cut')));
  t.deepEqual(await outcome(client, 1), { end: `reset ${INTERNAL_ERROR}`, body: 'partial' });
  client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock('GET', '/whole')));
  t.deepEqual(await outcome(client, 3), { end: 'end', body: 'whole' });
  await waitFor(() => sink.requests.length === 2);
  const cut = sink.requests.find((e) => e.path === '/cut')!;
  t.truthy(cut.route, 'went through routed-stream.ts');
  t.false(cut.success);
  t.regex(cut.error ?? '', /upstream reset \(code 0\)/);
});

/** A raw upstream answering every request with `:status` `code` (nghttp2 takes any three digits), with a body or not. */
async function statusUpstream(t: ExecutionContext, code: string, withBody: boolean) {
  const up = await startRawH2Server((f, peer) => {
    if (f.type !== FRAME.HEADERS) return;
    // :status as a literal with the static table's name (index 8).
    const block = Buffer.concat([Buffer.from([0x08, code.length]), Buffer.from(code)]);
    if (!withBody) peer.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, f.streamId, block));
    else peer.write(Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, f.streamId, block), frame(FRAME.DATA, FLAG.END_STREAM, f.streamId, Buffer.from('odd'))]));
  });
  t.teardown(() => up.close());
  return up;
}

/** One request over node:http2: the response headers (null if none) and the stream's close code. */
async function ask(port: number, headers: http2.OutgoingHttpHeaders = {}) {
  const session = http2.connect(`http://${HOST}:${port}`);
  session.on('error', () => {});
  try {
    const req = session.request({ ':path': '/', ...headers });
    req.on('error', () => {});
    let head: http2.IncomingHttpHeaders | null = null;
    req.on('response', (h) => { head = h; });
    req.resume();
    await new Promise((resolve) => req.on('close', resolve));
    return { head: head as http2.IncomingHttpHeaders | null, rstCode: req.rstCode };
  } finally {
    session.destroy();
  }
}

for (const withBody of [false, true]) {
  test(`an upstream :status outside 200-599 (600, 999${withBody ? ', with a body' : ', trailers-only'}) is answered 502 (gRPC INTERNAL), never crashes the proxy (no route, and with a route)`, async (t) => {
    for (const code of ['600', '999']) {
      const up = await statusUpstream(t, code, withBody);
      const pool = new Http2SessionPool();
      const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: HOST, port: up.port } });
      t.teardown(async () => { pool.close(); await proxy.close(); });
      const routed = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
      for (const port of [proxy.port, routed.port]) {
        const plain = await ask(port);
        t.is(plain.head?.[':status'] as unknown, 502, `${code} via ${port === proxy.port ? 'forward-stream' : 'routed-stream'}`);
        t.is(plain.head?.['mesh-proxy-error'], 'bad-response');
        const grpc = await ask(port, { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' });
        t.deepEqual([grpc.head?.[':status'], grpc.head?.['grpc-status']], [200, '13']);
      }
      await waitFor(() => proxy.sink.requests.length === 2 && routed.sink.requests.length === 2);
      for (const e of [...proxy.sink.requests, ...routed.sink.requests]) {
        t.false(e.success);
        t.regex(e.error ?? '', new RegExp(`:status ${code}`));
      }
    }
  });
}

/**
 * A raw upstream answering `:status` `code` in a HEADERS frame without END_STREAM, and ending the
 * stream with an empty DATA frame once the HEADERS are out (valid HTTP/2, as a server that flushes
 * its head before it knows the body is empty does): for 204, 205 and 304, and any status to HEAD.
 */
async function headFirstUpstream(t: ExecutionContext, code: string) {
  const up = await startRawH2Server((f, peer) => {
    if (f.type !== FRAME.HEADERS) return;
    peer.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, f.streamId, Buffer.concat([Buffer.from([0x08, code.length]), Buffer.from(code)])));
    setImmediate(() => peer.write(frame(FRAME.DATA, FLAG.END_STREAM, f.streamId)));
  });
  t.teardown(() => up.close());
  return up;
}

for (const [code, method] of [['204', 'GET'], ['304', 'GET'], ['200', 'HEAD']] as const) {
  test(`a ${code} to ${method} whose END_STREAM comes after its HEADERS is a complete response: not a client reset (reset budget, balancer), a success (no route, and with a route)`, async (t) => {
    const up = await headFirstUpstream(t, code);
    const pool = new Http2SessionPool();
    // A budget of 5 client resets: the 10 requests below must not spend it.
    const proxy = await startHarness({ handler: createHttp2Handler({ pool, maxResetsPerWindow: 5, resetWindowMs: 60_000 }), dest: { ip: HOST, port: up.port } });
    t.teardown(async () => { pool.close(); await proxy.close(); });
    const routed = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
    for (const [port, sink] of [[proxy.port, proxy.sink], [routed.port, routed.sink]] as const) {
      const session = http2.connect(`http://${HOST}:${port}`);
      session.on('error', () => {});
      t.teardown(() => session.destroy());
      for (let i = 0; i < 10; i++) {
        const req = session.request({ ':path': '/', ':method': method });
        req.on('error', () => {});
        let status: unknown;
        req.on('response', (h) => { status = h[':status']; });
        req.resume();
        await new Promise((resolve) => req.on('close', resolve));
        t.deepEqual([status, req.rstCode], [Number(code), 0]);
      }
      t.false(session.closed || session.destroyed, 'the connection was not closed for resets');
      await waitFor(() => sink.requests.length === 10);
      t.deepEqual(sink.requests.map((e) => [e.status, e.success, e.error]), Array(10).fill([Number(code), true, undefined]));
    }
  });
}

/**
 * A raw upstream answering every request whole (HEADERS, `size` bytes of DATA, then END_STREAM on
 * the last DATA or on trailers grpc-status 0, as a gRPC server ends a call) and then, in the same
 * write, RST_STREAM(NO_ERROR) to stop a request body it will not read (RFC 9113 8.1).
 */
async function answerThenResetUpstream(t: ExecutionContext, size: number, trailers: boolean) {
  const up = await startRawH2Server((f, peer) => {
    if (f.type !== FRAME.HEADERS) return;
    const id = f.streamId;
    const parts = [frame(FRAME.HEADERS, FLAG.END_HEADERS, id, responseBlock())];
    for (let off = 0; off < size; off += 16384) {
      const n = Math.min(16384, size - off);
      parts.push(frame(FRAME.DATA, off + n === size && !trailers ? FLAG.END_STREAM : 0, id, Buffer.alloc(n, 0x61)));
    }
    // grpc-status as a literal with a new name (RFC 7541 6.2.2).
    if (trailers) parts.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, Buffer.from([0x00, 11, ...Buffer.from('grpc-status'), 1, 0x30])));
    parts.push(rstFrame(id, NO_ERROR));
    peer.write(Buffer.concat(parts));
  });
  t.teardown(() => up.close());
  return up;
}

// Before: the proxy ended the client's response with empty trailers (or the upstream's) and reset
// the request body at once, in the same tick; node:http2 sends trailers a tick later, so the
// RST_STREAM(NO_ERROR) went first and the END_STREAM (and a gRPC call's grpc-status) never did.
for (const trailers of [false, true]) {
  test(`an upstream RST_STREAM(NO_ERROR) right after a complete response${trailers ? ' (ending with trailers, as gRPC)' : ''}: the client gets all of it, ended, not reset (no route, and with a route)`, async (t) => {
    const size = 40_000;
    const up = await answerThenResetUpstream(t, size, trailers);
    const pool = new Http2SessionPool();
    const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: HOST, port: up.port } });
    t.teardown(async () => { pool.close(); await proxy.close(); });
    const routed = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
    for (const [name, port, sink] of [['no route', proxy.port, proxy.sink], ['with a route', routed.port, routed.sink]] as const) {
      const client = await rawClient(port);
      t.teardown(() => client.sock.destroy());
      // A POST whose body is still to come: the upstream answers before it, then stops it.
      client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock('POST', '/early')));
      const got = await outcome(client, 1);
      t.deepEqual(got, { end: 'end', body: 'a'.repeat(size) }, name);
      if (trailers) {
        const last = client.frames.find((f) => f.streamId === 1 && f.type === FRAME.HEADERS && (f.flags & FLAG.END_STREAM) !== 0);
        t.truthy(last, `${name}: the trailers reached the client`);
      }
      await waitFor(() => sink.requests.length === 1);
      t.true(sink.requests[0]!.success, name);
    }
  });
}

// nghttp2 takes a request's `te: Trailers` (any case: RFC 9110 tokens are case-insensitive), but
// node:http2 sends only the exact `trailers` and threw from the upstream request for any other
// spelling: the proxy answered 502 to a valid request. Sent raw (a node client would refuse to).
test('a request\'s `te: Trailers` (any case) goes upstream as `te: trailers`, not answered 502 (no route, and with a route)', async (t) => {
  const seen: string[] = [];
  const up = await startH2Upstream((stream, headers) => {
    seen.push(String(headers.te));
    stream.respond({ ':status': 200 }, { endStream: true });
  });
  t.teardown(() => up.close());
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: HOST, port: up.port } });
  t.teardown(async () => { pool.close(); await proxy.close(); });
  const routed = await loopbackProxy(t, { lookup: () => ({ ip: '10.96.7.7', port: 80, podKey: 7n }), router: new Router(routedWorld(up.port)) });
  for (const port of [proxy.port, routed.port]) {
    const client = await rawClient(port);
    t.teardown(() => client.sock.destroy());
    client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('GET', '/', { te: 'Trailers' })));
    const head = await client.next((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM));
    // :status 200 is the static table's index 8 (0x88); a 502 would be a literal.
    t.deepEqual([head.type, head.payload[0]], [FRAME.HEADERS, 0x88], port === proxy.port ? 'no route' : 'with a route');
  }
  t.deepEqual(seen, ['trailers', 'trailers']);
});
