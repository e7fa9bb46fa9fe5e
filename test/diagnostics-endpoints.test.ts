// `mesh-agent diagnostics endpoints` end to end on loopback: the CLI asks the controller, the
// controller relays the question over each agent's link (real HTTP/2), and the agents answer
// from a real Router over a discovery store. The same through real agents on a simulated
// cluster: test/cluster-balancing.e2e.test.ts.
import test from 'ava';
import { ControllerServer } from '../src/controller/server.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { Router } from '../src/routing/router.ts';
import type { AgentQuery } from '../src/controller/protocol.ts';
import { parseServiceTarget, renderEndpoints } from '../src/cli/diagnostics.ts';
import { execFile } from '../src/sim/run.ts';
import { until } from './helpers/until.ts';
import { meshBin } from '../src/sim/dist-bin.ts';

const BIN = meshBin();
const quiet = () => {};

function agentState(endpoints: Array<{ ip: string; pod: string; node: string }>) {
  const store = new DiscoveryStore();
  store.apply({ type: 'reset', version: 1 });
  store.apply({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: ['10.96.0.20'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} } });
  store.apply({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'api-x', service: 'api', ports: [{ name: 'http', port: 8080 }], endpoints: endpoints.map((e) => ({ ...e, ready: true })) } });
  store.apply({ type: 'synced' });
  const router = new Router(store);
  return (q: AgentQuery) => {
    const ports = router.describe(q.namespace, q.name);
    if (ports === null) throw new Error(`Service ${q.namespace}/${q.name} is not in this agent's discovery`);
    return { ports };
  };
}

async function cli(args: string[]) {
  return execFile(process.execPath, [BIN, ...args], { timeoutMs: 20_000 });
}

test('the CLI shows each agent\'s balancer for a Service; --node picks one; -o json; unknown Service exits 1; bad target exits 2', async (t) => {
  const ctl = new ControllerServer({ log: quiet });
  const { port } = await ctl.listen('127.0.0.1', 0);
  const url = `http://127.0.0.1:${port}`;
  const eps = [{ ip: '10.244.1.5', pod: 'api-1', node: 'node-a' }, { ip: '10.244.2.5', pod: 'api-2', node: 'node-b' }];
  const clients = ['node-a', 'node-b'].map((node) => new ReportClient({
    url, node, hub: new TelemetryHub(), inventory: () => [], intervalMs: 60_000, onQuery: agentState(eps), log: quiet,
  }));
  t.teardown(async () => {
    for (const c of clients) await c.stop();
    await ctl.close();
  });
  for (const c of clients) c.start();
  await until(() => ctl.relay.links().length, (n) => n === 2, 'both agents linked');

  const all = await cli(['diagnostics', 'endpoints', 'svc/api', '-n', 'shop', '--controller', `127.0.0.1:${port}`]);
  t.is(all.code, 0, all.stderr);
  const lines = all.stdout.trim().split('\n');
  t.regex(lines[0]!, /^AGENT\s+SVC-PORT\s+IP\s+PORT\s+POD\s+NODE\s+STATE\s+EWMA\s+IN-FLIGHT\s+REQUESTS\s+FAILURES\s+EJECTIONS$/);
  t.is(lines.length, 5, all.stdout);
  t.regex(all.stdout, /node-a\s+80\s+10\.244\.1\.5\s+8080\s+api-1\s+node-a\s+ready\s+30ms\s+0\s+0\s+0\s+0/);

  const one = await cli(['diagnostics', 'endpoints', 'api.shop.svc.cluster.local:80', '--node', 'node-b', '-o', 'json', '--controller', `127.0.0.1:${port}`]);
  t.is(one.code, 0, one.stderr);
  const doc = JSON.parse(one.stdout);
  t.deepEqual(doc.agents.map((a: any) => a.node), ['node-b']);
  t.deepEqual(doc.agents[0].result.ports[0].endpoints.map((e: any) => e.pod), ['api-1', 'api-2']);

  const unknown = await cli(['diagnostics', 'endpoints', 'svc/nope', '-n', 'shop', '--controller', `127.0.0.1:${port}`]);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no agent could answer for Service shop\/nope: node-a: Service shop\/nope is not in this agent's discovery/);

  const noNode = await cli(['diagnostics', 'endpoints', 'svc/api', '-n', 'shop', '--node', 'node-z', '--controller', `127.0.0.1:${port}`]);
  t.is(noNode.code, 1);
  t.regex(noNode.stderr, /no agent of node node-z is connected to the controller; the connected ones: node-a, node-b/);

  const bad = await cli(['diagnostics', 'endpoints', 'deploy/api', '--controller', `127.0.0.1:${port}`]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /name a Service as svc\/NAME/);
});

test('service targets and the table', (t) => {
  t.deepEqual(parseServiceTarget('svc/web', 'shop'), { namespace: 'shop', name: 'web' });
  t.deepEqual(parseServiceTarget('web.emojivoto.svc.cluster.local:8080', 'default'), { namespace: 'emojivoto', name: 'web', port: 8080 });
  t.deepEqual(parseServiceTarget('web', 'x'), { namespace: 'x', name: 'web' });
  t.throws(() => parseServiceTarget('web.x.svc:99999', 'x'), { message: /out of range/ });
  const out = renderEndpoints([
    { node: 'n1', result: { ports: [{ ref: { namespace: 's', name: 'a', port: 80 }, authority: 'a.s.svc.cluster.local:80', problems: [], endpoints: [] }] } },
  ]);
  t.is(out, 'No endpoints.\nn1: a.s.svc.cluster.local:80: no ready endpoints');
  // An agent of two proxies: the merged endpoint's ejections are the sum, as its requests and failures.
  const ejected = { ip: '10.0.0.1', port: 8080, pod: 'a-1', node: 'n1', state: 'ejected' as const, ewmaMs: 2, inflight: 0, requests: 9, failures: 8, ejections: 3 };
  const rows = renderEndpoints([{ node: 'n1', result: { ports: [{ ref: { namespace: 's', name: 'a', port: 80 }, authority: 'a.s.svc.cluster.local:80', problems: [], endpoints: [ejected] }] } }]).split('\n');
  t.regex(rows[0]!, /FAILURES\s+EJECTIONS$/);
  t.regex(rows[1]!, /ejected\s+2\.0ms\s+0\s+9\s+8\s+3$/);
  // Topology aware routing's note, under the table as the problems are.
  const topo = renderEndpoints([{ node: 'n1', result: { ports: [{ ref: { namespace: 's', name: 'a', port: 80 }, authority: 'a.s.svc.cluster.local:80', problems: [], topology: 'PreferSameZone: 1 of 3 ready endpoints, those hinted for zone z1', endpoints: [ejected] }] } }]).split('\n');
  t.is(topo.at(-1), 'n1: a.s.svc.cluster.local:80: PreferSameZone: 1 of 3 ready endpoints, those hinted for zone z1');
});
