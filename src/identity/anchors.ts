// The trust anchors as status shows them: each root's subject, end and days left, with a warning
// when one ends within 30 days (a root that expires breaks every certificate under it at once;
// docs/identity.md says how to rotate it).
import { X509Certificate } from 'node:crypto';
import { splitPemCertificates } from './pem.ts';

export const ANCHOR_WARN_DAYS = 30;

export interface AnchorStatus {
  subject: string;
  notAfter: string;
  daysLeft: number;
  /** Set within 30 days of the end, and after it. */
  warning?: string;
}

export function anchorsStatus(pem: string, now = Date.now()): AnchorStatus[] {
  return splitPemCertificates(pem).map((p) => {
    const c = new X509Certificate(p);
    const end = Date.parse(c.validTo);
    const daysLeft = Math.floor((end - now) / 86_400_000);
    const s: AnchorStatus = { subject: c.subject.replace(/\n/g, ', '), notAfter: new Date(end).toISOString(), daysLeft };
    if (end <= now) s.warning = `trust anchor ${s.subject} expired at ${s.notAfter}: no certificate under it verifies; install a new anchor (docs/identity.md, rotating the trust anchor)`;
    else if (daysLeft < ANCHOR_WARN_DAYS) s.warning = `trust anchor ${s.subject} expires in ${daysLeft} days (${s.notAfter}); rotate it now (docs/identity.md, rotating the trust anchor)`;
    return s;
  });
}
