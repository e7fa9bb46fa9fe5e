// A proxy worker gives back the young generation its start-up grew once it is first idle, after
// it listens (src/proxy/heap-settle.ts settleStartUp; docs/benchmarks.md, "Memory as installed" and
// "A worker's start"): each extra proxy's idle memory must not depend on when V8's memory reducer
// happens to run, and a replacement must not wait for the collection to listen. And an idle one, identity on,
// loads no node:http2 or node:tls (src/util/builtins.ts) while its node has no meshed pod; with one
// it loads node:http2 once listening, before any connection needs it (warmHttp2).
import test from 'ava';
import { Worker } from 'node:worker_threads';
import type { PodsTable, WorkerInit, WorkerStats } from '../src/workers/protocol.ts';
import { gcLock, LOCK_TAKEOVER_MS, v8Gc } from '../src/util/shrink-heap.ts';
import { until, within } from './helpers/until.ts';
import { createTrustAnchor } from '../src/identity/x509.ts';

const WORKER = new URL('../src/workers/worker.ts', import.meta.url).href;
/** V8 commits 2 MB for a fresh isolate's young generation (two 1 MB semi-spaces); shrunk, it holds a few pages. */
const SHRUNK_BYTES = 1 << 20;

// The real worker script, with a listener of the test's own in front that reports the thread's new space.
// Its 'ready' says whether node:http2 was loaded by then: on the start path.
const HARNESS = `
const { parentPort } = require('node:worker_threads');
const post = parentPort.postMessage.bind(parentPort);
parentPort.postMessage = (m) => post(m?.t === 'ready' ? { ...m, http2: process.moduleLoadList.includes('NativeModule http2') } : m);
const { getHeapSpaceStatistics } = require('node:v8');
parentPort.on('message', (m) => {
  if (m === 'heap') parentPort.postMessage({ t: 'heap', newSpace: getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').physical_space_size, gc: typeof globalThis.gc });
  if (m === 'modules') parentPort.postMessage({ t: 'modules', list: process.moduleLoadList });
  if (m === 'load-http2') require('node:http2');
});
import(${JSON.stringify(WORKER)}).catch((e) => parentPort.postMessage({ t: 'failed', error: String(e) }));
`;

/** A pods table as the main thread sends it, of pods that are meshed or not. */
function podsTable(generation: number, meshed: boolean[]): PodsTable {
  const pods = meshed.map((m, i) => ({ ip: `10.1.0.${i + 2}`, workload: { namespace: 'shop', pod: `web-${i}`, kind: 'pod', name: `web-${i}` }, opaquePorts: null, serviceAccount: 'web', meshed: m }));
  return { generation, seq: generation, pods, policies: { networks: '10.0.0.0/8', pods: [] } };
}

function init(): WorkerInit {
  return {
    index: 1,
    listen: { host: '127.0.0.1', port: 0 },
    // Never read: no connection arrives.
    mapFds: { tuple: 0, pending: 0, splice: -1, spliceLinks: -1 },
    kernelSplice: false,
    opaquePorts: '',
    openSlots: new SharedArrayBuffer(8),
    gcLock: gcLock(),
    metrics: {},
    pods: podsTable(1, []),
    discovery: [],
    taps: [],
    budgetShare: 0.5,
  };
}

/** The next message of this type from the worker, and `is` it (a failed start rejects). */
function nextOf(w: Worker, type: string, is: (m: any) => boolean = () => true): Promise<any> {
  return new Promise<any>((resolve, reject) => {
    const on = (m: any) => {
      if (m?.t === 'failed') reject(new Error(`the worker could not start: ${m.error}`));
      else if (m?.t === type && is(m)) {
        w.off('message', on);
        resolve(m);
      }
    };
    w.on('message', on);
    w.once('error', reject);
  });
}

test('a proxy worker listens first, then gives back its start-up young generation once idle, and gc() is not exposed to it', async (t) => {
  // The shrink waits for a quiet second after listening; a minute without one means it never comes.
  t.timeout(60_000, 'the worker never gave back its start-up young generation after it listened (the proxy\'s settleStartUp)');
  const w = new Worker(HARNESS, { eval: true, workerData: init(), stdout: true, stderr: true });
  try {
    const seen: string[] = [];
    const ready = nextOf(w, 'ready').then(() => seen.push('ready'));
    const settled = nextOf(w, 'log', (m) => /young generation start-up grew/.test(m.msg)).then((m) => {
      seen.push('shrunk');
      return m;
    });
    await ready;
    const shrunk = await settled;
    t.deepEqual(seen, ['ready', 'shrunk'], 'the collection is off the start path: after the worker listens');
    t.regex(shrunk.msg, /^gave back/, `the worker could not shrink its heap: ${shrunk.msg}`);
    t.log(`shrunk in ${shrunk.fields?.ms} ms`);
    const asked = nextOf(w, 'heap');
    w.postMessage('heap');
    const { newSpace, gc } = await asked;
    t.log(`new space once shrunk: ${(newSpace / 1024).toFixed(0)} KiB`);
    t.true(newSpace < SHRUNK_BYTES, `the worker's new space is ${newSpace} bytes once shrunk; start-up's growth was not given back`);
    t.is(gc, 'undefined', 'shrinkHeap must not leave gc() on the worker\'s global');
  } finally {
    await w.terminate();
  }
});

