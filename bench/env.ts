// The bench's world: a simulated cluster whose first node has a server pod, an unmeshed client
// pod (direct and nginx runs) and a meshed client pod (mesh runs), three pods behind a Service
// (bench/svc, for the Service scenarios), the real agent in the node namespace and the
// controller on the control plane (discovery, as installed), nginx as the upstream servers in
// the server pods and as the reverse proxy in the node namespace, and iperf3 -s. A second node
// holds two more server pods for the cross-node scenarios: remote-plain (unmeshed: the plaintext
// mesh goes to it directly) and remote-mtls (meshed: the mesh tunnels to it over mTLS), with its
// own agent; the identity service runs beside the controller and both agents have identity on,
// as installed (docs/identity.md). Everything is a child of the cluster's cgroups, so destroy()
// (and the sim's exit and signal handlers) remove it all.
import { execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCluster, type SimCluster, type SimNode, type SimPod, type SimService } from '../src/sim/index.ts';
import { ROUTE_RESOURCES } from '../src/sim/api-resources.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { PORTS, proxyConf, serverConf } from './nginx-conf.ts';
import { parseCpuTicks, parseProcIo, parseVmRss, parseVoluntarySwitches } from './parse.ts';
import type { Mode } from './report.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The agent runs as it does in the image: compiled to JavaScript (dist/), rebuilt for every
// run so the numbers are those of the sources in the tree.
const BIN = path.join(ROOT, 'dist/bin/mesh-agent.js');
function compileAgent(): void {
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const out = e as { stdout?: Buffer; stderr?: Buffer };
    throw new Error(`compiling the agent to dist/ failed; fix the type errors below or run ./dev setup:\n${out.stdout ?? ''}${out.stderr ?? ''}`);
  }
}
/** Extra node flags for the agent, e.g. MESH_BENCH_AGENT_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile it. */
const agentNodeArgs = () => (process.env.MESH_BENCH_AGENT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
/** Extra `mesh-agent run` flags, e.g. MESH_BENCH_AGENT_ARGS='--kernel-splice'. */
const agentArgs = () => (process.env.MESH_BENCH_AGENT_ARGS ?? '').split(/\s+/).filter(Boolean);
export const LOAD_DIR = path.join(ROOT, 'bench/load');
/**
 * Proxies on each side: the agent's (--proxy-workers) and as many nginx reverse-proxy processes
 * (reuseport), so both may use the same cores. MESH_BENCH_PROXIES overrides the CPU count.
 */
export const PROXIES = Number(process.env.MESH_BENCH_PROXIES ?? os.availableParallelism());
const ADMIN = '127.0.0.1:4191';
/** Pods behind the bench's Service. */
export const SERVICE_PODS = 3;

/** http1-route's route: one rule with a match (method and path, checked per request), two weighted backends, retries on. */
export const ROUTED_SERVICE_ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
  metadata: { name: 'svc-routed', namespace: 'bench', annotations: { 'retry.linkerd.io/http': '5xx', 'retry.linkerd.io/limit': '1' } },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'svc-routed', port: PORTS.http1 }],
    rules: [{
      matches: [{ method: 'GET', path: { type: 'PathPrefix', value: '/' } }],
      backendRefs: [{ name: 'svc-a', port: PORTS.http1, weight: 50 }, { name: 'svc-b', port: PORTS.http1, weight: 50 }],
    }],
  },
};
/** The hard RLIMIT_NOFILE we inherit. Raising it needs CAP_SYS_RESOURCE, which these
 *  machines' containers lack, so the agent and the load tools get their soft limit raised to
 *  it: N idle connections are 2N sockets in the agent. */
export const NOFILE_HARD = hardNofile();
const NOFILE = `--nofile=${NOFILE_HARD}:${NOFILE_HARD}`;

function hardNofile(): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? 1_048_576 : Number(m[1]);
}

/** The second node's agent (cross-node scenarios). */
const ADMIN_B = '127.0.0.1:4191';
const IDENTITY_PORT = 8080;

export interface ExecOk {
  stdout: string;
  stderr: string;
}

