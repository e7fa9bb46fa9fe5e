// mTLS by default between nodes (issue 14), on a simulated 2-node cluster with the mesh as
// install runs it: the identity service beside the controller, an agent on each node holding
// certificates for its pods' ServiceAccounts. A capture on the fabric during a cross-node HTTP/1
// exchange and a MySQL session shows none of their bytes (and does show a plaintext exchange with
// an unmeshed pod, so the capture is seen to work); the destination's agent records the client's
// SPIFFE ID; tap shows both identities; status lists the certificates; the identity service
// refuses a CSR for a ServiceAccount with no pod on the caller's node; the controller lets in
// the agents with their node-bound tokens and refuses a pod without one; and while it is down,
// certificates in hand keep serving, a new workload's cross-node connections are refused (the
// documented fallback) and status says why, until it is back.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { createCsr } from '../src/identity/x509.ts';
import { workloadId, spiffeId } from '../src/identity/spiffe.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';
import { captureFabric } from './helpers/fabric-capture.ts';
import { withoutCniPlugin } from '../src/sim/cni-runtime.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const NS = 'shop';
const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const DB = 'spiffe://cluster.local/ns/shop/sa/db';
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let web: SimPod; // node 0, ServiceAccount web
let db: SimPod; // node 1, ServiceAccount db: an HTTP backend and mariadbd
let near: SimPod; // node 0, ServiceAccount cache: same node as web
let legacy: SimPod; // node 1, not meshed
const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
const children: ChildProcess[] = [];
const marker = (what: string) => `${what}-${randomBytes(8).toString('hex')}`;
const RESP = marker('resp');

function need(): { cluster: SimCluster; mesh: ClusterMesh } {
  if (!cluster || !mesh) throw new Error('no cluster: this test builds network namespaces, cgroups, nftables rules and loads BPF; run it as root (sudo ./dev test)');
  return { cluster, mesh };
}

async function backend(pod: SimPod, name: string): Promise<void> {
  const proc = pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', name, '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(proc);
  await new JsonLines(proc).waitFor((o) => o.listening, 30_000, `${name} listening`);
}

