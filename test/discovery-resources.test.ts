// `mesh-agent controller --resources` end to end: the real controller process reads Services,
// EndpointSlices and Pods from YAML and JSON files and an agent's discovery link on loopback
// follows every edit; a bad file keeps its last good objects and the controller says so; a
// file removed from the directory takes its objects with it; one file given and then missing
// keeps everything. Bad setups fail at start with the fix.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { requestJson } from '../src/controller/client.ts';
import { DiscoveryClient } from '../src/discovery/client.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { exited } from './helpers/procs.ts';
import { freePort } from './helpers/ports.ts';
import { runCli } from './fixtures/manifests/run-cli.ts';
import { discoveryMode } from '../src/cli/controller.ts';
import { until, waitFor } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { mountConfigMap, updateConfigMap } from './helpers/configmap-volume.ts';
import { DiscoveryHub } from '../src/discovery/hub.ts';
import { ResourceFiles } from '../src/discovery/resource-files.ts';

const BIN = meshBin();

const services = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: shop}
`;
const slices = (ips: string[]) => JSON.stringify({
  apiVersion: 'v1', kind: 'List', items: [{
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-a', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: ips.map((ip, i) => ({ addresses: [ip], targetRef: { kind: 'Pod', name: `web-${i}` }, nodeName: `n${i}` })),
  }],
});
const pods = (names: string[]) => names.map((n, i) => `---
apiVersion: v1
kind: Pod
metadata: {name: ${n}, namespace: shop, ownerReferences: [{kind: StatefulSet, name: web, controller: true}]}
spec: {nodeName: n${i}}
status: {phase: Running, podIP: 10.1.0.${i + 5}}
`).join('');

/** Saves as editors do: a new file renamed over the old one. */
function save(file: string, text: string) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

async function startController(t: any, resources: string) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '--listen', `127.0.0.1:${port}`, '--dashboard-listen', 'off', '--resources', resources], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited(child);
  });
  await until(() => requestJson(url, 'GET', '/v1/status', undefined, 1000), (s: any) => s.discovery?.synced === true, 'controller up and synced', { ms: 20_000, context: () => log });
  const store = new DiscoveryStore();
  const errors: string[] = [];
  const client = new DiscoveryClient({ url, node: 'n0', agentId: 'a', store, log: () => {}, onError: (m) => errors.push(m) });
  client.start();
  t.teardown(() => client.stop());
  await waitFor(() => client.state === 'synced', 10_000);
  return { url, store, client, errors, log: () => log, status: () => requestJson(url, 'GET', '/v1/status') };
}

const endpointsOf = (s: DiscoveryStore) => s.byVip('10.96.0.10', 80)?.endpoints.map((e) => `${e.ip}:${e.port}@${e.node}`) ?? null;

test('a directory of YAML and JSON: the agent follows edits, a bad file keeps its last good objects and is reported, a removed file takes its objects', async (t) => {
  const dir = testTempDir(t);
  fs.writeFileSync(path.join(dir, 'services.yaml'), services);
  fs.writeFileSync(path.join(dir, 'slices.json'), slices(['10.1.0.5', '10.1.0.6']));
  fs.writeFileSync(path.join(dir, 'pods.yml'), pods(['web-0', 'web-1']));
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a resource file');
  const c = await startController(t, dir);
  t.deepEqual(endpointsOf(c.store), ['10.1.0.5:8080@n0', '10.1.0.6:8080@n1']);
  t.like(c.store.podByIp('10.1.0.6'), { name: 'web-1', kind: 'statefulset', owner: 'web', node: 'n1' });
  t.like((await c.status()).discovery, { configured: true, services: 1, slices: 1, endpoints: 2, pods: 2, source: { kind: 'files', path: dir, files: 3, badFiles: [] } });

  save(path.join(dir, 'slices.json'), slices(['10.1.0.6', '10.1.0.7', '10.1.0.8']));
  await waitFor(() => endpointsOf(c.store)?.length === 3, 10_000);
  t.deepEqual(endpointsOf(c.store), ['10.1.0.6:8080@n0', '10.1.0.7:8080@n1', '10.1.0.8:8080@n2']);

  // A broken file: what it held stays, the controller says which file and where.
  save(path.join(dir, 'pods.yml'), 'kind: Pod\nmetadata: {name: [unclosed\n');
  const bad = await until(() => c.status(), (s: any) => s.discovery.source.badFiles.length === 1, 'the bad file reported', { ms: 10_000 });
  t.is(bad.discovery.source.badFiles[0].file, path.join(dir, 'pods.yml'));
  t.regex(bad.discovery.source.badFiles[0].error, /pods\.yml:\d+: invalid YAML/);
  t.regex(bad.discovery.source.lastError, /keeping the last good objects of pods\.yml \(2\)/);
  t.regex(c.log(), /"level":"warn","msg":"discovery: .*pods\.yml:\d+: invalid YAML.*keeping the last good objects of pods\.yml/);
  t.is(c.store.counts().pods, 2);
  // Meanwhile other files still work.
  save(path.join(dir, 'slices.json'), slices(['10.1.0.6']));
  await waitFor(() => endpointsOf(c.store)?.length === 1, 10_000);
  t.is(c.store.counts().pods, 2, 'the broken file\'s pods are still there');

  save(path.join(dir, 'pods.yml'), pods(['web-0']));
  await waitFor(() => c.store.counts().pods === 1, 10_000);
  t.is(c.store.podByIp('10.1.0.6'), undefined);
  t.like((await c.status()).discovery.source, { badFiles: [], lastError: null });

  fs.rmSync(path.join(dir, 'services.yaml'));
  await waitFor(() => c.store.counts().services === 0, 10_000);
  t.is(c.store.byVip('10.96.0.10', 80), null);
  // The directory itself going away is not "delete everything". Renamed away in one step: a
  // recursive rm deletes file by file, and a rescan between two of them rightly sees a removed file.
  fs.renameSync(dir, `${dir}.gone`);
  t.teardown(() => fs.rmSync(`${dir}.gone`, { recursive: true, force: true }));
  const gone = await until(() => c.status(), (s: any) => /ENOENT; keeping the last good objects/.test(s.discovery.source.lastError ?? ''), 'the missing directory reported', { ms: 10_000 });
  t.like(gone.discovery, { slices: 1, pods: 1 });
  t.is(c.store.counts().pods, 1);
  t.is(c.client.status().reconnects, 0, 'all of it as deltas on one stream');
  t.deepEqual(c.errors, []);
});

test('one file: edits followed; the file missing keeps its objects and says so', async (t) => {
  const dir = testTempDir(t);
  const file = path.join(dir, 'cluster.yaml');
  fs.writeFileSync(file, services + pods(['web-0']));
  const c = await startController(t, file);
  t.truthy(c.store.byVip('10.96.0.10', 80));
  t.is(c.store.counts().pods, 1);
  save(file, services + pods(['web-0', 'web-1']));
  await waitFor(() => c.store.counts().pods === 2, 10_000);
  fs.rmSync(file);
  const st = await until(() => c.status(), (s: any) => /is missing; keeping its last good objects/.test(s.discovery.source.lastError ?? ''), 'the missing file reported', { ms: 10_000 });
  t.is(st.discovery.pods, 2);
  t.is(c.store.counts().pods, 2);
  t.truthy(c.store.byVip('10.96.0.10', 80));
});

test('a Namespace\'s skip-inbound ports reach its pods that set none, from whichever file holds it, and follow its edits', async (t) => {
  const dir = testTempDir(t);
  // The namespace in a file read after the pods' one: it applies all the same.
  const ns = (ann: string) => `apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {${ann}}}\n`;
  fs.writeFileSync(path.join(dir, 'a-pods.yaml'), pods(['web-0']));
  // Unquoted, as on a pod: YAML reads a number, taken as its text (as the pod's own and the agent's reading).
  fs.writeFileSync(path.join(dir, 'b-ns.yaml'), ns('config.linkerd.io/skip-inbound-ports: 7001'));
  const c = await startController(t, dir);
  t.deepEqual(c.store.podByIp('10.1.0.5')?.skipInbound, [[7001, 7001]]);
  save(path.join(dir, 'b-ns.yaml'), ns('mesh-agent.io/skip-inbound-ports: "7002-7003"'));
  await waitFor(() => c.store.podByIp('10.1.0.5')?.skipInbound?.join() === '7002,7003', 10_000);
  // A pod added later joins the namespace as it is now; one with its own keeps its own.
  const own = `---\napiVersion: v1\nkind: Pod\nmetadata: {name: own, namespace: shop, annotations: {mesh-agent.io/skip-inbound-ports: "9000"}}\nstatus: {phase: Running, podIP: 10.1.0.7}\n`;
  save(path.join(dir, 'a-pods.yaml'), pods(['web-0', 'web-1']) + own);
  await waitFor(() => c.store.counts().pods === 3, 10_000);
  t.deepEqual(c.store.podByIp('10.1.0.6')?.skipInbound, [[7002, 7003]]);
  t.deepEqual(c.store.podByIp('10.1.0.7')?.skipInbound, [[9000, 9000]]);
  // A bad value: its pods read none, and the status says so until the value is fixed, across reloads of other files.
  save(path.join(dir, 'b-ns.yaml'), ns('mesh-agent.io/skip-inbound-ports: "70000"'));
  const bad = await until(() => c.status(), (s: any) => /Namespace shop: annotation mesh-agent\.io\/skip-inbound-ports "70000"/.test(s.discovery.source.lastError ?? ''), 'the bad value in the status', { ms: 10_000 });
  t.is(bad.discovery.source.badFiles.length, 0, 'the file itself is good');
  t.is(c.store.podByIp('10.1.0.5')?.skipInbound, undefined);
  const reloads = bad.discovery.source.reloads;
  save(path.join(dir, 'a-pods.yaml'), pods(['web-0', 'web-1']) + own + '\n');
  const after = await until(() => c.status(), (s: any) => s.discovery.source.reloads > reloads, 'the other file reloaded', { ms: 10_000 });
  t.regex(after.discovery.source.lastError ?? '', /Namespace shop: .*"70000"/, 'still bad, still said');
  save(path.join(dir, 'b-ns.yaml'), ns('mesh-agent.io/skip-inbound-ports: "7004"'));
  const fixed = await until(() => c.status(), (s: any) => s.discovery.source.lastError === null, 'the fixed value clears it', { ms: 10_000 });
  t.is(fixed.discovery.source.lastError, null);
  fs.rmSync(path.join(dir, 'b-ns.yaml'));
  await waitFor(() => c.store.podByIp('10.1.0.5')?.skipInbound === undefined && c.store.podByIp('10.1.0.6')?.skipInbound === undefined, 10_000);
  t.deepEqual(c.store.podByIp('10.1.0.7')?.skipInbound, [[9000, 9000]]);
  t.is(c.client.status().reconnects, 0);
});

test('bad setups fail at start and name the fix', (t) => {
  const dir = testTempDir(t);
  // Nothing listens: the controller stops before it would.
  const missing = runCli(['controller', '--listen', '127.0.0.1:8086', '--resources', path.join(dir, 'nope')]);
  t.is(missing.status, 1);
  t.regex(missing.stderr, /^mesh-agent: discovery: --resources .*nope: no such file or directory$/m);
  fs.writeFileSync(path.join(dir, 'bad.yaml'), 'a: [');
  const bad = runCli(['controller', '--listen', '127.0.0.1:8086', '--resources', dir]);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /^mesh-agent: discovery: .*bad\.yaml:\d+: invalid YAML/m);
  const both = runCli(['controller', '--resources', dir, '--kubeconfig', '/x']);
  t.is(both.status, 2, 'a usage error');
  t.regex(both.stderr, /--resources and --kubeconfig are two sources of the same discovery; pass one/);
});

test('which source: --resources, --kubeconfig, in a pod the API server, else none', (t) => {
  t.deepEqual(discoveryMode({ resources: '/r' }, {}), { kind: 'files', path: '/r' });
  t.deepEqual(discoveryMode({ kubeconfig: '/k' }, {}), { kind: 'kubernetes', kubeconfig: '/k' });
  t.deepEqual(discoveryMode({}, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }), { kind: 'kubernetes' });
  t.deepEqual(discoveryMode({ resources: '/r' }, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }), { kind: 'files', path: '/r' }, 'files win over the pod\'s default');
  t.deepEqual(discoveryMode({}, {}), { kind: 'off' });
  t.throws(() => discoveryMode({ resources: '/r', kubeconfig: '/k' }, {}), { message: /pass one/ });
});

test('one file from a ConfigMap volume (a symlink through ..data): kubelet\'s update of the ConfigMap is followed', async (t) => {
  const dir = mountConfigMap(testTempDir(t), { 'cluster.yaml': services + pods(['web-0']) });
  const hub = new DiscoveryHub({ log: () => {} });
  const errors: string[] = [];
  const files = new ResourceFiles(path.join(dir, 'cluster.yaml'), hub, (e) => errors.push(e.message));
  files.start();
  t.teardown(() => files.stop());
  t.like(hub.counts(), { services: 1, pods: 1 });
  updateConfigMap(dir, { 'cluster.yaml': services + pods(['web-0', 'web-1']) }, '2025_01_01_00_01_00.000000001');
  await waitFor(() => hub.counts().pods === 2, 5000);
  t.deepEqual(errors, []);
});

test('one file missing is said once, however many events its directory sees meanwhile, and again after it came back and went again', (t) => {
  const dir = testTempDir(t);
  const file = path.join(dir, 'cluster.yaml');
  fs.writeFileSync(file, services + pods(['web-0']));
  const hub = new DiscoveryHub({ log: () => {} });
  const errors: string[] = [];
  const files = new ResourceFiles(file, hub, (e) => errors.push(e.message));
  files.start();
  // Reloads driven by hand, one per directory event: the kernel's events are not ours to count.
  files.stop();
  const reload = () => (files as unknown as { reload(): void }).reload();
  const missing = () => errors.filter((m) => /cluster\.yaml is missing; keeping its last good objects/.test(m)).length;
  fs.rmSync(file);
  for (const n of ['a.txt', 'b.txt', 'c.txt']) {
    fs.writeFileSync(path.join(dir, n), 'other files beside it');
    reload();
  }
  t.is(missing(), 1, errors.join('\n'));
  t.regex(files.state().lastError ?? '', /is missing/);
  fs.writeFileSync(file, services + pods(['web-0', 'web-1']));
  reload();
  t.is(hub.counts().pods, 2);
  fs.rmSync(file);
  reload();
  reload();
  t.is(missing(), 2, errors.join('\n'));
  t.is(hub.counts().pods, 2, 'kept');
});