async function identityOn(): Promise<NonNullable<WorkerInit['identity']>> {
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) });
  return { node: 'node-a', trustDomain: 'cluster.local', anchorsPem: anchor.certPem, tunnelPort: 0, credentials: [], firstSyncWaitMs: null };
}

/** The worker's built-in modules as `process.moduleLoadList` names them. */
async function modulesOf(w: Worker): Promise<string[]> {
  const answer = nextOf(w, 'modules');
  w.postMessage('modules');
  return (await answer).list;
}

/** The worker's proxy stats, as the pool asks for them. */
async function statsOf(w: Worker): Promise<WorkerStats> {
  const answer = nextOf(w, 'pong');
  w.postMessage({ t: 'ping', seq: 1, at: performance.timeOrigin + performance.now() });
  return (await answer).stats;
}

/** Resolves once the worker has loaded node:http2 (no event says so: its module list is asked until it does). */
function http2Loaded(w: Worker, what: string): Promise<string[]> {
  return until(() => modulesOf(w), (l) => l.includes('NativeModule http2'), what, { ms: 30_000, intervalMs: 50 });
}

test('an idle proxy worker with identity on, listening on the proxy and the tunnel port, its node without a meshed pod, has loaded no node:http2, node:tls or Web Crypto', async (t) => {
  // An ES import of node:http2 anywhere in the worker's modules loads it with node:tls (1.2 MB per
  // idle worker; docs/benchmarks.md, "Memory as installed"); so does making its server at start.
  // An unmeshed pod's connections do not come through the proxy: its table must not load it either.
  const w = new Worker(HARNESS, { eval: true, workerData: { ...init(), pods: podsTable(1, [false]), identity: await identityOn() }, stdout: true, stderr: true });
  try {
    const modules = () => modulesOf(w);
    await nextOf(w, 'ready');
    const loaded = nextOf(w, 'policy-loaded');
    w.postMessage({ t: 'pods', table: podsTable(2, [false, false]) });
    await loaded;
    const list = await modules();
    t.true(list.includes('NativeModule net'), 'the worker loaded no node:net: it is not listening, the check below proves nothing');
    const heavy = ['NativeModule http2', 'NativeModule tls', 'NativeModule internal/crypto/webcrypto'].filter((m) => list.includes(m));
    t.deepEqual(heavy, [], 'an idle worker loaded these: some module of the worker imports node:http2 (or node:tls, node:crypto) as an ES module or makes an HTTP/2 server at start; take it with nodeHttp2() (nodeTls(), nodeCrypto()) from src/util/builtins.ts when first needed');
    // The names are the ones Node lists: once the worker loads node:http2, the list has both.
    w.postMessage('load-http2');
    const after = await modules();
    t.true(after.includes('NativeModule http2') && after.includes('NativeModule tls'), 'node:http2 loaded does not show as \'NativeModule http2\' and \'NativeModule tls\': the check above proves nothing');
  } finally {
    await w.terminate();
  }
});

test('a proxy worker whose node has a meshed pod loads node:http2 once it listens, before any connection: started with one in its table, or told of the first', async (t) => {
  // Without it the first HTTP/2 or tunnel connection of each worker waits 14-58 ms for the
  // require in its accept (docs/benchmarks.md, "node:http2 on first use").
  const identity = await identityOn();
  // A worker started on a meshed node (a replacement, or the agent's start once it listed its pods).
  const started = new Worker(HARNESS, { eval: true, workerData: { ...init(), pods: podsTable(1, [false, true]), identity }, stdout: true, stderr: true });
  // A worker on a node whose first meshed pod comes later.
  const told = new Worker(HARNESS, { eval: true, workerData: { ...init(), identity }, stdout: true, stderr: true });
  try {
    const [ready] = await Promise.all([nextOf(started, 'ready'), nextOf(told, 'ready')]);
    t.false(ready.http2, 'the worker loaded node:http2 before it listened: a replacement\'s start waits for it; load it once listening');
    await http2Loaded(started, 'node:http2 in a worker started with a meshed pod in its table (src/workers/worker.ts expectHttp2, util/builtins.ts warmHttp2)');
    const loaded = nextOf(told, 'policy-loaded');
    told.postMessage({ t: 'pods', table: podsTable(2, [false, true]) });
    await loaded;
    await http2Loaded(told, 'node:http2 in a worker told of its node\'s first meshed pod (src/workers/worker.ts expectHttp2, util/builtins.ts warmHttp2)');
    for (const w of [started, told]) t.is((await statsOf(w)).proxy.accepted, 0, 'a connection came: it, not the warm-up, may have loaded node:http2');
  } finally {
    await Promise.all([started.terminate(), told.terminate()]);
  }
});