async function mariadb(pod: SimPod): Promise<void> {
  const datadir = path.join(tmp, 'mysql');
  const install = await pod.exec('mariadb-install-db', ['--no-defaults', '--auth-root-authentication-method=normal', `--datadir=${datadir}`, '--user=root', '--skip-test-db'], { timeoutMs: 60_000 });
  if (install.code !== 0) throw new Error(`mariadb-install-db failed (${install.code}): ${install.stderr.slice(-2000)}`);
  let log = '';
  const d = pod.spawn('/usr/sbin/mariadbd', ['--no-defaults', '--user=root', `--datadir=${datadir}`, `--socket=${path.join(tmp, 'mysql.sock')}`, `--pid-file=${path.join(tmp, 'mysql.pid')}`,
    '--port=3306', '--bind-address=0.0.0.0', '--skip-grant-tables', '--skip-name-resolve', '--innodb-buffer-pool-size=16M'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(d);
  d.stderr!.on('data', (b) => (log += b));
  await until(() => pod.exec('bash', ['-c', 'exec 3<>/dev/tcp/127.0.0.1/3306']), (r) => r.code === 0, 'mariadbd listening on 3306', { ms: 60_000, context: () => log.slice(-2000) });
}

const curl = (pod: SimPod, url: string, header = 'x-note: none') => pod.exec('curl', ['-s', '-m', '10', '-H', header, url], { timeoutMs: 15_000 });

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  web = await cluster.addPod(0, { name: 'web', namespace: NS, serviceAccountName: 'web' });
  near = await cluster.addPod(0, { name: 'near', namespace: NS, serviceAccountName: 'cache' });
  db = await cluster.addPod(1, { name: 'db', namespace: NS, serviceAccountName: 'db' });
  legacy = await cluster.addPod(1, { name: 'legacy', namespace: NS, serviceAccountName: 'db', annotations: { 'mesh-agent.io/inject': 'disabled' } });
  await Promise.all([backend(db, RESP), backend(near, 'near'), backend(legacy, 'legacy'), mariadb(db)]);
  await cluster.settled();
  mesh = await startMesh(cluster);
  await mesh.waitAgents((s) => s.discovery.pods >= 4 && (s.identity?.certificates ?? []).length > 0 && s.identity.certificates.every((c: any) => c.state === 'ready'), 'discovery and certificates');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('a capture on the fabric shows none of a cross-node HTTP/1 exchange or MySQL session; a plaintext exchange with an unmeshed pod is in it', async (t) => {
  const { cluster } = need();
  const cap = await captureFabric(cluster.fabricNs, tmp);
  const req = marker('req');
  const http = await curl(web, `http://${db.ip}:8080/${req}`, `x-secret: ${req}`);
  t.is(http.stdout, RESP, http.stderr);
  const q = marker('query');
  const r = marker('row');
  const sql = await web.exec('mariadb', ['--no-defaults', '-u', 'root', '-N', '-B', '--connect-timeout=10', '--skip-ssl', '-h', db.ip, '-P', '3306',
    '-e', `create database if not exists ${q.replace('-', '_')}; select concat('${r.slice(0, 4)}', '${r.slice(4)}'), '${q}'`], { timeoutMs: 30_000 });
  t.is(sql.code, 0, sql.stderr);
  t.is(sql.stdout.trim(), `${r}\t${q}`);
  const ctrl = marker('plain');
  const plain = await curl(web, `http://${legacy.ip}:8080/${ctrl}`);
  t.is(plain.stdout, 'legacy');
  const bytes = await cap.stop();
  t.log(`captured ${bytes.length} bytes, ${await cap.count('')} packets, ${await cap.count(`host ${legacy.ip}`)} to/from legacy; ${cap.log()}`);
  for (const m of [req, RESP, q, r, 'mysql_native_password', 'MariaDB']) t.is(bytes.indexOf(m), -1, `"${m}" crossed the fabric in clear`);
  t.not(bytes.indexOf(ctrl), -1, 'the unmeshed exchange is in the capture in clear: the capture sees pod traffic');
  const tunnelled = await cap.count(`tcp port 15008 and host ${cluster.nodes[0]!.nodeIp} and host ${cluster.nodes[1]!.nodeIp}`);
  t.true(tunnelled > 0, 'the meshed exchanges crossed as TLS between the agents on 15008');
  t.is(await cap.count(`tcp and host ${db.ip} and port 8080`), 0, 'no packet to the meshed pod\'s own port crossed the fabric');
});

test.serial('the destination\'s agent records the client\'s SPIFFE ID (inbound, tls="true"); the client\'s names the server\'s; tap shows both', async (t) => {
  const { cluster, mesh } = need();
  const [n0, n1] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]];
  const m1 = await until(() => mesh.agentMetrics(n1), (m) => m.includes(`client_id="${WEB}"`), 'the destination agent\'s inbound metrics with the client\'s identity');
  const inbound = m1.split('\n').find((l) => l.startsWith('tcp_open_total{') && l.includes('direction="inbound"') && l.includes(`client_id="${WEB}"`));
  t.truthy(inbound, m1.split('\n').filter((l) => l.startsWith('tcp_open_total')).join('\n'));
  t.regex(inbound!, /tls="true"/);
  t.regex(inbound!, /pod="db"/);
  const m0 = await mesh.agentMetrics(n0);
  const out = m0.split('\n').find((l) => l.startsWith('response_total{') && l.includes('direction="outbound"') && l.includes(`server_id="${DB}"`));
  t.truthy(out, 'the client agent\'s outbound responses carry server_id');
  t.regex(out!, /tls="true"/);
  t.false(m0.split('\n').some((l) => l.startsWith('tcp_open_total{') && l.includes('direction="inbound"') && l.includes('pod="db"')), 'the tunnelled connection\'s inbound TCP side is counted by the destination only');
  // tap: a request while tapping pod/web (once the controller knows the pod from the agents' reports).
  await until(() => mesh.cli(['stat', 'pod', '-n', NS, '--controller', mesh.controllerAddr]), (r) => /\nweb\s/.test(r.stdout), 'the controller to know pod web');
  const tapProc = cluster.spawnInControlPlane(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'tap', 'pod/web', '-n', NS, '--controller', mesh.controllerAddr], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(tapProc);
  let tapped = '';
  tapProc.stdout!.setEncoding('utf8').on('data', (d: string) => (tapped += d));
  await until(async () => {
    await curl(web, `http://${db.ip}:8080/tapped`);
    await curl(web, `http://${near.ip}:8080/near`);
    return tapped;
  }, (o) => o.includes(':path=/tapped') && o.includes(':path=/near'), 'tap lines for both requests');
  tapProc.kill('SIGINT');
  const r = { stdout: tapped, stderr: '' };
  const lines = r.stdout.split('\n');
  const toDb = lines.find((l) => l.startsWith('req') && l.includes(':path=/tapped'));
  t.truthy(toDb, r.stdout.slice(0, 2000) + r.stderr);
  t.true(toDb!.includes(`tls=true client_id=${WEB} server_id=${DB}`), toDb);
  const same = lines.find((l) => l.startsWith('req') && l.includes(':path=/near'));
  t.truthy(same);
  t.true(same!.includes('tls=no_identity'), `same node: no tunnel: ${same}`);
});

