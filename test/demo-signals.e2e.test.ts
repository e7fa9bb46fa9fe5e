// Ctrl-C (SIGINT) and SIGTERM stop the demo and remove everything it made.
import test from 'ava';
import { cleanupLeftovers } from '../src/sim/index.ts';
import { DEMO_TEST_TIMEOUT_MS, DemoRun, leftovers, processesOf } from './helpers/demo-run.ts';

const runs: DemoRun[] = [];
test.after.always(async () => {
  for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.all(runs.map((r) => r.exited));
  await cleanupLeftovers();
});

for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  test.serial(`${signal} stops the demo and leaves nothing behind`, async (t) => {
    // The demo's waits fail on its silence (DemoRun.waitFor); the test as a whole gets the time a loaded machine needs.
    t.timeout(DEMO_TEST_TIMEOUT_MS);
    if (process.getuid?.() !== 0) throw new Error('the demo test needs root and BPF; run the suite as root: sudo ./dev test');
    const run = new DemoRun(['--rps', '20']);
    runs.push(run);
    await run.waitFor(/==> running\./, 60_000);
    const ids = run.ids();
    const procs = processesOf(ids);
    t.true(procs.length >= 13, `3 agents, the controller and 9 service replicas, found ${procs.length}`);
    run.child.kill(signal);
    const exit = await run.exited;
    t.is(exit.code, code, run.output);
    t.regex(run.output, /clean: nothing of the demo is left/);
    t.deepEqual(leftovers(ids, run.child.pid!, procs), []);
  });
}
