// The CNI plugin's own token (src/cni/plugin-token.ts): asked of the stand-in API server with the
// agent's token (TokenRequest, over HTTP), with the install manifests' RBAC; renewed at half its
// life on a manual clock; the agent's token while none can be had, logged once with the fix.
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { keepChained, type PluginKubeconfig } from '../src/cli/cni-install.ts';
import { parseKubeconfig } from '../src/cni/kubeconfig.ts';
import { readPod } from '../src/cni/pod-read.ts';
import { PLUGIN_SERVICE_ACCOUNT, PLUGIN_TOKEN_SECONDS, PluginToken, renewAt, requestToken, TOKEN_RETRY_MAX_MS, TOKEN_RETRY_MIN_MS } from '../src/cni/plugin-token.ts';
import { LeanKubeApi } from '../src/k8s/kube-api.ts';
import { installManifests } from '../src/k8s/manifests.ts';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { until } from './helpers/until.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const NS = 'mesh-agent';
const AGENT = 'mesh-agent-agent';

async function setup(t: ExecutionContext, rbac = true) {
  // One manual clock for the token and the stand-in that mints it, on a whole second (the answer's
  // expirationTimestamp has seconds): with the real clock, a request that crossed a second boundary
  // after the test's clock was read moved "half its life" by a second (a flake under load).
  let now = Math.floor(Date.now() / 1000) * 1000;
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const api = await new SimApiServer({ now: clock.now }).start();
  t.teardown(() => api.close());
  if (rbac) api.applyAccess(installManifests());
  // What kubelet's projected token gives the install container: bound to its pod (valid through
  // every advance of the clock below: the tests age the plugin's token, not this one).
  const agentToken = api.tokens.mint({ namespace: NS, serviceAccount: AGENT, node: 'n1', pod: 'mesh-agent-agent-x1', expirationSeconds: 7 * 86_400, now: clock.now() });
  const client = (token: string) => new LeanKubeApi({ server: api.url, token, insecure: true });
  const logs: { level: string; msg: string }[] = [];
  const requests = () => api.requests.filter((r) => r.resource === 'serviceaccounts/token').length;
  const token = new PluginToken({
    request: () => requestToken(client(agentToken), NS, PLUGIN_SERVICE_ACCOUNT, PLUGIN_TOKEN_SECONDS, clock.now()),
    fallback: () => agentToken,
    serviceAccount: PLUGIN_SERVICE_ACCOUNT,
    namespace: NS,
    log: (level, msg) => logs.push({ level, msg }),
    now: clock.now,
  });
  return { api, agentToken, client, logs, clock, requests, token };
}

const subject = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8'));

test('the plugin\'s token is its own ServiceAccount\'s, bound to no pod, for 24 h; asked again only at half its life', async (t) => {
  const { token, requests, clock, agentToken } = await setup(t);
  t.true(await token.refresh(), 'the first token');
  t.true(token.own);
  const first = token.current();
  const c = subject(first);
  t.is(c.sub, `system:serviceaccount:${NS}:${PLUGIN_SERVICE_ACCOUNT}`);
  t.is(c['kubernetes.io'].pod, undefined, 'no boundObjectRef: it outlives the agent pod');
  t.is(c.exp - c.iat, PLUGIN_TOKEN_SECONDS);
  t.not(first, agentToken);
  t.is(requests(), 1);
  clock.advance(PLUGIN_TOKEN_SECONDS * 1000 / 2 - 1000);
  t.false(await token.refresh(), 'not yet due');
  t.is(requests(), 1, 'no request before half its life');
  clock.advance(1000);
  t.true(await token.refresh(), 'due at half its life');
  t.is(requests(), 2);
  t.not(token.current(), first);
});

test('requestToken reads the expiry the API server granted, and renewAt is half of it', async (t) => {
  const { client, agentToken, clock } = await setup(t);
  const issued = await requestToken(client(agentToken), NS, PLUGIN_SERVICE_ACCOUNT, 3600, clock.now());
  t.is(issued.expiresAt, clock.now() + 3_600_000, 'the answer\'s expirationTimestamp');
  t.is(renewAt(issued), issued.issuedAt + (issued.expiresAt - issued.issuedAt) / 2);
  await t.throwsAsync(requestToken(client(agentToken), NS, PLUGIN_SERVICE_ACCOUNT, 60), { message: /HTTP 422.*less than 10 minutes/ });
});