test.serial('status lists each identity\'s certificate: SPIFFE ID, serial, not-after, next renewal; the trust anchor and the tunnels', async (t) => {
  const { cluster, mesh } = need();
  const s = await mesh.agentStatus(cluster.nodes[0]!);
  const ids = s.identity.certificates.map((c: any) => c.identity).sort();
  t.deepEqual(ids, ['spiffe://cluster.local/ns/shop/sa/cache', WEB]);
  for (const c of s.identity.certificates) {
    t.is(c.state, 'ready');
    t.regex(c.serial, /^[0-9A-F]+$/);
    const life = Date.parse(c.notAfter) - Date.parse(c.notBefore);
    t.true(Math.abs(life - (24 * 3600_000 + 30_000)) < 2000, `24 h, backdated 30 s: ${c.notBefore} .. ${c.notAfter}`);
    t.is(Date.parse(c.nextRenewal), Date.parse(c.notBefore) + life / 2);
  }
  t.true(s.identity.trustAnchors[0].daysLeft > 300);
  t.true(s.identity.tunnels.client.streams > 0);
  const cli = await cluster.nodes[0]!.execInNode(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'status', '--admin', '127.0.0.1:4191'], { timeoutMs: 20_000 });
  t.regex(cli.stdout, /IDENTITY cluster\.local, identity service /);
  t.regex(cli.stdout, new RegExp(`${WEB.replace(/[/.]/g, '\\$&')}\\s+ready\\s+[0-9A-F]+`));
  t.regex(cli.stdout, /TUNNELS :15008: out \d+ connections open/);
});

test.serial('the identity service refuses a CSR for a ServiceAccount with no pod on the caller\'s node, naming the node', async (t) => {
  const { cluster, mesh } = need();
  const n0 = cluster.nodes[0]!;
  const anchors = path.join(tmp, 'anchors.pem');
  fs.writeFileSync(anchors, mesh.trustAnchorPem!);
  // The agent's own client, from node 0's network with node 0's agent token: a CSR for db (whose pod is on node 1) and one for web (on node 0).
  const script = path.join(tmp, 'ask.ts');
  fs.writeFileSync(script, [
    `import { httpsCertifyClient } from ${JSON.stringify(path.resolve('src/identity/client.ts'))};`,
    `import { createCsr } from ${JSON.stringify(path.resolve('src/identity/x509.ts'))};`,
    `import { workloadId } from ${JSON.stringify(path.resolve('src/identity/spiffe.ts'))};`,
    `const c = httpsCertifyClient({ addr: ${JSON.stringify(mesh.identityAddr)}, anchorsPem: ${JSON.stringify(mesh.trustAnchorPem)}, serverId: workloadId('cluster.local', 'mesh-agent', 'mesh-agent-identity'), tokenFile: ${JSON.stringify(findTokenFile(mesh, n0.name))} });`,
    `for (const sa of ['db', 'web']) {`,
    `  const id = workloadId('cluster.local', '${NS}', sa);`,
    `  try { const r = await c.certify(id, (await createCsr(id)).csrPem); console.log(JSON.stringify({ sa, ok: r.notAfter })); }`,
    `  catch (e) { console.log(JSON.stringify({ sa, error: e.message })); }`,
    `}`,
  ].join('\n'));
  const r = await n0.execInNode(process.execPath, ['--disable-warning=ExperimentalWarning', script], { timeoutMs: 30_000 });
  const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.is(out[0].sa, 'db');
  t.is(out[0].error, 'the identity service refused (403): no running pod of ServiceAccount shop/db on node sim-node-1; an agent gets certificates only for the workloads of its own node', r.stderr);
  t.is(out[1].sa, 'web');
  t.truthy(out[1].ok, 'a ServiceAccount of its own node is signed');
});

