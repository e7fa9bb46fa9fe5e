// The shared sweep (src/proxy/sweep.ts) behind idle timeouts and byte reports: one item that
// throws must not stop the others, nor crash the agent; a period's timer outlives its last item
// by a tick, so short connections one after another do not start one each. Serial: both tests
// read the process-wide sweep's counts, which the other's items would change.
import test from 'ava';
import { stopSweep, sweepEvery, sweepPeriods, sweepTimers, sweptCount } from '../src/proxy/sweep.ts';
import { waitFor } from './helpers/until.ts';

test.serial('an item that throws is dropped; the others keep ticking', async (t) => {
  let good = 0;
  let bad = 0;
  const goodItem = { sweep: () => void good++ };
  const badItem = {
    sweep: () => {
      bad++;
      throw new Error('boom');
    },
  };
  process.on('warning', () => {}); // the sweep reports the drop as a process warning
  sweepEvery(20, badItem);
  sweepEvery(20, goodItem);
  // Three ticks, however long a loaded machine takes to run them.
  await waitFor(() => good >= 3);
  t.is(bad, 1, 'the throwing item ran once, then was dropped');
  t.is(sweptCount(), 1);
  stopSweep(20, goodItem);
  t.is(sweptCount(), 0);
});

test.serial('a period\'s timer outlives its last item until its next tick, so the next item reuses it', async (t) => {
  const period = 37; // no other test here uses it
  const started = sweepTimers.started;
  let ticks = 0;
  const a = { sweep: () => void ticks++ };
  const b = { sweep: () => void ticks++ };
  // Connections one at a time: each stops before the next starts.
  sweepEvery(period, a);
  stopSweep(period, a);
  t.true(sweepPeriods().includes(period), 'still running with no item');
  sweepEvery(period, b);
  t.is(sweepTimers.started, started + 1, 'one timer for both');
  await waitFor(() => ticks >= 1);
  stopSweep(period, b);
  // The first tick that finds it empty stops it.
  await waitFor(() => !sweepPeriods().includes(period));
  const before = ticks;
  sweepEvery(period, a);
  t.is(sweepTimers.started, started + 2, 'a new timer once the old one stopped');
  await waitFor(() => ticks > before);
  stopSweep(period, a);
});
