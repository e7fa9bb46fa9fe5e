// Certificates and CSRs (docs/identity.md): ECDSA P-256 over WebCrypto through @peculiar/x509,
// which writes and reads the ASN.1 (node:crypto verifies and parses certificates but cannot make
// them). Loaded only where certificates are made or CSRs read: `install` and the identity
// service (and tests). The agent makes its CSRs with csr.ts and never loads this.
import { X509Certificate as NodeX509, createPublicKey, webcrypto, randomBytes, type KeyObject } from 'node:crypto';
// tsyringe, which @peculiar/x509 uses, needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { spiffeId, type WorkloadId } from './spiffe.ts';
import { splitPemCertificates } from './pem.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const subtle = webcrypto.subtle;
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' };
// SIGNING, serial, newKeys, keyPem, pemOf and importKey are exported for the certificates tests
// make of their own (test/helpers/serving-cert.ts).
export const SIGNING = { name: 'ECDSA', hash: 'SHA-256' };

/** A certificate and its private key, both PEM (the key PKCS#8, as node:tls takes it). */
export interface CertAndKey {
  certPem: string;
  keyPem: string;
}

export function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f; // positive, as RFC 5280 requires of serial numbers
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

export async function newKeys(): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
}

export async function keyPem(k: CryptoKey): Promise<string> {
  return `${x509.PemConverter.encode(await subtle.exportKey('pkcs8', k as webcrypto.CryptoKey), 'PRIVATE KEY').trim()}\n`;
}

/** PEM ending in a newline, so that bundles concatenate (OpenSSL refuses "-----END...-----BEGIN"). */
export function pemOf(o: { toString(format: 'pem'): string }): string {
  return `${o.toString('pem').trim()}\n`;
}

export async function importKey(pem: string, what: string): Promise<CryptoKey> {
  let der: ArrayBuffer;
  try {
    der = x509.PemConverter.decodeFirst(pem);
  } catch (e) {
    throw new Error(`${what}: not a PEM private key (${(e as Error).message})`);
  }
  try {
    return (await subtle.importKey('pkcs8', der, EC_KEY, true, ['sign'])) as unknown as CryptoKey;
  } catch (e) {
    throw new Error(`${what}: not an ECDSA P-256 private key in PKCS#8 ("BEGIN PRIVATE KEY"); convert it with openssl pkcs8 -topk8 -nocrypt (${(e as Error).message})`);
  }
}

/** A self-signed root for the trust domain (the trust anchor), lifetime as given. */
export async function createTrustAnchor(o: { trustDomain: string; notBefore: Date; notAfter: Date }): Promise<CertAndKey> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=root.identity.mesh-agent.${o.trustDomain}`,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    keys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: pemOf(cert), keyPem: await keyPem(keys.privateKey) };
}

/** The issuer the identity service signs with: an intermediate CA under the trust anchor. */
export async function createIssuer(anchor: CertAndKey, o: { trustDomain: string; notBefore: Date; notAfter: Date }): Promise<CertAndKey> {
  const root = new x509.X509Certificate(anchor.certPem);
  const rootKey = await importKey(anchor.keyPem, 'trust anchor key');
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=identity.mesh-agent.${o.trustDomain}`,
    issuer: root.subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: keys.publicKey,
    signingKey: rootKey,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root),
    ],
  });
  return { certPem: pemOf(cert), keyPem: await keyPem(keys.privateKey) };
}

export { createCsr } from './csr.ts';

/** An issuer ready to sign: its certificate (PEM and parsed) and its key. */
export interface Issuer {
  certPem: string;
  cert: x509.X509Certificate;
  key: CryptoKey;
  /** The end of what it can issue: its own, or its trust anchor's when that comes first. */
  notAfter: Date;
}

/**
 * Loads the issuer and checks it against the trust anchors: a CA certificate, its key the one
 * in the certificate, signed by one of the anchors, valid now. Each failure names the file to fix.
 */
