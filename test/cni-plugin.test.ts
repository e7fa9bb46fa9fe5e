// The chained CNI plugin's pure parts (the invocation, the decision, the result and the error
// objects, the state file, the agent's overlay of admitted pods) and the plugin's process against
// a real unix socket: the agent's answers, no agent, a meshed namespace.
import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { CNI_ERRORS, CniError, parseCniArgs, parseInvocation, renderAddResult, renderError, resultIps } from '../src/cni/spec.ts';
import { decideAdd, needsPodRead, type PodRead } from '../src/cni/decide.ts';
import { apiUrl, parseKubeconfig, renderKubeconfig } from '../src/cni/kubeconfig.ts';
import { readPod } from '../src/cni/pod-read.ts';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { parseAdmitAnswer, parseAdmitRequest, ipv4Of } from '../src/cni/protocol.ts';
import { parseState, readState, renderState, writeState } from '../src/cni/state.ts';
import { runPlugin } from '../src/cni/plugin.ts';
import { CniPods, meshedNamespaces } from '../src/agent/cni-pods.ts';
import { CniServer } from '../src/agent/cni-server.ts';
import type { AdmitAnswer } from '../src/cni/protocol.ts';
import type { NamespaceInfo, PodInfo } from '../src/k8s/objects.ts';
import { within } from './helpers/until.ts';
import { meshCniBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const BIN = meshCniBin();
const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.244.1.5/32', interface: 0 }, { address: 'fd00::5/128', interface: 0 }] };
const env = (cmd: string, extra: Record<string, string> = {}) => ({ CNI_COMMAND: cmd, CNI_CONTAINERID: 'c0ffee', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api-1;K8S_POD_UID=u-1', ...extra });
const conf = (o: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'mesh-agent-cni', prevResult, ...o });

test('parseInvocation: the command, the pod from CNI_ARGS, the conflist entry with its prevResult', (t) => {
  const inv = parseInvocation(env('ADD'), conf({ agentSocket: '/run/a.sock', stateFile: '/var/lib/s.json', addTimeoutMs: 500 }));
  t.is(inv.command, 'ADD');
  t.deepEqual(inv.pod, { namespace: 'shop', name: 'api-1', uid: 'u-1' });
  t.is(inv.config.agentSocket, '/run/a.sock');
  t.is(inv.config.stateFile, '/var/lib/s.json');
  t.is(inv.config.addTimeoutMs, 500);
  t.deepEqual(resultIps(inv.config.prevResult), ['10.244.1.5', 'fd00::5']);
  t.is(ipv4Of(resultIps(inv.config.prevResult)), '10.244.1.5');
  // Defaults: the install's paths.
  const d = parseInvocation(env('ADD'), conf());
  t.is(d.config.agentSocket, '/var/run/mesh-agent-cni/cni.sock');
  t.is(d.config.stateFile, '/var/lib/mesh-agent/cni-state.json');
  // Not a Kubernetes pod: no pod.
  t.is(parseInvocation(env('ADD', { CNI_ARGS: 'IgnoreUnknown=1' }), conf()).pod, null);
  // 0.3.x results carry "version" beside each address.
  t.deepEqual(resultIps({ ips: [{ version: '4', address: '10.1.0.2/24' }, { bad: 1 }] }), ['10.1.0.2']);
});

test('parseInvocation: bad input gets the spec\'s error codes and a message naming the fix', (t) => {
  const code = (f: () => unknown) => {
    const e = t.throws(f, { instanceOf: CniError }) as CniError;
    return [e.code, e.message] as const;
  };
  let [c, m] = code(() => parseInvocation({}, conf()));
  t.is(c, CNI_ERRORS.invalidEnvironment);
  t.regex(m, /CNI_COMMAND is not set.*run by the container runtime/);
  [c, m] = code(() => parseInvocation(env('ADD'), '{nope'));
  t.is(c, CNI_ERRORS.decodeFailure);
  [c, m] = code(() => parseInvocation(env('ADD'), conf({ cniVersion: '0.2.0' })));
  t.is(c, CNI_ERRORS.incompatibleVersion);
  t.regex(m, /cniVersion 0.2.0 is not supported; set the conflist's cniVersion to one of/);
  [c, m] = code(() => parseInvocation(env('ADD'), conf({ agentSocket: 'relative.sock' })));
  t.is(c, CNI_ERRORS.invalidConfig);
  t.regex(m, /agentSocket: "relative.sock" is not an absolute path/);
  [c] = code(() => parseInvocation(env('ADD'), conf({ addTimeoutMs: -1 })));
  t.is(c, CNI_ERRORS.invalidConfig);
  [c, m] = code(() => parseInvocation(env('ADD', { CNI_CONTAINERID: '' }), conf()));
  t.regex(m, /CNI_CONTAINERID is not set for ADD/);
  t.throws(() => parseCniArgs('K8S_POD_NAME'), { message: /"K8S_POD_NAME" is not KEY=VALUE/ });
});

test('render: ADD hands the previous result back in the config\'s version; errors are the spec\'s object', (t) => {
  const inv = parseInvocation(env('ADD'), conf({ cniVersion: '0.4.0', prevResult: { ...prevResult, cniVersion: '0.4.0' } }));
  t.deepEqual(JSON.parse(renderAddResult(inv.config)), { ...prevResult, cniVersion: '0.4.0' });
  t.deepEqual(JSON.parse(renderError(new CniError(11, 'later', 'why'), '0.4.0')), { cniVersion: '0.4.0', code: 11, msg: 'later', details: 'why' });
});

const pod = { namespace: 'shop', name: 'api-1' };
const meshedState = { kind: 'ok' as const, state: { version: 1 as const, node: 'n1', meshedNamespaces: ['shop'] } };
const FILE = '/var/lib/mesh-agent/cni-state.json';

test('decideAdd: the agent\'s answer decides; without one, a pod of a meshed namespace fails (try again), others pass', (t) => {
  t.true(decideAdd(pod, { kind: 'answer', answer: { result: 'meshed', policy: 'all-authenticated', failsClosed: true } }, FILE, meshedState).ok);
  t.true(decideAdd(pod, { kind: 'answer', answer: { result: 'not-meshed', reason: 'not-injected' } }, FILE, meshedState).ok);
  // The agent knows the pod is meshed (an annotation in an unmeshed namespace too) and its policy is not in the kernel yet.
  const r = decideAdd({ namespace: 'other', name: 'x' }, { kind: 'answer', answer: { result: 'retry', meshed: true, message: 'the capture is waiting' } }, FILE, meshedState);
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.error.code, CNI_ERRORS.tryAgainLater);
    t.regex(r.error.message, /pod other\/x is meshed and mesh-agent has not yet put its policy in the kernel: the capture is waiting; the runtime retries the ADD/);
  }
  // No agent: the state file decides.
  const down = { kind: 'unreachable' as const, error: '/var/run/mesh-agent/cni.sock: ECONNREFUSED' };
  const f = decideAdd(pod, down, FILE, meshedState);
  t.false(f.ok);
  if (!f.ok) {
    t.is(f.error.code, CNI_ERRORS.tryAgainLater);
    t.regex(f.error.message, /no mesh-agent answers on this node \(\/var\/run\/mesh-agent\/cni.sock: ECONNREFUSED\), and namespace shop is meshed: pod shop\/api-1 would start without its inbound policy; .*kubectl -n mesh-agent get pods -o wide.*remove mesh-agent.io\/inject from the namespace/);
  }
  t.true(decideAdd({ namespace: 'kube-system', name: 'dns' }, down, FILE, meshedState).ok);
  // The agent up but not knowing the pod (retry, meshed null): as without it.
  t.false(decideAdd(pod, { kind: 'answer', answer: { result: 'retry', meshed: null, message: 'list pending' } }, FILE, meshedState).ok);
  t.true(decideAdd(pod, { kind: 'answer', answer: { result: 'retry', meshed: false, message: 'x' } }, FILE, { kind: 'ok', state: { version: 1, node: 'n', meshedNamespaces: [] } }).ok);
  // No state file: no agent ever ran here.
  t.true(decideAdd(pod, down, FILE, { kind: 'missing' }).ok);
  // A state file that does not parse: nobody can tell, so the pod waits, with the file named.
  const bad = decideAdd({ namespace: 'kube-system', name: 'dns' }, down, FILE, { kind: 'invalid', error: 'not JSON' });
  t.false(bad.ok);
  if (!bad.ok) t.regex(bad.error.message, /state file \/var\/lib\/mesh-agent\/cni-state.json cannot be read \(not JSON\).*delete it/);
});

test('decideAdd without an agent: the pod\'s own annotations (read from the API server) make it wait in an unmeshed namespace; a failed read falls back to the namespace and says so', (t) => {
  const down = { kind: 'unreachable' as const, error: '/run/cni.sock: ECONNREFUSED' };
  const plain = { namespace: 'plain', name: 'p-1' };
  const meshedPod: PodRead = { kind: 'read', meshed: true, inboundPolicy: 'all-authenticated' };
  const openPod: PodRead = { kind: 'read', meshed: false, inboundPolicy: 'all-unauthenticated' };
  const r = decideAdd(plain, down, FILE, meshedState, meshedPod);
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.error.code, CNI_ERRORS.tryAgainLater);
    t.regex(r.error.message, /no mesh-agent answers on this node \(\/run\/cni.sock: ECONNREFUSED\), and pod plain\/p-1 is meshed by its own annotation mesh-agent.io\/inject \(read from the API server; inbound policy all-authenticated\).*the runtime retries the ADD.*remove mesh-agent.io\/inject from the pod/);
  }
  // No state file (no agent has run yet) does not let an annotated pod start either; the agent's "could not decide" neither.
  t.false(decideAdd(plain, down, FILE, { kind: 'missing' }, meshedPod).ok);
  t.false(decideAdd(plain, { kind: 'answer', answer: { result: 'retry', meshed: null, message: 'the agent is stopping' } }, FILE, meshedState, meshedPod).ok);
  const open = decideAdd(plain, down, FILE, meshedState, openPod);
  t.true(open.ok);
  if (open.ok) t.regex(open.why, /namespace plain is not meshed; the pod's own annotations \(read from the API server\) do not mesh it/);
  // Annotated disabled in a meshed namespace: still waits, as only the agent can tell (docs/install.md).
  const disabled = decideAdd(pod, down, FILE, meshedState, openPod);
  t.false(disabled.ok);
  if (!disabled.ok) t.regex(disabled.error.message, /and namespace shop is meshed: pod shop\/api-1 would start/);
  // The API server unreachable: the namespace decides, and the message says the pod could not be read.
  const failed: PodRead = { kind: 'failed', error: 'the API server (kubeconfig /etc/cni/net.d/k): ECONNREFUSED' };
  const fb = decideAdd(plain, down, FILE, meshedState, failed);
  t.true(fb.ok);
  if (fb.ok) t.regex(fb.why, /namespace plain is not meshed; decided by the namespace only: the pod could not be read from the API server \(kubeconfig \/etc\/cni\/net.d\/k\): ECONNREFUSED/);
  t.false(decideAdd(pod, down, FILE, meshedState, failed).ok);
  // The read happens only when the agent has not decided and the namespace does not already make the pod wait.
  t.false(needsPodRead(plain, { kind: 'answer', answer: { result: 'not-meshed', reason: 'not-injected' } }, { kind: 'missing' }));
  t.false(needsPodRead(plain, { kind: 'answer', answer: { result: 'retry', meshed: true, message: 'x' } }, meshedState));
  t.false(needsPodRead(pod, down, meshedState));
  t.true(needsPodRead(plain, down, meshedState));
  t.true(needsPodRead(plain, down, { kind: 'missing' }));
  t.true(needsPodRead(pod, down, { kind: 'invalid', error: 'x' }));
});

