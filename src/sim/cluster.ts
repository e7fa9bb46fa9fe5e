// A simulated Kubernetes cluster: N nodes (each a SimNode with its own pod CIDR and kubelet-style
// cgroup tree) and a control-plane node, joined by a fabric namespace's bridge, with routes
// between pod CIDRs through the node IPs; the stand-in API server on the control plane's address;
// an EndpointSlice controller and, in every node namespace, a kube-proxy stand-in (nftables).
// See docs/simulated-node.md.
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addSandbox, chainsPlugins, delSandbox, readChain, writeBaseConfig, type CniDirs, type PluginError, type SandboxRef } from './cni-runtime.ts';
import { pendingPodStatus } from './pod-object.ts';
import { ipBinary } from '../datapath/nft.ts';
import { nft } from './kube-proxy.ts';
import type { KubeObject } from './api-resources.ts';
import { SimApiServer } from './apiserver.ts';
import {
  deploymentOwnership,
  kubernetesEndpointSlice,
  kubernetesService,
  namespaceObject,
  nodeObject,
  serviceObject,
  setReadiness,
  templateHash,
  type ServiceOptions,
} from './cluster-objects.ts';
import { EndpointSliceController } from './endpointslice-controller.ts';
import { trackLive, untrackLive } from './exit-cleanup.ts';
import { KubeProxy } from './kube-proxy.ts';
import { cniDir, fabricNetnsName, makeNodeId, nodeIpFor, podCidrFor, type CgroupDriver } from './layout.ts';
import { listenInNode } from './listen-in.ts';
import { createFabric, deleteNetns, deleteNetnsSync } from './network.ts';
import { createClusterNode, randomLetters, type AddPodOptions, type SimNode, type SimPod } from './node.ts';
import type { ExecOptions, ExecResult } from './run.ts';

export interface ClusterOptions {
  /** Worker nodes (default 3, at most 253). */
  nodes?: number;
  driver?: CgroupDriver;
  /** Node i is in zones[i % zones.length] (default zone-a, zone-b). */
  zones?: string[];
  /** ClusterIPs come from here (default 10.96.0.0/16). */
  serviceCidr?: string;
  /** A failed CNI ADD is retried after initialMs, doubling to maxMs (default 100 ms to 1.6 s: kubelet's pod worker, shortened). */
  cniBackoff?: { initialMs: number; maxMs: number };
  /** Told each stage of the set-up as it completes (each node made, then the API server and kube-proxy up): for a caller that shows progress. */
  onProgress?: (done: string) => void;
}

/** One CNI ADD of a pod's sandbox, as the runtime ran the node's chain. */
export interface CniAttempt {
  attempt: number;
  ok: boolean;
  error?: PluginError;
}

export interface SimClusterNode extends SimNode {
  /** 0-based position in cluster.nodes. */
  index: number;
  /** Its topology.kubernetes.io/zone. */
  zone: string;
  /** The node's CNI configuration and plugins (its /etc/cni/net.d and /opt/cni/bin). */
  cni: CniDirs;
}

export interface ClusterPodOptions extends Omit<AddPodOptions, 'name'> {
  /** Required unless `deployment` is given (then <deployment>-<hash>-<5 chars>, as a ReplicaSet names pods). */
  name?: string;
  /** Owned by this Deployment's ReplicaSet: ownerReferences and the pod-template-hash label, as in a cluster. */
  deployment?: string;
  /** The pod's Ready condition (default true). */
  ready?: boolean;
  /** Each CNI ADD of its sandbox when the node's chain runs plugins (a failed one is retried). */
  onCniAttempt?: (a: CniAttempt) => void;
}

export interface SimService {
  name: string;
  namespace: string;
  /** Its ClusterIP, or "None" for a headless Service. */
  clusterIP: string;
  /** The object as the API server holds it now. */
  object(): KubeObject;
}

