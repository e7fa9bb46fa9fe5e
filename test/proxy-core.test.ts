// The proxy core over real loopback sockets: refusal, opaque forwarding (bulk, backpressure,
// half-close, resets), server-speaks-first, detection deadline, opaque ports, handler
// dispatch, connection cap, upstream failures, drain.
import test from 'ava';
import * as net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Proxy, REFUSAL_LOG_INTERVAL_MS, defaultDialer } from '../src/proxy/listener.ts';
import type { ProxyOptions } from '../src/proxy/listener.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { sweptCount } from '../src/proxy/sweep.ts';
import { defaultLimits, type ConnContext, type ProtocolHandler } from '../src/proxy/context.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { waitFor } from './helpers/until.ts';
import { ManualSweeper } from './helpers/manual-sweeper.ts';
import { refusedPort } from './helpers/ports.ts';

const HOST = '127.0.0.1';

type Upstream = { server: net.Server; port: number; sockets: net.Socket[] };

async function serve(onConn: (s: net.Socket) => void): Promise<Upstream> {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    s.on('error', () => {});
    onConn(s);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, sockets };
}

async function stopServer(up: Upstream): Promise<void> {
  for (const s of up.sockets) s.destroy();
  await new Promise<void>((r) => up.server.close(() => r()));
}

type Harness = { proxy: Proxy; port: number; sink: RecordingSink; dials: Array<[string, number]>; logs: Array<[string, string, object | undefined]> };

async function startProxy(destPort: number | null, extra: Partial<ProxyOptions> = {}): Promise<Harness> {
  const sink = new RecordingSink();
  const dials: Array<[string, number]> = [];
  const logs: Array<[string, string, object | undefined]> = [];
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: (ip) => (destPort === null ? null : { ip, port: destPort, podKey: 7n }),
    dial: (ip, port) => {
      dials.push([ip, port]);
      return defaultDialer(ip, port);
    },
    telemetry: sink,
    opaquePorts: PortSet.empty(),
    detectTimeoutMs: 5000,
    log: (level, msg, fields) => logs.push([level, msg, fields]),
    ...extra,
  });
  const addr = await proxy.listen();
  return { proxy, port: addr.port, sink, dials, logs };
}

function connect(port: number): net.Socket {
  const c = net.connect({ host: HOST, port, allowHalfOpen: true });
  c.on('error', () => {});
  return c;
}

/** Resolves with everything the socket receives until its readable side ends. */
function readAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('close', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Resolves with the socket's first error code, or 'closed' if it ended or closed without one. */
function closeReason(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    const clean = () => setImmediate(() => resolve('closed'));
    s.once('end', clean);
    s.once('close', clean);
    s.resume();
  });
}

const echo = (s: net.Socket) => s.pipe(s);

test('a connection without a datapath record is refused and never dialled', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(null);
  const c = connect(h.port);
  t.is(await closeReason(c), 'ECONNRESET', 'refused with a reset, not a clean close');
  await waitFor(() => h.proxy.stats().refusedNoRecord === 1);
  t.is(h.dials.length, 0);
  t.is(h.sink.opens.length, 0);
  t.is(up.sockets.length, 0);
  t.like(h.proxy.stats(), { accepted: 1, open: 0, refusedNoRecord: 1 });
  t.true(h.logs.some(([, msg]) => msg.includes('without a datapath record')));
  await h.proxy.close(100);
  await stopServer(up);
});

// The line goes out once per REFUSAL_LOG_INTERVAL_MS on the proxy's clock (the sweeper's, moved
// here by hand); the ones held back are counted into the next line's `suppressed`.
test('refusals without a record: one line per interval, the next says how many were held back', async (t) => {
  const sweeper = new ManualSweeper();
  const h = await startProxy(null, { sweeper });
  const lines = () => h.logs.filter(([, msg]) => msg.includes('without a datapath record'));
  for (let i = 1; i <= 3; i++) {
    t.is(await closeReason(connect(h.port)), 'ECONNRESET');
    await waitFor(() => h.proxy.stats().refusedNoRecord === i);
  }
  t.is(lines().length, 1);
  t.false('suppressed' in lines()[0][2]!);
  sweeper.advance(REFUSAL_LOG_INTERVAL_MS - 1);
  t.is(await closeReason(connect(h.port)), 'ECONNRESET');
  await waitFor(() => h.proxy.stats().refusedNoRecord === 4);
  t.is(lines().length, 1, 'still within the interval');
  sweeper.advance(1);
  t.is(await closeReason(connect(h.port)), 'ECONNRESET');
  await waitFor(() => h.proxy.stats().refusedNoRecord === 5);
  t.is(lines().length, 2);
  t.is(lines()[1][0], 'info');
  t.like(lines()[1][2], { refusedNoRecord: 5, suppressed: 3 });
  await h.proxy.close(100);
});

test('lookup receives the plain remote address and port; endpoints come from the record', async (t) => {
  const up = await serve(echo);
  const seen: Array<[string, number]> = [];
  const h = await startProxy(null, {
    lookup: (ip, port) => {
      seen.push([ip, port]);
      return { ip: HOST, port: up.port, podKey: 42n };
    },
  });
  const c = connect(h.port);
  await once(c, 'connect');
  const localPort = c.localPort!;
  c.end('ping');
  t.is((await readAll(c)).toString(), 'ping');
  t.deepEqual(seen, [[HOST, localPort]]);
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.opens[0], { sourceIp: HOST, sourcePort: localPort, sourcePodKey: 42n, destIp: HOST, destPort: up.port, direction: 'outbound' });
  await h.proxy.close(100);
  await stopServer(up);
});

