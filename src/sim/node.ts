// A simulated Kubernetes node: a node network namespace, Calico-style pod networking and
// kubelet's pod cgroup layout under a private cgroup root. See docs/simulated-node.md.
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { destroyCgroupTree, destroyCgroupTreeSync, findCgroup2Mount, makeCgroup } from './cgroup2.ts';
import { trackLive, untrackLive } from './exit-cleanup.ts';
import {
  containerCgroupName,
  hostVethName,
  makeNodeId,
  nodeCgroupName,
  nodeIpFor,
  nodeNetnsName,
  podCgroupPath,
  podCidrFor,
  podIpFor,
  podNetnsName,
  podsCgroupName,
  qosCgroupDirs,
  subnetOf,
  type CgroupDriver,
  type QosClass,
} from './layout.ts';
import { createNodeNetwork, createPodNetwork, deleteNetns, deleteNetnsSync, deletePodNetwork, listNetns, type Uplink } from './network.ts';
import { podObject, type ContainerPort } from './pod-object.ts';
import { collect, spawnIn, type ExecOptions, type ExecResult } from './run.ts';

export interface AddPodOptions {
  name: string;
  namespace?: string;
  /** Default Burstable, the most common class. */
  qos?: QosClass;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: object[];
  hostNetwork?: boolean;
  /** Pod object only: spec.serviceAccountName (default "default", as the API server's admission sets it). */
  serviceAccountName?: string;
  /** Pod object only: the container's ports, so a Service's named targetPort resolves. */
  ports?: ContainerPort[];
}

