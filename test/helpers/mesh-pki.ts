// A trust anchor, an issuer and workload credentials for tests, made with the project's own
// X.509 code, plus the forgeries the refusal tests present (another root, expired, another
// trust domain).
import { X509Certificate } from 'node:crypto';
import { createCsr, createIssuer, createTrustAnchor, loadIssuer, signWorkloadCsr, type CertAndKey, type Issuer } from '../../src/identity/x509.ts';
import { spiffeId, type WorkloadId } from '../../src/identity/spiffe.ts';
import type { CredentialUpdate } from '../../src/identity/credentials.ts';

export interface Pki {
  anchor: CertAndKey;
  issuerPair: CertAndKey;
  issuer: Issuer;
  /** A ready credential for the identity (validity relative to now, ms). */
  credential(id: WorkloadId, o?: { fromMs?: number; toMs?: number }): Promise<CredentialUpdate & { state: 'ready' }>;
}

export async function makePki(trustDomain = 'cluster.local'): Promise<Pki> {
  const now = Date.now();
  const anchor = await createTrustAnchor({ trustDomain, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) });
  const issuerPair = await createIssuer(anchor, { trustDomain, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) });
  const issuer = await loadIssuer(issuerPair.certPem, issuerPair.keyPem, anchor.certPem);
  return {
    anchor,
    issuerPair,
    issuer,
    async credential(id, o = {}) {
      const { keyPem, csrPem } = await createCsr(id);
      const t = Date.now();
      const pem = await signWorkloadCsr(issuer, csrPem, { id, notBefore: new Date(t + (o.fromMs ?? -30_000)), notAfter: new Date(t + (o.toMs ?? 3_600_000)) });
      const c = new X509Certificate(pem);
      return {
        uri: spiffeId(id),
        state: 'ready',
        material: { uri: spiffeId(id), keyPem, certChainPem: pem + issuerPair.certPem, serial: c.serialNumber, notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo) },
      };
    },
  };
}