// The agent's lookup (datapath/socket-lookup.ts): peer and record from the socket's fd in one
// native call; its e2e test is in datapath.e2e.test.ts. Here: the listener takes both from it.
test('lookupSocket, when given, is asked with the socket\'s fd instead of lookup; its peer and record make the endpoints', async (t) => {
  const up = await serve(echo);
  const fds: number[] = [];
  const h = await startProxy(null, {
    lookup: () => {
      throw new Error('lookup by address must not be asked');
    },
    lookupSocket: (fd) => {
      fds.push(fd);
      return { sourceIp: '10.1.2.3', sourcePort: 4321, rec: { ip: HOST, port: up.port, podKey: 42n } };
    },
  });
  const c = connect(h.port);
  c.end('ping');
  t.is((await readAll(c)).toString(), 'ping');
  t.is(fds.length, 1);
  t.true(fds[0]! > 2);
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.opens[0], { sourceIp: '10.1.2.3', sourcePort: 4321, sourcePodKey: 42n, destIp: HOST, destPort: up.port });
  t.is(h.logs.filter(([level]) => level === 'error').length, 0);
  await h.proxy.close(100);
  await stopServer(up);
});

test('lookupSocket: no record refuses, a throw refuses with the error logged, a gone peer is dropped uncounted', async (t) => {
  const answers: Array<() => ReturnType<NonNullable<ProxyOptions['lookupSocket']>>> = [
    () => ({ sourceIp: '10.1.2.3', sourcePort: 4321, rec: null }),
    () => {
      throw new TypeError('lookupSocket(fd, out) needs a socket fd and a Uint32Array of 6');
    },
    () => 'gone',
  ];
  let i = 0;
  const h = await startProxy(null, { lookupSocket: () => answers[i++]!() });
  t.is(await closeReason(connect(h.port)), 'ECONNRESET');
  await waitFor(() => h.proxy.stats().refusedNoRecord === 1);
  t.like(h.logs.find(([, msg]) => msg.includes('without a datapath record'))?.[2], { sourceIp: '10.1.2.3', sourcePort: 4321 });
  t.is(await closeReason(connect(h.port)), 'ECONNRESET');
  await waitFor(() => h.proxy.stats().refusedNoRecord === 2);
  const err = h.logs.find(([level]) => level === 'error');
  t.is(err?.[1], 'datapath lookup failed; refusing connection');
  t.is((err?.[2] as { sourceIp?: string }).sourceIp, HOST, 'the peer as Node reads it');
  t.regex(String((err?.[2] as { error?: string }).error), /needs a socket fd/);
  const c = connect(h.port);
  await closeReason(c);
  await waitFor(() => h.proxy.stats().accepted === 3);
  t.like(h.proxy.stats(), { accepted: 3, open: 0, refusedNoRecord: 2 });
  t.is(h.sink.opens.length, 0);
  await h.proxy.close(100);
});

test('opaque forwarding carries 50 MB each way intact, with telemetry byte counts', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port, { opaquePorts: PortSet.of([up.port]), bytesReportMs: 50 });
  const size = 50 * 1024 * 1024;
  const data = randomBytes(size);
  const c = connect(h.port);
  const got = readAll(c);
  c.end(data);
  const back = await got;
  t.is(back.length, size);
  t.is(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
  await waitFor(() => h.sink.closes.length === 1);
  const ev = h.sink.closes[0];
  t.like(ev, { protocol: 'opaque', detectedBy: 'opaque-port', bytesIn: size, bytesOut: size });
  t.is(ev.error, undefined);
  // connBytes deltas always sum to the close totals
  t.is(h.sink.bytes.reduce((a, b) => a + b.bytesIn, 0), size);
  t.is(h.sink.bytes.reduce((a, b) => a + b.bytesOut, 0), size);
  await h.proxy.close(100);
  await stopServer(up);
});

