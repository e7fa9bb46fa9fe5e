// The shared sweep (src/proxy/sweep.ts) behind idle timeouts and byte reports: one item that
// throws must not stop the others, nor crash the agent.
import test from 'ava';
import { stopSweep, sweepEvery, sweptCount } from '../src/proxy/sweep.ts';

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
  await new Promise((r) => setTimeout(r, 150));
  t.is(bad, 1, 'the throwing item ran once, then was dropped');
  t.true(good >= 3, `the other item kept ticking: ${good}`);
  t.is(sweptCount(), 1);
  stopSweep(20, goodItem);
  t.is(sweptCount(), 0);
});
