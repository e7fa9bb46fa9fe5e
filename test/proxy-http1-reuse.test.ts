// Upstream reuse for clients that open a connection per request: the assembled proxy (real
// dispatcher, detector and HTTP/1 handler) over loopback. `Connection: close` is hop-by-hop,
// so the upstream leg stays alive and pooled; destinations known to speak HTTP/1 client-first
// skip the eager dial and take the pooled connection; a destination that changes protocol
// still works (docs/http1.md, docs/proxy.md).
import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import * as net from 'node:net';
import { once } from 'node:events';
import { Proxy, PortSet } from '../src/proxy/index.ts';
import { createHttp1Handler, UpstreamPool, type UpstreamPoolOptions } from '../src/proxy/http1/index.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { KnownHttp1 } from '../src/proxy/known-http1.ts';
import { waitFor } from './helpers/until.ts';
import { startRawOrigin } from './helpers/raw-origin.ts';
import { nativeIo } from './helpers/native-io.ts';

const HOST = '127.0.0.1';

async function startProxy(upPort: number, detectTimeoutMs = 1000, poolOpts: UpstreamPoolOptions = {}) {
  const sink = new RecordingSink();
  // Parked connections outlive any stall of this test: the pool's real idle timer is not under test here.
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000, ...poolOpts });
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: (ip) => ({ ip, port: upPort, podKey: 3n }),
    telemetry: sink,
    opaquePorts: PortSet.empty(),
    detectTimeoutMs,
    handlers: { http1: createHttp1Handler({ pool }) },
    log: () => {},
    nativeIo: nativeIo(),
  });
  const { port } = await proxy.listen();
  return { proxy, port, pool, sink, close: () => { pool.close(); return proxy.close(200); } };
}

