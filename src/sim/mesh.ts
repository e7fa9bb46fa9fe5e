// The mesh on a simulated cluster, as `mesh-agent install` would run it: the controller on the
// control-plane node (discovery from the stand-in API server), and on every node an agent in
// cluster mode (its pods from the API server, Services from the controller's stream). Used by
// the cluster tests, the demo and the bench; everything it starts dies with the cluster.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SimCluster, SimClusterNode } from './cluster.ts';
import type { ExecResult } from './run.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The CLI from the sources (Node 24 strips the types); the bench passes dist/bin/mesh-agent.js. */
export const MESH_BIN = path.join(ROOT, 'bin/mesh-agent.ts');
export const CONTROLLER_PORT = 8086;
export const ADMIN_ADDR = '127.0.0.1:4191';
const NODE_FLAGS = ['--disable-warning=ExperimentalWarning'];

export interface MeshOptions {
  bin?: string;
  /** Agents report every this many ms (default 2000, so stat has data soon). */
  reportIntervalMs?: number;
  /** Extra flags for every agent / the controller. */
  agentArgs?: string[];
  controllerArgs?: string[];
  /** Agents log warnings and errors only (default true). */
  quiet?: boolean;
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
  /** Starts (or restarts) the controller and waits until it answers. */
  startController(): Promise<void>;
  /** Kills the controller (SIGKILL by default) and waits for its exit. */
  stopController(signal?: NodeJS.Signals): Promise<void>;
  /** The agent's /status, read in its node's namespace. */
  agentStatus(node: SimClusterNode): Promise<any>;
  agentMetrics(node: SimClusterNode): Promise<string>;
  /** Until every agent is ready and its discovery synced, and `ok` holds for each status (default: always). */
  waitAgents(ok?: (status: any, node: SimClusterNode) => boolean, what?: string, timeoutMs?: number): Promise<void>;
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

export async function startMesh(cluster: SimCluster, opts: MeshOptions = {}): Promise<ClusterMesh> {
  const bin = opts.bin ?? MESH_BIN;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-cluster-'));
  const kubeconfig = path.join(tmp, 'kubeconfig');
  fs.writeFileSync(kubeconfig, cluster.kubeconfig());
  const controllerAddr = `${cluster.controlPlaneIp}:${CONTROLLER_PORT}`;
  const quiet = opts.quiet ?? true;
  const agents = new Map<string, MeshProcess>();
  const mesh: ClusterMesh = {
    controllerAddr,
    controller: null,
    agents,
    async startController() {
      if (mesh.controller && !exited(mesh.controller.proc)) throw new Error('the controller is already running');
      // On every address of the control plane: agents reach it over the fabric, a port-forward on loopback.
      const p = track(cluster.spawnInControlPlane(process.execPath, [...NODE_FLAGS, bin, 'controller', '--listen', `0.0.0.0:${CONTROLLER_PORT}`, '--kubeconfig', kubeconfig, ...(quiet ? ['--quiet'] : []), ...(opts.controllerArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] }));
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
    async waitAgents(ok = () => true, what = 'agents ready and synced', timeoutMs = 60_000) {
      const end = Date.now() + timeoutMs;
      const pending = new Set(cluster.nodes);
      let last = '';
      while (pending.size > 0) {
        for (const node of [...pending]) {
          const a = agents.get(node.name);
          if (a && exited(a.proc)) throw new Error(`the agent on ${node.name} exited (${a.proc.signalCode ?? a.proc.exitCode}): ${a.log().slice(-2000)}`);
          const s = await mesh.agentStatus(node).catch((e: Error) => ({ error: e.message }));
          const ready = (await node.execInNode('curl', ['-sf', '-m', '2', `http://${ADMIN_ADDR}/ready`])).code === 0;
          if (ready && s.discovery?.everSynced && ok(s, node)) pending.delete(node);
          else last = `${node.name}: ready=${ready} discovery=${JSON.stringify(s.discovery ?? s.error)?.slice(0, 400)}`;
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
      for (const [name, a] of agents) parts.push(`agent ${name}${exited(a.proc) ? ' (exited)' : ''}: ${a.log().slice(-1500)}`);
      return parts.join('\n');
    },
    async stop() {
      const procs = [mesh.controller?.proc, ...[...agents.values()].map((a) => a.proc)].filter((p): p is ChildProcess => p !== undefined && !exited(p));
      await Promise.all(procs.map((p) => new Promise((r) => {
        p.once('exit', r);
        p.kill('SIGKILL');
      })));
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  try {
    await mesh.startController();
    for (const node of cluster.nodes) {
      const args = [
        ...NODE_FLAGS, bin, 'run', '--node', node.name, '--kubeconfig', kubeconfig, '--cgroup-root', node.cgroupRoot,
        '--proxy-addr', `${node.nodeIp}:15001`, '--admin', ADMIN_ADDR, '--controller', controllerAddr,
        '--report-interval', String(opts.reportIntervalMs ?? 2000), '--drain', '1000', ...(quiet ? ['--quiet'] : []), ...(opts.agentArgs ?? []),
      ];
      agents.set(node.name, track(node.spawnInNode(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })));
    }
    await mesh.waitAgents();
  } catch (e) {
    await mesh.stop();
    throw e;
  }
  return mesh;
}
