// A TLS server's certificate for tests, signed by a trust anchor made with src/identity/x509.ts
// (createTrustAnchor): what a test needs to serve HTTPS that clients check against the CA's PEM
// (the stand-in API server's ca.crt). The mesh itself never issues one, so it lives here.
import { importKey, keyPem, newKeys, pemOf, serial, SIGNING, type CertAndKey } from '../../src/identity/x509.ts';
// After x509.ts: it loads reflect-metadata, which @peculiar/x509 needs first, and sets its crypto provider.
import * as x509 from '@peculiar/x509';

/** A certificate for these IP addresses (the first is its CN), signed by `ca`. */
export async function issueServingCertificate(ca: CertAndKey, o: { ips: string[]; notBefore: Date; notAfter: Date }): Promise<CertAndKey> {
  const root = new x509.X509Certificate(ca.certPem);
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${o.ips[0]}`,
    issuer: root.subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: keys.publicKey,
    signingKey: await importKey(ca.keyPem, 'CA key'),
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(o.ips.map((value) => ({ type: 'ip' as const, value }))),
      await x509.AuthorityKeyIdentifierExtension.create(root),
    ],
  });
  return { certPem: pemOf(cert), keyPem: await keyPem(keys.privateKey) };
}
