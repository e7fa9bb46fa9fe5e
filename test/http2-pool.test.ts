import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { rttSample } from '../src/proxy/http2/pool.ts';
import { startH2Upstream, startHarness } from '../src/proxy/http2/harness.ts';
import { clientUpstream } from '../src/tunnel/upstream.ts';
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

// A client session has stream IDs for 2^30 streams; past them node:http2 fails every new stream
// while the session looks open, so a busy destination's session would fail every request from then
// on. The pool retires a session after streamsPerSessionLife streams (here 3): the next request
// goes on a new one, the old closes once idle. Fails on a pool that kept using it.
test.serial('a session that has carried its life of streams takes no more: the next go on a new session, the old one closes', async (t) => {
  const pool = new Http2SessionPool({ streamsPerSessionLife: 3 });
  const { up, proxy } = await setup(t, pool);
  const client = http2.connect(`http://127.0.0.1:${proxy.port}`);
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  for (let i = 0; i < 5; i++) {
    const req = client.request({ ':path': '/' }, { endStream: true });
    req.resume();
    const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    t.is(Number(h[':status']), 200, `request ${i + 1}`);
    await once(req, 'close');
  }
  t.is(up.streams, 5);
  t.is(up.sessionsWithStreams.size, 2, '3 streams on the first session, 2 on a second');
  t.is(pool.opened, 2);
  await waitFor(() => [...up.sessionsWithStreams].filter((s) => !s.closed && !s.destroyed).length === 1); // the first closed once idle
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

/**
 * The other agent's side of a tunnel, cut down to what matters here: it takes CONNECTs and
 * answers none by itself (the test answers them); `via` dials through it as tunnel/upstream.ts does.
 */
async function tunnelPeer(t: ExecutionContext) {
  const connects: http2.ServerHttp2Stream[] = [];
  const tunnel = http2.createServer();
  tunnel.on('stream', (s) => connects.push(s));
  tunnel.listen(0, '127.0.0.1');
  await once(tunnel, 'listening');
  const tunnelClient = http2.connect(`http://127.0.0.1:${(tunnel.address() as net.AddressInfo).port}`);
  t.teardown(() => {
    tunnelClient.destroy();
    for (const s of connects) s.destroy();
    tunnel.close();
  });
  const via = { dial: (ip: string, port: number) => clientUpstream(tunnelClient.request({ ':method': 'CONNECT', ':authority': `${ip}:${port}` }), `${ip}:${port}`) };
  return { connects, via };
}

test.serial('a session through a tunnel stream is connected once the CONNECT is answered: connectedAt is then, and a stream that waited for it has that wait left out of its RTT sample', async (t) => {
  const up = await startH2Upstream((stream) => {
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  t.teardown(() => up.close());
  const { connects, via } = await tunnelPeer(t);
  const pool = new Http2SessionPool();
  t.teardown(() => pool.close());
  const t0 = performance.now();
  const u = pool.acquire('127.0.0.1', up.port, via, 5000);
  const req = u.request({ ':path': '/' }, { endStream: true });
  req.resume();
  const answered = once(req, 'response');
  await waitFor(() => connects.length === 1);
  t.is(u.connectedAt, 0, 'not connected while the CONNECT is unanswered');
  const beforeAnswer = performance.now();
  const relay = net.connect(up.port, '127.0.0.1', () => {
    connects[0]!.respond({ ':status': 200 });
    connects[0]!.pipe(relay).pipe(connects[0]!);
  });
  await answered;
  const now = performance.now();
  t.true(u.connectedAt >= beforeAnswer, `connected when the CONNECT was answered (${(u.connectedAt - t0).toFixed(1)} ms after the stream started; answered after ${(beforeAnswer - t0).toFixed(1)} ms)`);
  t.is(rttSample(u, t0, now), now - u.connectedAt, 'the sample starts at the connect');
  t.is(rttSample(u, now, now + 5), 5, 'a stream started on the connected session: from its own start');
  t.is(rttSample(undefined, t0, now), now - t0, 'no session (it failed before connecting): the whole wait');
});

test.serial('a CONNECT the other agent never answers fails its session after the connect timeout, not never', async (t) => {
  const { connects, via } = await tunnelPeer(t);
  const pool = new Http2SessionPool();
  t.teardown(() => pool.close());
  const u = pool.acquire('127.0.0.1', 9, via, 300);
  const req = u.request({ ':path': '/' }, { endStream: true });
  req.on('error', () => {});
  await once(req, 'close');
  t.is(connects.length, 1, 'the CONNECT reached the other agent, which never answered');
  t.is(u.failure, 'connect-timeout');
  t.is(u.failureDetail, 'no connection within 300 ms');
  t.is(u.connectedAt, 0);
});

test.serial('readyOrConnect: not ready while a first session connects (opened in the background), ready once it is; one dial', async (t) => {
  const up = await startH2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  const pool = new Http2SessionPool();
  t.teardown(async () => { pool.close(); await up.close(); });
  let dials = 0;
  const via = { dial: (ip: string, port: number) => { dials++; return net.connect(port, ip); } };
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000, undefined, false), 'no session, asked without connect: not ready, nothing opened');
  t.is(dials, 0);
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000), 'no session yet: not ready, and one is opened');
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000), 'connecting: not ready, and no second one');
  t.is(dials, 1);
  const [u] = pool.sessions('127.0.0.1', up.port);
  await waitFor(() => u!.connectedAt > 0);
  t.true(pool.readyOrConnect('127.0.0.1', up.port, via, 5000));
  t.is(pool.acquire('127.0.0.1', up.port, via, 5000), u, 'a request then takes the warmed session');
  t.is(pool.opened, 1);
});