test('backpressure: a slow reader stalls the server instead of filling proxy memory', async (t) => {
  const total = 200 * 1024 * 1024;
  let accepted = 0; // bytes the server's socket took (write returned or drained)
  let blocked = false; // the server waits for 'drain'
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const up = await serve((s) => {
    const pump = () => {
      blocked = false;
      while (accepted < total) {
        accepted += chunk.length;
        if (!s.write(chunk)) {
          blocked = true;
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
  let upstreamSock: net.Socket | null = null;
  const h = await startProxy(up.port, {
    dial: (ip, port) => (upstreamSock = defaultDialer(ip, port)),
  });
  const c = connect(h.port);
  c.pause(); // the slow reader: reads nothing until the path has stalled
  // Wait until the server is stalled (it waits for 'drain' and nothing moved over 20 polls,
  // each one a full turn of this process's event loop, where the proxy and the server run)
  // or has written everything, as it would through an unbounded proxy. A false stall on a
  // stopped machine only makes the bounds below easier to meet, never fails them.
  let last = -1;
  let still = 0;
  await waitFor(() => {
    still = (blocked || accepted >= total) && accepted === last ? still + 1 : 0;
    last = accepted;
    return still >= 20;
  }, 60_000);
  // Kernel socket buffers on four sockets hold some MB; an unbounded proxy would have
  // swallowed all 200 MB (loopback moves GB/s).
  t.true(accepted < 64 * 1024 * 1024, `server got ${accepted} bytes out while the client read nothing`);
  t.true(upstreamSock!.readableLength <= 1024 * 1024, `proxy holds ${upstreamSock!.readableLength} unread upstream bytes`);
  let received = 0;
  c.on('data', (b: Buffer) => (received += b.length));
  c.resume();
  await once(c, 'end');
  t.is(received, total);
  await h.proxy.close(100);
  await stopServer(up);
});

test('half-close: the client shuts its write side, the server still replies, then closes', async (t) => {
  const up = await serve((s) => {
    let n = 0;
    s.on('data', (b: Buffer) => (n += b.length));
    s.on('end', async () => {
      await sleep(50); // reply well after the FIN arrived
      s.end(`got ${n} bytes`);
    });
  });
  const h = await startProxy(up.port);
  const c = connect(h.port);
  const got = readAll(c);
  c.end('hello there'); // not HTTP: detection (or the client's FIN) makes it opaque
  t.is((await got).toString(), 'got 11 bytes');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { protocol: 'opaque', bytesIn: 11, bytesOut: 12 });
  t.is(h.sink.closes[0].error, undefined);
  await h.proxy.close(100);
  await stopServer(up);
});

test('half-close the other way: the server shuts its write side, the client keeps sending', async (t) => {
  let serverGot = '';
  const up = await serve((s) => {
    s.write('bye early\n'); // server speaks first and half-closes
    s.end();
    s.on('data', (b: Buffer) => (serverGot += b.toString()));
    s.on('end', () => s.destroy());
  });
  const h = await startProxy(up.port);
  const c = connect(h.port);
  t.is((await readAll(c)).toString(), 'bye early\n');
  c.end('still talking');
  await waitFor(() => serverGot === 'still talking');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'server-first', bytesIn: 13, bytesOut: 10 });
  await h.proxy.close(100);
  await stopServer(up);
});

test('reset propagation: a server RST becomes a client RST', async (t) => {
  const up = await serve((s) => {
    s.once('data', () => s.resetAndDestroy());
  });
  const h = await startProxy(up.port);
  const c = connect(h.port);
  const reason = closeReason(c);
  c.write('\x00binary hello');
  t.is(await reason, 'ECONNRESET');
  await waitFor(() => h.sink.closes.length === 1);
  t.regex(h.sink.closes[0].error ?? '', /upstream: ECONNRESET/);
  await h.proxy.close(100);
  await stopServer(up);
});

test('reset propagation: a client RST becomes a server RST', async (t) => {
  let serverReason: Promise<string> | null = null;
  let serverGot = '';
  const up = await serve((s) => {
    s.on('data', (b: Buffer) => (serverGot += b.toString('latin1')));
    serverReason = closeReason(s);
  });
  const h = await startProxy(up.port);
  const c = connect(h.port);
  c.write('\x00binary hello');
  // The tunnel is up once the server has the bytes: the reset then comes through it.
  await waitFor(() => serverGot === '\x00binary hello');
  c.resetAndDestroy();
  t.is(await serverReason!, 'ECONNRESET');
  await waitFor(() => h.sink.closes.length === 1);
  t.regex(h.sink.closes[0].error ?? '', /client: ECONNRESET/);
  await h.proxy.close(100);
  await stopServer(up);
});

/**
 * A detection deadline no loaded machine reaches: what tells "at once" from "after the
 * deadline" is which of the two decided (the stats and the close event say), not a
 * wall-clock bound a stalled process could break.
 */
const FAR_DEADLINE_MS = 30_000;

test.serial('server speaks first: the banner reaches a silent client at once, not after the deadline', async (t) => {
  const up = await serve((s) => {
    s.write('220 mail.example ESMTP ready\r\n');
    s.on('end', () => s.end());
    s.resume();
  });
  const h = await startProxy(up.port, { detectTimeoutMs: FAR_DEADLINE_MS });
  const started = performance.now();
  const c = connect(h.port);
  const [banner] = (await once(c, 'data')) as [Buffer];
  const elapsed = performance.now() - started;
  t.is(banner.toString(), '220 mail.example ESMTP ready\r\n');
  t.true(elapsed < FAR_DEADLINE_MS, `banner took ${elapsed} ms`);
  c.destroy();
  await waitFor(() => h.sink.closes.length === 1);
  t.is(h.sink.closes[0].detectedBy, 'server-first');
  t.true(h.sink.closes[0].detectMs < FAR_DEADLINE_MS);
  t.deepEqual(h.proxy.stats().byProtocol, { opaque: 1 });
  t.deepEqual(h.proxy.stats().byDetection, { 'server-first': 1 }, 'the stats tell the race from the deadline');
  await h.proxy.close(100);
  await stopServer(up);
});

test.serial('server speaks first: an SMTP-like exchange works end to end', async (t) => {
  const up = await serve((s) => {
    s.write('220 mail.example ESMTP\r\n');
    let buf = '';
    s.on('data', (b: Buffer) => {
      buf += b.toString();
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (line.startsWith('EHLO ')) s.write(`250 hello ${line.slice(5)}\r\n`);
        else if (line === 'QUIT') s.end('221 bye\r\n');
        else s.write('500 what\r\n');
      }
    });
  });
  const h = await startProxy(up.port, { detectTimeoutMs: FAR_DEADLINE_MS });
  const c = connect(h.port);
  const lines: string[] = [];
  let buf = '';
  c.on('data', (b: Buffer) => {
    buf += b.toString();
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      lines.push(line);
      if (line.startsWith('220 ')) c.write('EHLO client.example\r\n');
      else if (line.startsWith('250 ')) c.write('QUIT\r\n');
    }
  });
  await once(c, 'end');
  t.deepEqual(lines, ['220 mail.example ESMTP', '250 hello client.example', '221 bye']);
  c.end();
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'server-first', bytesIn: 'EHLO client.example\r\nQUIT\r\n'.length });
  await h.proxy.close(100);
  await stopServer(up);
});

