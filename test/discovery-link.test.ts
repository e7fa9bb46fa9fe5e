// The controller's discovery stream and the agent's link over real HTTP/2 on loopback: the
// snapshot, deltas and deletes reach the agent's store; with the controller stopped the agent
// keeps its world and says so; a restarted controller resyncs it (reset ... synced); a controller
// that sends garbage has its link dropped while the agent keeps its last good state; a
// controller without discovery is a state, not a fault; a slow agent is cut at the bound.
import test from 'ava';
import * as http2 from 'node:http2';
import { ControllerServer } from '../src/controller/server.ts';
import { PATH_DISCOVERY } from '../src/controller/protocol.ts';
import { requestJson } from '../src/controller/client.ts';
import { DiscoveryHub, RESET_LINE, SYNCED_LINE } from '../src/discovery/hub.ts';
import { DiscoveryClient } from '../src/discovery/client.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { discoveryHealth } from '../src/agent/health.ts';
import { freePort } from './helpers/ports.ts';
import { waitFor } from './helpers/until.ts';

type Obj = Record<string, any>;

const svc = (name: string, ip: string): Obj => ({ kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
const slice = (name: string, service: string, ips: string[]): Obj => ({
  kind: 'EndpointSlice', metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } }, addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080 }], endpoints: ips.map((ip) => ({ addresses: [ip], nodeName: 'n2' })),
});
const pod = (name: string, ip: string): Obj => ({ kind: 'Pod', metadata: { name, namespace: 'shop', ownerReferences: [{ kind: 'StatefulSet', name: 'web', controller: true }] }, spec: { nodeName: 'n2' }, status: { phase: 'Running', podIP: ip } });

const quiet = () => {};
const ips = (s: DiscoveryStore, ip: string) => s.byVip(ip, 80)?.endpoints.map((e) => e.ip) ?? null;

async function controller(port: number, world: (hub: DiscoveryHub) => void) {
  const hub = new DiscoveryHub({ log: quiet });
  world(hub);
  hub.markSynced();
  const ctl = new ControllerServer({ log: quiet, discovery: { hub, source: { state: () => ({ kind: 'test' }) } } });
  await ctl.listen('127.0.0.1', port);
  return { hub, ctl };
}

function agent(url: string, extra: Partial<ConstructorParameters<typeof DiscoveryClient>[0]> = {}) {
  const store = new DiscoveryStore();
  const errors: string[] = [];
  const client = new DiscoveryClient({ url, node: 'n1', agentId: 'agent-1', store, minBackoffMs: 20, maxBackoffMs: 100, log: quiet, onError: (m) => errors.push(m), ...extra });
  client.start();
  return { store, errors, client };
}

