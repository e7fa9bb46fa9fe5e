// `mesh-agent cni-install` as the DaemonSet's install-cni container runs it (docs/install.md, "The
// CNI plugin"): dist/bin/mesh-agent.js with the container's args from installManifests() (only
// the /host prefix of --conf-dir and --bin-dir moved to a temp dir), in a node's network namespace,
// in a private mount namespace where /var/run/secrets/kubernetes.io/serviceaccount holds what
// kubelet projects (a token of the agent's ServiceAccount bound to its pod, ca.crt, namespace) and
// /var/lib/mesh-agent is the cni-state volume; in-cluster credentials against the stand-in API
// server over HTTPS (its certificate signed by that ca.crt). Shown: the chain; the plugin's
// kubeconfig with its own ServiceAccount's token (TokenRequest), which gets a pod and nothing
// more; SIGTERM in a rolling update keeps everything, after the DaemonSet's deletion uninstalls;
// without the plugin's ServiceAccount (404) the warning naming the fix and the container's token.
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, type SimNode } from '../src/sim/index.ts';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { listenInNode } from '../src/sim/listen-in.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { installManifests } from '../src/k8s/manifests.ts';
import { parseKubeconfig } from '../src/cni/kubeconfig.ts';
import { createTrustAnchor, type CertAndKey } from '../src/identity/x509.ts';
import { issueServingCertificate } from './helpers/serving-cert.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { requireRoot } from './helpers/root.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const NS = 'mesh-agent';
const PORT = 6443;
const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const STATE_DIR = '/var/lib/mesh-agent';
const DAEMONSET = installManifests().find((o: any) => o.kind === 'DaemonSet') as any;
const CONTAINER = DAEMONSET.spec.template.spec.containers.find((c: any) => c.name === 'install-cni');
const arg = (name: string): string => CONTAINER.args[CONTAINER.args.indexOf(name) + 1];
const PLUGIN_SA = arg('--plugin-service-account');
const KUBECONFIG = 'mesh-agent-cni-kubeconfig';
// In the private mount namespace only: a tmpfs over /run (/var/run links to it) holds the
// ServiceAccount directory, bound from the test's, and one over /var/lib the cni-state volume's
// mount point; nothing is made in the machine's own mount namespace. The shell execs the command
// (as unshare and nsenter exec theirs), so SIGTERM reaches it.
const CONTAINER_SH = `set -e
mount -t tmpfs -o mode=0755 mesh-agent-test /run
mkdir -p ${SA_DIR}
mount --bind "$1" ${SA_DIR}
mount -t tmpfs -o mode=0755 mesh-agent-test /var/lib
mkdir -p ${STATE_DIR}
mount --bind "$2" ${STATE_DIR}
shift 2
exec "$@" 2>&1`;

let node: SimNode | undefined;
let api: SimApiServer | undefined;
let ca: CertAndKey | undefined;
let pods = 0;
const secretsBefore = fs.existsSync('/run/secrets');

function need(): { node: SimNode; api: SimApiServer; ca: CertAndKey } {
  if (!node || !api || !ca) throw new Error('no node: this test makes network and mount namespaces; run it as root (sudo ./dev test)');
  return { node, api, ca };
}

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  node = await createNode({ driver: 'cgroupfs' });
  const now = Date.now();
  const validity = { notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) };
  ca = await createTrustAnchor({ trustDomain: 'cluster.local', ...validity });
  api = new SimApiServer({ tls: await issueServingCertificate(ca, { ips: [node.nodeIp], ...validity }) });
  await api.listenOn(await listenInNode(node, node.nodeIp, PORT), `https://${node.nodeIp}:${PORT}`);
  api.applyAccess(installManifests());
  api.create(DAEMONSET);
  api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop' }, spec: { nodeName: node.name, containers: [{ name: 'web', image: 'web' }] } });
  api.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'db', namespace: 'shop' }, data: { password: 'c2VjcmV0' } });
});

test.after.always(async () => {
  await api?.close();
  await node?.destroy();
});

interface Host {
  root: string;
  confDir: string;
  binDir: string;
  stateDir: string;
  /** The token kubelet projected for this run's container. */
  token: string;
}

