// The agent's proxy over its connection cap (--max-connections) on a simulated node, with the
// real datapath: connections it refuses leave no original-destination record behind, also those
// whose client closed first (their record waits for the proxy's lookup, docs/architecture.md).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH } from '../src/sim/index.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { agentStatus, waitAgentReady } from './helpers/agent-admin.ts';
import { fireAndForgetWhileStopped } from './helpers/fire-and-forget.ts';
import { nodeScope } from './helpers/node-scope.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const BIN = meshBin();

test('connections refused over the cap, clients that closed first included, leave no record in the maps', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the agent e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  const s = nodeScope(t);
  const node = (s.node = await createNode({ driver: 'cgroupfs' }));
  const web = await node.addPod({ name: 'web', namespace: 'shop', annotations: { 'mesh-agent.io/inject': 'enabled' } });
  const api = await node.addPod({ name: 'api', namespace: 'shop' });
  const podsFile = path.join(s.tmp, 'pods.json');
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  const server = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  s.children.push(server);
  await new JsonLines(server).waitFor((o) => o.listening, 10_000, 'api listening');
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
    '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--max-connections', '1']);
  s.children.push(agent);
  let log = '';
  agent.stderr!.on('data', (d) => (log += d));
  await waitAgentReady(node, () => log);
  await until(() => agentStatus(node), (st) => st.pods.some((p: any) => p.name === 'web' && p.meshed), 'web meshed');

  // The one connection the cap allows, held open.
  const holder = web.spawn(process.execPath, [TOOLS_PATH, 'tcp-many', '--connect', `${api.ip}:8080`, '--count', '1', '--hold']);
  s.children.push(holder);
  await new JsonLines(holder).waitFor((o) => o.open === 1, 20_000, 'one connection held');
  const records = async () => Object.fromEntries((await agentStatus(node)).datapath.maps.map((m: any) => [m.name, m.used]));
  t.like(await records(), { mesh_orig_by_tuple: 1 });

  // Clients that write and close before the (stopped) proxy accepts them: each record is kept for
  // the proxy's lookup, then the proxy refuses them all over the cap.
  const N = 5;
  const r = await fireAndForgetWhileStopped(web, agent, api.ip, 8080, N);
  t.is(r.code, 0, r.stderr);
  await until(() => agentStatus(node), (st) => st.proxy.refusedOverCap === N, `${N} connections refused over the cap`);
  const left = await until(records, (u) => u.mesh_orig_by_tuple === 1, 'only the held connection\'s record left', { ms: 5000 }).catch(() => records());
  t.is(left.mesh_orig_by_tuple, 1, 'the refused connections\' records are gone; the held one\'s stays');
  holder.stdin!.end();
  await until(records, (u) => u.mesh_orig_by_tuple === 0 && u.mesh_orig_by_cookie === 0, 'every record deleted');
});
