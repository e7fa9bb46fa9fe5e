// A proxy worker behind the main thread's pod table (workers/table-seq.ts): the kernel already
// redirects for a table the worker has not applied, so a connection to a same-node pod the worker
// does not know yet must wait for that table instead of being dialled straight to the pod, which
// the capture never sees (the agent's own dials). A real proxy, real sockets, the worker's wiring.
import test from 'ava';
import * as net from 'node:net';
import { Proxy } from '../src/proxy/index.ts';
import { PortSet } from '../src/proxy/ports.ts';
import { Authorizer } from '../src/policy/authorizer.ts';
import { DEFAULT_CLUSTER_NETWORKS } from '../src/policy/model.ts';
import { TableSeq, workerPolicyReady } from '../src/workers/table-seq.ts';
import { until } from './helpers/until.ts';

const POD = '127.0.0.1';
const CLIENT = '127.0.0.2';

test('a worker behind the main thread\'s table: a redirected connection to a pod it does not know yet waits for the table and is decided by it, not dialled straight to the pod', async (t) => {
  // The "pod": it must never see the connection its policy denies.
  let reached = 0;
  let onReached = (): void => {};
  const reachedOnce = new Promise<string>((r) => (onReached = () => r('reached')));
  const pod = net.createServer((s) => {
    reached++;
    onReached();
    s.on('error', () => {}).pipe(s);
  });
  await new Promise<void>((r) => pod.listen(0, POD, r));
  t.teardown(() => pod.close());
  const podPort = (pod.address() as net.AddressInfo).port;

  // The worker: its table (seq 0) has no pods; the main thread has counted table 1, which holds the pod.
  const authorizer = new Authorizer(() => {});
  authorizer.load({ networks: DEFAULT_CLUSTER_NETWORKS, pods: [], generation: 0 });
  const sent = new Int32Array(new SharedArrayBuffer(4));
  const seq = new TableSeq(sent, 0);
  Atomics.add(sent, 0, 1);
  const proxy = new Proxy({
    listen: { host: '127.0.0.6', port: 0 },
    // The kernel's record of the redirected connection: the client meant the pod.
    lookup: () => ({ ip: POD, port: podPort, podKey: 1n }),
    opaquePorts: PortSet.parse(String(podPort)),
    detectTimeoutMs: 300,
    authorize: authorizer.authorize,
    policyReady: workerPolicyReady(seq, authorizer, 60_000),
  });
  const at = await proxy.listen();
  t.teardown(() => proxy.close(0));

  const c = net.connect({ host: at.host, port: at.port, localAddress: CLIENT });
  let got = '';
  c.setEncoding('utf8');
  c.on('data', (d) => (got += d));
  c.on('error', () => {});
  const closed = new Promise<void>((r) => c.once('close', () => r()));
  c.write('x');
  await until(() => proxy.stats().accepted, (n) => n === 1, 'the proxy accepted the connection');
  // The table arrives: the pod denies every client.
  authorizer.load({
    networks: DEFAULT_CLUSTER_NETWORKS,
    generation: 1,
    pods: [{ ip: POD, identity: { namespace: 'shop', serviceAccount: 'db' }, spec: { namespace: 'shop', pod: 'db-0', serviceAccount: 'db', defaultPolicy: 'deny', defaultFrom: 'test', targets: [] } }],
  });
  seq.loaded(1);
  // Either the policy closes it, or (without the wait) the pod answers: whichever comes first.
  const first = await Promise.race([closed.then(() => 'closed'), reachedOnce]);
  t.is(first, 'closed', 'closed by the policy before the pod saw anything');
  t.is(reached, 0, 'the pod never saw the connection its policy denies');
  t.is(got, '', 'nothing came back from the pod');
  c.destroy();
});

test('TableSeq: behind while the main thread has counted a table the worker has not applied; caughtUp settles when it has, or false at the deadline', async (t) => {
  const sent = new Int32Array(new SharedArrayBuffer(4));
  const seq = new TableSeq(sent, 0);
  t.false(seq.behind);
  t.true(await seq.caughtUp(performance.now()), 'caught up: no wait');
  Atomics.add(sent, 0, 2);
  t.true(seq.behind);
  t.false(await seq.caughtUp(performance.now() + 1), 'the deadline first');
  const waiting = seq.caughtUp(performance.now() + 60_000);
  seq.loaded(1);
  t.true(seq.behind, 'table 1 of 2');
  seq.loaded(2);
  t.true(await waiting);
  t.false(seq.behind);
  // Caught up and no pending policy: the proxy decides at once (no promise).
  const authorizer = new Authorizer(() => {});
  t.is(workerPolicyReady(seq, authorizer, 1000)('10.0.0.1'), null);
});
