// The agent's CSRs (docs/identity.md): a new ECDSA P-256 key and a PKCS#10 request for one
// workload identity, with node:crypto for the key and the signature and a few lines of DER for
// the fixed structure. The agent does not load @peculiar/x509 for this: in every agent it cost
// about 15 MB of RSS; the identity service reads and verifies these CSRs with that library, and
// the tests check them with it and with OpenSSL.
import { generateKeyPairSync, sign } from 'node:crypto';
import { spiffeId, type WorkloadId } from './spiffe.ts';

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One DER element: tag, length, contents. */
function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

const seq = (...p: Buffer[]) => der(0x30, ...p);
const set = (...p: Buffer[]) => der(0x31, ...p);

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const n of rest) {
    const groups = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) groups.unshift(0x80 | (v & 0x7f));
    out.push(...groups);
  }
  return der(0x06, Buffer.from(out));
}

const OID = {
  commonName: '2.5.4.3',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
};

function pem(label: string, body: Buffer): string {
  const b64 = body.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** A new key and a CSR for the identity: subject CN=<sa>.<ns>, the SPIFFE ID as the one URI SAN. */
export function createCsr(id: WorkloadId): { keyPem: string; csrPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const subject = seq(set(seq(oid(OID.commonName), der(0x0c, Buffer.from(`${id.serviceAccount}.${id.namespace}`)))));
  // GeneralNames with one uniformResourceIdentifier ([6] IMPLICIT IA5String).
  const san = seq(der(0x86, Buffer.from(spiffeId(id), 'ascii')));
  const extensions = seq(seq(oid(OID.subjectAltName), der(0x04, san)));
  // attributes [0] IMPLICIT SET OF Attribute: one extensionRequest.
  const attributes = der(0xa0, seq(oid(OID.extensionRequest), set(extensions)));
  const info = seq(der(0x02, Buffer.from([0])), subject, spki, attributes);
  const signature = sign('sha256', info, privateKey); // DER Ecdsa-Sig-Value, as ecdsa-with-SHA256 wants
  const csr = seq(info, seq(oid(OID.ecdsaWithSha256)), der(0x03, Buffer.from([0]), signature));
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, csrPem: pem('CERTIFICATE REQUEST', csr) };
}