export class BenchEnv {
  readonly cluster: SimCluster;
  readonly node: SimNode;
  readonly server: SimPod;
  readonly direct: SimPod;
  readonly meshed: SimPod;
  /** A meshed server pod (nginx, as the server pod): the inbound-http1 scenario's captured destination. */
  readonly meshedServer: SimPod;
  /** bench/svc and its pods (nginx, as the server pod). */
  readonly service: SimService;
  /**
   * bench/svc-routed: the same pods behind a Service with an HTTPRoute (a match, two weighted
   * backends bench/svc-a and bench/svc-b, the same pods again, retries on): the http1-route scenario.
   */
  readonly routedService: SimService;
  readonly servicePods: SimPod[];
  /** The second node and its server pods: unmeshed (plaintext mesh) and meshed (mTLS mesh). */
  readonly nodeB: SimNode;
  readonly remotePlain: SimPod;
  readonly remoteMtls: SimPod;
  readonly tmp: string;
  readonly grpcRequest: string;
  readonly #children: ChildProcess[] = [];
  agentPid = 0;
  /** The second node's agent. */
  agentBPid = 0;
  /** The Service pods' nginx processes (one each: master_process off). */
  serviceNginxPids: number[] = [];
  /** The reverse-proxy nginx processes (PROXIES of them). */
  nginxPids: number[] = [];
  #agentLog = '';

  private constructor(cluster: SimCluster, server: SimPod, direct: SimPod, meshed: SimPod, meshedServer: SimPod, service: SimService, routedService: SimService, servicePods: SimPod[], remote: [SimPod, SimPod], tmp: string) {
    this.cluster = cluster;
    this.node = cluster.nodes[0]!;
    this.server = server;
    this.direct = direct;
    this.meshed = meshed;
    this.meshedServer = meshedServer;
    this.service = service;
    this.routedService = routedService;
    this.servicePods = servicePods;
    this.nodeB = cluster.nodes[1]!;
    [this.remotePlain, this.remoteMtls] = remote;
    this.tmp = tmp;
    this.grpcRequest = path.join(tmp, 'grpc-request.bin');
  }

  static async create(say: (s: string) => void): Promise<BenchEnv> {
    if (process.getuid?.() !== 0) throw new Error('the bench builds a simulated node (namespaces, cgroups, BPF): run it as root, e.g. sudo ./dev bench');
    for (const tool of ['wrk', 'h2load', 'iperf3', 'nginx', 'prlimit', 'curl']) {
      if (!fs.existsSync(`/usr/bin/${tool}`) && !fs.existsSync(`/usr/sbin/${tool}`)) throw new Error(`${tool} is not installed; run ./dev setup (it installs the bench's Debian packages)`);
    }
    if (!fs.existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) throw new Error('nginx\'s stream module is missing; run ./dev setup (Debian package libnginx-mod-stream)');
    const tmp = fs.mkdtempSync(ownedTempPrefix('bench'));
    const cluster = await createCluster({ nodes: 2 });
    // As if Gateway API's CRDs were installed: the controller watches HTTPRoutes.
    for (const r of ROUTE_RESOURCES) cluster.api.register(r);
    let env: BenchEnv | undefined;
    try {
      const server = await cluster.addPod(0, { name: 'server', namespace: 'bench' });
      const direct = await cluster.addPod(0, { name: 'client-direct', namespace: 'bench' });
      const meshed = await cluster.addPod(0, { name: 'client-mesh', namespace: 'bench', annotations: { 'mesh-agent.io/inject': 'enabled' } });
      const meshedServer = await cluster.addPod(0, { name: 'server-mesh', namespace: 'bench', annotations: { 'mesh-agent.io/inject': 'enabled' } });
      const servicePods: SimPod[] = [];
      for (let i = 0; i < SERVICE_PODS; i++) {
        servicePods.push(await cluster.addPod(0, {
          deployment: 'svc', namespace: 'bench', labels: { app: 'bench-svc' },
          ports: [{ name: 'http', containerPort: PORTS.http1 }, { name: 'h2', containerPort: PORTS.h2 }],
        }));
      }
      const svcOf = (name: string) => cluster.addService({
        name, namespace: 'bench', selector: { app: 'bench-svc' },
        ports: [{ name: 'http', port: PORTS.http1, targetPort: 'http' }, { name: 'h2', port: PORTS.h2, targetPort: 'h2' }],
      });
      const service = svcOf('svc');
      const routedService = svcOf('svc-routed');
      svcOf('svc-a');
      svcOf('svc-b');
      cluster.apply(ROUTED_SERVICE_ROUTE);
      const remotePlain = await cluster.addPod(1, { name: 'remote-plain', namespace: 'bench' });
      const remoteMtls = await cluster.addPod(1, { name: 'remote-mtls', namespace: 'bench', annotations: { 'mesh-agent.io/inject': 'enabled' } });
      await cluster.settled();
      env = new BenchEnv(cluster, server, direct, meshed, meshedServer, service, routedService, servicePods, [remotePlain, remoteMtls], tmp);
      await env.#start(say);
      return env;
    } catch (e) {
      if (env) await env.destroy();
      else {
        await cluster.destroy();
        fs.rmSync(tmp, { recursive: true, force: true });
      }
      throw e;
    }
  }

