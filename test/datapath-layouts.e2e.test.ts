// The pod is found by walking ancestor cgroups, so every kubelet layout works: systemd driver
// here (cgroupfs in datapath.e2e), Guaranteed, Burstable and BestEffort at their depths.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, TOOLS_PATH, type SimNode } from '../src/sim/index.ts';
import { JsonLines, JsonRpc } from './helpers/procs.ts';

const AGENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/datapath-agent.ts');
let node: SimNode | undefined;
const children: ChildProcess[] = [];

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
});

test('systemd driver, all QoS classes: each pod is redirected with its own key', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'systemd' });
  const server = await node.addPod({ name: 'server' });
  const pods = await Promise.all((['Guaranteed', 'Burstable', 'BestEffort'] as const).map((qos) => node!.addPod({ name: qos.toLowerCase(), qos })));
  t.regex(pods[0]!.podCgroup, /kubepods\.slice\/kubepods-pod[0-9a-f_]+\.slice$/);
  t.regex(pods[1]!.podCgroup, /kubepods-burstable\.slice\/kubepods-burstable-pod[0-9a-f_]+\.slice$/);
  const agentProc = node.spawnInNode(process.execPath, [AGENT, JSON.stringify({ cgroupRoot: node.cgroupRoot, proxyIp: node.nodeIp, proxyPort: 15001 })]);
  children.push(agentProc);
  const agent = new JsonRpc(agentProc);
  const ready = await agent.io.waitFor((o) => o.ready || o.error, 15_000, 'agent ready');
  t.falsy(ready.error);
  const srv = server.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(srv);
  await new JsonLines(srv).waitFor((o) => o.listening, 10_000, 'server listening');
  const keys = [];
  for (const p of pods) keys.push(await agent.call('setPod', { cgroupPath: p.podCgroup, ip: p.ip }));
  t.is(new Set(keys).size, 3);
  for (const [i, p] of pods.entries()) {
    const r = await p.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${server.ip}:8080`, '--send', p.name], { timeoutMs: 20_000 });
    t.is(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const local = lines.find((o) => o.connected).connected.localPort;
    const { accepted } = await agent.call('accepted');
    t.deepEqual(accepted.find((a: any) => a.remotePort === local)?.orig, { ip: server.ip, port: 8080, podKey: keys[i] }, p.qos);
  }
});