test('runPlugin with no agent reads its pod from the (stand-in) API server with the entry\'s kubeconfig: annotated meshed in an unmeshed namespace waits; unreachable, the namespace decides', async (t) => {
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  const podObj = (name: string, annotations: Record<string, string>) => api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'plain', uid: `uid-${name}`, annotations }, spec: { containers: [{ name: 'c', image: 'i' }] } });
  podObj('annotated', { 'mesh-agent.io/inject': 'enabled' });
  podObj('bare', {});
  const dir = testTempDir(t);
  const stateFile = path.join(dir, 'state.json');
  writeState(stateFile, { version: 1, node: 'n1', meshedNamespaces: ['shop'] });
  const kubeconfig = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfig, renderKubeconfig({ server: api.url, token: 'tok', insecure: true }));
  const none = { agentSocket: path.join(dir, 'none.sock'), stateFile, kubeconfig };
  const args = (name: string) => ({ CNI_ARGS: `K8S_POD_NAMESPACE=plain;K8S_POD_NAME=${name};K8S_POD_UID=uid-${name}` });
  const add = await runPlugin(env('ADD', args('annotated')), conf(none));
  t.is(add.exitCode, 1);
  t.is(JSON.parse(add.stdout).code, CNI_ERRORS.tryAgainLater);
  t.regex(JSON.parse(add.stdout).msg, /none.sock: ENOENT\), and pod plain\/annotated is meshed by its own annotation/);
  const got = api.requests.filter((r) => r.resource === 'pods');
  t.is(got.length, 1);
  t.deepEqual([got[0]!.method, got[0]!.watch], ['GET', false]);
  const bare = await runPlugin(env('ADD', args('bare')), conf(none));
  t.is(bare.exitCode, 0, bare.stdout);
  t.regex(bare.log, /do not mesh it/);
  // The namespace is meshed: no read (the pod waits anyway).
  const before = api.requests.length;
  t.is((await runPlugin(env('ADD'), conf(none))).exitCode, 1);
  t.is(api.requests.length, before, 'no API read for a pod its namespace already holds');
  // The sandbox is of a recreated pod (another uid): not this pod's annotations.
  const stale = await runPlugin(env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=annotated;K8S_POD_UID=other' }), conf(none));
  t.is(stale.exitCode, 0);
  t.regex(stale.log, /decided by the namespace only: .* has pod plain\/annotated with uid uid-annotated, not this sandbox's other/);
  // The API server unreachable: the namespace decides, and the log says the pod could not be read.
  await api.close();
  const down = await runPlugin(env('ADD', args('annotated')), conf(none));
  t.is(down.exitCode, 0, down.stdout);
  t.regex(down.log, /namespace plain is not meshed; decided by the namespace only: the pod could not be read from the API server \(kubeconfig .*kubeconfig\): ECONNREFUSED/);
  // The kubeconfig missing: the same fallback, naming the file.
  const gone = await runPlugin(env('ADD', args('annotated')), conf({ ...none, kubeconfig: path.join(dir, 'nope') }));
  t.is(gone.exitCode, 0);
  t.regex(gone.log, /could not be read from the API server \(kubeconfig .*nope\): ENOENT/);
});

