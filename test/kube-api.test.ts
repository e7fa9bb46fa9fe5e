// The agent's lean API client (src/k8s/kube-api.ts): which configs it takes and which it leaves
// to @kubernetes/client-node, TLS with a CA and a client certificate, a token file read at each
// request (service account tokens rotate), and the fallback through client-node for an exec
// credential plugin, against the stand-in API server.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { kubeConfigOf, leanFromKubeconfig, LeanKubeApi } from '../src/k8s/kube-api.ts';
import { KubeSource } from '../src/k8s/kube-source.ts';
import { SimApiServer } from '../src/sim/index.ts';
import { namespaceObject, podObject } from './helpers/kube-objects.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { waitFor, within } from './helpers/until.ts';
import { podReadHangs, silentApiServer } from './helpers/pod-read-hangs.ts';

const kubeconfig = (cluster: object, user: object, extra: object = {}) => ({
  apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
  clusters: [{ name: 'k', cluster }], users: [{ name: 'u', user }], contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }], ...extra,
});

/** A kubeconfig at DIR/kubeconfig whose credentials come from an exec plugin: the agent takes it through client-node. */
function writeExecKubeconfig(dir: string, server: string): void {
  const cred = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'from-plugin' } });
  fs.writeFileSync(path.join(dir, 'kubeconfig'), JSON.stringify(kubeconfig({ server, 'insecure-skip-tls-verify': true }, {
    exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'sh', args: ['-c', `echo '${cred}'`], interactiveMode: 'Never' },
  })));
}

