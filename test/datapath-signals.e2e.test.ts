// The verifier aborts a load with EAGAIN when a signal is pending on the loading thread.
// node --cpu-prof samples with a stream of SIGPROF, which once made every load fail; the
// addon now holds signals while the verifier runs. This loads the datapath under a dense
// profiler to keep it that way.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNode } from '../src/sim/index.ts';
import { exited, JsonRpc } from './helpers/procs.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const AGENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/datapath-agent.ts');

test('the datapath loads while a profiler signals the process every 50 µs', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('this test needs root and BPF; run the suite as root: sudo ./dev test');
  const node = await createNode();
  const dir = fs.mkdtempSync(ownedTempPrefix('test'));
  t.teardown(async () => {
    await node.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const proc = node.spawnInNode(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=50', AGENT,
    JSON.stringify({ cgroupRoot: node.cgroupRoot, proxyIp: node.nodeIp, proxyPort: 15001 })]);
  const rpc = new JsonRpc(proc);
  const first = await rpc.io.waitFor((o) => o.ready || o.error, 30_000, 'the datapath fixture to load');
  t.falsy(first.error, `load failed under the profiler: ${first.error}`);
  t.true(first.ready);
  proc.stdin!.end(); // the fixture exits on end of input, and the profiler writes its file
  t.is(await exited(proc), 0);
  t.true(fs.readdirSync(dir).some((f) => f.endsWith('.cpuprofile')), 'the profiler really ran');
});
