// The proxy workers' pool with stand-in workers (test/fixtures/pool-worker.ts), and the default
// worker count from the cgroup CPU limit.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { WorkerPool } from '../src/workers/pool.ts';
import type { WorkerInit } from '../src/workers/protocol.ts';
import { cgroupDirOf as dirOf, defaultProxyWorkers, parseCfs, parseCpuMax, parseMemoryMax, parseProcCgroup, tightest } from '../src/workers/cpus.ts';
import { sumProxyStats, mergeDescribed } from '../src/workers/merge.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const SCRIPT = new URL('./fixtures/pool-worker.ts', import.meta.url);

function pool(init: (index: number, n: number) => object, opts: { lagLimitMs?: number; onPolicyLoaded?: () => void } = {}) {
  const lines: string[] = [];
  const merged: unknown[] = [];
  let forgotten = 0;
  const starts = new Map<number, number>();
  const p = new WorkerPool<{ id: number }>({
    count: 2,
    script: SCRIPT,
    init: (index) => {
      const n = (starts.get(index) ?? 0) + 1;
      starts.set(index, n);
      return { index, ...init(index, n) } as unknown as WorkerInit;
    },
    ledger: () => ({ id: Math.random() }),
    merge: (batch) => void merged.push(batch),
    forget: () => void forgotten++,
    tap: () => {},
    log: (level, msg) => void lines.push(`${level} ${msg}`),
    pingIntervalMs: 50,
    lagLimitMs: opts.lagLimitMs ?? 5000,
    onPolicyLoaded: opts.onPolicyLoaded,
  });
  return { p, lines, merged, forgotten: () => forgotten };
}

async function until(cond: () => boolean, what: string, ms = 10_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a worker whose event loop stops answering is replaced, counted as stuck; its open connections are forgotten', async (t) => {
  // Worker 2's first incarnation gets stuck after its first collect; its replacement does not.
  const { p, lines, merged, forgotten } = pool((index, n) => (index === 2 && n === 1 ? { stuckAfterCollect: true } : {}), { lagLimitMs: 2000 });
  await p.start();
  await p.collect();
  t.is(merged.length, 2, 'both workers answered the collect');
  await until(() => lines.some((l) => /proxy worker 2 replaced/.test(l)), 'the replacement');
  t.true(lines.some((l) => /^warn proxy worker 2 has not answered for \d+ ms \(its event loop is stuck\); replacing it/.test(l)), lines.join('\n'));
  const s = p.status();
  t.like(s[1], { index: 2, state: 'running', restarts: 1, stuck: 1 });
  t.like(s[0], { index: 1, state: 'running', restarts: 0, stuck: 0 });
  t.is(forgotten(), 1, 'what the stuck worker counted as open was taken back');
  t.true(s[1]!.cpuSeconds > 0, 'the first incarnation\'s CPU stays counted');
  await p.close(1000);
  t.deepEqual(p.status().map((w) => w.state), ['stopped', 'stopped']);
});

test('policyLoaded() holds until every worker confirmed the policy table, not until it was sent', async (t) => {
  // Worker 2 confirms only at its next collect: the table was sent to it, not yet applied.
  let confirmations = 0;
  const { p } = pool((index) => ({ pods: { generation: 1, pods: [], policies: { networks: '', pods: [], generation: 1 } }, holdPolicyAck: index === 2 }), { onPolicyLoaded: () => void confirmations++ });
  t.teardown(() => p.close(0));
  await p.start();
  t.true(p.policyLoaded(1), 'both started from generation 1');
  p.setPods({ generation: 2, pods: [], policies: { networks: '', pods: [], generation: 2 } });
  t.false(p.policyLoaded(2), 'sent is not loaded');
  await until(() => confirmations >= 1, 'worker 1 to confirm');
  t.false(p.policyLoaded(2), 'worker 2 has not confirmed yet');
  await p.collect();
  await until(() => confirmations >= 2, 'worker 2 to confirm');
  t.true(p.policyLoaded(2));
  t.false(p.policyLoaded(3));
});

