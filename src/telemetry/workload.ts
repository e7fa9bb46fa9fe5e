// Who a pod is, as Linkerd names it in metrics: namespace, pod, and its owning workload.
// Pure: built from the PodInfo the agent already has, no API calls.
import type { PodInfo } from '../k8s/objects.ts';

export interface Workload {
  namespace: string;
  pod: string;
  /** Lower-case owner kind as Linkerd's label keys spell it: deployment, statefulset, daemonset, job, cronjob, replicaset, pod. */
  kind: string;
  /** Owner name; the pod's own name when it has no owner. */
  name: string;
}

/**
 * A ReplicaSet whose pods carry pod-template-hash belongs to a Deployment named without
 * that suffix (how the Deployment controller names them), so no lookup of the
 * ReplicaSet is needed. A Job named <cronjob>-<digits> with a cronjob-created label is kept
 * as a Job: Linkerd reports it as a job too.
 */
export function workloadOf(pod: Pick<PodInfo, 'namespace' | 'name' | 'owner' | 'labels'>): Workload {
  const base = { namespace: pod.namespace, pod: pod.name };
  const owner = pod.owner;
  if (!owner) return { ...base, kind: 'pod', name: pod.name };
  const hash = pod.labels['pod-template-hash'];
  if (owner.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) {
    return { ...base, kind: 'deployment', name: owner.name.slice(0, -hash.length - 1) };
  }
  return { ...base, kind: owner.kind.toLowerCase(), name: owner.name };
}

/** Resolves a pod IP to its workload; null for addresses the agent does not know (outside the mesh). */
export interface WorkloadResolver {
  byIp(ip: string): Workload | null;
  /**
   * A number that changes whenever byIp's answers may have changed (pods came, went or
   * changed), so consumers may cache answers until it moves. Without it they re-resolve
   * every few seconds (docs/metrics.md).
   */
  generation?(): number;
}

export const noWorkloads: WorkloadResolver = { byIp: () => null, generation: () => 0 };

/**
 * The first resolver that knows an address answers (the node's own pods, then discovery's pods
 * of every node). Its generation moves when any of theirs does; without one from each, it has
 * none, and consumers fall back to re-resolving every few seconds.
 */
export function firstKnown(...resolvers: WorkloadResolver[]): WorkloadResolver {
  const all = resolvers.every((r) => r.generation !== undefined);
  return {
    byIp(ip) {
      for (const r of resolvers) {
        const w = r.byIp(ip);
        if (w !== null) return w;
      }
      return null;
    },
    // Each generation only grows, so their sum moves whenever one of them does.
    generation: all ? () => resolvers.reduce((n, r) => n + r.generation!(), 0) : undefined,
  };
}
