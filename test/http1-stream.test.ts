// Large bodies stream through the HTTP/1 forwarder with bounded memory: chunked both ways,
// 200 MB each, with node:http on both ends (all in this process, so RSS covers all three).
// Measured: about 80 MB growth with or without the proxy in the path (node:http and GC lag);
// a forwarder holding one whole body would add at least 200 MB.
import test from 'ava';
import * as net from 'node:net';
import * as http from 'node:http';
import { once } from 'node:events';
import { createHttp1Handler, UpstreamPool } from '../src/proxy/http1/index.ts';
import { defaultLimits, type ConnContext } from '../src/proxy/context.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { waitFor } from './helpers/until.ts';
import { adoptForTest } from './helpers/native-io.ts';

const TOTAL = 200 * 1024 * 1024;
const BLOCK = Buffer.alloc(64 * 1024, 'x');

/** Writes TOTAL bytes in blocks, honouring backpressure. */
async function pump(w: NodeJS.WritableStream & { write(b: Buffer): boolean }) {
  for (let sent = 0; sent < TOTAL; sent += BLOCK.length) {
    if (!w.write(BLOCK)) await once(w, 'drain');
  }
}

test('200 MB chunked request and 200 MB chunked response stream with bounded RSS', async (t) => {
  const origin = http.createServer(async (req, res) => {
    let got = 0;
    req.on('data', (d: Buffer) => (got += d.length));
    await once(req, 'end');
    res.setHeader('x-received', String(got));
    res.flushHeaders();
    await pump(res);
    res.end();
  });
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  const destPort = (origin.address() as net.AddressInfo).port;

  const sink = new RecordingSink();
  const pool = new UpstreamPool();
  const handler = createHttp1Handler({ pool });
  const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
    const ctx: ConnContext = {
      connId: 1,
      client,
      endpoints: { direction: 'outbound', sourceIp: '127.0.0.1', sourcePort: 0, sourcePodKey: 0n, destIp: '127.0.0.1', destPort },
      telemetry: sink,
      dial: (ip, port) => net.connect({ host: ip, port, allowHalfOpen: true }),
      openedAt: Date.now(),
    };
    client.pause();
    handler(ctx, adoptForTest(ctx, Buffer.alloc(0)), null, defaultLimits);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  t.teardown(() => {
    pool.close();
    origin.closeAllConnections();
    origin.close();
    proxy.close();
  });

  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);

  const req = http.request({ host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port, method: 'POST', path: '/bulk' });
  req.setHeader('transfer-encoding', 'chunked');
  const resP = once(req, 'response') as Promise<[http.IncomingMessage]>;
  await pump(req);
  req.end();
  const [res] = await resP;
  t.is(res.headers['transfer-encoding'], 'chunked');
  t.is(res.headers['x-received'], String(TOTAL));
  let received = 0;
  res.on('data', (d: Buffer) => (received += d.length));
  await once(res, 'end');
  clearInterval(sampler);

  t.is(received, TOTAL);
  const growthMb = (peak - baseline) / 1024 / 1024;
  t.log(`RSS growth ${growthMb.toFixed(1)} MB for 400 MB moved`);
  t.true(growthMb < 150, `RSS grew ${growthMb.toFixed(1)} MB`);

  // The request event follows the response's last bytes; wait for it, not for 20 ms.
  await waitFor(() => sink.requests.length >= 1);
  t.is(sink.requests.length, 1);
  const ev = sink.requests[0];
  t.is(ev.status, 200);
  t.true(ev.requestBytes > TOTAL && ev.requestBytes < TOTAL * 1.01);
  t.true(ev.responseBytes > TOTAL && ev.responseBytes < TOTAL * 1.01);
});