/** The proxy's dialer, counting its upstream sockets' shutdown(2) calls (libuv's shutdown request, one per call) and pauses. */
function countingDialer(): { dial: ProxyOptions['dial']; shutdowns: () => number; pauses: () => number } {
  let n = 0;
  let pauses = 0;
  const dial = (ip: string, port: number): net.Socket => {
    const s = defaultDialer(ip, port);
    const handle = (s as unknown as { _handle: { shutdown(req: unknown): number } })._handle;
    const shutdown = handle.shutdown;
    handle.shutdown = function (req) {
      n++;
      return shutdown.call(this, req);
    };
    s.on('pause', () => pauses++);
    return s;
  };
  return { dial, shutdowns: () => n, pauses: () => pauses };
}

test.serial('a server that greets and closes, then the client closes: the upstream gets its FIN from close(2) alone, no shutdown(2) first', async (t) => {
  let serverSaw: Promise<string> | null = null;
  const up = await serve((s) => {
    serverSaw = closeReason(s);
    s.end('hi\n'); // the bench's conn-rate greeter
  });
  const d = countingDialer();
  const h = await startProxy(up.port, { detectTimeoutMs: FAR_DEADLINE_MS, dial: d.dial });
  const c = connect(h.port);
  t.is((await readAll(c)).toString(), 'hi\n');
  c.end();
  t.is(await serverSaw!, 'closed', 'the server sees a FIN, not a reset');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'server-first', bytesIn: 0, bytesOut: 3 });
  t.is(h.sink.closes[0].error, undefined);
  t.is(d.shutdowns(), 0);
  await h.proxy.close(100);
  await stopServer(up);
});

test.serial('detection hands a server-first connection to the tunnel flowing: no pause and resume in between', async (t) => {
  const up = await serve((s) => {
    s.write('220 ready\r\n');
    s.on('end', () => s.end());
    s.resume();
  });
  const d = countingDialer();
  const h = await startProxy(up.port, { detectTimeoutMs: FAR_DEADLINE_MS, dial: d.dial });
  const c = connect(h.port);
  const [banner] = (await once(c, 'data')) as [Buffer];
  t.is(banner.toString(), '220 ready\r\n');
  c.write('QUIT\r\n');
  c.end();
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'server-first', bytesIn: 6, bytesOut: 11 });
  t.is(d.pauses(), 0, 'the upstream was never paused');
  await h.proxy.close(100);
  await stopServer(up);
});

test.serial('detection deadline: when neither side speaks, the connection becomes opaque, then bytes flow', async (t) => {
  const up = await serve(echo);
  const http1: ProtocolHandler = () => t.fail('an HTTP handler must not get a connection decided by the deadline');
  const h = await startProxy(up.port, { detectTimeoutMs: 300, handlers: { http1 } });
  const c = connect(h.port);
  await waitFor(() => h.proxy.stats().byDetection.deadline === 1);
  const got = readAll(c);
  c.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n'); // HTTP-looking, but after the deadline
  t.is((await got).toString(), 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => h.sink.closes.length === 1);
  const ev = h.sink.closes[0];
  t.is(ev.detectedBy, 'deadline');
  t.true(ev.detectMs >= 290, `detectMs ${ev.detectMs}`);
  t.deepEqual(h.proxy.stats().byDetection, { deadline: 1 });
  await h.proxy.close(100);
  await stopServer(up);
});

test('detection deadline also ends a stalled partial head', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port, { detectTimeoutMs: 200 });
  const c = connect(h.port);
  const got = readAll(c);
  c.write('GE'); // could still be HTTP: the detector needs more
  await waitFor(() => h.proxy.stats().byDetection.deadline === 1);
  c.end('T-ish');
  t.is((await got).toString(), 'GET-ish');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'deadline', bytesIn: 7, bytesOut: 7 });
  await h.proxy.close(100);
  await stopServer(up);
});

test('client bytes that are not HTTP or TLS are opaque with the detector reason', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port);
  const c = connect(h.port);
  const got = readAll(c);
  c.end(Buffer.from([0, 1, 2, 3, 255]));
  t.deepEqual([...(await got)], [0, 1, 2, 3, 255]);
  await waitFor(() => h.sink.closes.length === 1);
  t.regex(h.sink.closes[0].detectedBy, /^opaque:/);
  await h.proxy.close(100);
  await stopServer(up);
});

test('opaque-port list skips detection (an HTTP request is forwarded raw)', async (t) => {
  const up = await serve(echo);
  const http1: ProtocolHandler = () => t.fail('an opaque port must not reach the HTTP handler');
  const h = await startProxy(up.port, { opaquePorts: PortSet.parse(`1-2,${up.port}`), handlers: { http1 } });
  const c = connect(h.port);
  const got = readAll(c);
  c.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is((await got).toString(), 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { detectedBy: 'opaque-port', detectMs: 0 });
  t.is(h.sink.closes[0].detectMs, 0);
  t.deepEqual(h.proxy.stats().byDetection, { 'opaque-port': 1 });
  await h.proxy.close(100);
  await stopServer(up);
});

/** A stub handler that records its arguments, then splices the sockets like a tunnel. */
function stubHandler(calls: Array<{ ctx: ConnContext; head: Buffer; upstream: net.Socket | null; paused: boolean; dataListeners: number }>): ProtocolHandler {
  return (ctx, head, upstream) => {
    calls.push({ ctx, head: Buffer.from(head), upstream, paused: ctx.client.isPaused(), dataListeners: ctx.client.listenerCount('data') });
    upstream!.write(head);
    ctx.client.pipe(upstream!);
    upstream!.pipe(ctx.client);
  };
}