test('readPod: a kubeconfig server with a path prefix (a proxy such as Rancher\'s /k8s/clusters/ID) is kept: the GET goes to PREFIX/api/v1/...', async (t) => {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    if (req.url !== '/k8s/clusters/c-abc/api/v1/namespaces/plain/pods/web-1') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `no route ${req.url}` }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ metadata: { name: 'web-1', namespace: 'plain', uid: 'u-1', annotations: { 'mesh-agent.io/inject': 'enabled' } }, spec: {} }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const { port } = server.address() as import('node:net').AddressInfo;
  const dir = testTempDir(t);
  for (const suffix of ['', '/']) {
    const kubeconfig = path.join(dir, `kubeconfig${suffix ? '-slash' : ''}`);
    fs.writeFileSync(kubeconfig, renderKubeconfig({ server: `http://127.0.0.1:${port}/k8s/clusters/c-abc${suffix}`, token: 'tok', insecure: true }));
    t.like(await readPod(kubeconfig, { namespace: 'plain', name: 'web-1', uid: 'u-1' }), { kind: 'read', meshed: true } as Partial<PodRead>, suffix);
  }
  t.deepEqual(seen, Array(2).fill('/k8s/clusters/c-abc/api/v1/namespaces/plain/pods/web-1'));
});

test('apiUrl: the API path goes under the server\'s own path, with or without a trailing slash; names are escaped', (t) => {
  t.is(apiUrl('https://10.96.0.1:443', '/api/v1/x').href, 'https://10.96.0.1/api/v1/x');
  t.is(apiUrl('https://rancher.example/k8s/clusters/c-abc', '/api/v1/x').href, 'https://rancher.example/k8s/clusters/c-abc/api/v1/x');
  t.is(apiUrl('https://rancher.example/k8s/clusters/c-abc//', '/api/v1/x').href, 'https://rancher.example/k8s/clusters/c-abc/api/v1/x');
  t.is(apiUrl('https://[fd00::1]:6443/', '/api/v1/x').href, 'https://[fd00::1]:6443/api/v1/x');
});

