// The simulated node, built for real (root, network namespaces, cgroup v2).
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { destroyCgroupTree, parseCgroup2Mount } from '../src/sim/cgroup2.ts';
import { hostVethName, ownedTempPrefix, type TempDirKind } from '../src/sim/layout.ts';
import { addNetns, deleteNetns, deletePodNetwork } from '../src/sim/network.ts';
import {
  cgroupOfPid,
  cleanupLeftovers,
  createNode,
  findCgroup2Mount,
  TOOLS_PATH,
  type CgroupDriver,
  type QosClass,
  type SimNode,
  type SimPod,
} from '../src/sim/index.ts';
import { ipNetnsList, isDead } from './helpers/sim-checks.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const NODE = process.execPath;

async function node(t: ExecutionContext, driver: CgroupDriver = 'systemd'): Promise<SimNode> {
  const n = await createNode({ driver });
  t.teardown(() => n.destroy());
  return n;
}

/** Lines of a child's stdout as parsed JSON, in order. */
function jsonLines(child: ChildProcess): AsyncIterator<Record<string, any>> {
  const rl = createInterface({ input: child.stdout! });
  const it = rl[Symbol.asyncIterator]();
  return {
    async next() {
      const r = await it.next();
      return r.done ? r : { done: false, value: JSON.parse(r.value) };
    },
  };
}