test('snapshot, delta and delete reach the store; the controller stopped: the world stays and status says so; restarted: reset resyncs it', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let { hub, ctl } = await controller(port, (h) => {
    h.upsert('service', svc('web', '10.96.0.10'));
    h.upsert('slice', slice('web-a', 'web', ['10.1.0.5', '10.1.0.6']));
    h.upsert('pod', pod('web-0', '10.1.0.5'));
  });
  const a = agent(url, { staleAfterMs: 300 });
  t.teardown(async () => {
    a.client.stop();
    await ctl.close();
  });
  await waitFor(() => a.client.state === 'synced');
  t.deepEqual(ips(a.store, '10.96.0.10'), ['10.1.0.5', '10.1.0.6']);
  t.like(a.store.podByIp('10.1.0.5'), { kind: 'statefulset', owner: 'web', node: 'n2' });
  t.like(a.client.status(), { state: 'synced', everSynced: true, services: 1, slices: 1, endpoints: 2, pods: 1, downForMs: 0, lastError: null });
  t.deepEqual(discoveryHealth(a.client.status()), []);
  const st = await fetchStatus(url);
  t.like(st.discovery, { configured: true, synced: true, services: 1, agents: 1, agentsLive: 1, closedSlow: 0 });
  t.like(st.discovery.agentStreams[0], { node: 'n1', agentId: 'agent-1', state: 'live' });

  hub.upsert('slice', slice('web-a', 'web', ['10.1.0.6', '10.1.0.7']));
  await waitFor(() => ips(a.store, '10.96.0.10')?.join() === '10.1.0.6,10.1.0.7');
  hub.remove('pod', 'shop/web-0');
  hub.remove('slice', 'shop/web-a');
  await waitFor(() => a.store.podByIp('10.1.0.5') === undefined && ips(a.store, '10.96.0.10')?.length === 0);
  hub.upsert('slice', slice('web-a', 'web', ['10.1.0.6']));
  await waitFor(() => ips(a.store, '10.96.0.10')?.join() === '10.1.0.6');

  // The controller goes away: the agent keeps routing from what it has, and says how long it has been.
  await ctl.close();
  await waitFor(() => a.client.state !== 'synced');
  t.deepEqual(ips(a.store, '10.96.0.10'), ['10.1.0.6'], 'the last world stays');
  t.regex(a.errors.join('\n'), /lost the discovery link: .*; routing from the last state \(1 services, 1 endpoints, 0 pods\) until it is back/);
  await waitFor(() => a.client.status().downForMs > 300);
  const down = discoveryHealth(a.client.status());
  t.is(down.length, 1);
  t.regex(down[0]!, /discovery: the link to http:\/\/127\.0\.0\.1:\d+ has been down \d+s \((backoff|connecting): .*\); routing from the state of /); // between two attempts, or in one
  t.deepEqual(ips(a.store, '10.96.0.10'), ['10.1.0.6']);

  // Back with another world: the agent gets reset ... synced, and what the new world lacks is gone.
  ({ hub, ctl } = await controller(port, (h) => {
    h.upsert('service', svc('api', '10.96.0.20'));
    h.upsert('slice', slice('api-a', 'api', ['10.1.0.9']));
  }));
  await waitFor(() => a.client.state === 'synced', 10_000);
  t.is(a.store.byVip('10.96.0.10', 80), null);
  t.deepEqual(ips(a.store, '10.96.0.20'), ['10.1.0.9']);
  t.true(a.client.status().reconnects >= 1);
  t.deepEqual(discoveryHealth(a.client.status()), []);
});

/** A controller that answers the discovery GET with what `script(n)` says on its n-th stream (0-based), and ends it if told. */
async function scripted(script: (n: number) => { lines: string[]; end?: boolean }) {
  const server = http2.createServer();
  let n = 0;
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
    const { lines, end } = script(n++);
    const text = lines.map((l) => l + '\n').join('');
    if (end) stream.end(text);
    else stream.write(text);
  });
  server.on('session', (s) => s.on('error', () => {}));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (se) => {
    sessions.add(se);
    se.on('close', () => sessions.delete(se));
  });
  const close = () => new Promise<void>((r) => {
    for (const se of sessions) se.destroy();
    server.close(() => r());
  });
  return { url, streams: () => n, close };
}