export async function loadIssuer(certPem: string, keyPemText: string, anchorsPem: string, now = new Date()): Promise<Issuer> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch (e) {
    throw new Error(`issuer certificate: not a PEM certificate (${(e as Error).message})`);
  }
  const key = await importKey(keyPemText, 'issuer key');
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new Error('issuer certificate: not a CA (basicConstraints CA:TRUE missing); generate an intermediate with mesh-agent install or step certificate create --profile intermediate-ca');
  // The key must be the certificate's: sign and verify a probe.
  const probe = randomBytes(32);
  const sig = await subtle.sign(SIGNING, key as webcrypto.CryptoKey, probe);
  const pub = await cert.publicKey.export(EC_KEY, ['verify']);
  if (!(await subtle.verify(SIGNING, pub as webcrypto.CryptoKey, sig, probe))) throw new Error('issuer key: it is not the key of the issuer certificate; pass the matching pair');
  const node = new NodeX509(certPem);
  const anchors = splitPemCertificates(anchorsPem).map((p) => new NodeX509(p));
  if (anchors.length === 0) throw new Error('trust anchors: no PEM certificate found');
  const signers = anchors.filter((a) => node.checkIssued(a) && node.verify(a.publicKey));
  if (signers.length === 0) throw new Error('issuer certificate: not signed by any of the trust anchors; issue it from the trust anchor you distribute (docs/identity.md, bring your own)');
  if (cert.notBefore > now || cert.notAfter <= now) throw new Error(`issuer certificate: not valid now (valid ${cert.notBefore.toISOString()} to ${cert.notAfter.toISOString()}); issue a new one`);
  // Peers check the anchor's dates too: under an expired one nothing issued verifies, and
  // nothing verifies past its end.
  const valid = signers.filter((a) => a.validFromDate <= now && a.validToDate > now);
  if (valid.length === 0) {
    const a = signers[0]!;
    throw new Error(`trust anchor ${a.subject.replace(/\n/g, ', ')} of the issuer certificate is not valid now (it expired at ${a.validToDate.toISOString()}, or starts at ${a.validFromDate.toISOString()}); install a new anchor and an issuer under it (docs/identity.md, rotating the trust anchor)`);
  }
  const anchorEnd = Math.max(...valid.map((a) => a.validToDate.getTime()));
  return { certPem: pemOf(cert), cert, key, notAfter: new Date(Math.min(cert.notAfter.getTime(), anchorEnd)) };
}

export { splitPemCertificates as splitPem } from './pem.ts';

/**
 * Signs a workload CSR: checks its signature (the requester holds the key), then issues for the
 * identity given (already authorized by the caller), whatever names the CSR asked for, as
 * Linkerd's identity service does. A CSR that names another identity is refused.
 */
export async function signWorkloadCsr(issuer: Issuer, csrPem: string, o: { id: WorkloadId; notBefore: Date; notAfter: Date }): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (e) {
    throw new CsrError(`the CSR is not a PEM PKCS#10 request (${(e as Error).message})`);
  }
  // The key's type first, by node:crypto, which reads any SPKI: WebCrypto throws a DOMException
  // on a key it does not know (Ed448, secp256k1), which would be answered as the service's failure.
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch (e) {
    throw new CsrError(`the CSR's key cannot be read (${(e as Error).message}); workload keys are ECDSA P-256`);
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') throw new CsrError(`the CSR's key is ${key.asymmetricKeyType}${curve ? ` ${curve}` : ''}; workload keys are ECDSA P-256`);
  if (!(await csr.verify().catch(() => false))) throw new CsrError('the CSR\'s signature does not verify: it was not signed by the key it carries');
  const want = spiffeId(o.id);
  const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
  for (const n of san?.names.items ?? []) {
    if (n.type !== 'url' || n.value !== want) throw new CsrError(`the CSR asks for ${n.type}:${n.value}, not ${want}`);
  }
  const pub = await csr.publicKey.export(EC_KEY, ['verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: '', // the identity is the URI SAN (marked critical, as RFC 5280 requires with an empty subject)
    issuer: issuer.cert.subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: pub,
    signingKey: issuer.key,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: want }], true),
      await x509.SubjectKeyIdentifierExtension.create(pub),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
    ],
  });
  return pemOf(cert);
}

/** A CSR the service refuses (its requester's fault, reported back as such). */
export class CsrError extends Error {}