const SHRINK = new URL('../src/util/shrink-heap.ts', import.meta.url).href;
// Takes gc() n times once told to go, with the lock it is given; answers how many takes failed.
const TAKER = `
const { parentPort, workerData } = require('node:worker_threads');
import(${JSON.stringify(SHRINK)}).then(({ v8Gc, useGcLock }) => {
  useGcLock(workerData.lock);
  const go = new Int32Array(workerData.go);
  parentPort.postMessage('waiting');
  Atomics.wait(go, 0, 0);
  let failed = 0;
  for (let i = 0; i < workerData.n; i++) {
    try { v8Gc(); } catch { failed++; }
  }
  parentPort.postMessage(failed);
});
`;

test.serial('threads taking gc() at the same moment all get it: the --expose-gc flag they turn on and off is taken under one lock', async (t) => {
  // Without the lock one thread's "off" lands between another's "on" and its new context, which
  // then has no gc(): four workers and this thread, 200 takes each, lost 3-10 per run before the lock.
  const go = new SharedArrayBuffer(4);
  const n = 200;
  const workers = Array.from({ length: 4 }, () => new Worker(TAKER, { eval: true, workerData: { lock: gcLock(), go, n } }));
  t.teardown(() => Promise.all(workers.map((w) => w.terminate())));
  const answers = workers.map((w) => new Promise<number>((resolve, reject) => {
    w.on('message', (m) => m !== 'waiting' && resolve(m as number));
    w.once('error', reject);
  }));
  const waiting = workers.map((w) => new Promise<void>((resolve) => w.on('message', (m) => m === 'waiting' && resolve())));
  await Promise.all(waiting);
  Atomics.store(new Int32Array(go), 0, 1);
  Atomics.notify(new Int32Array(go), 0);
  let failedHere = 0;
  for (let i = 0; i < n; i++) {
    try {
      v8Gc();
    } catch {
      failedHere++;
    }
  }
  const failed = [failedHere, ...(await Promise.all(answers))];
  t.deepEqual(failed, [0, 0, 0, 0, 0], `takes of gc() that failed, per thread: ${failed}`);
});

// Takes gc() once with a lock it is given (held by no one alive); answers what it got and when.
const TAKEOVER = `
const { parentPort, workerData } = require('node:worker_threads');
import(${JSON.stringify(SHRINK)}).then(({ v8Gc, useGcLock }) => {
  useGcLock(workerData.lock);
  const start = performance.now();
  const gc = typeof v8Gc();
  parentPort.postMessage({ gc, ms: Math.round(performance.now() - start) });
});
`;

test.serial('a gc() lock left held by one holder (its thread terminated inside) is taken over after a bound, not waited on forever, and released after', async (t) => {
  // In a thread of its own: without the takeover its wait never ends, and in this thread it would
  // block the event loop, so the test would hang instead of failing.
  const lock = new SharedArrayBuffer(8);
  const l = new Int32Array(lock);
  Atomics.store(l, 0, 1);
  const w = new Worker(TAKEOVER, { eval: true, workerData: { lock } });
  t.teardown(() => w.terminate());
  const bound = 15 * LOCK_TAKEOVER_MS;
  const answer = new Promise<{ gc: string; ms: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  const { gc, ms } = await within(answer, bound, () => `v8Gc() still waits for the gc() lock ${bound} ms after taking it began, left held by a holder that is gone: it must take it over after ${LOCK_TAKEOVER_MS} ms (src/util/shrink-heap.ts)`);
  t.log(`taken over after ${ms} ms`);
  t.is(gc, 'function');
  t.true(ms >= LOCK_TAKEOVER_MS, `taken after ${ms} ms: a lock held was not waited for`);
  t.is(Atomics.load(l, 0), 0, 'released');
});
