// What a caller without an agent's token can cost the controller (docs/controller.md "Who can
// reach it"): the review gate's bounds (reviews in flight per peer address and overall, trusted
// peers past the overall one), AgentAuth's use of it with a review the test holds and answers by
// hand (the 5th from one peer refused without a review and not cached, another peer reviewed),
// tokens that are no JWT refused without a review, junk verdicts kept apart from agents', the
// refusal log once a minute per peer and cause; then over real HTTP/2 on loopback from two peer
// addresses (127.0.0.2, 127.0.0.3: all of 127/8 is local), and the agent's real report client
// keeping its report on the 503 and getting in on its retry.
import test from 'ava';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { AgentAuth, AgentAuthError, CONTROLLER_AUDIENCE, REFUSAL_LOG_INTERVAL_MS } from '../src/controller/agent-auth.ts';
import { ControllerServer } from '../src/controller/server.ts';
import { PATH_REPORTS, PATH_STATUS } from '../src/controller/protocol.ts';
import { requestJson } from '../src/controller/client.ts';
import { NODE_NAME_EXTRA, bearerToken, notAJwt, type ReviewStatus } from '../src/identity/authorize.ts';
import { ReviewBusyError, ReviewGate } from '../src/identity/review-gate.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { report } from './helpers/reports.ts';
import { waitFor } from './helpers/until.ts';

const AGENT = { namespace: 'mesh-agent', name: 'mesh-agent-agent' };
const quiet = () => {};
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
/** A JWT-shaped token (what the shape check lets through); distinct claims make distinct tokens. */
const jwt = (claims: object) => `${b64({ alg: 'RS256', kid: 'k1' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}.c2lnbmF0dXJl`;
const agentReview = (node: string): ReviewStatus => ({ authenticated: true, user: { username: `system:serviceaccount:${AGENT.namespace}:${AGENT.name}`, extra: { [NODE_NAME_EXTRA]: [node] } }, audiences: [CONTROLLER_AUDIENCE] });

/** Reviews the test answers by hand: each call waits until answered. */
function heldReviews() {
  const calls: Array<{ token: string; answer: (st: ReviewStatus) => void }> = [];
  return {
    calls,
    review: (token: string) => new Promise<ReviewStatus>((answer) => calls.push({ token, answer })),
    until: (n: number) => waitFor(() => calls.length >= n, 10_000),
  };
}

test('ReviewGate: the 5th review in flight from one peer address is refused without running; another peer runs; one done, the peer runs again', async (t) => {
  const gate = new ReviewGate();
  const held: Array<() => void> = [];
  let ran = 0;
  const review = () => {
    ran++;
    return new Promise<void>((r) => held.push(r));
  };
  const first = [1, 2, 3, 4].map(() => gate.run('10.0.0.5', review));
  t.is(ran, 4);
  await t.throwsAsync(gate.run('10.0.0.5', review), { instanceOf: ReviewBusyError, message: '4 token reviews for 10.0.0.5 are under way, at most 4 per peer address' });
  await t.throwsAsync(gate.run('::ffff:10.0.0.5', review), { instanceOf: ReviewBusyError }, 'the IPv4-mapped form is the same peer');
  t.is(ran, 4, 'neither ran');
  const other = gate.run('10.0.0.6', review);
  t.is(ran, 5);
  t.like(gate.state(), { perPeer: 4, overall: 64, inFlight: 5, peersInFlight: 2, busy: { peer: 2, overall: 0 } });
  held.shift()!();
  await first[0];
  const again = gate.run('10.0.0.5', review);
  t.is(ran, 6);
  for (const r of held) r();
  await Promise.all([...first, other, again]);
  t.like(gate.state(), { inFlight: 0, peersInFlight: 0 });
  // A review that fails frees its slot too.
  await t.throwsAsync(gate.run('10.0.0.5', () => Promise.reject(new Error('API server down'))), { message: 'API server down' });
  t.like(gate.state(), { inFlight: 0, peersInFlight: 0 });
});

