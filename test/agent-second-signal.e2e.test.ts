// `mesh-agent run` stopped twice: the first SIGTERM drains (for --drain, here far longer than the
// test), a second signal during that drain cuts it short: the connection still open is closed,
// the agent unloads as after any drain (programs detached, the inbound capture's nftables table
// removed) and exits 128+signal (130 for SIGINT), as Linkerd's proxy and most daemons do.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { nodeScope } from './helpers/node-scope.ts';
import { CAPTURE_TABLE } from '../src/datapath/inbound-capture.ts';
import { nftBinary } from '../src/datapath/nft.ts';

const BIN = meshBin();
/** Far beyond the test's own timeout: only a cut drain lets the agent exit in time. */
const DRAIN_MS = 600_000;
/** A cut drain exits in well under a second; this only tells a hang from a slow machine. */
const EXIT_BOUND_MS = 30_000;

test('a second signal during the drain closes what is still open, unloads, and exits 130 at once, not at the --drain deadline', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  const scope = nodeScope(t);
  const { children, tmp } = scope;
  const node = (scope.node = await createNode({ driver: 'cgroupfs' }));
  const web = await node.addPod({ name: 'web', namespace: 'shop' });
  const api = await node.addPod({ name: 'api', namespace: 'shop' });
  const podsFile = path.join(tmp, 'pods.yaml');
  const meshed = (p: typeof web) => {
    const o = p.toPodObject(node!.name) as any;
    return JSON.stringify({ ...o, metadata: { ...o.metadata, annotations: { 'mesh-agent.io/inject': 'enabled' } } });
  };
  fs.writeFileSync(podsFile, [meshed(web), meshed(api)].join('\n---\n'));
  const echo = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(echo);
  await new JsonLines(echo).waitFor((o) => o.listening, 10_000, 'api listening');
  let log = '';
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
    '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--drain', String(DRAIN_MS)]);
  children.push(agent);
  agent.stdout!.on('data', (d) => (log += d));
  agent.stderr!.on('data', (d) => (log += d));
  const context = () => `agent log: ${log.slice(-2000)}`;
  const status = async () => JSON.parse((await node!.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status'])).stdout || 'null');
  await until(status, (s) => s?.pods?.filter((p: any) => p.meshed).length === 2 && log.includes('"agent ready"'), 'both pods meshed, agent ready', { context });
  const table = () => node!.execInNode(nftBinary(), ['list', 'table', 'ip', CAPTURE_TABLE]);
  const before = await table();
  t.is(before.code, 0, `the inbound capture is in the kernel while the agent runs: ${before.stderr}`);

  // A connection through the proxy that stays open (an opaque tunnel): it holds the drain.
  const hold = web.spawn(process.execPath, [TOOLS_PATH, 'hold', '--connect', `${api.ip}:8080`, '--first', 'hello']);
  children.push(hold);
  const held = new JsonLines(hold);
  await held.waitFor((o) => o.reply !== undefined, 10_000, 'the held connection echoed');
  await until(status, (s) => s?.proxy?.open >= 1, 'the proxy holds the connection', { context });

  agent.kill('SIGTERM');
  await until(() => log, (l) => l.includes('SIGTERM: draining'), 'the drain started', { context, intervalMs: 50 });
  const t0 = performance.now();
  agent.kill('SIGINT');
  // Bounded, so an agent that ignores the second signal fails here, not at ava's timeout.
  let bound: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited(agent), new Promise<'still running'>((r) => (bound = setTimeout(() => r('still running'), EXIT_BOUND_MS)))]);
  clearTimeout(bound);
  const ms = performance.now() - t0;
  t.is(code, 130, `exits 128+SIGINT within ${EXIT_BOUND_MS} ms of the second signal; ${context()}`);
  if (code === 'still running') return;
  t.true(ms < DRAIN_MS / 10, `exited ${Math.round(ms)} ms after the second signal`);
  t.regex(log, /SIGINT again: closing the connections still open now/);
  await held.waitFor((o) => o.closed !== undefined, 10_000, 'the held connection closed');
  t.notRegex(execFileSync('bpftool', ['cgroup', 'show', node.cgroupRoot], { encoding: 'utf8' }), /connect4|sockops/, 'programs detached');
  const left = await table();
  t.not(left.code, 0, `the capture's table was removed as after any drain: ${JSON.stringify(left)}; ${context()}`);
});