/** The host's directories: a network plugin's configuration in place, the plugin's bin directory empty. */
function makeHost(t: ExecutionContext): Omit<Host, 'token'> {
  const root = testTempDir(t);
  // The manifest's /host/... under the temp dir, as runContainer() rewrites the args.
  const h = { root, confDir: path.join(root, arg('--conf-dir')), binDir: path.join(root, arg('--bin-dir')), stateDir: path.join(root, 'cni-state') };
  for (const d of [h.confDir, h.binDir, h.stateDir]) fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(h.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', plugins: [{ type: 'calico' }] }));
  return h;
}

/** One install-cni container: a new pod (a new projected token) running the manifest's args. */
function runContainer(t: ExecutionContext, h: Omit<Host, 'token'>): { proc: ChildProcess; log: JsonLines; host: Host } {
  const { node, api, ca } = need();
  const sa = fs.mkdtempSync(path.join(h.root, 'sa-'));
  const token = api.tokens.mint({ namespace: NS, serviceAccount: DAEMONSET.spec.template.spec.serviceAccountName, node: node.name, pod: `${DAEMONSET.metadata.name}-${++pods}` });
  fs.writeFileSync(path.join(sa, 'token'), token);
  fs.writeFileSync(path.join(sa, 'ca.crt'), ca.certPem);
  fs.writeFileSync(path.join(sa, 'namespace'), NS);
  // Only the /host prefix moves: everything else as the manifest says.
  const args = CONTAINER.args.map((a: string, i: number) => (['--conf-dir', '--bin-dir'].includes(CONTAINER.args[i - 1]) ? path.join(h.root, a) : a));
  const proc = node.spawnInNode('unshare', ['--mount', '--propagation', 'private', '/bin/sh', '-c', CONTAINER_SH, 'install-cni', sa, h.stateDir, process.execPath, meshBin(), ...args], {
    env: { ...process.env, KUBERNETES_SERVICE_HOST: node.nodeIp, KUBERNETES_SERVICE_PORT: String(PORT) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  return { proc, log: new JsonLines(proc), host: { ...h, token } };
}

const LONG = 60_000;
const installed = (o: any) => o.msg === 'CNI plugin installed';
const subject = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')).sub;
const ourEntry = (h: Host) => {
  const conf = JSON.parse(fs.readFileSync(path.join(h.confDir, '10-calico.conflist'), 'utf8'));
  return conf.plugins.find((p: any) => p.type === 'mesh-agent-cni');
};
const kubeconfigPath = (h: Host) => path.join(h.confDir, KUBECONFIG);
const kubeconfig = (h: Host) => parseKubeconfig(fs.readFileSync(kubeconfigPath(h), 'utf8'), kubeconfigPath(h));

/** The HTTP status of a GET with this token, by curl in the node (where the API server is), checking the server against the kubeconfig's CA. */
async function status(h: Host, token: string, urlPath: string): Promise<number> {
  const { node } = need();
  const k = kubeconfig(h);
  const caFile = path.join(h.root, 'kubeconfig-ca.crt');
  fs.writeFileSync(caFile, k.caPem ?? '');
  const r = await node.execInNode('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '20', '--cacert', caFile, '-H', `Authorization: Bearer ${token}`, `${k.server}${urlPath}`], { timeoutMs: 30_000 });
  return Number(r.stdout);
}

/** SIGTERM; resolves the exit code and the log line that says what it did. */
async function terminate(c: { proc: ChildProcess; log: JsonLines }, msg: RegExp): Promise<{ code: number | null; line: any }> {
  c.proc.kill('SIGTERM');
  const line = await c.log.waitFor((o) => msg.test(o.msg ?? ''), LONG, `the log line ${msg}`);
  return { code: await exited(c.proc), line };
}

test.serial('as the DaemonSet runs it: chained, the plugin\'s kubeconfig with its own token over HTTPS (it gets a pod, nothing more); SIGTERM in a rolling update keeps all, after the DaemonSet\'s deletion takes all out', async (t) => {
  requireRoot(t);
  const { api } = need();
  const h0 = makeHost(t);
  const first = runContainer(t, h0);
  const h = first.host;
  const issued = await first.log.waitFor((o) => /the CNI plugin's token issued/.test(o.msg ?? ''), LONG, 'the plugin\'s token issued');
  const done = await first.log.waitFor(installed, LONG, 'the install');
  // The first install waits 5 s for the token, then writes the container's; the next poll (30 s) the plugin's.
  if (first.log.lines.indexOf(issued) > first.log.lines.indexOf(done)) await first.log.waitFor((o) => /its kubeconfig rewritten/.test(o.msg ?? ''), LONG, 'the kubeconfig rewritten with the plugin\'s token');
  t.like(ourEntry(h), { agentSocket: arg('--agent-socket'), stateFile: arg('--state-file'), kubeconfig: `/etc/cni/net.d/${KUBECONFIG}` }, 'chained after calico with the manifest\'s paths');
  t.true(fs.existsSync(path.join(h.binDir, 'mesh-agent-cni')) && fs.existsSync(path.join(h.binDir, 'mesh-agent-cni.d', 'node')), 'the plugin\'s files');
  t.is(fs.statSync(kubeconfigPath(h)).mode & 0o777, 0o600);
  const k = kubeconfig(h);
  t.is(k.server, api.url);
  t.is(k.caPem, need().ca.certPem);
  t.is(subject(k.token), `system:serviceaccount:${NS}:${PLUGIN_SA}`, 'the plugin\'s own ServiceAccount, not the container\'s');
  t.is(subject(h.token), `system:serviceaccount:${NS}:${DAEMONSET.spec.template.spec.serviceAccountName}`);
  t.is(await status(h, k.token, '/api/v1/namespaces/shop/pods/web'), 200, 'get a pod');
  t.is(await status(h, k.token, '/api/v1/namespaces/shop/secrets'), 403, 'list secrets');
  t.is(await status(h, k.token, '/api/v1/namespaces/shop/pods'), 403, 'list pods (the agent\'s token may)');
  t.is(await status(h, h.token, '/api/v1/namespaces/shop/pods'), 200, 'the agent\'s token lists pods');
  t.true(api.requests.some((r) => r.resource === 'serviceaccounts/token' && r.status === 201 && r.user === subject(h.token)), 'the TokenRequest made with the container\'s token');

  const kept = await terminate(first, /SIGTERM/);
  t.is(kept.code, 0, first.log.stderr);
  t.regex(kept.line.msg, /rolling update: the CNI plugin stays/);
  t.truthy(ourEntry(h), 'the entry stays');
  t.true(fs.existsSync(kubeconfigPath(h)) && fs.existsSync(path.join(h.binDir, 'mesh-agent-cni')));

  // The next pod of the DaemonSet; then an uninstall.
  const second = runContainer(t, h0);
  await second.log.waitFor(installed, LONG, 'the second install');
  fs.writeFileSync(path.join(h.stateDir, 'cni-state.json'), '{}');
  api.delete('DaemonSet', NS, DAEMONSET.metadata.name);
  t.teardown(() => void api.apply(DAEMONSET));
  const gone = await terminate(second, /SIGTERM|DaemonSet deleted/);
  t.is(gone.code, 0, second.log.stderr);
  t.is(gone.line.msg, 'DaemonSet deleted: CNI plugin uninstalled');
  t.is(ourEntry(h), undefined, 'the entry taken out');
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(h.confDir, '10-calico.conflist'), 'utf8')).plugins, [{ type: 'calico' }]);
  t.deepEqual(fs.readdirSync(h.binDir), [], 'the plugin\'s files');
  t.false(fs.existsSync(kubeconfigPath(h)), 'the kubeconfig');
  t.false(fs.existsSync(path.join(h.stateDir, 'cni-state.json')), 'the state file, through the cni-state volume');
  t.is(fs.existsSync('/run/secrets'), secretsBefore, 'nothing made in the machine\'s mount namespace');
});

test.serial('a SIGTERM during the first install\'s wait for the token (the DaemonSet deleted) is acted on once the install is done: uninstalled, exit 0, not ended by the signal', async (t) => {
  requireRoot(t);
  const { api } = need();
  // The TokenRequest held at the API server: the command is inside its first install's wait.
  const { stalled, release } = api.stallRequests((r) => r.resource === 'serviceaccounts/token');
  t.teardown(release);
  api.delete('DaemonSet', NS, DAEMONSET.metadata.name);
  t.teardown(() => void api.apply(DAEMONSET));
  const c = runContainer(t, makeHost(t));
  await stalled;
  c.proc.kill('SIGTERM');
  release();
  const line = await c.log.waitFor((o) => /SIGTERM|DaemonSet deleted/.test(o.msg ?? ''), LONG, 'what it made of the SIGTERM');
  t.is(await exited(c.proc), 0, `ended by ${c.proc.signalCode ?? 'an exit'}: ${c.log.stderr}`);
  t.is(line.msg, 'DaemonSet deleted: CNI plugin uninstalled');
  t.true(c.log.lines.some(installed), 'the install finished first');
  t.is(ourEntry(c.host), undefined, 'the entry taken out');
});

test.serial('without the plugin\'s ServiceAccount (TokenRequest 404): the warning names the fix, and the kubeconfig gets the container\'s own token', async (t) => {
  requireRoot(t);
  const { api } = need();
  const sa = api.get('ServiceAccount', NS, PLUGIN_SA)!;
  api.delete('ServiceAccount', NS, PLUGIN_SA);
  t.teardown(() => void api.apply(sa));
  const c = runContainer(t, makeHost(t));
  const warn = await c.log.waitFor((o) => o.level === 'warn' && /cannot get a token/.test(o.msg), LONG, 'the warning');
  t.regex(warn.msg, new RegExp(`ServiceAccount ${NS}/${PLUGIN_SA} \\(.*HTTP 404: serviceaccounts "${PLUGIN_SA}" not found\\).*this container's own token instead.*re-apply \`mesh-agent install\``));
  await c.log.waitFor(installed, LONG, 'the install');
  t.is(kubeconfig(c.host).token, c.host.token, 'the container\'s own token');
  t.is(await status(c.host, kubeconfig(c.host).token, '/api/v1/namespaces/shop/pods/web'), 200);
  const r = await terminate(c, /SIGTERM/);
  t.is(r.code, 0, c.log.stderr);
  t.truthy(ourEntry(c.host), 'a rolling update: the entry stays');
});
