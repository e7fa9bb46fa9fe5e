// Fail-open and fail-closed across agent deaths and restarts (docs/policy.md), on a simulated
// node with the real kernel (`mesh-agent run --pods FILE`):
// - SIGKILL: a pod with the default policy is reached directly at once (its first connection
//   begun after the agent was reaped succeeds within 1 s of the reap); a pod with
//   all-authenticated is not reachable (its clients' SYNs are dropped, not refused) until an agent
//   is back, and then the waiting client gets through.
// - A rolling restart (SIGTERM, the agent exits, a new one starts) under a client loop from an
//   allowed meshed pod to the all-authenticated pod: no connection fails.
// - Uninstall: an agent stopped while a pod fails closed leaves the capture table (the pod stays
//   closed); `mesh-agent cleanup` removes it; one stopped with no fail-closed pod leaves nothing
//   (nft, ip rule and route, no BPF program on the pods' cgroup); cleanup refuses while an agent
//   captures (its listener listens), unless --force.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, TOOLS_PATH, type SimNode, type SimPod } from '../src/sim/index.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { until as untilWith } from './helpers/until.ts';
import { ipBinary, nftBinary } from '../src/datapath/nft.ts';
import { CAPTURE_ROUTE_TABLE, CAPTURE_RULE_PREF } from '../src/datapath/inbound-capture.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const BIN = meshBin();
const ADMIN = '127.0.0.1:4191';
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const podsFile = path.join(tmp, 'pods.yaml');
const children: ChildProcess[] = [];
let node: SimNode;
let api: SimPod;
let open: SimPod;
let web: SimPod;
let outsider: SimPod;
let log = '';
const echoes = new Map<string, JsonLines>();

/** CLOCK_MONOTONIC in ms, as the sim's tools stamp their lines. */
const mono = () => Number(process.hrtime.bigint()) / 1e6;
const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms = 20_000) =>
  untilWith(f, ok, what, { ms, intervalMs: 100, context: () => `agent log: ${log.slice(-3000)}` });

function writePods(apiPolicy: string | null) {
  const obj = (p: SimPod, ann: Record<string, string>) => {
    const o = p.toPodObject(node.name) as any;
    o.metadata.annotations = { 'mesh-agent.io/inject': 'enabled', ...ann };
    return JSON.stringify(o);
  };
  const apiAnn: Record<string, string> = apiPolicy === null ? {} : { 'mesh-agent.io/default-inbound-policy': apiPolicy };
  fs.writeFileSync(podsFile + '.tmp', [obj(api, apiAnn), obj(open, {}), obj(web, {})].join('\n---\n'));
  fs.renameSync(podsFile + '.tmp', podsFile);
}

function startAgent(): ChildProcess {
  const a = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', ADMIN, '--proxy-workers', '1', '--drain', '2000']);
  children.push(a);
  a.stderr!.on('data', (d) => (log += d));
  return a;
}

async function status(): Promise<any> {
  const r = await node.execInNode('curl', ['-sf', `http://${ADMIN}/status`]);
  if (r.code !== 0) throw new Error(`status: curl exited ${r.code}`);
  return JSON.parse(r.stdout);
}

const capturing = (failClosed: string[]) => until(status, (s) => s.inbound?.capture === 'capturing' && s.inbound.listening && JSON.stringify(s.inbound.failClosed) === JSON.stringify(failClosed), `capture on, failing closed: ${failClosed.join(', ') || 'none'}`);

async function table(): Promise<string | null> {
  const r = await node.execInNode(nftBinary(), ['list', 'table', 'ip', 'mesh-agent']);
  return r.code === 0 ? r.stdout : null;
}

async function left(): Promise<{ table: boolean; rule: string; route: string; programs: number }> {
  const rule = (await node.execInNode(ipBinary(), ['-4', 'rule', 'show', 'pref', String(CAPTURE_RULE_PREF)])).stdout.trim();
  const route = (await node.execInNode(ipBinary(), ['-4', 'route', 'show', 'table', String(CAPTURE_ROUTE_TABLE)])).stdout.trim();
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', node.cgroupRoot], { encoding: 'utf8' }).trim() || '[]') as unknown[];
  return { table: (await table()) !== null, rule, route, programs: progs.length };
}

