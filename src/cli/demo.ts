// `mesh-agent demo`: the agent on a simulated node (network namespaces and kubelet-style
// cgroups on this machine), with a few pods talking through the real datapath and proxy.
import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode, cleanupLeftovers, TOOLS_PATH, type SimNode } from '../sim/index.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(root, 'bin/mesh-agent.ts');

const step = (msg: string) => process.stderr.write(`\x1b[1m==>\x1b[0m ${msg}\n`);

export function registerDemo(program: Command) {
  program
    .command('demo')
    .description('run the agent on a simulated node (as root) and show pods\' connections going through the mesh')
    .option('--keep', 'keep the node running until Ctrl-C')
    .action(async (o) => {
      if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and cgroups and loads BPF: run it as root');
      await runDemo({ keep: Boolean(o.keep) });
    });
}

async function runDemo(opts: { keep: boolean }) {
  const removed = await cleanupLeftovers();
  if (removed.length) step(`removed leftovers of an earlier run: ${removed.length} objects`);
  let node: SimNode | undefined;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-demo-'));
  let stopping = false;
  const cleanup = async () => {
    if (stopping) return;
    stopping = true;
    step('cleaning up: processes, namespaces, cgroups');
    await node?.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().then(() => process.exit(130));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    step('building a simulated node: node namespace, kubelet cgroup tree');
    node = await createNode({ driver: 'systemd' });
    step(`node ${node.id}: IP ${node.nodeIp}, pods cgroup ${node.cgroupRoot}`);
    const inject = { 'mesh-agent.io/inject': 'enabled' };
    const web = await node.addPod({ name: 'web', namespace: 'demo', annotations: { ...inject, 'mesh-agent.io/skip-outbound-ports': '6379' } });
    const api = await node.addPod({ name: 'api', namespace: 'demo', annotations: inject });
    const db = await node.addPod({ name: 'db', namespace: 'demo', annotations: inject });
    const cache = await node.addPod({ name: 'cache', namespace: 'demo' });
    for (const p of node.pods()) step(`pod ${p.namespace}/${p.name}  ${p.ip}  ${p.podCgroup.slice(node.cgroupRoot.length)}`);

    const podsFile = path.join(tmp, 'pods.json');
    fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node!.id)) }, null, 2));
    step('starting the agent: mesh-agent run --pods pods.json');
    const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.id, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--quiet'], { stdio: ['ignore', 'inherit', 'inherit'] });
    await waitFor(async () => (await node!.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/ready'])).code === 0, 15_000, 'agent ready', () => agent.exitCode !== null);

    step('starting servers: api (echo, :8080), db (speaks first like MySQL, :3306), cache (:6379)');
    api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080'], { stdio: 'ignore' });
    db.spawn(process.execPath, [TOOLS_PATH, 'tcp-banner', '--port', '3306', '--banner', '5.5.5-MariaDB greeting\n'], { stdio: 'ignore' });
    cache.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '6379'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 800));

    const call = async (label: string, args: string[]) => {
      const r = await web.exec(process.execPath, [TOOLS_PATH, 'tcp-client', ...args], { timeoutMs: 10_000 });
      const lines = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const c = lines.find((x) => x.connected)?.connected;
      const banner = lines.find((x) => x.banner)?.banner;
      const reply = lines.find((x) => x.reply)?.reply;
      console.log(`  ${label.padEnd(40)} peer seen by the app ${c ? `${c.remoteAddress}:${c.remotePort}` : '-'}${banner ? `, banner ${JSON.stringify(banner.trim())}` : ''}, reply ${JSON.stringify(reply ?? r.stderr.trim())}`);
    };
    step('web connects to its peers');
    await call(`web -> api ${api.ip}:8080`, ['--connect', `${api.ip}:8080`, '--send', 'hello api']);
    await call(`web -> db ${db.ip}:3306 (server-first)`, ['--connect', `${db.ip}:3306`, '--send', 'select 1', '--wait-banner']);
    await call(`web -> cache ${cache.ip}:6379 (skipped)`, ['--connect', `${cache.ip}:6379`, '--send', 'PING']);

    const status = JSON.parse((await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/status'])).stdout);
    const c = status.datapath.counters;
    step('what the datapath and the proxy saw (mesh-agent status)');
    console.log(`  redirected ${c.redirected}, skipped by port ${c.skippedPort}, unmeshed ${c.unmeshed}, getpeername rewritten ${c.getpeername}`);
    console.log(`  proxy accepted ${status.proxy.accepted}, refused without record ${status.proxy.refusedNoRecord}, by protocol ${JSON.stringify(status.proxy.byProtocol)}`);
    console.log(`  meshed pods: ${status.pods.filter((p: any) => p.meshed).map((p: any) => `${p.namespace}/${p.name}`).join(', ')}`);
    console.log(`  programs: ${status.datapath.programs.map((p: any) => p.section).join(', ')} on ${status.datapath.cgroup}`);
    if (opts.keep) {
      step(`running; in another terminal: nsenter --net=/var/run/netns/${node.nodeNs} curl -s 127.0.0.1:4191/status. Ctrl-C stops and cleans up`);
      await new Promise(() => {});
    }
  } finally {
    await cleanup();
  }
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, failed?: () => boolean) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (failed?.()) throw new Error(`${what}: the process exited; see its log above`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}
