// A proxy worker's copy of the node's pods (src/workers/node-pods.ts): each table the main thread
// sends is a change its tunnels hear (a CONNECT to a pod not in the table waits for one that has
// it: tunnel/server.ts), told once the new table is in place.
import test from 'ava';
import { NodePods } from '../src/workers/node-pods.ts';
import type { PodsTable } from '../src/workers/protocol.ts';

const table = (ips: string[]): PodsTable => ({
  generation: 1,
  pods: ips.map((ip) => ({ ip, workload: { namespace: 'shop', kind: 'deployment', name: 'db', pod: `db-${ip}` }, opaquePorts: null, serviceAccount: 'db', meshed: true })),
  policies: { networks: '', pods: [] },
});

test('each table is told to the listeners, with the new table already answering', (t) => {
  const pods = new NodePods();
  const seen: Array<string | null> = [];
  const off = pods.changes.add(() => seen.push(pods.local('10.244.1.2')?.name ?? null));
  pods.set(table([]));
  pods.set(table(['10.244.1.2']));
  t.deepEqual(seen, [null, 'db-10.244.1.2']);
  t.like(pods.local('10.244.1.2'), { namespace: 'shop', serviceAccount: 'db', meshed: true });
  off();
  pods.set(table([]));
  t.is(seen.length, 2, 'removed: told no more');
});