test('kubeconfig: what install-cni writes the plugin reads back; a broken one is named', (t) => {
  const a = { server: 'https://10.96.0.1:443', token: 't0k', caPem: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n' };
  t.deepEqual(parseKubeconfig(renderKubeconfig(a), 'k'), a);
  t.throws(() => parseKubeconfig('apiVersion: v1', '/etc/cni/net.d/k'), { message: /\/etc\/cni\/net.d\/k is not JSON .*install-cni container/ });
  t.throws(() => parseKubeconfig(JSON.stringify({ 'current-context': 'x' }), 'k'), { message: /k: the current context has no http\(s\) server/ });
});

test('state file: round trip, atomic replace, what does not parse is named', (t) => {
  const dir = testTempDir(t);
  const file = path.join(dir, 'sub', 'cni-state.json');
  t.deepEqual(readState(file), { kind: 'missing' });
  writeState(file, { version: 1, node: 'n1', meshedNamespaces: ['b', 'a'] });
  t.deepEqual(readState(file), { kind: 'ok', state: { version: 1, node: 'n1', meshedNamespaces: ['a', 'b'] } });
  t.deepEqual(fs.readdirSync(path.dirname(file)), ['cni-state.json']);
  t.deepEqual(parseState(renderState({ version: 1, node: 'x', meshedNamespaces: [] })), { version: 1, node: 'x', meshedNamespaces: [] });
  fs.writeFileSync(file, '{"version":2}');
  t.deepEqual(readState(file), { kind: 'invalid', error: 'version 2 is not 1' });
  t.throws(() => parseState('{"version":1,"node":"n","meshedNamespaces":[3]}'), { message: /meshedNamespaces is not a list of names/ });
});

test('protocol: the agent checks what a plugin sends, the plugin what the agent answers', (t) => {
  t.deepEqual(parseAdmitRequest(JSON.stringify({ namespace: 'shop', name: 'api-1', ips: ['10.0.0.1'], containerId: 'c' })), { namespace: 'shop', name: 'api-1', ips: ['10.0.0.1'], containerId: 'c' });
  t.throws(() => parseAdmitRequest('{"namespace":"Shop!","name":"a","containerId":"c"}'), { message: /namespace: "Shop!" is not a Kubernetes object name/ });
  t.throws(() => parseAdmitRequest('{"namespace":"s","name":"a","containerId":"c","ips":"10.0.0.1"}'), { message: /ips: not a list/ });
  t.throws(() => parseAdmitRequest('[]'), { message: /not a JSON object/ });
  // Found by the fuzz test: a name nested 8,000 deep (16,000 bytes, within the socket's 16 KiB) made the message itself throw a RangeError.
  const deep = '['.repeat(8000) + ']'.repeat(8000);
  t.throws(() => parseAdmitRequest(`{"namespace":${deep},"name":"a","containerId":"c"}`), { message: /^namespace: a list nested too deep to show is not a Kubernetes object name$/ });
  t.throws(() => parseAdmitRequest(`{"namespace":"s","name":"a","uid":${deep},"containerId":"c"}`), { message: /^uid: a list nested too deep to show is not a pod UID$/ });
  t.deepEqual(parseAdmitAnswer('{"result":"retry","meshed":null,"message":"m"}'), { result: 'retry', meshed: null, message: 'm' });
  t.throws(() => parseAdmitAnswer('{"result":"maybe"}'), { message: /different versions: upgrade them together/ });
});

const podInfo = (name: string, uid: string, ip?: string): PodInfo => ({ uid, name, namespace: 'shop', nodeName: 'n1', ip, phase: 'Pending', hostNetwork: false, labels: {}, annotations: {}, serviceAccount: 'default' });

test('CniPods: an admitted pod gets the runtime\'s address until the watch has it; one ahead of the watch is added; DEL forgets its own sandbox only', async (t) => {
  const c = new CniPods();
  const ns = new Map<string, NamespaceInfo>([['shop', { name: 'shop', annotations: { 'mesh-agent.io/inject': 'enabled' } }], ['x', { name: 'x', annotations: {} }]]);
  t.deepEqual(meshedNamespaces(ns), ['shop']);
  c.admit(podInfo('a', 'u-a'), 'sandbox-a', '10.0.0.1', false);
  c.admit(podInfo('b', 'u-b'), 'sandbox-b1', '10.0.0.2', true);
  let s = c.merge({ pods: [podInfo('a', 'u-a')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['a', '10.0.0.1'], ['b', '10.0.0.2']]);
  // The watch delivers b (no address yet): it is no longer added, still addressed.
  s = c.merge({ pods: [podInfo('a', 'u-a'), podInfo('b', 'u-b')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['a', '10.0.0.1'], ['b', '10.0.0.2']]);
  // b's sandbox is recreated (same pod, same uid): its new sandbox's ADD, then the DEL of the old
  // one, late: the new address stays while the watch has none.
  c.admit(podInfo('b', 'u-b'), 'sandbox-b2', '10.0.0.3', false);
  c.release('shop', 'b', 'sandbox-b1');
  s = c.merge({ pods: [podInfo('a', 'u-a'), podInfo('b', 'u-b')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['a', '10.0.0.1'], ['b', '10.0.0.3']], 'the old sandbox\'s DEL does not forget the new one');
  t.is(c.size, 2);
  // The watch has a's address: a's entry goes; b's current sandbox is deleted.
  c.release('shop', 'b', 'sandbox-b2');
  s = c.merge({ pods: [podInfo('a', 'u-a', '10.0.0.1')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['a', '10.0.0.1']]);
  t.is(c.size, 0);
});

test('CniPods: a recreated sandbox\'s address holds until the watch shows that address, not any; a pod the watch stops showing is forgotten', (t) => {
  const c = new CniPods();
  const ns = new Map<string, NamespaceInfo>();
  // b runs in its first sandbox, the watch has its address; the sandbox is recreated (same pod,
  // new container ID, new address): the watch still shows the old address until kubelet reports.
  c.admit(podInfo('b', 'u-b', '10.0.0.2'), 'sandbox-b2', '10.0.0.3', false);
  let s = c.merge({ pods: [podInfo('b', 'u-b', '10.0.0.2')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['b', '10.0.0.3']], 'the runtime\'s new address, not the watch\'s stale one');
  t.is(c.size, 1, 'kept while the watch shows another address');
  s = c.merge({ pods: [podInfo('b', 'u-b', '10.0.0.3')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.name, p.ip]), [['b', '10.0.0.3']]);
  t.is(c.size, 0, 'the watch shows that address: the entry goes');
  // No IPv4 from the runtime: nothing to wait for, any address of the watch ends the entry.
  c.admit(podInfo('v6', 'u-v6'), 'sandbox-v6', null, false);
  c.merge({ pods: [podInfo('v6', 'u-v6', '10.0.0.7')], namespaces: ns });
  t.is(c.size, 0);
  // The pod is deleted before the watch shows the new address (its DEL lost): the entry goes with it.
  c.admit(podInfo('d', 'u-d', '10.0.0.4'), 'sandbox-d2', '10.0.0.5', false);
  c.merge({ pods: [podInfo('d', 'u-d', '10.0.0.4')], namespaces: ns });
  t.is(c.size, 1);
  s = c.merge({ pods: [], namespaces: ns });
  t.deepEqual(s.pods, []);
  t.is(c.size, 0, 'the watch no longer shows the pod');
  // The name recreated as another pod (another uid): the entry goes, the new pod is the watch's.
  c.admit(podInfo('e', 'u-e1', '10.0.0.6'), 'sandbox-e', '10.0.0.8', false);
  s = c.merge({ pods: [podInfo('e', 'u-e2', '10.0.0.6')], namespaces: ns });
  t.deepEqual(s.pods.map((p) => [p.uid, p.ip]), [['u-e2', '10.0.0.6']]);
  t.is(c.size, 0);
});

/** A stand-in agent socket answering every admission with `answer`. */
async function agentSocket(t: any, answer: object | string): Promise<{ sock: string; requests: any[] }> {
  const dir = fs.mkdtempSync(ownedTempPrefix('test'));
  const sock = path.join(dir, 'cni.sock');
  const requests: any[] = [];
  const srv = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d) => (b += d));
    req.on('end', () => {
      requests.push({ url: req.url, body: JSON.parse(b) });
      res.end(typeof answer === 'string' ? answer : JSON.stringify(answer));
    });
  });
  await new Promise<void>((r) => srv.listen(sock, r));
  t.teardown(() => {
    srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { sock, requests };
}

test('runPlugin: ADD asks the agent with the pod and its addresses and hands the result back; DEL and CHECK never fail', async (t) => {
  const { sock, requests } = await agentSocket(t, { result: 'meshed', policy: 'all-authenticated', failsClosed: true });
  const run = await runPlugin(env('ADD'), conf({ agentSocket: sock }));
  t.is(run.exitCode, 0, run.stdout);
  t.deepEqual(JSON.parse(run.stdout), prevResult);
  t.deepEqual(requests, [{ url: '/v1/cni/add', body: { namespace: 'shop', name: 'api-1', uid: 'u-1', ips: ['10.244.1.5', 'fd00::5'], containerId: 'c0ffee' } }]);
  const del = await runPlugin(env('DEL'), conf({ agentSocket: sock }));
  t.deepEqual([del.exitCode, del.stdout], [0, '']);
  t.is(requests[1].url, '/v1/cni/del');
  // No agent, a meshed namespace in the state file: DEL and CHECK still succeed.
  const dir = testTempDir(t);
  const stateFile = path.join(dir, 'state.json');
  writeState(stateFile, { version: 1, node: 'n1', meshedNamespaces: ['shop'] });
  const none = { agentSocket: path.join(dir, 'none.sock'), stateFile };
  for (const cmd of ['DEL', 'CHECK']) t.is((await runPlugin(env(cmd), conf(none))).exitCode, 0, cmd);
  // ...and ADD fails with the spec's error object.
  const add = await runPlugin(env('ADD'), conf(none));
  t.is(add.exitCode, 1);
  const err = JSON.parse(add.stdout);
  t.is(err.code, CNI_ERRORS.tryAgainLater);
  t.regex(err.msg, /none.sock: ENOENT\), and namespace shop is meshed/);
  // A pod of another namespace starts.
  t.is((await runPlugin(env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns' }), conf(none))).exitCode, 0);
  // Alone (no prevResult) it says where it belongs.
  const alone = await runPlugin(env('ADD'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'mesh-agent-cni' }));
  t.regex(JSON.parse(alone.stdout).msg, /chained plugin and got no prevResult: list it after the network plugin/);
});

test('runPlugin: an agent answering more than a message can be is read no further: ADD goes as with no agent, naming the size', async (t) => {
  // 9,000 characters, 18,000 bytes: over the bound only when it counts bytes.
  const { sock } = await agentSocket(t, JSON.stringify({ result: 'meshed', message: 'é'.repeat(9000) }));
  const dir = testTempDir(t);
  const stateFile = path.join(dir, 'state.json');
  writeState(stateFile, { version: 1, node: 'n1', meshedNamespaces: ['shop'] });
  const add = await runPlugin(env('ADD'), conf({ agentSocket: sock, stateFile }));
  t.is(add.exitCode, 1);
  const err = JSON.parse(add.stdout);
  t.is(err.code, CNI_ERRORS.tryAgainLater);
  t.regex(err.msg, /cni\.sock: the agent's answer is over 16384 bytes\), and namespace shop is meshed/);
});

test('CniServer: a request over 16 KiB, counted in bytes, is answered 413 and not admitted', async (t) => {
  const dir = testTempDir(t);
  const sock = path.join(dir, 'cni.sock');
  let admitted = 0;
  const srv = new CniServer(sock, { admit: async () => (admitted++, { result: 'meshed', policy: 'all-authenticated', failsClosed: true }), release: () => {}, onError: () => {} });
  await srv.listen();
  t.teardown(() => srv.close());
  // 9,000 characters, 18,000 bytes: over the bound only when it counts bytes.
  const body = JSON.stringify({ namespace: 'é'.repeat(9000), name: 'a' });
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request({ socketPath: sock, path: '/v1/cni/add', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(body);
  });
  t.is(status, 413);
  t.is(admitted, 0);
});

test('CniServer.close: an ADD stuck reading its pod from the API server is answered "retry" at once, and the close does not wait for the read', async (t) => {
  const dir = testTempDir(t);
  const sock = path.join(dir, 'cni.sock');
  const stateFile = path.join(dir, 'state.json');
  writeState(stateFile, { version: 1, node: 'n1', meshedNamespaces: ['shop'] });
  // The agent's admission of this pod waits on its API read (up to the list timeout, 60 s) until released.
  let reading!: () => void;
  const inRead = new Promise<void>((r) => (reading = r));
  let finishRead!: (a: AdmitAnswer) => void;
  const read = new Promise<AdmitAnswer>((r) => (finishRead = r));
  const srv = new CniServer(sock, { admit: () => (reading(), read), release: () => {}, onError: () => {} });
  await srv.listen();
  const run = runPlugin(env('ADD'), conf({ agentSocket: sock, stateFile, addTimeoutMs: 20_000 }));
  await inRead;
  const started = performance.now();
  // The read is released only once close() has returned and the plugin has its answer: a close
  // that waited for the read would not return at all (so the bound, well within the plugin's 20 s
  // and the read's 60 s, fails the test).
  const [closedAt, add] = await within(Promise.all([srv.close().then(() => performance.now()), run]), 10_000, () => 'close() did not return within 10 s with an ADD stuck in its API read: it waits for the read');
  finishRead({ result: 'meshed', policy: 'all-authenticated', failsClosed: true });
  t.log(`close() with an ADD stuck in its API read took ${Math.round(closedAt - started)} ms`);
  t.is(add.exitCode, 1, add.stdout);
  const err = JSON.parse(add.stdout);
  t.is(err.code, CNI_ERRORS.tryAgainLater, 'a pod of a meshed namespace: "try again later", the runtime retries against the next agent');
  t.regex(err.msg, /mesh-agent could not decide \(the agent is stopping; the next agent on the node decides\), and namespace shop is meshed/);
  t.false(fs.existsSync(sock), 'the socket is gone');
});

test('runPlugin: DEL, CHECK, GC and STATUS succeed even on input the plugin cannot read (libcni stops a chain\'s DEL at the first failing plugin, and ours runs first); VERSION reads no configuration', async (t) => {
  const dir = testTempDir(t);
  const none = { agentSocket: path.join(dir, 'none.sock'), stateFile: path.join(dir, 'state.json') };
  const bad: Array<[string, Record<string, string>, string]> = [
    ['a cniVersion it does not speak', {}, conf({ ...none, cniVersion: '9.9.9' })],
    ['an entry it cannot read', {}, conf({ ...none, addTimeoutMs: 'soon' })],
    ['CNI_ARGS that do not parse', { CNI_ARGS: 'K8S_POD_NAME' }, conf(none)],
    ['stdin that is not JSON', {}, '{nope'],
  ];
  for (const cmd of ['DEL', 'CHECK', 'GC', 'STATUS']) {
    for (const [what, extra, stdin] of bad) {
      const r = await runPlugin(env(cmd, extra), stdin);
      t.deepEqual([r.exitCode, r.stdout], [0, ''], `${cmd} with ${what}: ${r.stdout}`);
      t.regex(r.log, new RegExp(`^mesh-agent-cni: ${cmd}: nothing done: `), `${cmd} with ${what}: the runtime's log says why`);
    }
  }
  // ADD still refuses what it cannot read, with the spec's error.
  const add = await runPlugin(env('ADD'), conf({ ...none, cniVersion: '9.9.9' }));
  t.is(add.exitCode, 1);
  t.is(JSON.parse(add.stdout).code, CNI_ERRORS.incompatibleVersion);
  // The spec's error object carries the request's cniVersion, also for errors raised before the
  // entry is read (when it can be read at all).
  const errVersion: Array<[string, Record<string, string | undefined>, string, string]> = [
    ['an entry it cannot read', {}, conf({ ...none, cniVersion: '0.4.0', addTimeoutMs: 'soon' }), '0.4.0'],
    ['no CNI_CONTAINERID', { CNI_CONTAINERID: undefined }, conf({ ...none, cniVersion: '1.1.0' }), '1.1.0'],
    ['no CNI_COMMAND', { CNI_COMMAND: undefined }, conf({ ...none, cniVersion: '0.3.1' }), '0.3.1'],
    ['a cniVersion it does not speak', {}, conf({ ...none, cniVersion: '9.9.9' }), '9.9.9'],
    ['an entry without cniVersion (read as 0.3.1)', {}, JSON.stringify({ name: 'n', type: 'mesh-agent-cni', addTimeoutMs: -1 }), '0.3.1'],
    ['a cniVersion that is not a version', {}, conf({ ...none, cniVersion: '{"x"}' }), '1.0.0'],
    ['stdin that is not JSON', {}, '{nope', '1.0.0'],
  ];
  for (const [what, extra, stdin, version] of errVersion) {
    const r = await runPlugin(env('ADD', extra as Record<string, string>), stdin);
    t.is(r.exitCode, 1, what);
    t.is(JSON.parse(r.stdout).cniVersion, version, `ADD with ${what}: the error's cniVersion`);
  }
  // VERSION answers whatever the runtime's own version (as libcni's skel, which reads no stdin for it).
  for (const stdin of ['{"cniVersion":"1.2.0"}', '', '{nope']) {
    const v = await runPlugin({ CNI_COMMAND: 'VERSION' }, stdin);
    t.is(v.exitCode, 0, stdin);
    t.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    t.is(JSON.parse(v.stdout).cniVersion, '1.1.0', `${stdin}: a version it does not speak, or none: the newest it does`);
  }
  // The spec's VERSION result: "cniVersion: the value of cniVersion specified on input".
  for (const version of ['0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
    const v = await runPlugin({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: version }));
    t.is(JSON.parse(v.stdout).cniVersion, version, 'the request\'s version echoed');
  }
});

test('the executable: VERSION, and an ADD\'s error object on stdout with a non-zero exit', async (t) => {
  const exec = (e: Record<string, string>, stdin: string) => new Promise<{ code: number; stdout: string }>((resolve) => {
    const p = execFile(process.execPath, ['--disable-warning=ExperimentalWarning', BIN], { env: { PATH: process.env.PATH!, ...e } }, (err, stdout) => resolve({ code: err ? (err as any).code : 0, stdout }));
    p.stdin!.end(stdin);
  });
  const v = await exec({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  t.is(v.code, 0);
  t.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  const bad = await exec({ CNI_COMMAND: 'ADD' }, 'not json');
  t.is(bad.code, 1);
  t.is(JSON.parse(bad.stdout).code, CNI_ERRORS.decodeFailure);
});
