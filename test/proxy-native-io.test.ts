// The real Proxy with --native-io (src/proxy/native-socket.ts): what the repeated forwarder files
// (*.native-io.test.ts) do not cover. A client gone mid-request, a client that half-closes after
// its request, and keep-alive clients that come and go, after which no adopted socket and no fd
// is left. Real loopback clients and origins.
import test from 'ava';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { nativeIoCounts, nativeIoOps, nativeSocketCount } from '../src/proxy/native-socket.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';
import { startRawOrigin } from './helpers/raw-origin.ts';
import { HOST } from './helpers/backends.ts';
import { createHttp1Handler, UpstreamPool } from '../src/proxy/http1/index.ts';
import { waitFor } from './helpers/until.ts';

test.before(() => {
  if (nativeIoOps() === null) throw new Error('the datapath addon has no native socket calls; rebuild it (./dev setup)');
});

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

test.serial('a client gone mid-request: the upstream connection is closed, the request reported, nothing left', async (t) => {
  let upstreamGot = '';
  let upstreamEnded = false;
  const origin = await startRawOrigin((s) => {
    s.on('data', (d) => (upstreamGot += d.toString('latin1')));
    s.on('end', () => (upstreamEnded = true)); // the origin is half-open: our FIN is its 'end'
  });
  t.teardown(() => origin.close());
  const { port, sink } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: origin.port, podKey: 1n }), nativeIo: true });
  const clientsBefore = nativeIoCounts.clients;
  const c = net.connect({ host: HOST, port });
  c.on('error', () => {});
  await once(c, 'connect');
  c.write('POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789');
  await waitFor(() => upstreamGot.endsWith('0123456789'));
  t.is(nativeIoCounts.clients, clientsBefore + 1, 'the client socket was adopted');
  c.resetAndDestroy();
  await waitFor(() => upstreamEnded);
  await waitFor(() => sink.requests.length === 1);
  t.like(sink.requests[0], { method: 'POST', path: '/upload', status: 0, success: false });
  t.regex(sink.requests[0]!.error ?? '', /client closed/);
  await waitFor(() => nativeSocketCount() === 0);
});

test.serial('a client that half-closes after its request still gets the whole response, then the connection closes', async (t) => {
  const origin = await startRawOrigin((s) => {
    s.once('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello'));
  });
  t.teardown(() => origin.close());
  const pool = new UpstreamPool();
  const { port } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: origin.port, podKey: 1n }), nativeIo: true, handlers: { http1: createHttp1Handler({ pool }) } });
  const c = net.connect({ host: HOST, port, allowHalfOpen: true });
  await once(c, 'connect');
  let got = '';
  c.on('data', (d) => (got += d.toString('latin1')));
  c.end('GET / HTTP/1.1\r\nhost: x\r\n\r\n'); // our FIN right behind the request
  await once(c, 'end');
  t.regex(got, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
  await once(c, 'close');
  // The client's socket is gone; the upstream waits in the pool until the pool closes.
  await waitFor(() => nativeSocketCount() === pool.idleCount());
  t.is(pool.idleCount(), 1);
  pool.close();
  await waitFor(() => nativeSocketCount() === 0);
});

test.serial('keep-alive clients that come and go through native sockets leave no socket or fd behind', async (t) => {
  const server = http.createServer((req, res) => res.end(`you asked ${req.url}`));
  server.keepAliveTimeout = 60_000;
  server.listen(0, HOST);
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const upPort = (server.address() as net.AddressInfo).port;
  const fds = openFds();
  const pool = new UpstreamPool();
  const { port, proxy } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: upPort, podKey: 1n }), nativeIo: true, handlers: { http1: createHttp1Handler({ pool }) } });
  const before = { ...nativeIoCounts };
  for (let round = 0; round < 3; round++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 5 });
    const bodies = await Promise.all(Array.from({ length: 50 }, (_, i) => new Promise<string>((resolve, reject) => {
      http.get({ host: HOST, port, path: `/r${round}-${i}`, agent }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve(b));
      }).on('error', reject);
    })));
    bodies.forEach((b, i) => t.is(b, `you asked /r${round}-${i}`));
    agent.destroy();
  }
  t.true(nativeIoCounts.clients - before.clients >= 3, 'the clients went through native sockets');
  t.true(nativeIoCounts.upstreams - before.upstreams >= 1, 'and their upstreams');
  await waitFor(() => proxy.stats().open === 0);
  // What is still open is the pool's idle upstreams, and the proxy's listener.
  t.is(nativeSocketCount(), pool.idleCount());
  pool.close();
  await proxy.close(0);
  // At most as many as before: the earlier tests' sockets may still have been closing then.
  await waitFor(() => nativeSocketCount() === 0 && openFds() <= fds).catch((e) => {
    throw new Error(`${e.message}: ${fds} fds before, now ${fs.readdirSync('/proc/self/fd').map((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f); } catch { return '?'; } }).join(' ')}`);
  });
  t.is(nativeSocketCount(), 0);
});
