// Standalone scenario tunnel-wire: the tunnel's two candidate wire formats against one plaintext
// hop, with the same Node relays (bench/load/wire-compare.ts), on loopback. What it shows is why
// the tunnel is HBONE (docs/identity.md): not the agent's numbers, the formats'.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModeResult } from './scenarios.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const TOOL = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load/wire-compare.ts');

function start(args: string[]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', TOOL, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error(`wire-compare ${args[0]} did not start`)), 15_000);
    c.stdout!.once('data', () => {
      clearTimeout(timer);
      resolve(c);
    });
    c.once('exit', (code) => reject(new Error(`wire-compare ${args[0]} exited ${code}`)));
  });
}

function run(args: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', TOOL, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`wire-compare client exited ${code}`);
        resolve(JSON.parse(out.trim()));
      } catch (e) {
        reject(new Error(`wire-compare client: ${(e as Error).message}; it printed ${JSON.stringify(out.slice(0, 200))}`));
      }
    });
  });
}

export async function runWireCompare(quick: boolean, say: (s: string) => void): Promise<ModeResult> {
  const { createTrustAnchor } = await import('../src/identity/x509.ts');
  const dir = fs.mkdtempSync(ownedTempPrefix('bench'));
  const now = Date.now();
  const pair = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  fs.writeFileSync(path.join(dir, 'key.pem'), pair.keyPem);
  fs.writeFileSync(path.join(dir, 'cert.pem'), pair.certPem);
  const seconds = quick ? 1 : 5;
  const values: Record<string, number> = {};
  let port = 19300 + Math.floor(Math.random() * 500) * 3;
  try {
    for (const mode of ['relay', 'h2', 'tls'] as const) {
      for (const kind of ['bulk', 'rr'] as const) {
        port += 3;
        const p = String(port);
        say(`tunnel-wire: ${mode} ${kind}`);
        const procs = [await start(['server', mode, kind, p]), ...(mode === 'relay' ? [] : [await start(['far', mode, kind, p, path.join(dir, 'key.pem'), path.join(dir, 'cert.pem')])]), await start(['near', mode, kind, p])];
        try {
          const r = await run(['client', mode, kind, p, '', '', String(seconds)]);
          values[kind === 'bulk' ? `${mode} bulk` : `${mode} request/response`] = kind === 'bulk' ? r.gbitPerSec : r.requestsPerSec;
        } finally {
          for (const c of procs) c.kill('SIGKILL');
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return {
    values,
    notes: [`One process per role (server, the destination's relay, the client's relay, the load), Node streams' pipe() in each relay; bulk: 1 GiB on one connection; request/response: 50 connections in lockstep, ${seconds} s. The relay has one hop, h2 and tls two (as the plaintext mesh and the mTLS mesh between nodes).`],
  };
}
