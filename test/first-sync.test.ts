// The bounded wait for discovery's first sync (src/discovery/first-sync.ts), on a real store.
import test from 'ava';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { DISCOVERY_VERSION } from '../src/discovery/model.ts';
import { FirstSyncWait } from '../src/discovery/first-sync.ts';

test('connections wait for the first sync, all on one promise; once synced nothing waits', async (t) => {
  const store = new DiscoveryStore();
  const w = new FirstSyncWait(store, 60_000);
  const a = w.wait();
  const b = w.wait();
  t.truthy(a);
  t.is(a, b, 'one wait, however many connections');
  t.deepEqual([w.waiting, w.waited], [2, 2]);
  let settled = false;
  void a!.then(() => (settled = true));
  store.apply({ type: 'reset', version: DISCOVERY_VERSION });
  await Promise.resolve();
  t.false(settled, 'a snapshot begun is not a sync');
  store.apply({ type: 'synced' });
  await a;
  t.deepEqual([w.waiting, w.waited, w.expired], [0, 2, false]);
  t.is(w.wait(), null);
});

test('an agent that never syncs stops waiting once, says so, and lets connections go directly', async (t) => {
  const store = new DiscoveryStore();
  const said: string[] = [];
  const w = new FirstSyncWait(store, 30, (m) => said.push(m));
  await w.wait();
  t.true(w.expired);
  t.is(w.wait(), null, 'no second wait after giving up');
  t.is(said.length, 1);
  t.regex(said[0]!, /discovery did not sync within 30 ms .*plaintext rather than through mTLS tunnels; check the controller link/);
  store.apply({ type: 'reset', version: DISCOVERY_VERSION });
  store.apply({ type: 'synced' });
  t.false(w.expired, 'synced later');
  t.is(w.wait(), null);
});

test('synced before anyone asked: no wait at all', (t) => {
  const store = new DiscoveryStore();
  store.apply({ type: 'reset', version: DISCOVERY_VERSION });
  store.apply({ type: 'synced' });
  const w = new FirstSyncWait(store, 60_000);
  t.is(w.wait(), null);
  t.is(w.waited, 0);
});
