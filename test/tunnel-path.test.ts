// Which way a meshed pod's connection leaves its node (src/tunnel/path.ts), pure: a meshed pod of
// another node through the tunnel, except its skip-inbound ports, which go straight to the pod in
// plaintext (as Linkerd's destination controller gives such a port no identity); the rest direct.
import test from 'ava';
import { pathTo, type PathFacts } from '../src/tunnel/path.ts';
import type { DiscoPod } from '../src/discovery/model.ts';

const facts: PathFacts = { node: 'n1', trustDomain: 'cluster.local', namespaceInject: (ns) => (ns === 'shop' ? 'enabled' : undefined) };
const api: DiscoPod = { namespace: 'shop', name: 'api-1', ip: '10.1.1.5', kind: 'deployment', owner: 'api', node: 'n2', serviceAccount: 'api', hostIp: '192.168.0.2', skipInbound: [[7001, 7001], [9000, 9100]] };

test('a meshed pod of another node: tunnelled, but for its skip-inbound ports', (t) => {
  t.like(pathTo(api, 8080, facts), { kind: 'tunnel', dstUri: 'spiffe://cluster.local/ns/shop/sa/api', nodeIp: '192.168.0.2' });
  for (const port of [7001, 9000, 9050, 9100]) t.deepEqual(pathTo(api, port, facts), { kind: 'direct', why: 'skip-inbound' }, `port ${port}`);
  for (const port of [7000, 7002, 8999, 9101]) t.is(pathTo(api, port, facts).kind, 'tunnel', `port ${port}`);
  const { skipInbound: _, ...none } = api;
  t.is(pathTo(none, 7001, facts).kind, 'tunnel', 'no skip-inbound ports: every port tunnelled');
});

test('the other direct paths keep their reasons', (t) => {
  t.deepEqual(pathTo(undefined, 7001, facts), { kind: 'direct', why: 'unknown-destination' });
  t.deepEqual(pathTo({ ...api, node: 'n1' }, 7001, facts), { kind: 'direct', why: 'same-node' });
  t.deepEqual(pathTo({ ...api, namespace: 'other' }, 7001, facts), { kind: 'direct', why: 'not-meshed' });
  t.deepEqual(pathTo({ ...api, hostIp: undefined }, 8080, facts), { kind: 'direct', why: 'no-node-address' });
});
