import test from 'ava';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream, startHarness } from '../src/proxy/http2/harness.ts';
import { waitFor } from './helpers/until.ts';

const held: http2.ServerHttp2Stream[] = [];

async function setup(t: { teardown(fn: () => unknown): void }, pool: Http2SessionPool) {
  const up = await startH2Upstream((stream, headers) => {
    stream.respond({ ':status': 200 });
    if (headers[':path'] === '/hold') held.push(stream);
    else stream.end('ok');
  });
  let dials = 0;
  const dial = (ip: string, port: number) => { dials++; return net.connect(port, ip); };
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: '127.0.0.1', port: up.port }, dial });
  t.teardown(async () => { pool.close(); await proxy.close(); await up.close(); });
  return { up, proxy, dials: () => dials };
}

function get(port: number, path = '/') {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  const req = client.request({ ':path': path }, { endStream: true });
  req.on('error', () => {});
  req.resume();
  const status = new Promise<number>((resolve) => req.on('response', (h) => resolve(Number(h[':status']))));
  const closed = new Promise<void>((resolve) => req.on('close', () => { client.close(); resolve(); }));
  return { status, closed, client };
}

test.serial('the eager connection is adopted once; later client connections reuse its session', async (t) => {
  const pool = new Http2SessionPool();
  const { up, proxy, dials } = await setup(t, pool);
  for (let i = 0; i < 3; i++) {
    const r = get(proxy.port);
    t.is(await r.status, 200);
    await r.closed;
  }
  // Each accepted connection was dialled eagerly (as the dispatcher does); the pool kept
  // the first and closed the others, and never had to dial on its own.
  t.is(dials(), 3);
  t.is(pool.opened, 1);
  t.is(up.sessionsWithStreams.size, 1);
  t.is(up.streams, 3);
});

test.serial('a session full at maxStreamsPerSession makes the pool open another', async (t) => {
  const pool = new Http2SessionPool({ maxStreamsPerSession: 2 });
  const { up, proxy } = await setup(t, pool);
  held.length = 0;
  const client = http2.connect(`http://127.0.0.1:${proxy.port}`);
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  const reqs = Array.from({ length: 5 }, () => {
    const r = client.request({ ':path': '/hold' }, { endStream: true });
    r.on('error', () => {});
    r.resume();
    return r;
  });
  await waitFor(() => held.length === 5);
  t.is(up.sessionsWithStreams.size, 3);
  t.is(pool.sessions('127.0.0.1', up.port).length, 3);
  for (const s of held) s.end('done');
  await Promise.all(reqs.map((r) => new Promise((resolve) => r.on('close', resolve))));
  t.true(reqs.every((r) => r.rstCode === http2.constants.NGHTTP2_NO_ERROR));
});

test.serial('idle sessions close; the next request opens a fresh one', async (t) => {
  const pool = new Http2SessionPool({ idleTimeoutMs: 100 });
  const { up, proxy } = await setup(t, pool);
  const first = get(proxy.port);
  t.is(await first.status, 200);
  await first.closed;
  t.is(pool.opened, 1);
  // Nothing else closes it: the upstream sees its session end once idle for 100 ms (asserting
  // it is still pooled right after the request would race those 100 ms on a loaded machine).
  const [upSession] = up.sessionsWithStreams;
  await waitFor(() => upSession!.closed || upSession!.destroyed);
  await waitFor(() => pool.sessions('127.0.0.1', up.port).length === 0);
  const second = get(proxy.port);
  t.is(await second.status, 200);
  await second.closed;
  t.is(pool.opened, 2);
  t.is(up.sessionsWithStreams.size, 2);
});

test.serial('an upstream GOAWAY retires the session without failing new requests', async (t) => {
  const pool = new Http2SessionPool();
  const { up, proxy } = await setup(t, pool);
  const first = get(proxy.port);
  t.is(await first.status, 200);
  await first.closed;
  const [session] = up.sessionsWithStreams;
  session.goaway();
  await waitFor(() => pool.sessions('127.0.0.1', up.port).length === 0);
  const second = get(proxy.port);
  t.is(await second.status, 200);
  await second.closed;
  t.is(up.sessionsWithStreams.size, 2);
});
