// The discovery link in `mesh-agent status`: the DISCOVERY line, and when it makes the agent degraded.
import test from 'ava';
import { assessHealth, discoveryHealth } from '../src/agent/health.ts';
import { render } from '../src/cli/status.ts';

const base = {
  version: '0.1.0', node: 'n1', uptimeSeconds: 5, kernel: '6.1.0', features: [],
  datapath: { cgroup: '/sys/fs/cgroup/kubepods.slice', programs: [{ section: 'cgroup/connect4', id: 7, attachedTo: '/sys/fs/cgroup/kubepods.slice' }], maps: [], counters: {} },
  proxy: { listen: '10.0.0.1:15001', open: 0, accepted: 0, refusedNoRecord: 0, refusedOverCap: 0, byProtocol: {} },
  pods: [], recentErrors: [],
};
const link = {
  url: 'http://10.96.0.5:8086', state: 'synced', connectedSince: '2026-01-01T00:00:00.000Z', lastSyncAt: '2026-01-01T00:00:00.100Z', lastUpdateAt: '2026-01-01T00:05:00.000Z',
  everSynced: true, downSince: null, downForMs: 0, staleAfterMs: 60_000, services: 12, slices: 14, endpoints: 40, pods: 55, reconnects: 1, lines: 100, bytes: 9000, badLines: 0, syncs: 1, lastError: null,
};

test('synced: a DISCOVERY line with what the agent knows; healthy', (t) => {
  const s = { ...base, discovery: link };
  const h = assessHealth(s);
  t.true(h.healthy, h.reasons.join());
  t.regex(render(s, h), /^DISCOVERY http:\/\/10\.96\.0\.5:8086: synced since 2026-01-01T00:00:00\.000Z, last update 2026-01-01T00:05:00\.000Z, 12 services, 14 slices, 40 endpoints, 55 pods, reconnects 1$/m);
});

test('routes failing closed (records this agent cannot read): said on the DISCOVERY line, and the agent is degraded while they stand', (t) => {
  const s = { ...base, discovery: { ...link, failedClosed: 2 } };
  const h = assessHealth(s);
  t.deepEqual(h.reasons, ['discovery: 2 routes from the controller this agent cannot read, failing closed (their requests answer 500; the reason is in RECENT ERRORS and `mesh-agent diagnostics policy`); run agents and the controller of the same release']);
  t.regex(render(s, h), /^DISCOVERY http:\/\/10\.96\.0\.5:8086: synced .*, reconnects 1, 2 routes failing closed$/m);
  t.true(assessHealth({ ...base, discovery: { ...link, failedClosed: 0 } }).healthy);
});

test('--native-io: the PROXY line says how many HTTP/1 sockets were driven from C++; without it, nothing', (t) => {
  const on = { ...base, proxy: { ...base.proxy, nativeIoClients: 12, nativeIoUpstreams: 3 } };
  t.regex(render(on, assessHealth(on)), /^PROXY 10\.0\.0\.1:15001: .*, driven from C\+\+ \(--native-io\) 12 HTTP\/1 clients and 3 upstreams$/m);
  t.notRegex(render(base, assessHealth(base)), /native-io/);
});

test('the PROXY line gives the connection cap in force when the agent reports it (lowered to what the open-file limit holds)', (t) => {
  const capped = { ...base, proxy: { ...base.proxy, maxConnections: 256, refusedOverCap: 4 } };
  t.regex(render(capped, assessHealth(capped)), /^PROXY 10\.0\.0\.1:15001: .*, 4 over the cap of 256, by protocol/m);
  t.regex(render(base, assessHealth(base)), /\d+ over the cap, by protocol/m); // an older agent: no cap in its status
});

test('down: the line says why; degraded once down longer than the bound, naming the state it routes from', (t) => {
  const down = { ...link, state: 'backoff', connectedSince: null, downSince: '2026-01-01T00:05:01.000Z', downForMs: 30_000, lastError: 'controller http://10.96.0.5:8086: ECONNREFUSED' };
  const s = { ...base, discovery: down };
  t.true(assessHealth(s).healthy, 'under the bound: the world it has is recent');
  t.regex(render(s, assessHealth(s)), /^DISCOVERY http:\/\/10\.96\.0\.5:8086: backoff, last update 2026-01-01T00:05:00\.000Z, .* \(controller http:\/\/10\.96\.0\.5:8086: ECONNREFUSED\)$/m);
  const stale = { ...s, discovery: { ...down, downForMs: 61_000 } };
  t.deepEqual(assessHealth(stale).reasons, ['discovery: the link to http://10.96.0.5:8086 has been down 61s (backoff: controller http://10.96.0.5:8086: ECONNREFUSED); routing from the state of 2026-01-01T00:05:00.000Z']);
});

test('configured but never synced is degraded; a controller without discovery, or none at all, is not', (t) => {
  const never = { ...link, state: 'syncing', everSynced: false, lastUpdateAt: null, services: 0, slices: 0, endpoints: 0, pods: 0 };
  t.deepEqual(discoveryHealth(never), ['discovery: no cluster state from the controller http://10.96.0.5:8086 yet (syncing); Services go to their original destination until it comes']);
  t.deepEqual(discoveryHealth({ ...never, state: 'not-served', lastError: 'discovery is not configured on this controller' }), []);
  t.deepEqual(discoveryHealth(null), []);
  const none = { ...base, discovery: null };
  t.regex(render(none, assessHealth(none)), /^DISCOVERY: none \(Services resolve through the controller: run with --controller HOST:PORT\)$/m);
  const older = { ...base }; // an agent from before discovery: no field at all
  t.true(assessHealth(older).healthy);
  t.regex(render(older, assessHealth(older)), /^DISCOVERY: none/m);
});

test('pods or namespaces refused by the API server (403): a POD SOURCE line per kind says since when, the API server\'s words and the rule to grant; none when nothing is refused', (t) => {
  const refused = { pods: { status: 403, verb: 'watch', message: 'pods is forbidden: User "system:serviceaccount:mesh-agent:mesh-agent" cannot watch resource "pods" in API group "" at the cluster scope', since: '2026-01-01T00:05:00.000Z', grant: 'list and watch on pods (core group)' } };
  const s = { ...base, podSource: { kind: 'kubernetes', synced: true, connected: false, refused } };
  t.regex(render(s, assessHealth(s)), /^POD SOURCE: the API server refuses pods since 2026-01-01T00:05:00\.000Z \(HTTP 403 on watch: pods is forbidden: User "system:serviceaccount:mesh-agent:mesh-agent" cannot watch resource "pods" in API group "" at the cluster scope\); the agent keeps the pods it last read: grant its ServiceAccount list and watch on pods \(core group\) \(the ClusterRole from mesh-agent install\)$/m);
  const ok = { ...base, podSource: { kind: 'kubernetes', synced: true, connected: true, refused: {} } };
  t.notRegex(render(ok, assessHealth(ok)), /POD SOURCE/);
  t.notRegex(render(base, assessHealth(base)), /POD SOURCE/, 'an older agent, or a pods file: no field');
});
