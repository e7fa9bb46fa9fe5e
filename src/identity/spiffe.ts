// Workload identity (docs/identity.md): a pod's ServiceAccount as a SPIFFE ID,
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>, carried as the one URI SAN of its
// certificate (ztunnel's format). Pure: names, parsing and the checks node:tls leaves to us
// (it verifies the chain but never looks at URI SANs: CVE-2021-44531).
import { nodeCrypto } from '../util/builtins.ts';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export interface WorkloadId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

// A trust domain is a DNS-ish name in lower case (SPIFFE-ID spec, 2.1); Kubernetes names are
// DNS-1123 labels (namespaces) and subdomains (ServiceAccounts).
const TRUST_DOMAIN = /^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$/;
const NS = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SA = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isTrustDomain(s: string): boolean {
  return TRUST_DOMAIN.test(s) && !s.includes('..');
}

/** Throws naming the bad part; the fix is a Kubernetes name or a DNS-like trust domain. */
export function checkWorkloadId(id: WorkloadId): WorkloadId {
  if (!isTrustDomain(id.trustDomain)) throw new Error(`trust domain ${JSON.stringify(id.trustDomain)} is not a DNS-like name (lower case letters, digits, ".", "-", "_"), e.g. cluster.local`);
  if (!NS.test(id.namespace)) throw new Error(`namespace ${JSON.stringify(id.namespace)} is not a Kubernetes namespace name`);
  if (!SA.test(id.serviceAccount)) throw new Error(`ServiceAccount ${JSON.stringify(id.serviceAccount)} is not a Kubernetes ServiceAccount name`);
  return id;
}

export function spiffeId(id: WorkloadId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function workloadId(trustDomain: string, namespace: string, serviceAccount: string): WorkloadId {
  return checkWorkloadId({ trustDomain, namespace, serviceAccount });
}

/** A SPIFFE ID of our form, or null (another form, another scheme, a query or fragment, bad names). */
export function parseSpiffeId(uri: string): WorkloadId | null {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(uri);
  if (m === null) return null;
  const id = { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! };
  try {
    return checkWorkloadId(id);
  } catch {
    return null;
  }
}

/**
 * The TLS server name a client asks for when it wants this identity's certificate: one agent
 * serves every identity of its node and picks the certificate by SNI (docs/identity.md). A DNS
 * name, as SNI must be: Linkerd's form, or a hash of the SPIFFE ID when that would be too long.
 */
export function serverNameOf(id: WorkloadId): string {
  const name = `${id.serviceAccount}.${id.namespace}.serviceaccount.identity.mesh-agent.${id.trustDomain}`;
  if (name.length <= 253 && name.split('.').every((l) => l.length >= 1 && l.length <= 63)) return name;
  return `id-${nodeCrypto().createHash('sha256').update(spiffeId(id)).digest('hex').slice(0, 40)}.identity.mesh-agent`;
}

/**
 * The URIs among a certificate's subject alternative names, as Node prints them
 * (X509Certificate.subjectAltName, a peer certificate's `subjectaltname`): entries are
 * ", "-separated `TYPE:value`, a value with special characters JSON-quoted (Node >= 17, the fix
 * of CVE-2021-44532). Null when the text cannot be read unambiguously.
 */
export function uriSans(subjectAltName: string | undefined): string[] | null {
  if (subjectAltName === undefined || subjectAltName === '') return [];
  const out: string[] = [];
  let i = 0;
  const s = subjectAltName;
  while (i < s.length) {
    const colon = s.indexOf(':', i);
    if (colon < 0) return null;
    const type = s.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (s[j] === '"') {
      // A JSON string: find its end, honouring escapes.
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      if (k >= s.length) return null;
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string;
      } catch {
        return null;
      }
      j = k + 1;
    } else {
      const end = s.indexOf(', ', j);
      value = s.slice(j, end < 0 ? s.length : end);
      j = end < 0 ? s.length : end;
    }
    if (type === 'URI') out.push(value);
    if (j < s.length) {
      if (s.slice(j, j + 2) !== ', ') return null;
      j += 2;
    }
    i = j;
  }
  return out;
}

export type PeerIdResult = { ok: true; id: WorkloadId; uri: string } | { ok: false; reason: string; claimed: string | null };

/**
 * The workload identity a certificate (already verified against the trust anchor by node:tls)
 * names: exactly one URI SAN, a SPIFFE ID of our form, in our trust domain.
 */
export function peerIdentity(subjectAltName: string | undefined, trustDomain: string): PeerIdResult {
  const uris = uriSans(subjectAltName);
  if (uris === null) return { ok: false, reason: 'its subject alternative names cannot be read', claimed: null };
  if (uris.length === 0) return { ok: false, reason: 'no URI SAN (not a mesh workload certificate)', claimed: null };
  if (uris.length > 1) return { ok: false, reason: `${uris.length} URI SANs; a workload certificate has exactly one`, claimed: uris.join(' ') };
  const uri = uris[0]!;
  const id = parseSpiffeId(uri);
  if (id === null) return { ok: false, reason: 'its URI SAN is not a SPIFFE ID of the form spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>', claimed: uri };
  if (id.trustDomain !== trustDomain) return { ok: false, reason: `trust domain ${id.trustDomain} is not this mesh's (${trustDomain})`, claimed: uri };
  return { ok: true, id, uri };
}
