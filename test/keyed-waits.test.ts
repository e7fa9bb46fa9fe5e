// Bounded waits on keys (src/util/keyed-waits.ts), and the policy's use of them: a pod's pending
// policy (Authorizer.ready) settles when a table no longer says it is pending.
import test from 'ava';
import { KeyedWaits } from '../src/util/keyed-waits.ts';
import { Authorizer } from '../src/policy/authorizer.ts';

/** Whether a promise has settled, after the microtasks queued so far ran. */
async function settled<T>(p: Promise<T>): Promise<{ done: boolean; value?: T }> {
  let out: { done: boolean; value?: T } = { done: false };
  void p.then((value) => (out = { done: true, value }));
  await new Promise((r) => setImmediate(r));
  return out;
}

test('a wait settles true when its key is released; other keys keep waiting; releaseWhere settles those ready now', async (t) => {
  const w = new KeyedWaits<string>();
  const a1 = w.wait('a', 60_000);
  const a2 = w.wait('a', 60_000);
  const b = w.wait('b', 60_000);
  const c = w.wait('c', 60_000);
  t.is(w.size, 4);
  w.release('a');
  t.deepEqual(await settled(a1), { done: true, value: true });
  t.deepEqual(await settled(a2), { done: true, value: true });
  t.deepEqual(await settled(b), { done: false });
  t.is(w.size, 2);
  w.releaseWhere((k) => k === 'c');
  t.deepEqual(await settled(c), { done: true, value: true });
  t.deepEqual(await settled(b), { done: false });
  w.releaseAll();
  t.deepEqual(await settled(b), { done: true, value: true });
  t.is(w.size, 0);
  w.release('b'); // nothing waits: nothing happens
});

test('a wait whose bound runs out settles false and is forgotten; a later release of its key settles only the later waits', async (t) => {
  const w = new KeyedWaits<string>();
  const late = w.wait('a', 60_000);
  t.false(await w.wait('a', 1), 'its own bound');
  t.is(w.size, 1, 'the other wait on the key is still there');
  w.release('a');
  t.true(await late);
  t.false(await w.wait('a', 1), 'a key released before is waited on afresh');
  t.is(w.size, 0);
});

test('Authorizer.ready: null when the pod\'s policy is known; else settles (true) with the first table that knows it, or after its bound (false)', async (t) => {
  const az = new Authorizer(() => {});
  const pod = (ip: string) => ({ ip, identity: { namespace: 'shop', serviceAccount: 'api' }, spec: { namespace: 'shop', pod: `api-${ip}`, serviceAccount: 'api', defaultPolicy: 'deny' as const, defaultFrom: 'test', targets: [] } });
  az.load({ networks: '', pods: [pod('10.0.0.1'), pod('10.0.0.2')], pending: ['10.0.0.1', '10.0.0.2'] });
  t.is(az.ready('10.0.0.3', 60_000), null, 'not pending');
  const one = az.ready('10.0.0.1', 60_000)!;
  const two = az.ready('10.0.0.2', 60_000)!;
  t.not(one, null);
  az.load({ networks: '', pods: [pod('10.0.0.1'), pod('10.0.0.2')], pending: ['10.0.0.2'] });
  t.deepEqual(await settled(one), { done: true, value: true });
  t.deepEqual(await settled(two), { done: false }, 'still pending');
  t.is(az.ready('10.0.0.1', 60_000), null);
  t.false(await az.ready('10.0.0.2', 1)!, 'a bound that runs out');
  az.load({ networks: '', pods: [pod('10.0.0.1'), pod('10.0.0.2')] });
  t.true(await two);
});
