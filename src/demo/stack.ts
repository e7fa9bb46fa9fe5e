// Brings the demo up on a simulated 3-node cluster and takes it down again: the cluster, the
// application's pods (two replicas per service, on different nodes) and a Service in front of
// each, the mesh (the controller on the control plane, an agent per node), then the services
// in dependency order, each calling the next through its Service's ClusterIP. Everything it
// makes belongs to the cluster, so cluster.destroy() removes it all.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupLeftovers, createCluster, type SimCluster, type SimClusterNode, type SimNode, type SimPod, type SimService } from '../sim/index.ts';
import { isAlive } from '../sim/leftovers.ts';
import { ownedTempPrefix } from '../sim/layout.ts';
import { CONTROLLER_PORT, startMesh, type ClusterMesh } from '../sim/mesh.ts';
import { DEMO_NODES, DEPLOYMENTS, NAMESPACE, nodeOf, podLabels, type Deployment } from './app.ts';
import { JsonLineLog } from './json-lines.ts';
import { StartProgress } from './progress.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The CLI the demo tells the user to run: the sources, so a command typed after an edit runs the edit (the mesh's processes run dist/, src/sim/dist-bin.ts). */
export const BIN = path.join(ROOT, 'bin/mesh-agent.ts');
const DEMO_DIR = path.dirname(fileURLToPath(import.meta.url));
/** The first node's agent admin API (each agent listens on this address in its node). */
export const ADMIN = '127.0.0.1:4191';
/** Where `stat` and `tap` look by default: the controller's port, forwarded from the control plane. */
export const CONTROLLER = `127.0.0.1:${CONTROLLER_PORT}`;
/** The controller's web dashboard (mesh-agent controller --dashboard-listen). */
export const DASHBOARD_PORT = 8084;
export const DASHBOARD = `127.0.0.1:${DASHBOARD_PORT}`;
/**
 * The numbered steps of start(): each node and the control plane made, the API server up, each
 * deployment's pods, their Services settled, the controller, the identity service, each agent,
 * every agent knowing the endpoints, each deployment's processes up, the bot's first answer.
 */
export const START_STEPS = DEMO_NODES + 1 + 1 + DEPLOYMENTS.length + 1 + 2 + DEMO_NODES + 1 + DEPLOYMENTS.length + 1;

export interface StackOptions {
  /** Requests per second the vote bot sends to the web. */
  rps: number;
  step: (msg: string) => void;
}

/** One replica of a deployment: its pod and process. */
export interface Replica {
  pod: SimPod;
  node: SimClusterNode;
  proc: ChildProcess;
  log: JsonLineLog;
}

export interface Service {
  deployment: Deployment;
  replicas: Replica[];
  /** The Service in front of it (none for the bot). */
  service?: SimService;
}

export class DemoStack {
  cluster!: SimCluster;
  mesh!: ClusterMesh;
  readonly services = new Map<string, Service>();
  readonly tmp: string;
  readonly #opts: StackOptions;

  constructor(opts: StackOptions) {
    this.#opts = opts;
    this.tmp = fs.mkdtempSync(ownedTempPrefix('demo'));
  }

  /** Removes what a killed earlier run left: its processes (through their cgroups), cgroups, namespaces, temp dirs. */
  static async sweepLeftovers(): Promise<string[]> {
    return cleanupLeftovers(); // our temp dirs too (ownedTempPrefix)
  }

  /** The first node: where the printed `status` command's agent runs. */
  get node(): SimClusterNode {
    return this.cluster.nodes[0]!;
  }