test.serial('readyOrConnect after a failed connect: no new dial for connectRetryMs, so a dead endpoint is not dialled per request', async (t) => {
  // A port nothing listens on: the connect is refused.
  const closedPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  let dials = 0;
  const via = { dial: (ip: string, port: number) => { dials++; return net.connect(port, ip); } };
  for (const [retryMs, dialsAfter] of [[60_000, 1], [0, 2]] as const) {
    dials = 0;
    const pool = new Http2SessionPool({ connectRetryMs: retryMs });
    t.teardown(() => pool.close());
    t.false(pool.readyOrConnect('127.0.0.1', closedPort, via, 5000));
    await waitFor(() => pool.sessions('127.0.0.1', closedPort).length === 0); // refused: the session failed and left
    t.false(pool.readyOrConnect('127.0.0.1', closedPort, via, 5000));
    t.is(dials, dialsAfter, `connectRetryMs ${retryMs}: dials after the failure`);
  }
});

/** Listens on loopback until the test ends; its port. */
async function listenOn(t: ExecutionContext, srv: net.Server): Promise<number> {
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return (srv.address() as net.AddressInfo).port;
}

/** An HTTP/2 server that ends each session once its SETTINGS are out, by `end`. */
function endsAfterSettings(end: (s: http2.ServerHttp2Session) => void): net.Server {
  const srv = http2.createServer();
  srv.on('session', (s) => { s.once('localSettings', () => setImmediate(() => end(s))); });
  return srv as unknown as net.Server;
}

// Endpoints that give no session to use, so none is ever ready and none gets a request to fail:
// unless their session's end counts as a failed connect, every draw dials them again.
// - Ended before the peer's SETTINGS: a process accepting and closing (shutting down, at its
//   connection limit), or a server that is not HTTP/2 (fails with a guard that counts TCP connect
//   failures only).
// - Ended after its SETTINGS, before any stream: GOAWAY at once (shutting down, refusing at its
//   connection limit), or the TCP connection closed (fails with a guard that counts only sessions
//   ending before the peer's SETTINGS).
for (const [what, make, settles] of [
  ['accepts and closes', () => net.createServer((s) => s.destroy()), false],
  ['speaks HTTP/1 only', () => http.createServer((_q, r) => r.end('x')), false],
  ['sends GOAWAY right after its SETTINGS', () => endsAfterSettings((s) => s.close()), true],
  ['closes the connection right after its SETTINGS', () => endsAfterSettings((s) => s.destroy()), true],
] as const) {
  test.serial(`readyOrConnect: an endpoint that ${what} is not dialled again within connectRetryMs`, async (t) => {
    const port = await listenOn(t, make());
    let dials = 0;
    const via = { dial: (ip: string, p: number) => { dials++; return net.connect(p, ip); } };
    const pool = new Http2SessionPool({ connectRetryMs: 60_000 });
    t.teardown(() => pool.close());
    for (let draw = 1; draw <= 3; draw++) {
      t.false(pool.readyOrConnect('127.0.0.1', port, via, 5000), `draw ${draw}: not ready`);
      const [u] = pool.sessions('127.0.0.1', port);
      if (u !== undefined) {
        await new Promise((r) => u.session.once('close', r)); // the session failed and left
        if (settles) t.true(u.settled, 'the peer\'s SETTINGS came before the session ended');
      }
    }
    t.is(dials, 1, 'one dial; the next draws within connectRetryMs leave it alone');
  });
}

