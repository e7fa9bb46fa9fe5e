// The mesh on a simulated cluster, as `mesh-agent install` would run it: the controller on the
// control-plane node (discovery from the stand-in API server), and on every node an agent in
// cluster mode (its pods from the API server, Services from the controller's stream). Used by
// the cluster tests, the demo and the bench; everything it starts dies with the cluster.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { SimCluster, SimClusterNode } from './cluster.ts';
import { installCni, uninstallCni } from '../cni/install.ts';
import { renderKubeconfig } from '../cni/kubeconfig.ts';
import { installManifests } from '../k8s/manifests.ts';
import { netnsPath, type ExecResult } from './run.ts';
import { ownedTempPrefix } from './layout.ts';
import { distModule, meshBin } from './dist-bin.ts';
import { CONTROLLER_AUDIENCE } from '../controller/agent-auth.ts';

export const CONTROLLER_PORT = 8086;
export const IDENTITY_PORT = 8080;
export const ADMIN_ADDR = '127.0.0.1:4191';
/** The install's ServiceAccounts (src/k8s/manifests.ts): the agents' and the identity service's. */
export const AGENT_SA = { namespace: 'mesh-agent', name: 'mesh-agent-agent' };
const NODE_FLAGS = ['--disable-warning=ExperimentalWarning'];

export interface MeshOptions {
  /** The CLI every process runs (default meshBin(): dist/, checked against the sources). */
  bin?: string;
  /** Agents report every this many ms (default 2000, so stat has data soon). */
  reportIntervalMs?: number;
  /** Extra flags for every agent / the controller. */
  agentArgs?: string[];
  controllerArgs?: string[];
  /** Agents log warnings and errors only (default true). */
  quiet?: boolean;
  /**
   * mTLS between nodes, as install runs it (default on): the identity service beside the
   * controller, its trust anchor and issuer made here, each agent with a token of the agents'
   * ServiceAccount bound to its node (what kubelet's projected token volume would give it).
   * false: no identity (plaintext between nodes).
   */
  identity?: false | { certificateLifetime?: string; identityArgs?: string[] };
  /**
   * The chained CNI plugin, as install sets it up (default on): chained into every node's CNI
   * configuration, each agent answering on its node's socket; stop() takes it out again.
   */
  cni?: boolean;
  /** Told each stage of the start as it completes (the controller, the identity service, each node's agent): for a caller that shows progress. */
  onProgress?: (done: string) => void;
}

export interface MeshProcess {
  proc: ChildProcess;
  /** Everything it wrote to stderr (its log), for error messages. */
  log(): string;
}

export interface ClusterMesh {
  /** HOST:PORT of the controller on the fabric, reachable from every node and the control plane. */
  controllerAddr: string;
  controller: MeshProcess | null;
  agents: Map<string, MeshProcess>;
  /** The identity service (null: identity off, or stopped). */
  identity: MeshProcess | null;
  /** HOST:PORT of the identity service on the fabric. */
  identityAddr: string | null;
  /** The trust anchor (PEM) the mesh's certificates chain to (null: identity off). */
  trustAnchorPem: string | null;
  /** The issuer's files (tests that forge or backdate certificates under the real issuer); null: identity off. */
  issuerFiles: { certFile: string; keyFile: string } | null;
  /** Starts (or restarts) the identity service and waits until it answers. */
  startIdentity(): Promise<void>;
  /** Kills the identity service and waits for its exit (the agents' certificates then serve until they expire). */
  stopIdentity(signal?: NodeJS.Signals): Promise<void>;
  /** Starts (or restarts) the controller and waits until it answers. */
  startController(): Promise<void>;
  /** Kills the controller (SIGKILL by default) and waits for its exit. */
  stopController(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Stops the node's agent (SIGTERM: it drains and exits, as in a rolling update; SIGKILL: it
   * dies), waits for its exit, and starts a new one with the same flags; resolves once the new
   * process is spawned (wait for what the test needs), with when the old one was reaped
   * (performance.now()).
   */
  restartAgent(node: SimClusterNode, signal?: NodeJS.Signals): Promise<{ reapedAt: number; code: number | null }>;
  /** Stops the node's agent (SIGKILL by default) and waits for its exit; startAgent() brings one back. */
  stopAgent(node: SimClusterNode, signal?: NodeJS.Signals): Promise<void>;
  startAgent(node: SimClusterNode): void;
  /** The node's agent's CNI socket and state file (null: the mesh runs without the plugin). */
  cniPaths(node: SimClusterNode): { socket: string; stateFile: string; kubeconfig: string } | null;
  /** The pod the node's install container runs in, whose token asked for the plugin's (revoke it with api.tokens.revokePod(AGENT_SA.namespace, ...)). */
  cniInstallPod(node: SimClusterNode): string;
  /** The agent's /status, read in its node's namespace. */
  agentStatus(node: SimClusterNode): Promise<any>;
  agentMetrics(node: SimClusterNode): Promise<string>;
  /** Until every agent is ready and its discovery synced, and `ok` holds for each status (default: always); `onReady` as each node's agent gets there. */
  waitAgents(ok?: (status: any, node: SimClusterNode) => boolean, what?: string, timeoutMs?: number, onReady?: (node: SimClusterNode) => void): Promise<void>;
  /** A mesh-agent command in the control-plane namespace (as an operator's kubectl port-forward would reach the controller). */
  cli(args: string[], timeoutMs?: number): Promise<ExecResult>;
  /** What went wrong with the processes, for a failing test's message. */
  logs(): string;
  stop(): Promise<void>;
}

