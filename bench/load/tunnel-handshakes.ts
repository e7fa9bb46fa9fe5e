// mTLS handshakes as the client's agent makes them for a new tunnel connection
// (src/tunnel/hbone-pool.ts): TLS 1.3 with the source workload's certificate, the destination's
// identity in SNI, ALPN h2, the server's certificate checked against the anchor and its SPIFFE ID
// read; each connection ended once verified, after the server has verified ours. `concurrency` loops for `seconds`. Prints
// {"handshakes":N,"seconds":S,"cpuUs":C,"failed":F}.
//   node bench/load/tunnel-handshakes.ts FILE --port P [--concurrency 8] [--seconds 5]
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { parseArgs } from 'node:util';
import { peerIdentity } from '../../src/identity/spiffe.ts';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { port: { type: 'string' }, concurrency: { type: 'string', default: '8' }, seconds: { type: 'string', default: '5' } } });
const cfg = JSON.parse(fs.readFileSync(positionals[0]!, 'utf8')) as { anchorsPem: string; client: { material: { keyPem: string; certChainPem: string } }; serverName: string; serverUri: string };
const context = tls.createSecureContext({ key: cfg.client.material.keyPem, cert: cfg.client.material.certChainPem, ca: cfg.anchorsPem, minVersion: 'TLSv1.3' });
const port = Number(values.port);
const until = performance.now() + Number(values.seconds) * 1000;
let handshakes = 0;
let failed = 0;
const cpu0 = process.cpuUsage();
const t0 = performance.now();

function one(): Promise<void> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: cfg.serverName, secureContext: context, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', rejectUnauthorized: false, checkServerIdentity: () => undefined });
    s.once('secureConnect', () => {
      const p = peerIdentity(s.getPeerCertificate().subjectaltname, 'cluster.local');
      if (s.authorized && p.ok && p.uri === cfg.serverUri) handshakes++;
      else failed++;
      // end(), not destroy(): our last flight (certificate, Finished) must reach the server, which verifies it.
      s.end();
    });
    s.once('error', () => {
      failed++;
      s.destroy();
    });
    s.once('close', () => resolve());
  });
}

await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
  while (performance.now() < until) await one();
}));
const c = process.cpuUsage(cpu0);
process.stdout.write(JSON.stringify({ handshakes, failed, seconds: (performance.now() - t0) / 1000, cpuUs: c.user + c.system }) + '\n');