test('kubeconfigs: tokens, files relative to the kubeconfig, inline data; plugins and proxies are left to client-node', (t) => {
  const dir = testTempDir(t);
  fs.writeFileSync(path.join(dir, 'ca.pem'), 'CA');
  const lean = leanFromKubeconfig(kubeconfig({ server: 'https://api.example:6443/', 'certificate-authority': 'ca.pem' }, { tokenFile: 'token' }), dir);
  t.like(lean, { config: { server: 'https://api.example:6443', insecure: false, tokenFile: path.join(dir, 'token') } });
  t.is(('config' in lean ? lean.config.ca : undefined)?.toString(), 'CA');
  const inline = leanFromKubeconfig(kubeconfig({ server: 'https://a', 'insecure-skip-tls-verify': true }, { 'client-certificate-data': Buffer.from('CERT').toString('base64'), 'client-key-data': Buffer.from('KEY').toString('base64') }), dir);
  t.true('config' in inline && inline.config.insecure && inline.config.cert?.toString() === 'CERT' && inline.config.key?.toString() === 'KEY');
  t.like(leanFromKubeconfig(kubeconfig({ server: 'https://a' }, { username: 'admin', password: 'pw' }), dir), { config: { basic: { username: 'admin', password: 'pw' } } });
  t.deepEqual(leanFromKubeconfig(kubeconfig({ server: 'https://a' }, { exec: { command: 'aws' } }), dir), { unsupported: 'an exec credential plugin', file: undefined });
  t.like(leanFromKubeconfig(kubeconfig({ server: 'https://a' }, { 'auth-provider': { name: 'oidc' } }), dir), { unsupported: 'an auth-provider plugin' });
  t.like(leanFromKubeconfig(kubeconfig({ server: 'https://a', 'proxy-url': 'http://p:3128' }, {}), dir), { unsupported: 'a proxy-url' });
  t.throws(() => leanFromKubeconfig(kubeconfig({ server: 'https://a' }, {}, { 'current-context': 'other' }), dir), { message: /no context named "other"; check current-context/ });
  t.throws(() => leanFromKubeconfig({ clusters: [] }, dir, '/k'), { message: 'kubeconfig /k has no current-context; set one (kubectl config use-context NAME)' });
  // In a pod: the service account, its token read from the file at each request.
  t.like(kubeConfigOf(undefined, { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }), { config: { server: 'https://10.96.0.1:443', tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token', insecure: false } });
  t.throws(() => kubeConfigOf(path.join(dir, 'missing')), { message: /kubeconfig .*missing: no such file; pass --kubeconfig FILE or run in a pod/ });
});

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function certs(dir: string) {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca');
  for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext + '\n');
    run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  }
  const read = (f: string) => fs.readFileSync(path.join(dir, f));
  return { ca: read('ca.pem'), serverCert: read('server.pem'), serverKey: read('server.key') };
}

test('TLS with the kubeconfig\'s CA and client certificate; the token file is read at each request', async (t) => {
  const dir = fs.mkdtempSync(ownedTempPrefix('test'));
  const api = await new SimApiServer().start();
  api.create(namespaceObject('default'));
  api.create(podObject({ name: 'web', nodeName: 'n1' }));
  const c = certs(dir);
  const auth: string[] = [];
  // The stand-in API server behind a TLS front that demands a client certificate from our CA.
  const front = https.createServer({ cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    auth.push(req.headers.authorization ?? '');
    const up = http.request({ host: '127.0.0.1', port: api.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    front.closeAllConnections();
    front.close();
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const server = `https://127.0.0.1:${(front.address() as import('node:net').AddressInfo).port}`;
  fs.writeFileSync(path.join(dir, 'token'), 'first\n');
  fs.writeFileSync(path.join(dir, 'kubeconfig'), JSON.stringify(kubeconfig({ server, 'certificate-authority': 'ca.pem' }, { 'client-certificate': 'client.pem', 'client-key': 'client.key', tokenFile: 'token' })));
  const cfg = kubeConfigOf(path.join(dir, 'kubeconfig'));
  if (!('config' in cfg)) return t.fail('a CA, client certificate and token file need no plugin');
  const lean = new LeanKubeApi(cfg.config);
  const l = await lean.list('/api/v1/pods', { fieldSelector: 'spec.nodeName=n1' });
  t.deepEqual(l.items.map((p) => p.metadata.name), ['web']);
  t.regex(l.resourceVersion, /^\d+$/);
  fs.writeFileSync(path.join(dir, 'token'), 'rotated\n');
  await lean.list('/api/v1/namespaces', {});
  t.deepEqual(auth, ['Bearer first', 'Bearer rotated']);
  // Without the client certificate the front refuses the handshake; with another CA we refuse the server.
  const noCert = new LeanKubeApi({ ...cfg.config, cert: undefined, key: undefined });
  await t.throwsAsync(noCert.list('/api/v1/pods', {}));
  const otherCa = new LeanKubeApi({ ...cfg.config, ca: certs(fs.mkdtempSync(path.join(dir, 'other-'))).ca });
  await t.throwsAsync(otherCa.list('/api/v1/pods', {}), { message: /self-signed|unable to verify|certificate/ });
});

test('a kubeconfig with an exec credential plugin goes through client-node, and the pods come', async (t) => {
  const dir = fs.mkdtempSync(ownedTempPrefix('test'));
  const api = await new SimApiServer().start();
  api.create(namespaceObject('default'));
  api.create(podObject({ name: 'web', nodeName: 'n1' }));
  writeExecKubeconfig(dir, api.url);
  const src = new KubeSource({ nodeName: 'n1', kubeconfig: path.join(dir, 'kubeconfig'), onSnapshot: () => {}, onError: () => {} });
  t.teardown(async () => {
    src.stop();
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const s = await src.start();
  t.deepEqual(s.pods.map((p) => p.name), ['web']);
  // A pod read ahead of the watch (a CNI ADD before the watch delivers it) goes through client-node too.
  api.create(podObject({ name: 'new', nodeName: 'n1', uid: 'u-new' }));
  t.like(await src.getPod('default', 'new'), { name: 'new', namespace: 'default', uid: 'u-new', nodeName: 'n1' });
  t.is(await src.getPod('default', 'absent'), null);
  // The agent's Node (its zone label) too; a missing one rejects with the status the agent reads.
  await t.throwsAsync(src.getNode(), { message: /HTTP 404/ }).then((e) => t.is((e as { statusCode?: number }).statusCode, 404));
  api.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
  t.like(await src.getNode(), { metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
});

test('through client-node (an exec credential plugin), stop() abandons a list in flight at once: a pod read the API server has not answered', async (t) => {
  const dir = testTempDir(t);
  const { seen, url } = await podReadHangs(t);
  writeExecKubeconfig(dir, url);
  const src = new KubeSource({ nodeName: 'n1', kubeconfig: path.join(dir, 'kubeconfig'), onSnapshot: () => {}, onError: () => {} });
  t.teardown(() => src.stop());
  await src.start();
  const read = src.getPod('default', 'web');
  read.catch(() => {}); // awaited below
  await waitFor(() => seen.reads === 1, 5000);
  src.stop();
  await t.throwsAsync(within(read, 1000, () => 'the read outlived stop() by a second'), { message: 'reading pod default/web: the pod source is stopping' });
  await waitFor(() => seen.closed === 1, 5000);
  t.is(seen.closed, 1);
});

test('through client-node (an exec credential plugin), stop() aborts the watches the API server has not answered yet at once, not at the library\'s request timeout', async (t) => {
  const dir = testTempDir(t);
  // Lists are answered; watches never are (an API server that took the request and hangs).
  const { seen: watches, url } = await silentApiServer(t, (u) => u.searchParams.get('watch') === 'true');
  writeExecKubeconfig(dir, url);
  const src = new KubeSource({ nodeName: 'n1', kubeconfig: path.join(dir, 'kubeconfig'), onSnapshot: () => {}, onError: () => {} });
  t.teardown(() => src.stop());
  await src.start();
  await waitFor(() => watches.reads === 2, 5000); // pods and namespaces, neither answered
  src.stop();
  // The library's own limit is watchdogMs + 1 s (5 min here): a second is plenty for an abort.
  await waitFor(() => watches.closed === 2, 1000);
  t.is(watches.closed, 2);
});

test('an API server at an IPv6 address (KUBERNETES_SERVICE_HOST of an IPv6 or IPv6-first cluster): the lean client lists and watches it', async (t) => {
  const api = await new SimApiServer().start('::1');
  t.teardown(() => api.close());
  api.create(namespaceObject('default'));
  api.create(podObject({ name: 'web', nodeName: 'n1' }));
  const c = kubeConfigOf(undefined, { KUBERNETES_SERVICE_HOST: '::1', KUBERNETES_SERVICE_PORT: String(api.port) });
  if (!('config' in c)) return t.fail('the in-cluster config needs no plugin');
  t.is(c.config.server, `https://[::1]:${api.port}`);
  // The stand-in speaks plain HTTP: the same address, http://.
  const lean = new LeanKubeApi({ server: api.url, insecure: false, token: 't' });
  t.is(api.url, `http://[::1]:${api.port}`);
  const errors: string[] = [];
  const src = new KubeSource({ nodeName: 'n1', api: lean, onSnapshot: () => {}, onError: (e) => errors.push(e.message), backoff: { initialMs: 20, maxMs: 200 } });
  t.teardown(() => src.stop());
  const s = await within(src.start(), 5000, () => `no first list from [::1]: ${errors.slice(0, 2).join(' | ')}`);
  t.deepEqual(s.pods.map((p) => p.name), ['web']);
  // The watch reaches it too: a new pod arrives without a relist.
  api.create(podObject({ name: 'api', nodeName: 'n1' }));
  await waitFor(() => src.snapshot().pods.length === 2);
  t.is(api.requests.filter((q) => q.resource === 'pods' && !q.watch).length, 1);
});
