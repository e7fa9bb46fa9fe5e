import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile, rm, mkdtemp } from 'node:fs/promises';
import * as http2 from 'node:http2';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream, startHarness } from '../src/proxy/http2/harness.ts';
import { waitFor } from './helpers/until.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const run = promisify(execFile);

function route(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) {
  const path = headers[':path'];
  if (path === '/echo') {
    // Streams the body back, hashing as it goes: never holds the whole body.
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' }, { waitForTrailers: true });
    const hash = createHash('sha256');
    let n = 0;
    stream.on('data', (c: Buffer) => { hash.update(c); n += c.length; });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sha256': hash.digest('hex'), 'x-bytes': String(n) }));
    stream.pipe(stream);
    return;
  }
  if (path === '/missing') {
    stream.respond({ ':status': 404 });
    stream.end('nope');
    return;
  }
  if (path === '/boom') {
    stream.respond({ ':status': 503 });
    stream.end();
    return;
  }
  stream.respond({ ':status': 200, 'x-authority': String(headers[':authority']), 'x-te': String(headers.te) });
  stream.end(`hello ${path} via ${headers[':method']}`);
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const up = await startH2Upstream(route);
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: '127.0.0.1', port: up.port } });
  t.teardown(async () => { pool.close(); await proxy.close(); await up.close(); });
  return { up, pool, proxy };
}

test('curl GET through the proxy: body, authority kept, telemetry per stream', async (t) => {
  const { proxy } = await setup(t);
  const { stdout } = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `http://127.0.0.1:${proxy.port}/a/b?c=1`, '-H', 'Host: svc.ns:8080']);
  t.regex(stdout, /^HTTP\/2 200/);
  t.regex(stdout, /x-authority: svc\.ns:8080/);
  t.true(stdout.endsWith('hello /a/b?c=1 via GET'));
  const ev = proxy.sink.requests[0];
  t.like(ev, { protocol: 'http2', authority: 'svc.ns:8080', method: 'GET', path: '/a/b?c=1', status: 200, success: true, connId: 1, destIp: '127.0.0.1' });
  t.is(ev.grpcStatus, undefined);
  t.is(ev.responseBytes, 'hello /a/b?c=1 via GET'.length);
  t.true(ev.latencyMs >= 0 && ev.durationMs >= ev.latencyMs);
});

