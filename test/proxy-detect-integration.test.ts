// The assembled proxy (src/proxy/index.ts: real detector, real HTTP/1 and HTTP/2 handlers)
// driven by curl: detection hands each protocol to its forwarder, which reaches the
// original destination from the lookup.
import test from 'ava';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { Proxy, PortSet } from '../src/proxy/index.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { waitFor } from './helpers/until.ts';

const HOST = '127.0.0.1';
const run = promisify(execFile);

async function listen(server: net.Server): Promise<number> {
  server.listen(0, HOST);
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

async function startProxy(upPort: number, sink: RecordingSink): Promise<{ proxy: Proxy; port: number }> {
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: (ip) => ({ ip, port: upPort, podKey: 3n }),
    telemetry: sink,
    opaquePorts: PortSet.empty(),
    log: () => {},
  });
  const { port } = await proxy.listen();
  return { proxy, port };
}

test('curl HTTP/1.1 through the proxy reaches the upstream via the http1 handler', async (t) => {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from upstream: ${req.method} ${req.url} host=${req.headers.host}`);
  });
  const upPort = await listen(server);
  const sink = new RecordingSink();
  const { proxy, port } = await startProxy(upPort, sink);

  // curl connects to the proxy as a redirected app would; Host names the original service.
  const { stdout } = await run('curl', ['-sS', '--max-time', '5', '-H', 'Host: svc.example', '-w', '\n%{http_code}', `http://${HOST}:${port}/a/b?c=1`]);
  const [body, code] = stdout.split('\n');
  t.is(code, '200');
  t.is(body, 'hello from upstream: GET /a/b?c=1 host=svc.example');
  await waitFor(() => sink.closes.length === 1);
  t.like(sink.closes[0], { protocol: 'http1', detectedBy: 'http1' });
  t.deepEqual(proxy.stats().byProtocol, { http1: 1 });
  await waitFor(() => sink.requests.length === 1);
  t.like(sink.requests[0], { method: 'GET', status: 200, protocol: 'http1', destPort: upPort });

  await proxy.close(500);
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

test('curl --http2-prior-knowledge through the proxy reaches an h2c upstream via the http2 handler', async (t) => {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end(`h2 upstream: ${headers[':method']} ${headers[':path']}`);
  });
  const upPort = await listen(server);
  const sink = new RecordingSink();
  const { proxy, port } = await startProxy(upPort, sink);

  const { stdout } = await run('curl', ['-sS', '--max-time', '5', '--http2-prior-knowledge', '-w', '\n%{http_code} %{http_version}', `http://${HOST}:${port}/grpc/Thing`]);
  const [body, status] = stdout.split('\n');
  t.is(status, '200 2');
  t.is(body, 'h2 upstream: GET /grpc/Thing');
  await waitFor(() => sink.closes.length === 1);
  t.like(sink.closes[0], { protocol: 'http2', detectedBy: 'http2' });
  await waitFor(() => sink.requests.length === 1);
  t.like(sink.requests[0], { method: 'GET', path: '/grpc/Thing', status: 200, protocol: 'http2' });
  t.deepEqual(proxy.stats().byProtocol, { http2: 1 });

  await proxy.close(500);
  await new Promise<void>((r) => server.close(() => r()));
});