const good = [RESET_LINE, JSON.stringify({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} } }),
  JSON.stringify({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'web-a', service: 'web', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.1.0.5', ready: true }] } }), SYNCED_LINE];

const garbage: Array<[string, string, RegExp]> = [
  ['not JSON', '{"type":"slice","op":"set"', /invalid discovery line \(not JSON/],
  ['a field out of range', JSON.stringify({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'web-a', service: 'web', ports: [{ name: 'http', port: 0 }], endpoints: [] } }), /invalid discovery line \(slice shop\/web-a: ports\[0\]\.port: expected a port 1-65535, got 0\)/],
  ['an endpoint that is not an IP', JSON.stringify({ type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'web-a', service: 'web', ports: [], endpoints: [{ ip: 'web-1', ready: true }] } }), /endpoints\[0\]\.ip: expected an IPv4 address, got "web-1"/],
  ['an unknown message type', '{"type":"gateway","op":"set"}', /unknown type "gateway"/],
  ['another protocol version', JSON.stringify({ type: 'reset', version: 9 }), /discovery version 9 is not one this agent reads \(1-8\); run agents and the controller of the same release/],
  ['a line over the bound', 'x'.repeat((1 << 20) + 10), /the controller sent a discovery line of over \d+ bytes/],
];

for (const [what, line, re] of garbage) {
  test(`a controller that sends garbage (${what}): the link drops, the last good state stays, the error is recorded, it reconnects`, async (t) => {
    // First stream: a good world then the garbage; later ones: a snapshot cut by the garbage before its synced.
    const fake = await scripted((n) => ({ lines: n === 0 ? [...good, line] : [RESET_LINE, line] }));
    const a = agent(fake.url);
    t.teardown(async () => {
      a.client.stop();
      await fake.close();
    });
    await waitFor(() => fake.streams() >= 3, 10_000);
    await fake.close(); // no stream can start another snapshot now
    await waitFor(() => a.client.state === 'backoff');
    t.deepEqual(ips(a.store, '10.96.0.10'), ['10.1.0.5'], 'the last good world stays');
    t.false(a.store.staged, 'a snapshot cut off by the garbage was dropped');
    t.regex(a.errors[0]!, re);
    t.regex(a.errors[0]!, /; dropped the link, keeping the last good state \(1 services, 1 endpoints, 0 pods\); reconnecting$/);
    const s = a.client.status();
    t.true(s.badLines >= 2);
    t.true(s.reconnects >= 2);
    t.deepEqual(discoveryHealth(s), [], 'synced once and not down long: not degraded yet');
  });
}

test('a route record this agent cannot read whole: applied as a refused route (fails closed), recorded and counted; the link stays and deltas flow', async (t) => {
  const route = { kind: 'HTTPRoute', namespace: 'shop', name: 'r', createdAt: 0, parents: [{ namespace: 'shop', name: 'web', port: 80 }], rules: [{ matches: [], backends: [], urlRewrite: { path: '/b' } }] };
  const extra = JSON.stringify({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'extra', clusterIPs: ['10.96.0.30'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} } });
  const fake = await scripted(() => ({ lines: [...good, JSON.stringify({ type: 'route', op: 'set', route }), extra] }));
  const a = agent(fake.url);
  t.teardown(async () => {
    a.client.stop();
    await fake.close();
  });
  await waitFor(() => a.store.byVip('10.96.0.30', 80) !== null, 10_000);
  const s = a.client.status();
  t.is(s.state, 'synced');
  t.is(fake.streams(), 1, 'never reconnected');
  t.is(s.badLines, 0);
  t.is(s.refusedRoutes, 1);
  // Held while the record stands: `mesh-agent status` says it, and the agent is degraded for it.
  t.is(s.failedClosed, 1);
  t.deepEqual(discoveryHealth(s), ['discovery: 1 route from the controller this agent cannot read, failing closed (their requests answer 500; the reason is in RECENT ERRORS and `mesh-agent diagnostics policy`); run agents and the controller of the same release']);
  const [r] = a.store.routesFor('shop/web');
  t.is(r?.refused, 'HTTPRoute shop/r: rules[0].urlRewrite: unknown field "urlRewrite": this agent does not know it (a controller of a newer release?); fields read here: name, requestHeaders, responseHeaders, redirect, matches, backends, timeouts, retry, timeoutSources, retrySources');
  t.deepEqual(a.errors, [`the controller sent a route this agent cannot read (${r!.refused}); requests to shop/web:80 that it could take answer 500 until the agents and the controller run the same release`]);
});

test('a controller of version 7: its Server records are read as it meant them (route regexes matched whole), over the real link', async (t) => {
  const server = {
    kind: 'Server', namespace: 'shop', name: 's', podSelector: {}, port: 80, accessPolicy: 'deny', authorizations: [],
    routes: [{ group: 'policy.linkerd.io', name: 'r', authorizations: [{ name: 'a' }], matches: [{ path: { type: 'RegularExpression', value: '/admin' } }] }],
  };
  const v7 = [JSON.stringify({ type: 'reset', version: 7 }), ...good.slice(1, -1), JSON.stringify({ type: 'access', op: 'set', access: server }), SYNCED_LINE];
  const fake = await scripted(() => ({ lines: v7 }));
  const a = agent(fake.url);
  t.teardown(async () => {
    a.client.stop();
    await fake.close();
  });
  await waitFor(() => a.client.state === 'synced', 10_000);
  t.deepEqual(a.store.serversIn('shop')[0]?.routes[0]?.matches, [{ path: { type: 'RegularExpression', value: '^(?:/admin)$' } }]);
  t.is(a.client.status().badLines, 0);
});

