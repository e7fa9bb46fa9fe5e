// The HTTP/2 pool's readiness for the balancer (readyOrConnect, #pick; docs/routing.md, The
// balancer): endpoints that take the TCP connection but give no HTTP/2 session are left alone for
// connectRetryMs, and a request sent to a ready endpoint takes its connected session.
import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream } from '../src/proxy/http2/harness.ts';
import { clientUpstream } from '../src/tunnel/upstream.ts';
import { waitFor } from './helpers/until.ts';

async function listen(t: ExecutionContext, srv: net.Server): Promise<number> {
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return (srv.address() as net.AddressInfo).port;
}

// An endpoint that takes the TCP connection but never completes an HTTP/2 session on it: a
// process accepting and closing (shutting down, at its connection limit), or a server that is not
// HTTP/2 (HTTP/1 only). Its session is gone within a millisecond of the connect, so the endpoint is
// never ready and never gets a request to fail: unless such a session counts as a failed connect,
// every draw of the endpoint dials it again (fails with a guard that counts TCP connect failures only).
for (const [what, make] of [
  ['accepts and closes', () => net.createServer((s) => s.destroy())],
  ['speaks HTTP/1 only', () => http.createServer((_q, r) => r.end('x'))],
] as const) {
  test.serial(`readyOrConnect: an endpoint that ${what} is not dialled again within connectRetryMs`, async (t) => {
    const port = await listen(t, make());
    let dials = 0;
    const via = { dial: (ip: string, p: number) => { dials++; return net.connect(p, ip); } };
    const pool = new Http2SessionPool({ connectRetryMs: 60_000 });
    t.teardown(() => pool.close());
    for (let draw = 1; draw <= 3; draw++) {
      t.false(pool.readyOrConnect('127.0.0.1', port, via, 5000), `draw ${draw}: not ready`);
      const [u] = pool.sessions('127.0.0.1', port);
      if (u !== undefined) await new Promise((r) => u.session.once('close', r)); // the session failed and left
    }
    t.is(dials, 1, 'one dial; the next draws within connectRetryMs leave it alone');
  });
}

/** A tunnel peer that never answers the CONNECT: a session through it stays connecting. */
async function hungVia(t: ExecutionContext) {
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
  return { dial: (ip: string, port: number) => clientUpstream(tunnelClient.request({ ':method': 'CONNECT', ':authority': `${ip}:${port}` }), `${ip}:${port}`) };
}

// readyOrConnect says ready when a *connected* session has room, so acquire must take that one even
// with a session still connecting ahead of it in the list (the first filled up while connecting, so
// a second was opened and connected first; then streams queued on the first were cancelled): else
// the request the balancer sent to the ready endpoint waits for the other session's connect.
test.serial('acquire on a ready endpoint takes its connected session, not one still connecting', async (t) => {
  const up = await startH2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  t.teardown(() => up.close());
  const pool = new Http2SessionPool({ maxStreamsPerSession: 1 });
  t.teardown(() => pool.close());
  const hung = await hungVia(t);
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