test('ReviewGate: over the overall bound a new peer is refused, a trusted one (seen with an agent\'s token) is not; trust is bounded, least recent out', async (t) => {
  const gate = new ReviewGate({ perPeer: 2, overall: 4, trustedPeers: 2 });
  const held: Array<() => void> = [];
  const review = () => new Promise<void>((r) => held.push(r));
  const running = ['10.1.0.1', '10.1.0.1', '10.1.0.2', '10.1.0.2'].map((p) => gate.run(p, review));
  await t.throwsAsync(gate.run('10.1.0.3', review), { instanceOf: ReviewBusyError, message: '4 token reviews are under way, at most 4 for callers not yet seen with an agent\'s token' });
  gate.trust('10.1.0.3');
  running.push(gate.run('10.1.0.3', review));
  t.is(held.length, 5, 'the trusted peer is reviewed past the overall bound');
  await t.throwsAsync(gate.run('10.1.0.1', review), { message: /for 10\.1\.0\.1 .* at most 2 per peer address/ }, 'its own bound still holds');
  gate.trust('10.1.0.4');
  gate.trust('10.1.0.5');
  await t.throwsAsync(gate.run('10.1.0.3', review), { message: /at most 4 for callers not yet seen/ }, 'pushed out of the trusted peers by two more recent ones');
  t.like(gate.state(), { inFlight: 5, trustedPeers: 2, busy: { peer: 1, overall: 2 } });
  for (const r of held) r();
  await Promise.all(running);
});

test('AgentAuth: the 5th concurrent review from one peer is 503 with retry-after, the API server not asked and nothing cached; another peer is reviewed', async (t) => {
  const h = heldReviews();
  const auth = new AgentAuth({ review: h.review, agent: AGENT, log: quiet });
  const tokens = [0, 1, 2, 3, 4, 5].map((n) => jwt({ n }));
  const four = tokens.slice(0, 4).map((tk) => auth.check(`Bearer ${tk}`, 'n1', '127.0.0.2'));
  await h.until(4);
  const e = await t.throwsAsync(auth.check(`Bearer ${tokens[4]}`, 'n1', '127.0.0.2'), { instanceOf: AgentAuthError });
  t.is(e?.status, 503);
  t.is(e?.retryAfterS, 1);
  t.regex(e?.message ?? '', /reviewing too many tokens now \(4 token reviews for 127\.0\.0\.2 are under way, at most 4 per peer address\); not reviewed, retry after 1 s/);
  t.is(h.calls.length, 4, 'the API server was not asked');
  const other = auth.check(`Bearer ${tokens[5]}`, 'n2', '127.0.0.3');
  await h.until(5);
  t.is(h.calls[4]!.token, tokens[5]);
  for (const c of h.calls) c.answer(agentReview(c.token === tokens[5] ? 'n2' : 'n1'));
  t.deepEqual(await Promise.all([...four, other]), ['n1', 'n1', 'n1', 'n1', 'n2']);
  // The refusal by the bound was no verdict: the same token is reviewed now, and let in.
  const later = auth.check(`Bearer ${tokens[4]}`, 'n1', '127.0.0.2');
  await h.until(6);
  h.calls[5]!.answer(agentReview('n1'));
  t.is(await later, 'n1');
  t.like(auth.state(), { reviews: 6, verdictsCached: 6, refusalsCached: 0, refused: { busy: 1, unavailable: 0 }, reviewGate: { inFlight: 0, busy: { peer: 1, overall: 0 } } });
});

