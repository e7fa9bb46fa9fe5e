// tap on a simulated 2-node cluster with identity off, where a cross-node request is parsed by
// both agents (the client's proxies it out, the server's captures it in): it is one record, as
// Linkerd's tap shows it once for the tapped resource's own proxy.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let web: SimPod; // node 0
let api: SimPod; // node 1
const children: ChildProcess[] = [];

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: this test builds network namespaces, cgroups, nftables rules and loads BPF; run it as root (sudo ./dev test)');
  return { cluster, mesh };
}

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  web = await cluster.addPod(0, { deployment: 'web', namespace: NS, serviceAccountName: 'web' });
  api = await cluster.addPod(1, { deployment: 'api', namespace: NS, serviceAccountName: 'api' });
  const b = api.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'api', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(b);
  await new JsonLines(b).waitFor((o) => o.listening, 30_000, 'api listening');
  await cluster.settled();
  mesh = await startMesh(cluster, { reportIntervalMs: 1000, identity: false });
  await mesh.waitAgents((s) => s.discovery.pods >= 2, 'discovery of both pods');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

for (const [resource, direction] of [['deploy/web', 'out'], ['deploy/api', 'in']] as const) {
  test.serial(`identity off: a cross-node request is one tap record of ${resource} (proxy=${direction}), not one per agent`, async (t) => {
    const { cluster, mesh } = need();
    await until(() => mesh.cli(['stat', 'deploy', '-n', NS, '--controller', mesh.controllerAddr]), (r) => /\nweb\s/.test(r.stdout) && /\napi\s/.test(r.stdout), 'the controller to know both pods');
    const tapProc = cluster.spawnInControlPlane(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'tap', resource, '-n', NS, '--controller', mesh.controllerAddr], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(tapProc);
    let tapped = '';
    let stderr = '';
    tapProc.stdout!.setEncoding('utf8').on('data', (d: string) => (tapped += d));
    tapProc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await until(async () => stderr, (s) => /tapping/.test(s), 'tap started');
    const first = `/first-${randomBytes(6).toString('hex')}`;
    const last = `/last-${randomBytes(6).toString('hex')}`;
    // Both agents get the tap filter (resent as reports come): a request after the tap started on both.
    await until(async () => {
      const r = await web.exec('curl', ['-s', '-m', '10', `http://${api.ip}:8080${first}`], { timeoutMs: 15_000 });
      return r.stdout + tapped;
    }, (o) => o.includes(`:path=${first}`), 'a tap line for the first request');
    // Then, once more each, and a last one: when its lines are in, the marked one's are too.
    const marked = `/marked-${randomBytes(6).toString('hex')}`;
    for (const p of [marked, last]) {
      const r = await web.exec('curl', ['-s', '-m', '10', `http://${api.ip}:8080${p}`], { timeoutMs: 15_000 });
      t.is(r.stdout, 'api');
    }
    await until(async () => tapped, (o) => o.split('\n').some((l) => l.startsWith('end') && o.includes(`:path=${last}`)), 'the last request\'s lines');
    tapProc.kill('SIGINT');
    const reqs = tapped.split('\n').filter((l) => l.startsWith('req') && l.includes(`:path=${marked}`));
    t.is(reqs.length, 1, tapped.slice(0, 3000));
    t.regex(reqs[0] ?? '', new RegExp(`proxy=${direction}`));
  });
}
