// Real clients through the whole mesh on a simulated node: a meshed pod's curl (HTTP/1.1 and
// h2c prior knowledge) and h2load reach servers in another pod through the kernel datapath
// and the agent's proxy, which detects each protocol.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, type SimNode, type SimPod } from '../src/sim/index.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';
import { agentStatus, waitAgentReady } from './helpers/agent-admin.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { fireAndForgetMessages, fireAndForgetWhileStopped } from './helpers/fire-and-forget.ts';

const BIN = meshBin();
let node: SimNode;
let client: SimPod;
let server: SimPod;
const children: ChildProcess[] = [];
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
let agentLog = '';
let serverOut: JsonLines;
let agentProc: ChildProcess;

const SERVERS = `
  const http = require('node:http'), http2 = require('node:http2');
  http.createServer((req, res) => { let n = 0; req.on('data', (d) => n += d.length); req.on('end', () => res.end(req.method + ' ' + req.url + ' ' + n + ' via ' + req.socket.remoteAddress)); }).listen(8080, () => {
    http2.createServer((req, res) => res.end('h2 ' + req.url)).listen(8081, () => {
      http.createServer((req, res) => res.end('raw ' + req.url)).listen(8082, () => {
        // A sink: one line per connection with all it received, at its end.
        require('node:net').createServer((c) => { let d = ''; c.on('data', (x) => (d += x)); c.on('end', () => console.log(JSON.stringify({ got: d }))); c.on('error', () => {}); })
          .listen(8083, () => console.log(JSON.stringify({ listening: true })));
      });
    });
  });`;

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('needs root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  client = await node.addPod({ name: 'client', namespace: 'app', annotations: { 'mesh-agent.io/inject': 'enabled' } });
  server = await node.addPod({ name: 'server', namespace: 'app', annotations: { 'mesh-agent.io/opaque-ports': '8082' } });
  const podsFile = path.join(tmp, 'pods.json');
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
  const agent = node.spawnInNode(process.execPath, [BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot, '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191']);
  children.push(agent);
  agentProc = agent;
  agent.stderr!.on('data', (d) => (agentLog += d));
  const srv = server.spawn(process.execPath, ['-e', SERVERS]);
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

test.serial('curl HTTP/1.1: keep-alive requests and a streamed upload through the proxy', async (t) => {
  const before = (await status()).proxy.byProtocol.http1 ?? 0;
  const r = await client.exec('curl', ['-sS', '--fail-with-body', `http://${server.ip}:8080/a`, `http://${server.ip}:8080/b`, '-X', 'POST', '--data-binary', '@-'], { input: 'x'.repeat(100_000), timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `POST /a 100000 via ::ffff:${node.nodeIp}POST /b 100000 via ::ffff:${node.nodeIp}`);
  t.is((await status()).proxy.byProtocol.http1 - before, 1, 'two requests on one detected keep-alive connection');
});

test.serial('curl with HTTP/2 prior knowledge, and h2load, through the proxy', async (t) => {
  const r = await client.exec('curl', ['-sS', '--http2-prior-knowledge', `http://${server.ip}:8081/x`], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'h2 /x');
  const load = await client.exec('h2load', ['-n', '400', '-c', '4', '-m', '8', `http://${server.ip}:8081/load`], { timeoutMs: 60_000 });
  t.is(load.code, 0, load.stderr);
  t.regex(load.stdout, /requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored/);
  const s = await status();
  t.true(s.proxy.byProtocol.http2 >= 5, JSON.stringify(s.proxy.byProtocol));
  t.is(s.proxy.refusedNoRecord, 0);
});

test.serial('a destination pod\'s opaque-ports annotation skips detection for its ports', async (t) => {
  const before = (await status()).proxy.byProtocol;
  const r = await client.exec('curl', ['-sS', `http://${server.ip}:8082/o`, `http://${server.ip}:8080/h`], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `raw /oGET /h 0 via ::ffff:${node.nodeIp}`);
  const after = (await status()).proxy.byProtocol;
  t.is((after.opaque ?? 0) - (before.opaque ?? 0), 1, 'the annotated port was forwarded opaque');
  t.is(after.http1 - before.http1, 1, 'the other port was still detected');
});

test.serial('a client that writes and closes at once has its bytes delivered, not refused for want of a record', async (t) => {
  const before = (await status()).proxy.refusedNoRecord;
  const N = 20;
  const r = await fireAndForgetWhileStopped(client, agentProc, server.ip, 8083, N);
  t.is(r.code, 0, r.stderr);
  const got = () => serverOut.lines.filter((o) => o.got !== undefined).map((o) => o.got as string);
  await until(got, (g) => g.length === N, 'every message at the sink', { ms: 5000 }).catch(() => {});
  t.is((await status()).proxy.refusedNoRecord, before);
  t.deepEqual(got().sort(), fireAndForgetMessages(N));
});
