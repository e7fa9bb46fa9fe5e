// A proxy worker's copy of the node's pods (src/workers/node-pods.ts): it starts before the main
// thread has listed the pods, and its tunnels wait for the list until a table says it is in.
import test from 'ava';
import { NodePods } from '../src/workers/node-pods.ts';
import { podListWait } from '../src/discovery/first-sync.ts';
import type { PodsTable } from '../src/workers/protocol.ts';

const table = (listed: boolean | undefined, ips: string[]): PodsTable => ({
  generation: 1,
  pods: ips.map((ip) => ({ ip, workload: { namespace: 'shop', kind: 'deployment', name: 'db', pod: `db-${ip}` }, opaquePorts: null, serviceAccount: 'db', meshed: true })),
  policies: { networks: '', pods: [] },
  ...(listed === undefined ? {} : { listed }),
});

test('a table sent before the main thread listed the pods keeps a tunnel\'s wait open; the first listed table ends it', async (t) => {
  const pods = new NodePods();
  pods.set(table(false, []));
  const wait = podListWait(pods.listed, 120_000, () => t.fail('no give-up'));
  const pending = wait.wait();
  t.not(pending, null, 'not listed yet: a CONNECT to a pod it does not know waits');
  let settled = false;
  void pending!.then(() => (settled = true));
  pods.set(table(undefined, []));
  await Promise.resolve();
  t.false(settled, 'a table that does not say it is listed ends nothing');
  pods.set(table(true, ['10.244.1.2']));
  await pending;
  t.true(settled);
  t.like(pods.local('10.244.1.2'), { namespace: 'shop', serviceAccount: 'db', meshed: true });
  t.is(wait.wait(), null, 'listed: no more waiting');
});