test('curl POST of a 24 MiB body is streamed both ways intact', async (t) => {
  const { proxy } = await setup(t);
  const dir = await mkdtemp(ownedTempPrefix('test'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const body = randomBytes(24 * 1024 * 1024);
  await writeFile(join(dir, 'in'), body);
  await run('curl', ['-sS', '--http2-prior-knowledge', '--data-binary', `@${join(dir, 'in')}`, '-o', join(dir, 'out'), `http://127.0.0.1:${proxy.port}/echo`]);
  const { stdout } = await run('sha256sum', [join(dir, 'out')]);
  t.is(stdout.split(' ')[0], createHash('sha256').update(body).digest('hex'));
  const ev = proxy.sink.requests[0];
  t.like(ev, { method: 'POST', path: '/echo', status: 200, success: true, requestBytes: body.length, responseBytes: body.length });
});

/**
 * Writes `total` bytes to `w` honouring backpressure; `state` says how far it got and whether it
 * waits for 'drain'.
 */
function pump(w: NodeJS.WritableStream, total: number, state: { accepted: number; blocked: boolean }) {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const next = () => {
    state.blocked = false;
    while (state.accepted < total) {
      state.accepted += chunk.length;
      if (!w.write(chunk)) {
        state.blocked = true;
        w.once('drain', next);
        return;
      }
    }
    w.end();
  };
  next();
}

/** Resolves once the writer is stalled (waits for 'drain', nothing moved over 20 turns of the loop) or wrote everything. */
async function stalledOrDone(state: { accepted: number; blocked: boolean }, total: number) {
  let last = -1;
  let still = 0;
  await waitFor(() => {
    still = (state.blocked || state.accepted >= total) && state.accepted === last ? still + 1 : 0;
    last = state.accepted;
    return still >= 20;
  }, 60_000);
}

// Flow control end to end: the proxy reads a stream's body only as fast as the other side takes
// it, so a slow reader stalls the writer instead of filling the proxy's memory. An unbounded
// proxy would take all 64 MiB at loopback speed; windows and stream buffers hold well under 8 MiB.
// A false stall on a stopped machine only makes the bound easier to meet, never fails it.
test('backpressure both ways: a reader that stops stalls the writer behind the proxy', async (t) => {
  const total = 64 * 1024 * 1024;
  const server = { accepted: 0, blocked: false };
  let serverGot = 0;
  const up = await startH2Upstream((stream, headers) => {
    if (headers[':path'] === '/download') {
      stream.respond({ ':status': 200 });
      pump(stream, total, server);
      return;
    }
    // /upload: reads nothing until told to
    stream.pause();
    uploadStream = stream;
    stream.on('data', (c: Buffer) => { serverGot += c.length; });
    stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end(); });
  });
  let uploadStream: http2.ServerHttp2Stream | undefined;
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: '127.0.0.1', port: up.port } });
  const client = http2.connect(`http://127.0.0.1:${proxy.port}`);
  client.on('error', () => {});
  t.teardown(async () => { client.destroy(); pool.close(); await proxy.close(); await up.close(); });

  // Response body: the client reads nothing until the path has stalled.
  const down = client.request({ ':path': '/download' }, { endStream: true });
  down.pause();
  await stalledOrDone(server, total);
  t.true(server.accepted < 8 * 1024 * 1024, `the server wrote ${server.accepted} bytes while the client read nothing`);
  let got = 0;
  down.on('data', (c: Buffer) => { got += c.length; });
  down.resume();
  await new Promise((r) => down.on('end', r));
  t.is(got, total);

  // Request body: the server reads nothing until the path has stalled.
  const sender = { accepted: 0, blocked: false };
  const upl = client.request({ ':path': '/upload', ':method': 'POST' });
  upl.on('error', () => {});
  pump(upl, total, sender);
  await stalledOrDone(sender, total);
  t.true(sender.accepted < 8 * 1024 * 1024, `the client wrote ${sender.accepted} bytes while the server read nothing`);
  const status = new Promise((r) => upl.on('response', (h) => r(h[':status'])));
  upl.resume();
  uploadStream!.resume();
  t.is(await status, 200);
  t.is(serverGot, total);
  await waitFor(() => proxy.sink.requests.some((e) => e.path === '/upload'));
  t.like(proxy.sink.requests.find((e) => e.path === '/upload'), { requestBytes: total, status: 200 });
  t.like(proxy.sink.requests.find((e) => e.path === '/download'), { responseBytes: total, status: 200 });
});

test('response trailers reach the client; 404 is a success, 503 is not', async (t) => {
  const { proxy } = await setup(t);
  const client = http2.connect(`http://127.0.0.1:${proxy.port}`);
  t.teardown(() => client.close());
  const req = client.request({ ':method': 'POST', ':path': '/echo', te: 'trailers' });
  const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('trailers', resolve));
  const payload = Buffer.alloc(300_000, 7);
  req.end(payload);
  const chunks: Buffer[] = [];
  await pipeline(req, async function* (src) { for await (const c of src) chunks.push(c as Buffer); });
  t.is(Buffer.concat(chunks).length, payload.length);
  const tr = await trailers;
  t.is(tr['x-bytes'], String(payload.length));
  t.is(tr['x-sha256'], createHash('sha256').update(payload).digest('hex'));

  for (const [path, status, success] of [['/missing', 404, true], ['/boom', 503, false]] as const) {
    const r = client.request({ ':path': path });
    const st = await new Promise<number>((resolve) => r.on('response', (h) => resolve(Number(h[':status']))));
    r.resume();
    await new Promise((resolve) => r.on('close', resolve));
    t.is(st, status);
    await waitFor(() => proxy.sink.requests.some((e) => e.path === path));
    t.like(proxy.sink.requests.find((e) => e.path === path), { status, success });
  }
});

test('h2load -c 4 -m 10 -n 2000: every request succeeds over one pooled upstream session', async (t) => {
  const { proxy, up } = await setup(t);
  const { stdout } = await run('h2load', ['-c', '4', '-m', '10', '-n', '2000', `http://127.0.0.1:${proxy.port}/load`], { timeout: 60_000 });
  t.regex(stdout, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
  t.is(up.streams, 2000);
  // Four client connections (four eager upstream dials), one upstream session did the work.
  t.is(up.sessionsWithStreams.size, 1);
  await waitFor(() => proxy.sink.requests.length === 2000);
  t.true(proxy.sink.requests.every((e) => e.status === 200 && e.success));
  t.is(new Set(proxy.sink.requests.map((e) => e.connId)).size, 4);
});
