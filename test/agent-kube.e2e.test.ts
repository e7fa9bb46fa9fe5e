// `mesh-agent run` in cluster mode on a simulated node: pods come from a stand-in API server
// (real list and watch protocol) through @kubernetes/client-node, and the datapath follows
// additions, annotation changes, deletions and a dropped watch.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH, type SimNode } from '../src/sim/index.ts';
import { JsonLines, JsonRpc } from './helpers/procs.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { trackLive, untrackLive } from '../src/sim/exit-cleanup.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = meshBin();
const RUNNER = path.join(here, 'fixtures/apiserver-runner.ts');
let node: SimNode | undefined;
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
// Its kubeconfig goes with the simulated node when the test process is ended by a signal (ava's
// SIGTERM at a timeout, Ctrl-C, CI), where test.after.always does not run.
const tmpDir = { destroySync: () => fs.rmSync(tmp, { recursive: true, force: true }) };
trackLive(tmpDir);

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  untrackLive(tmpDir);
  tmpDir.destroySync();
});

test('pods from the API server are meshed, changed and removed while traffic flows', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'systemd' });
  const web = await node.addPod({ name: 'web', namespace: 'shop' });
  const api = await node.addPod({ name: 'api', namespace: 'shop' });

  const apiserverProc = node.spawnInNode(process.execPath, [RUNNER]);
  children.push(apiserverProc);
  const apiserver = new JsonRpc(apiserverProc);
  const { url } = await apiserver.io.waitFor((o) => o.url, 10_000, 'API server up');
  await apiserver.call('addNamespace', ['shop', { 'mesh-agent.io/inject': 'enabled' }]);
  await apiserver.call('addPod', [{ name: 'web', namespace: 'shop', uid: web.uid, nodeName: node.name, ip: web.ip }]);
  await apiserver.call('addPod', [{ name: 'api', namespace: 'shop', uid: api.uid, nodeName: node.name, ip: api.ip }]);
  await apiserver.call('addPod', [{ name: 'elsewhere', namespace: 'shop', nodeName: 'another-node', ip: '10.9.9.9' }]);

  const kubeconfig = path.join(tmp, 'kubeconfig');
  fs.writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'sim',
    clusters: [{ name: 'sim', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'agent', user: { token: 'test' } }],
    contexts: [{ name: 'sim', context: { cluster: 'sim', user: 'agent' } }],
  }));
  let log = '';
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--kubeconfig', kubeconfig, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191']);
  children.push(agent);
  agent.stderr!.on('data', (d) => (log += d));

  const status = async () => JSON.parse((await node!.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status'])).stdout);
  const until = async (ok: (s: any) => boolean, what: string) => {
    for (let i = 0; i < 100; i++) {
      const s = await status().catch(() => null);
      if (s && ok(s)) return s;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`timed out waiting for ${what}; agent log: ${log.slice(-3000)}`);
  };
  const podOf = (s: any, name: string) => s.pods.find((p: any) => p.name === name);

  const srv = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(srv);
  const srvLog = new JsonLines(srv);
  await srvLog.waitFor((o) => o.listening, 10_000, 'api listening');
  const sourceSeen = async () => {
    const n = srvLog.lines.filter((o) => o.accepted).length;
    const r = await web.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${api.ip}:8080`, '--send', 'x'], { timeoutMs: 15_000 });
    t.is(r.code, 0, r.stderr);
    await srvLog.waitFor(() => srvLog.lines.filter((o) => o.accepted).length > n, 5000, 'accept');
    return srvLog.lines.filter((o) => o.accepted).at(-1).accepted.remoteAddress.replace('::ffff:', '');
  };

  let s = await until((s) => s.podSource.synced && podOf(s, 'web')?.meshed, 'web meshed from the API server');
  t.is(s.pods.length, 2, 'only this node\'s pods');
  t.is((await node.execInNode('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:4191/ready'])).stdout, '200');
  t.is(await sourceSeen(), node.nodeIp, 'through the proxy');

  await apiserver.call('setPodAnnotations', ['shop', 'web', { 'mesh-agent.io/skip-outbound-ports': '8080' }]);
  await until((s) => podOf(s, 'web')?.skipOutboundPorts === '8080', 'annotation change applied');
  t.is(await sourceSeen(), web.ip, 'skip port applies to the next connection');

  await apiserver.call('dropWatches');
  await apiserver.call('setPodAnnotations', ['shop', 'web', {}]);
  s = await until((s) => podOf(s, 'web')?.skipOutboundPorts === '', 'change after a dropped watch');
  t.true(s.podSource.restarts >= 1);
  t.is(await sourceSeen(), node.nodeIp);

  await apiserver.call('deletePod', ['shop', 'web']);
  await until((s) => !podOf(s, 'web'), 'web removed');
  t.is(await sourceSeen(), web.ip, 'a deleted pod is no longer meshed');
});