test('without the RBAC to ask for it, the plugin gets the agent\'s token, logged once with the fix; once granted, its own', async (t) => {
  const { api, token, logs, agentToken, clock } = await setup(t, false);
  t.false(await token.refresh());
  t.false(token.own);
  t.is(token.current(), agentToken, 'today\'s behaviour');
  t.is(logs.length, 1);
  t.is(logs[0]!.level, 'warn');
  t.regex(logs[0]!.msg, /cannot get a token for ServiceAccount mesh-agent\/mesh-agent-cni \(create .*HTTP 403: serviceaccounts "mesh-agent-cni" is forbidden: User "system:serviceaccount:mesh-agent:mesh-agent-agent" cannot create resource "serviceaccounts\/token".*\): the plugin's kubeconfig gets this container's own token instead.*re-apply `mesh-agent install`/);
  clock.advance(TOKEN_RETRY_MIN_MS);
  t.false(await token.refresh());
  t.is(logs.length, 1, 'the same reason is not logged every poll');
  api.applyAccess(installManifests());
  clock.advance(2 * TOKEN_RETRY_MIN_MS);
  t.true(await token.refresh(), 'the agent\'s token replaced by the plugin\'s own');
  t.true(token.own);
});

test('refused requests back off: 30 s, doubling to 10 minutes, one request each; a success resets it', async (t) => {
  const { api, token, requests, clock } = await setup(t, false);
  const gaps: number[] = [];
  let asked = 0;
  // Polled every 30 s for 2 hours, as --watch does: count when a request went out.
  let last = clock.now();
  for (let s = 0; s < 2 * 3600; s += 30) {
    await token.refresh();
    if (requests() > asked) {
      asked = requests();
      if (asked > 1) gaps.push(clock.now() - last);
      last = clock.now();
    }
    clock.advance(30_000);
  }
  t.deepEqual(gaps.slice(0, 6), [30_000, 60_000, 120_000, 240_000, 480_000, TOKEN_RETRY_MAX_MS]);
  t.true(gaps.slice(5).every((g) => g === TOKEN_RETRY_MAX_MS), `capped: ${gaps.join(' ')}`);
  t.is(asked, 6 + Math.floor((2 * 3600_000 - (30 + 60 + 120 + 240 + 480) * 1000) / TOKEN_RETRY_MAX_MS), 'about 16 requests in 2 hours, not 240');
  api.applyAccess(installManifests());
  clock.advance(TOKEN_RETRY_MAX_MS);
  t.true(await token.refresh());
  t.is(token.retryAt, 0, 'a success resets the backoff');
});

test('the backoff counts from when the request went out: a refusal that took time does not push the retry a poll later', async (t) => {
  const { token, clock, requests } = await setup(t, false);
  const started = clock.now();
  // The refusal arrives 200 ms after the request: the clock moves while it is in flight.
  const pending = token.refresh();
  clock.advance(200);
  await pending;
  t.is(token.retryAt, started + TOKEN_RETRY_MIN_MS);
  clock.advance(TOKEN_RETRY_MIN_MS - 200); // the next 30 s poll
  await token.refresh();
  t.is(requests(), 2, 'asked again at the next poll');
});

test('a poll that comes a little before the retry time by the wall clock retries: a poll\'s timer runs early by Date.now as much as its work before the refresh varies', async (t) => {
  const { token, clock, requests } = await setup(t, false);
  await token.refresh();
  t.is(requests(), 1);
  // setInterval schedules the next poll from the loop's time before this one's file checks, and
  // the request's mark is read after them: a 200 ms interval with a varying synchronous read
  // before Date.now() came 7 of 39 times up to 15 ms early on this machine (at load).
  clock.advance(TOKEN_RETRY_MIN_MS - 15);
  await token.refresh();
  t.is(requests(), 2, 'asked again at the next poll, not one poll (30 s) later');
  clock.advance(TOKEN_RETRY_MIN_MS);
  await token.refresh();
  t.is(requests(), 2, 'the doubled wait (60 s) is still kept');
});

