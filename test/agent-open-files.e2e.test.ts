// The agent under an open-file limit too small for its connection cap (src/agent/open-files.ts):
// it lowers the cap to what the limit holds and says so at start, `status` reports the cap in
// force, and a meshed pod's connections past it are refused by the cap and counted, where the
// limit would have made accept() fail with EMFILE and libuv reset them uncounted.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH, type SimNode } from '../src/sim/index.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { RESERVED_FDS, fdsPerConnection } from '../src/agent/open-files.ts';
import { agentStatus } from './helpers/agent-admin.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const BIN = meshBin();
const LIMIT = 1024;
/** What 1,024 fds hold with --native-io (the default): 256 connections. */
const CAP = Math.floor((LIMIT - RESERVED_FDS) / fdsPerConnection(true));
/** More than the cap, and more than the limit holds uncapped (two fds a held opaque connection): EMFILE on the old agent. */
const CONNECTIONS = 500;

let node: SimNode | undefined;
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('under a 1,024 open-file limit the agent caps itself at 256 connections, says why, and refuses the rest cleanly', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the agent e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  const web = await node.addPod({ name: 'web', namespace: 'shop' });
  const api = await node.addPod({ name: 'api', namespace: 'shop' });
  const podsFile = path.join(tmp, 'pods.json');
  const meshed = (p: typeof web) => {
    const o = p.toPodObject(node!.name) as any;
    return { ...o, metadata: { ...o.metadata, annotations: { 'mesh-agent.io/inject': 'enabled' } } };
  };
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: [meshed(web), meshed(api)] }));
  const server = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '8080']);
  children.push(server);
  await new JsonLines(server).waitFor((o) => o.listening, 10_000, 'api listening');

  const a = node.spawnInNode('prlimit', [`--nofile=${LIMIT}:${LIMIT}`, '--', process.execPath, BIN, 'run', '--node', node.name, '--pods', podsFile,
    '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--proxy-workers', '1', '--max-connections', '10000']);
  children.push(a);
  let log = '';
  a.stderr!.on('data', (d) => (log += d));
  await new Promise<void>((resolve, reject) => {
    a.stderr!.on('data', () => log.includes('"agent ready"') && resolve());
    a.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it was ready: ${log.slice(-2000)}`)));
  });
  const warning = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => /open-file limit/.test(l.msg));
  t.truthy(warning, `no warning about the open-file limit in the agent's log: ${log.slice(-2000)}`);
  t.like(warning, { level: 'warn', maxConnections: CAP });
  t.regex(warning.msg, new RegExp(`^the open-file limit ${LIMIT} holds ${CAP} proxied connections .*fewer than --max-connections 10000: capping at ${CAP}.* raise the agent's open-file limit to at least ${10_000 * 3 + RESERVED_FDS}`));
  await until(() => agentStatus(node!), (s) => s.pods.some((p: any) => p.name === 'web' && p.meshed), 'web meshed');
  t.is((await agentStatus(node)).proxy.maxConnections, CAP);

  // Held connections, one after another, each echoing once through the proxy.
  const holder = web.spawn(process.execPath, [TOOLS_PATH, 'tcp-many', '--connect', `${api.ip}:8080`, '--count', String(CONNECTIONS), '--hold', '--keep-going']);
  children.push(holder);
  const lines = new JsonLines(holder);
  const held = await lines.waitFor((o) => o.open !== undefined, 120_000, `${CONNECTIONS} connections tried`);
  t.is(held.open, CAP, `connections held: ${JSON.stringify(held)}; agent log: ${log.slice(-1500)}`);
  t.is(held.failed, CONNECTIONS - CAP);
  const s = await agentStatus(node);
  t.is(s.proxy.open, CAP);
  t.is(s.proxy.refusedOverCap, CONNECTIONS - CAP);
  t.notRegex(log, /EMFILE|ENFILE/, 'the agent ran out of fds: the cap did not hold');
  holder.stdin!.end();
  await lines.waitFor((o) => o.ok !== undefined, 30_000, 'held connections closed');
  await until(() => agentStatus(node!), (st) => st.proxy.open === 0, 'every connection closed at the agent');
});