function track(proc: ChildProcess): MeshProcess {
  let text = '';
  proc.stderr?.on('data', (d) => {
    text += d;
    if (text.length > 200_000) text = text.slice(-100_000);
  });
  proc.stdout?.resume();
  return { proc, log: () => text };
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** The plugin's token as cni-install asks for it (requestToken, over HTTP), run in the node's network namespace where the API server is. */
async function pluginTokenIn(node: SimClusterNode, server: string, installToken: string): Promise<string> {
  const script = `const [mod, kube, server] = process.argv.slice(1); let tok = ''; for await (const c of process.stdin) tok += c;
    const { requestToken, PLUGIN_SERVICE_ACCOUNT } = await import(mod); const { LeanKubeApi } = await import(kube);
    process.stdout.write((await requestToken(new LeanKubeApi({ server, token: tok, insecure: true }), '${AGENT_SA.namespace}', PLUGIN_SERVICE_ACCOUNT)).token);`;
  // The compiled modules, as the image's cni-install runs them (no type stripping per node).
  const url = (f: string) => pathToFileURL(distModule(f)).href;
  const r = await node.execInNode(process.execPath, [...NODE_FLAGS, '--input-type=module', '-e', script, url('src/cni/plugin-token.ts'), url('src/k8s/kube-api.ts'), server], { input: installToken, timeoutMs: 30_000 });
  if (r.code !== 0 || r.stdout === '') throw new Error(`the CNI plugin's token for node ${node.name}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function startMesh(cluster: SimCluster, opts: MeshOptions = {}): Promise<ClusterMesh> {
  const bin = opts.bin ?? meshBin();
  const tmp = fs.mkdtempSync(ownedTempPrefix('cluster'));
  const kubeconfig = path.join(tmp, 'kubeconfig');
  fs.writeFileSync(kubeconfig, cluster.kubeconfig());
  const controllerAddr = `${cluster.controlPlaneIp}:${CONTROLLER_PORT}`;
  const quiet = opts.quiet ?? true;
  const agents = new Map<string, MeshProcess>();
  const identity = opts.identity === false ? null : await identityFiles(tmp, cluster, opts.identity?.certificateLifetime);
  const identityAddr = identity ? `${cluster.controlPlaneIp}:${IDENTITY_PORT}` : null;
  const cni = opts.cni ?? true;
  const cniPaths = (node: SimClusterNode) => (cni ? { socket: path.join(tmp, `${node.name}.cni.sock`), stateFile: path.join(tmp, node.name, 'cni-state.json'), kubeconfig: path.join(tmp, `${node.name}.cni-kubeconfig`) } : null);
  const cniInstallPod = (node: SimClusterNode) => `${AGENT_SA.name}-${node.name}`;
  if (cni) {
    // As the install container: the plugin into the node's CNI bin directory, chained after the
    // network, with the kubeconfig it reads pods with when no agent answers: the plugin's own
    // ServiceAccount's token, asked for (TokenRequest) with the install container's own, bound to
    // its pod, under the install manifests' RBAC. It runs in the node's network namespace, as a
    // runtime runs plugins in the host's: the API server is reachable there.
    cluster.api.applyAccess(installManifests());
    const entry = bin.endsWith('.js') ? path.join(path.dirname(bin), 'mesh-agent-cni.js') : path.join(path.dirname(bin), 'mesh-agent-cni.ts');
    // One process per node asks: side by side, not one after another.
    const tokens = await Promise.all(cluster.nodes.map((node) => pluginTokenIn(node, cluster.apiServerUrl, cluster.api.tokens.mint({ namespace: AGENT_SA.namespace, serviceAccount: AGENT_SA.name, node: node.name, pod: cniInstallPod(node) }))));
    for (const [i, node] of cluster.nodes.entries()) {
      fs.writeFileSync(cniPaths(node)!.kubeconfig, renderKubeconfig({ server: cluster.apiServerUrl, token: tokens[i]! }), { mode: 0o600 });
      installCni({
        confDir: node.cni.confDir,
        binDir: node.cni.binDir,
        entry: { agentSocket: cniPaths(node)!.socket, stateFile: cniPaths(node)!.stateFile, kubeconfig: cniPaths(node)!.kubeconfig },
        executable: `#!/bin/sh\nexec nsenter '--net=${netnsPath(node.nodeNs)}' -- '${process.execPath}' --disable-warning=ExperimentalWarning '${entry}' "$@"\n`,
      });
    }
  }
  // As install: each agent's token for the controller (its own audience), bound to its node;
  // the controller runs with --agent-auth token (its default with an API server).
  const controllerToken = (node: SimClusterNode) => {
    const f = path.join(tmp, `controller-token-${node.name}`);
    fs.writeFileSync(f, cluster.api.tokens.mint({ namespace: AGENT_SA.namespace, serviceAccount: AGENT_SA.name, node: node.name, audiences: [CONTROLLER_AUDIENCE], expirationSeconds: 7 * 86_400 }), { mode: 0o600 });
    return f;
  };
  const startAgent = (node: SimClusterNode) => {
    const cniArgs = cni ? ['--cni-socket', cniPaths(node)!.socket, '--cni-state', cniPaths(node)!.stateFile] : [];
    const idArgs = identity ? ['--identity-addr', identityAddr!, '--identity-trust-anchors-file', identity.anchorsFile, '--identity-token-file', identity.tokenFile(node.name)] : [];
    const args = [
      ...NODE_FLAGS, bin, 'run', '--node', node.name, '--kubeconfig', kubeconfig, '--cgroup-root', node.cgroupRoot,
      '--proxy-addr', `${node.nodeIp}:15001`, '--admin', ADMIN_ADDR, '--controller', controllerAddr, '--controller-token-file', controllerToken(node),
      '--report-interval', String(opts.reportIntervalMs ?? 2000), '--drain', '1000', ...idArgs, ...cniArgs, ...(quiet ? ['--quiet'] : []), ...(opts.agentArgs ?? []),
    ];
    agents.set(node.name, track(node.spawnInNode(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })));
  };
  const mesh: ClusterMesh = {
    controllerAddr,
    controller: null,
    agents,
    identity: null,
    identityAddr,
    trustAnchorPem: identity?.anchorPem ?? null,
    issuerFiles: identity ? { certFile: identity.issuerCertFile, keyFile: identity.issuerKeyFile } : null,
    async startIdentity() {
      if (!identity) throw new Error('this mesh runs without identity (startMesh identity: false)');
      if (mesh.identity && !exited(mesh.identity.proc)) throw new Error('the identity service is already running');
      const p = track(cluster.spawnInControlPlane(process.execPath, [...NODE_FLAGS, bin, 'identity', '--listen', `0.0.0.0:${IDENTITY_PORT}`, '--kubeconfig', kubeconfig,
        '--identity-trust-anchors-file', identity.anchorsFile, '--identity-issuer-certificate-file', identity.issuerCertFile, '--identity-issuer-key-file', identity.issuerKeyFile,
        ...(identity.lifetime ? ['--certificate-lifetime', identity.lifetime] : []), ...(quiet ? ['--quiet'] : []), ...((opts.identity || undefined)?.identityArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] }));
      mesh.identity = p;
      const end = Date.now() + 30_000;
      for (;;) {
        if (exited(p.proc)) throw new Error(`the identity service exited (${p.proc.signalCode ?? p.proc.exitCode}) during start: ${p.log().slice(-2000)}`);
        const r = await cluster.execInControlPlane('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '-m', '2', `https://${identityAddr}/ready`]);
        if (r.stdout === '200') return;
        if (Date.now() > end) throw new Error(`the identity service did not answer on ${identityAddr} within 30 s: ${p.log().slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stopIdentity(signal: NodeJS.Signals = 'SIGKILL') {
      const p = mesh.identity?.proc;
      if (!p || exited(p)) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      await gone;
    },
    async startController() {
      if (mesh.controller && !exited(mesh.controller.proc)) throw new Error('the controller is already running');
      // On every address of the control plane: agents reach it over the fabric, a port-forward on loopback.
      const p = track(cluster.spawnInControlPlane(process.execPath, [...NODE_FLAGS, bin, 'controller', '--listen', `0.0.0.0:${CONTROLLER_PORT}`, '--kubeconfig', kubeconfig,
        '--agent-auth', 'token', '--agent-service-account', `${AGENT_SA.namespace}/${AGENT_SA.name}`, ...(quiet ? ['--quiet'] : []), ...(opts.controllerArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] }));
      mesh.controller = p;
      const end = Date.now() + 30_000;
      for (;;) {
        if (exited(p.proc)) throw new Error(`the controller exited (${p.proc.signalCode ?? p.proc.exitCode}) during start: ${p.log().slice(-2000)}`);
        const r = await cluster.execInControlPlane('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--http2-prior-knowledge', '-m', '2', `http://${controllerAddr}/v1/status`]);
        if (r.stdout === '200') return;
        if (Date.now() > end) throw new Error(`the controller did not answer on ${controllerAddr} within 30 s: ${p.log().slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stopController(signal: NodeJS.Signals = 'SIGKILL') {
      const p = mesh.controller?.proc;
      if (!p || exited(p)) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      await gone;
    },
    async restartAgent(node, signal: NodeJS.Signals = 'SIGTERM') {
      const p = agents.get(node.name)?.proc;
      let reapedAt = performance.now();
      let code: number | null = null;
      if (p && !exited(p)) {
        const gone = new Promise<void>((r) => p.once('exit', (c) => {
          reapedAt = performance.now();
          code = c;
          r();
        }));
        p.kill(signal);
        await gone;
      }
      startAgent(node);
      return { reapedAt, code };
    },
    async stopAgent(node, signal: NodeJS.Signals = 'SIGKILL') {
      const p = agents.get(node.name)?.proc;
      if (!p || exited(p)) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      await gone;
    },
    startAgent(node) {
      const p = agents.get(node.name)?.proc;
      if (p && !exited(p)) throw new Error(`the agent on ${node.name} is already running`);
      startAgent(node);
    },
    cniPaths,
    cniInstallPod,
    async agentStatus(node) {
      const r = await node.execInNode('curl', ['-sf', '-m', '3', `http://${ADMIN_ADDR}/status`], { timeoutMs: 5000 });
      if (r.code !== 0) throw new Error(`agent on ${node.name}: /status unreachable (curl exit ${r.code}); its log: ${agents.get(node.name)?.log().slice(-1500)}`);
      return JSON.parse(r.stdout);
    },
    async agentMetrics(node) {
      const r = await node.execInNode('curl', ['-sf', '-m', '3', `http://${ADMIN_ADDR}/metrics`], { timeoutMs: 5000 });
      if (r.code !== 0) throw new Error(`agent on ${node.name}: /metrics unreachable (curl exit ${r.code})`);
      return r.stdout;
    },
    async waitAgents(ok = () => true, what = 'agents ready and synced', timeoutMs = 60_000, onReady = () => {}) {
      const end = Date.now() + timeoutMs;
      const pending = new Set(cluster.nodes);
      let last = '';
      while (pending.size > 0) {
        for (const node of [...pending]) {
          const a = agents.get(node.name);
          if (a && exited(a.proc)) throw new Error(`the agent on ${node.name} exited (${a.proc.signalCode ?? a.proc.exitCode}): ${a.log().slice(-2000)}`);
          const s = await mesh.agentStatus(node).catch((e: Error) => ({ error: e.message }));
          const ready = (await node.execInNode('curl', ['-sf', '-m', '2', `http://${ADMIN_ADDR}/ready`])).code === 0;
          if (ready && s.discovery?.everSynced && ok(s, node)) {
            pending.delete(node);
            onReady(node);
          } else last = `${node.name}: ready=${ready} discovery=${JSON.stringify(s.discovery ?? s.error)?.slice(0, 400)}`;
        }
        if (pending.size === 0) return;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${last}; ${mesh.logs()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    cli(args, timeoutMs = 20_000) {
      return cluster.execInControlPlane(process.execPath, [...NODE_FLAGS, bin, ...args], { timeoutMs });
    },
    logs() {
      const parts: string[] = [];
      if (mesh.controller) parts.push(`controller${exited(mesh.controller.proc) ? ' (exited)' : ''}: ${mesh.controller.log().slice(-1500)}`);
      if (mesh.identity) parts.push(`identity${exited(mesh.identity.proc) ? ' (exited)' : ''}: ${mesh.identity.log().slice(-1500)}`);
      for (const [name, a] of agents) parts.push(`agent ${name}${exited(a.proc) ? ' (exited)' : ''}: ${a.log().slice(-1500)}`);
      return parts.join('\n');
    },
    async stop() {
      const procs = [mesh.controller?.proc, mesh.identity?.proc, ...[...agents.values()].map((a) => a.proc)].filter((p): p is ChildProcess => p !== undefined && !exited(p));
      await Promise.all(procs.map((p) => new Promise((r) => {
        p.once('exit', r);
        p.kill('SIGKILL');
      })));
      // As uninstall: no pod of the cluster waits for an agent that is gone.
      if (cni) for (const node of cluster.nodes) uninstallCni(node.cni);
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  try {
    const progress = opts.onProgress ?? (() => {});
    await mesh.startController();
    progress(`controller answering at ${controllerAddr}`);
    if (identity) {
      await mesh.startIdentity();
      progress(`identity service answering at ${identityAddr}`);
    }
    for (const node of cluster.nodes) startAgent(node);
    await mesh.waitAgents(undefined, undefined, undefined, (node) => progress(`agent on ${node.name} ready: BPF attached, proxy listening, discovery synced`));
  } catch (e) {
    await mesh.stop();
    throw e;
  }
  return mesh;
}

/**
 * The identity's files, as install would put them in the Secret and ConfigMap: a trust anchor
 * and an issuer made here, and per node the agent's token, minted by the stand-in API server for
 * the agents' ServiceAccount and bound to the node (what kubelet's projected volume would hold).
 */
async function identityFiles(dir: string, cluster: SimCluster, lifetime: string | undefined) {
  const { createIssuer, createTrustAnchor } = await import('../identity/x509.ts');
  const now = Date.now();
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 365 * 86_400_000) });
  const issuer = await createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 30 * 86_400_000) });
  const f = (name: string, text: string, mode = 0o600) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text, { mode });
    return p;
  };
  const anchorsFile = f('ca-bundle.crt', anchor.certPem, 0o644);
  const issuerCertFile = f('issuer.crt', issuer.certPem, 0o644);
  const issuerKeyFile = f('issuer.key', issuer.keyPem);
  return {
    anchorPem: anchor.certPem,
    anchorsFile,
    issuerCertFile,
    issuerKeyFile,
    lifetime,
    tokenFile: (node: string) => f(`token-${node}`, cluster.api.tokens.mint({ ...{ namespace: AGENT_SA.namespace, serviceAccount: AGENT_SA.name }, node, audiences: ['mesh-agent-identity'], expirationSeconds: 7 * 86_400 })),
  };
}