/** Answers every complete request (head plus Content-Length body) with 200 and `body(head)`. */
function answerRequests(s: net.Socket, body: (head: string, reqBody: string) => string) {
  let buf = '';
  s.on('data', (d) => {
    buf += d.toString('latin1');
    for (;;) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const head = buf.slice(0, i);
      const len = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < i + 4 + len) return;
      const reqBody = buf.slice(i + 4, i + 4 + len);
      buf = buf.slice(i + 4 + len);
      const b = body(head, reqBody);
      const close = /^connection:.*\bclose\b/im.test(head) || /^[A-Z]+ \S+ HTTP\/1\.0\r\n/.test(head) && !/keep-alive/i.test(head);
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${b.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n${b}`);
      if (close) s.end();
    }
  });
}

/**
 * One request on a new connection; resolves with everything the proxy sent once the proxy
 * closes it (ended), or once `complete` says the response is all there (a kept-alive client).
 */
async function exchange(port: number, request: string, complete?: (data: string) => boolean): Promise<{ data: string; ended: boolean }> {
  const c = net.connect({ host: HOST, port, allowHalfOpen: true });
  c.on('error', () => {});
  await once(c, 'connect');
  if (request !== '') c.write(request);
  let data = '';
  const ended = await new Promise<boolean>((resolve, reject) => {
    // Only a hang detector: every awaited event comes on a working proxy.
    const hang = setTimeout(() => reject(new Error(`no end and no complete response within 20 s; got ${JSON.stringify(data)}`)), 20_000);
    const done = (v: boolean) => (clearTimeout(hang), resolve(v));
    c.on('data', (d) => {
      data += d.toString('latin1');
      if (complete?.(data)) done(false);
    });
    c.once('end', () => done(true));
  });
  c.destroy();
  return { data, ended };
}

test('clients sending Connection: close, one connection each, share one upstream connection', async (t) => {
  const origin = await startRawOrigin((s) => answerRequests(s, (head, body) => `${head.split(' ')[1]}:${body}`));
  const p = await startProxy(origin.port);
  t.teardown(() => { origin.close(); return p.close(); });
  const N = 12;
  for (let i = 0; i < N; i++) {
    const req = i % 2 === 0
      ? `GET /g${i} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`
      : `POST /p${i} HTTP/1.1\r\nHost: svc\r\nconnection: Close\r\nContent-Length: 3\r\n\r\nabc`;
    const r = await exchange(p.port, req);
    const want = i % 2 === 0 ? `/g${i}:` : `/p${i}:abc`;
    t.is(r.data, `HTTP/1.1 200 OK\r\nContent-Length: ${want.length}\r\nConnection: close\r\n\r\n${want}`, `request ${i}`);
    t.true(r.ended, `the client connection of request ${i} was closed after the response`);
  }
  t.is(origin.accepted, 1, 'one upstream connection served every client connection');
  t.like(p.proxy.stats(), { eagerDialSkipped: N - 1, eagerDialLate: 0, knownHttp1Dests: 1 });
  await waitFor(() => p.sink.requests.length === N);
  t.true(p.sink.requests.every((e) => e.status === 200 && e.success));
  t.is(p.pool.idleCount(), 1, 'the upstream is parked for the next client');
});

test('a POST takes a pooled upstream only if it was used within the last second; a GET takes an older one', async (t) => {
  const origin = await startRawOrigin((s) => answerRequests(s, (head, body) => `${head.split(' ')[1]}:${body}`));
  // Idle ages on a clock the test moves: "within the last second" is exact however slow the machine.
  let clock = 0;
  const p = await startProxy(origin.port, 1000, { now: () => clock });
  t.teardown(() => { origin.close(); return p.close(); });
  const post = (path: string) => `POST ${path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx`;
  t.true((await exchange(p.port, `GET /a HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`)).ended);
  clock += 1000;
  t.true((await exchange(p.port, post('/b'))).data.includes('/b:x'));
  t.is(origin.accepted, 1, 'a POST reuses an upstream parked exactly 1 s ago');
  clock += 1001;
  t.true((await exchange(p.port, post('/c'))).data.includes('/c:x'));
  t.is(origin.accepted, 2, 'after 1.001 s idle the POST is sent on a new connection: it could not be re-sent if the server closed the old one as we wrote');
  clock += 1300;
  t.true((await exchange(p.port, `GET /d HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`)).ended);
  t.is(origin.accepted, 2, 'a GET (re-sent if need be) still takes a connection idle for 1.3 s');
});

/** A keep-alive client connection: `send` writes a request and resolves with its response (its body ends with `;`). */
async function keepAliveClient(port: number) {
  const c = net.connect({ host: HOST, port, allowHalfOpen: true });
  c.on('error', () => {});
  await once(c, 'connect');
  let data = '';
  let waiting: ((s: string) => void) | null = null;
  c.on('data', (d) => {
    data += d.toString('latin1');
    if (waiting !== null && data.endsWith(';')) {
      const w = waiting;
      waiting = null;
      const r = data;
      data = '';
      w(r);
    }
  });
  return {
    socket: c,
    send: (req: string) => new Promise<string>((resolve) => {
      waiting = resolve;
      c.write(req);
    }),
  };
}

/**
 * An origin whose answers name the upstream connection (c1, c2...), the request path and body, behind
 * a proxy whose pool idles connections for 1 s by `clock.now`.
 */
async function numberedOrigin(t: ExecutionContext, clock: { now: number }) {
  let conns = 0;
  const origin = await startRawOrigin((s) => {
    const n = ++conns;
    answerRequests(s, (head, body) => `c${n}${head.split(' ')[1]}:${body};`);
  });
  const p = await startProxy(origin.port, 1000, { now: () => clock.now });
  t.teardown(() => { origin.close(); return p.close(); });
  return p;
}

// The age of an upstream is how long since it last served a response, wherever it waited since:
// bound to its client or parked in the pool (docs/http1.md, "Known gaps").
test('a POST on a kept-alive client connection goes to a new upstream when its bound one has been idle over a second, as for a pooled one', async (t) => {
  const clock = { now: 0 };
  const p = await numberedOrigin(t, clock);
  const c = await keepAliveClient(p.port);
  t.true((await c.send('GET /a HTTP/1.1\r\nHost: svc\r\n\r\n')).endsWith('c1/a:;'));
  clock.now += 1000;
  t.true((await c.send('POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\n\r\nx')).endsWith('c1/b:x;'), 'used 1 s ago: the bound upstream');
  clock.now += 1001;
  const r = await c.send('POST /c HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\n\r\nx');
  t.true(r.endsWith('c2/c:x;'), `idle 1.001 s: a new upstream; got ${JSON.stringify(r)}`);
  clock.now += 1300;
  t.true((await c.send('GET /d HTTP/1.1\r\nHost: svc\r\n\r\n')).endsWith('c2/d:;'), 'a GET still takes one idle 1.3 s');
  c.socket.destroy();
});

test('an upstream parked when its client leaves keeps its idle age: a POST does not take one idle over a second before', async (t) => {
  const clock = { now: 0 };
  const p = await numberedOrigin(t, clock);
  const a = await keepAliveClient(p.port);
  t.true((await a.send('GET /a HTTP/1.1\r\nHost: svc\r\n\r\n')).endsWith('c1/a:;'));
  clock.now += 1001;
  a.socket.end(); // its idle upstream goes to the pool
  await waitFor(() => p.pool.idleCount() === 1);
  const r = await exchange(p.port, 'POST /b HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx');
  t.true(r.data.endsWith('c2/b:x;'), `the parked upstream was last used 1.001 s ago: a new one; got ${JSON.stringify(r.data)}`);
  a.socket.destroy();
});

test('node:http clients without an agent (Connection: close), 4 at a time, reuse the upstream pool', async (t) => {
  const server = http.createServer((req, res) => res.end(`hi ${req.url}`));
  let accepted = 0;
  server.on('connection', () => accepted++);
  server.listen(0, HOST);
  await once(server, 'listening');
  const p = await startProxy((server.address() as net.AddressInfo).port);
  t.teardown(() => { server.closeAllConnections(); server.close(); return p.close(); });
  const get = (path: string) => new Promise<{ body: string; connection: string | undefined }>((resolve, reject) => {
    http.get({ host: HOST, port: p.port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ body, connection: res.headers.connection }));
    }).on('error', reject);
  });
  for (let round = 0; round < 5; round++) {
    const got = await Promise.all([0, 1, 2, 3].map((i) => get(`/${round}/${i}`)));
    t.deepEqual(got.map((g) => g.body), [0, 1, 2, 3].map((i) => `hi /${round}/${i}`));
    t.true(got.every((g) => g.connection === 'close'));
  }
  // The first round dials (the destination is not known yet); later rounds take pooled ones.
  t.true(accepted <= 8, `${accepted} upstream connections for 20 client connections`);
  t.true(p.proxy.stats().eagerDialSkipped >= 16);
});

test('a close-delimited response to a Connection: close client is forwarded whole; that upstream is not pooled', async (t) => {
  const origin = await startRawOrigin((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1-');
      setTimeout(() => s.end('part2'), 30);
    });
  });
  const p = await startProxy(origin.port);
  t.teardown(() => { origin.close(); return p.close(); });
  for (let i = 0; i < 2; i++) {
    const r = await exchange(p.port, 'GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n');
    t.is(r.data, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npart1-part2');
    t.true(r.ended);
  }
  t.is(origin.accepted, 2, 'an upstream that ended the response by closing is not reused');
  t.is(p.pool.idleCount(), 0);
  await waitFor(() => p.sink.requests.length === 2);
  t.true(p.sink.requests.every((e) => e.success));
});

test('a known HTTP/1 destination that now speaks first still works: dialled at the deadline, then forgotten', async (t) => {
  let greet = false;
  const origin = await startRawOrigin((s) => {
    if (greet) {
      s.write('220 hello\r\n');
      s.on('data', (d) => s.write(d)); // echo
    } else answerRequests(s, () => 'ok');
  });
  const p = await startProxy(origin.port, 150);
  t.teardown(() => { origin.close(); return p.close(); });
  const first = await exchange(p.port, 'GET / HTTP/1.1\r\nHost: svc\r\n\r\n', (d) => d.endsWith('ok'));
  t.regex(first.data, /^HTTP\/1\.1 200 OK[^]*ok$/);
  t.is(p.proxy.stats().knownHttp1Dests, 1);

  greet = true;
  // The client waits for the greeting; the server waits for a connection that is not dialled yet.
  const c = net.connect({ host: HOST, port: p.port });
  c.on('error', () => {});
  const t0 = performance.now();
  const [greeting] = await once(c, 'data');
  const waited = performance.now() - t0;
  t.is(greeting.toString(), '220 hello\r\n');
  // The 150 ms deadline starts at the accept, after t0 (1 ms for the clocks' rounding).
  t.true(waited >= 149, `the greeting came after the detection deadline (${waited.toFixed(0)} ms)`);
  c.write('EHLO x\r\n');
  const [echo] = await once(c, 'data');
  t.is(echo.toString(), 'EHLO x\r\n');
  c.destroy();
  t.like(p.proxy.stats(), { eagerDialLate: 1, knownHttp1Dests: 0 });
  t.is(p.proxy.stats().byDetection['server-first'], 1);

  // Forgotten: the next connection is dialled at accept again (not late) and greeted.
  const c2 = net.connect({ host: HOST, port: p.port });
  c2.on('error', () => {});
  await once(c2, 'data');
  c2.destroy();
  t.like(p.proxy.stats(), { eagerDialLate: 1, eagerDialSkipped: 0, knownHttp1Dests: 0 });
  t.is(p.proxy.stats().byDetection['server-first'], 2);
});

test('a known HTTP/1 destination receiving other bytes: dialled then, forwarded opaquely, forgotten', async (t) => {
  let http1 = true;
  const origin = await startRawOrigin((s) => {
    if (http1) answerRequests(s, () => 'ok');
    else s.on('data', (d) => s.end(Buffer.concat([Buffer.from('echo:'), d])));
  });
  const p = await startProxy(origin.port);
  t.teardown(() => { origin.close(); return p.close(); });
  t.regex((await exchange(p.port, 'GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n')).data, /ok$/);
  t.is(p.proxy.stats().knownHttp1Dests, 1);
  http1 = false;
  const r = await exchange(p.port, '\x00\x01binary\r\n');
  t.is(r.data, 'echo:\x00\x01binary\r\n');
  t.true(r.ended);
  t.like(p.proxy.stats(), { eagerDialSkipped: 0, eagerDialLate: 1, knownHttp1Dests: 0 });
});

test('known destinations are bounded: the least recently used one goes first', (t) => {
  const k = new KnownHttp1(3);
  for (const d of ['a', 'b', 'c']) k.add(d);
  k.add('a'); // a is now the most recent
  k.add('d'); // evicts b
  t.deepEqual(['a', 'b', 'c', 'd'].map((d) => k.has(d)), [true, false, true, true]);
  t.is(k.size, 3);
  k.delete('c');
  t.false(k.has('c'));
  t.throws(() => new KnownHttp1(0));
});
