// The identity service against the stand-in API server (real TokenReview and pod lists over
// HTTP) and the agent's client over real TLS 1.3: a token bound to a node gets certificates for
// the ServiceAccounts of that node's pods, lifetimes and the 30 s backdating as configured;
// everything else is refused with the reason; the client talks only to the real service. With a
// review the test holds (an injected IdentityKube): the review gate's bound per peer address
// (peers 127.0.0.2 and 127.0.0.3 on loopback), and the agent's client asking at most that many.
import test from 'ava';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { createIssuer, createTrustAnchor, loadIssuer, createCsr } from '../src/identity/x509.ts';
import { IdentityService, type IdentityKube } from '../src/identity/service.ts';
import { kubeIdentity } from '../src/identity/kube.ts';
import { httpsCertifyClient } from '../src/identity/client.ts';
import { NODE_NAME_EXTRA, type ReviewStatus } from '../src/identity/authorize.ts';
import { CERTIFY_PATH } from '../src/identity/api.ts';
import { spiffeId, workloadId, type WorkloadId } from '../src/identity/spiffe.ts';
import { podObject } from './helpers/kube-objects.ts';
import { waitFor } from './helpers/until.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const TD = 'cluster.local';
const HOUR = 3_600_000;

async function setUp(t: any, lifetimeMs = 2 * 60_000, kube?: IdentityKube, clock?: () => number) {
  const now = Date.now();
  const anchor = await createTrustAnchor({ trustDomain: TD, notBefore: new Date(now - 60_000), notAfter: new Date(now + 24 * HOUR) });
  const iss = await createIssuer(anchor, { trustDomain: TD, notBefore: new Date(now - 60_000), notAfter: new Date(now + 12 * HOUR) });
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: [{ name: 'sim', server: api.url, skipTLSVerify: true }], users: [{ name: 'sim', token: 'sim' }], contexts: [{ name: 'sim', cluster: 'sim', user: 'sim' }], currentContext: 'sim' });
  const logs: string[] = [];
  const service = new IdentityService({
    issuer: await loadIssuer(iss.certPem, iss.keyPem, anchor.certPem),
    trustDomain: TD,
    kube: kube ?? kubeIdentity(kc),
    agent: { namespace: 'mesh-agent', name: 'mesh-agent' },
    self: workloadId(TD, 'mesh-agent', 'mesh-agent-identity'),
    lifetimeMs,
    log: (_l, msg, f) => logs.push(`${msg} ${JSON.stringify(f)}`),
    ...(clock ? { now: clock } : {}),
  });
  const addr = await service.listen('127.0.0.1', 0);
  t.teardown(() => service.close());
  const dir = testTempDir(t);
  const client = (token: string, serverId = workloadId(TD, 'mesh-agent', 'mesh-agent-identity'), anchors = anchor.certPem) => {
    const tokenFile = path.join(dir, `token-${Math.random()}`);
    fs.writeFileSync(tokenFile, token);
    return httpsCertifyClient({ addr: `127.0.0.1:${addr.port}`, anchorsPem: anchors, serverId, tokenFile });
  };
  const agentToken = (node: string, o: { audiences?: string[]; sa?: string } = {}) =>
    api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: o.sa ?? 'mesh-agent', node, audiences: o.audiences ?? ['mesh-agent-identity'] });
  const pod = (name: string, ns: string, sa: string, node: string) => {
    const o = podObject({ name, namespace: ns, nodeName: node, ip: '10.1.0.5' });
    o.spec.serviceAccountName = sa;
    api.create(o);
  };
  return { anchor, iss, api, service, client, agentToken, pod, logs, port: addr.port };
}

const ask = async (c: { certify(id: WorkloadId, csr: string): Promise<unknown> }, id: WorkloadId) => c.certify(id, (await createCsr(id)).csrPem);

