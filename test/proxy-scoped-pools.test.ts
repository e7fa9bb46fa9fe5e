// Per-scope upstream pools (src/proxy/scoped-pools.ts): one per source identity or captured
// client, the least recently used forgotten past the cap, so a stream of new clients cannot
// grow the proxy without bound.
import test from 'ava';
import { ScopedPools } from '../src/proxy/scoped-pools.ts';

test('a scope keeps its pool; past the cap the least recently used is forgotten, and comes back as a new pool', (t) => {
  let made = 0;
  const pools = new ScopedPools(() => ({ n: ++made }), 3);
  const a = pools.get('client:10.0.0.1');
  t.is(pools.get('client:10.0.0.1'), a, 'the same scope, the same pool');
  pools.get('client:10.0.0.2');
  pools.get('client:10.0.0.3');
  t.is(pools.get('client:10.0.0.1'), a, 'used again: now the most recent');
  pools.get('client:10.0.0.4'); // over the cap: .2, the least recently used, goes
  t.is(pools.size, 3);
  t.is(pools.get('client:10.0.0.1'), a);
  t.is(made, 4);
  t.is(pools.get('client:10.0.0.2').n, 5, 'a forgotten scope gets a new pool');
  t.is(pools.size, 3);
  for (let i = 0; i < 10_000; i++) pools.get(`client:10.1.${i >> 8}.${i & 255}`);
  t.is(pools.size, 3, 'bounded whatever the number of clients');
});
