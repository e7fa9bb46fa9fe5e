// --agent-auth token (docs/controller.md "Who can reach it"): the controller's agent endpoints
// (reports, the agents' tap stream, discovery) over real HTTP/2, each token reviewed by the
// stand-in API server's TokenReview over HTTP. No token: 401 and not one discovery line; another
// ServiceAccount's token, or a node's token speaking for another node: 403; the API server down:
// 503; a valid token: served, and reviewed once however many requests carry it. Then the agent's
// real clients: no token file, refused with the reason; the file written, in on their next try.
import test from 'ava';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { ControllerServer } from '../src/controller/server.ts';
import { AgentAuth, CONTROLLER_AUDIENCE } from '../src/controller/agent-auth.ts';
import { controllerBearer } from '../src/controller/agent-token.ts';
import { tokenReviewer } from '../src/identity/kube.ts';
import { agentAuthMode } from '../src/cli/controller.ts';
import { DiscoveryHub } from '../src/discovery/hub.ts';
import { DiscoveryClient } from '../src/discovery/client.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { PATH_AGENT_TAP, PATH_DISCOVERY, PATH_REPORTS } from '../src/controller/protocol.ts';
import { report } from './helpers/reports.ts';
import { waitFor } from './helpers/until.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const AGENT = { namespace: 'mesh-agent', name: 'mesh-agent-agent' };
const quiet = () => {};

async function setUp(t: any) {
  const api = await new SimApiServer().start();
  let apiUp = true;
  t.teardown(() => apiUp && api.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: [{ name: 'sim', server: api.url, skipTLSVerify: true }], users: [{ name: 'sim', token: 'sim' }], contexts: [{ name: 'sim', cluster: 'sim', user: 'sim' }], currentContext: 'sim' });
  const warnings: Array<Record<string, unknown>> = [];
  const auth = new AgentAuth({ review: tokenReviewer(kc, 'the controller needs create on tokenreviews'), agent: AGENT, log: (_l, _m, f) => warnings.push(f ?? {}) });
  const hub = new DiscoveryHub({ log: quiet });
  hub.markSynced();
  const ctl = new ControllerServer({ log: quiet, agentAuth: auth, discovery: { hub, source: { state: () => ({}) } } });
  const { port } = await ctl.listen('127.0.0.1', 0);
  t.teardown(() => ctl.close());
  const url = `http://127.0.0.1:${port}`;
  const session = http2.connect(url);
  t.teardown(() => session.destroy());
  const token = (node: string, o: { sa?: string; audiences?: string[] } = {}) =>
    api.tokens.mint({ namespace: AGENT.namespace, serviceAccount: o.sa ?? AGENT.name, node, pod: `agent-${node}`, audiences: o.audiences ?? [CONTROLLER_AUDIENCE] });
  /** One request: its status, the lines it got (a stream is closed after its first), its error. */
  const ask = (p: string, o: { token?: string; node?: string; body?: unknown }) => new Promise<{ status: number; lines: string[]; error?: string }>((resolve, reject) => {
    const headers: http2.OutgoingHttpHeaders = { ':method': p === PATH_DISCOVERY ? 'GET' : 'POST', ':path': p, 'mesh-agent-id': 'a1' };
    if (o.node !== undefined) headers['mesh-node'] = o.node;
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    const req = session.request(headers, { endStream: p === PATH_DISCOVERY });
    let status = 0;
    let text = '';
    req.setEncoding('utf8');
    req.on('response', (h) => {
      status = Number(h[':status']);
      if (status === 200 && p === PATH_AGENT_TAP) req.close(); // it writes nothing until a tap starts
    });
    req.on('data', (d: string) => {
      text += d;
      if (status === 200 && p !== PATH_REPORTS && text.includes('\n')) req.close();
    });
    req.on('close', () => {
      const lines = text.split('\n').filter((l) => l !== '');
      let error: string | undefined;
      try {
        error = status === 200 ? undefined : JSON.parse(text).error;
      } catch {
        error = text;
      }
      resolve({ status, lines, error });
    });
    req.on('error', reject);
    if (p === PATH_REPORTS) req.end(JSON.stringify(o.body));
    else if (p === PATH_AGENT_TAP) req.write('');
  });
  return { api, auth, ctl, url, token, ask, warnings, stopApi: async () => { apiUp = false; await api.close(); } };
}

