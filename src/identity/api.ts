// The identity service's API (docs/identity.md): one call, POST /v1/certify, over TLS 1.3 whose
// server certificate is the identity service's own SPIFFE ID under the trust anchor.
//   request:  Authorization: Bearer <the agent's ServiceAccount token>
//             {"identity": "spiffe://td/ns/NS/sa/SA", "csr": "-----BEGIN CERTIFICATE REQUEST-----..."}
//   200:      {"certificate": PEM, "chain": [PEM, ...], "notBefore": ISO, "notAfter": ISO, "serial": HEX}
//   400/401/403/503: {"error": "what was refused and how to fix it"}
import { parseSpiffeId, type WorkloadId } from './spiffe.ts';

export const CERTIFY_PATH = '/v1/certify';
export const DEFAULT_CERT_LIFETIME_MS = 24 * 3_600_000;
/** The audience agents' projected tokens carry. */
export const DEFAULT_AUDIENCE = 'mesh-agent-identity';
export const DEFAULT_IDENTITY_PORT = 8080;
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface CertifyRequest {
  identity: WorkloadId;
  uri: string;
  csr: string;
}

export interface CertifyResponse {
  certificate: string;
  chain: string[];
  notBefore: string;
  notAfter: string;
  serial: string;
  /**
   * The end certificates are cut to: the issuer's, or its trust anchor's when sooner (the chain
   * holds only the issuer, so the agent cannot see the anchor's). Absent from older services.
   */
  issuerNotAfter?: string;
}

export function parseCertifyRequest(body: unknown): CertifyRequest {
  const o = body as Record<string, unknown> | null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('the body must be a JSON object with identity and csr');
  if (typeof o.identity !== 'string') throw new Error('identity: expected a SPIFFE ID string');
  const id = parseSpiffeId(o.identity);
  if (id === null) throw new Error(`identity: ${JSON.stringify(o.identity.slice(0, 200))} is not a SPIFFE ID of the form spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`);
  if (typeof o.csr !== 'string' || !o.csr.includes('BEGIN CERTIFICATE REQUEST')) throw new Error('csr: expected a PEM certificate request');
  return { identity: id, uri: o.identity, csr: o.csr };
}

export function parseCertifyResponse(body: unknown): CertifyResponse {
  const o = body as Record<string, unknown> | null;
  const pem = (v: unknown): v is string => typeof v === 'string' && v.includes('BEGIN CERTIFICATE');
  if (o === null || typeof o !== 'object' || !pem(o.certificate) || !Array.isArray(o.chain) || !o.chain.every(pem)
    || typeof o.notAfter !== 'string' || Number.isNaN(Date.parse(o.notAfter)) || typeof o.notBefore !== 'string' || typeof o.serial !== 'string') {
    throw new Error('the identity service answered something that is not a certificate response; run agents and the identity service of the same release');
  }
  const issuerNotAfter = typeof o.issuerNotAfter === 'string' && !Number.isNaN(Date.parse(o.issuerNotAfter)) ? o.issuerNotAfter : undefined;
  return { certificate: o.certificate, chain: o.chain as string[], notBefore: o.notBefore, notAfter: o.notAfter, serial: o.serial, ...(issuerNotAfter ? { issuerNotAfter } : {}) };
}
