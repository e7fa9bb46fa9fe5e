// Which way a meshed pod's connection leaves its node (src/tunnel/path.ts), pure: a meshed pod of
// another node through the tunnel, except its skip-inbound ports, which go straight to the pod in
// plaintext (as Linkerd's destination controller gives such a port no identity); the rest direct.
// And the tunnel's target as the client writes it and the server reads it (:authority).
import test from 'ava';
import { formatAuthority, parseAuthority, pathTo, type PathFacts } from '../src/tunnel/path.ts';
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

test('a CONNECT\'s :authority: an IPv4 address and a port in canonical decimal, the form the tunnel client writes for every port', (t) => {
  t.deepEqual(parseAuthority('10.1.0.5:8080'), { ip: '10.1.0.5', port: 8080 });
  for (const a of ['10.1.0.5:080', '10.1.0.5:0080', '10.1.0.5:00001', '10.1.0.5:065535', '10.1.0.5:0', '10.1.0.5:65536', '10.1.0.5:+80', '10.1.0.5: 80', '10.1.0.5:8e1', '10.1.0.5:0x50', '010.1.0.5:80', '10.1.0.5', '[fd00::1]:80']) {
    t.is(parseAuthority(a), null, a);
  }
  for (let port = 1; port <= 65535; port++) {
    const a = formatAuthority('10.1.0.5', port);
    if (parseAuthority(a)?.port !== port) return t.fail(`the client writes ${a}, which the server reads as ${JSON.stringify(parseAuthority(a))}`);
  }
  t.pass();
});