test('http1 is handed to the handler with the exact head bytes and the eager upstream', async (t) => {
  const up = await serve(echo);
  const calls: Parameters<typeof stubHandler>[0] = [];
  const h = await startProxy(up.port, { handlers: { http1: stubHandler(calls), http2: () => t.fail('not h2') } });
  const c = connect(h.port);
  const got = readAll(c);
  // two writes split inside the request line: the head must be their exact concatenation
  c.write('GET /hello HT');
  await waitFor(() => h.proxy.stats().accepted === 1);
  const acceptedBy = performance.now(); // detection started before this
  await sleep(50);
  const secondAt = performance.now(); // and cannot end before the rest of the line, sent now
  c.write('TP/1.1\r\nHost: svc\r\n\r\n');
  await waitFor(() => calls.length === 1);
  c.end('tail');
  t.is((await got).toString(), 'GET /hello HTTP/1.1\r\nHost: svc\r\n\r\ntail');
  const call = calls[0];
  t.true('GET /hello HTTP/1.1\r\nHost: svc\r\n\r\n'.startsWith(call.head.toString()));
  t.true(call.head.toString().startsWith('GET /hello HTTP/1.1\r\n'));
  t.true(call.paused);
  t.is(call.dataListeners, 0);
  t.truthy(call.upstream);
  t.is(call.upstream!.remotePort ?? h.dials[0][1], up.port);
  t.is(up.sockets.length, 1); // the eager connection is the one the handler used
  t.is(h.dials.length, 1);
  t.deepEqual(h.proxy.stats().byProtocol, { http1: 1 });
  t.is(call.ctx.endpoints.destPort, up.port);
  // the dispatcher reports the handled connection's close from the client socket's counters
  await waitFor(() => h.sink.closes.length === 1);
  const sent = 'GET /hello HTTP/1.1\r\nHost: svc\r\n\r\ntail'.length;
  t.like(h.sink.closes[0], { protocol: 'http1', detectedBy: 'http1', bytesIn: sent, bytesOut: sent });
  // detectMs is rounded to the microsecond; the clocks agree to within that.
  t.true(h.sink.closes[0].detectMs >= secondAt - acceptedBy - 0.01, `detectMs ${h.sink.closes[0].detectMs}, the rest of the line came ${secondAt - acceptedBy} ms after the accept`);
  await h.proxy.close(100);
  await stopServer(up);
});

test('http2 prior knowledge is handed to the http2 handler with the preface as head', async (t) => {
  const up = await serve(echo);
  const calls: Parameters<typeof stubHandler>[0] = [];
  const h = await startProxy(up.port, { handlers: { http1: () => t.fail('not h1'), http2: stubHandler(calls) } });
  const c = connect(h.port);
  const chunks: Buffer[] = [];
  c.on('data', (b: Buffer) => chunks.push(b));
  const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
  c.write(Buffer.concat([preface, settings]));
  await waitFor(() => calls.length === 1);
  // HTTP/2 client sockets are handed over without half-open: a FIN ends the connection.
  t.false(calls[0].ctx.client.allowHalfOpen);
  await waitFor(() => Buffer.concat(chunks).length >= preface.length + settings.length);
  c.end();
  t.deepEqual(Buffer.concat(chunks), Buffer.concat([preface, settings]));
  t.deepEqual(calls[0].head, Buffer.concat([preface, settings]));
  t.deepEqual(h.proxy.stats().byProtocol, { http2: 1 });
  await h.proxy.close(100);
  await stopServer(up);
});

const H2_SETTINGS = Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]); // MAX_CONCURRENT_STREAMS=100

test('an h2c server greeting (SETTINGS) is held for the http2 handler, in front of the upstream stream', async (t) => {
  const up = await serve((s) => s.write(H2_SETTINGS)); // greets on accept, like node:http2 and Go
  const calls: Parameters<typeof stubHandler>[0] = [];
  let upstream: net.Socket | null = null;
  const h = await startProxy(up.port, { handlers: { http2: stubHandler(calls) }, dial: (ip, port) => (upstream = defaultDialer(ip, port)) });
  const c = connect(h.port);
  const chunks: Buffer[] = [];
  c.on('data', (b: Buffer) => chunks.push(b));
  // The proxy has read the greeting before the client speaks.
  await waitFor(() => upstream !== null && upstream.bytesRead >= H2_SETTINGS.length);
  const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  c.write(preface);
  await waitFor(() => calls.length === 1);
  // the stub pipes upstream -> client: the greeting comes first, then the echo-less upstream stays quiet
  await waitFor(() => Buffer.concat(chunks).length >= H2_SETTINGS.length);
  t.deepEqual(Buffer.concat(chunks), H2_SETTINGS);
  t.deepEqual(calls[0].head, preface);
  t.deepEqual(h.proxy.stats().byProtocol, { http2: 1 });
  c.destroy();
  await h.proxy.close(100);
  await stopServer(up);
});

test('an h2c-like greeting followed by an HTTP/1 client is server-first opaque, greeting delivered', async (t) => {
  let serverGot = '';
  const up = await serve((s) => {
    s.write(H2_SETTINGS);
    s.on('data', (b: Buffer) => (serverGot += b.toString()));
    s.on('end', () => s.end());
  });
  const http1: ProtocolHandler = () => t.fail('the http1 handler must not get an upstream that already spoke');
  let upstream: net.Socket | null = null;
  const h = await startProxy(up.port, { handlers: { http1 }, dial: (ip, port) => (upstream = defaultDialer(ip, port)) });
  const c = connect(h.port);
  const chunks: Buffer[] = [];
  c.on('data', (b: Buffer) => chunks.push(b));
  // The proxy has read the greeting before the client speaks.
  await waitFor(() => upstream !== null && upstream.bytesRead >= H2_SETTINGS.length);
  c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => serverGot === 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => Buffer.concat(chunks).length >= H2_SETTINGS.length);
  t.deepEqual(Buffer.concat(chunks), H2_SETTINGS);
  t.deepEqual(h.proxy.stats().byProtocol, { opaque: 1 });
  c.destroy();
  await waitFor(() => h.sink.closes.length === 1);
  t.is(h.sink.closes[0].detectedBy, 'server-first');
  await h.proxy.close(100);
  await stopServer(up);
});