// What is not a failed connect: a session that served a stream and then got GOAWAY (a server's
// graceful shutdown), and a warm-up the pool itself closed after its idle timeout. After either,
// the next draw dials the endpoint again.
test.serial('readyOrConnect: GOAWAY after a served stream, or an idle warm-up closed here, does not hold the endpoint', async (t) => {
  const up = await startH2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  t.teardown(() => up.close());
  let dials = 0;
  const via = { dial: (ip: string, p: number) => { dials++; return net.connect(p, ip); } };
  const pool = new Http2SessionPool({ connectRetryMs: 60_000, idleTimeoutMs: 50 });
  t.teardown(() => pool.close());

  // A warm-up that nothing uses: the pool closes it after 50 ms idle.
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000));
  const [warm] = pool.sessions('127.0.0.1', up.port);
  await new Promise((r) => warm!.session.once('close', r));
  t.true(warm!.settled);
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000), 'connecting again');
  t.is(dials, 2, 'the idle close held nothing');

  // That session serves a stream; then the server shuts down gracefully (GOAWAY).
  const [u] = pool.sessions('127.0.0.1', up.port);
  await waitFor(() => u!.connectedAt > 0 && u!.settled);
  const req = u!.request({ ':path': '/' }, { endStream: true });
  req.resume();
  await once(req, 'close');
  const closed = new Promise((r) => u!.session.once('close', r));
  t.is(up.sessionsWithStreams.size, 1);
  for (const s of up.sessionsWithStreams) s.close();
  await closed;
  t.false(pool.readyOrConnect('127.0.0.1', up.port, via, 5000), 'connecting again');
  t.is(dials, 3, 'the graceful GOAWAY held nothing');
});

// readyOrConnect says ready when a *connected* session has room, so acquire must take that one even
// with a session still connecting ahead of it in the list (the first filled up while connecting, so
// a second was opened and connected first; then streams queued on the first were cancelled): else
// the request the balancer sent to the ready endpoint waits for the other session's connect.
test.serial('acquire on a ready endpoint takes its connected session, not one still connecting', async (t) => {
  const up = await startH2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  t.teardown(() => up.close());
  const pool = new Http2SessionPool({ maxStreamsPerSession: 1 });
  t.teardown(() => pool.close());
  const { via: hung } = await tunnelPeer(t); // it never answers the CONNECT: a session through it stays connecting
  const direct = { dial: (ip: string, port: number) => net.connect(port, ip) };
  const s1 = pool.acquire('127.0.0.1', up.port, hung, 60_000);
  const queued = s1.request({ ':path': '/' }, { endStream: true });
  queued.on('error', () => {});
  const s2 = pool.acquire('127.0.0.1', up.port, direct, 60_000);
  t.not(s2, s1, 's1 full: a second session');
  await waitFor(() => s2.connectedAt > 0);
  queued.close(http2.constants.NGHTTP2_CANCEL); // the client gave up on its stream queued on s1
  await once(queued, 'close');
  t.is(s1.connectedAt, 0, 's1 still connecting');
  t.true(pool.readyOrConnect('127.0.0.1', up.port, direct, 60_000), 'ready: s2 is connected and has room');
  const got = pool.acquire('127.0.0.1', up.port, direct, 60_000);
  t.true(got === s2, `the request goes on the connected session, not ${got === s1 ? 's1, still connecting' : 'a new one'}`);
});