test('a stuck worker whose end takes a while is replaced once, and counted once', async (t) => {
  const dir = testTempDir(t);
  const fifo = path.join(dir, 'stuck');
  execFileSync('mkfifo', [fifo]);
  // The bound is the other stuck test's, 2 s: at 300 ms a worker still starting on a loaded machine
  // was judged stuck before it reached the FIFO, and was replaced at once (state 'starting').
  const { p, lines } = pool((index, n) => (index === 2 && n === 1 ? { stuckInFifo: fifo } : {}), { lagLimitMs: 2000 });
  t.teardown(async () => {
    // Also on failure: a worker still blocked in open() is let go (ENXIO: nobody reads any more), and the pool closed.
    try {
      fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {}
    await p.close(0);
  });
  await p.start();
  await p.collect();
  const stuckLines = () => lines.filter((l) => /proxy worker 2 has not answered/.test(l)).length;
  await until(() => stuckLines() >= 1, 'the stuck worker seen');
  t.is(p.status()[1]!.state, 'restarting', `being replaced: ${lines.join('\n')}`);
  // The thread cannot end while it is blocked in open(): the pool keeps ticking (every 50 ms) meanwhile.
  // A second verdict on the same worker would come within a tick; allow twenty.
  const end = Date.now() + 1000;
  await until(() => stuckLines() >= 2 || Date.now() > end, 'a second verdict, or a second gone by');
  t.is(stuckLines(), 1, lines.join('\n'));
  // The worker's open() returns; its termination completes. The thread may end before it reads,
  // closing the FIFO under this write (EPIPE): that lets it go just the same.
  try {
    fs.writeFileSync(fifo, 'x');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPIPE') throw e;
  }
  await until(() => lines.some((l) => /proxy worker 2 replaced/.test(l)), 'the replacement');
  t.like(p.status()[1], { index: 2, state: 'running', restarts: 1, stuck: 1 });
  await p.close(1000);
});

test('after cutDrain() a worker that does not answer its close is terminated within the cut\'s grace, not at the drain deadline', async (t) => {
  const { p } = pool((index) => (index === 2 ? { ignoreClose: true } : {}));
  await p.start();
  const t0 = performance.now();
  const closing = p.close(60_000);
  p.cutDrain();
  await closing;
  t.true(performance.now() - t0 < 20_000, `closed ${Math.round(performance.now() - t0)} ms after the cut, not at the 60 s drain's end`);
  t.deepEqual(p.status().map((s) => s.state), ['stopped', 'stopped']);
});

test('a cut before close() holds there too: close() does not wait the drain for a worker that does not answer', async (t) => {
  const { p } = pool((index) => (index === 2 ? { ignoreClose: true } : {}));
  await p.start();
  p.cutDrain();
  const t0 = performance.now();
  await p.close(60_000);
  t.true(performance.now() - t0 < 20_000, `closed ${Math.round(performance.now() - t0)} ms after the cut`);
});

/** Refed timers in this process (serial tests run first: no other test runs now). */
const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

test.serial('a second close() while the first drains is that drain, not a second one: the same promise, and no drain timer outlives it', async (t) => {
  const before = timers();
  const { p } = pool(() => ({}));
  await p.start();
  const first = p.close(60_000);
  const second = p.close(60_000);
  t.is(second, first, 'the second call joins the first');
  await first;
  t.deepEqual(p.status().map((s) => s.state), ['stopped', 'stopped']);
  t.is(timers() - before, 0, 'no 62 s drain timer left holding the loop after close()');
});

test('a worker killed is restarted at once and counted; a collect while it is gone does not wait for it', async (t) => {
  const { p, lines } = pool(() => ({}));
  await p.start();
  await p.kill(1);
  await until(() => lines.some((l) => /proxy worker 1 replaced/.test(l)), 'the replacement');
  t.true(lines.some((l) => /^warn proxy worker 1 exited \(code 1\); restarting it, the other proxies keep serving/.test(l)), lines.join('\n'));
  t.like(p.status()[0], { state: 'running', restarts: 1, stuck: 0 });
  await p.close(1000);
});

test('a worker that cannot listen at start fails the start with its reason', async (t) => {
  const { p } = pool(() => ({ fail: true }));
  // Both fail; whichever reports first is the start's reason.
  await t.throwsAsync(p.start(), { message: /^proxy worker [12] could not start: listen EADDRINUSE$/ });
  await p.close(0);
});

test('the default proxy count: the CPUs, at most the cgroup CPU limit rounded up (found also through a v1 container\'s bind mounts), at least 1', (t) => {
  t.is(parseCpuMax('max 100000\n'), null);
  t.is(parseCpuMax('150000 100000\n'), 1.5);
  t.is(parseCpuMax('50000\n'), 0.5, 'the period defaults to 100 ms');
  t.is(parseCfs('-1\n', '100000\n'), null);
  t.is(parseCfs('200000\n', '100000\n'), 2);
  t.is(defaultProxyWorkers(null, 8, null), 8);
  t.is(defaultProxyWorkers(1.5, 8, null), 2);
  t.is(defaultProxyWorkers(0.25, 8, null), 1);
  t.is(defaultProxyWorkers(16, 4, null), 4, 'a limit above the CPUs does not add threads');
  // The DaemonSet's 512 MiB leaves room for 14 proxies on a 32-CPU node, not 32 (~17 MB each idle).
  t.is(defaultProxyWorkers(null, 32, 512 * 2 ** 20), 14);
  t.is(defaultProxyWorkers(null, 32, 128 * 2 ** 20), 1, 'a tight limit still runs one proxy');
  t.is(parseMemoryMax('max\n'), null);
  t.is(parseMemoryMax('536870912\n'), 536870912);
  t.is(parseMemoryMax('9223372036854771712\n'), null, 'cgroup v1 writes a huge number for no limit');
  t.deepEqual(parseProcCgroup('12:cpu,cpuacct:/kubepods/pod1\n4:memory:/kubepods/pod1\n0::/kubepods.slice/pod1.slice\n'), { v1cpu: '/kubepods/pod1', v1memory: '/kubepods/pod1', v2: '/kubepods.slice/pod1.slice' });
  const cgroupDirOf = (...a: Parameters<typeof dirOf>) => dirOf(...a)?.dir ?? null;
  const hostView = [
    '30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw',
    '31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct',
  ].join('\n');
  t.is(cgroupDirOf(hostView, '0::/kubepods.slice/pod1.slice\n', 'v2'), '/sys/fs/cgroup/kubepods.slice/pod1.slice');
  t.is(cgroupDirOf(hostView, '12:cpu,cpuacct:/kubepods/pod1\n', 'v1cpu'), '/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1');
  // A cgroup v1 container without a cgroup namespace (containerd, Docker on v1 nodes): its
  // controllers are bind mounts of its own cgroup, whose path /proc/self/cgroup still names in full.
  const c = '/kubepods/burstable/pod1/0123abcd';
  const containerView = [
    `1210 1201 0:27 ${c} /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct`,
    `1211 1201 0:29 ${c} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory`,
  ].join('\n');
  const procView = `12:cpu,cpuacct:${c}\n9:memory:${c}\n`;
  t.is(cgroupDirOf(containerView, procView, 'v1cpu'), '/sys/fs/cgroup/cpu,cpuacct');
  t.is(cgroupDirOf(containerView, procView, 'v1memory'), '/sys/fs/cgroup/memory');
  t.is(cgroupDirOf(containerView, `12:cpu,cpuacct:/elsewhere\n`, 'v1cpu'), null, 'a mount that does not hold this cgroup is not read');
  const v2Escaped = `40 25 0:26 / /run/cgroup\\040two rw - cgroup2 cgroup2 rw`;
  t.is(cgroupDirOf(v2Escaped, '0::/a\n', 'v2'), '/run/cgroup two/a');
  // The tightest limit on the way to the root wins.
  const root = fs.mkdtempSync(ownedTempPrefix('test'));
  const pod = path.join(root, 'kubepods.slice', 'pod1.slice');
  fs.mkdirSync(pod, { recursive: true });
  fs.writeFileSync(path.join(root, 'kubepods.slice', 'cpu.max'), '300000 100000\n');
  fs.writeFileSync(path.join(pod, 'cpu.max'), 'max 100000\n');
  const read = (d: string) => (fs.existsSync(path.join(d, 'cpu.max')) ? parseCpuMax(fs.readFileSync(path.join(d, 'cpu.max'), 'utf8')) : null);
  t.is(tightest(root, pod, read), 3);
  fs.writeFileSync(path.join(pod, 'cpu.max'), '120000 100000\n');
  t.is(tightest(root, pod, read), 1.2);
  fs.rmSync(root, { recursive: true });
});

test('merged views: counters summed; a balancer endpoint\'s requests and ejections summed (each proxy\'s under workers), its EWMA weighted by the requests, its state the worst', (t) => {
  const base = { open: 1, accepted: 5, refusedNoRecord: 0, refusedOverCap: 1, byProtocol: { http1: 2 }, byDetection: { http1: 2 }, spliced: 0, spliceFailed: 0, eagerDialSkipped: 1, eagerDialLate: 0, knownHttp1Dests: 3, noEndpoints: 0, inboundAccepted: 2, tunnelledInspected: 0, localInspected: 0 };
  t.deepEqual(sumProxyStats([base, { ...base, byProtocol: { http1: 1, opaque: 4 }, knownHttp1Dests: 7 }]), {
    ...base, open: 2, accepted: 10, refusedOverCap: 2, byProtocol: { http1: 3, opaque: 4 }, byDetection: { http1: 4 }, eagerDialSkipped: 2, knownHttp1Dests: 7, inboundAccepted: 4,
  });
  const ref = { namespace: 'shop', name: 'api', port: 80 };
  const ep = (ewmaMs: number, requests: number, state: 'ready' | 'ejected' | 'probation' = 'ready') => ({ ip: '10.0.0.1', port: 8080, pod: 'api-1', state, ewmaMs, inflight: 1, requests, failures: 1, ejections: state === 'ejected' ? 1 : 0 });
  const merged = mergeDescribed([
    { worker: 0, ports: [{ ref, authority: 'api.shop.svc.cluster.local:80', problems: [], topology: 'PreferSameZone: 1 of 2 ready endpoints, those hinted for zone z1', endpoints: [ep(10, 30)] }] },
    { worker: 1, ports: [{ ref, authority: 'api.shop.svc.cluster.local:80', problems: ['x'], topology: 'PreferSameZone: 1 of 2 ready endpoints, those hinted for zone z1', endpoints: [ep(30, 10, 'ejected')] }] },
  ]);
  t.is(merged.length, 1);
  t.deepEqual(merged[0]!.problems, ['x']);
  t.is(merged[0]!.topology, 'PreferSameZone: 1 of 2 ready endpoints, those hinted for zone z1', 'the topology note comes through the merge');
  t.like(merged[0]!.endpoints[0], { ip: '10.0.0.1', state: 'ejected', ewmaMs: 15, inflight: 2, requests: 40, failures: 2, ejections: 1 });
  t.deepEqual(merged[0]!.endpoints[0]!.workers.map((w) => [w.worker, w.state, w.ejections]), [[0, 'ready', 0], [1, 'ejected', 1]], 'each proxy\'s own state and ejections');
});