test('no token: 401 naming the fix on all three agent endpoints, and not one discovery line; counted, logged once per node', async (t) => {
  const s = await setUp(t);
  for (const p of [PATH_DISCOVERY, PATH_AGENT_TAP, PATH_REPORTS]) {
    const r = await s.ask(p, { node: 'node-a', body: report({ node: 'node-a', seq: 1, start: 0, end: 1 }) });
    t.is(r.status, 401, p);
    t.regex(r.error ?? '', /no bearer token: this controller runs with --agent-auth token; the agent sends its projected ServiceAccount token \(audience mesh-agent-controller, run --controller-token-file/, p);
    if (p === PATH_DISCOVERY) t.deepEqual(r.lines.filter((l) => !l.startsWith('{"error"')), [], 'no discovery line');
  }
  t.is(s.ctl.store.all().length, 0, 'no report stored');
  t.is(s.api.tokens.reviews, 0, 'nothing to review');
  await s.ask(PATH_DISCOVERY, { node: 'node-a' });
  t.is(s.auth.stats.refused.unauthenticated, 4);
  t.is(s.warnings.length, 1, 'one line for node-a\'s missing token, not four');
  t.like(s.warnings[0], { node: 'node-a', status: 401 });
  // A token that is no JWT: refused without asking the API server.
  const bad = await s.ask(PATH_DISCOVERY, { node: 'node-a', token: 'made-up' });
  t.is(bad.status, 401);
  t.regex(bad.error ?? '', /the bearer token is not a JWT \(not three base64url parts joined by dots\), so it is no ServiceAccount token and the API server was not asked/);
  t.is(s.api.tokens.reviews, 0);
  // A JWT the API server did not sign: the review says so.
  const forged = s.token('node-a').slice(0, -4) + 'AAAA';
  const unsigned = await s.ask(PATH_DISCOVERY, { node: 'node-a', token: forged });
  t.is(unsigned.status, 401);
  t.regex(unsigned.error ?? '', /the token was not accepted by the API server's TokenReview: invalid bearer token/);
  // The identity service's audience is not the controller's: that token never crosses this port usefully.
  const idToken = await s.ask(PATH_DISCOVERY, { node: 'node-a', token: s.token('node-a', { audiences: ['mesh-agent-identity'] }) });
  t.is(idToken.status, 401);
  t.regex(idToken.error ?? '', /audiences \["mesh-agent-identity"\] is invalid for the target audiences \["mesh-agent-controller"\]/);
});

test('another ServiceAccount\'s token: 403; a token bound to node A speaking for node B (header or report): 403; nothing served or stored', async (t) => {
  const s = await setUp(t);
  const other = await s.ask(PATH_DISCOVERY, { node: 'node-a', token: s.token('node-a', { sa: 'default' }) });
  t.is(other.status, 403);
  t.regex(other.error ?? '', /the token is system:serviceaccount:mesh-agent:default, not the agent's ServiceAccount \(system:serviceaccount:mesh-agent:mesh-agent-agent\); only node agents may speak for a node to the controller/);
  const a = s.token('node-a');
  for (const p of [PATH_DISCOVERY, PATH_AGENT_TAP]) {
    const r = await s.ask(p, { node: 'node-b', token: a });
    t.is(r.status, 403, p);
    t.regex(r.error ?? '', /the token is bound to node node-a, not "node-b" \(the mesh-node header, or a report's node\): an agent speaks for its own node only/, p);
  }
  t.deepEqual(s.ctl.relay.links(), [], 'no tap link for node-b');
  // A report: the header, then the node inside it.
  t.is((await s.ask(PATH_REPORTS, { node: 'node-b', token: a, body: report({ node: 'node-b', seq: 1, start: 0, end: 1 }) })).status, 403);
  const inside = await s.ask(PATH_REPORTS, { node: 'node-a', token: a, body: report({ node: 'node-b', seq: 1, start: 0, end: 1 }) });
  t.is(inside.status, 403);
  t.regex(inside.error ?? '', /bound to node node-a, not "node-b"/);
  t.is(s.ctl.store.all().length, 0, 'no report stored');
  t.is(s.auth.stats.refused.forbidden, 5);
});

test('a valid token is served on all three; N requests with it cost one TokenReview; the API server down: 503 for a token not yet reviewed, never let in', async (t) => {
  const s = await setUp(t);
  const a = s.token('node-a');
  const d = await s.ask(PATH_DISCOVERY, { node: 'node-a', token: a });
  t.is(d.status, 200);
  t.is(JSON.parse(d.lines[0]!).type, 'reset');
  for (let i = 1; i <= 10; i++) {
    const r = await s.ask(PATH_REPORTS, { node: 'node-a', token: a, body: report({ node: 'node-a', seq: i, start: i * 1000, end: i * 1000 + 1000 }) });
    t.is(r.status, 200, `report ${i}: ${r.error}`);
  }
  t.is(s.ctl.store.all()[0]?.received, 10);
  t.is((await s.ask(PATH_AGENT_TAP, { node: 'node-a', token: a })).status, 200);
  t.is(s.api.tokens.reviews, 1, 'one review for 12 requests');
  t.like(s.auth.state(), { mode: 'token', audience: 'mesh-agent-controller', reviews: 1, cacheHits: 11, verdictsCached: 1 });
  await s.stopApi();
  // Reviewed before: still served from the cache (bounded: VERDICT_TTL_MS).
  t.is((await s.ask(PATH_REPORTS, { node: 'node-a', token: a, body: report({ node: 'node-a', seq: 11, start: 11_000, end: 12_000 }) })).status, 200);
  const fresh = await s.ask(PATH_DISCOVERY, { node: 'node-b', token: s.token('node-b') });
  t.is(fresh.status, 503);
  t.regex(fresh.error ?? '', /the controller cannot check the agent's token now: TokenReview: .*; the agent retries/);
  t.is(s.auth.stats.refused.unavailable, 1);
});

test('the verdict cache is bounded in entries and in time, and a token past its exp is reviewed again', async (t) => {
  let now = 1_000_000;
  let reviews = 0;
  const auth = new AgentAuth({
    review: async () => {
      reviews++;
      return { authenticated: true, user: { username: 'system:serviceaccount:mesh-agent:mesh-agent-agent', extra: { 'authentication.kubernetes.io/node-name': ['n1'] } }, audiences: [CONTROLLER_AUDIENCE] };
    },
    agent: AGENT, ttlMs: 10_000, maxEntries: 3, now: () => now, log: quiet,
  });
  const jwt = (exp: number, n: number) => `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(JSON.stringify({ exp, n })).toString('base64url')}.y`;
  const far = now / 1000 + 3600;
  for (let i = 0; i < 5; i++) t.is(await auth.check(`Bearer ${jwt(far, i)}`, 'n1'), 'n1');
  t.is(reviews, 5);
  t.is(auth.state().verdictsCached, 3, 'the oldest went');
  await auth.check(`Bearer ${jwt(far, 4)}`, 'n1');
  t.is(reviews, 5, 'a kept verdict');
  await auth.check(`Bearer ${jwt(far, 0)}`, 'n1');
  t.is(reviews, 6, 'an evicted one is reviewed again');
  now += 10_001;
  await auth.check(`Bearer ${jwt(far, 4)}`, 'n1');
  t.is(reviews, 7, 'past the TTL');
  const soon = jwt(now / 1000 + 2, 9);
  await auth.check(`Bearer ${soon}`, 'n1');
  now += 2_000;
  await auth.check(`Bearer ${soon}`, 'n1');
  t.is(reviews, 9, 'past the token\'s exp, before the TTL: reviewed again');
  // Concurrent requests with one token (an agent's three streams at once): one review.
  const same = jwt(far, 10);
  await Promise.all([auth.check(`Bearer ${same}`, 'n1'), auth.check(`Bearer ${same}`, 'n1'), auth.check(`Bearer ${same}`, 'n1')]);
  t.is(reviews, 10);
});

test('a TokenReview answer without status.audiences (an authenticator that is not audience-aware) lets no agent in: 401, logged with the reason', async (t) => {
  const warnings: Array<Record<string, unknown>> = [];
  const auth = new AgentAuth({
    review: async () => ({ authenticated: true, user: { username: 'system:serviceaccount:mesh-agent:mesh-agent-agent', extra: { 'authentication.kubernetes.io/node-name': ['n1'] } } }),
    agent: AGENT, log: (_l, _m, f) => warnings.push(f ?? {}),
  });
  const jwt = `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(JSON.stringify({ n: 1 })).toString('base64url')}.y`;
  const e = await t.throwsAsync(auth.check(`Bearer ${jwt}`, 'n1'), { message: /the API server's TokenReview accepted the token without saying it is for audience mesh-agent-controller \(no status\.audiences\)/ });
  t.is((e as unknown as { status: number }).status, 401);
  t.is(auth.stats.refused.unauthenticated, 1);
  t.regex(String(warnings[0]?.reason), /not audience-aware/);
});

test('the agent\'s clients: without a token file refused with the controller\'s reason; the file written (as kubelet does), the next try gets in', async (t) => {
  const s = await setUp(t);
  const dir = testTempDir(t);
  const file = path.join(dir, 'mesh-agent-controller');
  const said: string[] = [];
  const auth = controllerBearer(file, (_l, m) => said.push(m));
  const store = new DiscoveryStore();
  const disc = new DiscoveryClient({ url: s.url, node: 'node-a', agentId: 'a1', store, auth, minBackoffMs: 20, maxBackoffMs: 100, log: quiet, onError: quiet });
  const rep = new ReportClient({ url: s.url, node: 'node-a', hub: new TelemetryHub({ workloads: { byIp: () => null } }), inventory: () => [], auth, intervalMs: 100, minBackoffMs: 20, maxBackoffMs: 100, log: quiet });
  t.teardown(async () => {
    disc.stop();
    await rep.stop();
  });
  disc.start();
  rep.start();
  // A report refused, not only the tap stream (either can be the link's last error; the stream's
  // refusal alone came before any report was made in a CI run on a loaded machine).
  let reportRefused = false;
  await waitFor(() => {
    reportRefused ||= /refused this agent's report \(HTTP 401\): no bearer token/.test(String(rep.state().lastError));
    return reportRefused && /refused the discovery stream \(HTTP 401\): no bearer token/.test(String(disc.status().lastError));
  }, 10_000);
  t.is(store.synced, false);
  t.true(rep.state().backlog > 0, 'the reports wait; none dropped as bad');
  t.is(rep.state().rejected, 0);
  t.is(said.length, 1, 'no file: said once');
  t.regex(said[0]!, /no controller token at .*mesh-agent-controller \(ENOENT\)/);
  fs.writeFileSync(file, s.token('node-a') + '\n');
  await waitFor(() => disc.state === 'synced' && rep.state().sent > 0 && s.ctl.relay.links().length === 1, 10_000);
  t.is(s.ctl.store.all()[0]?.node, 'node-a');
});

test('--agent-auth: token by default with an API server, none with --resources or nothing; token without an API server and unknown modes refused naming the fix', (t) => {
  t.is(agentAuthMode(undefined, { kind: 'kubernetes' }), 'token');
  t.is(agentAuthMode(undefined, { kind: 'files', path: 'x' }), 'none');
  t.is(agentAuthMode(undefined, { kind: 'off' }), 'none');
  t.is(agentAuthMode('none', { kind: 'kubernetes' }), 'none');
  t.throws(() => agentAuthMode('token', { kind: 'files', path: 'x' }), { message: /--agent-auth token asks the API server \(TokenReview\).*run the controller in a cluster or with --kubeconfig FILE, or pass --agent-auth none/ });
  t.throws(() => agentAuthMode('tls', { kind: 'kubernetes' }), { message: /--agent-auth "tls": expected token .* or none/ });
});