/** One connection with a deadline: ok, or the client's error (its stderr). */
async function connect(from: SimPod, to: SimPod, timeoutMs: number): Promise<{ ok: boolean; error?: string }> {
  const r = await from.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${to.ip}:7000`, '--send', 'x', '--timeout-ms', String(timeoutMs)], { timeoutMs: timeoutMs + 15_000 });
  return r.code === 0 ? { ok: true } : { ok: false, error: r.stderr.trim() };
}

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the inbound e2e tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  api = await node.addPod({ name: 'api', namespace: 'shop', serviceAccountName: 'api' });
  open = await node.addPod({ name: 'open', namespace: 'shop', serviceAccountName: 'open' });
  web = await node.addPod({ name: 'web', namespace: 'shop', serviceAccountName: 'web' });
  outsider = await node.addPod({ name: 'outsider', namespace: 'shop' });
  for (const p of [api, open]) {
    const e = p.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '7000']);
    children.push(e);
    const io = new JsonLines(e);
    await io.waitFor((o) => o.listening, 10_000, `${p.name} listening`);
    echoes.set(p.name, io);
  }
  writePods('all-authenticated');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('SIGKILL: the default-policy pod is reached directly within 1 s of the reap; the all-authenticated pod is not reachable until an agent is back', async (t) => {
  const a = startAgent();
  await capturing(['shop/api']);
  // A loop from an unmeshed pod to the fail-open pod, through the capture until the kill.
  const loop = outsider.spawn(process.execPath, [TOOLS_PATH, 'tcp-loop', '--connect', `${open.ip}:7000`, '--interval-ms', '0', '--attempt-timeout-ms', '15000']);
  children.push(loop);
  const attempts = new JsonLines(loop);
  const before = (await status()).proxy.inboundAccepted;
  await until(status, (s) => s.proxy.inboundAccepted >= before + 5, 'the loop captured by the first agent');
  const reaped = new Promise<number>((r) => a.once('exit', () => r(mono())));
  a.kill('SIGKILL');
  const reapedAt = await reaped;
  const after = await attempts.waitFor((o) => 'attempt' in o && o.t0 > reapedAt, 15_000, 'an attempt begun after the reap');
  t.true(after.ok, `the fail-open pod is reached directly: ${JSON.stringify(after)}`);
  t.true(after.t1 - reapedAt < 1000, `reached within 1 s of the reap (${(after.t1 - reapedAt).toFixed(1)} ms)`);
  loop.kill('SIGKILL');
  await exited(loop);
  t.log(`first direct connection ${(after.t1 - reapedAt).toFixed(1)} ms after the reap`);

  // The fail-closed pod: SYNs dropped (a client's connect waits: a timeout, never a refusal).
  const closed = await connect(outsider, api, 2000);
  t.false(closed.ok);
  t.regex(closed.error ?? '', /timeout|timed out/i, 'dropped, not refused');
  const accepted = echoes.get('api')!.lines.filter((o) => o.accepted).length;
  // An allowed client (a meshed pod of the node; with no agent its connect() goes direct, and is captured) waits for an agent.
  const dropped = async () => Number(/fail-closed counter packets (\d+)/.exec((await table()) ?? '')?.[1] ?? 0);
  const droppedBefore = await dropped();
  const waiting = connect(web, api, 60_000);
  await until(dropped, (n) => n >= droppedBefore + 2, 'its first SYN and a retransmission dropped while no agent runs');
  t.is(echoes.get('api')!.lines.filter((o) => o.accepted).length, accepted, 'nothing reaches the fail-closed pod while no agent runs');
  startAgent();
  await capturing(['shop/api']);
  const got = await waiting;
  t.true(got.ok, `the waiting client gets through once an agent is back: ${got.error}`);
  const denied = await connect(outsider, api, 5000);
  t.false(denied.ok);
  t.notRegex(denied.error ?? '', /timeout/i, 'and an unmeshed client is refused by the new agent, not left waiting');
});

test.serial('rolling restart (SIGTERM, then a new agent) under a loop from an allowed meshed pod to the all-authenticated pod: no connection fails', async (t) => {
  const current = children.filter((c) => c.spawnargs.includes('run') && c.exitCode === null && c.signalCode === null).at(-1)!;
  const loop = web.spawn(process.execPath, [TOOLS_PATH, 'tcp-loop', '--connect', `${api.ip}:7000`, '--interval-ms', '0', '--attempt-timeout-ms', '30000']);
  children.push(loop);
  const attempts = new JsonLines(loop);
  const ok = () => attempts.lines.filter((o) => 'attempt' in o && o.ok).length;
  await until(() => ok(), (n) => n >= 10, 'the loop running through the agent');
  current.kill('SIGTERM');
  t.is(await exited(current), 0, `a SIGTERM'd agent exits 0: ${log.slice(-2000)}`);
  const held = await table();
  t.truthy(held, 'the capture table stays while no agent runs: api fails closed');
  t.notRegex(held!, /tproxy/, 'held: no connection is handed to a gone agent');
  t.regex(held!, new RegExp(api.ip.replace(/\./g, '\\.')));
  // The loop's next SYN meets no agent: dropped (the client retries), not let through to the pod.
  await until(table, (x) => /fail-closed counter packets [1-9]/.test(x ?? ''), 'a SYN to the fail-closed pod dropped while no agent runs');
  const atRestart = ok();
  startAgent();
  await capturing(['shop/api']);
  await until(() => ok(), (n) => n >= atRestart + 10, 'the loop through the new agent');
  loop.kill('SIGKILL');
  await exited(loop);
  const all = attempts.lines.filter((o) => 'attempt' in o);
  const failed = all.filter((o) => !o.ok);
  t.deepEqual(failed, [], 'no connection fails across the restart');
  const slowest = Math.max(...all.map((o) => o.t1 - o.t0));
  t.log(`${all.length} attempts, none failed; the slowest took ${slowest.toFixed(0)} ms (a SYN retried while no agent ran)`);
});

