// The discovery line protocol's parser: every valid message round-trips, and a malformed line
// of every kind is refused with a DiscoveryError that names the field.
import test from 'ava';
import { DISCOVERY_VERSION, DiscoveryError, MAX_ANNOTATIONS, MAX_PORTS, MAX_SLICE_ENDPOINTS, parseMessage, serviceAuthority, type DiscoMessage } from '../src/discovery/model.ts';

const service = { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }, { name: 'admin', port: 9000, targetPort: 9001 }], annotations: { 'balancer.linkerd.io/failure-accrual': 'consecutive' } };
const slice = { namespace: 'shop', name: 'web-abc', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true, pod: 'web-1', node: 'n1', zone: 'z-a' }, { ip: '10.1.0.6', ready: false }] };
const pod = { namespace: 'shop', name: 'web-1', ip: '10.1.0.5', kind: 'deployment', owner: 'web', node: 'n1', serviceAccount: 'web' };

const valid: DiscoMessage[] = [
  { type: 'reset', version: DISCOVERY_VERSION },
  { type: 'synced' },
  { type: 'service', op: 'set', service },
  { type: 'service', op: 'set', service: { ...service, clusterIPs: [], headless: true } },
  { type: 'service', op: 'set', service: { ...service, clusterIPs: [], headless: true, ports: [] } },
  { type: 'slice', op: 'set', slice },
  { type: 'slice', op: 'set', slice: { ...slice, endpoints: [{ ip: '10.1.0.5', ready: true, zone: 'z-a', forZones: ['z-a', 'z-b'], forNodes: ['n1'] }] } },
  { type: 'pod', op: 'set', pod },
  { type: 'pod', op: 'set', pod: { ...pod, skipInbound: [[7001, 7001], [9000, 9100]] } },
  { type: 'service', op: 'delete', key: 'shop/web' },
  { type: 'slice', op: 'delete', key: 'shop/web-abc' },
  { type: 'pod', op: 'delete', key: 'shop/web-1' },
];

test('every valid message round-trips', (t) => {
  for (const m of valid) t.deepEqual(parseMessage(JSON.stringify(m)), m, m.type);
});

test('optional fields may be absent; an unnamed port and no annotations are fine', (t) => {
  const m = parseMessage(JSON.stringify({ type: 'service', op: 'set', service: { namespace: 'a', name: 'b', clusterIPs: [], ports: [{ port: 53, targetPort: 53 }] } }));
  t.deepEqual(m, { type: 'service', op: 'set', service: { namespace: 'a', name: 'b', clusterIPs: [], ports: [{ name: '', port: 53, targetPort: 53 }], annotations: {} } });
  const e = parseMessage(JSON.stringify({ type: 'slice', op: 'set', slice: { ...slice, endpoints: [{ ip: '10.1.0.5', ready: true }] } }));
  t.deepEqual((e as any).slice.endpoints, [{ ip: '10.1.0.5', ready: true }]);
});

const set = (type: string, v: unknown) => JSON.stringify({ type, op: 'set', [type]: v });
const svc = (patch: object) => set('service', { ...service, ...patch });
const slc = (patch: object) => set('slice', { ...slice, ...patch });
const ep = (patch: object) => slc({ endpoints: [{ ...slice.endpoints[0], ...patch }] });
const pd = (patch: object) => set('pod', { ...pod, ...patch });
const many = <T,>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