test('an HTTP/1 connection with no handler configured is forwarded opaquely', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port);
  const c = connect(h.port);
  const got = readAll(c);
  c.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is((await got).toString(), 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => h.sink.closes.length === 1);
  t.is(h.sink.closes[0].detectedBy, 'http1:no-handler');
  await h.proxy.close(100);
  await stopServer(up);
});

test('a throwing handler resets the connection instead of crashing', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port, { handlers: { http1: () => { throw new Error('boom'); } } });
  const c = connect(h.port);
  const reason = closeReason(c);
  c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is(await reason, 'ECONNRESET', 'reset, not a clean close');
  t.true(h.logs.some(([level, msg]) => level === 'error' && msg.includes('handler threw')));
  await h.proxy.close(100);
  await stopServer(up);
});

test('upstream refused: the client is reset (detection path and opaque-port path)', async (t) => {
  // Not a port a server of ours had from listen(0) and closed: a parallel test's listen(0) could
  // take it again, or it could be the proxy's own dial's source port (a self-connect): the CI of
  // 265f91d saw a clean close instead of the reset. refusedPort holds it bound (helpers/ports.ts).
  const deadPort = await refusedPort(t);
  for (const opaquePorts of [PortSet.empty(), PortSet.of([deadPort])]) {
    const h = await startProxy(deadPort, { opaquePorts });
    const c = connect(h.port);
    t.is(await closeReason(c), 'ECONNRESET');
    await waitFor(() => h.sink.closes.length === 1);
    t.is(h.sink.closes[0].error, 'upstream connect: ECONNREFUSED');
    await waitFor(() => h.proxy.stats().open === 0);
    await h.proxy.close(100);
  }
});

test('upstream connect timeout resets the client (detection path and opaque-port path)', async (t) => {
  for (const opaquePorts of [PortSet.empty(), PortSet.of([9])]) {
    const h = await startProxy(9, {
      limits: { upstreamConnectTimeoutMs: 150 },
      opaquePorts,
      // a socket that never finishes connecting stands in for a black-holed SYN
      dial: () => {
        const s = new net.Socket();
        (s as unknown as { connecting: boolean }).connecting = true;
        return s;
      },
    });
    const c = connect(h.port);
    const started = performance.now();
    const reason = await closeReason(c);
    const took = performance.now() - started;
    t.is(reason, 'ECONNRESET', 'reset, not a clean close');
    // Never before the 150 ms limit (timers never fire early; 1 ms for the clocks' rounding),
    // and from that limit, not the default one.
    t.true(took >= 149 && took < defaultLimits.upstreamConnectTimeoutMs, `${took} ms`);
    await waitFor(() => h.sink.closes.length === 1);
    t.is(h.sink.closes[0].error, 'upstream connect: timeout');
    await h.proxy.close(100);
  }
});

test.serial('detection arms a connect timer only for a connect timeout within its deadline; a longer one still counts from the dial', async (t) => {
  // Refed Node timers in this process (serial: no other test runs now).
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const detectMs = 1500;
  for (const { connectMs, armed, detectedBy } of [
    { connectMs: 2000, armed: 1, detectedBy: 'deadline' }, // the deadline only; the tunnel times the connect after it
    { connectMs: 400, armed: 2, detectedBy: 'none' }, // the deadline and the connect timer
  ]) {
    const h = await startProxy(9, {
      limits: { upstreamConnectTimeoutMs: connectMs },
      detectTimeoutMs: detectMs,
      // a socket that never finishes connecting stands in for a black-holed SYN
      dial: () => {
        const s = new net.Socket();
        (s as unknown as { connecting: boolean }).connecting = true;
        return s;
      },
    });
    const before = timers();
    const c = connect(h.port);
    const started = performance.now();
    const reason = closeReason(c);
    await waitFor(() => h.proxy.stats().open === 1);
    t.is(timers() - before, armed, `connect timeout ${connectMs} ms: timers armed in detection`);
    t.is(await reason, 'ECONNRESET', 'reset, not a clean close');
    const took = performance.now() - started;
    // Counted from the dial: timed from the deadline it would take detectMs + connectMs. A Node
    // timer counts from the loop's time cached when its turn began, so on a loaded machine it
    // fires some milliseconds before connectMs by this clock (1996.9 ms was seen under load):
    // 50 ms of slack still tells the dial from the deadline, and from a timer armed at half.
    t.true(took >= connectMs - 50 && took < detectMs + connectMs, `${took} ms for a ${connectMs} ms connect timeout (from the deadline: ${detectMs + connectMs} ms)`);
    await waitFor(() => h.sink.closes.length === 1);
    t.like(h.sink.closes[0], { error: 'upstream connect: timeout', detectedBy });
    await h.proxy.close(100);
  }
});

test('idle timeout closes an opaque connection with no traffic', async (t) => {
  const up = await serve(() => {});
  const h = await startProxy(up.port, { limits: { idleTimeoutMs: 200 }, opaquePorts: PortSet.of([up.port]) });
  const c = connect(h.port);
  await once(c, 'connect');
  await closeReason(c);
  await waitFor(() => h.sink.closes.length === 1);
  t.is(h.sink.closes[0].error, 'idle timeout');
  await h.proxy.close(100);
  await stopServer(up);
});

