// `mesh-agent run` sent SIGTERM while it is still starting (its proxy listening, the datapath
// attached, the proxy workers and the pods still to come): it stops once the start is done, as
// after any start, rather than beside it. Stopped beside it, the start went on after the stop had
// looked, put the inbound capture's nftables table in place and left it behind as a SIGKILL does.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { nodeScope } from './helpers/node-scope.ts';
import { CAPTURE_TABLE } from '../src/datapath/inbound-capture.ts';
import { nftBinary } from '../src/datapath/nft.ts';

const BIN = meshBin();
const EXIT_BOUND_MS = 60_000;

test('SIGTERM during start: the agent finishes starting, then stops as after any start: exit 0, programs detached, no nftables table left', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  const scope = nodeScope(t);
  const { children, tmp } = scope;
  const node = (scope.node = await createNode({ driver: 'cgroupfs' }));
  const api = await node.addPod({ name: 'api', namespace: 'shop' });
  const podsFile = path.join(tmp, 'pods.yaml');
  const o = api.toPodObject(node.name) as any;
  fs.writeFileSync(podsFile, JSON.stringify({ ...o, metadata: { ...o.metadata, annotations: { 'mesh-agent.io/inject': 'enabled' } } }));
  const echo = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(echo);
  await new JsonLines(echo).waitFor((l) => l.listening, 10_000, 'api listening');
  let log = '';
  // Two proxy workers: their start (most of a second) is the window the signal lands in.
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
    '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--proxy-workers', '2', '--drain', '1000']);
  children.push(agent);
  let signalled = false;
  const onLog = (d: Buffer) => {
    log += d;
    if (!signalled && log.includes('"datapath attached"')) {
      signalled = true;
      agent.kill('SIGTERM');
    }
  };
  agent.stdout!.on('data', onLog);
  agent.stderr!.on('data', onLog);
  const context = () => `agent log: ${log.slice(-3000)}`;
  let bound: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited(agent), new Promise<'still running'>((r) => (bound = setTimeout(() => r('still running'), EXIT_BOUND_MS)))]);
  clearTimeout(bound);
  t.true(signalled, context());
  t.is(code, 0, `exits 0 after a SIGTERM; ${context()}`);
  const at = (msg: string) => log.indexOf(`"msg":"${msg}`);
  t.true(at('agent ready') >= 0 && at('agent ready') < at('SIGTERM: draining'), `the stop begins once the start is done, not beside it; ${context()}`);
  t.true(at('SIGTERM while starting') >= 0, `the signal came while the agent was starting; ${context()}`);
  t.notRegex(execFileSync('bpftool', ['cgroup', 'show', node.cgroupRoot], { encoding: 'utf8' }), /connect4|sockops/, 'programs detached');
  // Whatever the start did after the signal is undone: no capture table stays in the node's namespace.
  const left = await node.execInNode(nftBinary(), ['list', 'table', 'ip', CAPTURE_TABLE]);
  t.not(left.code, 0, `no capture table left in the node's namespace: ${left.stdout}; ${context()}`);
});
