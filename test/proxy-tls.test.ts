// TLS passthrough with a real node:tls client and server: the proxy reads the ClientHello
// (SNI, ALPN) without terminating it, and the handshake and data pass end to end.
import test from 'ava';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { Proxy } from '../src/proxy/listener.ts';
import { PortSet } from '../src/proxy/ports.ts';
import type { OpaqueCloseEvent } from '../src/proxy/opaque.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { waitFor } from './helpers/until.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const HOST = '127.0.0.1';

function selfSigned(cn: string): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(ownedTempPrefix('test'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1',
      '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`,
    ], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('TLS is passed through end to end, with SNI and ALPN recorded in telemetry', async (t) => {
  const name = 'api.example.test';
  const { key, cert } = selfSigned(name);
  const seenServername: string[] = [];
  const server = tls.createServer({ key, cert, ALPNProtocols: ['h2', 'http/1.1'] }, (s) => {
    seenServername.push((s as tls.TLSSocket & { servername?: string }).servername ?? '');
    s.on('error', () => {});
    s.on('data', (b: Buffer) => s.write(`echo:${b.toString()}`));
    s.on('end', () => s.end());
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  const upPort = (server.address() as net.AddressInfo).port;

  const sink = new RecordingSink();
  const http1 = () => t.fail('TLS must not reach the HTTP handler');
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: (ip) => ({ ip, port: upPort, podKey: 1n }),
    telemetry: sink,
    opaquePorts: PortSet.empty(),
    handlers: { http1, http2: http1 },
    log: () => {},
  });
  const { port } = await proxy.listen();

  const client = tls.connect({ host: HOST, port, servername: name, ca: cert, ALPNProtocols: ['h2'] });
  await once(client, 'secureConnect');
  // The certificate check against the real server's cert proves the handshake was not terminated.
  t.true(client.authorized, String(client.authorizationError));
  t.is(client.alpnProtocol, 'h2');
  client.write('hello');
  const [reply] = (await once(client, 'data')) as [Buffer];
  t.is(reply.toString(), 'echo:hello');
  client.end();
  await once(client, 'close');

  await waitFor(() => sink.closes.length > 0);
  const ev = sink.closes[0] as OpaqueCloseEvent;
  t.truthy(ev);
  t.like(ev, { protocol: 'tls', detectedBy: 'tls', authority: name });
  t.deepEqual(ev.alpn, ['h2']);
  t.true(ev.bytesIn > 0 && ev.bytesOut > 0);
  t.deepEqual(seenServername, [name]);
  t.deepEqual(proxy.stats().byProtocol, { tls: 1 });

  await proxy.close(100);
  await new Promise<void>((r) => server.close(() => r()));
});