/** Starts a tools.ts server and resolves once it says it listens. */
async function server(t: ExecutionContext, spawnFn: (cmd: string, args: string[], o: object) => ChildProcess, args: string[]) {
  const child = spawnFn(NODE, [TOOLS_PATH, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const lines = jsonLines(child);
  const first = await lines.next();
  t.truthy(first.value?.listening, `server did not start: ${JSON.stringify(first.value)}`);
  return { child, lines };
}

function parseOut(stdout: string): Record<string, any>[] {
  return stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function netnsInode(file: string): number {
  return fs.statSync(file).ino;
}

function pidNetnsInode(pid: number): number {
  const m = /^net:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`));
  if (!m) throw new Error(`unexpected /proc/${pid}/ns/net`);
  return Number(m[1]);
}

/** Resolves with [code, signal] even if the child already exited before the call. */
function exitOf(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve([child.exitCode, child.signalCode]);
  return once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
}

async function eventually(cond: () => boolean, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

test.serial('runs as root (the simulated node needs network namespaces and cgroups)', (t) => {
  t.is(process.getuid?.(), 0, 'these tests build real namespaces and cgroups: run them as root');
});

test('parseCgroup2Mount finds the cgroup2 mount in hybrid, escaped and absent cases', (t) => {
  const hybrid = [
    '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
    '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
    '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
  ].join('\n');
  t.is(parseCgroup2Mount(hybrid), '/sys/fs/cgroup/unified');
  t.is(parseCgroup2Mount('29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate'), '/sys/fs/cgroup');
  t.is(parseCgroup2Mount('50 23 0:40 / /mnt/my\\040cg rw - cgroup2 none rw'), '/mnt/my cg');
  // A bind of a sub-tree would shift every /proc/<pid>/cgroup path: not usable as the root.
  t.is(parseCgroup2Mount('51 23 0:40 /sub /mnt/sub rw - cgroup2 none rw'), undefined);
  t.is(parseCgroup2Mount('32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu'), undefined);
});

test('findCgroup2Mount returns a real cgroup2 directory', (t) => {
  const mount = findCgroup2Mount();
  t.true(fs.existsSync(path.join(mount, 'cgroup.procs')) && fs.existsSync(path.join(mount, 'cgroup.subtree_control')));
  const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.includes(` ${mount} `));
  t.regex(line ?? '', / - cgroup2 /);
});

const UIDS: Record<QosClass, string> = {
  Guaranteed: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  Burstable: 'c5a0b7f2-6d0e-4d8a-9b3a-2f1e0c9d8e7f',
  BestEffort: '0e8f7d6c-5b4a-4392-8170-6f5e4d3c2b1a',
};

// The expected paths are written out literally: they are what kubelet makes, not what our code computes.
const EXPECTED: Record<CgroupDriver, Record<QosClass, RegExp>> = {
  systemd: {
    Guaranteed: /^kubepods\.slice\/kubepods-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427\.slice\/cri-containerd-[0-9a-f]{64}\.scope$/,
    Burstable:
      /^kubepods\.slice\/kubepods-burstable\.slice\/kubepods-burstable-podc5a0b7f2_6d0e_4d8a_9b3a_2f1e0c9d8e7f\.slice\/cri-containerd-[0-9a-f]{64}\.scope$/,
    BestEffort:
      /^kubepods\.slice\/kubepods-besteffort\.slice\/kubepods-besteffort-pod0e8f7d6c_5b4a_4392_8170_6f5e4d3c2b1a\.slice\/cri-containerd-[0-9a-f]{64}\.scope$/,
  },
  cgroupfs: {
    Guaranteed: /^kubepods\/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427\/[0-9a-f]{64}$/,
    Burstable: /^kubepods\/burstable\/podc5a0b7f2-6d0e-4d8a-9b3a-2f1e0c9d8e7f\/[0-9a-f]{64}$/,
    BestEffort: /^kubepods\/besteffort\/pod0e8f7d6c-5b4a-4392-8170-6f5e4d3c2b1a\/[0-9a-f]{64}$/,
  },
};

for (const driver of ['systemd', 'cgroupfs'] as const) {
  test(`${driver} driver: every QoS class gets kubelet's exact cgroup path, on disk`, async (t) => {
    const n = await node(t, driver);
    t.true(n.cgroupRoot.startsWith(findCgroup2Mount() + '/mesh-sim-'));
    t.true(n.cgroupRoot.includes(String(process.pid)), 'the root names its creator pid');
    for (const qos of ['Guaranteed', 'Burstable', 'BestEffort'] as const) {
      const pod = await n.addPod({ name: `p-${qos.toLowerCase()}`, qos, uid: UIDS[qos] });
      const rel = path.relative(n.cgroupRoot, pod.containerCgroup);
      t.regex(rel, EXPECTED[driver][qos], `${driver}/${qos}`);
      t.is(path.dirname(pod.containerCgroup), pod.podCgroup);
      t.true(fs.existsSync(path.join(pod.containerCgroup, 'cgroup.procs')), `${pod.containerCgroup} exists`);
      t.true(rel.endsWith(pod.containerId) || rel.endsWith(`cri-containerd-${pod.containerId}.scope`));
    }
  });
}

test('a process spawned in a pod runs in its container cgroup and its network namespace', async (t) => {
  const n = await node(t, 'cgroupfs');
  const pod = await n.addPod({ name: 'web', qos: 'Burstable' });
  const { child } = await server(t, pod.spawn.bind(pod), ['tcp-echo', '--port', '8080']);
  const cg2 = findCgroup2Mount();
  t.is(path.join(cg2, cgroupOfPid(child.pid!)), pod.containerCgroup);
  t.is(pidNetnsInode(child.pid!), netnsInode(`/var/run/netns/${pod.netns}`));
  t.not(pidNetnsInode(child.pid!), pidNetnsInode(process.pid));
  const r = await pod.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`inet ${pod.ip.replaceAll('.', '\\.')}/32 `));
});

test('a node process runs in the node namespace and in no pod cgroup', async (t) => {
  const n = await node(t);
  const { child } = await server(t, n.spawnInNode.bind(n), ['tcp-echo', '--port', '7000']);
  t.is(pidNetnsInode(child.pid!), netnsInode(`/var/run/netns/${n.nodeNs}`));
  const cg = path.join(findCgroup2Mount(), cgroupOfPid(child.pid!));
  t.is(cg, n.nodeCgroup);
  t.false(cg.startsWith(n.cgroupRoot + '/'));
  const r = await n.execInNode('ip', ['-4', '-o', 'addr', 'show', 'dev', 'lo']);
  t.regex(r.stdout, new RegExp(`inet ${n.nodeIp.replaceAll('.', '\\.')}/32 `));
});