test('AgentAuth: junk tokens refused by the review do not push an agent\'s accepted verdict out', async (t) => {
  const agentToken = jwt({ agent: 'n1' });
  let reviews = 0;
  const auth = new AgentAuth({
    review: async (token) => {
      reviews++;
      return token === agentToken ? agentReview('n1') : { authenticated: false, error: 'invalid bearer token' };
    },
    agent: AGENT, maxEntries: 3, log: quiet,
  });
  t.is(await auth.check(`Bearer ${agentToken}`, 'n1', '10.0.0.1'), 'n1');
  for (let i = 0; i < 10; i++) await t.throwsAsync(auth.check(`Bearer ${jwt({ junk: i })}`, 'n1', '10.9.9.9'), { message: /not accepted by the API server's TokenReview: invalid bearer token/ });
  t.is(reviews, 11);
  t.is(await auth.check(`Bearer ${agentToken}`, 'n1', '10.0.0.1'), 'n1');
  t.is(reviews, 11, 'the agent\'s verdict is still cached');
  t.like(auth.state(), { verdictsCached: 1, refusalsCached: 3, cacheHits: 1 });
  // A refused verdict is cached too (within its own bound): the same junk again costs nothing.
  await t.throwsAsync(auth.check(`Bearer ${jwt({ junk: 9 })}`, 'n1', '10.9.9.9'));
  t.is(reviews, 11);
});

test('a token that is no JWT is 401 naming why, without a review; the shape check lets JWTs through', async (t) => {
  let reviews = 0;
  const auth = new AgentAuth({ review: async () => (reviews++, agentReview('n1')), agent: AGENT, log: quiet });
  const junk = ['made-up', 'a.b', 'a.b.c.d', 'a..c', `${b64({ alg: 'none' })}.e30.s!g`, `${b64('a string')}.e30.c2ln`, 'bm90IGpzb24.e30.c2ln', `${b64([1])}.e30.c2ln`];
  for (const tk of junk) {
    const e = await t.throwsAsync(auth.check(`Bearer ${tk}`, 'n1', '10.0.0.9'), { instanceOf: AgentAuthError }, tk);
    t.is(e?.status, 401, tk);
    t.regex(e?.message ?? '', /^the bearer token is not a JWT \((not three base64url parts joined by dots|its first part is not a JSON object)\), so it is no ServiceAccount token and the API server was not asked; the agent sends its projected ServiceAccount token \(audience mesh-agent-controller/, tk);
  }
  t.is(reviews, 0, 'the API server was never asked');
  t.like(auth.state(), { refusalsCached: 0, refused: { unauthenticated: junk.length } });
  t.is(notAJwt(jwt({ n: 1 })), null);
  // One parse of the header for the controller and the identity service; the scheme in any case (RFC 9110 §11.1).
  for (const [h, tk] of [['Bearer abc', 'abc'], ['bearer abc', 'abc'], ['BEARER abc', 'abc'], ['Bearer a b', undefined], ['Basic abc', undefined], [undefined, undefined]] as const) t.is(bearerToken(h), tk, String(h));
  t.is(await auth.check(`Bearer ${jwt({ n: 1 })}`, 'n1', '10.0.0.9'), 'n1');
  t.is(reviews, 1);
});

test('AgentAuth: refusals logged once a minute per peer address and cause, the next line with the count held back; status counts every one', async (t) => {
  let now = 1_000_000;
  const lines: Array<Record<string, unknown>> = [];
  const auth = new AgentAuth({ review: async () => agentReview('n1'), agent: AGENT, now: () => now, log: (_l, _m, f) => lines.push(f ?? {}) });
  // Made-up node names from one address: one line, whatever the header says.
  for (let i = 0; i < 5; i++) await t.throwsAsync(auth.check(undefined, `node-${i}`, '10.0.0.7'), { message: /no bearer token/ });
  t.is(lines.length, 1);
  t.deepEqual(Object.keys(lines[0]!).sort(), ['node', 'peer', 'reason', 'status']);
  t.like(lines[0], { node: 'node-0', peer: '10.0.0.7', status: 401 });
  await t.throwsAsync(auth.check(undefined, 'node-a', '10.0.0.8'));
  t.is(lines.length, 2, 'another peer: its own line');
  await t.throwsAsync(auth.check(`Bearer ${jwt({ n: 1 })}`, 'n2', '10.0.0.7'), { message: /bound to node n1, not "n2"/ });
  t.is(lines.length, 3, 'another cause: its own line');
  t.like(lines[2], { node: 'n2', peer: '10.0.0.7', status: 403 });
  now += REFUSAL_LOG_INTERVAL_MS - 1;
  await t.throwsAsync(auth.check(undefined, 'node-x', '10.0.0.7'));
  t.is(lines.length, 3, 'still within the minute');
  now += 1;
  await t.throwsAsync(auth.check(undefined, 'node-y', '10.0.0.7'));
  t.is(lines.length, 4);
  t.like(lines[3], { node: 'node-y', peer: '10.0.0.7', status: 401, suppressed: 5 });
  t.like(auth.state(), { refused: { unauthenticated: 8, forbidden: 1 }, lastRefusal: { node: 'node-y', peer: '10.0.0.7', status: 401 } });
});

/** An HTTP/2 session to the controller on 127.0.0.1 from `local`, another loopback address. */
function from(local: string, port: number, t: any): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => net.connect({ host: '127.0.0.1', port, localAddress: local }) });
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  return s;
}