test.serial('uninstall: a pod failing closed keeps the capture until `mesh-agent cleanup`; an agent stopped with none fails closed leaves nothing in the kernel', async (t) => {
  const current = children.filter((c) => c.spawnargs.includes('run') && c.exitCode === null && c.signalCode === null).at(-1)!;
  // While the agent captures, cleanup refuses: removing the table would let any client straight
  // into the fail-closed pod, and the running agent would not put it back until a pod changed.
  const early = await node.execInNode(process.execPath, [BIN, 'cleanup'], { timeoutMs: 15_000 });
  t.not(early.code, 0, early.stdout);
  t.regex(early.stderr, /an agent is running.*--force/);
  t.true((await left()).table, 'the running agent\'s capture is untouched');
  t.false((await connect(outsider, api, 1500)).ok, 'the fail-closed pod stays closed to an unmeshed client');
  current.kill('SIGTERM');
  await exited(current);
  const kept = await left();
  t.true(kept.table, 'the table stays for the fail-closed pod');
  t.false((await connect(outsider, api, 1500)).ok, 'still closed');
  const cleanup = await node.execInNode(process.execPath, [BIN, 'cleanup'], { timeoutMs: 15_000 });
  t.is(cleanup.code, 0, cleanup.stderr);
  t.regex(cleanup.stdout, /removed: nftables table ip mesh-agent, policy rule pref 100, routing table 15006/);
  t.deepEqual(await left(), { table: false, rule: '', route: '', programs: 0 }, 'nothing left: nft, ip rule, route, BPF');
  t.true((await connect(outsider, api, 5000)).ok, 'open once cleaned up');

  writePods(null);
  const a = startAgent();
  await capturing([]);
  t.true((await left()).table);
  a.kill('SIGTERM');
  t.is(await exited(a), 0);
  t.deepEqual(await left(), { table: false, rule: '', route: '', programs: 0 }, 'no pod fails closed: the agent leaves nothing behind');
  const again = await node.execInNode(process.execPath, [BIN, 'cleanup'], { timeoutMs: 15_000 });
  t.is(again.code, 0);
  t.regex(again.stdout, /nothing to remove/);
});
