// Handshakes per second per core (issue 14): the tunnel's mTLS handshake (TLS 1.3, ECDSA P-256
// both ways, the checks the agents make) between a client process and the real tunnel listener
// in another, on loopback, with no datapath: what one core of each side can do. A standalone
// scenario: no simulated node, no root.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import type { ModeResult } from './scenarios.ts';
import { checkErrors } from './load-failure.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load');
const CONCURRENCY = 8;

async function credential(x509: typeof import('../src/identity/x509.ts'), issuer: Awaited<ReturnType<typeof x509.loadIssuer>>, issuerPem: string, sa: string) {
  const { spiffeId, workloadId } = await import('../src/identity/spiffe.ts');
  const id = workloadId('cluster.local', 'bench', sa);
  const { keyPem, csrPem } = await x509.createCsr(id);
  const now = Date.now();
  const pem = await x509.signWorkloadCsr(issuer, csrPem, { id, notBefore: new Date(now - 30_000), notAfter: new Date(now + 3_600_000) });
  const c = new X509Certificate(pem);
  return { uri: spiffeId(id), state: 'ready' as const, material: { uri: spiffeId(id), keyPem, certChainPem: pem + issuerPem, serial: c.serialNumber, notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo) } };
}

export async function runHandshakes(quick: boolean, say: (s: string) => void): Promise<ModeResult> {
  const x509 = await import('../src/identity/x509.ts');
  const { serverNameOf, workloadId } = await import('../src/identity/spiffe.ts');
  const now = Date.now();
  const anchor = await x509.createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const iss = await x509.createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const issuer = await x509.loadIssuer(iss.certPem, iss.keyPem, anchor.certPem);
  const server = await credential(x509, issuer, iss.certPem, 'server');
  const client = await credential(x509, issuer, iss.certPem, 'client');
  const dir = fs.mkdtempSync(ownedTempPrefix('bench'));
  const file = path.join(dir, 'creds.json');
  fs.writeFileSync(file, JSON.stringify({ anchorsPem: anchor.certPem, server, client, serverName: serverNameOf(workloadId('cluster.local', 'bench', 'server')), serverUri: server.uri }), { mode: 0o600 });
  const srv = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(LOAD, 'tunnel-server.ts'), file], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    let buf = '';
    const lines: string[] = [];
    const waiters: Array<() => void> = [];
    srv.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        waiters.shift()?.();
      }
    });
    const next = () => new Promise<any>((resolve, reject) => {
      const take = () => resolve(JSON.parse(lines.shift()!));
      if (lines.length) return take();
      const timer = setTimeout(() => reject(new Error('the tunnel listener did not answer within 20 s')), 20_000);
      waiters.push(() => {
        clearTimeout(timer);
        take();
      });
    });
    const { port } = await next();
    const seconds = quick ? 1 : 5;
    say(`tunnel-handshakes: ${CONCURRENCY} clients for ${seconds} s against the tunnel listener`);
    srv.stdin!.write('\n');
    const before = await next();
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(LOAD, 'tunnel-handshakes.ts'), file, '--port', String(port), '--concurrency', String(CONCURRENCY), '--seconds', String(seconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let s = '';
      c.stdout!.setEncoding('utf8').on('data', (d: string) => (s += d));
      c.once('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`tunnel-handshakes exited ${code}`))));
    });
    srv.stdin!.write('\n');
    const after = await next();
    const r = JSON.parse(out.trim());
    checkErrors('tunnel-handshakes', { name: 'handshakes', n: r.handshakes }, { name: 'failed', n: r.failed }, 0.01);
    const serverCpu = (after.cpuUs - before.cpuUs) / 1e6;
    const accepted = after.accepted - before.accepted;
    return {
      values: {
        'handshakes/s': r.handshakes / r.seconds,
        'per server CPU-second': accepted / serverCpu,
        'per client CPU-second': r.handshakes / (r.cpuUs / 1e6),
      },
      notes: [`${r.handshakes} handshakes in ${r.seconds.toFixed(1)} s by ${CONCURRENCY} concurrent clients in one process; the listener accepted ${accepted} using ${serverCpu.toFixed(2)} CPU-s, the clients ${(r.cpuUs / 1e6).toFixed(2)} CPU-s (both processes share the machine's cores, so handshakes/s is what two cores give, the per CPU-second figures what one core of each side gives).`],
    };
  } finally {
    srv.stdin!.end();
    srv.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
