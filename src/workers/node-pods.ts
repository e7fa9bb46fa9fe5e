// A proxy worker's copy of this node's pods (workers/worker.ts), from the tables the main thread
// sends: workloads, declared opaque ports and the pods as the tunnels see them, by IP. Each table
// is a change its tunnels hear: a CONNECT to a pod the worker does not know yet waits for a table
// that has it (a worker starts with the main thread's, empty before the first list; a new pod).
import { PortSet } from '../proxy/ports.ts';
import { Listeners } from '../util/listeners.ts';
import type { Workload, WorkloadResolver } from '../telemetry/workload.ts';
import type { LocalPod } from '../tunnel/server.ts';
import type { PodsTable } from './protocol.ts';

/** This node's pods as the main thread's PodSync knows them: workloads and declared opaque ports by IP. */
export class NodePods implements WorkloadResolver {
  private byIpMap = new Map<string, { workload: Workload; opaque: PortSet | null; local: LocalPod }>();
  private namespaces: Record<string, string> = {};
  private gen = 0;
  private anyMeshed = false;
  /** Told after each table. */
  readonly changes = new Listeners();
  set(t: PodsTable): void {
    const next = new Map<string, { workload: Workload; opaque: PortSet | null; local: LocalPod }>();
    for (const p of t.pods) {
      const local = { namespace: p.workload.namespace, name: p.workload.pod, serviceAccount: p.serviceAccount ?? 'default', meshed: p.meshed ?? false };
      next.set(p.ip, { workload: p.workload, opaque: p.opaquePorts === null ? null : PortSet.parse(p.opaquePorts), local });
    }
    this.byIpMap = next;
    this.anyMeshed = t.pods.some((p) => p.meshed === true);
    this.namespaces = t.namespaces ?? {};
    this.gen = t.generation;
    this.changes.emit();
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
  /** Whether a pod of the table is meshed: its connections come through the proxies. */
  hasMeshed(): boolean {
    return this.anyMeshed;
  }
  generation(): number {
    return this.gen;
  }
  opaquePortsOf(ip: string): PortSet | null {
    return this.byIpMap.get(ip)?.opaque ?? null;
  }
}
