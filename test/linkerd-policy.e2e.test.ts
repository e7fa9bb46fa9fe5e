// Linkerd's policy resources on a simulated 2-node cluster with the mesh as installed (the
// controller watching the stand-in API server, an agent per node), the real kernel
// (docs/policy.md, "Linkerd's policy resources"): a Server selecting api's named port `http`, an
// AuthorizationPolicy requiring a MeshTLSAuthentication that names ServiceAccount web. web's
// pod on the same node (outbound proxy) and another node (mTLS tunnel) gets in; bot's pod and an
// unmeshed client do not; the port no Server selects keeps the default policy. Then the
// authentication is edited to name bot, and the decisions follow. An HTTPRoute attached to the
// Server with its own AuthorizationPolicy then decides request by request, on the same node and
// through the tunnel, and a Linkerd HTTPRoute (policy.linkerd.io) with queryParams by each request's
// query. `diagnostics authz` names the Server and the AuthorizationPolicy. A second Server on the
// echo port with a ServerAuthorization for web, then both Servers in audit mode: would-be-denied
// clients get through, counted under authz default/audit.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import { LINKERD_HTTPROUTE_RESOURCE, LINKERD_POLICY_RESOURCES, ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let api: SimPod;
let web: SimPod;
let bot: SimPod;
let far: SimPod;
let ingress: SimPod;
const children: ChildProcess[] = [];

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: these tests build network namespaces, cgroups, nftables rules and load BPF; run them as root (sudo ./dev test)');
  return { cluster, mesh };
}

const linkerd = (kind: string, name: string, spec: object, apiVersion = 'policy.linkerd.io/v1alpha1') => ({ apiVersion, kind, metadata: { name, namespace: NS }, spec });
const authn = (sa: string) => linkerd('MeshTLSAuthentication', 'api-clients', { identities: [`${sa}.${NS}.serviceaccount.identity.linkerd.cluster.local`] });

