// The shared sweep (src/proxy/sweep.ts) behind idle timeouts and byte reports: one item that
// throws must not stop the others, nor crash the agent.
import test from 'ava';
import { stopSweep, sweepEvery, sweptCount } from '../src/proxy/sweep.ts';
import { waitFor } from './helpers/until.ts';

test('an item that throws is dropped; the others keep ticking', async (t) => {
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
