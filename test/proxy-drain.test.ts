// The proxy's drain (close(), on SIGTERM) over loopback: keep-alive connections end where their
// clients lose nothing. HTTP/1: the response in flight, and any later one, says
// `Connection: close` and the connection ends after it; HTTP/2: a GOAWAY, the stream in flight
// completes. A connection idle between requests is closed when it is still idle a grace (1 s)
// after the drain started (its next request, if one comes, says `Connection: close`), so the drain
// ends with the last exchange, not at its deadline (as nginx, Envoy and Node's
// server.closeIdleConnections() do). The datapath is a stub lookup: every connection's original
// destination is the origin. test/proxy-drain.native-io.test.ts runs it again with --native-io.
import test from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { Proxy } from '../src/proxy/index.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { waitFor } from './helpers/until.ts';
import { nativeIo } from './helpers/native-io.ts';

const HOST = '127.0.0.1';

/** An origin whose answers wait until the test releases them, so a request can be in flight at the drain. */
async function origin(h2: boolean) {
  const held: Array<() => void> = [];
  const handle = (_req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const answer = () => res.end('ok');
    if (_req.url === '/slow') held.push(answer);
    else if (_req.url === '/streaming') {
      // The head (keep-alive, chunked) and a first part now, the rest when released.
      (res as http.ServerResponse).write('part-');
      held.push(answer);
    } else answer();
  };
  const server: net.Server = h2 ? http2.createServer(handle) : http.createServer(handle);
  server.listen(0, HOST);
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, held, close: () => server.close() };
}