test('pod to pod TCP crosses the node and keeps both pod IPs', async (t) => {
  const n = await node(t);
  const a = await n.addPod({ name: 'client' });
  const b = await n.addPod({ name: 'server', qos: 'Guaranteed' });
  t.not(a.ip, b.ip);
  const { lines } = await server(t, b.spawn.bind(b), ['tcp-echo', '--port', '8080']);
  const r = await a.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${b.ip}:8080`, '--send', 'hello pod'], { timeoutMs: 10_000 });
  t.is(r.code, 0, r.stderr);
  const [connected, reply] = parseOut(r.stdout);
  t.like(connected.connected, { localAddress: a.ip, remoteAddress: b.ip, remotePort: 8080 });
  t.deepEqual(reply, { reply: 'hello pod' });
  const accepted = (await lines.next()).value;
  t.like(accepted?.accepted, { remoteAddress: a.ip, remotePort: connected.connected.localPort, localAddress: b.ip });
  // Calico-style: the pod has no on-link route to its peer, so packets go via the node.
  const route = await a.exec('ip', ['-4', 'route', 'get', b.ip]);
  t.regex(route.stdout, /via 169\.254\.1\.1 dev eth0/);
  const back = await n.execInNode('ip', ['-4', 'route', 'get', b.ip]);
  t.regex(back.stdout, /dev cali[0-9a-f]{11}/);
});

test('pod to node IP and node to pod both connect', async (t) => {
  const n = await node(t);
  const pod = await n.addPod({ name: 'p' });
  await server(t, n.spawnInNode.bind(n), ['tcp-echo', '--port', '9000']);
  await server(t, pod.spawn.bind(pod), ['tcp-echo', '--port', '9001']);
  const up = await pod.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${n.nodeIp}:9000`, '--send', 'up'], { timeoutMs: 10_000 });
  t.is(up.code, 0, up.stderr);
  t.like(parseOut(up.stdout)[0].connected, { localAddress: pod.ip, remoteAddress: n.nodeIp });
  const down = await n.execInNode(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${pod.ip}:9001`, '--send', 'down'], { timeoutMs: 10_000 });
  t.is(down.code, 0, down.stderr);
  t.like(parseOut(down.stdout)[0].connected, { localAddress: n.nodeIp, remoteAddress: pod.ip });
  t.deepEqual(parseOut(down.stdout)[1], { reply: 'down' });
});

test('tools: UDP echo, server-speaks-first banner, many sequential connections, clear failure', async (t) => {
  const n = await node(t);
  const a = await n.addPod({ name: 'a', qos: 'BestEffort' });
  const b = await n.addPod({ name: 'b' });
  await server(t, b.spawn.bind(b), ['udp-echo', '--port', '5353']);
  await server(t, b.spawn.bind(b), ['tcp-banner', '--port', '3306', '--banner', 'HELLO-MYSQL\n']);
  await server(t, b.spawn.bind(b), ['tcp-echo', '--port', '8080']);
  const udp = await a.exec(NODE, [TOOLS_PATH, 'udp-client', '--connect', `${b.ip}:5353`, '--send', 'dgram'], { timeoutMs: 10_000 });
  t.is(udp.code, 0, udp.stderr);
  t.like(parseOut(udp.stdout)[0].connected, { localAddress: a.ip, remoteAddress: b.ip, remotePort: 5353 });
  t.deepEqual(parseOut(udp.stdout)[1], { reply: 'dgram' });
  const banner = await a.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${b.ip}:3306`, '--send', 'q', '--wait-banner'], { timeoutMs: 10_000 });
  t.is(banner.code, 0, banner.stderr);
  t.deepEqual(parseOut(banner.stdout).slice(1), [{ banner: 'HELLO-MYSQL\n' }, { reply: 'q' }]);
  const many = await a.exec(NODE, [TOOLS_PATH, 'tcp-many', '--connect', `${b.ip}:8080`, '--count', '25'], { timeoutMs: 20_000 });
  t.is(many.code, 0, many.stderr);
  t.deepEqual(parseOut(many.stdout), [{ ok: 25 }]);
  const refused = await a.exec(NODE, [TOOLS_PATH, 'tcp-client', '--connect', `${b.ip}:1`, '--send', 'x'], { timeoutMs: 10_000 });
  t.is(refused.code, 1);
  t.regex(JSON.parse(refused.stderr).error, /ECONNREFUSED/);
});