  async start(): Promise<void> {
    const { step } = this.#opts;
    const progress = new StartProgress(START_STEPS, step);
    const done = (what: string) => progress.done(what);
    step(`building a simulated cluster: ${DEMO_NODES} nodes and a control plane joined by a bridge, each node with kubelet's cgroup tree and a kube-proxy (nftables)`);
    this.cluster = await createCluster({ nodes: DEMO_NODES, onProgress: done });
    const c = this.cluster;
    step(`cluster ${c.id}: ${c.nodes.map((n) => `${n.name} (${n.id}, ${n.nodeIp}, ${n.zone})`).join(', ')}, control plane (${c.controlPlane.id}, ${c.controlPlaneIp}); API server ${c.apiServerUrl}`);

    c.addNamespace(NAMESPACE, { 'mesh-agent.io/inject': 'enabled' });
    for (const [i, d] of DEPLOYMENTS.entries()) {
      const replicas: Replica[] = [];
      const s: Service = { deployment: d, replicas };
      this.services.set(d.name, s);
      for (let r = 0; r < d.replicas; r++) {
        const node = c.nodes[nodeOf(i, r)]!;
        // Each workload runs as its own ServiceAccount, as emojivoto does: its identity in mTLS (docs/identity.md).
        const pod = await c.addPod(node, { deployment: d.name, namespace: NAMESPACE, serviceAccountName: d.name, labels: podLabels(d), ports: d.port ? [{ name: 'main', containerPort: d.port }] : [] });
        replicas.push({ pod, node, proc: undefined as unknown as ChildProcess, log: undefined as unknown as JsonLineLog });
      }
      if (d.service) {
        s.service = c.addService({ name: d.service.name, namespace: NAMESPACE, selector: { app: d.app }, ports: [{ name: 'main', port: d.service.port, targetPort: 'main' }] });
      }
      const where = replicas.map((x) => `${x.pod.name} on ${x.node.name} ${x.pod.ip}`).join(', ');
      done(`deployment ${d.name} (${d.what}): ${where}${s.service ? `; Service ${s.service.name} ${s.service.clusterIP}:${d.service!.port}` : ''}`);
    }
    await c.settled();
    done(`the Services' EndpointSlices and kube-proxy's rules for them written in every node`);

    step(`starting the mesh: mesh-agent controller on the control plane (discovery from the API server, dashboard on :${DASHBOARD_PORT}), mesh-agent identity beside it (the CA: node-bound agent tokens checked with a TokenReview), mesh-agent run on every node (namespace ${NAMESPACE} is annotated mesh-agent.io/inject=enabled)`);
    this.mesh = await startMesh(c, { controllerArgs: ['--dashboard-listen', `0.0.0.0:${DASHBOARD_PORT}`], onProgress: done });
    const endpoints = DEPLOYMENTS.reduce((n, d) => n + (d.service ? d.replicas : 0), 0);
    await this.mesh.waitAgents((st) => st.discovery.endpoints >= endpoints, `every agent to know the ${endpoints} endpoints of the demo's Services`);
    done(`agents on ${c.nodes.map((n) => n.name).join(', ')} know the ${endpoints} endpoints of the demo's Services, streamed by the controller at ${this.mesh.controllerAddr}: BPF attached to each node's pods cgroup, proxy on <node IP>:15001; mTLS between nodes on, certificates from ${this.mesh.identityAddr} (calls between nodes go through TLS 1.3 tunnels between the agents on :15008)`);

    const vip = (name: string) => {
      const d = DEPLOYMENTS.find((x) => x.name === name)!;
      return `${this.services.get(name)!.service!.clusterIP}:${d.service!.port}`;
    };
    const argsOf: Record<string, string[]> = {
      emoji: ['--port', '8080'],
      voting: ['--port', '8080'],
      mailer: ['--port', '2525'],
      web: ['--port', '8080', '--emoji', vip('emoji'), '--voting', vip('voting'), '--mailer', vip('mailer')],
      'vote-bot': ['--web', vip('web'), '--rps', String(this.#opts.rps)],
    };
    for (const d of DEPLOYMENTS) {
      for (const r of this.services.get(d.name)!.replicas) {
        r.proc = r.pod.spawn(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(DEMO_DIR, d.script), ...argsOf[d.name]!], { stdio: ['ignore', 'pipe', 'pipe'] });
        r.log = new JsonLineLog(r.proc);
      }
      for (const r of this.services.get(d.name)!.replicas) await r.log.waitFor(d.port ? 'listening' : 'started', r.proc, 20_000, `${d.name} ${r.pod.name} (${d.script})`);
      done(d.port ? `${d.name}: ${d.replicas} replicas listening on :${d.port}` : `${d.name} sending ${this.#opts.rps} requests/s to web at ${vip('web')} (the web-svc ClusterIP)`);
    }
    const bot = this.services.get('vote-bot')!.replicas[0]!;
    const first = await bot.log.waitFor('firstAnswer', bot.proc, 20_000, 'vote-bot (its first answer from web)');
    done(`vote-bot: first answer from web through the mesh (${first.path}: HTTP ${first.status})`);
  }

  /** A node agent's /status document (the first node's by default). */
  agentStatus(node: SimClusterNode = this.node): Promise<any> {
    return this.mesh.agentStatus(node);
  }

  /** Every agent's /status, in node order. */
  agentStatuses(): Promise<any[]> {
    return Promise.all(this.cluster.nodes.map((n) => this.mesh.agentStatus(n)));
  }

  /** Runs a mesh-agent command where the controller is reachable, as a user's port-forward would. */
  cli(args: string[], timeoutMs = 10_000) {
    return this.mesh.cli(args, timeoutMs);
  }

  /** The latest value a replica's process reported under `key`, summed over a deployment's replicas. */
  total(deployment: string, key: string, field?: string): number | undefined {
    const values = this.services.get(deployment)?.replicas.map((r) => r.log?.latest.get(key)).filter((v) => v !== undefined) ?? [];
    if (values.length === 0) return undefined;
    return values.reduce((sum, v) => sum + Number(field === undefined ? v : v[field]), 0);
  }

  /** Processes that died unexpectedly, with their last words. */
  crashed(): string[] {
    const out: string[] = [];
    const dead = (p?: ChildProcess) => p !== undefined && (p.exitCode !== null || p.signalCode !== null);
    if (dead(this.mesh?.controller?.proc)) out.push(`controller: ${this.mesh.controller!.log().slice(-1500)}`);
    for (const [name, a] of this.mesh?.agents ?? []) if (dead(a.proc)) out.push(`agent on ${name}: ${a.log().slice(-1500)}`);
    for (const [name, s] of this.services) for (const r of s.replicas) if (dead(r.proc)) out.push(`${name} ${r.pod.name}: ${r.log.stderr.trim()}`);
    return out;
  }

  async destroy(): Promise<void> {
    try {
      await this.mesh?.stop();
      await this.cluster?.destroy();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }
}

/**
 * Opens 127.0.0.1:port in this (the machine's) namespace and hands it to a forwarder in the
 * node's namespace that connects to 127.0.0.1:port there. Null when the port is taken here:
 * the caller then tells the user to enter the namespace instead.
 */
export async function forwardPort(node: SimNode, port: number): Promise<ChildProcess | null> {
  const server = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!ok) return null;
  const child = node.spawnInNode(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(DEMO_DIR, 'port-forward.ts')], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`port forwarder for ${port} exited (${code})`)));
    child.on('message', (m: any) => m?.forwarding === port && resolve());
    child.send({ target: port }, server);
  });
  // The child holds its own copy of the socket; ours would accept connections nobody serves.
  server.close();
  return child;
}