/** A report with `token` for `node`: its status, retry-after and error. */
function send(s: http2.ClientHttp2Session, token: string, node: string, seq: number) {
  return new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve, reject) => {
    const req = s.request({ ':method': 'POST', ':path': PATH_REPORTS, 'mesh-node': node, authorization: `Bearer ${token}`, 'content-type': 'application/json' });
    let status = 0;
    let retryAfter: string | undefined;
    let body = '';
    req.on('response', (h) => {
      status = Number(h[':status']);
      retryAfter = h['retry-after'] as string | undefined;
    });
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('close', () => resolve({ status, retryAfter, body }));
    req.on('error', reject);
    req.end(JSON.stringify(report({ node, seq, start: seq * 1000, end: seq * 1000 + 1000 })));
  });
}

test('over real HTTP/2: 4 reviews held for 127.0.0.2, its 5th gets 503 with retry-after at once; 127.0.0.3 is reviewed; counted in /v1/status', async (t) => {
  const h = heldReviews();
  const auth = new AgentAuth({ review: h.review, agent: AGENT, log: quiet });
  const ctl = new ControllerServer({ log: quiet, agentAuth: auth });
  const { port } = await ctl.listen('127.0.0.1', 0);
  t.teardown(() => ctl.close());
  const two = from('127.0.0.2', port, t);
  const three = from('127.0.0.3', port, t);
  const nodeOf = new Map<string, string>();
  const tokenFor = (n: number) => {
    const tk = jwt({ n });
    nodeOf.set(tk, `node-${n}`);
    return tk;
  };
  const held = [1, 2, 3, 4].map((n) => send(two, tokenFor(n), `node-${n}`, 1));
  await h.until(4);
  const busy = await send(two, jwt({ n: 5 }), 'node-5', 1);
  t.is(busy.status, 503, busy.body);
  t.is(busy.retryAfter, '1');
  t.regex(JSON.parse(busy.body).error, /reviewing too many tokens now \(4 token reviews for 127\.0\.0\.2 are under way, at most 4 per peer address\)/);
  t.is(h.calls.length, 4, 'the 5th token was not reviewed');
  const other = send(three, tokenFor(6), 'node-6', 1);
  await h.until(5);
  const st = await requestJson(`http://127.0.0.1:${port}`, 'GET', PATH_STATUS);
  t.like(st.agentAuth, { reviews: 5, refused: { busy: 1 }, lastRefusal: { peer: '127.0.0.2', node: 'node-5', status: 503 }, reviewGate: { inFlight: 5, peersInFlight: 2, busy: { peer: 1, overall: 0 } } });
  for (const c of h.calls) c.answer(agentReview(nodeOf.get(c.token)!));
  t.deepEqual((await Promise.all([...held, other])).map((r) => r.status), [200, 200, 200, 200, 200]);
  t.is(ctl.store.all().length, 5);
});

test('the agent\'s report client keeps its report on the gate\'s 503 and gets in on its retry once the slot is free', async (t) => {
  const h = heldReviews();
  // One review per peer: a caller at the agent's own address (a host-network pod) holds it.
  const auth = new AgentAuth({ review: h.review, agent: AGENT, gate: new ReviewGate({ perPeer: 1 }), log: quiet });
  const ctl = new ControllerServer({ log: quiet, agentAuth: auth });
  const { port } = await ctl.listen('127.0.0.1', 0);
  t.teardown(() => ctl.close());
  const url = `http://127.0.0.1:${port}`;
  const hold = send(from('127.0.0.1', port, t), jwt({ junk: 1 }), 'node-a', 1);
  await h.until(1);
  const token = jwt({ agent: 'node-a' });
  const rep = new ReportClient({ url, node: 'node-a', hub: new TelemetryHub({ workloads: { byIp: () => null } }), inventory: () => [], auth: () => ({ authorization: `Bearer ${token}` }), intervalMs: 100, minBackoffMs: 20, maxBackoffMs: 100, log: quiet });
  t.teardown(() => rep.stop());
  rep.start();
  await waitFor(() => /HTTP 503/.test(String(rep.state().lastError)) && rep.state().backlog > 0, 10_000);
  t.is(h.calls.length, 1, 'the agent\'s token is not reviewed while the slot is held');
  t.is(rep.state().rejected, 0, 'no report dropped as bad');
  h.calls[0]!.answer({ authenticated: false, error: 'invalid bearer token' });
  t.is((await hold).status, 401);
  await h.until(2);
  t.is(h.calls[1]!.token, token);
  h.calls[1]!.answer(agentReview('node-a'));
  await waitFor(() => rep.state().sent > 0 && ctl.store.all()[0]?.node === 'node-a', 10_000);
  t.true(auth.state().refused.busy > 0);
});
