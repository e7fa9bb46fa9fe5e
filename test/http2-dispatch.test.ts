import * as http2 from 'node:http2';
// The HTTP/2 handler behind the real dispatcher (eager dial, detection, hand-over).
import test from 'ava';
import { execFile } from 'node:child_process';
import * as net from 'node:net';
import { promisify } from 'node:util';
import { dispatch } from '../src/proxy/dispatch.ts';
import { defaultLimits } from '../src/proxy/context.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startH2Upstream } from '../src/proxy/http2/harness.ts';
import { waitFor } from './helpers/until.ts';

const run = promisify(execFile);

test('curl through dispatch: handled connections are forwarded and share one pooled upstream session', async (t) => {
  const up = await startH2Upstream((stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(`got ${headers[':path']}`);
  });
  const pool = new Http2SessionPool();
  const sink = new RecordingSink();
  const decisions: string[] = [];
  const handler = createHttp2Handler({ pool });
  let connId = 0;
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    dispatch({
      connId: ++connId,
      client,
      endpoints: {
        direction: 'outbound', sourceIp: '127.0.0.1', sourcePort: client.remotePort ?? 0, sourcePodKey: 0n,
        destIp: '127.0.0.1', destPort: up.port,
      },
      telemetry: sink,
      dial: (ip, port) => net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true }),
      openedAt: Date.now(),
    }, {
      limits: defaultLimits,
      detectTimeoutMs: 1000,
      opaquePorts: PortSet.empty(),
      handlers: { http2: handler },
      onDecision: (p, by) => decisions.push(`${p}:${by}`),
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    pool.close();
    await new Promise((r) => server.close(r));
    await up.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const n = 20;
  for (let i = 0; i < n; i++) {
    const { stdout } = await run('curl', ['-sS', '--http2-prior-knowledge', `http://127.0.0.1:${port}/r${i}`]);
    t.is(stdout, `got /r${i}`);
  }
  // An h2c server sends SETTINGS as soon as TCP connects, often before the client's preface:
  // the dispatcher must hold it rather than call the connection server-first.
  t.deepEqual(decisions, Array(n).fill('http2:http2'));
  t.is(sink.requests.length, n);
  t.true(sink.requests.every((e) => e.status === 200 && e.success && e.protocol === 'http2'));
  t.is(up.sessionsWithStreams.size, 1, 'all connections shared one pooled upstream session');
});

test('a client whose preface comes well after the server\'s SETTINGS is still detected as HTTP/2', async (t) => {
  const up = await startH2Upstream((stream) => {
    stream.respond({ ':status': 200 });
    stream.end('late');
  });
  const sink = new RecordingSink();
  const decisions: string[] = [];
  const handler = createHttp2Handler({ pool: new Http2SessionPool() });
  let upstream: net.Socket | null = null;
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    dispatch({
      connId: 1, client, telemetry: sink, openedAt: Date.now(),
      endpoints: { direction: 'outbound', sourceIp: '127.0.0.1', sourcePort: client.remotePort ?? 0, sourcePodKey: 0n, destIp: '127.0.0.1', destPort: up.port },
      dial: (ip, port) => (upstream = net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true })),
    // A deadline no stall reaches: the verdict must come from the preface, after the SETTINGS.
    }, { limits: defaultLimits, detectTimeoutMs: 30_000, opaquePorts: PortSet.empty(), handlers: { http2: handler }, onDecision: (p, by) => decisions.push(`${p}:${by}`) });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    await new Promise((r) => server.close(r));
    await up.close();
  });
  const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  // The proxy has read the server's SETTINGS before the client says anything.
  await waitFor(() => upstream !== null && upstream.bytesRead > 0);
  const session = http2.connect('http://127.0.0.1', { createConnection: () => sock });
  t.teardown(() => session.destroy());
  const body = await new Promise<string>((resolve, reject) => {
    const req = session.request({ ':path': '/late' });
    let b = '';
    req.setEncoding('utf8').on('data', (d) => (b += d)).on('end', () => resolve(b)).on('error', reject);
    req.end();
  });
  t.is(body, 'late');
  t.deepEqual(decisions, ['http2:http2']);
  t.is(sink.requests.length, 1);
});
