// The agent's report client and the controller over real HTTP/2 sockets on loopback, with
// events fed straight into a telemetry hub (the e2e test drives them through the proxy):
// reports arrive and stat sees them, the backlog holds at its bound while the controller is
// down and drains after it returns, and a tap reaches the CLI side.
import test from 'ava';
import * as http2 from 'node:http2';
import { ControllerServer } from '../src/controller/server.ts';
import { requestJson, streamJson } from '../src/controller/client.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { RequestEvent } from '../src/telemetry/events.ts';
import type { PodInventory } from '../src/telemetry/report.ts';
import { until as untilWith } from './helpers/until.ts';
import { freePort } from './helpers/ports.ts';

const until = <T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms?: number) =>
  untilWith(f, ok, what, { ms: ms ?? 8000, intervalMs: 50 });

const quiet = () => {};
const pods: PodInventory[] = [
  { namespace: 'shop', name: 'web-1', ip: '10.0.0.1', kind: 'deployment', owner: 'web', meshed: true },
  { namespace: 'shop', name: 'api-1', ip: '10.0.0.2', kind: 'deployment', owner: 'api', meshed: true },
];
const byIp = (ip: string) => {
  const p = pods.find((x) => x.ip === ip);
  return p ? { namespace: p.namespace, pod: p.name, kind: p.kind, name: p.owner } : null;
};
const ev = (success: boolean, path = '/'): RequestEvent => ({
  direction: 'outbound', sourceIp: '10.0.0.1', sourcePort: 5000, sourcePodKey: 0n, destIp: '10.0.0.2', destPort: 8080, connId: 1,
  protocol: 'http1', authority: 'api:8080', method: 'GET', path, status: success ? 200 : 503, success, latencyMs: 2, durationMs: 3,
  requestBytes: 0, responseBytes: 5, startedAt: Date.now(),
});


test('reports reach the controller; with it down the backlog stays at its bound and drops are counted; it drains after a restart', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let ctl = new ControllerServer({ log: quiet });
  await ctl.listen('127.0.0.1', port);
  const hub = new TelemetryHub({ workloads: { byIp } });
  const client = new ReportClient({ url, node: 'n1', hub, inventory: () => pods, intervalMs: 200, backlog: 5, minBackoffMs: 50, maxBackoffMs: 200, log: quiet });
  t.teardown(async () => {
    await client.stop();
    await ctl.close();
  });
  client.start();
  await until(() => client.state(), (s) => s.state === 'connected', 'connected');
  for (let i = 0; i < 4; i++) hub.request(ev(i < 3));
  const stat = await until(() => requestJson(url, 'GET', '/v1/stat?kind=deploy&namespace=shop&name=api&window=1m'), (s: any) => s.rows[0]?.requests === 4, 'stat shows 4 requests');
  t.like(stat.rows[0], { successRate: 0.75, meshedPods: 1, totalPods: 1 });

  await ctl.close();
  await until(() => client.state(), (s) => s.state !== 'connected', 'link down');
  const down = await until(() => client.state(), (s) => s.dropped >= 3, 'drops counted', 10_000);
  t.is(down.backlog, 5, 'the backlog holds at its bound');
  t.regex(String(down.lastError), /ECONNREFUSED|closed/);
  hub.request(ev(true)); // made while the controller is down: its report waits in the backlog

  ctl = new ControllerServer({ log: quiet });
  await ctl.listen('127.0.0.1', port);
  const up = await until(() => client.state(), (s) => s.state === 'connected' && s.backlog === 0, 'reconnected and drained', 10_000);
  t.true(up.reconnects >= 1);
  const st = await requestJson(url, 'GET', '/v1/status');
  t.like(st.nodes[0], { node: 'n1', live: true });
  t.true(st.nodes[0].dropped >= 3, 'the controller learns the agent\'s drop count');
  // The backlog the agent held while the controller was away: the request made then is in the window.
  const after = await until(() => requestJson(url, 'GET', '/v1/stat?kind=deploy&namespace=shop&name=api&window=1m'), (s: any) => s.rows[0]?.requests >= 1, 'backlogged request');
  t.is(after.rows[0].requests, 1, 'the new controller saw only what the backlog kept');
});