test('a stream that does not start with reset, or a mid-snapshot cut: dropped, the live world untouched', async (t) => {
  const extra = JSON.stringify({ type: 'service', op: 'set', service: { namespace: 'shop', name: 'extra', clusterIPs: ['10.96.0.30'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], annotations: {} } });
  const fake = await scripted((n) => (n === 0 ? { lines: good, end: true } : { lines: n === 1 ? [extra] : [RESET_LINE, extra, '{'] }));
  // The first stream ends without error: the agent reconnects, and meets the other two.
  const a = agent(fake.url);
  t.teardown(async () => {
    a.client.stop();
    await fake.close();
  });
  await waitFor(() => /invalid discovery line \(not JSON/.test(a.errors.join('\n')), 10_000);
  t.regex(a.errors[0]!, /^lost the discovery link: the controller closed the discovery stream; routing from the last state/);
  t.regex(a.errors[1]!, /the stream must start with reset, got service/);
  t.is(a.store.byVip('10.96.0.30', 80), null, 'nothing of the cut snapshot is visible');
  t.deepEqual(ips(a.store, '10.96.0.10'), ['10.1.0.5']);
});

test('a controller without discovery: the agent says so, retries slowly, and is not degraded; a fresh agent with no controller yet is', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const ctl = new ControllerServer({ log: quiet });
  await ctl.listen('127.0.0.1', port);
  const a = agent(url, { notServedRetryMs: 60_000 });
  t.teardown(async () => {
    a.client.stop();
    await ctl.close();
  });
  await waitFor(() => a.client.state === 'not-served');
  t.regex(String(a.client.status().lastError), /discovery is not configured on this controller: run it with --resources FILE\|DIR, or in a cluster/);
  t.deepEqual(discoveryHealth(a.client.status()), []);
  t.deepEqual(a.errors, []);
  const st = await fetchStatus(url);
  t.like(st.discovery, { configured: false });

  const nobody = agent(`http://127.0.0.1:${await freePort()}`);
  t.teardown(() => nobody.client.stop());
  await waitFor(() => nobody.client.status().reconnects >= 1);
  const h = discoveryHealth(nobody.client.status());
  t.regex(h[0]!, /^discovery: no cluster state from the controller http:\/\/127\.0\.0\.1:\d+ yet \((backoff|connecting): .+\); Services go to their original destination until it comes$/);
  t.deepEqual(nobody.errors, [], 'a controller never reached is a state, not a stream of errors');
});

test('the discovery stream needs the agent headers', async (t) => {
  const port = await freePort();
  const { ctl } = await controller(port, () => {});
  t.teardown(() => ctl.close());
  await t.throwsAsync(requestJson(`http://127.0.0.1:${port}`, 'GET', PATH_DISCOVERY), { message: 'the discovery stream needs the mesh-node and mesh-agent-id headers' });
});

test('an agent that does not read is cut once its queued updates pass the bound (ENHANCE_YOUR_CALM), and counted; a reading agent is not', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const hub = new DiscoveryHub({ log: quiet, maxQueuedBytes: 64 * 1024 });
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.markSynced();
  const ctl = new ControllerServer({ log: quiet, discovery: { hub, source: { state: () => ({}) } } });
  await ctl.listen('127.0.0.1', port);
  const reader = agent(url);
  // A raw client with small windows that reads the snapshot, then stops reading.
  const session = http2.connect(url, { settings: { initialWindowSize: 16 * 1024 } });
  t.teardown(async () => {
    reader.client.stop();
    session.destroy();
    await ctl.close();
  });
  const req = session.request({ ':method': 'GET', ':path': PATH_DISCOVERY, 'mesh-node': 'slow', 'mesh-agent-id': 'slow-1' });
  req.on('error', () => {});
  let got = '';
  const onData = (d: Buffer) => {
    got += d.toString();
    if (got.includes('"synced"')) {
      req.pause();
      req.off('data', onData);
    }
  };
  req.on('data', onData);
  await waitFor(() => got.includes('"synced"') && reader.client.state === 'synced');
  let i = 0;
  while (hub.state().closedSlow === 0 && i < 5000) {
    hub.upsert('slice', slice('web-a', 'web', [`10.1.${(i >> 8) & 255}.${i & 255}`, '10.2.0.1', '10.2.0.2', '10.2.0.3', '10.2.0.4']));
    i++;
    await new Promise((r) => setImmediate(r));
  }
  t.is(hub.state().closedSlow, 1);
  await waitFor(() => req.closed);
  t.is(req.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  const last = `10.1.${((i - 1) >> 8) & 255}.${(i - 1) & 255}`;
  await waitFor(() => ips(reader.store, '10.96.0.10')?.includes(last) === true);
  t.is(reader.client.status().reconnects, 0, 'the reading agent kept its stream');
  const st = await fetchStatus(url);
  t.like(st.discovery, { closedSlow: 1, agents: 1 });
});

function fetchStatus(url: string): Promise<any> {
  return requestJson(url, 'GET', '/v1/status');
}