/** The token startMesh gave node's agent (its --identity-token-file, or --controller-token-file). */
function findTokenFile(mesh: ClusterMesh, node: string, flag = '--identity-token-file'): string {
  const args = (mesh.agents.get(node)!.proc.spawnargs ?? []) as string[];
  const i = args.indexOf(flag);
  if (i < 0) throw new Error(`the agent on ${node} has no ${flag}: ${args.join(' ')}`);
  return args[i + 1]!;
}

test.serial('the controller lets in the agents with their node-bound tokens, and no pod: without a token 401 and no discovery, a node\'s token speaking for another node 403', async (t) => {
  const { cluster, mesh } = need();
  const [n0, n1] = cluster.nodes.map((n) => n.name);
  const status = JSON.parse((await cluster.execInControlPlane('curl', ['-s', '--http2-prior-knowledge', '-m', '5', `http://${mesh.controllerAddr}/v1/status`])).stdout);
  t.like(status.agentAuth, { mode: 'token', audience: 'mesh-agent-controller', serviceAccount: 'mesh-agent/mesh-agent-agent' });
  t.true(status.agentAuth.reviews >= 2, 'each agent\'s token reviewed');
  t.deepEqual(status.nodes.filter((n: any) => n.live).map((n: any) => n.node).sort(), [n0, n1].sort(), 'both agents report');
  t.is(status.discovery.agentStreams.length, 2);
  // An unmeshed pod of node 1, as any pod that reaches the ClusterIP.
  const ask = (headers: string[]) => legacy.exec('curl', ['-s', '--http2-prior-knowledge', '-m', '5', '-w', '\n%{http_code}', ...headers.flatMap((h) => ['-H', h]), `http://${mesh.controllerAddr}/v1/discovery`], { timeoutMs: 10_000 });
  const bare = await ask([`mesh-node: ${n0}`, 'mesh-agent-id: x']);
  const [body, code] = bare.stdout.split('\n');
  t.is(code, '401', bare.stdout);
  t.regex(JSON.parse(body!).error, /no bearer token/);
  // Node 1's agent token (a compromised node) speaking for node 0.
  const stolen = fs.readFileSync(findTokenFile(mesh, n1!, '--controller-token-file'), 'utf8');
  const other = await ask([`mesh-node: ${n0}`, 'mesh-agent-id: x', `authorization: Bearer ${stolen}`]);
  t.is(other.stdout.split('\n')[1], '403', other.stdout);
  t.regex(JSON.parse(other.stdout.split('\n')[0]!).error, new RegExp(`the token is bound to node ${n1}, not "${n0}"`));
  const after = JSON.parse((await cluster.execInControlPlane('curl', ['-s', '--http2-prior-knowledge', '-m', '5', `http://${mesh.controllerAddr}/v1/status`])).stdout);
  t.like(after.agentAuth.refused, { unauthenticated: status.agentAuth.refused.unauthenticated + 1, forbidden: status.agentAuth.refused.forbidden + 1 });
});