test('hostNetwork pods share the node namespace and IP but get their own cgroup', async (t) => {
  const n = await node(t, 'cgroupfs');
  const pod = await n.addPod({ name: 'agent', hostNetwork: true, qos: 'Guaranteed' });
  t.is(pod.ip, n.nodeIp);
  t.is(pod.netns, n.nodeNs);
  const { child } = await server(t, pod.spawn.bind(pod), ['tcp-echo', '--port', '7001']);
  t.is(pidNetnsInode(child.pid!), netnsInode(`/var/run/netns/${n.nodeNs}`));
  t.is(path.join(findCgroup2Mount(), cgroupOfPid(child.pid!)), pod.containerCgroup);
  t.like(pod.toPodObject(n.name), { spec: { hostNetwork: true }, status: { podIP: n.nodeIp } });
});

test('toPodObject is a v1 Pod with identity, placement, IPs, phase and QoS', async (t) => {
  const n = await node(t);
  const owner = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d9', uid: '2b1e28ba-2fa1-11d2-883f-0016d3cca427', controller: true }];
  const pod = await n.addPod({
    name: 'web-7d9-x1',
    namespace: 'shop',
    qos: 'Guaranteed',
    labels: { app: 'web' },
    annotations: { 'mesh.example/skip-outbound-ports': '3306' },
    ownerReferences: owner,
  });
  const o = pod.toPodObject('node-a') as any;
  t.like(o, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-7d9-x1', namespace: 'shop', uid: pod.uid, labels: { app: 'web' }, annotations: { 'mesh.example/skip-outbound-ports': '3306' } },
    spec: { nodeName: 'node-a', hostNetwork: false },
    status: { phase: 'Running', podIP: pod.ip, hostIP: n.nodeIp, qosClass: 'Guaranteed' },
  });
  t.deepEqual(o.metadata.ownerReferences, owner);
  t.deepEqual(o.status.podIPs, [{ ip: pod.ip }]);
  t.is(o.status.containerStatuses[0].containerID, `containerd://${pod.containerId}`);
  t.regex(pod.uid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  // The spec's resources must make kubelet derive the same class.
  const res = o.spec.containers[0].resources;
  t.deepEqual(res.requests, res.limits);
});

test('removePod kills its processes and removes its cgroup, veth and netns', async (t) => {
  const n = await node(t);
  const keep = await n.addPod({ name: 'keep' });
  const gone = await n.addPod({ name: 'gone' });
  const { child } = await server(t, gone.spawn.bind(gone), ['tcp-echo', '--port', '8080']);
  const exited = once(child, 'exit');
  await n.removePod(gone);
  await exited;
  t.false(fs.existsSync(gone.podCgroup));
  t.false(ipNetnsList().includes(gone.netns));
  t.true(ipNetnsList().includes(keep.netns));
  const links = await n.execInNode('ip', ['-o', 'link', 'show']);
  t.is(links.stdout.match(/cali[0-9a-f]{11}/g)?.length, 1, links.stdout);
  t.deepEqual(n.pods().map((p: SimPod) => p.name), ['keep']);
  await t.throwsAsync(n.removePod(gone), { message: /not on simulated node/ });
});

