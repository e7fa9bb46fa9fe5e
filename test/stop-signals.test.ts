// run's SIGTERM/SIGINT sequence with a stand-in agent: what is stopped, with which drain, and the exit code.
import test from 'ava';
import { StopSignals, exitCodeFor } from '../src/cli/stop-signals.ts';

function world(drainMs = 600_000) {
  const calls: string[] = [];
  let startDone!: () => void;
  let startFailed!: (e: Error) => void;
  const started = new Promise<void>((resolve, reject) => {
    startDone = resolve;
    startFailed = reject;
  });
  let exited!: (code: number) => void;
  const exit = new Promise<number>((r) => (exited = r));
  const agent = {
    stop: async (ms: number) => void calls.push(`stop(${ms})`),
    cutDrain: () => void calls.push('cutDrain'),
  };
  const s = new StopSignals({ agent, drainMs, started, log: { info: () => {}, warn: () => {} }, exit: (code) => exited(code) });
  // Started and seen so (the start's settling runs before a signal that comes after it, as in run).
  const startedNow = async () => {
    startDone();
    await started;
  };
  return { s, calls, startDone, startedNow, startFailed, exit };
}

test('one SIGTERM after the start drains for --drain and exits 0', async (t) => {
  const w = world(10_000);
  await w.startedNow();
  await w.s.signal('SIGTERM');
  t.deepEqual(w.calls, ['stop(10000)']);
  t.is(await w.exit, 0);
});

test('a second signal cuts the drain short and exits 128+signal; a third exits at once', async (t) => {
  const w = world();
  await w.startedNow();
  const first = w.s.signal('SIGTERM');
  await w.s.signal('SIGINT');
  t.deepEqual(w.calls, ['stop(600000)', 'cutDrain']);
  await first;
  t.is(await w.exit, exitCodeFor('SIGINT'));
  t.is(exitCodeFor('SIGINT'), 130);
  t.is(exitCodeFor('SIGTERM'), 143);
  const third = world();
  await third.startedNow();
  void third.s.signal('SIGTERM');
  await third.s.signal('SIGTERM');
  await third.s.signal('SIGTERM');
  t.is(await third.exit, 143);
});

test('two signals while the agent is still starting: the stop waits for the start, then drains for nothing (the cut came before any proxy existed to take it)', async (t) => {
  const w = world();
  const first = w.s.signal('SIGTERM');
  await w.s.signal('SIGINT');
  t.deepEqual(w.calls, ['cutDrain'], 'nothing stopped beside the start');
  w.startDone();
  await first;
  t.deepEqual(w.calls, ['cutDrain', 'stop(0)'], 'not the full --drain of 600000 ms after the operator asked twice');
  t.is(await w.exit, 130);
});

test('a signal during a start that fails: run stops and exits itself; the signal does nothing more', async (t) => {
  const w = world();
  const first = w.s.signal('SIGTERM');
  w.startFailed(new Error('no BPF'));
  await first;
  t.deepEqual(w.calls, []);
});