// [what, line, the error must match]
const malformed: Array<[string, string, RegExp]> = [
  ['not JSON', '{"type":"reset"', /^not JSON/],
  ['empty line', '', /^not JSON/],
  ['an array', '[1]', /message: expected an object/],
  ['null', 'null', /message: expected an object/],
  ['a number', '7', /message: expected an object/],
  ['no type', '{}', /unknown type undefined/],
  ['unknown type', '{"type":"gateway"}', /unknown type "gateway"/],
  ['reset without a version', '{"type":"reset"}', /discovery version undefined is not one this agent reads \(1-8\); run agents and the controller of the same release/],
  ['reset of a later version', '{"type":"reset","version":9}', /discovery version 9 is not one this agent reads \(1-8\)/],
  ['route delete with a ns/name key', '{"type":"route","op":"delete","key":"shop/api"}', /route delete: expected "Kind\/namespace\/name", got "shop\/api"/],
  ['route delete of an unknown kind', '{"type":"route","op":"delete","key":"TCPRoute/shop/api"}', /route delete: expected "Kind\/namespace\/name"/],
  ['route without parents', JSON.stringify({ type: 'route', op: 'set', route: { kind: 'HTTPRoute', namespace: 'shop', name: 'api', createdAt: 0, parents: [], rules: [{ matches: [], backends: [] }] } }), /HTTPRoute shop\/api: parents: expected at least one parent Service/],
  ['op neither set nor delete', '{"type":"pod","op":"patch","pod":{}}', /pod: op must be "set" or "delete", got "patch"/],
  ['delete without a key', '{"type":"service","op":"delete"}', /service delete: expected "namespace\/name"/],
  ['delete with a key without a slash', '{"type":"slice","op":"delete","key":"web"}', /slice delete: expected "namespace\/name", got "web"/],
  ['delete with a bad name in the key', '{"type":"pod","op":"delete","key":"shop/Web_1"}', /pod delete: expected a Kubernetes name/],
  ['set without the record', '{"type":"service","op":"set"}', /^service: expected an object/],
  // Service
  ['service without a namespace', svc({ namespace: undefined }), /service\.namespace: expected a Kubernetes name/],
  ['service with an upper-case name', svc({ name: 'Web' }), /service\.name: expected a Kubernetes name, got "Web"/],
  ['service clusterIPs not a list', svc({ clusterIPs: '10.96.0.10' }), /service shop\/web: clusterIPs: expected a list/],
  ['service clusterIP not IPv4', svc({ clusterIPs: ['fd00::1'] }), /clusterIPs\[0\]: expected an IPv4 address, got "fd00::1"/],
  ['service clusterIP out of range', svc({ clusterIPs: ['10.96.0.256'] }), /clusterIPs\[0\]: expected an IPv4 address/],
  ['service with three clusterIPs', svc({ clusterIPs: ['10.0.0.1', '10.0.0.2', '10.0.0.3'] }), /clusterIPs: more than 2 entries/],
  ['service ports not a list', svc({ ports: {} }), /ports: expected a list/],
  ['service headless not true', svc({ clusterIPs: [], headless: 'yes' }), /service shop\/web: headless: expected true or nothing/],
  ['service headless with a ClusterIP', svc({ headless: true }), /service shop\/web: headless: a headless Service has no ClusterIP, got 10\.96\.0\.10/],
  ['service port not an object', svc({ ports: [80] }), /ports\[0\]: expected an object/],
  ['service port 0', svc({ ports: [{ port: 0, targetPort: 80 }] }), /ports\[0\]\.port: expected a port 1-65535, got 0/],
  ['service port 65536', svc({ ports: [{ port: 65536, targetPort: 80 }] }), /ports\[0\]\.port: expected a port 1-65535, got 65536/],
  ['service port not an integer', svc({ ports: [{ port: 80.5, targetPort: 80 }] }), /ports\[0\]\.port: expected a port/],
  ['service port as a string', svc({ ports: [{ port: '80', targetPort: 80 }] }), /ports\[0\]\.port: expected a port/],
  ['service targetPort missing', svc({ ports: [{ port: 80 }] }), /ports\[0\]\.targetPort: expected a port number or a port name, got undefined/],
  ['service targetPort an empty name', svc({ ports: [{ port: 80, targetPort: '' }] }), /ports\[0\]\.targetPort: expected a port number or a port name, got ""/],
  ['service targetPort a name too long', svc({ ports: [{ port: 80, targetPort: 'a-very-long-port-name' }] }), /targetPort: expected a port number or a port name/],
  ['service targetPort out of range', svc({ ports: [{ port: 80, targetPort: 70000 }] }), /ports\[0\]\.targetPort: expected a port 1-65535, got 70000/],
  ['service port name with spaces', svc({ ports: [{ name: 'my port', port: 80, targetPort: 80 }] }), /ports\[0\]\.name: expected a port name, got "my port"/],
  ['service appProtocol not a string', svc({ ports: [{ port: 80, targetPort: 80, appProtocol: 1 }] }), /ports\[0\]\.appProtocol: expected a short string/],
  ['service with too many ports', svc({ ports: many(MAX_PORTS + 1, (i) => ({ name: `p${i}`, port: i + 1, targetPort: i + 1 })) }), /ports: more than 100 entries/],
  ['service annotations a list', svc({ annotations: ['a'] }), /annotations: expected an object/],
  ['service annotation not a string', svc({ annotations: { 'mesh-agent.io/x': 1 } }), /annotations: mesh-agent\.io\/x: expected a string value/],
  ['service annotation value too long', svc({ annotations: { 'mesh-agent.io/x': 'v'.repeat(5000) } }), /annotations: mesh-agent\.io\/x: expected a string value/],
  ['service with too many annotations', svc({ annotations: Object.fromEntries(many(MAX_ANNOTATIONS + 1, (i) => [`mesh-agent.io/a${i}`, 'x'])) }), /annotations: more than 64/],
  // EndpointSlice
  ['slice without its service', slc({ service: undefined }), /slice shop\/web-abc: service: expected a Kubernetes name, got undefined/],
  ['slice ports not a list', slc({ ports: null }), /slice shop\/web-abc: ports: expected a list/],
  ['slice port out of range', slc({ ports: [{ name: 'http', port: 0 }] }), /ports\[0\]\.port: expected a port 1-65535, got 0/],
  ['slice port name bad', slc({ ports: [{ name: 'HTTP', port: 80 }] }), /ports\[0\]\.name: expected a port name, got "HTTP"/],
  ['slice endpoints not a list', slc({ endpoints: {} }), /endpoints: expected a list/],
  ['slice endpoint not an object', slc({ endpoints: ['10.1.0.5'] }), /endpoints\[0\]: expected an object/],
  ['slice endpoint without ready', ep({ ready: undefined }), /endpoints\[0\]\.ready: expected a boolean/],
  ['slice endpoint ready as a string', ep({ ready: 'true' }), /endpoints\[0\]\.ready: expected a boolean/],
  ['slice endpoint address not an IP', ep({ ip: 'web-1.shop' }), /endpoints\[0\]\.ip: expected an IPv4 address, got "web-1.shop"/],
  ['slice endpoint address missing', ep({ ip: undefined }), /endpoints\[0\]\.ip: expected an IPv4 address, got undefined/],
  ['slice endpoint pod name bad', ep({ pod: 'Web 1' }), /endpoints\[0\]\.pod: expected a Kubernetes name/],
  ['slice endpoint node name bad', ep({ node: '' }), /endpoints\[0\]\.node: expected a Kubernetes name/],
  ['slice endpoint zone not a string', ep({ zone: 3 }), /endpoints\[0\]\.zone: expected a short string/],
  ['slice endpoint forZones not a list', ep({ forZones: 'z-a' }), /endpoints\[0\]\.forZones: expected a list/],
  ['slice endpoint forZones entry empty', ep({ forZones: [''] }), /endpoints\[0\]\.forZones\[0\]: expected a zone name, got ""/],
  ['slice endpoint forZones over the API\'s 8', ep({ forZones: many(9, (i) => `z${i}`) }), /endpoints\[0\]\.forZones: more than 8 entries/],
  ['slice endpoint forNodes entry not a name', ep({ forNodes: ['N1'] }), /endpoints\[0\]\.forNodes\[0\]: expected a Kubernetes name, got "N1"/],
  ['slice with too many endpoints', slc({ endpoints: many(MAX_SLICE_ENDPOINTS + 1, () => ({ ip: '10.1.0.5', ready: true })) }), /endpoints: more than 1000 entries/],
  // Pod
  ['pod without an IP', pd({ ip: undefined }), /pod shop\/web-1: ip: expected an IPv4 address, got undefined/],
  ['pod with an IPv6 address', pd({ ip: 'fd00::5' }), /pod shop\/web-1: ip: expected an IPv4 address/],
  ['pod kind upper-case', pd({ kind: 'Deployment' }), /pod shop\/web-1: kind: expected a lower-case owner kind/],
  ['pod kind missing', pd({ kind: undefined }), /kind: expected a lower-case owner kind/],
  ['pod owner missing', pd({ owner: undefined }), /pod shop\/web-1: owner: expected a Kubernetes name, got undefined/],
  ['pod serviceAccount missing', pd({ serviceAccount: undefined }), /pod shop\/web-1: serviceAccount: expected a Kubernetes name/],
  ['pod inject not enabled or disabled', pd({ inject: 'on' }), /pod shop\/web-1: inject: expected "enabled" or "disabled", got "on"/],
  ['pod hostIp not an IPv4 address', pd({ hostIp: 'fd00::1' }), /pod shop\/web-1: hostIp/],
  ['pod node bad', pd({ node: 'N1' }), /pod shop\/web-1: node: expected a Kubernetes name, got "N1"/],
  ['pod skipInbound a port list string', pd({ skipInbound: '7001' }), /pod shop\/web-1: skipInbound: expected a list/],
  ['pod skipInbound range reversed', pd({ skipInbound: [[9100, 9000]] }), /pod shop\/web-1: skipInbound\[0\]: expected \[low port, high port\], got \[9100,9000\]/],
  ['pod skipInbound port 0', pd({ skipInbound: [[0, 10]] }), /skipInbound\[0\]: expected \[low port, high port\]/],
  ['pod skipInbound range of three', pd({ skipInbound: [[1, 2, 3]] }), /skipInbound\[0\]: more than 2 entries/],
  ['pod skipInbound more ranges than the datapath holds', pd({ skipInbound: many(17, (i) => [i * 2 + 1, i * 2 + 1]) }), /skipInbound: more than 16 entries/],
  ['pod name too long', pd({ name: 'a'.repeat(254) }), /pod\.name: expected a Kubernetes name/],
];

