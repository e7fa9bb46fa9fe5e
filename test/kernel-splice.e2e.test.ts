// Kernel splice (--kernel-splice) through the real agent on a simulated node: bulk both ways
// with half-close, a server-first banner, resets from either end, and the byte counts the
// agent reports, while the kernel (BPF sockhash + sk_skb verdict) moves the tunnels' bytes.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { JsonLines } from './helpers/procs.ts';
import { agentStatus, waitAgentReady } from './helpers/agent-admin.ts';
import { until } from './helpers/until.ts';
import { collect } from '../src/sim/run.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const BIN = meshBin();
let node: SimNode;
let client: SimPod;
let server: SimPod;
let serverOut: JsonLines;
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
let agentLog = '';

// 7001 (opaque-port) and 7004 (server-first: a banner, then the same): read to EOF, answer a
// JSON line with what arrived (length, sha256) and what follows, then 24 MB, then FIN.
// 7002: reset after the first MB. 7003: acknowledge the first MB, report how the client left.
const SERVER = `
  const net = require('node:net'), crypto = require('node:crypto');
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
  const echoHash = (s, port) => {
    const h = crypto.createHash('sha256'); let n = 0;
    s.on('data', (d) => { n += d.length; h.update(d); });
    s.on('end', () => {
      const reply = crypto.randomBytes(24 << 20);
      const sha = h.digest('hex');
      out({ port, eof: n, sha });
      s.write(JSON.stringify({ n, sha, replyBytes: reply.length, replySha: crypto.createHash('sha256').update(reply).digest('hex') }) + '\\n');
      s.end(reply);
    });
  };
  const opts = { allowHalfOpen: true };
  net.createServer(opts, (s) => echoHash(s, 7001)).listen(7001);
  net.createServer(opts, (s) => { s.write('BANNER ready\\n'); echoHash(s, 7004); }).listen(7004);
  net.createServer(opts, (s) => { let n = 0; s.on('error', () => {}); s.on('data', (d) => { n += d.length; if (n >= 1 << 20) s.resetAndDestroy(); }); }).listen(7002);
  net.createServer(opts, (s) => {
    let n = 0, acked = false;
    s.on('data', (d) => { n += d.length; if (!acked && n >= 1 << 20) { acked = true; s.write('ok\\n'); } });
    s.on('error', (e) => out({ port: 7003, error: e.code, n }));
    s.on('end', () => out({ port: 7003, end: true, n }));
  }).listen(7003, () => out({ listening: true }));`;

// argv: host port mode bytes. Prints one JSON line with what it saw.
const CLIENT = `
  const net = require('node:net'), crypto = require('node:crypto');
  const [host, port, mode, bytes] = process.argv.slice(1); const total = Number(bytes);
  const out = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  const sent = crypto.createHash('sha256');
  let chunks = [], got = 0;
  s.on('error', (e) => out({ error: e.code, got }));
  const send = (n, then) => {
    let left = n;
    const pump = () => { while (left > 0) { const b = crypto.randomBytes(Math.min(left, 1 << 20)); left -= b.length; sent.update(b); if (!s.write(b)) return s.once('drain', pump); } then(); };
    pump();
  };
  if (mode === 'bulk' || mode === 'banner' || mode === 'hold') {
    s.on('data', (d) => { chunks.push(d); got += d.length; });
    s.on('end', () => {
      let all = Buffer.concat(chunks);
      let banner = null;
      if (mode === 'banner') { const i = all.indexOf(10); banner = all.subarray(0, i).toString(); all = all.subarray(i + 1); }
      const i = all.indexOf(10);
      const head = JSON.parse(all.subarray(0, i).toString());
      const reply = all.subarray(i + 1);
      out({ banner, sentSha: sent.digest('hex'), head, replyLen: reply.length, replySha: crypto.createHash('sha256').update(reply).digest('hex'), got });
    });
    // hold: keep the tunnel open, FIN only once stdin closes (the test says when).
    const go = () => send(total, () => (mode === 'hold' ? process.stdin.once('end', () => s.end()).resume() : s.end()));
    if (mode === 'banner') s.once('data', go); else s.on('connect', go);
  } else if (mode === 'server-reset') {
    s.on('data', () => {});
    s.on('end', () => out({ end: true }));
    s.on('connect', () => { const loop = () => send(1 << 20, () => setImmediate(loop)); loop(); });
  } else if (mode === 'client-reset') {
    s.on('data', (d) => { if (d.toString().includes('ok')) { s.resetAndDestroy(); setTimeout(() => out({ reset: true }), 200); } });
    s.on('connect', () => send(1 << 20, () => {}));
  }`;

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('needs root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  client = await node.addPod({ name: 'client', namespace: 'app', annotations: { 'mesh-agent.io/inject': 'enabled' } });
  server = await node.addPod({ name: 'server', namespace: 'app', annotations: { 'mesh-agent.io/opaque-ports': '7001,7002,7003' } });
  const podsFile = path.join(tmp, 'pods.json');
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--kernel-splice', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191']);
  children.push(agent);
  agent.stderr!.on('data', (d) => (agentLog += d));
  const srv = server.spawn(process.execPath, ['-e', SERVER]);
  children.push(srv);
  serverOut = new JsonLines(srv);
  await serverOut.waitFor((o) => o.listening, 10_000, 'servers listening');
  await waitAgentReady(node, () => agentLog);
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const status = () => agentStatus(node);