test('destroy() leaves no namespace, cgroup or process behind, and is idempotent', async (t) => {
  const n = await createNode({ driver: 'systemd' });
  const pods = [await n.addPod({ name: 'a', qos: 'Guaranteed' }), await n.addPod({ name: 'b', qos: 'BestEffort' })];
  // A grandchild proves the kill reaches processes Node never saw.
  const sh = pods[0].spawn('sh', ['-c', 'sleep 600 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const grandchild = Number((await once(sh.stdout!, 'data'))[0].toString().trim());
  const agent = n.spawnInNode('sleep', ['600'], { stdio: 'ignore' });
  const exits = [once(sh, 'exit'), once(agent, 'exit')];
  t.true(ipNetnsList().some((ns) => ns.startsWith(n.id)));

  await Promise.all([n.destroy(), n.destroy()]);
  await Promise.all(exits);
  t.deepEqual(ipNetnsList().filter((ns) => ns.startsWith(n.id)), []);
  t.false(fs.existsSync(n.cgroupRoot));
  t.false(fs.existsSync(n.nodeCgroup));
  t.true(await eventually(() => isDead(grandchild)), `grandchild ${grandchild} still alive`);
  t.true(isDead(sh.pid!) && isDead(agent.pid!));
  await t.notThrowsAsync(n.destroy());
  await t.throwsAsync(n.addPod({ name: 'late' }), { message: /destroyed/ });
});

interface Made {
  id: string;
  netns: string[];
  cgroups: string[];
  pids: number[];
}

/** Runs crash-fixture.ts in its own process and returns what it reports it made. */
async function fixtureNode(t: ExecutionContext, mode: 'wait' | 'exit'): Promise<{ child: ChildProcess; made: Made }> {
  const fixture = fileURLToPath(new URL('../src/sim/crash-fixture.ts', import.meta.url));
  const child = spawn(NODE, ['--disable-warning=ExperimentalWarning', fixture, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const made = (await jsonLines(child).next()).value as Made;
  t.truthy(made?.id, 'the fixture reported its node');
  t.true(made.id.startsWith(`ma${child.pid}x`), made.id);
  return { child, made };
}

async function assertGone(t: ExecutionContext, made: Made): Promise<void> {
  t.deepEqual(ipNetnsList().filter((ns) => ns.startsWith(made.id)), []);
  for (const cg of made.cgroups) t.false(fs.existsSync(cg), `${cg} removed`);
  t.true(await eventually(() => made.pids.every(isDead)), 'its processes were killed');
}

for (const how of ['exit', 'SIGTERM'] as const) {
  test(`a node never destroyed is swept when its process ends by ${how}`, async (t) => {
    const { child, made } = await fixtureNode(t, how === 'exit' ? 'exit' : 'wait');
    if (how === 'SIGTERM') child.kill('SIGTERM');
    const [code, signal] = await exitOf(child);
    // The handler restores the signal's default action, so the parent still sees a death by SIGTERM.
    if (how === 'SIGTERM') t.is(signal, 'SIGTERM');
    else t.is(code, 0);
    await assertGone(t, made);
  });
}

test.serial('cleanupLeftovers removes a SIGKILLed creator’s node and spares live ones', async (t) => {
  const live = await node(t, 'cgroupfs');
  await live.addPod({ name: 'alive' });
  const { child, made } = await fixtureNode(t, 'wait');
  child.kill('SIGKILL');
  await exitOf(child); // reaped, so its pid is dead
  for (const ns of made.netns) t.true(ipNetnsList().includes(ns), `${ns} survived the crash`);
  for (const cg of made.cgroups) t.true(fs.existsSync(cg), `${cg} survived the crash`);
  t.false(made.pids.some(isDead), 'its processes survived the crash');

  // Another sweep (a demo starting, another test file's hook) may take some of these first:
  // then this one does not name them. What must hold is that nothing of the dead run is left.
  const removed = await cleanupLeftovers();
  const mine = [...made.netns.map((ns) => `netns ${ns}`), ...made.cgroups.map((cg) => `cgroup ${cg}`)];
  t.deepEqual(removed.filter((r) => r.includes(made.id)).filter((r) => !mine.some((m) => r.startsWith(m))), [], 'names only what the run made');
  await assertGone(t, made);
  // Ours are alive: untouched.
  t.true(ipNetnsList().includes(live.nodeNs));
  t.true(fs.existsSync(live.cgroupRoot));
  t.false(removed.some((r) => r.includes(live.id)));
});

test.serial('two sweeps at once over the same dead run both succeed, and each thing is reported once', async (t) => {
  const { child, made } = await fixtureNode(t, 'wait');
  child.kill('SIGKILL');
  await exitOf(child);
  const [a, b] = await Promise.all([cleanupLeftovers(), cleanupLeftovers()]);
  const both = [...a, ...b].filter((r) => r.includes(made.id));
  t.deepEqual(both.filter((r, i) => both.indexOf(r) !== i), [], `reported twice: ${JSON.stringify([a, b])}`);
  await assertGone(t, made);
});

/** Starts test/fixtures/owned-temp-dirs.ts, which makes a dir of each kind through ownedTempPrefix(), and returns it with them. */
async function tempDirMaker(t: ExecutionContext, kinds: TempDirKind[]): Promise<{ child: ChildProcess; dirs: string[] }> {
  const fixture = fileURLToPath(new URL('fixtures/owned-temp-dirs.ts', import.meta.url));
  const child = spawn(NODE, ['--disable-warning=ExperimentalWarning', fixture, ...kinds], { stdio: ['pipe', 'pipe', 'inherit'] });
  const { dirs } = (await jsonLines(child).next()).value as { dirs: string[] };
  t.teardown(async () => {
    child.kill('SIGKILL');
    await exitOf(child);
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); // also when the sweep did not
  });
  t.is(dirs.length, kinds.length, 'the fixture made its dirs');
  return { child, dirs };
}

test.serial('cleanupLeftovers removes the temp dirs (cluster, demo, bench, test) of a SIGKILLed maker and spares live ones', async (t) => {
  const kinds: TempDirKind[] = ['cluster', 'demo', 'bench', 'test'];
  const killed = await tempDirMaker(t, kinds);
  const alive = await tempDirMaker(t, kinds);
  const ours = testTempDir(t);
  fs.writeFileSync(path.join(ours, 'kubeconfig'), '{}');
  for (const [i, d] of killed.dirs.entries()) t.is(path.basename(d).slice(0, -6), `mesh-${kinds[i]}-${killed.child.pid}-`, 'named by kind and maker pid');
  killed.child.kill('SIGKILL');
  t.is((await exitOf(killed.child))[1], 'SIGKILL'); // and reaped, so its pid is dead
  for (const d of killed.dirs) t.true(fs.existsSync(d), `${d} survived the SIGKILL`);

  const removed = await cleanupLeftovers();
  for (const d of killed.dirs) {
    t.false(fs.existsSync(d), `${d} of the SIGKILLed maker is removed`);
    // Another sweep (another test file's hook) may have taken it first; then this one does not name it.
    t.true(removed.includes(`dir ${d}`) || !removed.some((r) => r.includes(d)), `${d} is named as a dir: ${JSON.stringify(removed)}`);
  }
  for (const d of [...alive.dirs, ours]) {
    t.true(fs.existsSync(path.join(d, 'kubeconfig')), `a live process's ${d} stays, with its contents`);
    t.false(removed.some((r) => r.includes(d)), `${d} is not named`);
  }
});

test('teardown steps another process already did are done, not errors: netns, veth, cgroup', async (t) => {
  // Two calls in flight at once: both see the object, one removes it, the other finds it gone.
  // This node is ours (its owner, this process, is alive), so no sweep elsewhere touches it.
  const n = await node(t, 'cgroupfs');
  const pod = await n.addPod({ name: 'twice' });
  const veth = hostVethName(n.id, 0);
  t.true((await n.execInNode('ip', ['link', 'show', veth])).code === 0, 'the pod has its veth');
  await t.notThrowsAsync(Promise.all([deletePodNetwork(n.nodeNs, pod.netns, veth), deletePodNetwork(n.nodeNs, pod.netns, veth)]));
  t.false(ipNetnsList().includes(pod.netns));
  const ns = `${n.id}-p9`;
  await addNetns(ns);
  t.deepEqual((await Promise.all([deleteNetns(ns), deleteNetns(ns)])).sort(), [false, true], 'one call removed it');
  t.false(ipNetnsList().includes(ns));
  t.false(await deleteNetns(ns), 'gone before the call');
  t.deepEqual((await Promise.all([destroyCgroupTree(pod.podCgroup), destroyCgroupTree(pod.podCgroup)])).sort(), [false, true]);
  t.false(fs.existsSync(pod.podCgroup));
  // The node's own teardown then finds its pod already taken apart, and finishes.
  await t.notThrowsAsync(n.destroy());
  t.deepEqual(ipNetnsList().filter((x) => x.startsWith(n.id)), []);
});