test('a tap goes from the CLI side through the controller to the agent and back, filtered, and ends cleanly', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const ctl = new ControllerServer({ log: quiet });
  await ctl.listen('127.0.0.1', port);
  const hub = new TelemetryHub({ workloads: { byIp } });
  const client = new ReportClient({ url, node: 'n1', hub, inventory: () => pods, intervalMs: 100, log: quiet });
  t.teardown(async () => {
    await client.stop();
    await ctl.close();
  });
  client.start();
  await until(() => requestJson(url, 'GET', '/v1/status'), (s: any) => s.nodes.length === 1 && s.tapLinks.length === 1, 'agent known');

  const lines: any[] = [];
  const ac = new AbortController();
  const done = streamJson(url, '/v1/tap', { resource: 'deployment/api', namespace: 'shop', path: '/items', maxRps: 100 }, (o) => lines.push(o), ac.signal);
  await until(() => client.state().activeTaps, (n) => n === 1, 'tap started on the agent');
  hub.request(ev(true, '/health'));
  hub.request(ev(true, '/items/1'));
  // api calling web: the tapped resource sends it.
  hub.request({ ...ev(true, '/items/2'), sourceIp: '10.0.0.2', destIp: '10.0.0.1', authority: 'web:8080' });
  const got = await until(() => lines.filter((l) => l.type === 'request'), (l) => l.length === 2, 'two tapped requests', 3000);
  t.like(got[0], { id: '0:1', node: 'n1', direction: 'inbound', source: { ip: '10.0.0.1', resource: 'deploy/web', namespace: 'shop' }, destination: { ip: '10.0.0.2', resource: 'deploy/api' }, record: { path: '/items/1', status: 200 } });
  t.like(got[1], { id: '0:2', direction: 'outbound', source: { ip: '10.0.0.2', resource: 'deploy/api' }, destination: { ip: '10.0.0.1', resource: 'deploy/web' }, record: { path: '/items/2' } });
  t.like(lines[0], { type: 'started', agents: 1, pods: 1 });
  ac.abort();
  await done;
  await until(() => client.state().activeTaps, (n) => n === 0, 'tap stopped on the agent');

  const bad: any[] = [];
  await streamJson(url, '/v1/tap', { resource: 'deployment/nope', namespace: 'shop', maxRps: 1 }, (o) => bad.push(o), new AbortController().signal);
  t.like(bad[0], { type: 'error', status: 404 });
  t.regex(bad[0].error, /deployment\/nope in namespace shop: no pods/);
  // A path prefix longer than the agents take would start a tap that never shows a request: 400.
  const long: any[] = [];
  await streamJson(url, '/v1/tap', { resource: 'deployment/api', namespace: 'shop', path: `/${'x'.repeat(4096)}`, maxRps: 1 }, (o) => long.push(o), new AbortController().signal).catch((e: Error) => long.push({ thrown: e.message }));
  t.regex(JSON.stringify(long[0]), /path: at most 4096 characters \(got 4097\)/);
  const err = await t.throwsAsync(requestJson(url, 'POST', '/v1/reports', { version: 1 }));
  t.regex(err!.message, /latency buckets/);
});

test('an agent tap stream sending null, arrays or records without endpoints does not bring the controller down', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const warnings: string[] = [];
  const ctl = new ControllerServer({ log: (level, msg) => level === 'warn' && warnings.push(msg) });
  await ctl.listen('127.0.0.1', port);
  const s = http2.connect(url);
  t.teardown(async () => {
    s.destroy();
    await ctl.close();
  });
  const st = s.request({ ':method': 'POST', ':path': '/v1/agents/tap', 'mesh-node': 'n1', 'mesh-agent-id': 'a1' }, { endStream: false });
  st.on('error', () => {});
  st.write('null\nnot json\n[]\n7\n{"tap":"t1","record":null}\n{"tap":"t1","record":{"src":null}}\n');
  // Each counted; logged once a minute per node and kind (tap-relay.ts badLine), so one line.
  const status = await until(() => requestJson(url, 'GET', '/v1/status'), (st) => st.tapBadLines?.notObject >= 3, 'null, not json and 7 counted');
  t.is(status.tapBadLines.notObject, 3, 'null, not json and 7; the array, the null record and the record without endpoints are not bad lines');
  t.deepEqual(status.tapLinks, [{ node: 'n1', agentId: 'a1' }]);
  t.is(warnings.length, 1, warnings.join('\n'));
  t.regex(warnings[0]!, /not a JSON object; ignored/);
});
