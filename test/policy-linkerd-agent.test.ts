// The agent's side of Linkerd's Servers: the records arrive on the discovery stream (validated,
// deleted by key), each meshed pod gets the Servers whose podSelector matches its labels with
// their named port resolved against its containers' ports, every proxy's Authorizer decides with
// them, and `diagnostics authz` names the Server and AuthorizationPolicies that decide.
import test from 'ava';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { parseMessage } from '../src/discovery/model.ts';
import { InboundPolicies } from '../src/agent/inbound.ts';
import { podFromObject } from '../src/k8s/objects.ts';
import { resolvePolicy } from '../src/k8s/annotations.ts';
import { renderAuthz } from '../src/cli/diagnostics.ts';
import type { PodState } from '../src/agent/pod-sync.ts';
import type { ServerRecord } from '../src/policy/server-model.ts';

const record: ServerRecord = {
  kind: 'Server', namespace: 'shop', name: 'api-http', podSelector: { matchLabels: { app: 'api' } }, port: 'http', accessPolicy: 'deny',
  authorizations: [{ name: 'api-from-web', identities: [{ namespace: 'shop', serviceAccount: 'web' }] }], routes: [],
};

function podState(name: string, ip: string, labels: Record<string, string>, sa: string): PodState {
  const pod = podFromObject({
    apiVersion: 'v1', kind: 'Pod', metadata: { uid: `uid-${name}`, name, namespace: 'shop', labels },
    spec: { nodeName: 'n1', serviceAccountName: sa, containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }, { containerPort: 9000 }, { name: 'dns', containerPort: 53, protocol: 'UDP' }] }] },
    status: { podIP: ip, phase: 'Running' },
  })!;
  return { pod, policy: resolvePolicy(pod, { annotations: { 'mesh-agent.io/inject': 'enabled' } }), cgroup: null, key: null };
}

test('a Server\'s named port resolves against the pod\'s named TCP container ports', (t) => {
  t.deepEqual(podState('api-1', '10.244.1.2', {}, 'api').pod.namedPorts, { http: 8080 });
});

test('a Server record on the stream selects the pods it matches, on the named port; the Authorizer decides with it; a delete by key lifts it', (t) => {
  const store = new DiscoveryStore();
  for (const line of [{ type: 'reset', version: 7 }, { type: 'access', op: 'set', access: record }, { type: 'synced' }]) store.apply(parseMessage(JSON.stringify(line)));
  t.deepEqual(store.serversIn('shop'), [record]);
  const inbound = new InboundPolicies({ networks: '10.0.0.0/8', store, onDeny: () => {} });
  const api = podState('api-1', '10.244.1.2', { app: 'api' }, 'api');
  const other = podState('db-1', '10.244.1.3', { app: 'db' }, 'db');
  t.true(inbound.refresh([api, other]));
  const p = inbound.authorizer.policy('10.244.1.2')!;
  t.true(p.failsClosed);
  t.deepEqual(p.spec.servers?.map((s) => [s.record.name, s.ports]), [['api-http', [8080]]]);
  t.is(p.connection({ ip: '10.244.1.9', identity: { namespace: 'shop', serviceAccount: 'web' } }, 8080).verdict, 'allow');
  t.is(p.connection({ ip: '10.244.1.9', identity: { namespace: 'shop', serviceAccount: 'bot' } }, 8080).verdict, 'deny');
  t.is(p.connection({ ip: '10.244.1.9', identity: null }, 9000).verdict, 'allow', 'another port: the default policy');
  t.is(inbound.authorizer.policy('10.244.1.3')!.spec.servers, undefined, 'not selected');
  t.false(inbound.authorizer.policy('10.244.1.3')!.failsClosed);
  const st = inbound.status().find((s) => s.name === 'api-1')!;
  t.deepEqual(st.servers, ['api-http (ports 8080)']);

  const d = inbound.describe('shop', 'api-1') as any;
  t.regex(d.decidedBy, /^Server shop\/api-http on port 8080: AuthorizationPolicies api-from-web; other ports: its default policy all-unauthenticated/);
  const text = renderAuthz([{ node: 'n1', result: d } as any]);
  t.regex(text, /decided by: {8}Server shop\/api-http on port 8080: AuthorizationPolicies api-from-web/);
  t.regex(text, /Server shop\/api-http: port http \(8080\), accessPolicy deny\n {4}AuthorizationPolicy api-from-web: shop\/web/);

  store.apply(parseMessage(JSON.stringify({ type: 'access', op: 'delete', key: 'Server/shop/api-http' })));
  t.true(inbound.refresh([api, other]));
  t.is(inbound.authorizer.policy('10.244.1.2')!.connection({ ip: '10.244.1.9', identity: null }, 8080).verdict, 'allow', 'back to the default policy');
});

test('a malformed Server record on the stream is refused with the field named', (t) => {
  const e = t.throws(() => parseMessage(JSON.stringify({ type: 'access', op: 'set', access: { ...record, podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } } })));
  t.regex(e!.message, /Server shop\/api-http: podSelector.matchExpressions\[0\].values: In needs at least one value/);
  t.throws(() => parseMessage('{"type":"access","op":"delete","key":"Server/shop"}'), { message: /expected "TrafficTarget\/namespace\/name" or "Server\/namespace\/name"/ });
});