  async #start(say: (s: string) => void): Promise<void> {
    // A unary gRPC message frame: not compressed, length 0.
    fs.writeFileSync(this.grpcRequest, Buffer.alloc(5));
    const grpcReply = path.join(this.tmp, 'grpc-reply.bin');
    fs.writeFileSync(grpcReply, Buffer.alloc(5));

    for (const pod of [this.server, this.meshedServer, ...this.servicePods, this.remotePlain, this.remoteMtls]) {
      const sdir = path.join(this.tmp, `nginx-${pod.name}`);
      fs.mkdirSync(sdir);
      fs.writeFileSync(path.join(sdir, 'nginx.conf'), serverConf(sdir, grpcReply));
      const nginx = this.#track(pod.spawn('nginx', ['-p', sdir, '-c', path.join(sdir, 'nginx.conf'), '-e', path.join(sdir, 'error.log')], { stdio: 'ignore' }), `nginx (${pod.name})`, sdir);
      if (this.servicePods.includes(pod)) this.serviceNginxPids.push(nginx.pid!);
    }
    for (const pod of [this.server, this.remotePlain, this.remoteMtls]) this.#track(pod.spawn('iperf3', ['-s', '-p', String(PORTS.iperf)], { stdio: 'ignore' }), `iperf3 -s (${pod.name})`);