test('an agent\'s node-bound token gets a certificate for a ServiceAccount of its node: SPIFFE ID, lifetime, backdated 30 s, chained to the anchor', async (t) => {
  const s = await setUp(t, 2 * 60_000);
  s.pod('web-1', 'shop', 'web', 'node-1');
  const id = workloadId(TD, 'shop', 'web');
  const before = Date.now();
  const r = await s.client(s.agentToken('node-1')).certify(id, (await createCsr(id)).csrPem);
  const after = Date.now();
  const c = new X509Certificate(r.certificate);
  t.is(c.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/web');
  t.true(c.checkIssued(new X509Certificate(r.chain[0]!)));
  const notBefore = Date.parse(c.validFrom);
  const notAfter = Date.parse(c.validTo);
  // Issued between before and after (however long a loaded machine took); X.509 times have whole seconds.
  t.true(notBefore >= before - 31_000 && notBefore <= after - 30_000, `validFrom ${c.validFrom}, asked ${new Date(before).toISOString()}-${new Date(after).toISOString()}`);
  t.true(notAfter >= before + 2 * 60_000 - 1000 && notAfter <= after + 2 * 60_000, `validTo ${c.validTo}, asked ${new Date(before).toISOString()}-${new Date(after).toISOString()}`);
  t.is(r.notAfter, new Date(Date.parse(r.notAfter)).toISOString());
  t.is(c.serialNumber, r.serial.toUpperCase());
  t.is(s.service.stats.issued, 1);
});

test('once its issuer has expired the service refuses (503, naming the issuer\'s end) rather than issue a certificate that ends before it starts', async (t) => {
  // The service's clock, moved past the issuer's end (12 h) once it is serving.
  let skew = 0;
  const s = await setUp(t, 2 * 60_000, undefined, () => Date.now() + skew);
  s.pod('web-1', 'shop', 'web', 'node-1');
  const c = s.client(s.agentToken('node-1'));
  await t.notThrowsAsync(ask(c, workloadId(TD, 'shop', 'web')));
  skew = 13 * HOUR;
  const err = await t.throwsAsync(ask(c, workloadId(TD, 'shop', 'web')));
  t.regex(err?.message ?? '', /refused \(503\): the issuer certificate \(or the trust anchor above it\) expired at .*; issue a new one/);
  t.like(s.service.stats, { issued: 1, refused: { unavailable: 1 } });
});

test('an issuer that ends sooner than the certificate lifetime: certificates cut to its end, and the service says to rotate it (status and a log line at start and at most every 10 minutes)', async (t) => {
  let skew = 0;
  // The issuer ends in 12 h, the lifetime is 24 h.
  const s = await setUp(t, 24 * HOUR, undefined, () => Date.now() + skew);
  s.pod('web-1', 'shop', 'web', 'node-1');
  const c = s.client(s.agentToken('node-1'));
  const warned = () => s.logs.filter((l) => l.includes('rotate the issuer'));
  t.is(warned().length, 1, `said at start: ${s.logs.join(' | ')}`);
  t.regex(warned()[0]!, /the issuer certificate ends at .* \(in 1[12] h \d+ min\), sooner than the certificate lifetime \(24 h\): certificates are cut to its end and agents renew them more often \(at most once a minute each\); rotate the issuer now \(docs\/identity\.md, rotating the issuer\)/);
  const r = await ask(c, workloadId(TD, 'shop', 'web')) as { notAfter: string };
  await ask(c, workloadId(TD, 'shop', 'web'));
  t.is(r.notAfter, s.service.stats.issuerNotAfter, 'cut to the issuer\'s end');
  t.is(warned().length, 1, 'not at each certificate');
  t.regex(s.service.state().issuerWarning ?? '', /sooner than the certificate lifetime \(24 h\)/);
  skew = 11 * 60_000;
  await ask(c, workloadId(TD, 'shop', 'web'));
  t.is(warned().length, 2, 'again after 10 minutes');
});

test('an issuer within 30 days of its end is named in status; one far from it is not', async (t) => {
  let skew = 0;
  const s = await setUp(t, 2 * 60_000, undefined, () => Date.now() + skew);
  t.regex(s.service.state().issuerWarning ?? '', /^the issuer certificate ends at .* \(in 1[12] h \d+ min\); rotate it before then \(docs\/identity\.md, rotating the issuer\)$/);
  skew = 13 * HOUR;
  t.regex(s.service.state().issuerWarning ?? '', /^the issuer certificate expired at .*: no certificate can be issued under it; issue a new one/);
  const { issuerWarning } = await import('../src/identity/service.ts');
  t.is(issuerWarning(new Date(Date.now() + 31 * 24 * HOUR), 24 * HOUR, Date.now()), null);
  t.regex(issuerWarning(new Date(Date.now() + 3 * 24 * HOUR), 24 * HOUR, Date.now()) ?? '', /\(in 3 days\); rotate it before then/);
});

test('a certificate lifetime over 49.7 days does not make the service renew its own certificate every millisecond', async (t) => {
  const overflows: string[] = [];
  const onWarning = (w: Error) => void (w.name === 'TimeoutOverflowWarning' && overflows.push(w.message));
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  const s = await setUp(t, 60 * 24 * HOUR);
  const serving = () => new Promise<string>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port: s.port, rejectUnauthorized: false }, () => {
      resolve(c.getPeerX509Certificate()!.serialNumber);
      c.destroy();
    });
    c.on('error', reject);
  });
  // Node warns (on the next tick) of each delay it cuts to 1 ms: the loop's first round says so.
  const first = await serving();
  t.deepEqual(overflows, []);
  t.is(await serving(), first, 'the serving certificate is the one made at start');
});

