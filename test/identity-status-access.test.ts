// --status-access loopback (docs/identity.md "Who can read its status"), with real sockets: the
// identity service runs in a node network namespace of its own, listening on every address, and
// a pod namespace routed to it over a veth reaches it on the node IP, as a pod reaches the
// ClusterIP. From the pod, /v1/status gets 403 naming the port-forward, while the probes and
// POST /v1/certify answer as without the flag (certify's own 401 without a token); from 127.0.0.1
// in the node namespace (where kubectl port-forward dials) the status is served and counts the
// refusal. Needs root (network namespaces).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CERTIFY_PATH } from '../src/identity/api.ts';
import { LoopbackAccess, parseAccessMode } from '../src/util/loopback-access.ts';
import { makePki } from './helpers/mesh-pki.ts';
import { nodeAndPod } from './helpers/node-pod-netns.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const NODE_IP = '10.232.0.1';
const POD_IP = '10.232.1.2';
const PORT = 8080;
const FIX = 'kubectl -n mesh-agent port-forward svc/mesh-agent-identity 8080';

test('LoopbackAccess: any serves everyone; loopback refuses others naming the flag and the fix, and counts them', (t) => {
  const fix = { flag: '--status-access', server: 'the identity service', reach: FIX };
  const any = new LoopbackAccess('any', fix);
  t.is(any.refusal('10.0.0.1', 'GET /v1/status'), null);
  t.deepEqual(any.state(), { mode: 'any', refused: 0, lastRefusal: null });
  const lo = new LoopbackAccess(parseAccessMode('loopback', '--status-access'), fix);
  t.is(lo.refusal('::ffff:127.0.0.1', 'GET /v1/status'), null);
  t.is(lo.refusal('10.0.0.1', 'GET /v1/status'), `GET /v1/status is served only to loopback peers (--status-access loopback), not to 10.0.0.1: reach the identity service with ${FIX}, or run the identity service with --status-access any`);
  t.like(lo.state(), { mode: 'loopback', refused: 1, lastRefusal: { peer: '10.0.0.1', route: 'GET /v1/status' } });
  t.throws(() => parseAccessMode('localhost', '--status-access'), { message: /--status-access "localhost": expected loopback .* or any/ });
});

test('--status-access loopback: the status refuses a pod with the fix and serves loopback; the probes and certify unaffected', async (t) => {
  const dir = testTempDir(t);
  const pki = await makePki();
  const file = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };
  // Never asked here: certify without a token is refused before the API server (its 401).
  const kubeconfig = file('kubeconfig', JSON.stringify({ 'current-context': 'c', contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }], clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:9' } }], users: [{ name: 'u', user: { token: 't' } }] }));
  const { nodeNs, podNs, inNs, meshInNode } = await nodeAndPod(t, NODE_IP, POD_IP);
  await meshInNode(['identity', '--listen', `0.0.0.0:${PORT}`, '--kubeconfig', kubeconfig, '--status-access', 'loopback',
    '--identity-trust-anchors-file', file('anchors.pem', pki.anchor.certPem),
    '--identity-issuer-certificate-file', file('issuer.pem', pki.issuerPair.certPem),
    '--identity-issuer-key-file', file('issuer.key', pki.issuerPair.keyPem)], 'identity service listening');

  /** One HTTPS request with curl in namespace ns (its certificate is a SPIFFE ID, no host name: -k): status and body. */
  const ask = async (ns: string, host: string, method: string, p: string) => {
    const r = await inNs(ns, 'curl', ['-sSk', '-X', method, ...(method === 'POST' ? ['-H', 'content-type: application/json', '--data-binary', '{}'] : []), '-w', '\n%{http_code}', `https://${host}:${PORT}${p}`]);
    if (r.code !== 0) throw new Error(`curl ${method} ${p} in ${ns} exited ${r.code}: ${r.stderr}`);
    const nl = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
  };

  // From the pod: the status refused, naming the fix.
  const refused = await ask(podNs, NODE_IP, 'GET', '/v1/status');
  t.is(refused.status, 403, refused.body);
  const error = JSON.parse(refused.body).error as string;
  t.true(error.includes(`not to ${POD_IP}`) && error.includes(FIX) && error.includes('--status-access any'), error);
  // The node IP from inside the namespace is not loopback either.
  t.is((await ask(nodeNs, NODE_IP, 'GET', '/v1/status')).status, 403);
  // From the pod, the probes and certify are what they are without the flag.
  for (const p of ['/ready', '/live']) t.is((await ask(podNs, NODE_IP, 'GET', p)).status, 200, p);
  const certify = await ask(podNs, NODE_IP, 'POST', CERTIFY_PATH);
  t.is(certify.status, 401, certify.body);
  t.regex(JSON.parse(certify.body).error, /no bearer token/);

  // Through port-forward (loopback in the service's namespace): served, with the refusals counted.
  const status = await ask(nodeNs, '127.0.0.1', 'GET', '/v1/status');
  t.is(status.status, 200, status.body);
  const s = JSON.parse(status.body);
  t.like(s.statusAccess, { mode: 'loopback', refused: 2, lastRefusal: { peer: NODE_IP, route: 'GET /v1/status' } });
  t.deepEqual(s.refused, { unauthenticated: 1 });
});
