// The agent's main thread gives back the young generation its start-up grew once it is ready
// (src/util/shrink-heap.ts; docs/benchmarks.md, "Memory as installed"): an idle agent's memory
// must not depend on when V8's memory reducer happens to run, which it had not 42 s after start.
// And it must not load undici (src/util/builtins.ts), which an ES import of node:http does.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createNode, type SimNode } from '../src/sim/index.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const BIN = meshBin();
/** Shrunk, the young generation holds a few pages; grown by start-up it held 5 MB. */
const SHRUNK_BYTES = 1 << 20;
// Loaded before the agent: on SIGUSR2 the main thread writes its new space's resident size, whether gc() is on its global and whether undici was loaded.
const HOOK = `data:text/javascript,${encodeURIComponent(`
import { getHeapSpaceStatistics } from 'node:v8';
process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ newSpace: getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').physical_space_size, gc: typeof globalThis.gc, undici: process.moduleLoadList.includes('NativeModule internal/deps/undici/undici') }) + '\\n'));
`)}`;

let node: SimNode | undefined;
let agent: ChildProcess | undefined;
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));

test.after.always(async () => {
  agent?.kill('SIGKILL');
  await node?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('once ready, the agent\'s main thread has its young generation shrunk, gc() not exposed, and no undici loaded', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the agent e2e tests need root and BPF; run the suite as root: sudo ./dev test');
  node = await createNode({ driver: 'cgroupfs' });
  const podsFile = path.join(tmp, 'pods.json');
  fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: [] }));
  const a = node.spawnInNode(process.execPath, ['--import', HOOK, BIN, 'run', '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
    '--proxy-addr', `${node.nodeIp}:15001`, '--admin', '127.0.0.1:4191', '--proxy-workers', '1']);
  agent = a;
  let log = '';
  let out = '';
  // The shrink runs in the same turn as the 'agent ready' line, so it is done once the line is out.
  await new Promise<void>((resolve, reject) => {
    a.stderr!.on('data', (d) => {
      log += d;
      if (log.includes('"agent ready"')) resolve();
    });
    a.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it was ready: ${log.slice(-2000)}`)));
  });
  const answer = new Promise<{ newSpace: number; gc: string; undici: boolean }>((resolve, reject) => {
    a.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]));
    });
    a.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it answered: ${log.slice(-2000)}`)));
  });
  a.kill('SIGUSR2');
  const { newSpace, gc, undici } = await answer;
  t.log(`main thread's new space once ready: ${(newSpace / 1024).toFixed(0)} KiB`);
  t.true(newSpace < SHRUNK_BYTES, `the main thread's new space is ${newSpace} bytes once ready; start-up's growth was not given back. Agent log: ${log.slice(-1000)}`);
  t.is(gc, 'undefined', 'shrinkHeap must not leave gc() on the main thread\'s global');
  // An ES import of node:http loads undici through its WebSocket export: +2.4 MB of heap (src/util/builtins.ts).
  t.false(undici, 'the agent loaded undici, which it never uses: some module of the agent imports node:http as an ES module; load it with nodeHttp() from src/util/builtins.ts');
});
