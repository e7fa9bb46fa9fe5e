// The kube-proxy stand-in's ruleset (pure): which endpoints each ClusterIP:port reaches, and the
// nftables text that makes it so. The cluster test applies it to a real kernel.
import test from 'ava';
import type { KubeObject } from '../src/sim/index.ts';
import { serviceObject } from '../src/sim/cluster-objects.ts';
import { renderRuleset, serviceTargets } from '../src/sim/kube-proxy-rules.ts';

function service(name: string, clusterIP: string, extra: Partial<Parameters<typeof serviceObject>[0]> = {}): KubeObject {
  const s = serviceObject({ name, namespace: 'shop', ports: [{ name: 'http', port: 80, targetPort: 'http' }], ...extra });
  s.spec.clusterIP = clusterIP;
  return s;
}

function slice(svc: string, ports: object[], endpoints: { ip: string; ready?: boolean; serving?: boolean; terminating?: boolean; node?: string }[]): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-${endpoints.length}`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports,
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], nodeName: e.node ?? 'node-a', conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating } })),
  };
}

const HTTP = [{ name: 'http', port: 8080, protocol: 'TCP' }];

test('ready endpoints of every slice, deduplicated and sorted; not-ready ones left out; headless Services get nothing', (t) => {
  const targets = serviceTargets(
    [service('web', '10.96.0.10'), service('headless', 'None')],
    [slice('web', HTTP, [{ ip: '10.244.2.10', ready: true }, { ip: '10.244.1.2' }, { ip: '10.244.1.3', ready: false }]), slice('web', HTTP, [{ ip: '10.244.2.9', ready: true }, { ip: '10.244.1.2', ready: true }]), slice('headless', HTTP, [{ ip: '10.244.1.5', ready: true }])],
    'node-a',
  );
  t.deepEqual(targets, [
    {
      id: 'shop/web/tcp/http',
      clusterIP: '10.96.0.10',
      protocol: 'tcp',
      port: 80,
      endpoints: [
        { ip: '10.244.1.2', port: 8080 },
        { ip: '10.244.2.9', port: 8080 },
        { ip: '10.244.2.10', port: 8080 },
      ],
      noEndpoints: 'reject',
    },
  ]);
});

test('ports match by name and protocol; a Service without ready endpoints is refused; serving-terminating endpoints are the fallback', (t) => {
  const two = service('two', '10.96.0.11', { ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }] });
  const targets = serviceTargets(
    [two, service('down', '10.96.0.12'), service('draining', '10.96.0.13')],
    [
      slice('two', [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'dns', port: 5353, protocol: 'UDP' }], [{ ip: '10.244.1.2', ready: true }]),
      slice('down', HTTP, [{ ip: '10.244.1.3', ready: false }]),
      slice('draining', HTTP, [{ ip: '10.244.1.4', ready: false, serving: true, terminating: true }, { ip: '10.244.1.5', ready: false, serving: false, terminating: true }]),
    ],
    'node-a',
  );
  const by = Object.fromEntries(targets.map((x) => [x.id, x.endpoints.map((e) => `${e.ip}:${e.port}`)]));
  t.deepEqual(by, { 'shop/down/tcp/http': [], 'shop/draining/tcp/http': ['10.244.1.4:8080'], 'shop/two/tcp/http': ['10.244.1.2:8080'], 'shop/two/udp/dns': ['10.244.1.2:5353'] });
});

test('internalTrafficPolicy Local keeps this node\'s endpoints only, and drops when there are none', (t) => {
  const local = service('local', '10.96.0.20', { internalTrafficPolicy: 'Local' });
  const slices = [slice('local', HTTP, [{ ip: '10.244.1.2', ready: true, node: 'node-a' }, { ip: '10.244.2.2', ready: true, node: 'node-b' }])];
  t.deepEqual(serviceTargets([local], slices, 'node-b')[0].endpoints, [{ ip: '10.244.2.2', port: 8080 }]);
  t.like(serviceTargets([local], slices, 'node-c')[0], { endpoints: [], noEndpoints: 'drop' });
});

test('the ruleset: one verdict map entry per ClusterIP:port, numgen over the endpoints, DNAT per endpoint, reject for none, replaced atomically', (t) => {
  const text = renderRuleset(
    serviceTargets([service('web', '10.96.0.10'), service('down', '10.96.0.12')], [slice('web', HTTP, [{ ip: '10.244.1.2', ready: true }, { ip: '10.244.2.2', ready: true }])], 'node-a'),
    '10.96.0.0/16',
  );
  const lines = text.split('\n').map((l) => l.trim());
  t.deepEqual(lines.slice(0, 3), ['table ip kube-proxy', 'delete table ip kube-proxy', 'table ip kube-proxy {'], 'create-if-missing, delete, recreate: one transaction');
  t.true(lines.includes('elements = { 10.96.0.10 . tcp . 80 : goto service-shop/web/tcp/http }'));
  t.true(lines.includes('elements = { 10.96.0.12 . tcp . 80 : goto reject-chain }'));
  t.true(lines.includes('numgen random mod 2 vmap { 0 : goto endpoint-shop/web/tcp/http__10.244.1.2/8080, 1 : goto endpoint-shop/web/tcp/http__10.244.2.2/8080 }'));
  t.true(lines.includes('meta l4proto tcp dnat to 10.244.2.2:8080'));
  t.true(lines.includes('ip saddr 10.244.2.2 jump mark-for-masquerade'), 'hairpin');
  t.true(lines.includes('type nat hook prerouting priority dstnat; policy accept;') && lines.includes('type nat hook output priority -100; policy accept;'));
  t.true(lines.includes('ip daddr 10.96.0.0/16 drop'));
  t.is(lines.filter((l) => l.startsWith('chain ')).length, 12 + 1 + 2, '12 fixed chains, one per Service port, one per endpoint');
});