test('a CSR for a ServiceAccount with no pod on the caller\'s node is refused, naming the node', async (t) => {
  const s = await setUp(t);
  s.pod('web-1', 'shop', 'web', 'node-2');
  s.pod('db-1', 'shop', 'db', 'node-1');
  const c = s.client(s.agentToken('node-1'));
  await t.throwsAsync(ask(c, workloadId(TD, 'shop', 'web')), { message: /refused \(403\): no running pod of ServiceAccount shop\/web on node node-1; an agent gets certificates only for the workloads of its own node/ });
  const finished = podObject({ name: 'web-2', namespace: 'shop', nodeName: 'node-1', ip: '10.1.0.9' });
  finished.spec.serviceAccountName = 'web';
  finished.status.phase = 'Succeeded';
  s.api.create(finished);
  await t.throwsAsync(ask(c, workloadId(TD, 'shop', 'web')), { message: /no running pod of ServiceAccount shop\/web on node node-1/ }, 'a finished pod does not count');
  await t.notThrowsAsync(ask(c, workloadId(TD, 'shop', 'db')));
  t.like(s.service.stats, { issued: 1, refused: { forbidden: 2 } });
  t.true(s.logs.some((l) => l.includes('certificate request refused') && l.includes('node-1')));
});

test('bad tokens are refused with the reason: forged, another ServiceAccount\'s, another audience, not bound to a node, none', async (t) => {
  const s = await setUp(t);
  s.pod('web-1', 'shop', 'web', 'node-1');
  const id = workloadId(TD, 'shop', 'web');
  const good = s.agentToken('node-1');
  const forged = `${good.slice(0, -4)}AAAA`;
  await t.throwsAsync(ask(s.client(forged), id), { message: /refused \(401\): the token was not accepted by the API server's TokenReview: invalid bearer token/ });
  await t.throwsAsync(ask(s.client(s.agentToken('node-1', { sa: 'default' })), id), { message: /refused \(403\): the token is system:serviceaccount:mesh-agent:default, not the agent's ServiceAccount/ });
  await t.throwsAsync(ask(s.client(s.agentToken('node-1', { audiences: ['something-else'] })), id), { message: /refused \(401\).*invalid for the target audiences \["mesh-agent-identity"\]/ });
  const unbound = s.api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent', audiences: ['mesh-agent-identity'] });
  await t.throwsAsync(ask(s.client(unbound), id), { message: /refused \(403\): the token is not bound to a node/ });
  await t.throwsAsync(ask(s.client(''), id), { message: /refused \(401\): no bearer token/ });
  await t.throwsAsync(ask(s.client(good), workloadId('other.domain', 'shop', 'web')), { message: /refused \(403\): identity spiffe:\/\/other\.domain\/ns\/shop\/sa\/web is not in this mesh's trust domain/ });
  t.is(s.service.stats.issued, 0);
});

test('the client sends its token only to the identity service: another SPIFFE ID or another anchor is refused before the request', async (t) => {
  const s = await setUp(t);
  s.pod('web-1', 'shop', 'web', 'node-1');
  const id = workloadId(TD, 'shop', 'web');
  const reviews = s.api.tokens.reviews;
  await t.throwsAsync(ask(s.client(s.agentToken('node-1'), workloadId(TD, 'mesh-agent', 'someone-else')), id), { message: /is spiffe:\/\/cluster\.local\/ns\/mesh-agent\/sa\/mesh-agent-identity, not the identity service \(spiffe:\/\/cluster\.local\/ns\/mesh-agent\/sa\/someone-else\)/ });
  const other = await createTrustAnchor({ trustDomain: TD, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + HOUR) });
  await t.throwsAsync(ask(s.client(s.agentToken('node-1'), undefined, other.certPem), id), { message: /unable to get|UNABLE_TO|self.signed|certificate/i });
  t.is(s.api.tokens.reviews, reviews, 'no token reached the service');
});

test('a token that is no JWT is refused (401) naming why, without asking the API server', async (t) => {
  const s = await setUp(t);
  s.pod('web-1', 'shop', 'web', 'node-1');
  for (const token of ['made-up', 'a.b.c', 'a.b']) {
    await t.throwsAsync(ask(s.client(token), workloadId(TD, 'shop', 'web')), { message: /refused \(401\): the bearer token is not a JWT \((its first part is not a JSON object|not three base64url parts joined by dots)\), so it is no ServiceAccount token and the API server was not asked: send the agent's projected ServiceAccount token \(audience mesh-agent-identity\)/ }, token);
  }
  t.is(s.api.tokens.reviews, 0);
  t.like(s.service.stats.refused, { unauthenticated: 3 });
});

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims: object) => `${b64({ alg: 'RS256' })}.${b64(claims)}.c2lnbmF0dXJl`;
const agentReview: ReviewStatus = { authenticated: true, user: { username: 'system:serviceaccount:mesh-agent:mesh-agent', extra: { [NODE_NAME_EXTRA]: ['node-1'] } }, audiences: ['mesh-agent-identity'] };

/** The API server as the test answers it: each review waits until answered; node-1 runs web0..web5 of shop. */
function heldKube() {
  const reviews: Array<(st: ReviewStatus) => void> = [];
  const kube: IdentityKube = {
    reviewToken: () => new Promise((answer) => reviews.push(answer)),
    podsOnNode: async () => [0, 1, 2, 3, 4, 5].map((i) => ({ namespace: 'shop', name: `web${i}-1`, serviceAccount: `web${i}`, phase: 'Running' })),
  };
  return { kube, reviews };
}

test('the review gate: the 5th request in flight from one peer address is 503 with retry-after at once, not reviewed; another peer is; logged once per peer and cause, all counted', async (t) => {
  const { kube, reviews } = heldKube();
  const s = await setUp(t, 2 * 60_000, kube);
  const id = workloadId(TD, 'shop', 'web0');
  const body = JSON.stringify({ identity: spiffeId(id), csr: (await createCsr(id)).csrPem });
  /** A certify request from `local` (a loopback address), checked against the anchor only: the test needs the peer, not the client. */
  const post = (local: string, token: string) => new Promise<{ status: number; retryAfter: string | undefined; error?: string }>((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: s.port, localAddress: local, agent: false, method: 'POST', path: CERTIFY_PATH, ca: s.anchor.certPem, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], error: JSON.parse(text).error }));
    });
    req.on('error', reject);
    req.end(body);
  });
  const held = [1, 2, 3, 4].map((n) => post('127.0.0.2', jwt({ n })));
  await waitFor(() => reviews.length === 4, 10_000);
  for (const n of [5, 6]) {
    const busy = await post('127.0.0.2', jwt({ n }));
    t.is(busy.status, 503);
    t.is(busy.retryAfter, '1');
    t.regex(busy.error ?? '', /^the identity service is reviewing too many tokens now \(4 token reviews for 127\.0\.0\.2 are under way, at most 4 per peer address\); not reviewed, retry after 1 s/);
  }
  t.is(reviews.length, 4, 'the API server was not asked for the 5th and 6th');
  const other = post('127.0.0.3', jwt({ n: 7 }));
  await waitFor(() => reviews.length === 5, 10_000);
  for (const answer of reviews) answer(agentReview);
  t.deepEqual((await Promise.all([...held, other])).map((r) => r.status), [200, 200, 200, 200, 200]);
  t.like(s.service.state(), { issued: 5, refused: { busy: 2 }, reviewGate: { inFlight: 0, peersInFlight: 0, trustedPeers: 2, busy: { peer: 2, overall: 0 } } });
  const lines = s.logs.filter((l) => l.startsWith('certificate request refused'));
  t.is(lines.length, 1, `two refusals from one peer and cause, one line: ${lines.join(' | ')}`);
  t.true(lines[0]!.includes('"from":"127.0.0.2"') && lines[0]!.includes('"status":503'), lines[0]);
});