/**
 * A proxy for an opaque upstream with a 300 ms idle timeout on the test's clock: it moves only
 * when the test says, so "silent for 300 ms" is exact however slowly this machine runs the test
 * (a real tick would also count the test's own stalls). upstream(): its connection to the server.
 */
async function idleOnTestClock(upPort: number) {
  const sweeper = new ManualSweeper();
  let upstream: net.Socket | null = null;
  const h = await startProxy(upPort, {
    limits: { idleTimeoutMs: 300 },
    opaquePorts: PortSet.of([upPort]),
    sweeper,
    dial: (ip, port) => (upstream = defaultDialer(ip, port)),
  });
  return { h, sweeper, upstream: () => upstream };
}

test('idle timeout: traffic either way keeps the connection open; it closes once silent for the timeout, not before', async (t) => {
  const up = await serve(echo);
  const { h, sweeper, upstream: upstreamOf } = await idleOnTestClock(up.port);
  const c = connect(h.port);
  let received = 0;
  c.on('data', (b: Buffer) => (received += b.length));
  await waitFor(() => sweeper.size === 1); // the tunnel's idle clock starts at the hand-over (clock 0)
  for (let i = 0; i < 8; i++) {
    // Alternately client to server (echoed back) and server to client only, one byte each.
    if (i % 2 === 0) c.write('x');
    else up.sockets[0]!.write('y');
    await waitFor(() => received === i + 1);
    sweeper.advance(100);
    t.false(upstreamOf()!.destroyed, `closed while bytes were moving (round ${i + 1})`);
  }
  // The last bytes were seen at clock 800.
  sweeper.advance(299);
  t.false(upstreamOf()!.destroyed, 'closed after 299 ms of silence, before the 300 ms timeout');
  sweeper.advance(1);
  t.true(upstreamOf()!.destroyed, 'still open after 300 ms of silence');
  await waitFor(() => h.sink.closes.length === 1);
  t.like(h.sink.closes[0], { error: 'idle timeout', bytesIn: 4, bytesOut: 8 });
  await h.proxy.close(100);
  await stopServer(up);
});

test('idle timeout of a stalled tunnel holding bytes for a reader that stopped: both sides are reset, the server never sees a clean end of a cut stream', async (t) => {
  let server: net.Socket | null = null;
  const up = await serve((s) => {
    server = s;
    s.pause(); // a reader that stopped (a lock wait, a stuck consumer)
  });
  const { h, sweeper, upstream: upstreamOf } = await idleOnTestClock(up.port);
  const c = connect(h.port);
  const clientReason = closeReason(c);
  const total = 64 * 1024 * 1024;
  c.write(Buffer.alloc(total, 0x61)); // far more than the kernel buffers on the way hold
  // Stalled: the proxy holds bytes for the server and nothing has moved for 20 polls.
  let last = -1;
  let still = 0;
  await waitFor(() => {
    const moved = upstreamOf()?.bytesWritten ?? -1;
    still = moved === last && (upstreamOf()?.writableLength ?? 0) > 0 ? still + 1 : 0;
    last = moved;
    return still >= 20;
  }, 60_000);
  sweeper.advance(1); // the sweep sees the last bytes moved
  sweeper.advance(300);
  await waitFor(() => h.sink.closes.length === 1);
  t.is(h.sink.closes[0]!.error, 'idle timeout');
  // The server reads again: what reached it is a part of the stream, which must not end cleanly.
  const got = readAll(server!).then((b) => `end after ${b.length} of ${total} bytes`, (e: NodeJS.ErrnoException) => e.code);
  server!.resume();
  t.is(await got, 'ECONNRESET');
  t.is(await clientReason, 'ECONNRESET');
  await h.proxy.close(100);
  await stopServer(up);
});

// Serial: the sweep is module-wide, and concurrent tests would add their tunnels to the count.
test.serial('a live tunnel reports its bytes while open; its sweep entry goes with it', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port, { opaquePorts: PortSet.of([up.port]), bytesReportMs: 50 });
  const before = sweptCount();
  const c = connect(h.port);
  c.resume();
  c.write('hello');
  await waitFor(() => h.sink.bytes.some((b) => b.bytesIn === 5 && b.bytesOut === 5));
  t.is(sweptCount(), before + 1);
  t.is(h.sink.closes.length, 0, 'reported before the close');
  c.end();
  await waitFor(() => h.sink.closes.length === 1);
  t.is(sweptCount(), before);
  t.is(h.sink.bytes.reduce((a, b) => a + b.bytesIn, 0), 5);
  await h.proxy.close(100);
  await stopServer(up);
});

// Serial, as above. Connections a protocol handler owns report their bytes from the same sweep.
test.serial('a handled (HTTP/1) connection reports its bytes while open; its sweep entry goes with it', async (t) => {
  const up = await serve(echo);
  // A stand-in handler that echoes through the upstream it is given: only the connection-level telemetry is under test.
  const handler: ProtocolHandler = (ctx, head, upstream) => {
    upstream!.pipe(ctx.client);
    ctx.client.pipe(upstream!);
    upstream!.write(head);
    upstream!.resume();
    ctx.client.resume();
  };
  const h = await startProxy(up.port, { bytesReportMs: 50, handlers: { http1: handler } });
  const before = sweptCount();
  const c = connect(h.port);
  c.resume();
  const req = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n';
  c.write(req);
  await waitFor(() => h.sink.bytes.some((b) => b.bytesIn === req.length && b.bytesOut === req.length));
  t.is(sweptCount(), before + 1);
  t.is(h.sink.closes.length, 0, 'reported before the close');
  c.destroy();
  await waitFor(() => h.sink.closes.length === 1);
  t.is(sweptCount(), before);
  t.like(h.sink.closes[0], { protocol: 'http1', bytesIn: req.length, bytesOut: req.length });
  await h.proxy.close(100);
  await stopServer(up);
});