async function http(from: SimPod, to: SimPod, p: string): Promise<string> {
  const r = await from.exec('curl', ['-s', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${to.ip}:8080${p}`], { timeoutMs: 15_000 });
  return r.stdout;
}

async function tcpOk(from: SimPod, to: SimPod): Promise<boolean> {
  return (await from.exec(process.execPath, [TOOLS_PATH, 'tcp-client', '--connect', `${to.ip}:7000`, '--send', 'x', '--timeout-ms', '5000'], { timeoutMs: 15_000 })).code === 0;
}

const nodeOf = (p: SimPod) => need().cluster.nodes.find((n) => n.pods().includes(p))!;

test.before(async () => {
  if (process.getuid?.() !== 0) throw new Error('the cluster tests need root, BPF and nftables; run the suite as root: sudo ./dev test');
  cluster = await createCluster({ nodes: 2 });
  for (const r of [...ROUTE_RESOURCES, ...LINKERD_POLICY_RESOURCES, LINKERD_HTTPROUTE_RESOURCE]) cluster.api.register(r);
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  api = await cluster.addPod(0, { deployment: 'api', namespace: NS, serviceAccountName: 'api', labels: { app: 'api' }, ports: [{ name: 'http', containerPort: 8080 }, { name: 'echo', containerPort: 7000 }] });
  web = await cluster.addPod(0, { deployment: 'web', namespace: NS, serviceAccountName: 'web' });
  bot = await cluster.addPod(0, { deployment: 'bot', namespace: NS, serviceAccountName: 'bot' });
  far = await cluster.addPod(1, { deployment: 'far', namespace: NS, serviceAccountName: 'web' });
  ingress = await cluster.addPod(1, { name: 'ingress', namespace: NS, annotations: { 'mesh-agent.io/inject': 'disabled' } });
  const b = api.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'api', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const e = api.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', '--port', '7000']);
  children.push(b, e);
  await new JsonLines(b).waitFor((o) => o.listening, 30_000, 'api listening');
  await new JsonLines(e).waitFor((o) => o.listening, 10_000, 'api echo listening');
  cluster.apply(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 'http', proxyProtocol: 'HTTP/1' }, 'policy.linkerd.io/v1beta3'));
  cluster.apply(authn('web'));
  cluster.apply(linkerd('AuthorizationPolicy', 'api-http', {
    targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' },
    requiredAuthenticationRefs: [{ group: 'policy.linkerd.io', kind: 'MeshTLSAuthentication', name: 'api-clients' }],
  }));
  await cluster.settled();
  mesh = await startMesh(cluster, { reportIntervalMs: 1000 });
  await mesh.waitAgents((s, n) => n.index !== 0 || (s.inbound?.pods.find((p: any) => p.name === api.name)?.servers ?? []).length > 0, 'the Server at api\'s agent');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

test.serial('a Server with an AuthorizationPolicy and a MeshTLSAuthentication: web in (same node and through the tunnel), bot and an unmeshed client out; the port no Server selects keeps the default policy', async (t) => {
  need();
  t.is(await http(web, api, '/ok'), '200', 'web, same node: the outbound proxy');
  t.is(await http(far, api, '/ok'), '200', 'web, another node: the tunnel\'s verified identity');
  t.is(await http(bot, api, '/ok'), '403', 'bot: no AuthorizationPolicy admits it');
  t.is(await http(ingress, api, '/ok'), '403', 'an unmeshed client has no identity');
  t.true(await tcpOk(bot, api), 'port 7000: no Server selects it, all-unauthenticated decides');
  t.true(await tcpOk(ingress, api));
  const m = await mesh!.agentMetrics(nodeOf(api));
  t.regex(m, /inbound_http_authz_allow_total\{[^}]*srv_group="policy.linkerd.io",srv_kind="server",srv_name="api-http"[^}]*authz_group="policy.linkerd.io",authz_kind="authorizationpolicy",authz_name="api-http"[^}]*\} [1-9]/);
  t.regex(m, /inbound_http_authz_deny_total\{[^}]*srv_name="api-http"[^}]*client_id="spiffe:\/\/cluster.local\/ns\/shop\/sa\/bot"\} [1-9]/);
  const st = (await mesh!.agentStatus(nodeOf(api))).inbound.pods.find((p: any) => p.name === api.name);
  t.true(st.failsClosed, 'a pod a Server selects fails closed');
});

test.serial('diagnostics authz names the Server and the AuthorizationPolicy that decide', async (t) => {
  const r = await mesh!.cli(['diagnostics', 'authz', `pod/${api.name}`, '-n', NS, '--controller', mesh!.controllerAddr]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /decided by: +Server shop\/api-http on port 8080: AuthorizationPolicies api-http; other ports: its default policy all-unauthenticated/);
  t.regex(r.stdout, /Server shop\/api-http: port http \(8080\), HTTP\/1, accessPolicy deny\n {4}AuthorizationPolicy api-http: shop\/web/);
});

test.serial('the MeshTLSAuthentication edited to name bot: bot gets in, web no longer does', async (t) => {
  need().cluster.apply(authn('bot'));
  await until(() => http(bot, api, '/ok'), (c) => c === '200', 'bot admitted', { ms: 20_000 });
  t.is(await http(web, api, '/ok'), '403');
  t.is(await http(far, api, '/ok'), '403');
});

test.serial('an HTTPRoute attached to the Server, with an AuthorizationPolicy of its own: requests matching it pass for its clients and the Server\'s, anything else is refused, on the same node and through the tunnel', async (t) => {
  const { cluster } = need();
  cluster.apply({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'public', namespace: NS },
    spec: { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/public' }, method: 'GET' }] }] },
  });
  cluster.apply(linkerd('AuthorizationPolicy', 'public-web', {
    targetRef: { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'public' },
    requiredAuthenticationRefs: [{ group: '', kind: 'ServiceAccount', name: 'web' }],
  }));
  await until(() => http(web, api, '/public/a'), (c) => c === '200', 'web admitted on the route', { ms: 20_000 });
  t.is(await http(web, api, '/ok'), '403', 'web: only the route its policy targets');
  t.is(await http(far, api, '/public/a'), '200', 'web through the tunnel, decided per request');
  t.is(await http(far, api, '/ok'), '403');
  t.is(await http(bot, api, '/public/a'), '200', 'bot: the Server\'s own policy applies to its routes');
  t.is(await http(bot, api, '/ok'), '403', 'bot: a request no route matches');
  t.is(await http(web, api, '/publicity'), '403', 'PathPrefix is element-wise');
  const m = await mesh!.agentMetrics(nodeOf(api));
  t.regex(m, /inbound_http_authz_allow_total\{[^}]*srv_name="api-http"[^}]*route_group="gateway.networking.k8s.io",route_kind="httproute",route_name="public",authz_group="policy.linkerd.io",authz_kind="authorizationpolicy",authz_name="public-web"[^}]*\} [1-9]/);
});

test.serial('a Linkerd HTTPRoute with queryParams: its AuthorizationPolicy allows a request by its query, on the same node and through the tunnel', async (t) => {
  const { cluster } = need();
  cluster.apply(linkerd('HTTPRoute', 'reports', {
    parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: 'api-http' }],
    rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/reports' }, queryParams: [{ name: 'format', value: 'csv' }] }] }],
  }, 'policy.linkerd.io/v1beta3'));
  cluster.apply(linkerd('AuthorizationPolicy', 'reports-web', {
    targetRef: { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'reports' },
    requiredAuthenticationRefs: [{ group: '', kind: 'ServiceAccount', name: 'web' }],
  }));
  await until(() => http(web, api, '/reports/q1?format=csv'), (c) => c === '200', 'web admitted on the route by its query', { ms: 20_000 });
  t.is(await http(web, api, '/reports/q1?format=pdf'), '403', 'another value');
  t.is(await http(web, api, '/reports/q1'), '403', 'no query');
  t.is(await http(far, api, '/reports/q1?format=csv'), '200', 'through the tunnel');
  t.is(await http(far, api, '/reports/q1?format=pdf'), '403');
  t.is(await http(web, api, '/public/a'), '200', 'the other route still stands');
  const m = await mesh!.agentMetrics(nodeOf(api));
  t.regex(m, /inbound_http_authz_allow_total\{[^}]*srv_name="api-http"[^}]*route_group="policy.linkerd.io",route_kind="httproute",route_name="reports",authz_group="policy.linkerd.io",authz_kind="authorizationpolicy",authz_name="reports-web"[^}]*\} [1-9]/);
});

const echoServer = (accessPolicy: string) => {
  const o = linkerd('Server', 'api-echo', { podSelector: { matchLabels: { app: 'api' } }, port: 'echo', proxyProtocol: 'opaque', accessPolicy }, 'policy.linkerd.io/v1beta3');
  return { ...o, metadata: { ...o.metadata, labels: { tier: 'echo' } } };
};

test.serial('a ServerAuthorization (v1beta1) selecting a second Server by its labels, for the echo port: web in (same node and through the tunnel), bot and an unmeshed client out, counted as authz_kind="serverauthorization"', async (t) => {
  const { cluster } = need();
  cluster.apply(echoServer('deny'));
  // By the Server's labels: the controller's reflector keeps a Server's labels for this.
  cluster.apply(linkerd('ServerAuthorization', 'echo-web', { server: { selector: { matchLabels: { tier: 'echo' } } }, client: { meshTLS: { serviceAccounts: [{ name: 'web' }] } } }, 'policy.linkerd.io/v1beta1'));
  await until(() => tcpOk(bot, api), (ok) => !ok, 'bot refused on the echo port once the Server selects it', { ms: 20_000 });
  t.true(await tcpOk(web, api), 'web, same node');
  t.true(await tcpOk(far, api), 'web, another node: the tunnel\'s verified identity');
  t.false(await tcpOk(ingress, api), 'unmeshed: no identity');
  const m = await mesh!.agentMetrics(nodeOf(api));
  t.regex(m, /inbound_tcp_authz_allow_total\{[^}]*srv_name="api-echo"[^}]*authz_group="policy.linkerd.io",authz_kind="serverauthorization",authz_name="echo-web"[^}]*\} [1-9]/);
  t.regex(m, /inbound_tcp_authz_deny_total\{[^}]*srv_name="api-echo"[^}]*client_id="spiffe:\/\/cluster.local\/ns\/shop\/sa\/bot"\} [1-9]/);
  const r = await mesh!.cli(['diagnostics', 'authz', `pod/${api.name}`, '-n', NS, '--controller', mesh!.controllerAddr]);
  t.regex(r.stdout, /Server shop\/api-echo: port echo \(7000\), opaque, accessPolicy deny\n {4}ServerAuthorization echo-web: shop\/web/);
});

test.serial('accessPolicy audit: what no authorization allows passes (TCP and an HTTPRoute\'s requests), counted as authz_kind="default",authz_name="audit"; what one allows keeps its label; a request matching no route is still refused', async (t) => {
  const { cluster } = need();
  cluster.apply(echoServer('audit'));
  cluster.apply(linkerd('Server', 'api-http', { podSelector: { matchLabels: { app: 'api' } }, port: 'http', proxyProtocol: 'HTTP/1', accessPolicy: 'audit' }, 'policy.linkerd.io/v1beta3'));
  await until(() => tcpOk(bot, api), (ok) => ok, 'bot let through on the echo port in audit mode', { ms: 20_000 });
  await until(() => http(ingress, api, '/public/a'), (c) => c === '200', 'an unmeshed client let through on the route in audit mode', { ms: 20_000 });
  t.true(await tcpOk(ingress, api), 'unmeshed: let through too');
  t.true(await tcpOk(web, api));
  t.is(await http(ingress, api, '/ok'), '403', 'a request no HTTPRoute matches: still refused (Linkerd: 404)');
  const m = await mesh!.agentMetrics(nodeOf(api));
  t.regex(m, /inbound_tcp_authz_allow_total\{[^}]*srv_name="api-echo"[^}]*authz_group="",authz_kind="default",authz_name="audit"[^}]*client_id="spiffe:\/\/cluster.local\/ns\/shop\/sa\/bot"\} [1-9]/, 'bot would be denied: counted as audit');
  t.regex(m, /inbound_http_authz_allow_total\{[^}]*srv_name="api-http"[^}]*route_name="public",authz_group="",authz_kind="default",authz_name="audit",tls="no_identity"[^}]*\} [1-9]/, 'the unmeshed client on the route: audit');
  t.regex(m, /inbound_tcp_authz_allow_total\{[^}]*srv_name="api-echo"[^}]*authz_kind="serverauthorization",authz_name="echo-web"[^}]*\} [1-9]/, 'web keeps its ServerAuthorization');
  const r = await mesh!.cli(['diagnostics', 'authz', `pod/${api.name}`, '-n', NS, '--controller', mesh!.controllerAddr]);
  t.regex(r.stdout, /Server shop\/api-echo on port 7000: AuthorizationPolicies ServerAuthorization echo-web, audit: what they do not allow passes, counted as authz default\/audit/);
  t.regex(r.stdout, /Server shop\/api-echo: port echo \(7000\), opaque, accessPolicy audit/);
});