    // The controller, as installed: the agent's Services and endpoints come from its stream.
    const kubeconfig = path.join(this.tmp, 'kubeconfig');
    fs.writeFileSync(kubeconfig, this.cluster.kubeconfig());
    const controllerAddr = `${this.cluster.controlPlaneIp}:8086`;
    const controller = this.cluster.spawnInControlPlane(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '-q', '--listen', controllerAddr, '--kubeconfig', kubeconfig, '--agent-auth', 'token'], { stdio: ['ignore', 'ignore', 'pipe'] });
    controller.stderr!.on('data', (d) => (this.#controllerLog = (this.#controllerLog + d).slice(-4000)));
    this.#track(controller, 'the controller');

    if (!Number.isInteger(PROXIES) || PROXIES < 1) throw new Error(`MESH_BENCH_PROXIES=${process.env.MESH_BENCH_PROXIES} is not a positive whole number`);
    for (let i = 0; i < PROXIES; i++) {
      const pdir = path.join(this.tmp, `nginx-proxy-${i}`);
      fs.mkdirSync(pdir);
      fs.writeFileSync(path.join(pdir, 'nginx.conf'), proxyConf(pdir, this.node.nodeIp, this.server.ip, this.servicePods.map((p) => p.ip)));
      const nginx = this.#track(this.node.spawnInNode('nginx', ['-p', pdir, '-c', path.join(pdir, 'nginx.conf'), '-e', path.join(pdir, 'error.log')], { stdio: 'ignore' }), `nginx (reverse proxy ${i})`, pdir);
      this.nginxPids.push(nginx.pid!);
    }
    this.#kubeconfig = kubeconfig;
    this.#controllerAddr = controllerAddr;

    compileAgent();
    // Identity as installed: the identity service beside the controller, each agent with a token bound to its node.
    const id = await this.#identityFiles();
    const identityAddr = `${this.cluster.controlPlaneIp}:${IDENTITY_PORT}`;
    this.#identity = { addr: identityAddr, anchors: id.anchors, token: id.token, controllerToken: id.controllerToken };
    const identity = this.cluster.spawnInControlPlane(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'identity', '-q', '--listen', identityAddr, '--kubeconfig', kubeconfig,
      '--identity-trust-anchors-file', id.anchors, '--identity-issuer-certificate-file', id.issuerCert, '--identity-issuer-key-file', id.issuerKey], { stdio: ['ignore', 'ignore', 'pipe'] });
    identity.stderr!.on('data', (d) => (this.#controllerLog = (this.#controllerLog + d).slice(-4000)));
    this.#track(identity, 'the identity service');
    await this.#until('the identity service', async () => (await this.cluster.execInControlPlane('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', `https://${identityAddr}/ready`])).stdout === '200');
    const agentOf = (node: SimNode, admin: string, log: (d: string) => void) => {
      const podsFile = path.join(this.tmp, `pods-${node.name}.json`);
      fs.writeFileSync(podsFile, JSON.stringify({ kind: 'List', items: node.pods().map((p) => p.toPodObject(node.name)) }));
      const child = node.spawnInNode('prlimit', [NOFILE, '--', process.execPath, '--disable-warning=ExperimentalWarning', ...agentNodeArgs(), BIN, 'run', '-q',
        '--node', node.name, '--pods', podsFile, '--cgroup-root', node.cgroupRoot,
        '--proxy-addr', `${node.nodeIp}:15001`, '--admin', admin, '--max-connections', '100000', '--controller', controllerAddr, '--controller-token-file', id.controllerToken(node.name), '--proxy-workers', String(PROXIES),
        '--identity-addr', identityAddr, '--identity-trust-anchors-file', id.anchors, '--identity-token-file', id.token(node.name), ...agentArgs()], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.on('data', (d) => log(String(d)));
      return child;
    };
    const agent = agentOf(this.node, ADMIN, (d) => (this.#agentLog = (this.#agentLog + d).slice(-4000)));
    this.#track(agent, 'the agent');
    this.agentPid = agent.pid!;
    const agentB = agentOf(this.nodeB, ADMIN_B, (d) => (this.#agentLog = (this.#agentLog + d).slice(-4000)));
    this.#track(agentB, 'the second node\'s agent');
    this.agentBPid = agentB.pid!;

    say('waiting for the agents, nginx and iperf3');
    await this.#until('the agent to be ready', async () => (await this.node.execInNode('curl', ['-sf', `http://${ADMIN}/ready`])).code === 0);
    await this.#until('the second node\'s agent to be ready with its certificate', async () => {
      const r = await this.nodeB.execInNode('curl', ['-sf', `http://${ADMIN_B}/status`]);
      const st = r.code === 0 ? JSON.parse(r.stdout) : null;
      return st?.identity?.certificates?.some((c: any) => c.state === 'ready') === true && st.discovery?.everSynced === true;
    }, 30_000);
    await this.#until('the agent to know bench/svc and its endpoints, and bench/svc-routed\'s route, from the controller', async () => {
      const d = (await this.status().catch(() => null))?.discovery;
      return d?.everSynced === true && d.endpoints >= 4 * SERVICE_PODS && d.routes >= 1;
    }, 30_000);
    for (const pod of this.servicePods) await this.#until(`nginx in ${pod.name}`, async () => (await this.direct.exec('curl', ['-sf', `http://${pod.ip}:${PORTS.http1}/`])).code === 0);
    await this.#until('nginx in the server pod', async () => (await this.direct.exec('curl', ['-sf', `http://${this.server.ip}:${PORTS.http1}/`])).code === 0);
    for (const pod of [this.remotePlain, this.remoteMtls]) await this.#until(`nginx in ${pod.name}`, async () => (await this.direct.exec('curl', ['-sf', `http://${pod.ip}:${PORTS.http1}/`])).code === 0);
    await this.#until('the agent to hold its client pod\'s certificate and know the remote pods', async () => {
      const st = await this.status().catch(() => null);
      return st?.identity?.certificates?.some((c: any) => c.state === 'ready') === true && st.discovery?.pods >= this.cluster.nodes.flatMap((n) => n.pods()).length;
    }, 30_000);
    // Reached through the agent's inbound capture once it is on (docs/policy.md).
    await this.#until('the agent capturing connections to the meshed server pod', async () => {
      const i = (await this.status().catch(() => null))?.inbound;
      return i?.capture === 'capturing' && i.pods.some((p: { name: string }) => p.name === this.meshedServer.name);
    });
    await this.#until('nginx in the meshed server pod', async () => (await this.direct.exec('curl', ['-sf', `http://${this.meshedServer.ip}:${PORTS.http1}/`])).code === 0);
    await this.#until('nginx as reverse proxy', async () => (await this.direct.exec('curl', ['-sf', `http://${this.node.nodeIp}:${PORTS.http1 + PORTS.proxyOffset}/`])).code === 0);
    await this.#until('iperf3 -s', async () => (await this.server.exec('ss', ['-Hltn', `sport = :${PORTS.iperf}`])).stdout.includes(String(PORTS.iperf)));
    // The agent's process is node itself (sh, nsenter and prlimit all exec).
    const comm = fs.readFileSync(`/proc/${this.agentPid}/comm`, 'utf8').trim();
    if (comm !== 'node' && comm !== 'MainThread') throw new Error(`expected the agent's pid ${this.agentPid} to be node, found ${comm}`);
  }

  /** Trust anchor, issuer and the agents' tokens, as install and kubelet would provide them. */
  async #identityFiles() {
    const { createIssuer, createTrustAnchor } = await import('../src/identity/x509.ts');
    const now = Date.now();
    const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 365 * 86_400_000) });
    const issuer = await createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 30 * 86_400_000) });
    const f = (name: string, text: string) => {
      fs.writeFileSync(path.join(this.tmp, name), text, { mode: 0o600 });
      return path.join(this.tmp, name);
    };
    return {
      anchors: f('ca-bundle.crt', anchor.certPem),
      issuerCert: f('issuer.crt', issuer.certPem),
      issuerKey: f('issuer.key', issuer.keyPem),
      token: (node: string) => f(`token-${node}`, this.cluster.api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent-agent', node, audiences: ['mesh-agent-identity'], expirationSeconds: 86_400 })),
      // The controller's own audience, as install mounts it beside the identity token (--agent-auth token).
      controllerToken: (node: string) => f(`controller-token-${node}`, this.cluster.api.tokens.mint({ namespace: 'mesh-agent', serviceAccount: 'mesh-agent-agent', node, audiences: ['mesh-agent-controller'], expirationSeconds: 86_400 })),
    };
  }

  #track(child: ChildProcess, what: string, nginxDir?: string): ChildProcess {
    this.#children.push(child);
    child.once('exit', (code, signal) => {
      if (this.#destroying) return;
      const log = nginxDir ? safeRead(path.join(nginxDir, 'error.log')) : what === 'the agent' ? this.#agentLog : what === 'the controller' ? this.#controllerLog : '';
      process.stderr.write(`bench: ${what} exited unexpectedly (${signal ?? code})${log ? `:\n${log.slice(-2000)}` : ''}\n`);
      this.#dead = `${what} exited (${signal ?? code})`;
    });
    return child;
  }

  #destroying = false;
  #dead = '';
  #controllerLog = '';
  #kubeconfig = '';
  #controllerAddr = '';
  #identity: { addr: string; anchors: string; token: (node: string) => string; controllerToken: (node: string) => string } | null = null;

  /**
   * A second agent as the DaemonSet runs it (cluster mode: pods from the API server, discovery
   * from the controller, identity on: install always installs the identity service), for the
   * memory-cluster scenario: on a node name no pod is scheduled to, attached to an empty cgroup,
   * on its own proxy, tunnel and admin ports, without inbound capture (below). Resolves once it is ready, has its discovery and
   * every proxy listens for tunnels (with no pods it wants no certificate).
   */
  async startClusterAgent(proxies: number): Promise<{ child: ChildProcess; pid: number }> {
    if (!this.#identity) throw new Error('startClusterAgent before the bench\'s identity service started');
    const node = 'bench-memory-no-pods';
    const cgroup = path.join(this.node.cgroupRoot, 'mesh-bench-memory');
    fs.mkdirSync(cgroup, { recursive: true });
    const admin = '127.0.0.1:4192';
    const tunnelPort = 15009;
    let log = '';
    // The DaemonSet's identity flags (src/k8s/identity-manifests.ts withIdentity; the config's identity-addr), with the files install mounts.
    const child = this.node.spawnInNode('prlimit', [NOFILE, '--', process.execPath, '--disable-warning=ExperimentalWarning', BIN, 'run', '-q',
      '--node', node, '--kubeconfig', this.#kubeconfig, '--cgroup-root', cgroup,
      '--proxy-addr', `${this.node.nodeIp}:15002`, '--admin', admin, '--controller', this.#controllerAddr, '--controller-token-file', this.#identity.controllerToken(node), '--proxy-workers', String(proxies),
      '--identity-addr', this.#identity.addr, '--identity-trust-anchors-file', this.#identity.anchors, '--identity-token-file', this.#identity.token(node),
      '--trust-domain', 'cluster.local', '--identity-service-account', 'mesh-agent/mesh-agent-identity', '--tunnel-port', String(tunnelPort),
      // The inbound capture is one nftables table per network namespace (datapath/inbound-capture.ts),
      // written whole by its agent: this second agent in the bench node's namespace would replace the
      // bench agent's with its own (no pods) and leave every later inbound scenario uncaptured.
      '--inbound-addr', 'off'], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
    this.#children.push(child);
    const end = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the cluster-mode agent exited (${child.exitCode}): ${log}`);
      const r = await this.node.execInNode('curl', ['-sf', `http://${admin}/status`]);
      const st = r.code === 0 ? JSON.parse(r.stdout) : null;
      // Ready means every proxy listens, the tunnel listener included (agent.ts, workers/worker.ts).
      if (st?.podSource?.synced && st.discovery?.everSynced && st.proxy.workers.length === proxies && st.identity?.tunnels?.port === tunnelPort) break;
      if (Date.now() > end) throw new Error(`the cluster-mode agent was not ready and synced with identity on within 30 s: ${log}`);
      await new Promise((res) => setTimeout(res, 200));
    }
    return { child, pid: child.pid! };
  }

  async stopClusterAgent(child: ChildProcess): Promise<void> {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      child.kill('SIGKILL');
    }
    try {
      fs.rmdirSync(path.join(this.node.cgroupRoot, 'mesh-bench-memory'));
    } catch {
      // already gone, or the cluster's teardown removes it
    }
  }

  /** The last lines of the nginx reverse proxies' error logs, for a failure's message. */
  nginxErrors(): string {
    return this.nginxPids.map((_, i) => safeRead(path.join(this.tmp, `nginx-proxy-${i}`, 'error.log')).split('\n').filter((l) => l.includes('[error]')).slice(-5).join('\n')).filter(Boolean).join('\n');
  }

  /** CPU seconds (utime + stime, every thread) of a mode's proxy: the agent, or every nginx reverse-proxy process; 0 for direct. */
  proxyCpuSeconds(mode: Mode): number {
    if (mode === 'mtls') return this.cpuSeconds(this.agentPid) + this.cpuSeconds(this.agentBPid);
    if (mode === 'mesh') return this.cpuSeconds(this.agentPid);
    if (mode === 'nginx') return this.nginxPids.reduce((n, pid) => n + this.cpuSeconds(pid), 0);
    return 0;
  }

  /** Seconds a mode's proxy main threads spent waiting for a CPU (the agent's event loop; each nginx). */
  proxyRunQueueSeconds(mode: Mode): number {
    if (mode === 'mtls') return this.runQueueSeconds(this.agentPid) + this.runQueueSeconds(this.agentBPid);
    if (mode === 'mesh') return this.runQueueSeconds(this.agentPid);
    if (mode === 'nginx') return this.nginxPids.reduce((n, pid) => n + this.runQueueSeconds(pid), 0);
    return 0;
  }

  /** Throws when one of the long-running processes died: a run without it would lie. */
  assertAlive(): void {
    if (this.#dead) throw new Error(`${this.#dead}; the run cannot continue`);
  }

  async #until(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      this.assertAlive();
      if (await probe()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${what.includes('agent') ? `; agent log: ${this.#agentLog}; controller log: ${this.#controllerLog}` : ''}`);
  }

  /** Requests each Service pod's nginx has served so far (its stub_status), in servicePods' order. */
  async serviceRequests(): Promise<number[]> {
    return Promise.all(this.servicePods.map(async (pod) => {
      const r = await this.exec(pod, 'curl', ['-sf', `http://127.0.0.1:${PORTS.status}/status`], 5000);
      // "Active connections: N \nserver accepts handled requests\n A H R \n...": R is the third number.
      const m = /\n\s*\d+\s+\d+\s+(\d+)/.exec(r.stdout);
      if (!m) throw new Error(`stub_status of ${pod.name} unreadable: ${r.stdout}`);
      return Number(m[1]);
    }));
  }

  /** Runs a command in a pod; throws with its stderr unless it exits 0. */
  async exec(pod: SimPod, cmd: string, args: string[], timeoutMs: number): Promise<ExecOk> {
    const r = await pod.exec(cmd, args, { timeoutMs });
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code}) in pod ${pod.name}: ${(r.stderr || r.stdout).slice(-1500)}`);
    return r;
  }

  /** Node tools from bench/load run with a high fd limit. */
  loadArgs(tool: string, args: string[]): string[] {
    return [NOFILE, '--', process.execPath, path.join(LOAD_DIR, tool), ...args];
  }

  /** Connections the second node's agent took out of tunnels so far (its metrics: a scrape collects its workers' counts). */
  async tunnelledIn(): Promise<number> {
    const r = await this.nodeB.execInNode('curl', ['-sf', `http://${ADMIN_B}/metrics`]);
    if (r.code !== 0) throw new Error(`the second node's agent's /metrics did not answer: ${r.stderr}`);
    let n = 0;
    for (const line of r.stdout.split('\n')) if (line.startsWith('tcp_open_total{') && line.includes('direction="inbound"') && line.includes('tls="true"')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
    return n;
  }

  async status(): Promise<any> {
    const r = await this.node.execInNode('curl', ['-sf', `http://${ADMIN}/status`]);
    if (r.code !== 0) throw new Error(`the agent's /status did not answer: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  rssBytes(pid: number): number {
    return parseVmRss(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  }

  /** Read and write system calls a process made so far (all its threads). */
  syscalls(pid: number): { reads: number; writes: number } {
    return parseProcIo(fs.readFileSync(`/proc/${pid}/io`, 'utf8'));
  }

  /** Times the Service pods' servers went to sleep waiting for work, so far (each is a wake-up someone's write paid for). */
  serviceServerSleeps(): number {
    return this.serviceNginxPids.reduce((n, pid) => n + parseVoluntarySwitches(fs.readFileSync(`/proc/${pid}/status`, 'utf8')), 0);
  }

  /** utime + stime of a process, in seconds. */
  cpuSeconds(pid: number): number {
    const t = parseCpuTicks(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return (t.user + t.sys) / CLOCK_TICKS;
  }

  /** Seconds the process's main thread (Node's event loop) spent waiting for a CPU. */
  runQueueSeconds(pid: number): number {
    const [, waitNs] = fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/);
    return Number(waitNs) / 1e9;
  }

  async destroy(): Promise<void> {
    this.#destroying = true;
    // The agent stops on SIGTERM first, so a --cpu-prof run (MESH_BENCH_AGENT_NODE_ARGS) writes its profile.
    const agent = this.#children.find((c) => c.pid === this.agentPid && c.exitCode === null && c.signalCode === null);
    if (agent) {
      agent.kill('SIGTERM');
      await Promise.race([new Promise((r) => agent.once('exit', r)), new Promise((r) => setTimeout(r, 5000))]);
    }
    for (const c of this.#children) c.kill('SIGKILL');
    try {
      await this.cluster.destroy();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }

  /** For signal handlers, where nothing can be awaited; the sim's own handler removes the node. */
  destroySync(): void {
    this.#destroying = true;
    for (const c of this.#children) c.kill('SIGKILL');
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
