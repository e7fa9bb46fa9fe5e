// The agent's side of the identity service's API (api.ts): POST /v1/certify over TLS 1.3,
// trusting only the trust anchors and only a server whose SPIFFE ID is the identity service's, so
// the agent's token never goes to anyone else. The token is read from its file at each call:
// kubelet rotates a projected token in place. At most REVIEWS_PER_PEER calls are under way at
// once, the service's bound per peer address: a node starting with many ServiceAccounts queues
// here rather than being refused there (a 503 costs a backoff).
import * as https from 'node:https';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { CERTIFY_PATH, DEFAULT_IDENTITY_PORT, parseCertifyResponse, type CertifyResponse } from './api.ts';
import { parseServiceHostPort } from '../util/host-port.ts';
import { peerIdentity, spiffeId, type WorkloadId } from './spiffe.ts';
import { REVIEWS_PER_PEER } from './review-gate.ts';

export interface CertifyClient {
  certify(id: WorkloadId, csrPem: string): Promise<CertifyResponse>;
}

export interface HttpsCertifyOptions {
  /** host:port of the identity service. */
  addr: string;
  anchorsPem: string;
  /** Who the identity service must be. */
  serverId: WorkloadId;
  tokenFile: string;
  timeoutMs?: number;
}

export const DEFAULT_CERTIFY_TIMEOUT_MS = 10_000;

/** `queued`: calls waiting for their turn. */
export function httpsCertifyClient(o: HttpsCertifyOptions): CertifyClient & { readonly queued: number } {
  const { host, port } = parseServiceHostPort(o.addr, `identity service address ${JSON.stringify(o.addr)}`, DEFAULT_IDENTITY_PORT);
  const wantUri = spiffeId(o.serverId);
  const agent = new https.Agent({ keepAlive: false });
  let running = 0;
  const waiting: Array<() => void> = [];
  /** In order of the calls; a call done hands its turn to the next waiting. */
  const inTurn = async <T>(call: () => Promise<T>): Promise<T> => {
    if (running < REVIEWS_PER_PEER) running++;
    else await new Promise<void>((r) => waiting.push(r));
    try {
      return await call();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
  return {
    certify: (id, csrPem) => inTurn(() => certifyNow(id, csrPem)),
    get queued() {
      return waiting.length;
    },
  };

  function certifyNow(id: WorkloadId, csrPem: string): Promise<CertifyResponse> {
    let token: string;
    try {
      token = fs.readFileSync(o.tokenFile, 'utf8').trim();
    } catch (e) {
      return Promise.reject(new Error(`reading the ServiceAccount token ${o.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; mount a projected token there or pass --identity-token-file`));
    }
    const body = JSON.stringify({ identity: spiffeId(id), csr: csrPem });
    return new Promise<CertifyResponse>((resolve, reject) => {
      const req = https.request({
        host, port, method: 'POST', path: CERTIFY_PATH, agent,
        ca: o.anchorsPem, minVersion: 'TLSv1.3', servername: sniOf(host),
        // The chain is node:tls's to check (rejectUnauthorized); who the server is, ours.
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          const p = peerIdentity(cert.subjectaltname, o.serverId.trustDomain);
          if (!p.ok) return new Error(`the identity service at ${o.addr} is not ${wantUri}: ${p.reason}`);
          if (p.uri !== wantUri) return new Error(`the server at ${o.addr} is ${p.uri}, not the identity service (${wantUri})`);
          return undefined;
        },
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'content-length': Buffer.byteLength(body) },
        timeout: o.timeoutMs ?? DEFAULT_CERTIFY_TIMEOUT_MS,
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d.length + text.length > 256 * 1024 ? '' : d));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            reject(new Error(`the identity service answered ${res.statusCode} with no JSON`));
            return;
          }
          if (res.statusCode !== 200) {
            const err = (json as { error?: unknown })?.error;
            reject(new Error(`the identity service refused (${res.statusCode}): ${typeof err === 'string' ? err : 'no reason given'}`));
            return;
          }
          try {
            resolve(parseCertifyResponse(json));
          } catch (e) {
            reject(e);
          }
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from the identity service at ${o.addr} within ${o.timeoutMs ?? DEFAULT_CERTIFY_TIMEOUT_MS} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => reject(e.message.startsWith('no answer') || e.message.includes('identity service') ? e : new Error(`identity service at ${o.addr}: ${e.code ?? e.message}${e.code === 'ECONNREFUSED' ? '; is mesh-agent identity running?' : ''}`)));
      req.end(body);
    });
  }
}

/**
 * The TLS server name for `host`: none for an IP literal, v4 or v6 (RFC 6066 §3 allows names
 * only; Node warns DEP0123); a fully qualified name without its trailing dot (RFC 6066 §3 too).
 */
export function sniOf(host: string): string | undefined {
  return isIP(host) === 0 ? host.replace(/\.$/, '') : undefined;
}
