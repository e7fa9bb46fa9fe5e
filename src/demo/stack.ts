// Brings the demo up on a simulated node and takes it down again: the node, one pod per
// deployment, the agent (and the controller) in the node namespace, then the services in
// dependency order. Everything it makes belongs to the node, so node.destroy() removes it all.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupLeftovers, createNode, type SimNode, type SimPod } from '../sim/index.ts';
import { isAlive } from '../sim/leftovers.ts';
import { DEPLOYMENTS, NAMESPACE, namespaceObject, podMeta, type Deployment } from './app.ts';
import { JsonLineLog } from './json-lines.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/mesh-agent.ts');
const DEMO_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ADMIN = '127.0.0.1:4191';
/** Where `stat` and `tap` look by default: the demo runs its controller there, in the node namespace. */
export const CONTROLLER = '127.0.0.1:8086';
/** The controller's web dashboard (mesh-agent controller --dashboard-listen). */
export const DASHBOARD = '127.0.0.1:8084';
const TMP_PREFIX = 'mesh-demo-';

export interface StackOptions {
  /** Requests per second the vote bot sends to the web. */
  rps: number;
  /** Run `mesh-agent controller` and have the agent report to it (when this build has one). */
  controller: boolean;
  step: (msg: string) => void;
}

export interface Service {
  deployment: Deployment;
  pod: SimPod;
  proc: ChildProcess;
  log: JsonLineLog;
}

/** Temp dirs of demo runs whose process is gone (a SIGKILLed run cannot remove its own). */
function staleTempDirs(): string[] {
  return fs.readdirSync(os.tmpdir())
    .filter((n) => {
      const m = new RegExp(`^${TMP_PREFIX}(\\d+)-`).exec(n);
      return m !== null && !isAlive(Number(m[1]));
    })
    .map((n) => path.join(os.tmpdir(), n));
}

export class DemoStack {
  node!: SimNode;
  agent!: ChildProcess;
  agentLog!: JsonLineLog;
  controller?: ChildProcess;
  controllerLog?: JsonLineLog;
  readonly services = new Map<string, Service>();
  readonly tmp: string;
  readonly #opts: StackOptions;

  constructor(opts: StackOptions) {
    this.#opts = opts;
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${TMP_PREFIX}${process.pid}-`));
  }

  /** Removes what a killed earlier run left: its processes (through their cgroups), cgroups, namespaces, temp dirs. */
  static async sweepLeftovers(): Promise<string[]> {
    const removed = await cleanupLeftovers();
    for (const dir of staleTempDirs()) {
      if (!fs.existsSync(dir)) continue; // another run's sweep got there first
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(`dir ${dir}`);
    }
    return removed;
  }

  async start(): Promise<void> {
    const { step } = this.#opts;
    step('building a simulated node: a node network namespace and kubelet\'s cgroup tree (systemd driver)');
    this.node = await createNode({ driver: 'systemd', name: 'demo-node' });
    step(`node ${this.node.name} (${this.node.id}): IP ${this.node.nodeIp}, netns ${this.node.nodeNs}, pods cgroup ${this.node.cgroupRoot}`);

    const pods = new Map<string, SimPod>();
    for (const d of DEPLOYMENTS) {
      const meta = podMeta(d);
      const pod = await this.node.addPod({ name: meta.name, namespace: NAMESPACE, labels: meta.labels, ownerReferences: meta.ownerReferences });
      pods.set(d.name, pod);
      step(`pod ${NAMESPACE}/${pod.name}  ${pod.ip}  (deployment ${d.name}: ${d.what})`);
    }
    const podsFile = path.join(this.tmp, 'pods.json');
    const objects = [namespaceObject(), ...[...pods.values()].map((p) => p.toPodObject(this.node.name))];
    fs.writeFileSync(podsFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }, null, 2));

    const reporting: string[] = [];
    if (this.#opts.controller) {
      step(`starting the controller in the node namespace: mesh-agent controller --listen ${CONTROLLER} --dashboard-listen ${DASHBOARD}`);
      this.controller = this.node.spawnInNode(process.execPath, [BIN, 'controller', '--listen', CONTROLLER, '--dashboard-listen', DASHBOARD, '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
      this.controllerLog = new JsonLineLog(this.controller);
      await this.#waitListening(CONTROLLER, this.controller, this.controllerLog, 'the controller');
      // Reports every 2 s, so the first stat refresh already has a few of them.
      reporting.push('--controller', CONTROLLER, '--report-interval', '2000');
    }
    step(`starting the agent in the node namespace: mesh-agent run --pods ${podsFile}${reporting.length ? ` --controller ${CONTROLLER}` : ''} (namespace ${NAMESPACE} is annotated mesh-agent.io/inject=enabled)`);
    this.agent = this.node.spawnInNode(process.execPath, [BIN, 'run', '--node', this.node.name, '--pods', podsFile, '--cgroup-root', this.node.cgroupRoot, '--proxy-addr', `${this.node.nodeIp}:15001`, '--admin', ADMIN, '--drain', '1000', ...reporting, '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.agentLog = new JsonLineLog(this.agent);
    await this.#waitAgentReady();
    step(`agent ready: BPF attached to ${this.node.cgroupRoot}, proxy on ${this.node.nodeIp}:15001, admin on ${ADMIN} (node namespace)`);

    const addr = (name: string) => {
      const d = DEPLOYMENTS.find((x) => x.name === name)!;
      return `${pods.get(name)!.ip}:${d.port}`;
    };
    const argsOf: Record<string, string[]> = {
      emoji: ['--port', '8080'],
      voting: ['--port', '8080'],
      mailer: ['--port', '2525'],
      web: ['--port', '8080', '--emoji', addr('emoji'), '--voting', addr('voting'), '--mailer', addr('mailer')],
      'vote-bot': ['--web', addr('web'), '--rps', String(this.#opts.rps)],
    };
    for (const d of DEPLOYMENTS) {
      const pod = pods.get(d.name)!;
      const proc = pod.spawn(process.execPath, ['--disable-warning=ExperimentalWarning', path.join(DEMO_DIR, d.script), ...argsOf[d.name]], { stdio: ['ignore', 'pipe', 'pipe'] });
      const log = new JsonLineLog(proc);
      this.services.set(d.name, { deployment: d, pod, proc, log });
      await log.waitFor(d.port ? 'listening' : 'started', proc, 20_000, `${d.name} (${d.script})`);
      step(d.port ? `${d.name} listening on ${pod.ip}:${d.port}` : `${d.name} sending ${this.#opts.rps} requests/s to web at ${addr('web')}`);
    }
    const bot = this.services.get('vote-bot')!;
    const first = await bot.log.waitFor('firstAnswer', bot.proc, 20_000, 'vote-bot (its first answer from web)');
    step(`vote-bot: first answer from web through the mesh (${first.path}: HTTP ${first.status})`);
  }

