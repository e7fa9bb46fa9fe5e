// An HTTP/2 or gRPC endpoint is a P2C candidate once its upstream session is connected, as in
// linkerd2-proxy (tower's balancer picks among endpoints polled ready): a draw of an endpoint
// without a session starts one in the background, and the request goes to a connected endpoint
// (docs/routing.md, The balancer). A scale-up with a real slow connect: in a network namespace of
// the test's own, nftables drop the first SYN of each connection to the new endpoint, so
// connecting to it takes the kernel's SYN retransmission (1 s). The endpoints, the proxy and its
// client run in that namespace (test/fixtures/slow-connect-balance.ts); the namespace and its
// table go at the end. Fails when a draw sends a request to the connecting endpoint: that request
// waits the whole second.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
// By absolute path: on ava's PATH, node_modules/.bin/nft is @vercel/nft, a file tracer.
import { ipBinary, nftBinary } from '../src/datapath/nft.ts';
import { makeNodeId, nodeNetnsName } from '../src/sim/layout.ts';
import { addNetns, deleteNetns, deleteNetnsSync } from '../src/sim/network.ts';
import { randomLetters } from '../src/sim/node.ts';
import { execFile, netnsPath } from '../src/sim/run.ts';
import { exited, JsonLines } from './helpers/procs.ts';
import { requireRoot } from './helpers/root.ts';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/slow-connect-balance.ts');
// A namespace of its own: any port is free.
const SLOW = 8001;
const FAST = 8002;

/** The nftables table: a SYN to SLOW whose source address and port it has not seen is remembered and dropped (counted); its retransmission passes. */
const FIRST_SYN_DROPPED = `table inet slow_connect {
  set seen { type ipv4_addr . inet_service; flags dynamic; }
  chain output {
    type filter hook output priority 0; policy accept;
    tcp dport ${SLOW} tcp flags & (fin | syn | rst | ack) == syn ip saddr . tcp sport @seen accept
    tcp dport ${SLOW} tcp flags & (fin | syn | rst | ack) == syn add @seen { ip saddr . tcp sport } counter drop
  }
}
`;

interface Result {
  routed: boolean;
  endpoints: Array<{ port: number; ewmaMs: number; requests: number }>;
  requests: Array<{ destPort: number; status: number; grpcStatus?: number; latencyMs: number }>;
  /** SYNs the table dropped. */
  dropped: number;
}

async function inNs(ns: string, cmd: string, args: string[], input?: string): Promise<string> {
  const r = await execFile('nsenter', [`--net=${netnsPath(ns)}`, '--', cmd, ...args], { timeoutMs: 30_000, ...(input !== undefined ? { input } : {}) });
  const name = path.basename(cmd);
  const fix = name === 'nft' ? 'the test needs nftables with dynamic sets (nft 0.9.x or later, kernel 5.x)' : 'the test needs root and iproute2';
  if (r.code !== 0) throw new Error(`${name} ${args.join(' ')} in ${ns} failed (exit ${r.code}): ${r.stderr.trim()}; ${fix}`);
  return r.stdout;
}

/** Runs the fixture in a fresh namespace with the table; what it printed, and the table's drop count. */
async function run(t: ExecutionContext, mode: 'h2' | 'grpc-routed'): Promise<Result> {
  requireRoot(t);
  const ns = nodeNetnsName(makeNodeId(process.pid, 0, randomLetters()));
  const sweep = () => deleteNetnsSync(ns);
  process.once('exit', sweep);
  let child: ReturnType<typeof spawn> | undefined;
  t.teardown(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
    await deleteNetns(ns);
    process.off('exit', sweep);
  });
  await addNetns(ns);
  await inNs(ns, ipBinary(), ['link', 'set', 'lo', 'up']);
  await inNs(ns, nftBinary(), ['-f', '-'], FIRST_SYN_DROPPED);
  child = spawn('nsenter', [`--net=${netnsPath(ns)}`, '--', process.execPath, '--disable-warning=ExperimentalWarning', FIXTURE, mode, String(SLOW), String(FAST)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = await new JsonLines(child).waitFor((o) => 'endpoints' in o, 30_000, 'the fixture\'s result');
  const table = await inNs(ns, nftBinary(), ['-j', 'list', 'table', 'inet', 'slow_connect']);
  const counters = (JSON.parse(table).nftables as Array<Record<string, any>>).flatMap((o) => (o.rule?.expr ?? []) as Array<Record<string, any>>).filter((e) => e.counter);
  return { ...out, dropped: counters.reduce((n, e) => n + e.counter.packets, 0) };
}

function check(t: ExecutionContext, r: Result): void {
  t.log(JSON.stringify({ ...r, requests: `${r.requests.length} requests, the slowest ${Math.max(...r.requests.map((q) => q.latencyMs)).toFixed(1)} ms` }));
  t.true(r.dropped >= 1, 'the first SYN to the slow endpoint was dropped: its session took the 1 s retransmission to connect');
  const slowRequests = r.requests.filter((q) => q.destPort === SLOW);
  const slow = r.endpoints.find((e) => e.port === SLOW);
  t.true(slowRequests.length >= 1, 'a request went to the slow endpoint once it was connected');
  t.truthy(slow);
  for (const q of slowRequests) t.is(q.status, 200);
  // No request waited for the connect (1 s; 950: the kernel times the retransmission in
  // scheduler ticks): while the new endpoint's session connected, P2C chose the connected one.
  // Before, the request whose draw chose the new endpoint waited the whole second.
  const waited = r.requests.filter((q) => q.latencyMs >= 950);
  t.deepEqual(waited, [], 'requests that waited for the slow endpoint\'s connect');
  // The balancer: the answers took a few ms; the estimate stays near them (30 ms default, moved toward the samples).
  t.true(slow!.ewmaMs < 500, `the slow endpoint's estimate: ${slow!.ewmaMs} ms`);
}

test('HTTP/2: a new endpoint slow to connect (1 s) gets no request until its session, started in the background, is connected; none waits for the connect', async (t) => {
  const r = await run(t, 'h2');
  t.false(r.routed, 'the plain balanced path (no routes)');
  check(t, r);
});

test('gRPC through a Service with a route policy (request timeout): the same, on the routed path', async (t) => {
  const r = await run(t, 'grpc-routed');
  t.true(r.routed, 'the routed path');
  check(t, r);
  t.is(r.requests.find((q) => q.destPort === SLOW)!.grpcStatus, 0);
});