/** A raw TCP origin on loopback that answers each connection with `serve`; its sockets and itself end with the test. */
async function rawOrigin(t: { teardown(f: () => void): void }, serve: (s: net.Socket) => void, opts: net.ServerOpts = {}): Promise<number> {
  const upstreams: net.Socket[] = [];
  const server = net.createServer(opts, (s) => {
    upstreams.push(s);
    s.on('error', () => {});
    serve(s);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of upstreams) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

async function proxyTo(port: number) {
  const proxy = new Proxy({ listen: { host: HOST, port: 0 }, lookup: () => ({ ip: HOST, port, podKey: 1n }), opaquePorts: PortSet.empty(), log: () => {}, nativeIo: nativeIo() });
  const { port: listen } = await proxy.listen();
  return { proxy, port: listen };
}

test('HTTP/1: a drain closes keep-alive connections after the response in flight, with Connection: close', async (t) => {
  const o = await origin(false);
  const { proxy, port } = await proxyTo(o.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string) => new Promise<{ connection: string | undefined; socket: net.Socket }>((resolve, reject) => {
    http.get({ host: HOST, port, path, agent }, (res) => {
      const socket = res.socket;
      res.resume();
      res.on('end', () => resolve({ connection: res.headers.connection, socket }));
    }).on('error', reject);
  });
  const first = await get('/');
  t.is(first.connection, 'keep-alive', 'before the drain the connection is kept');
  const inFlight = get('/slow');
  await waitFor(() => o.held.length === 1);
  const closing = proxy.close(10_000);
  o.held.shift()!();
  const r = await inFlight;
  t.is(r.connection, 'close', 'the response in flight at the drain tells the client close');
  t.is(r.socket, first.socket, 'on the same connection');
  if (!r.socket.destroyed) await once(r.socket, 'close');
  const t0 = performance.now();
  await closing;
  t.true(performance.now() - t0 < 5000, 'the drain ends with the connection, not at its 10 s deadline');
  agent.destroy();
  o.close();
});

/** The drain's deadline in the tests below: far beyond what a drain that ends with its last exchange takes. */
const DEADLINE_MS = 30_000;

test('HTTP/1: a keep-alive connection idle between requests is closed when the drain starts; the drain ends at once, not at its deadline', async (t) => {
  const o = await origin(false);
  t.teardown(() => o.close());
  const { proxy, port } = await proxyTo(o.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const req = http.get({ host: HOST, port, path: '/', agent }, (res) => {
      res.resume();
      // Back in the agent's free list: idle between requests.
      req.socket!.once('free', () => resolve(req.socket!));
    }).on('error', reject);
  });
  t.false(socket.destroyed, 'kept alive after its response');
  const t0 = performance.now();
  let drained = false;
  const closing = proxy.close(DEADLINE_MS).then(() => (drained = true));
  // The client's socket closes (the proxy's FIN), then the drain ends: events, not the deadline.
  await once(socket, 'close');
  await closing;
  t.true(drained);
  t.true(performance.now() - t0 < DEADLINE_MS / 3, `the drain ended with the idle connection, not at its ${DEADLINE_MS} ms deadline`);
});

test('HTTP/1: a keep-alive client in a loop loses no request when the drain starts between its requests (its next one is answered with Connection: close, the idle close waits a grace)', async (t) => {
  const o = await origin(false);
  t.teardown(() => o.close());
  const { proxy, port } = await proxyTo(o.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const failures: string[] = [];
  let done = 0;
  let closedBy: string | undefined;
  let stop = false;
  // The next request goes out as the last response ends, as a client loop's does.
  const loop = (async () => {
    while (!stop) {
      await new Promise<void>((resolve) => {
        http.get({ host: HOST, port, path: '/', agent }, (res) => {
          res.resume();
          res.on('end', () => {
            done++;
            if (res.headers.connection === 'close') {
              closedBy = 'close';
              stop = true;
            }
            resolve();
          });
        }).on('error', (e) => {
          failures.push(e.message);
          stop = true;
          resolve();
        });
      });
    }
  })();
  await waitFor(() => done >= 20);
  // The drain starts while the loop runs: between two of its requests, or during one.
  const closing = proxy.close(DEADLINE_MS);
  await loop;
  await closing;
  t.deepEqual(failures, [], 'no request failed');
  t.is(closedBy, 'close', 'the loop\'s connection ended with a response saying Connection: close');
});

test('HTTP/1: a keep-alive response whose head went out before the drain completes whole, then its connection is closed', async (t) => {
  const o = await origin(false);
  t.teardown(() => o.close());
  const { proxy, port } = await proxyTo(o.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  let body = '';
  let socket: net.Socket | null = null;
  const done = new Promise<void>((resolve, reject) => {
    http.get({ host: HOST, port, path: '/streaming', agent }, (res) => {
      socket = res.socket;
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve());
    }).on('error', reject);
  });
  await waitFor(() => body === 'part-');
  const t0 = performance.now();
  const closing = proxy.close(DEADLINE_MS);
  o.held.shift()!();
  await done;
  t.is(body, 'part-ok', 'the response in flight at the drain completed');
  const s = socket as net.Socket | null;
  if (s !== null && !s.destroyed) await once(s, 'close');
  await closing;
  t.true(performance.now() - t0 < DEADLINE_MS / 3, `the drain ended with the exchange, not at its ${DEADLINE_MS} ms deadline`);
});

test('HTTP/2: a drain sends GOAWAY; the stream in flight completes', async (t) => {
  const o = await origin(true);
  const { proxy, port } = await proxyTo(o.port);
  const session = http2.connect(`http://${HOST}:${port}`);
  const goaway = once(session, 'goaway');
  const req = session.request({ ':path': '/slow' });
  req.setEncoding('utf8');
  let body = '';
  req.on('data', (d) => (body += d));
  await waitFor(() => o.held.length === 1);
  const closing = proxy.close(10_000);
  await goaway;
  o.held.shift()!();
  await once(req, 'end');
  t.is(body, 'ok', 'the stream in flight got its answer after the GOAWAY');
  session.close();
  await closing;
  o.close();
});

test('HTTP/2: after the GOAWAY the proxy closes the connection once its streams end; the drain ends at once, not at its deadline', async (t) => {
  const o = await origin(true);
  t.teardown(() => o.close());
  const { proxy, port } = await proxyTo(o.port);
  const session = http2.connect(`http://${HOST}:${port}`);
  t.teardown(() => session.destroy());
  session.on('error', () => {});
  const ask = (path: string) => {
    const req = session.request({ ':path': path });
    req.setEncoding('utf8');
    let body = '';
    req.on('data', (d) => (body += d));
    return new Promise<string>((resolve) => req.on('end', () => resolve(body)));
  };
  t.is(await ask('/'), 'ok');
  const inFlight = ask('/slow');
  await waitFor(() => o.held.length === 1);
  const t0 = performance.now();
  const closing = proxy.close(DEADLINE_MS);
  await once(session, 'goaway');
  o.held.shift()!();
  t.is(await inFlight, 'ok');
  // The client never closes its session: the proxy does.
  if (!session.destroyed) await once(session, 'close');
  await closing;
  t.true(performance.now() - t0 < DEADLINE_MS / 3, `the drain ended with the stream, not at its ${DEADLINE_MS} ms deadline`);
});

// A close-delimited body ends where the connection ends: cut at the drain deadline, as when cut
// by a timeout or an upstream reset (http1-proxy.test.ts), only a reset tells the client it is
// not whole; a FIN would pass "partial" for the whole body.
test('HTTP/1: a close-delimited response still flowing at the drain deadline reaches the client as a reset, not as a clean end', async (t) => {
  const { proxy, port } = await proxyTo(await rawOrigin(t, (s) => s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial')), { allowHalfOpen: true }));
  const c = net.connect({ host: HOST, port, allowHalfOpen: true });
  let ended = false;
  let error = '';
  c.on('end', () => (ended = true));
  c.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  // Half-open allowed: a FIN gives 'end' and no 'close'; a reset gives 'error' and 'close'.
  const closed = new Promise((resolve) => { c.once('end', resolve); c.once('close', resolve); });
  c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  let got = '';
  c.setEncoding('latin1');
  const sawPartial = new Promise<void>((resolve) => c.on('data', (d: string) => { got += d; if (got.includes('partial')) resolve(); }));
  await sawPartial;
  await proxy.close(100);
  await closed;
  t.false(ended, 'the client read a clean end: it would take "partial" for the whole body');
  t.is(error, 'ECONNRESET');
  c.destroy();
});

// A second SIGTERM/SIGINT (cli/run.ts): what the drain still waits for is closed now.
test('a connection still in detection, its client silent, is closed (a FIN) once the drain is past the detection deadline; the drain does not wait for its own deadline', async (t) => {
  const originPort = await rawOrigin(t, () => {}); // a server that never speaks
  const logs: string[] = [];
  const proxy = new Proxy({ listen: { host: HOST, port: 0 }, lookup: () => ({ ip: HOST, port: originPort, podKey: 1n }), opaquePorts: PortSet.empty(), log: (_l, msg) => logs.push(msg), nativeIo: nativeIo() });
  const { port } = await proxy.listen();
  const c = net.connect({ host: HOST, port });
  let error: Error | null = null;
  c.on('error', (e) => (error = e));
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  await waitFor(() => proxy.stats().open === 1);
  const ended = once(c, 'end');
  c.resume();
  await proxy.close(DEADLINE_MS);
  await ended;
  t.is(error, null, 'a clean end, not a reset');
  t.false(logs.some((m) => m.includes('drain deadline passed')), `the drain ended without its deadline: ${logs.join('; ')}`);
});

test('a connection in detection when the drain starts is still served if its client sends a request before the detection deadline', async (t) => {
  const o = await origin(false);
  t.teardown(() => o.close());
  const { proxy, port } = await proxyTo(o.port);
  const c = net.connect({ host: HOST, port });
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  await waitFor(() => proxy.stats().open === 1);
  const closing = proxy.close(DEADLINE_MS);
  let got = '';
  c.setEncoding('utf8');
  c.on('data', (d: string) => (got += d));
  c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await once(c, 'end');
  await closing;
  t.regex(got, /^HTTP\/1\.1 200 /);
  t.regex(got, /\r\nconnection: close\r\n/i, 'told the connection ends');
  t.true(got.endsWith('ok'));
});

test('cutDrain() ends a drain at once: a tunnel still open is closed, not waited for until the deadline', async (t) => {
  const { proxy, port } = await proxyTo(await rawOrigin(t, (s) => s.pipe(s)));
  const c = net.connect({ host: HOST, port });
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  // Not HTTP: after detection, an opaque tunnel, which a drain leaves open until its deadline.
  c.write('hello\n');
  await once(c, 'data');
  const t0 = performance.now();
  const closing = proxy.close(DEADLINE_MS);
  proxy.cutDrain();
  await once(c, 'close');
  await closing;
  t.true(performance.now() - t0 < DEADLINE_MS / 3, `the drain ended at the cut, not at its ${DEADLINE_MS} ms deadline`);
});

test('a second close() during a drain does not orphan the first: after cutDrain() both end, not the first at its deadline', async (t) => {
  const { proxy, port } = await proxyTo(await rawOrigin(t, (s) => s.pipe(s)));
  const c = net.connect({ host: HOST, port });
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  c.write('hello\n'); // an opaque tunnel: the drain waits for it
  await once(c, 'data');
  let firstDone = false;
  const first = proxy.close(DEADLINE_MS).then(() => (firstDone = true));
  const second = proxy.close(DEADLINE_MS);
  proxy.cutDrain();
  await second;
  await new Promise((r) => setImmediate(r));
  t.true(firstDone, 'the first close() ended with the second, at the cut');
  if (firstDone) await first;
});
