// The HTTP/1 forwarder over real loopback sockets: real clients (curl, node:http, raw sockets)
// on one side, node:http and raw net servers on the other.
import test, { type ExecutionContext } from 'ava';
import * as net from 'node:net';
import * as http from 'node:http';
import { spawn, execFile, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createHttp1Handler, UpstreamPool } from '../src/proxy/http1/index.ts';
import { defaultLimits, type ConnContext, type ProxyLimits } from '../src/proxy/context.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { waitFor } from './helpers/until.ts';
import { startRawOrigin } from './helpers/raw-origin.ts';
import { freePort } from './helpers/ports.ts';
import { adoptForTest } from './helpers/native-io.ts';

interface Proxy {
  port: number;
  sink: RecordingSink;
  pool: UpstreamPool;
  /** Client connections the proxy still has open. */
  readonly clients: number;
  close(): Promise<void>;
}

/** A listener standing in for the dispatcher: reads the first bytes, dials eagerly, hands over. */
async function startProxy(destPort: number, limits: Partial<ProxyLimits> = {}, eager = true, pool = new UpstreamPool()): Promise<Proxy> {
  const sink = new RecordingSink();
  const handler = createHttp1Handler({ pool });
  const lim = { ...defaultLimits, ...limits };
  let connId = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const ctx: ConnContext = {
      connId: ++connId,
      client,
      endpoints: {
        direction: 'outbound',
        sourceIp: client.remoteAddress!,
        sourcePort: client.remotePort!,
        sourcePodKey: 0n,
        destIp: '127.0.0.1',
        destPort,
      },
      telemetry: sink,
      dial: (ip, port) => net.connect({ host: ip, port, allowHalfOpen: true }),
      openedAt: Date.now(),
    };
    const upstream = eager ? ctx.dial('127.0.0.1', destPort) : null;
    upstream?.on('error', () => {});
    const onData = (head: Buffer) => {
      client.off('data', onData);
      client.pause();
      handler(ctx, adoptForTest(ctx, head), upstream, lim);
    };
    client.on('data', onData);
    client.resume(); // pauseOnConnect sockets do not start flowing on a 'data' listener
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    sink,
    pool,
    get clients() {
      return sockets.size;
    },
    async close() {
      pool.close();
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** A node:http origin that counts its TCP connections. */
async function startHttpServer(handler: http.RequestListener) {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections;
    },
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/**
 * Reads from a socket until `until` says the collected bytes are complete; with `untilEnd`,
 * to EOF. An EOF before `until` is satisfied rejects: a missing reply fails the test.
 * The timeout only turns a hang into a message; no working proxy comes near it.
 */
function readUntil(s: net.Socket, until: (all: Buffer) => boolean, timeoutMs = 20_000): Promise<{ data: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => { cleanup(); reject(new Error('timeout; got: ' + data.toString('latin1'))); }, timeoutMs);
    const onData = (c: Buffer) => {
      data = Buffer.concat([data, c]);
      if (until(data)) { cleanup(); resolve({ data, ended: false }); }
    };
    const onEnd = () => {
      cleanup();
      if (until === untilEnd) resolve({ data, ended: true });
      else reject(new Error(`the connection ended before the expected bytes; got: ${JSON.stringify(data.toString('latin1'))}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('close', onEnd);
    };
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('close', onEnd);
  });
}

const untilEnd = () => false;
const hasText = (t: string) => (b: Buffer) => b.toString('latin1').includes(t);

async function rawConnect(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '30', ...args], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('keep-alive: many requests from node:http over pooled upstream connections', async (t) => {
  const origin = await startHttpServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('hello ' + req.url);
  });
  // No eager dial: the dispatcher's eager connection would be a second upstream by design.
  const proxy = await startProxy(origin.port, {}, false);
  t.teardown(() => { origin.close(); proxy.close(); });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 20; i++) {
    const body = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: proxy.port, path: `/r${i}`, agent, headers: { host: 'svc.test' } }, (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (s += d));
        res.on('end', () => resolve(s));
      }).on('error', reject);
    });
    t.is(body, `hello /r${i}`);
  }
  agent.destroy();
  // A second client connection reuses the pooled upstream too.
  const r = await curl([`http://127.0.0.1:${proxy.port}/again`]);
  t.is(r.stdout, 'hello /again');
  t.is(origin.connections, 1, 'one upstream connection served both client connections');
  await waitFor(() => proxy.sink.requests.length === 21);
  const ev = proxy.sink.requests[5];
  t.is(ev.method, 'GET');
  t.is(ev.path, '/r5');
  t.is(ev.authority, 'svc.test');
  t.is(ev.status, 200);
  t.true(ev.success);
  t.is(ev.protocol, 'http1');
  t.is(ev.destPort, origin.port);
  t.true(ev.latencyMs >= 0 && ev.durationMs >= ev.latencyMs);
  t.true(proxy.pool.reused >= 1);
});

test('header names, case and order reach the server byte for byte; telemetry bytes match the wire', async (t) => {
  let seen = Buffer.alloc(0);
  const response = 'HTTP/1.1 201 Created\r\nX-B: 2\r\ncontent-LENGTH: 3\r\n\r\nabc';
  const origin = await startRawOrigin((s) => {
    s.on('data', (d) => {
      seen = Buffer.concat([seen, d]);
      if (seen.toString('latin1').endsWith('hello')) s.write(response);
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const request =
    'PUT /Path?Q=1 HTTP/1.1\r\nzz-last: 1\r\nHOST: Svc.Example\r\nx-MiXeD-CaSe:  spaced  \r\naa-first: 2\r\n' +
    'Content-Length: 5\r\nX-Dup: a\r\nx-dup: b\r\n\r\nhello';
  const c = await rawConnect(proxy.port);
  c.write(request.slice(0, 20));
  await new Promise((r) => setTimeout(r, 30));
  c.write(request.slice(20));
  const got = await readUntil(c, hasText('abc'));
  t.is(got.data.toString('latin1'), response);
  t.is(seen.toString('latin1'), request);
  c.end();
  await waitFor(() => proxy.sink.requests.length === 1);
  const ev = proxy.sink.requests[0];
  t.is(ev.method, 'PUT');
  t.is(ev.path, '/Path?Q=1');
  t.is(ev.authority, 'Svc.Example');
  t.is(ev.status, 201);
  t.is(ev.requestBytes, Buffer.byteLength(request));
  t.is(ev.responseBytes, Buffer.byteLength(response));
});

test('pipelined requests are answered in order', async (t) => {
  const origin = await startHttpServer((req, res) => res.end('r:' + req.url));
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  const got = await readUntil(c, untilEnd);
  const text = got.data.toString('latin1');
  t.true(got.ended);
  const order = [...text.matchAll(/r:\/(\d)/g)].map((m) => m[1]);
  t.deepEqual(order, ['1', '2', '3']);
});

test('100-continue with curl: the interim response is forwarded at once, then the final one', async (t) => {
  let continued = 0;
  const origin = await startHttpServer((req, res) => {
    let n = 0;
    req.on('data', (d) => (n += d.length));
    req.on('end', () => res.end(`got ${n}`));
  });
  origin.server.on('checkContinue', (req, res) => {
    continued++;
    res.writeContinue();
    origin.server.emit('request', req, res);
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  // curl would send the body without a 100 only after --expect100-timeout, here longer than
  // its --max-time: the exchange completes only if the 100 came through.
  const r = await curl(['-v', '--expect100-timeout', '60', '-H', 'Expect: 100-continue', '--data-binary', 'x'.repeat(5000), `http://127.0.0.1:${proxy.port}/up`]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'got 5000');
  t.is(continued, 1);
  t.regex(r.stderr, /HTTP\/1\.1 100 Continue/);
  await waitFor(() => proxy.sink.requests.length === 1);
  t.is(proxy.sink.requests[0].status, 200);
  t.is(proxy.sink.requests[0].method, 'POST');
});

test('HTTP/1.0: the client is closed unless it asked for keep-alive; the upstream leg is kept alive either way', async (t) => {
  const nodeOrigin = await startHttpServer((req, res) => res.end('v' + req.httpVersion));
  const proxy1 = await startProxy(nodeOrigin.port);
  t.teardown(() => { nodeOrigin.close(); proxy1.close(); });
  const r = await curl(['--http1.0', '-i', `http://127.0.0.1:${proxy1.port}/`]);
  t.regex(r.stdout, /^HTTP\/1\.1 200/);
  t.regex(r.stdout, /v1\.0$/);

  // An HTTP/1.0 origin that keeps the connection only when the request asks for it.
  const origin = await startRawOrigin((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const keep = /connection: keep-alive/i.test(buf.slice(0, i));
        buf = buf.slice(i + 4);
        if (keep) s.write('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nkept');
        else s.end('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nlast');
      }
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  let ended = false;
  c.on('end', () => (ended = true));
  c.write('GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
  await readUntil(c, hasText('kept'));
  // Kept open: the second request on this connection is answered below.
  t.false(ended, 'kept open after a keep-alive exchange');
  c.write('GET /b HTTP/1.0\r\n\r\n');
  const second = await readUntil(c, untilEnd);
  // Sent upstream with keep-alive (hop-by-hop), so the origin kept it; the client hears close.
  t.is(second.data.toString('latin1'), 'HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nkept');
  t.true(second.ended, 'closed after a 1.0 request without keep-alive');
  await waitFor(() => proxy.sink.requests.length === 2);
  t.true(proxy.sink.requests.every((e) => e.status === 200 && e.success));
  await waitFor(() => proxy.pool.idleCount() === 1);
  t.is(proxy.pool.idleCount(), 1, 'the upstream went to the pool');
});

test('HEAD, 204 and 304 responses carry no body and the connection keeps working', async (t) => {
  const origin = await startRawOrigin((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, i);
        buf = buf.slice(i + 4);
        if (head.startsWith('HEAD')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
        else if (head.includes('/204')) s.write('HTTP/1.1 204 No Content\r\n\r\n');
        else if (head.includes('/304')) s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n');
        else s.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone');
      }
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('HEAD / HTTP/1.1\r\nHost: a\r\n\r\n');
  t.is((await readUntil(c, hasText('\r\n\r\n'))).data.toString('latin1'), 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
  c.write('GET /204 HTTP/1.1\r\nHost: a\r\n\r\n');
  t.regex((await readUntil(c, hasText('\r\n\r\n'))).data.toString('latin1'), /^HTTP\/1\.1 204/);
  c.write('GET /304 HTTP/1.1\r\nHost: a\r\n\r\n');
  t.regex((await readUntil(c, hasText('\r\n\r\n'))).data.toString('latin1'), /^HTTP\/1\.1 304/);
  c.write('GET /end HTTP/1.1\r\nHost: a\r\n\r\n');
  t.regex((await readUntil(c, hasText('done'))).data.toString('latin1'), /done$/);
  await waitFor(() => proxy.sink.requests.length === 4);
  t.deepEqual(proxy.sink.requests.map((e) => [e.method, e.status]), [['HEAD', 200], ['GET', 204], ['GET', 304], ['GET', 200]]);
  c.destroy();
});

test('close-delimited response: read until upstream EOF, then close the client', async (t) => {
  const origin = await startRawOrigin((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1-');
      setTimeout(() => s.end('part2'), 50);
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const r = await curl([`http://127.0.0.1:${proxy.port}/`]);
  t.is(r.code, 0);
  t.is(r.stdout, 'part1-part2');
  await waitFor(() => proxy.sink.requests.length === 1);
  t.true(proxy.sink.requests[0].success);
});

test('WebSocket-style Upgrade becomes a tunnel after 101; a refused upgrade stays HTTP', async (t) => {
  const origin = await startRawOrigin((s) => {
    let buf = Buffer.alloc(0);
    let tunnel = false;
    s.on('data', (d) => {
      if (tunnel) { s.write(d); return; }
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const head = buf.subarray(0, i).toString('latin1');
      const rest = buf.subarray(i + 4);
      buf = Buffer.alloc(0);
      if (head.includes('/refuse')) {
        s.write('HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno');
        return;
      }
      tunnel = true;
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nserver-hello:');
      if (rest.length) s.write(rest);
    });
    s.on('end', () => s.end());
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET /refuse HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  t.regex((await readUntil(c, hasText('no'))).data.toString('latin1'), /426/);
  c.write('GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  const head = await readUntil(c, hasText('server-hello:'));
  t.regex(head.data.toString('latin1'), /^HTTP\/1\.1 101/);
  const payload = Buffer.from([0x81, 0x04, 0x00, 0xff, 0x0d, 0x0a, 0x0d, 0x0a]);
  c.write(payload);
  const echo = await readUntil(c, (b) => b.length >= payload.length);
  t.deepEqual(echo.data, payload);
  c.end(); // half-close travels through the tunnel; the server ends back
  const rest = await readUntil(c, untilEnd);
  t.true(rest.ended);
  await waitFor(() => proxy.sink.requests.length === 2);
  t.deepEqual(proxy.sink.requests.map((e) => e.status), [426, 101]);
});

test('CONNECT: 2xx turns the connection into a tunnel; authority is the target', async (t) => {
  const origin = await startRawOrigin((s) => {
    let tunnel = false;
    s.on('data', (d) => {
      if (tunnel) s.write(d.toString('latin1').toUpperCase());
      else if (d.toString('latin1').includes('\r\n\r\n')) {
        tunnel = true;
        s.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      }
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n');
  t.regex((await readUntil(c, hasText('\r\n\r\n'))).data.toString('latin1'), /^HTTP\/1\.1 200/);
  c.write('raw bytes GET / HTTP/1.1\r\n\r\n');
  t.is((await readUntil(c, hasText('\r\n\r\n'))).data.toString('latin1'), 'RAW BYTES GET / HTTP/1.1\r\n\r\n');
  c.destroy();
  await waitFor(() => proxy.sink.requests.length === 1);
  const ev = proxy.sink.requests[0];
  t.is(ev.method, 'CONNECT');
  t.is(ev.authority, 'db.internal:5432');
  t.is(ev.status, 200);
});

// As in the opaque tunnel (docs/proxy.md, "Resets"): a reset is passed on as a reset, never as a
// FIN, which the other end would take for its peer's orderly end of the stream.
for (const side of ['upstream', 'client'] as const) {
  test(`a tunnel (2xx to CONNECT) passes the ${side}'s reset on as a reset, not as a FIN`, async (t) => {
    let upstream: net.Socket | null = null;
    let upEnded = false;
    let upError = '';
    let upDone: (v: unknown) => void = () => {};
    const upClosed = new Promise((resolve) => (upDone = resolve));
    const origin = await startRawOrigin((s) => {
      upstream = s;
      // Half-open allowed: a FIN gives 'end' and no 'close'; a reset gives 'error' and 'close'.
      s.on('end', () => { upEnded = true; upDone(null); });
      s.on('error', (e: NodeJS.ErrnoException) => (upError = e.code ?? e.message));
      s.on('close', () => upDone(null));
      s.once('data', () => s.write('HTTP/1.1 200 Connection Established\r\n\r\nready'));
    });
    const proxy = await startProxy(origin.port);
    t.teardown(() => { origin.close(); proxy.close(); });
    const c = await rawConnect(proxy.port);
    let clientEnded = false;
    let clientError = '';
    c.on('end', () => (clientEnded = true));
    c.on('error', (e: NodeJS.ErrnoException) => (clientError = e.code ?? e.message));
    const clientClosed = new Promise((resolve) => { c.once('end', resolve); c.once('close', resolve); });
    c.write('CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n');
    await readUntil(c, hasText('ready'));
    c.resume();
    if (side === 'upstream') {
      upstream!.resetAndDestroy();
      await clientClosed;
      t.false(clientEnded, 'the client read a FIN');
      t.is(clientError, 'ECONNRESET');
    } else {
      c.resetAndDestroy();
      await upClosed;
      t.false(upEnded, 'the server read a FIN');
      t.is(upError, 'ECONNRESET');
    }
    c.destroy();
  });
}

test('upstream refuses: 502 Bad Gateway', async (t) => {
  const port = await freePort(); // nothing listens there, and no listen(0) or dial can take it (helpers/ports.ts)
  const proxy = await startProxy(port);
  t.teardown(() => proxy.close());
  const r = await curl(['-i', `http://127.0.0.1:${proxy.port}/x`]);
  t.regex(r.stdout, /^HTTP\/1\.1 502 Bad Gateway/);
  await waitFor(() => proxy.sink.requests.length === 1);
  const ev = proxy.sink.requests[0];
  t.is(ev.status, 502);
  t.false(ev.success);
  t.is(ev.error, 'ECONNREFUSED');
});

test('upstream connect timeout: 504 Gateway Timeout', async (t) => {
  // A listener that never accepts, with its accept queue full: further SYNs are dropped.
  const py = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)']);
  t.teardown(() => py.kill());
  const [line] = (await once(py.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  const fillers: net.Socket[] = [];
  t.teardown(() => fillers.forEach((s) => s.destroy()));
  // ss tells when the queue is full: Recv-Q (connections queued) above Send-Q (the backlog).
  const queueFull = () => {
    const [recvQ, sendQ] = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim().split(/\s+/).slice(1, 3).map(Number);
    return recvQ! > sendQ!;
  };
  while (!queueFull()) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
    await once(s, 'connect');
  }
  const proxy = await startProxy(port, { upstreamConnectTimeoutMs: 300 });
  t.teardown(() => proxy.close());
  const r = await curl(['-i', `http://127.0.0.1:${proxy.port}/slow`]);
  t.regex(r.stdout, /^HTTP\/1\.1 504 Gateway Timeout/);
  await waitFor(() => proxy.sink.requests.length === 1);
  t.is(proxy.sink.requests[0].status, 504);
  t.false(proxy.sink.requests[0].success);
});

test('upstream dies mid-response: client connection closed, failure recorded', async (t) => {
  const origin = await startRawOrigin((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!');
      setTimeout(() => s.destroy(), 30);
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  const got = await readUntil(c, untilEnd);
  t.true(got.ended);
  t.regex(got.data.toString('latin1'), /only-ten!!$/);
  await waitFor(() => proxy.sink.requests.length === 1);
  const ev = proxy.sink.requests[0];
  t.is(ev.status, 200);
  t.false(ev.success);
  t.truthy(ev.error);
});

/** An origin answering "fine" that counts the requests it sees, behind a proxy with `limits`. */
async function countedOrigin(t: ExecutionContext, limits: Partial<ProxyLimits>) {
  let seen = 0;
  const origin = await startHttpServer((_req, res) => {
    seen++;
    res.end('fine');
  });
  const proxy = await startProxy(origin.port, limits);
  t.teardown(() => { origin.close(); proxy.close(); });
  return { proxy, requestsSeen: () => seen };
}

for (const [name, status, send, limits] of [
  ['malformed request line', 400, 'GET / HTTP/1.1 extra\r\n\r\n', {}],
  ['malformed header', 400, 'GET / HTTP/1.1\r\nBad Header: x\r\n\r\n', {}],
  ['oversized head', 431, 'GET / HTTP/1.1\r\nX-Big: ' + 'a'.repeat(9000) + '\r\n\r\n', { maxHeaderBytes: 8192 }],
  ['slow head', 408, 'GET / HTTP/1.1\r\nHost: a\r\n', { headerTimeoutMs: 300 }],
  ['request smuggling CL+TE', 400, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG', {}],
] as Array<[string, number, string, Partial<ProxyLimits>]>) {
  test(`${name}: ${status}, that connection closes, another is unaffected`, async (t) => {
    const { proxy, requestsSeen } = await countedOrigin(t, limits);
    const bystander = await rawConnect(proxy.port);
    const bad = await rawConnect(proxy.port);
    bad.write(send);
    const got = await readUntil(bad, untilEnd);
    t.true(got.ended);
    t.regex(got.data.toString('latin1'), new RegExp(`^HTTP/1\\.1 ${status} `));
    bystander.write('GET /ok HTTP/1.1\r\nHost: a\r\n\r\n');
    t.regex((await readUntil(bystander, hasText('fine'))).data.toString('latin1'), /^HTTP\/1\.1 200/);
    bystander.destroy();
    t.is(requestsSeen(), 1, 'the bad request never reached the server');
    await waitFor(() => proxy.sink.requests.length === 2);
    t.true(proxy.sink.requests.some((e) => e.status === status && e.error !== undefined));
  });
}

// A head with a bare LF or CR can never end in CRLFCRLF: refused as soon as one is read, not left
// waiting for the head timeout (a client) or the idle timeout (an upstream). The timeouts here are
// far longer than readUntil's wait, so a proxy that waits for them fails the test.
test('a request head with bare-LF line endings: 400 at once, not a wait for the head timeout', async (t) => {
  const { proxy, requestsSeen } = await countedOrigin(t, { headerTimeoutMs: 600_000 });
  for (const send of ['GET / HTTP/1.1\nHost: a\n\n', 'GET / HTTP/1.1\r\nHost: a\rX: y\r\n']) {
    const c = await rawConnect(proxy.port);
    c.write(send);
    const got = await readUntil(c, untilEnd);
    t.true(got.ended);
    t.regex(got.data.toString('latin1'), /^HTTP\/1\.1 400 /, JSON.stringify(send));
    c.destroy();
  }
  // After a request that was answered: the next head on the connection is read the same way.
  const c = await rawConnect(proxy.port);
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\nHost: a\n');
  const got = await readUntil(c, untilEnd);
  t.regex(got.data.toString('latin1'), /^HTTP\/1\.1 200 [^]*fineHTTP\/1\.1 400 /);
  c.destroy();
  t.is(requestsSeen(), 1);
});

// One rule wherever a half-close cuts a request head short: 400 (the client can still read it),
// then the connection closes; as Node's http server answers an EOF mid-head. Nothing goes upstream.
test('a client that half-closes mid-head gets 400 and the close: as its first request, after an answered one, and pipelined behind one', async (t) => {
  const { proxy, requestsSeen } = await countedOrigin(t, { headerTimeoutMs: 600_000 });
  const partial = 'GET /cut HTTP/1.1\r\nHost: a\r\n';
  const first = await rawConnect(proxy.port);
  first.end(partial);
  const a = await readUntil(first, untilEnd);
  t.regex(a.data.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n[^]*connection: close\r\n/, 'the first request');
  first.destroy();

  const after = await rawConnect(proxy.port);
  after.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(after, hasText('fine'));
  after.end(partial);
  const b = await readUntil(after, untilEnd);
  t.regex(b.data.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n[^]*connection: close\r\n/, 'after an answered request, the connection idle');
  after.destroy();

  const piped = await rawConnect(proxy.port);
  piped.end('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n' + partial);
  const c = await readUntil(piped, untilEnd);
  t.regex(c.data.toString('latin1'), /^HTTP\/1\.1 200 [^]*fineHTTP\/1\.1 400 Bad Request\r\n[^]*connection: close\r\n/, 'pipelined behind a request');
  piped.destroy();
  t.is(requestsSeen(), 2, 'only the whole requests reached the origin');
  await waitFor(() => proxy.sink.requests.length === 5);
  t.deepEqual(proxy.sink.requests.filter((e) => e.status === 400).map((e) => e.error), Array(3).fill('incomplete request head'), 'each recorded, with why');
});

test('bytes that cannot start a request line after a request (a TLS ClientHello): 400 at once, not a wait for the head timeout', async (t) => {
  const origin = await startHttpServer((req, res) => res.end('fine'));
  const proxy = await startProxy(origin.port, { headerTimeoutMs: 600_000 });
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  // No CR or LF in them: only where they start shows they are not a request.
  const hello = Buffer.from('160301006e0100006a0303' + '42'.repeat(32), 'hex');
  c.write(Buffer.concat([Buffer.from('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n'), hello]));
  const got = await readUntil(c, untilEnd);
  t.regex(got.data.toString('latin1'), /^HTTP\/1\.1 200 [^]*fineHTTP\/1\.1 400 /);
  c.destroy();
  await waitFor(() => proxy.sink.requests.length === 2);
  t.is(proxy.sink.requests[1]!.error, 'malformed request head: a bare LF or CR, or no method and space at its start', 'the reason, as logged and counted');
});

for (const [name, reply] of [
  ['bare-LF line endings', 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok'],
  ['a protocol that is not HTTP (lines with CRLF, never an empty one, as Redis answers)', "-ERR unknown command 'GET'\r\n"],
] as Array<[string, string]>) {
  test(`an upstream answering with ${name}: 502 at once, not a wait for the idle timeout`, async (t) => {
    const origin = await startRawOrigin((s) => {
      s.once('data', () => s.write(reply)); // and the connection stays open
    });
    const proxy = await startProxy(origin.port, { idleTimeoutMs: 600_000 });
    t.teardown(() => { origin.close(); proxy.close(); });
    const c = await rawConnect(proxy.port);
    c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    const got = await readUntil(c, untilEnd);
    t.true(got.ended);
    t.regex(got.data.toString('latin1'), /^HTTP\/1\.1 502 /);
    c.destroy();
    await waitFor(() => proxy.sink.requests.length === 1);
    t.is(proxy.sink.requests[0].status, 502);
  });
}

// A close-delimited body ends where the connection ends: the client cannot tell a cut one from a
// whole one unless the cut reaches it as a reset (Envoy and linkerd2-proxy send such a body chunked,
// whose missing last chunk says so; a byte pipe has only the reset).
for (const [name, cut] of [
  ['an upstream reset', 'reset'],
  ['the idle timeout', 'stall'],
] as Array<[string, 'reset' | 'stall']>) {
  test(`a close-delimited response cut short by ${name} reaches the client as a reset, not as a clean end of a whole body`, async (t) => {
    const upstreams: net.Socket[] = [];
    const origin = await startRawOrigin((s) => {
      upstreams.push(s);
      s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial'));
    });
    const proxy = await startProxy(origin.port, cut === 'stall' ? { idleTimeoutMs: 200 } : {});
    t.teardown(() => { origin.close(); proxy.close(); });
    const c = await rawConnect(proxy.port);
    let ended = false;
    let error = '';
    c.on('end', () => (ended = true));
    c.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    // Half-open allowed: a FIN gives 'end' and no 'close'; a reset gives 'error' and 'close'.
    const closed = new Promise((resolve) => { c.once('end', resolve); c.once('close', resolve); });
    c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await readUntil(c, hasText('partial'));
    if (cut === 'reset') upstreams[0]!.resetAndDestroy();
    c.resume();
    await closed;
    t.false(ended, 'the client read a clean end: it would take "partial" for the whole body');
    t.is(error, 'ECONNRESET');
    c.destroy();
    await waitFor(() => proxy.sink.requests.length === 1);
    t.false(proxy.sink.requests[0].success);
  });
}

test('a client that only sends empty lines is idle: closed at the idle timeout, with no response (they are not a request head)', async (t) => {
  const origin = await startHttpServer((req, res) => res.end('fine'));
  const proxy = await startProxy(origin.port, { idleTimeoutMs: 300 });
  t.teardown(() => { origin.close(); proxy.close(); });
  const idle = await rawConnect(proxy.port);
  // Six times per idle period, until the proxy closes it: before, each counted as activity, so it never did.
  const trickle = setInterval(() => idle.writable && idle.write('\r\n'), 50);
  t.teardown(() => clearInterval(trickle));
  const got = await readUntil(idle, untilEnd, 15_000);
  clearInterval(trickle);
  t.true(got.ended);
  t.is(got.data.length, 0, 'closed as an idle connection is, without a 408');
  // Empty lines before a request are still skipped, not refused.
  const c = await rawConnect(proxy.port);
  c.write('\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n');
  t.regex((await readUntil(c, hasText('fine'))).data.toString('latin1'), /^HTTP\/1\.1 200/);
  c.destroy();
});

test('invalid chunk size in a request body closes the connection', async (t) => {
  const origin = await startHttpServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('x'));
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n');
  const got = await readUntil(c, untilEnd);
  t.true(got.ended);
  t.false(got.data.toString('latin1').includes('200'));
});

test('a pooled connection that dies before answering: GET retried on a new one, POST gets 502', async (t) => {
  // Each origin connection answers its first request and silently drops on the second:
  // what a server closing an idle keep-alive connection looks like to the proxy.
  let connections = 0;
  const origin = await startRawOrigin((s) => {
    connections++;
    let served = 0;
    s.on('data', () => {
      if (served++ === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else s.destroy();
    });
  });
  const proxy = await startProxy(origin.port, {}, false);
  t.teardown(() => { origin.close(); proxy.close(); });
  t.is((await curl([`http://127.0.0.1:${proxy.port}/1`])).stdout, 'ok');
  // Pooled when the proxy sees curl's FIN (the upstream is bound while the client stays).
  await waitFor(() => proxy.pool.idleCount() === 1);
  const r2 = await curl([`http://127.0.0.1:${proxy.port}/2`]);
  t.is(r2.stdout, 'ok');
  t.is(connections, 2, 'the retry used a new connection');
  t.is(proxy.pool.idleCount(), 1);
  const r3 = await curl(['-i', '--data', 'x=1', `http://127.0.0.1:${proxy.port}/3`]);
  t.regex(r3.stdout, /^HTTP\/1\.1 502/, 'a POST is never re-sent');
  await waitFor(() => proxy.sink.requests.length === 3);
  t.deepEqual(proxy.sink.requests.map((e) => e.status), [200, 200, 502]);
});

/** A raw keep-alive origin: answers every request head with `ok`, numbering its connections. */
function answerEveryHead(s: net.Socket, conn: number, after?: (s: net.Socket, served: number) => void) {
  let buf = '';
  let served = 0;
  s.on('data', (d) => {
    buf += d.toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
      const head = buf.slice(0, i);
      const cl = /content-length: *(\d+)/i.exec(head);
      const len = cl ? Number(cl[1]) : 0;
      if (buf.length < i + 4 + len) return;
      buf = buf.slice(i + 4 + len);
      served++;
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc${conn}r${served}`);
      after?.(s, served);
    }
  });
}

const okCount = (b: Buffer) => b.toString('latin1').split('HTTP/1.1 200 OK').length - 1;

test('the eager upstream stays bound to its client connection: no pool traffic per request', async (t) => {
  let connections = 0;
  const origin = await startRawOrigin((s) => answerEveryHead(s, ++connections));
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  for (let i = 1; i <= 5; i++) {
    c.write(`GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n`);
    const got = await readUntil(c, hasText(`c1r${i}`));
    t.regex(got.data.toString('latin1'), new RegExp(`c1r${i}$`));
    t.is(proxy.pool.idleCount(), 0, 'bound, not parked, between requests');
  }
  t.is(connections, 1);
  t.is(proxy.pool.reused, 0, 'never went through the pool');
  c.end();
  await waitFor(() => proxy.pool.idleCount() === 1);
  await waitFor(() => proxy.sink.requests.length === 5);
  t.true(proxy.sink.requests.every((e) => e.status === 200 && e.success));
});

test('the bound upstream closes between requests: the next request, even a POST, goes to a new connection', async (t) => {
  let connections = 0;
  const closed: boolean[] = [];
  // Each origin connection serves one request, then closes cleanly (FIN), like a server
  // with a short keep-alive timeout.
  const origin = await startRawOrigin((s) => {
    const n = connections;
    closed[n] = false;
    s.on('close', () => (closed[n] = true));
    answerEveryHead(s, ++connections, (sock) => setTimeout(() => sock.end(), 20));
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  const answer = async (n: string) => t.regex((await readUntil(c, hasText(n))).data.toString('latin1'), new RegExp(`^HTTP/1\\.1 200 OK\r\n[^]*${n}$`));
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
  await answer('c1r1');
  // The proxy saw the FIN and let that upstream go: the origin's socket closed both ways.
  await waitFor(() => closed[0] === true);
  c.write('POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc');
  await answer('c2r1'); // answered on a second upstream connection
  await waitFor(() => closed[1] === true);
  c.write('GET /3 HTTP/1.1\r\nHost: a\r\n\r\n');
  await answer('c3r1');
  t.is(connections, 3);
  await waitFor(() => proxy.sink.requests.length === 3);
  t.deepEqual(proxy.sink.requests.map((e) => [e.method, e.status, e.success]), [['GET', 200, true], ['POST', 200, true], ['GET', 200, true]]);
  c.destroy();
});

test('the bound upstream dies as a request is sent: a GET is retried, a POST gets 502', async (t) => {
  let connections = 0;
  // Serves one request per connection, then drops silently on the next: the stale race.
  const origin = await startRawOrigin((s) => {
    const n = ++connections;
    let served = 0;
    s.on('data', () => {
      if (served++ === 0) s.write(`HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc${n}r1`);
      else s.destroy();
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(c, hasText('c1r1'));
  c.write('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(c, hasText('c2r1'));
  t.is(connections, 2, 'the GET was retried on a new connection');
  c.write('POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx');
  const got = await readUntil(c, untilEnd);
  t.regex(got.data.toString('latin1'), /HTTP\/1\.1 502 /);
  t.true(got.ended);
  await waitFor(() => proxy.sink.requests.length === 3);
  t.deepEqual(proxy.sink.requests.map((e) => e.status), [200, 200, 502]);
});

test('after a Connection: close response the client is closed and a pipelined request never reaches the upstream', async (t) => {
  let requests = 0;
  let upstreamsEnded = 0;
  const origin = await startRawOrigin((s) => {
    s.on('end', () => upstreamsEnded++);
    s.on('data', (d) => {
      requests += d.toString('latin1').split('\r\n\r\n').length - 1;
      s.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast');
    });
  });
  const proxy = await startProxy(origin.port);
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  const got = await readUntil(c, untilEnd);
  t.is(okCount(got.data), 1);
  t.true(got.ended, 'the client connection was closed');
  c.write('GET /3 HTTP/1.1\r\nHost: a\r\n\r\n'); // too late: discarded while we linger
  c.end();
  // Once the proxy has closed its side (it had our FIN, after the late request) and the
  // origin has the upstream's FIN (whatever the proxy wrote before it has arrived), the
  // count is final.
  await waitFor(() => proxy.clients === 0 && upstreamsEnded === 1);
  t.is(origin.accepted, 1, 'no new upstream connection for the late request');
  t.is(requests, 1);
  t.is(proxy.pool.idleCount(), 0, 'a closing upstream is not pooled');
  await waitFor(() => proxy.sink.requests.length === 1);
  t.is(proxy.sink.requests[0]!.path, '/1');
  c.destroy();
});

test('a bound upstream idle longer than the pool keeps connections is replaced; one that speaks unasked is dropped', async (t) => {
  let connections = 0;
  const sockets: net.Socket[] = [];
  const ended = new Set<net.Socket>();
  const origin = await startRawOrigin((s) => {
    sockets.push(s);
    s.on('end', () => ended.add(s));
    answerEveryHead(s, ++connections);
  });
  // Idle ages on a clock the test moves (the pool's): exact however slow the machine.
  let clock = 0;
  const proxy = await startProxy(origin.port, {}, true, new UpstreamPool({ idleTimeoutMs: 100, now: () => clock }));
  t.teardown(() => { origin.close(); proxy.close(); });
  const c = await rawConnect(proxy.port);
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(c, hasText('c1r1'));
  clock += 100;
  c.write('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(c, hasText('c1r2'));
  t.is(connections, 1, 'idle for 100 ms, the pool\'s limit: the same upstream');
  clock += 101;
  c.write('GET /3 HTTP/1.1\r\nHost: a\r\n\r\n');
  await readUntil(c, hasText('c2r1'));
  t.is(connections, 2, 'idle past 100 ms: a new upstream connection');
  await waitFor(() => ended.has(sockets[0]!));
  // Bytes from an idle upstream belong to no request: it is dropped, not forwarded.
  sockets[1]!.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray');
  await waitFor(() => ended.has(sockets[1]!));
  c.write('GET /4 HTTP/1.1\r\nHost: a\r\n\r\n');
  const got = await readUntil(c, hasText('c3r1'));
  t.false(got.data.toString('latin1').includes('stray'));
  t.is(connections, 3);
  c.destroy();
});

// RFC 9112 9.6: a server that will close after its response says so. The proxy closes the client
// after a response that ends before the request body did (an early 413/401): a pooling client
// that reads only the head would otherwise keep the connection and send its next request into it.
for (const [name, reply] of [
  ['a bodiless 413', 'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n'],
  ['a 401 whose body comes after its head', 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n'],
] as Array<[string, string]>) {
  test(`${name} sent before the request body ended says Connection: close, and the client is closed after it`, async (t) => {
    const origin = await startRawOrigin((s) => {
      s.once('data', () => {
        s.write(reply);
        if (reply.includes('401')) setImmediate(() => s.write('nope'));
      });
    });
    const proxy = await startProxy(origin.port);
    t.teardown(() => { origin.close(); proxy.close(); });
    const c = await rawConnect(proxy.port);
    c.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n' + 'x'.repeat(1000));
    const got = await readUntil(c, untilEnd);
    t.true(got.ended, 'the client connection was closed');
    const text = got.data.toString('latin1');
    const head = text.slice(0, text.indexOf('\r\n\r\n') + 4);
    t.regex(head, /^HTTP\/1\.1 (413|401) /);
    t.regex(head, /\r\nConnection: close\r\n/i, 'the head tells the client the connection closes');
    t.notRegex(head, /keep-alive/i, 'no keep-alive left for a connection that closes');
    if (reply.includes('401')) t.true(text.endsWith('\r\n\r\nnope'), 'the body follows whole');
    c.destroy();
  });
}