test('the agent\'s client asks at most 4 at once (the bound per peer address): 6 new ServiceAccounts at once wait their turn and are all issued, none refused', async (t) => {
  const { kube, reviews } = heldKube();
  const s = await setUp(t, 2 * 60_000, kube);
  const c = s.client(jwt({ agent: 'node-1' }));
  const ids = [0, 1, 2, 3, 4, 5].map((i) => workloadId(TD, 'shop', `web${i}`));
  const csrs = await Promise.all(ids.map((id) => createCsr(id)));
  const all = Promise.allSettled(ids.map((id, i) => c.certify(id, csrs[i]!.csrPem)));
  await waitFor(() => reviews.length === 4 && c.queued === 2, 10_000);
  for (let i = 0; i < 6; i++) {
    await waitFor(() => reviews.length > i, 10_000);
    t.true(s.service.state().reviewGate.inFlight <= 4);
    reviews[i]!(agentReview);
  }
  const results = await all;
  t.deepEqual(results.map((r) => (r.status === 'rejected' ? String(r.reason) : r.status)), Array(6).fill('fulfilled'));
  t.is(c.queued, 0);
  t.is(s.service.stats.issued, 6);
  t.false('busy' in s.service.stats.refused, 'none refused by the bound');
});

test('an API server whose TokenReview accepts the token without status.audiences (an authenticator that is not audience-aware): refused (401), logged with the reason, no certificate', async (t) => {
  const kube: IdentityKube = {
    reviewToken: async () => ({ ...agentReview, audiences: undefined }),
    podsOnNode: async () => [{ namespace: 'shop', name: 'web0-1', serviceAccount: 'web0', phase: 'Running' }],
  };
  const s = await setUp(t, 2 * 60_000, kube);
  await t.throwsAsync(ask(s.client(jwt({ agent: 'node-1' })), workloadId(TD, 'shop', 'web0')), { message: /refused \(401\): the API server's TokenReview accepted the token without saying it is for audience mesh-agent-identity \(no status\.audiences\)/ });
  t.is(s.service.stats.issued, 0);
  t.like(s.service.stats.refused, { unauthenticated: 1 });
  t.true(s.logs.some((l) => l.startsWith('certificate request refused') && l.includes('not audience-aware')), s.logs.join('\n'));
});

test('an identity service address that is an IP literal (v4 or v6) sends no SNI (RFC 6066 forbids IP literals there; Node warns DEP0123) and the certificate comes', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const now = Date.now();
  const anchor = await createTrustAnchor({ trustDomain: TD, notBefore: new Date(now - 60_000), notAfter: new Date(now + 24 * HOUR) });
  const iss = await createIssuer(anchor, { trustDomain: TD, notBefore: new Date(now - 60_000), notAfter: new Date(now + 12 * HOUR) });
  const dir = testTempDir(t);
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, jwt({ agent: 'node-1' }));
  const kube: IdentityKube = {
    reviewToken: async () => agentReview,
    podsOnNode: async () => [{ namespace: 'shop', name: 'web0-1', serviceAccount: 'web0', phase: 'Running' }],
  };
  const self = workloadId(TD, 'mesh-agent', 'mesh-agent-identity');
  for (const [host, addr] of [['::1', '[::1]'], ['127.0.0.1', '127.0.0.1']] as const) {
    const service = new IdentityService({ issuer: await loadIssuer(iss.certPem, iss.keyPem, anchor.certPem), trustDomain: TD, kube, agent: { namespace: 'mesh-agent', name: 'mesh-agent' }, self, log: () => {} });
    t.teardown(() => service.close());
    const { port } = await service.listen(host, 0);
    const sni: Array<string | false> = [];
    (service as unknown as { server: tls.Server }).server.on('secureConnection', (s: tls.TLSSocket) => sni.push((s as tls.TLSSocket & { servername: string | false }).servername));
    const c = httpsCertifyClient({ addr: `${addr}:${port}`, anchorsPem: anchor.certPem, serverId: self, tokenFile });
    const r = await ask(c, workloadId(TD, 'shop', 'web0')) as { certificate: string };
    t.is(new X509Certificate(r.certificate).subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/web0', host);
    t.deepEqual(sni, [false], `${host}: the ClientHello had no server name`);
  }
  // A warning is emitted on a later tick: one more round trip through the event loop lets it land.
  await new Promise((r) => setImmediate(r));
  t.deepEqual(warnings.filter((w) => w.startsWith('DEP0123')), []);
});
