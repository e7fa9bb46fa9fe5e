// A node network namespace with a server in it, and a pod namespace routed to it over a veth:
// the pod reaches the server on the node IP, as a pod reaches a ClusterIP, and 127.0.0.1 in the
// node namespace is where kubectl port-forward dials. For the loopback gates' tests
// (controller-cli-access, identity-status-access). Needs root; cleans up in teardown, and on a
// crash at exit (leftovers.ts sweeps these names by their dead creator's pid otherwise).
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { meshBin } from '../../src/sim/dist-bin.ts';
import { makeNodeId, nodeNetnsName, podNetnsName } from '../../src/sim/layout.ts';
import { createNodeNetwork, createPodNetwork, deleteNetns, deleteNetnsSync } from '../../src/sim/network.ts';
import { randomLetters } from '../../src/sim/node.ts';
import { execFile, netnsPath, type ExecResult } from '../../src/sim/run.ts';
import { exited } from './procs.ts';
import { requireRoot } from './root.ts';

export interface NodeAndPod {
  nodeNs: string;
  podNs: string;
  /** cmd run in namespace ns. */
  inNs(ns: string, cmd: string, args: string[]): Promise<ExecResult>;
  /** `mesh-agent ARGS` in the node namespace, once its stderr has shown `ready` (a log message); stopped in teardown. */
  meshInNode(args: string[], ready: string): Promise<ChildProcess>;
}

export async function nodeAndPod(t: ExecutionContext, nodeIp: string, podIp: string): Promise<NodeAndPod> {
  requireRoot(t);
  const id = makeNodeId(process.pid, 0, randomLetters());
  const nodeNs = nodeNetnsName(id);
  const podNs = podNetnsName(id, 0);
  const sweep = () => [podNs, nodeNs].forEach(deleteNetnsSync);
  process.once('exit', sweep);
  const procs: ChildProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) {
      p.kill('SIGTERM');
      await exited(p);
    }
    await deleteNetns(podNs);
    await deleteNetns(nodeNs);
    process.off('exit', sweep);
  });
  await createNodeNetwork(nodeNs, nodeIp);
  await createPodNetwork(nodeNs, podNs, `v${id.slice(-6)}`, podIp);
  return {
    nodeNs,
    podNs,
    inNs: (ns, cmd, args) => execFile('nsenter', [`--net=${netnsPath(ns)}`, '--', cmd, ...args], { timeoutMs: 30_000 }),
    async meshInNode(args, ready) {
      const p = spawn('nsenter', [`--net=${netnsPath(nodeNs)}`, '--', process.execPath, '--disable-warning=ExperimentalWarning', meshBin(), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      procs.push(p);
      let log = '';
      await new Promise<void>((resolve, reject) => {
        p.stderr!.setEncoding('utf8').on('data', (d: string) => {
          log += d;
          if (log.includes(`"${ready}"`)) resolve();
        });
        p.once('exit', (code) => reject(new Error(`mesh-agent ${args[0]} exited (${code}) before "${ready}": ${log}`)));
      });
      return p;
    },
  };
}