export interface SimPod {
  name: string;
  namespace: string;
  uid: string;
  ip: string;
  /** The pod's netns name; the node's for hostNetwork pods. */
  netns: string;
  qos: QosClass;
  hostNetwork: boolean;
  containerId: string;
  /** Absolute path of the pod-level cgroup (kubelet layout for the driver and QoS). */
  podCgroup: string;
  /** Container cgroup below podCgroup where the pod's processes run. */
  containerCgroup: string;
  /** Joins containerCgroup, then enters the pod netns. */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  exec(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  toPodObject(nodeName: string): object;
}

export interface SimNode {
  id: string;
  /** Kubernetes node name (spec.nodeName of its pods). */
  name: string;
  nodeNs: string;
  nodeIp: string;
  /** The node's pod addresses (10.244.<subnet>.0/24). */
  podCidr: string;
  /** Private pods cgroup root; the agent attaches BPF here. */
  cgroupRoot: string;
  /** Cgroup of node processes (spawnInNode), a sibling of cgroupRoot, outside every pod cgroup. */
  nodeCgroup: string;
  driver: CgroupDriver;
  addPod(p: AddPodOptions): Promise<SimPod>;
  removePod(pod: SimPod): Promise<void>;
  /** Runs a process in the node namespace (NOT in any pod cgroup), e.g. the agent. */
  spawnInNode(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  execInNode(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  pods(): SimPod[];
  /** Kills every process it started, removes veths, netns and cgroups. Idempotent. */
  destroy(): Promise<void>;
}

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

let nodeSeq = 0;

/** Children not yet exited. Killed by pid before the cgroup kill: a child that has not yet
 *  written itself into its cgroup is invisible to cgroup.kill (it cannot fork before that). */
class Children {
  readonly #live = new Set<ChildProcess>();

  add(child: ChildProcess): ChildProcess {
    if (child.exitCode === null && child.signalCode === null) {
      this.#live.add(child);
      child.once('exit', () => this.#live.delete(child));
    }
    return child;
  }

  killAll(): void {
    for (const c of this.#live) c.kill('SIGKILL');
  }
}

/** Three random letters for owner-tagged ids (a recycled pid must not meet a crashed run's names). */
export function randomLetters(): string {
  return [...randomBytes(3)].map((b) => String.fromCharCode(97 + (b % 26))).join('');
}

export async function createNode(opts: { driver?: CgroupDriver; name?: string } = {}): Promise<SimNode> {
  return makeNode(opts.driver ?? 'systemd', opts.name);
}

/** Where a cluster puts one of its nodes (src/sim/cluster.ts); standalone nodes have none. */
export interface Placement {
  /** 1..254: node IP 10.244.0.<subnet>, pods 10.244.<subnet>.0/24. */
  subnet: number;
  uplink: Uplink;
}

/** A node of a cluster: numbered and linked to the fabric by the cluster. */
export function createClusterNode(driver: CgroupDriver, name: string, placement: Placement): Promise<SimNode> {
  return makeNode(driver, name, placement);
}

async function makeNode(driver: CgroupDriver, name: string | undefined, placement?: Placement): Promise<SimNode> {
  if (process.getuid?.() !== 0) {
    throw new Error('the simulated node creates network namespaces and cgroups: operation not permitted; run as root');
  }
  const node = new Node(findCgroup2Mount(), ++nodeSeq, driver, name, placement);
  trackLive(node); // before anything exists, so a crash mid-creation is still swept on exit
  try {
    await node.setUp();
  } catch (e) {
    await node.destroy().catch(() => {});
    throw e;
  }
  return node;
}

class Pod implements SimPod {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly ip: string;
  readonly netns: string;
  readonly qos: QosClass;
  readonly hostNetwork: boolean;
  readonly containerId: string;
  readonly podCgroup: string;
  readonly containerCgroup: string;
  readonly hostVeth: string | undefined;
  readonly #node: Node;
  readonly #opts: AddPodOptions;
  readonly #createdAt = new Date();
  readonly children = new Children();

  constructor(node: Node, index: number, o: AddPodOptions) {
    this.#node = node;
    this.#opts = o;
    this.name = o.name;
    this.namespace = o.namespace ?? 'default';
    this.uid = o.uid ?? randomUUID();
    this.qos = o.qos ?? 'Burstable';
    this.hostNetwork = o.hostNetwork ?? false;
    this.containerId = randomBytes(32).toString('hex');
    this.podCgroup = path.join(node.cgroupRoot, podCgroupPath(node.driver, this.qos, this.uid));
    this.containerCgroup = path.join(this.podCgroup, containerCgroupName(node.driver, this.containerId));
    this.netns = this.hostNetwork ? node.nodeNs : podNetnsName(node.id, index);
    this.ip = this.hostNetwork ? node.nodeIp : podIpFor(node.subnet, index);
    this.hostVeth = this.hostNetwork ? undefined : hostVethName(node.id, index);
  }

  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess {
    this.#node.assertUsable();
    return this.children.add(spawnIn(this.containerCgroup, this.netns, cmd, args, opts));
  }

  exec(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    this.#node.assertUsable();
    return collect(this.spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), opts);
  }

  toPodObject(nodeName: string): object {
    return podObject(
      {
        name: this.name,
        namespace: this.namespace,
        uid: this.uid,
        ip: this.ip,
        hostIp: this.#node.nodeIp,
        qos: this.qos,
        hostNetwork: this.hostNetwork,
        containerId: this.containerId,
        labels: this.#opts.labels ?? {},
        annotations: this.#opts.annotations ?? {},
        ownerReferences: this.#opts.ownerReferences,
        serviceAccountName: this.#opts.serviceAccountName,
        ports: this.#opts.ports,
        createdAt: this.#createdAt,
      },
      nodeName,
    );
  }

  async teardown(): Promise<void> {
    this.children.killAll();
    await destroyCgroupTree(this.podCgroup);
    if (this.hostVeth) await deletePodNetwork(this.#node.nodeNs, this.netns, this.hostVeth);
  }
}

class Node implements SimNode {
  readonly id: string;
  readonly name: string;
  readonly seq: number;
  readonly subnet: number;
  readonly nodeNs: string;
  readonly nodeIp: string;
  readonly podCidr: string;
  readonly cgroupRoot: string;
  readonly nodeCgroup: string;
  readonly driver: CgroupDriver;
  readonly #uplink: Uplink | undefined;
  readonly #pods = new Map<string, Pod>();
  #nextPodIndex = 0;
  readonly #children = new Children();
  #destroyed = false;
  #destroying: Promise<void> | undefined;

  constructor(cgroup2: string, seq: number, driver: CgroupDriver, name: string | undefined, placement: Placement | undefined) {
    if (driver !== 'systemd' && driver !== 'cgroupfs') throw new Error(`unknown cgroup driver ${String(driver)}; use 'systemd' or 'cgroupfs'`);
    this.seq = seq;
    this.subnet = placement?.subnet ?? subnetOf(seq);
    this.id = makeNodeId(process.pid, seq, randomLetters());
    this.name = name ?? `sim-node-${seq}`;
    this.driver = driver;
    this.nodeNs = nodeNetnsName(this.id);
    this.nodeIp = nodeIpFor(this.subnet);
    this.podCidr = podCidrFor(this.subnet);
    this.#uplink = placement?.uplink;
    this.cgroupRoot = path.join(cgroup2, podsCgroupName(this.id));
    this.nodeCgroup = path.join(cgroup2, nodeCgroupName(this.id));
  }

  async setUp(): Promise<void> {
    await makeCgroup(this.nodeCgroup);
    for (const d of qosCgroupDirs(this.driver)) await makeCgroup(path.join(this.cgroupRoot, d));
    await createNodeNetwork(this.nodeNs, this.nodeIp, this.#uplink);
  }

  assertUsable(): void {
    if (this.#destroyed || this.#destroying) throw new Error(`simulated node ${this.id} is destroyed`);
  }

  async addPod(o: AddPodOptions): Promise<SimPod> {
    this.assertUsable();
    if (!DNS_LABEL.test(o.name)) throw new Error(`pod name ${JSON.stringify(o.name)} is not a DNS label`);
    if (o.uid !== undefined && !UID.test(o.uid)) throw new Error(`pod uid ${JSON.stringify(o.uid)} is not a lowercase UUID`);
    const pod = new Pod(this, this.#nextPodIndex++, o);
    const key = `${pod.namespace}/${pod.name}`;
    if (this.#pods.has(key)) throw new Error(`pod ${key} already exists on ${this.id}`);
    // Registered first: a failure halfway leaves pieces destroy() must find.
    this.#pods.set(key, pod);
    try {
      await makeCgroup(pod.containerCgroup);
      if (pod.hostVeth) await createPodNetwork(this.nodeNs, pod.netns, pod.hostVeth, pod.ip);
    } catch (e) {
      await pod.teardown().catch(() => {});
      this.#pods.delete(key);
      throw e;
    }
    return pod;
  }

  async removePod(pod: SimPod): Promise<void> {
    const key = `${pod.namespace}/${pod.name}`;
    const mine = this.#pods.get(key);
    if (mine !== pod) throw new Error(`pod ${key} is not on simulated node ${this.id}`);
    await mine.teardown();
    this.#pods.delete(key);
  }

  spawnInNode(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess {
    this.assertUsable();
    return this.#children.add(spawnIn(this.nodeCgroup, this.nodeNs, cmd, args, opts));
  }

  execInNode(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    this.assertUsable();
    return collect(this.spawnInNode(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), opts);
  }

  pods(): SimPod[] {
    return [...this.#pods.values()];
  }

  destroy(): Promise<void> {
    if (this.#destroyed) return Promise.resolve();
    this.#destroying ??= this.#teardown().finally(() => (this.#destroying = undefined));
    return this.#destroying;
  }

  /** Tries every step even when one fails, then reports all failures. */
  async #teardown(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (e) {
        errors.push((e as Error).message);
      }
    };
    this.#killChildren();
    // One cgroup.kill at the root takes every pod's processes at once.
    await attempt(() => destroyCgroupTree(this.cgroupRoot));
    await attempt(() => destroyCgroupTree(this.nodeCgroup));
    for (const pod of this.#pods.values()) await attempt(() => pod.teardown());
    for (const ns of this.#ownNetns()) await attempt(() => deleteNetns(ns));
    if (errors.length) throw new Error(`destroying simulated node ${this.id}: ${errors.join('; ')}`);
    this.#pods.clear();
    this.#destroyed = true;
    untrackLive(this);
  }

  /** Pod namespaces first, the node's last; found by name so half-made pods are included. */
  #ownNetns(): string[] {
    const mine = listNetns().filter((n) => n.startsWith(`${this.id}-`) && n !== this.nodeNs);
    return [...mine, this.nodeNs];
  }

  #killChildren(): void {
    this.#children.killAll();
    for (const p of this.#pods.values()) p.children.killAll();
  }

  destroySync(): void {
    if (this.#destroyed) return;
    this.#killChildren();
    destroyCgroupTreeSync(this.cgroupRoot);
    destroyCgroupTreeSync(this.nodeCgroup);
    for (const ns of this.#ownNetns()) deleteNetnsSync(ns);
    this.#destroyed = true;
  }
}
