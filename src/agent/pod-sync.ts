// Keeps the kernel's pod map in step with the pods of this node: each snapshot is diffed
// against what the datapath holds, so a changed annotation applies to the next connect().
import { resolvePolicy, samePolicy, type PodPolicy } from '../k8s/annotations.ts';
import { type PodInfo, type Snapshot } from '../k8s/objects.ts';
import { findPodCgroup } from '../k8s/pod-cgroup.ts';
import type { PortRange } from '../datapath/addon.ts';
import type { PortSet } from '../proxy/ports.ts';
import type { DefaultPolicy } from '../policy/model.ts';

/** The part of the datapath pod sync writes to (an interface, so it is testable without BPF). */
export interface PodDatapath {
  setPod(p: { cgroupPath: string; ip?: string | null; skipOutbound?: PortRange[] }): bigint;
  removePod(key: bigint): boolean;
  setSkipInbound(podIp: string, ranges: PortRange[]): void;
}

export interface PodState {
  pod: PodInfo;
  policy: PodPolicy;
  cgroup: string | null;
  key: bigint | null;
  /** Why the pod is not in the datapath although it should be meshed. */
  problem?: string;
}

/** Unique across PodSync instances, so a new one (agent restarted in-process) never repeats an old number. */
let generations = 0;

export class PodSync {
  /**
   * Moves on every snapshot applied and on clear(): consumers that cache what podByIp
   * answered (the metrics' workload labels) start over when it moves.
   */
  generation = ++generations;
  private pods = new Map<string, PodState>();
  private byIp = new Map<string, PodState>();
  private skipInboundIps = new Set<string>();
  private dp: PodDatapath;
  private cgroupRoot: string;
  private nodeName: string | undefined;
  private log: (level: 'info' | 'warn', msg: string) => void;
  private defaultInboundPolicy: DefaultPolicy | undefined;

  constructor(opts: { datapath: PodDatapath; cgroupRoot: string; nodeName?: string; defaultInboundPolicy?: DefaultPolicy; log?: (level: 'info' | 'warn', msg: string) => void }) {
    this.dp = opts.datapath;
    this.defaultInboundPolicy = opts.defaultInboundPolicy;
    this.cgroupRoot = opts.cgroupRoot;
    this.nodeName = opts.nodeName;
    this.log = opts.log ?? (() => {});
  }

  apply(snap: Snapshot): void {
    this.generation = ++generations;
    const seen = new Set<string>();
    for (const pod of snap.pods) {
      if (this.nodeName && pod.nodeName && pod.nodeName !== this.nodeName) continue;
      seen.add(pod.uid);
      this.upsert(pod, snap.namespaces.get(pod.namespace));
    }
    for (const uid of [...this.pods.keys()]) if (!seen.has(uid)) this.remove(uid);
    this.syncSkipInbound();
  }

  private upsert(pod: PodInfo, ns: { annotations: Record<string, string> } | undefined) {
    const prev = this.pods.get(pod.uid);
    const policy = resolvePolicy(pod, ns, prev?.policy, this.defaultInboundPolicy);
    for (const err of policy.errors) {
      if (!prev?.policy.errors.includes(err)) this.log('warn', `pod ${pod.namespace}/${pod.name}: invalid annotation ${err}; keeping the last good value${err.includes('inbound-policy') && !prev ? ' (none yet: deny)' : ''}`);
    }
    const unchanged = prev && samePolicy(prev.policy, policy) && prev.pod.ip === pod.ip && prev.key !== null;
    const state: PodState = { pod, policy, cgroup: prev?.cgroup ?? null, key: prev?.key ?? null };
    if (prev) this.unindex(prev);
    this.pods.set(pod.uid, state);
    if (!policy.meshed) {
      if (state.key !== null) this.dp.removePod(state.key);
      state.key = null;
    } else if (!unchanged) {
      state.cgroup = state.cgroup ?? findPodCgroup(this.cgroupRoot, pod.uid);
      if (!state.cgroup) {
        state.problem = `no cgroup for pod uid ${pod.uid} under ${this.cgroupRoot}`;
      } else {
        try {
          const key = this.dp.setPod({ cgroupPath: state.cgroup, ip: pod.ip ?? null, skipOutbound: policy.skipOutbound.ranges() });
          // The cgroup was recreated under the same path: the old id's entry is nobody's now.
          if (state.key !== null && state.key !== key) this.dp.removePod(state.key);
          state.key = key;
          if (!prev?.key) this.log('info', `meshed pod ${pod.namespace}/${pod.name} (cgroup ${state.cgroup})`);
        } catch (e) {
          state.problem = (e as Error).message;
          // The entry written before must go with the key: forgotten, it kept redirecting the pod
          // that status reports out of the datapath, and nothing removed it later (opt-out, deletion).
          if (state.key !== null) this.dp.removePod(state.key);
          state.key = null;
          state.cgroup = null; // the pod may have been recreated under a new cgroup: look again next time
        }
      }
    } else {
      state.problem = prev.problem;
    }
    this.index(state);
  }

  private remove(uid: string) {
    const s = this.pods.get(uid);
    if (!s) return;
    if (s.key !== null) this.dp.removePod(s.key);
    this.unindex(s);
    this.pods.delete(uid);
    this.log('info', `pod ${s.pod.namespace}/${s.pod.name} gone`);
  }

  private index(s: PodState) {
    if (s.pod.ip) this.byIp.set(s.pod.ip, s);
  }

  private unindex(s: PodState) {
    if (s.pod.ip && this.byIp.get(s.pod.ip) === s) this.byIp.delete(s.pod.ip);
  }

  /** Destination pods' skip-inbound ports act in this node's datapath (DESIGN.md, Inbound). */
  private syncSkipInbound() {
    const want = new Map<string, PortRange[]>();
    for (const s of this.pods.values()) {
      if (s.pod.ip && s.policy.skipInbound.ranges().length) want.set(s.pod.ip, s.policy.skipInbound.ranges());
    }
    for (const ip of this.skipInboundIps) if (!want.has(ip)) this.dp.setSkipInbound(ip, []);
    for (const [ip, ranges] of want) this.dp.setSkipInbound(ip, ranges);
    this.skipInboundIps = new Set(want.keys());
  }

  /** Removes every pod entry (agent shutdown). */
  clear() {
    this.generation = ++generations;
    for (const uid of [...this.pods.keys()]) this.remove(uid);
    this.syncSkipInbound();
  }

  /** Opaque ports the destination pod declares, if it is a pod this agent knows. */
  /** The pod with this IP, for telemetry's workload labels. */
  podByIp(ip: string): PodInfo | undefined {
    return this.byIp.get(ip)?.pod;
  }

  /** This node's pod with this IP, with its policy (the tunnel listener checks its targets against it). */
  stateByIp(ip: string): PodState | undefined {
    return this.byIp.get(ip);
  }

  opaquePortsOf(ip: string): PortSet | null {
    return this.byIp.get(ip)?.policy.opaquePorts ?? null;
  }

  states(): PodState[] {
    return [...this.pods.values()];
  }
}