// Memory shape of an idle tunnel (issue 6: under 10 KB per idle connection, docs/benchmarks.md):
// no Node timer left on either socket (socket.setTimeout keeps a Timeout per socket for
// good) and single listeners where a second one would turn the slot into an array.
test('an idle tunnel keeps no per-socket timer and one error listener per socket', async (t) => {
  const up = await serve(() => {});
  let upstream: net.Socket | null = null;
  const h = await startProxy(up.port, { detectTimeoutMs: 50, dial: (ip, port) => (upstream = defaultDialer(ip, port)) });
  const c = connect(h.port);
  await waitFor(() => h.proxy.stats().byDetection.deadline === 1);
  const timerOf = (s: net.Socket) => {
    const sym = Object.getOwnPropertySymbols(s).find((k) => k.description === 'timeout');
    return sym === undefined ? undefined : (s as unknown as Record<symbol, unknown>)[sym];
  };
  t.falsy(timerOf(upstream!));
  t.is(upstream!.listenerCount('error'), 1);
  t.is(upstream!.listenerCount('timeout'), 0);
  c.resetAndDestroy();
  await waitFor(() => h.sink.closes.length === 1);
  await h.proxy.close(100);
  await stopServer(up);
});

test('connection cap: over it, new connections are reset with one rate-limited log line', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port, { maxConnections: 2 });
  const held = [connect(h.port), connect(h.port)];
  await waitFor(() => h.proxy.stats().open === 2);
  const over = [connect(h.port), connect(h.port), connect(h.port)];
  for (const c of over) t.is(await closeReason(c), 'ECONNRESET', 'reset, not a clean close');
  t.like(h.proxy.stats(), { open: 2, refusedOverCap: 3, accepted: 5 });
  const capLines = h.logs.filter(([, msg]) => msg === 'connection limit 2 reached; refusing new connections; raise --max-connections');
  t.is(capLines.length, 1);
  t.is(capLines[0][0], 'warn');
  held[0].destroy();
  await waitFor(() => h.proxy.stats().open === 1);
  const again = connect(h.port);
  const got = readAll(again);
  again.end('\x00ok');
  t.is((await got).toString(), '\x00ok');
  held[1].destroy();
  await h.proxy.close(100);
  await stopServer(up);
});

test('connection cap: an inbound connection refused over it is not looked up in the datapath (it has no record; the lookup would count a miss, "no open relay")', async (t) => {
  const up = await serve(echo);
  t.teardown(() => stopServer(up));
  let lookups = 0;
  // A bound socket (not listening) for the inbound listener: what the agent's transparent one is, minus IP_TRANSPARENT.
  const { TCP, constants } = (process as unknown as { binding(m: string): any }).binding('tcp_wrap');
  const bound = new TCP(constants.SERVER);
  t.is(bound.bind(HOST, 0), 0);
  const h = await startProxy(up.port, {
    maxConnections: 1,
    lookup: (ip) => {
      lookups++;
      return { ip, port: up.port, podKey: 7n };
    },
    inbound: { host: HOST, port: 0, listenFd: () => bound.fd, dialFrom: () => (_ip, _port) => defaultDialer(HOST, up.port) },
  });
  t.teardown(() => h.proxy.close(0));
  const inbound = await h.proxy.listenInbound();
  // The one connection the cap allows: an outbound one, looked up.
  const held = connect(h.port);
  t.teardown(() => held.destroy());
  await waitFor(() => h.proxy.stats().open === 1);
  t.is(lookups, 1);
  const over = [connect(inbound.port), connect(inbound.port), connect(inbound.port)];
  for (const c of over) t.is(await closeReason(c), 'ECONNRESET', 'reset over the cap');
  t.like(h.proxy.stats(), { refusedOverCap: 3, inboundAccepted: 0 });
  t.is(lookups, 1, 'inbound connections have no datapath record: none is looked up');
});

test('close(drainMs) stops accepting, waits for open connections, then destroys them', async (t) => {
  const up = await serve(echo);
  const h = await startProxy(up.port);
  const quick = connect(h.port);
  const stuck = connect(h.port);
  await waitFor(() => h.proxy.stats().open === 2);
  const started = performance.now();
  // A drain long enough that the quick connection's close is seen within it on a starved machine
  // (at 400 ms it once expired first: both destroyed, open never 1).
  const DRAIN_MS = 2000;
  const closing = h.proxy.close(DRAIN_MS);
  // close() stops the listener before it returns: a connection after it is refused at once.
  const late = connect(h.port);
  t.is(await closeReason(late), 'ECONNREFUSED');
  quick.end();
  quick.resume();
  await waitFor(() => h.proxy.stats().open === 1);
  const stuckReason = closeReason(stuck);
  await closing;
  // The stuck connection was given the whole drain, less what a Node timer may fire early by
  // performance.now() on a loaded machine (it counts from its turn's cached loop time; above).
  t.true(performance.now() - started >= DRAIN_MS - 50, `${performance.now() - started} ms`);
  t.is(h.proxy.stats().open, 0);
  t.true(['closed', 'ECONNRESET'].includes(await stuckReason));
  await stopServer(up);
});