test.serial('the destination\'s agent refuses, on the fabric, a self-signed certificate with the right SPIFFE ID, an expired one and one of another trust domain', async (t) => {
  const { cluster, mesh } = need();
  const n1 = cluster.nodes[1]!;
  const script = path.join(tmp, 'forge.ts');
  const src = (f: string) => JSON.stringify(path.resolve('src', f));
  fs.writeFileSync(script, [
    `import * as fs from 'node:fs';`,
    `import * as tls from 'node:tls';`,
    `import { createCsr, createIssuer, createTrustAnchor, loadIssuer, signWorkloadCsr } from ${src('identity/x509.ts')};`,
    `import { workloadId, serverNameOf } from ${src('identity/spiffe.ts')};`,
    `const anchors = ${JSON.stringify(mesh.trustAnchorPem)};`,
    `const real = await loadIssuer(fs.readFileSync(${JSON.stringify(mesh.issuerFiles!.certFile)}, 'utf8'), fs.readFileSync(${JSON.stringify(mesh.issuerFiles!.keyFile)}, 'utf8'), anchors);`,
    `const now = Date.now();`,
    `const leaf = async (issuer, issuerPem, id, from, to) => { const c = await createCsr(id); return { key: c.keyPem, cert: (await signWorkloadCsr(issuer, c.csrPem, { id, notBefore: new Date(now + from), notAfter: new Date(now + to) })) + issuerPem }; };`,
    `const web = workloadId('cluster.local', 'shop', 'web');`,
    `const fa = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60000), notAfter: new Date(now + 3600000) });`,
    `const fi = await createIssuer(fa, { trustDomain: 'cluster.local', notBefore: new Date(now - 60000), notAfter: new Date(now + 3600000) });`,
    `const forged = await leaf(await loadIssuer(fi.certPem, fi.keyPem, fa.certPem), fi.certPem, web, -30000, 3600000);`,
    `const expired = await leaf(real, real.certPem, web, -7200000, -3600000);`,
    `const other = await leaf(real, real.certPem, workloadId('other.domain', 'shop', 'web'), -30000, 3600000);`,
    `for (const [what, cred] of [['self-signed', forged], ['expired', expired], ['other-trust-domain', other]]) {`,
    `  const closed = await new Promise((resolve) => {`,
    `    const s = tls.connect({ host: ${JSON.stringify(n1.nodeIp)}, port: 15008, servername: serverNameOf(workloadId('cluster.local', 'shop', 'db')), ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', ca: anchors, checkServerIdentity: () => undefined, ...cred });`,
    `    let data = false;`,
    `    s.on('data', () => (data = true)); s.on('error', () => {}); s.on('close', () => resolve(!data));`,
    `  });`,
    `  console.log(JSON.stringify({ what, closed }));`,
    `}`,
  ].join('\n'));
  const before = (await mesh.agentStatus(n1)).identity.tunnels.server.refusedClients;
  const r = await cluster.nodes[0]!.execInNode(process.execPath, ['--disable-warning=ExperimentalWarning', script], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l)), [
    { what: 'self-signed', closed: true }, { what: 'expired', closed: true }, { what: 'other-trust-domain', closed: true },
  ]);
  const after = await until(() => mesh.agentStatus(n1), (s) => {
    const c = s.identity.tunnels.server.refusedClients;
    return ['untrusted', 'expired', 'bad-identity'].every((k) => (c[k] ?? 0) > (before[k] ?? 0));
  }, 'the three refusals counted by the destination\'s agent');
  t.truthy(after);
  const log = mesh.agents.get(n1.name)!.log();
  t.regex(log, /refused a tunnel connection from 10\.244\.0\.\d+: trust domain other\.domain is not this mesh's/);
});