test('a renewal that fails keeps the plugin\'s token while it is valid, then gives the agent\'s', async (t) => {
  const { api, token, logs, clock, agentToken } = await setup(t);
  await token.refresh();
  const own = token.current();
  await api.close(); // the API server down
  clock.advance(PLUGIN_TOKEN_SECONDS * 1000 / 2);
  t.false(await token.refresh(), 'still its own token');
  t.is(token.current(), own);
  t.regex(logs.at(-1)!.msg, /ECONNREFUSED.*the plugin keeps its token until/);
  clock.advance(PLUGIN_TOKEN_SECONDS * 1000 / 2);
  t.true(await token.refresh(), 'expired: changed to the agent\'s');
  t.is(token.current(), agentToken);
});

test('--watch\'s poll renews the token when due and rewrites the kubeconfig with it; the plugin\'s token reads pods and nothing else', async (t) => {
  const { api, token, clock, client, agentToken } = await setup(t);
  const root = testTempDir(t);
  const p = { confDir: path.join(root, 'net.d'), binDir: path.join(root, 'bin'), agentSocket: path.join(root, 'cni.sock'), stateFile: path.join(root, 'state.json') };
  fs.mkdirSync(p.confDir);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'calico' }] }));
  const sa = path.join(root, 'sa');
  fs.mkdirSync(sa);
  fs.writeFileSync(path.join(sa, 'token'), agentToken);
  await token.refresh();
  const k: PluginKubeconfig = { hostPath: '/etc/cni/net.d/kc', herePath: path.join(p.confDir, 'kc'), serviceAccountDir: sa, server: api.url, token: () => token.current(), refresh: () => token.refresh() };
  const stop = keepChained({ ...p, kubeconfig: k }, 50);
  t.teardown(stop);
  const read = () => (fs.existsSync(k.herePath) ? parseKubeconfig(fs.readFileSync(k.herePath, 'utf8'), k.herePath).token : '');
  await until(read, (tok) => tok === token.current(), 'the plugin\'s token in its kubeconfig');
  const first = read();
  clock.advance(PLUGIN_TOKEN_SECONDS * 1000 / 2);
  await until(read, (tok) => tok !== first, 'the renewed token in the kubeconfig');
  stop();
  // What the token on the host may do: get a pod; not list them, not read a namespace, not mint tokens.
  api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'b', namespace: 'a' }, spec: { containers: [{ name: 'c', image: 'i' }] } });
  const plugin = client(read());
  t.is((await plugin.list('/api/v1/namespaces/a/pods', { fieldSelector: 'metadata.name=b' }).catch((e) => e)).statusCode, 403, 'list');
  t.is((await plugin.list('/api/v1/namespaces', {}).catch((e) => e)).statusCode, 403, 'namespaces');
  t.is((await requestToken(plugin, NS, PLUGIN_SERVICE_ACCOUNT).catch((e) => e)).statusCode, 403, 'TokenRequest');
  t.like(await readPod(k.herePath, { namespace: 'a', name: 'b' }), { kind: 'read', meshed: false }, 'the plugin\'s own read, with its kubeconfig');
  // The agent pod deleted (a rolling update): its token is refused, the plugin's still reads.
  api.tokens.revokePod(NS, 'mesh-agent-agent-x1');
  t.is((await requestToken(client(agentToken), NS, PLUGIN_SERVICE_ACCOUNT).catch((e) => e)).statusCode, 401, 'the agent\'s token');
  t.like(await readPod(k.herePath, { namespace: 'a', name: 'b' }), { kind: 'read' }, 'after the agent pod is gone');
  const got = api.requests.filter((r) => r.resource === 'pods' && r.user?.endsWith(':mesh-agent-cni'));
  t.deepEqual(got.map((r) => r.status), [403, 200, 200]);
});
