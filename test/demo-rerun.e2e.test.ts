// A demo killed with SIGKILL cannot clean up; the next run must remove what it left
// (its processes, namespaces, cgroups, temp dir) and then work normally.
import test from 'ava';
import { cleanupLeftovers } from '../src/sim/index.ts';
import { DemoRun, leftovers, processesOfNode } from './helpers/demo-run.ts';

const runs: DemoRun[] = [];
test.after.always(async () => {
  for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.all(runs.map((r) => r.exited));
  await cleanupLeftovers();
});

test('a second run after a SIGKILLed first run sweeps the leftovers and works', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the demo test needs root and BPF; run the suite as root: sudo ./dev test');
  const first = new DemoRun(['--rps', '20']);
  runs.push(first);
  await first.waitFor(/==> running\./, 60_000);
  const firstId = first.nodeId();
  const firstProcs = processesOfNode(firstId);
  first.child.kill('SIGKILL');
  await first.exited;
  // Nothing ran its cleanup: the agent, the services and the namespaces are all still there.
  const left = leftovers(firstId, first.child.pid!, firstProcs);
  t.true(left.some((l) => l.startsWith('netns')) && left.some((l) => l.startsWith('process')), left.join('\n'));

  const second = new DemoRun(['--duration', '8', '--interval', '4', '--rps', '20']);
  runs.push(second);
  await second.waitFor(/==> running\./, 60_000);
  const secondId = second.nodeId();
  const secondProcs = processesOfNode(secondId);
  const { code } = await second.exited;
  t.is(code, 0, second.output);
  t.regex(second.output, new RegExp(`removed what an earlier run left behind: .*netns ${firstId}-node`));
  const bot = [...second.output.matchAll(/vote-bot saw (\d+) requests: (\d+) ok/g)].at(-1);
  t.true(bot !== undefined && Number(bot[2]) > 0, second.output);
  t.deepEqual(leftovers(firstId, first.child.pid!, firstProcs), []);
  t.deepEqual(leftovers(secondId, second.child.pid!, secondProcs), []);
});