/** Sum of a metric over every series whose labels include `match`. */
async function metric(name: string, match: string): Promise<number> {
  const text = (await node.execInNode('curl', ['-sf', 'http://127.0.0.1:4191/metrics'])).stdout;
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + '{') && line.includes(match)) sum += Number(line.split(' ').pop());
  return sum;
}

async function run(port: number, mode: string, bytes = 0) {
  const r = await client.exec(process.execPath, ['-e', CLIENT, server.ip!, String(port), mode, String(bytes)], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`client exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

test.serial('bulk both ways with a half-close: every byte, in order, moved by the kernel; counts right', async (t) => {
  const before = (await status()).proxy;
  const names = ['tcp_write_bytes_total', 'tcp_read_bytes_total'];
  const dirs = ['direction="outbound"', 'direction="inbound"'];
  const counts = async () => Promise.all(dirs.flatMap((d) => names.map((n) => metric(n, d))));
  const countsBefore = await counts();
  const sent = 48 << 20;
  const r = await run(7001, 'bulk', sent);
  const eof = await serverOut.waitFor((o) => o.port === 7001 && o.eof !== undefined, 30_000, 'server EOF');
  t.is(eof.eof, sent, 'the server saw every client byte before the FIN');
  t.is(r.head.sha, r.sentSha, 'client to server: same bytes, same order');
  t.is(r.replyLen, r.head.replyBytes);
  t.is(r.replySha, r.head.replySha, 'server to client after the half-close: same bytes, same order');
  const after = (await status()).proxy;
  t.is(after.spliced - before.spliced, 1, 'the tunnel was handed to the kernel');
  t.is(after.spliceFailed, 0);
  // Telemetry counts the kernel's bytes: the client pod's side wrote `sent` and read the
  // reply (its head line and the 24 MB); the server's side the other way round.
  const expected = [sent, r.got, r.got, sent];
  const delta = async () => (await counts()).map((v, i) => v - countsBefore[i]);
  // The close events carry the last counts; wait for them, then compare exactly.
  await until(delta, (d) => JSON.stringify(d) === JSON.stringify(expected), 'the byte counts of the closed tunnel', { ms: 30_000, intervalMs: 100 }).catch(() => {});
  t.deepEqual(await delta(), expected, 'outbound write/read, inbound write/read');
});

test.serial('a server-first banner is forwarded before the spliced bytes', async (t) => {
  const before = (await status()).proxy;
  const sent = 8 << 20;
  const r = await run(7004, 'banner', sent);
  t.is(r.banner, 'BANNER ready');
  t.is(r.head.n, sent);
  t.is(r.head.sha, r.sentSha);
  t.is(r.replySha, r.head.replySha);
  const after = (await status()).proxy;
  t.is(after.byDetection['server-first'] - (before.byDetection['server-first'] ?? 0), 1);
  t.is(after.spliced - before.spliced, 1);
});

test.serial('a server reset reaches the client as a reset', async (t) => {
  const before = (await status()).proxy.spliced;
  const r = await run(7002, 'server-reset');
  t.true(r.error === 'ECONNRESET' || r.error === 'EPIPE', JSON.stringify(r));
  t.is((await status()).proxy.spliced - before, 1);
});

test.serial('a client reset reaches the server as a reset', async (t) => {
  const before = (await status()).proxy.spliced;
  const r = await run(7003, 'client-reset');
  t.true(r.reset);
  const ev = await serverOut.waitFor((o) => o.port === 7003 && (o.error || o.end), 30_000, 'server sees the client leave');
  t.is(ev.error, 'ECONNRESET', JSON.stringify(ev));
  t.is((await status()).proxy.spliced - before, 1);
});

test.serial('byte counts of a spliced tunnel are reported while it is still open', async (t) => {
  const before = await metric('tcp_write_bytes_total', 'direction="outbound"');
  const sent = 4 << 20;
  // The client sends, then holds the tunnel open until its stdin closes: no race between its
  // FIN and the agent's 5 s report.
  const held = client.spawn(process.execPath, ['-e', CLIENT, server.ip!, '7001', 'hold', String(sent)], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(held);
  const seen = await until(async () => (await metric('tcp_write_bytes_total', 'direction="outbound"')) - before, (n) => n >= sent,
    'a periodic report with the kernel-moved bytes', { ms: 60_000, intervalMs: 250 });
  t.is(seen, sent, 'the periodic connBytes report carried the kernel-moved bytes');
  t.is(held.exitCode, null, 'the connection was still open: the client has not sent its FIN');
  // Its two sockets in the sockhash, which has no batch lookup: status counts it key by key.
  const used = Object.fromEntries((await status()).datapath.maps.map((m: any) => [m.name, m.used]));
  t.like(used, { mesh_splice: 2, mesh_splice_links: 2 });
  t.is(await metric('mesh_agent_datapath_map_entries', 'map_name="mesh_splice"'), 2, 'and so does /metrics');
  const r = await collect(held, { timeoutMs: 60_000 }); // closes the client's stdin: FIN, reply, exit
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.is(out.head.sha, out.sentSha);
});