test.serial('identity service down: certificates in hand keep serving; a new workload\'s cross-node connections are refused and status says why; back up, it gets its certificate', async (t) => {
  const { cluster, mesh } = need();
  await mesh.stopIdentity();
  // What has a certificate keeps working.
  t.is((await curl(web, `http://${db.ip}:8080/still`)).stdout, RESP);
  // A new workload on node 0: its certificate cannot be had.
  const fresh = await cluster.addPod(0, { name: 'fresh', namespace: NS, serviceAccountName: 'fresh' });
  await cluster.settled();
  const st = await until(() => mesh.agentStatus(cluster.nodes[0]!), (s) => s.identity.certificates.some((c: any) => c.identity.endsWith('/sa/fresh') && c.state === 'failing'), 'the new identity failing');
  const c = st.identity.certificates.find((x: any) => x.identity.endsWith('/sa/fresh'));
  t.regex(c.lastError, /identity service at .*8080: ECONNREFUSED; is mesh-agent identity running\?/);
  const health = await cluster.nodes[0]!.execInNode(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'status', '--admin', '127.0.0.1:4191'], { timeoutMs: 20_000 });
  t.is(health.code, 1, 'degraded');
  t.regex(health.stdout, /STATUS: degraded\n[\s\S]*identity: no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/fresh \(\d+ attempts failed/);
  // Cross-node from it: refused (no plaintext fallback); same node still works.
  const refused = await curl(fresh, `http://${db.ip}:8080/x`);
  t.not(refused.stdout, RESP);
  t.is((await curl(fresh, `http://${near.ip}:8080/y`)).stdout, 'near', 'same node needs no certificate');
  await mesh.startIdentity();
  await until(() => mesh.agentStatus(cluster.nodes[0]!), (s) => s.identity.certificates.some((x: any) => x.identity.endsWith('/sa/fresh') && x.state === 'ready'), 'the certificate once the service is back', { ms: 60_000 });
  t.is((await curl(fresh, `http://${db.ip}:8080/z`)).stdout, RESP);
  await cluster.removePod(fresh);
});

test.serial('a pod the destination\'s agent has not seen yet (its pod watch lags the controller\'s): a CONNECT to it waits for the watch, then is served, not refused', async (t) => {
  const { cluster, mesh } = need();
  const [n0, n1] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]];
  const name = 'db-new';
  // Node 1's agent watches its pods with this field selector; the controller's watch (all pods) is not held.
  const release = cluster.api.holdWatchEvents((w, o) => w.resource === 'pods' && w.fieldSelector === `spec.nodeName=${n1.name}` && o.metadata.name === name);
  // Without the CNI plugin on node 1 (install --cni=false): with it, the agent reads a new pod at
  // its sandbox's ADD, before the pod starts (test/cni.e2e.test.ts), and its watch cannot lag.
  const unchained = withoutCniPlugin(n1);
  let pod: SimPod | undefined;
  try {
    const before = (await mesh.agentStatus(n1)).identity.tunnels.server;
    pod = await cluster.addPod(1, { name, namespace: NS, serviceAccountName: 'db' });
    await backend(pod, 'db-new');
    // Node 0's agent knows every pod from discovery: the new one is a meshed pod of node 1, reached through the tunnel.
    await until(() => mesh.agentStatus(n0), (s) => s.discovery.pods === cluster.api.list('Pod').length, 'the new pod in node 0\'s discovery');
    const res = curl(web, `http://${pod.ip}:8080/new`);
    // Reacting is the test's part: node 1's agent holds the CONNECT for at most its connect timeout (5 s).
    const waiting = await until(async () => (await mesh.agentStatus(n1)).identity.tunnels.server, (s) => s.waitingForPods === 1, 'the CONNECT waiting at node 1 for its pod', { intervalMs: 50 });
    t.is(waiting.waitedForPods, before.waitedForPods + 1);
    release();
    const r = await res;
    t.is(r.stdout, 'db-new', `${r.stderr}; node 1's tunnel server after: ${JSON.stringify((await mesh.agentStatus(n1)).identity.tunnels.server)}`);
    const after = (await mesh.agentStatus(n1)).identity.tunnels.server;
    t.is(after.waitingForPods, 0);
    t.is(after.refusedStreams['not-a-meshed-pod'] ?? 0, before.refusedStreams['not-a-meshed-pod'] ?? 0, 'nothing refused');
  } finally {
    release();
    if (pod) await cluster.removePod(pod);
    unchained.restore();
  }
});