export interface SimCluster {
  /** Owner-tagged id (names the fabric namespace). */
  id: string;
  nodes: SimClusterNode[];
  /** A node with no pods, where the API server runs and tests start the controller. */
  controlPlane: SimNode;
  controlPlaneIp: string;
  fabricNs: string;
  serviceCidr: string;
  api: SimApiServer;
  /** http://<controlPlaneIp>:6443, reachable from every node namespace. */
  apiServerUrl: string;
  /** A kubeconfig (JSON, which is YAML) for apiServerUrl. */
  kubeconfig(): string;
  spawnInControlPlane(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  execInControlPlane(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /**
   * Creates the pod on that node and its Pod object (Running, podIP, Ready as asked). The namespace
   * is created if missing. When the node's CNI configuration chains plugins after the sim's own
   * networking, the pod is Pending (no address, not ready) until their ADD succeeds, retried
   * with backoff as kubelet does, and resolves then.
   */
  addPod(node: number | SimNode, o: ClusterPodOptions): Promise<SimPod>;
  /**
   * The node reboots: its pods' processes and sandboxes go, its kernel loses its nftables ruleset,
   * policy routing rules and extra routing tables (kube-proxy writes its table again). Resolves
   * once it is back, with each pod's start (same uid, a new sandbox and address, through the CNI
   * chain): "NS/NAME" -> the new SimPod once its ADD succeeded. Stop its agent first: it would die too.
   */
  rebootNode(node: number | SimNode, onCniAttempt?: (pod: string, a: CniAttempt) => void): Promise<Map<string, Promise<SimPod>>>;
  setPodReady(pod: SimPod, ready: boolean): KubeObject;
  /** Deletes its Pod object, then kills its processes and removes its namespace and cgroup. */
  removePod(pod: SimPod): Promise<void>;
  addService(o: ServiceOptions): SimService;
  /** Replaces the Service's spec with `o` (its ClusterIP stays). */
  updateService(svc: SimService, o: Omit<ServiceOptions, 'name' | 'namespace'>): SimService;
  removeService(svc: SimService): void;
  addNamespace(name: string, annotations?: Record<string, string>, labels?: Record<string, string>): KubeObject;
  /** Creates or replaces any object of a served kind. */
  apply(o: KubeObject): KubeObject;
  delete(kind: string, namespace: string | undefined, name: string): KubeObject;
  /** Resolves once every change made so far is in the EndpointSlices and in every node's nftables rules. */
  settled(): Promise<void>;
  /** `nft list table ip kube-proxy` in a node's namespace (what the kernel holds). */
  kubeProxyRules(node: SimNode): Promise<string>;
  /** Everything, also after a failure: processes, namespaces, cgroups, rules, the API server. Idempotent. */
  destroy(): Promise<void>;
}

export const API_SERVER_PORT = 6443;
const CONTROL_PLANE_SUBNET = 254;
/** The node network: node IPs 10.244.0.<subnet>, a /24 on every node's eth0. */
const NODE_PREFIX = 24;

let clusterSeq = 0;

export async function createCluster(opts: ClusterOptions = {}): Promise<SimCluster> {
  const n = opts.nodes ?? 3;
  if (!Number.isInteger(n) || n < 1 || n >= CONTROL_PLANE_SUBNET) throw new Error(`nodes must be an integer from 1 to ${CONTROL_PLANE_SUBNET - 1}, got ${n}`);
  const zones = opts.zones ?? ['zone-a', 'zone-b'];
  if (zones.length === 0) throw new Error('zones must name at least one zone');
  if (process.getuid?.() !== 0) throw new Error('the simulated cluster creates network namespaces and cgroups: operation not permitted; run as root');
  const cluster = new Cluster(opts.driver ?? 'systemd', opts.serviceCidr ?? '10.96.0.0/16', opts.cniBackoff);
  trackLive(cluster);
  try {
    await cluster.setUp(n, zones, opts.onProgress ?? (() => {}));
  } catch (e) {
    await cluster.destroy().catch(() => {});
    throw e;
  }
  return cluster;
}

class Cluster implements SimCluster {
  readonly id: string;
  readonly fabricNs: string;
  readonly serviceCidr: string;
  readonly controlPlaneIp = nodeIpFor(CONTROL_PLANE_SUBNET);
  readonly apiServerUrl: string;
  readonly api: SimApiServer;
  nodes: SimClusterNode[] = [];
  #controlPlane: SimNode | undefined;
  readonly #driver: CgroupDriver;
  /** Created nodes, the control plane included, also when setUp failed halfway. */
  readonly #made: SimNode[] = [];
  readonly #podNode = new Map<SimPod, SimNode>();
  /** How each pod was asked for, to recreate it after a reboot. */
  readonly #podOpts = new Map<SimPod, ClusterPodOptions & { name: string; namespace: string }>();
  readonly #cniRoot: string;
  readonly #cniBackoff: { initialMs: number; maxMs: number };
  readonly #replicaSetUids = new Map<string, string>();
  #slices: EndpointSliceController | undefined;
  #proxy: KubeProxy | undefined;
  #changes = 0;
  #reported = new Set<string>();
  #destroying: Promise<void> | undefined;
  #destroyed = false;

  constructor(driver: CgroupDriver, serviceCidr: string, cniBackoff = { initialMs: 100, maxMs: 1600 }) {
    this.#driver = driver;
    this.#cniBackoff = cniBackoff;
    this.serviceCidr = serviceCidr;
    this.id = makeNodeId(process.pid, ++clusterSeq, randomLetters());
    this.fabricNs = fabricNetnsName(this.id);
    this.#cniRoot = cniDir(this.id);
    this.apiServerUrl = `http://${this.controlPlaneIp}:${API_SERVER_PORT}`;
    this.api = new SimApiServer({ serviceCidr });
  }

  get controlPlane(): SimNode {
    if (!this.#controlPlane) throw new Error(`simulated cluster ${this.id} has no control plane (set-up failed or destroyed)`);
    return this.#controlPlane;
  }

  async setUp(n: number, zones: string[], progress: (done: string) => void): Promise<void> {
    await createFabric(this.fabricNs);
    const subnets = [...Array.from({ length: n }, (_, i) => i + 1), CONTROL_PLANE_SUBNET];
    const make = async (subnet: number): Promise<SimNode> => {
      const others = subnets.filter((s) => s !== subnet);
      const node = await createClusterNode(this.#driver, subnet === CONTROL_PLANE_SUBNET ? 'control-plane' : `sim-node-${subnet}`, {
        subnet,
        uplink: {
          fabricNs: this.fabricNs,
          port: `node${subnet}`,
          prefix: NODE_PREFIX,
          routes: [...others.map((s) => ({ cidr: podCidrFor(s), via: nodeIpFor(s) })), { cidr: this.serviceCidr }],
        },
      });
      this.#made.push(node);
      progress(`node ${node.name} made (${node.nodeIp}): its network namespace, cgroup tree and port on the bridge`);
      return node;
    };
    const made = await Promise.allSettled(subnets.map(make));
    const failed = made.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const nodes = made.map((r) => (r as PromiseFulfilledResult<SimNode>).value);
    this.#controlPlane = nodes.pop()!;
    this.nodes = nodes.map((node, index) => {
      const cni = { confDir: path.join(this.#cniRoot, node.name, 'net.d'), binDir: path.join(this.#cniRoot, node.name, 'bin') };
      writeBaseConfig(cni);
      return Object.assign(node, { index, zone: zones[index % zones.length], cni }) as SimClusterNode;
    });

    await this.api.listenOn(await listenInNode(this.controlPlane, this.controlPlaneIp, API_SERVER_PORT), this.apiServerUrl);
    this.api.subscribe('Pod', () => this.#changes++);
    this.api.subscribe('Service', () => this.#changes++);
    this.api.subscribe('EndpointSlice', () => this.#changes++);
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) this.api.create(namespaceObject(ns));
    this.api.create(nodeObject({ name: this.controlPlane.name, ip: this.controlPlaneIp, podCidr: this.controlPlane.podCidr, zone: zones[0], controlPlane: true }));
    for (const node of this.nodes) this.api.create(nodeObject({ name: node.name, ip: node.nodeIp, podCidr: node.podCidr, zone: node.zone, controlPlane: false }));
    const first = this.serviceCidr.replace(/\.\d+\/\d+$/, '.1');
    this.api.create(kubernetesService(first));
    this.api.create(kubernetesEndpointSlice(this.controlPlaneIp, API_SERVER_PORT));

    const report = (what: string) => (e: Error) => {
      // Once per message: settled() rejects with it too, where a test waits.
      if (!this.#reported.has(e.message)) process.stderr.write(`mesh-sim: ${what}: ${e.message}\n`);
      this.#reported.add(e.message);
    };
    this.#slices = new EndpointSliceController(this.api, report('EndpointSlice controller'));
    this.#proxy = new KubeProxy(this.api, [...this.nodes, this.controlPlane], this.serviceCidr, report('kube-proxy'));
    await this.settled();
    progress(`API server up at ${this.apiServerUrl}, kube-proxy's rules written in every node`);
  }

  #assertUsable(): void {
    if (this.#destroyed || this.#destroying) throw new Error(`simulated cluster ${this.id} is destroyed`);
  }

  kubeconfig(): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'sim',
      // Plain HTTP: @kubernetes/client-node refuses http:// unless TLS verification is off.
      clusters: [{ name: 'sim', cluster: { server: this.apiServerUrl, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'sim', user: { token: 'sim' } }],
      contexts: [{ name: 'sim', context: { cluster: 'sim', user: 'sim' } }],
    });
  }

  spawnInControlPlane(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess {
    this.#assertUsable();
    return this.controlPlane.spawnInNode(cmd, args, opts);
  }

  execInControlPlane(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    this.#assertUsable();
    return this.controlPlane.execInNode(cmd, args, opts);
  }

  #node(node: number | SimNode): SimNode {
    const found = typeof node === 'number' ? this.nodes[node] : this.nodes.find((x) => x === node);
    if (!found) throw new Error(`node ${typeof node === 'number' ? node : node.name} is not a worker of simulated cluster ${this.id} (it has ${this.nodes.length}: 0-${this.nodes.length - 1})`);
    return found;
  }

  #ensureNamespace(name: string): void {
    if (!this.api.get('Namespace', undefined, name)) this.api.create(namespaceObject(name));
  }

  async addPod(nodeRef: number | SimNode, o: ClusterPodOptions): Promise<SimPod> {
    this.#assertUsable();
    const node = this.#node(nodeRef);
    const namespace = o.namespace ?? 'default';
    let { name, labels, ownerReferences } = o;
    if (o.deployment !== undefined) {
      const key = `${namespace}/${o.deployment}`;
      if (!this.#replicaSetUids.has(key)) this.#replicaSetUids.set(key, randomUUID());
      const owned = deploymentOwnership(namespace, o.deployment, this.#replicaSetUids.get(key)!);
      labels = { ...owned.labels, ...labels };
      ownerReferences ??= owned.ownerReferences;
      name ??= `${owned.ownerReferences[0].name}-${templateHash(randomUUID(), 5)}`;
    }
    if (name === undefined) throw new Error('addPod needs a name, or a deployment to name the pod after');
    const asked = { ...o, name, namespace, labels, ownerReferences };
    const pod = await node.addPod(asked);
    let chained = false;
    try {
      this.#ensureNamespace(namespace);
      const obj = pod.toPodObject(node.name) as KubeObject;
      setReadiness(obj, o.ready ?? true);
      chained = !pod.hostNetwork && chainsPlugins(readChain((node as SimClusterNode).cni.confDir));
      // The API server has the pod before kubelet sets up its sandbox: Pending, no address yet.
      if (chained) pendingPodStatus(obj);
      this.api.create(obj);
    } catch (e) {
      await node.removePod(pod).catch(() => {});
      throw e;
    }
    this.#podNode.set(pod, node);
    this.#podOpts.set(pod, asked);
    if (chained) await this.#startSandbox(node as SimClusterNode, pod, o.ready ?? true, o.onCniAttempt);
    return pod;
  }

  #sandbox(pod: SimPod): SandboxRef {
    return { containerId: pod.containerId, netns: pod.netns, namespace: pod.namespace, name: pod.name, uid: pod.uid, ip: pod.ip };
  }

  /** The runtime's ADD through the node's chain, retried with backoff until it succeeds; then kubelet reports the pod running. */
  async #startSandbox(node: SimClusterNode, pod: SimPod, ready: boolean, onAttempt?: (a: CniAttempt) => void): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.#assertUsable();
      if (!this.#podNode.has(pod)) throw new Error(`pod ${pod.namespace}/${pod.name} was removed before its sandbox came up`);
      const chain = readChain(node.cni.confDir);
      const r = chainsPlugins(chain) ? await addSandbox(node.cni, chain, this.#sandbox(pod)) : { ok: true as const };
      onAttempt?.(r.ok ? { attempt, ok: true } : { attempt, ok: false, error: r.error });
      if (r.ok) break;
      await new Promise((res) => setTimeout(res, Math.min(this.#cniBackoff.initialMs * 2 ** (attempt - 1), this.#cniBackoff.maxMs)));
    }
    this.#assertUsable();
    if (!this.#podNode.has(pod)) throw new Error(`pod ${pod.namespace}/${pod.name} was removed before its sandbox came up`);
    const started = pod.toPodObject(node.name) as KubeObject;
    setReadiness(started, ready);
    this.api.patch('Pod', pod.namespace, pod.name, (cur) => {
      cur.status = started.status;
    });
  }

  async rebootNode(nodeRef: number | SimNode, onCniAttempt?: (pod: string, a: CniAttempt) => void): Promise<Map<string, Promise<SimPod>>> {
    this.#assertUsable();
    const node = this.#node(nodeRef) as SimClusterNode;
    const pods = [...this.#podNode].filter(([, n]) => n === node).map(([p]) => p);
    const asked = pods.map((p) => ({ ...this.#podOpts.get(p)!, uid: p.uid }));
    for (const p of pods) {
      this.#podNode.delete(p);
      this.#podOpts.delete(p);
      await node.removePod(p);
    }
    // What a reboot clears in the kernel: nftables, policy routing, routing tables but main and local.
    await nft(node.nodeNs, ['flush', 'ruleset']);
    const ip = (args: string[]) => node.execInNode(ipBinary(), args).then((r) => {
      if (r.code !== 0) throw new Error(`ip ${args.join(' ')} in ${node.nodeNs} failed: ${r.stderr.trim()}`);
      return r.stdout;
    });
    await ip(['-4', 'rule', 'flush']);
    await ip(['-4', 'rule', 'add', 'pref', '32766', 'table', 'main']);
    await ip(['-4', 'rule', 'add', 'pref', '32767', 'table', 'default']);
    const tables = new Set([...(await ip(['-4', 'route', 'show', 'table', 'all'])).matchAll(/\btable (\d+)\b/g)].map((m) => m[1]));
    for (const t of tables) await ip(['-4', 'route', 'flush', 'table', t]);
    await this.#proxy?.resync(node.nodeNs);
    // kubelet is back: the API server still has the pods; each gets a new sandbox.
    const started = new Map<string, Promise<SimPod>>();
    for (const o of asked) {
      const key = `${o.namespace}/${o.name}`;
      this.api.patch('Pod', o.namespace, o.name, (cur) => pendingPodStatus(cur));
      const p = (async () => {
        const pod = await node.addPod(o);
        this.#podNode.set(pod, node);
        this.#podOpts.set(pod, o);
        await this.#startSandbox(node, pod, o.ready ?? true, onCniAttempt && ((a) => onCniAttempt(key, a)));
        return pod;
      })();
      p.catch(() => {}); // the caller awaits what it needs; destroy() ends the rest
      started.set(key, p);
    }
    return started;
  }

  setPodReady(pod: SimPod, ready: boolean): KubeObject {
    this.#assertUsable();
    return this.api.patch('Pod', pod.namespace, pod.name, (o) => setReadiness(o, ready));
  }

  async removePod(pod: SimPod): Promise<void> {
    const node = this.#podNode.get(pod);
    if (!node) throw new Error(`pod ${pod.namespace}/${pod.name} was not added through simulated cluster ${this.id}`);
    if (this.api.get('Pod', pod.namespace, pod.name)) this.api.delete('Pod', pod.namespace, pod.name);
    this.#podNode.delete(pod);
    this.#podOpts.delete(pod);
    const cni = (node as SimClusterNode).cni;
    const chain = cni && !pod.hostNetwork ? readChain(cni.confDir) : null;
    if (chain && chainsPlugins(chain)) await delSandbox(cni, chain, this.#sandbox(pod));
    await node.removePod(pod);
  }

  #service(namespace: string, name: string): SimService {
    const api = this.api;
    const clusterIP = api.get('Service', namespace, name)!.spec.clusterIP;
    return {
      name,
      namespace,
      clusterIP,
      object() {
        const o = api.get('Service', namespace, name);
        if (!o) throw new Error(`Service ${namespace}/${name} no longer exists`);
        return o;
      },
    };
  }

  addService(o: ServiceOptions): SimService {
    this.#assertUsable();
    const ns = o.namespace ?? 'default';
    this.#ensureNamespace(ns);
    this.api.create(serviceObject({ ...o, namespace: ns }));
    return this.#service(ns, o.name);
  }

  updateService(svc: SimService, o: Omit<ServiceOptions, 'name' | 'namespace'>): SimService {
    this.#assertUsable();
    const next = serviceObject({ ...o, name: svc.name, namespace: svc.namespace });
    const old = svc.object();
    if (next.spec.clusterIP === undefined) next.spec.clusterIP = old.spec.clusterIP;
    this.api.apply({ ...next, metadata: { ...old.metadata, labels: next.metadata.labels, annotations: next.metadata.annotations } });
    return this.#service(svc.namespace, svc.name);
  }

  removeService(svc: SimService): void {
    this.#assertUsable();
    this.api.delete('Service', svc.namespace, svc.name);
  }

  addNamespace(name: string, annotations: Record<string, string> = {}, labels: Record<string, string> = {}): KubeObject {
    this.#assertUsable();
    return this.api.apply(namespaceObject(name, annotations, labels));
  }

  apply(o: KubeObject): KubeObject {
    this.#assertUsable();
    return this.api.apply(o);
  }

  delete(kind: string, namespace: string | undefined, name: string): KubeObject {
    this.#assertUsable();
    return this.api.delete(kind, namespace, name);
  }

  async settled(): Promise<void> {
    for (;;) {
      const before = this.#changes;
      await this.#slices?.idle();
      await this.#proxy?.idle();
      if (this.#changes === before) return;
    }
  }

  kubeProxyRules(node: SimNode): Promise<string> {
    if (!this.#proxy) throw new Error(`simulated cluster ${this.id} has no kube-proxy (set-up failed or destroyed)`);
    return this.#proxy.listRules(node.nodeNs);
  }

  destroy(): Promise<void> {
    if (this.#destroyed) return Promise.resolve();
    this.#destroying ??= this.#teardown().finally(() => (this.#destroying = undefined));
    return this.#destroying;
  }

  async #teardown(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (f: () => Promise<unknown> | undefined) => {
      try {
        await f();
      } catch (e) {
        errors.push((e as Error).message);
      }
    };
    await attempt(() => this.#slices?.stop());
    await attempt(() => this.#proxy?.stop());
    await attempt(() => this.api.close());
    await Promise.all(this.#made.map((n) => attempt(() => n.destroy())));
    await attempt(() => deleteNetns(this.fabricNs));
    await attempt(async () => fs.rmSync(this.#cniRoot, { recursive: true, force: true }));
    if (errors.length) throw new Error(`destroying simulated cluster ${this.id}: ${errors.join('; ')}`);
    this.#destroyed = true;
    untrackLive(this);
  }

  /** Exit handler: the nodes are tracked (and swept) on their own; the fabric is ours. */
  destroySync(): void {
    if (this.#destroyed) return;
    for (const n of this.#made) {
      try {
        (n as unknown as { destroySync(): void }).destroySync();
      } catch {
        // best effort: cleanupLeftovers() catches what this misses
      }
    }
    deleteNetnsSync(this.fabricNs);
    fs.rmSync(this.#cniRoot, { recursive: true, force: true });
    this.#destroyed = true;
  }
}
