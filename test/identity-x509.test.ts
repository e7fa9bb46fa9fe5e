// Identity's pure parts and its certificates: SPIFFE IDs and the URI SAN check node:tls leaves
// to us (CVE-2021-44531), the chain install makes (anchor -> issuer -> workload leaf) working in
// a real TLS 1.3 handshake, and the CSR and issuer checks, each refusal naming its reason.
import test from 'ava';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createCsr, createIssuer, createTrustAnchor, CsrError, loadIssuer, signWorkloadCsr, splitPem } from '../src/identity/x509.ts';
import { parseSpiffeId, peerIdentity, serverNameOf, spiffeId, uriSans, workloadId } from '../src/identity/spiffe.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const now = Date.now();
const day = 86_400_000;
const span = (fromMs: number, toMs: number) => ({ notBefore: new Date(now + fromMs), notAfter: new Date(now + toMs) });

test('SPIFFE IDs: ztunnel\'s form, parsed back; anything else is not one', (t) => {
  const id = workloadId('cluster.local', 'shop', 'web');
  t.is(spiffeId(id), 'spiffe://cluster.local/ns/shop/sa/web');
  t.deepEqual(parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web'), id);
  t.deepEqual(parseSpiffeId('spiffe://example.org/ns/a-b/sa/web.v2'), { trustDomain: 'example.org', namespace: 'a-b', serviceAccount: 'web.v2' });
  for (const bad of ['spiffe://cluster.local/ns/shop/sa/web/x', 'https://cluster.local/ns/shop/sa/web', 'spiffe://Cluster.local/ns/shop/sa/web',
    'spiffe://cluster.local/ns/Shop/sa/web', 'spiffe://cluster.local/sa/web/ns/shop', 'spiffe://cluster.local/ns/shop/sa/web?x=1', 'spiffe:///ns/a/sa/b']) {
    t.is(parseSpiffeId(bad), null, bad);
  }
  t.throws(() => workloadId('cluster.local', 'Shop', 'web'), { message: /namespace "Shop" is not a Kubernetes namespace name/ });
  t.throws(() => workloadId('a..b', 'shop', 'web'), { message: /trust domain "a\.\.b" is not a DNS-like name/ });
});

test('server names: Linkerd\'s DNS form, a hash when a long ServiceAccount would overflow a label', (t) => {
  t.is(serverNameOf(workloadId('cluster.local', 'shop', 'web')), 'web.shop.serviceaccount.identity.mesh-agent.cluster.local');
  const long = serverNameOf(workloadId('cluster.local', 'shop', 'a'.repeat(70)));
  t.regex(long, /^id-[0-9a-f]{40}\.identity\.mesh-agent$/);
  t.not(long, serverNameOf(workloadId('cluster.local', 'shop', 'b'.repeat(70))));
});

test('URI SANs as Node prints them, JSON-quoted values included; ambiguous text is unreadable', (t) => {
  t.deepEqual(uriSans('URI:spiffe://cluster.local/ns/a/sa/b'), ['spiffe://cluster.local/ns/a/sa/b']);
  t.deepEqual(uriSans('DNS:x.example, URI:spiffe://td/ns/a/sa/b, IP Address:10.0.0.1'), ['spiffe://td/ns/a/sa/b']);
  // A comma inside a value: Node quotes it, so it cannot pose as a second entry.
  t.deepEqual(uriSans('URI:"spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/x/sa/y"'), ['spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/x/sa/y']);
  t.deepEqual(uriSans(undefined), []);
  t.is(uriSans('URI:"unterminated'), null);
  t.is(uriSans('garbage'), null);
});

test('peer identity: one SPIFFE URI SAN in our trust domain, else the reason', (t) => {
  const ok = peerIdentity('URI:spiffe://cluster.local/ns/shop/sa/web', 'cluster.local');
  t.true(ok.ok);
  const cases: Array<[string | undefined, RegExp]> = [
    [undefined, /no URI SAN/],
    ['DNS:web.shop', /no URI SAN/],
    ['URI:spiffe://cluster.local/ns/a/sa/b, URI:spiffe://cluster.local/ns/c/sa/d', /2 URI SANs/],
    ['URI:spiffe://cluster.local/web', /not a SPIFFE ID of the form/],
    ['URI:spiffe://other.domain/ns/shop/sa/web', /trust domain other\.domain is not this mesh's \(cluster\.local\)/],
  ];
  for (const [san, re] of cases) {
    const r = peerIdentity(san, 'cluster.local');
    t.false(r.ok, String(san));
    if (!r.ok) t.regex(r.reason, re);
  }
});

async function chain() {
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', ...span(-60_000, 365 * day) });
  const iss = await createIssuer(anchor, { trustDomain: 'cluster.local', ...span(-60_000, 30 * day) });
  const issuer = await loadIssuer(iss.certPem, iss.keyPem, anchor.certPem);
  return { anchor, iss, issuer };
}

/** A TLS 1.3 handshake between two workload certificates, both sides verifying against the anchor. */
async function handshake(server: { key: string; cert: string }, client: { key: string; cert: string }, ca: string) {
  const srv = tls.createServer({ ...server, ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const serverSide = once(srv, 'secureConnection') as Promise<[tls.TLSSocket]>;
  const c = tls.connect({ port: (srv.address() as AddressInfo).port, host: '127.0.0.1', servername: 'x.example', ...client, ca, rejectUnauthorized: false, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
  await once(c, 'secureConnect');
  const [s] = await serverSide;
  const out = {
    protocol: c.getProtocol(),
    clientSees: { authorized: c.authorized, san: c.getPeerCertificate().subjectaltname },
    serverSees: { authorized: s.authorized, error: s.authorizationError ? String(s.authorizationError) : null, san: s.getPeerCertificate().subjectaltname },
  };
  c.destroy();
  s.destroy();
  srv.close();
  return out;
}

test('anchor -> issuer -> workload: a TLS 1.3 handshake where each side verifies the other and reads its SPIFFE ID', async (t) => {
  const { anchor, iss, issuer } = await chain();
  const web = workloadId('cluster.local', 'shop', 'web');
  const db = workloadId('cluster.local', 'shop', 'db');
  const issue = async (id: typeof web) => {
    const { keyPem, csrPem } = await createCsr(id);
    const cert = await signWorkloadCsr(issuer, csrPem, { id, ...span(-30_000, day) });
    return { key: keyPem, cert: cert + iss.certPem };
  };
  const r = await handshake(await issue(db), await issue(web), anchor.certPem);
  t.is(r.protocol, 'TLSv1.3');
  t.true(r.clientSees.authorized);
  t.true(r.serverSees.authorized, String(r.serverSees.error));
  t.is(r.clientSees.san, 'URI:spiffe://cluster.local/ns/shop/sa/db');
  t.is(r.serverSees.san, 'URI:spiffe://cluster.local/ns/shop/sa/web');
  const leaf = new X509Certificate(splitPem((await issue(web)).cert)[0]!);
  t.is(leaf.subject, '', 'the identity is the URI SAN alone');
  t.true(leaf.checkIssued(new X509Certificate(iss.certPem)));
});

test('a self-signed certificate with the right SPIFFE ID does not verify against the anchor', async (t) => {
  const { anchor, iss, issuer } = await chain();
  const web = workloadId('cluster.local', 'shop', 'web');
  const good = await createCsr(web);
  const server = { key: good.keyPem, cert: (await signWorkloadCsr(issuer, good.csrPem, { id: web, ...span(-30_000, day) })) + iss.certPem };
  // A forger's own root and issuer, same names and SPIFFE ID.
  const fake = await chain();
  const forged = await createCsr(web);
  const client = { key: forged.keyPem, cert: (await signWorkloadCsr(fake.issuer, forged.csrPem, { id: web, ...span(-30_000, day) })) + fake.iss.certPem };
  const r = await handshake(server, client, anchor.certPem);
  t.false(r.serverSees.authorized);
  t.is(r.serverSees.san, 'URI:spiffe://cluster.local/ns/shop/sa/web', 'it claims the right identity');
  t.regex(r.serverSees.error!, /UNABLE_TO_GET_ISSUER_CERT|unable to get|certificate signature failure|self.signed/i);
});

test('an expired certificate does not verify', async (t) => {
  const { anchor, iss, issuer } = await chain();
  const web = workloadId('cluster.local', 'shop', 'web');
  const a = await createCsr(web);
  const server = { key: a.keyPem, cert: (await signWorkloadCsr(issuer, a.csrPem, { id: web, ...span(-30_000, day) })) + iss.certPem };
  const b = await createCsr(web);
  const client = { key: b.keyPem, cert: (await signWorkloadCsr(issuer, b.csrPem, { id: web, ...span(-2 * day, -day) })) + iss.certPem };
  const r = await handshake(server, client, anchor.certPem);
  t.false(r.serverSees.authorized);
  t.regex(r.serverSees.error!, /CERT_HAS_EXPIRED|expired/i);
});

test('CSRs: one signed by another key, or asking for another identity, is refused with the reason', async (t) => {
  const { issuer } = await chain();
  const web = workloadId('cluster.local', 'shop', 'web');
  const db = workloadId('cluster.local', 'shop', 'db');
  const { csrPem } = await createCsr(db);
  await t.throwsAsync(signWorkloadCsr(issuer, csrPem, { id: web, ...span(0, day) }), { instanceOf: CsrError, message: /the CSR asks for url:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db, not spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/ });
  // Flip a byte of the signature (the last bytes of the DER): the requester does not hold the key.
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 3]! ^= 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await t.throwsAsync(signWorkloadCsr(issuer, tampered, { id: web, ...span(0, day) }), { instanceOf: CsrError, message: /signature does not verify|not a PEM PKCS#10/ });
  await t.throwsAsync(signWorkloadCsr(issuer, 'hello', { id: web, ...span(0, day) }), { instanceOf: CsrError, message: /not a PEM PKCS#10 request/ });
});

test('the issuer is checked at load: a CA, its own key, signed by an anchor, valid now', async (t) => {
  const { anchor, iss } = await chain();
  const other = await chain();
  await t.throwsAsync(loadIssuer(iss.certPem, other.iss.keyPem, anchor.certPem), { message: /issuer key: it is not the key of the issuer certificate/ });
  await t.throwsAsync(loadIssuer(iss.certPem, iss.keyPem, other.anchor.certPem), { message: /not signed by any of the trust anchors/ });
  await t.throwsAsync(loadIssuer(iss.certPem, 'nope', anchor.certPem), { message: /issuer key: not a PEM private key/ });
  const old = await createIssuer(anchor, { trustDomain: 'cluster.local', ...span(-2 * day, -day) });
  await t.throwsAsync(loadIssuer(old.certPem, old.keyPem, anchor.certPem), { message: /not valid now/ });
  // A workload certificate is no issuer.
  const { issuer } = await chain();
  const c = await createCsr(workloadId('cluster.local', 'a', 'b'));
  const leaf = await signWorkloadCsr(issuer, c.csrPem, { id: workloadId('cluster.local', 'a', 'b'), ...span(0, day) });
  await t.throwsAsync(loadIssuer(leaf, c.keyPem, anchor.certPem), { message: /not a CA/ });
  // Both anchors of a bundle count (rotation: old and new root side by side).
  await t.notThrowsAsync(loadIssuer(iss.certPem, iss.keyPem, other.anchor.certPem + anchor.certPem));
});

test('a CSR with a key WebCrypto does not know (Ed448, secp256k1) is the requester\'s fault: CsrError (400) naming the key, not a service failure (503)', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const path = await import('node:path');
  const { issuer } = await chain();
  const web = workloadId('cluster.local', 'shop', 'web');
  const dir = testTempDir(t);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  openssl('genpkey', '-algorithm', 'ed448', '-out', path.join(dir, 'ed448.key'));
  openssl('ecparam', '-name', 'secp256k1', '-genkey', '-noout', '-out', path.join(dir, 'k1.key'));
  for (const [key, re] of [['ed448.key', /the CSR's key is ed448;/], ['k1.key', /the CSR's key is ec secp256k1;/]] as const) {
    const csr = openssl('req', '-new', '-key', path.join(dir, key), '-subj', '/CN=web.shop');
    const e = await t.throwsAsync(signWorkloadCsr(issuer, csr, { id: web, ...span(0, day) }), { instanceOf: CsrError }, key);
    t.regex(e?.message ?? '', /workload keys are ECDSA P-256/, key);
    t.regex(e?.message ?? '', re, key);
  }
});

test('the issuer\'s anchor counts at load: an expired anchor is refused; an issuer outliving its anchor issues up to the anchor\'s end only', async (t) => {
  const expired = await createTrustAnchor({ trustDomain: 'cluster.local', ...span(-2 * day, -day) });
  const under = await createIssuer(expired, { trustDomain: 'cluster.local', ...span(-60_000, 30 * day) });
  await t.throwsAsync(loadIssuer(under.certPem, under.keyPem, expired.certPem), { message: /trust anchor CN=root\.identity\.mesh-agent\.cluster\.local .*expired at .*; install a new anchor/ });
  const short = await createTrustAnchor({ trustDomain: 'cluster.local', ...span(-60_000, day) });
  const long = await createIssuer(short, { trustDomain: 'cluster.local', ...span(-60_000, 30 * day) });
  const issuer = await loadIssuer(long.certPem, long.keyPem, short.certPem);
  t.is(issuer.notAfter.getTime(), new X509Certificate(short.certPem).validToDate.getTime(), 'no certificate past the anchor\'s end: none would verify');
});

test('the agent\'s CSR (its own DER, no X.509 library) is what OpenSSL and the library read: P-256, ecdsa-with-SHA256, the SPIFFE ID as URI SAN, a valid self-signature', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = testTempDir(t);
  const id = workloadId('cluster.local', 'shop', 'web.v2');
  const { csrPem, keyPem } = await createCsr(id);
  fs.writeFileSync(path.join(dir, 'csr.pem'), csrPem);
  const text = execFileSync('openssl', ['req', '-in', path.join(dir, 'csr.pem'), '-noout', '-verify', '-text'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.regex(text, /Subject: CN ?= ?web\.v2\.shop/);
  t.regex(text, /ASN1 OID: prime256v1/);
  t.regex(text, /Signature Algorithm: ecdsa-with-SHA256/);
  t.regex(text, /X509v3 Subject Alternative Name:\s*\n\s*URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\.v2/);
  t.true(keyPem.startsWith('-----BEGIN PRIVATE KEY-----'), 'PKCS#8, as node:tls takes it');
  // The library parses and verifies it, and a certificate for it fits the key.
  const { issuer } = await chain();
  const cert = new X509Certificate(await signWorkloadCsr(issuer, csrPem, { id, ...span(0, day) }));
  t.true(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(keyPem)));
});
