// A proxy worker's copy of this node's pods (workers/worker.ts), from the tables the main thread
// sends: workloads, declared opaque ports and the pods as the tunnels see them, by IP; and whether
// the main thread had listed the pods when it sent the table (a worker starts before that, and
// its tunnels wait for the list: tunnel/server.ts).
import { SyncFlag } from '../discovery/first-sync.ts';
import { PortSet } from '../proxy/ports.ts';
import type { Workload, WorkloadResolver } from '../telemetry/workload.ts';
import type { LocalPod } from '../tunnel/server.ts';
import type { PodsTable } from './protocol.ts';

/** This node's pods as the main thread's PodSync knows them: workloads and declared opaque ports by IP. */
export class NodePods implements WorkloadResolver {
  private byIpMap = new Map<string, { workload: Workload; opaque: PortSet | null; local: LocalPod }>();
  private namespaces: Record<string, string> = {};
  private gen = 0;
  /** The main thread had listed the pods when it sent the table (a worker starts before that). */
  readonly listed = new SyncFlag();
  set(t: PodsTable): void {
    const next = new Map<string, { workload: Workload; opaque: PortSet | null; local: LocalPod }>();
    for (const p of t.pods) {
      const local = { namespace: p.workload.namespace, name: p.workload.pod, serviceAccount: p.serviceAccount ?? 'default', meshed: p.meshed ?? false };
      next.set(p.ip, { workload: p.workload, opaque: p.opaquePorts === null ? null : PortSet.parse(p.opaquePorts), local });
    }
    this.byIpMap = next;
    this.namespaces = t.namespaces ?? {};
    this.gen = t.generation;
    if (t.listed) this.listed.set();
  }
  /** The pod as the tunnels see it. */
  local(ip: string): LocalPod | null {
    return this.byIpMap.get(ip)?.local ?? null;
  }
  namespaceInject(ns: string): string | undefined {
    return this.namespaces[ns];
  }
  byIp(ip: string): Workload | null {
    return this.byIpMap.get(ip)?.workload ?? null;
  }
  generation(): number {
    return this.gen;
  }
  opaquePortsOf(ip: string): PortSet | null {
    return this.byIpMap.get(ip)?.opaque ?? null;
  }
}