  async #waitAgentReady(): Promise<void> {
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      if (this.agent.exitCode !== null || this.agent.signalCode !== null) {
        throw new Error(`the agent exited (${this.agent.signalCode ?? this.agent.exitCode}) during start: ${this.agentLog.stderr.trim() || '(no output)'}`);
      }
      const r = await this.node.execInNode('curl', ['-sf', '-m', '2', `http://${ADMIN}/ready`]).catch(() => ({ code: 1 }));
      if (r.code === 0) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the agent was not ready within 20 s: ${this.agentLog.stderr.trim() || '(no output)'}`);
  }

  /** Waits until something accepts TCP connections on addr in the node namespace (curl exit 7: refused). */
  async #waitListening(addr: string, proc: ChildProcess, log: JsonLineLog, what: string): Promise<void> {
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.signalCode ?? proc.exitCode}) during start: ${log.stderr.trim() || '(no output)'}`);
      const r = await this.node.execInNode('curl', ['-s', '-o', '/dev/null', '-m', '1', `http://${addr}/`]).catch(() => ({ code: 7 }));
      if (r.code !== 7 && r.code !== 28) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${what} was not listening on ${addr} within 20 s: ${log.stderr.trim() || '(no output)'}`);
  }

  /** The agent's /status document, from inside the node namespace. */
  async agentStatus(): Promise<any> {
    const r = await this.node.execInNode('curl', ['-sf', '-m', '3', `http://${ADMIN}/status`], { timeoutMs: 5000 });
    if (r.code !== 0) throw new Error(`agent /status unreachable (curl exit ${r.code}): ${r.stderr.trim()}`);
    return JSON.parse(r.stdout);
  }

  /** The agent's Prometheus exposition (/metrics), from inside the node namespace. */
  async agentMetrics(): Promise<string> {
    const r = await this.node.execInNode('curl', ['-sf', '-m', '3', `http://${ADMIN}/metrics`], { timeoutMs: 5000 });
    if (r.code !== 0) throw new Error(`agent /metrics unreachable (curl exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Runs a mesh-agent command in the node namespace, as a user in another terminal would. */
  cli(args: string[], timeoutMs = 10_000) {
    return this.node.execInNode(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, ...args], { timeoutMs });
  }

  /** Processes that died unexpectedly, with their last words. */
  crashed(): string[] {
    const out: string[] = [];
    if (this.controller && (this.controller.exitCode !== null || this.controller.signalCode !== null)) out.push(`controller: ${this.controllerLog?.stderr.trim()}`);
    if (this.agent && (this.agent.exitCode !== null || this.agent.signalCode !== null)) out.push(`agent: ${this.agentLog?.stderr.trim()}`);
    for (const [name, s] of this.services) if (s.proc.exitCode !== null || s.proc.signalCode !== null) out.push(`${name}: ${s.log.stderr.trim()}`);
    return out;
  }

  async destroy(): Promise<void> {
    try {
      await this.node?.destroy();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }
}

/**
 * Opens 127.0.0.1:port in this (the machine's) namespace and hands it to a forwarder in the
 * node namespace that connects to 127.0.0.1:port there. Null when the port is taken here:
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