for (const [what, line, re] of malformed) {
  test(`refused: ${what}`, (t) => {
    const e = t.throws(() => parseMessage(line), { instanceOf: DiscoveryError });
    t.regex(e!.message, re);
  });
}

test('a field nested deeper than JSON.stringify goes is refused naming the field (found by the fuzz test: was a RangeError, "Maximum call stack size exceeded")', (t) => {
  const deep = '['.repeat(100_000) + ']'.repeat(100_000);
  for (const [line, re] of [
    [`{"type":"reset","version":${deep}}`, /^reset: discovery version a list nested too deep to show is not one/],
    [`{"type":"pod","op":"set","pod":{"namespace":${deep}}}`, /^pod\.namespace: expected a Kubernetes name, got a list nested too deep to show/],
    [`{"type":"route","op":"set","route":{"kind":${deep}}}`, /^route\.kind: expected one of .*, got a list nested too deep to show/],
    [`{"type":"access","op":"set","access":{"namespace":${deep}}}`, /^access\.namespace: expected a Kubernetes name, got a list nested too deep to show/],
  ] as const) {
    const e = t.throws(() => parseMessage(line), { instanceOf: DiscoveryError });
    t.regex(e!.message, re);
  }
});

test('the authority of a Service is Linkerd\'s', (t) => {
  t.is(serviceAuthority('shop', 'web', 80), 'web.shop.svc.cluster.local:80');
  t.is(serviceAuthority('shop', 'web', 80, 'corp.example'), 'web.shop.svc.corp.example:80');
});
