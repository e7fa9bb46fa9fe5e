// A namespace's topology graph from the dashboard API's rows: pure, so the page and the tests
// build the same picture.
import type { EdgeRow, WorkloadRow } from '../../../src/dashboard/views.ts';
import { refKey, type WorkloadRef } from '../../../src/dashboard/workload-ref.ts';
import { href } from './route.ts';

export interface TopoNode {
  id: string;
  label: string;
  href?: string;
  external?: boolean;
}
export interface TopoEdge {
  from: string;
  to: string;
  successRate: number | null;
  rps: number | null;
  requests: number;
}

/**
 * The namespace's workloads, and every end of an edge (clients outside it, external
 * destinations) as a node too, whether or not the workloads' list has loaded yet.
 */
export function graphOf(ns: string, rows: readonly WorkloadRow[], edges: readonly EdgeRow[]): { nodes: TopoNode[]; edges: TopoEdge[] } {
  const nodes = new Map<string, TopoNode>();
  const add = (w: WorkloadRef) => {
    const id = refKey(w);
    if (nodes.has(id)) return id;
    const external = w.kind === 'external';
    nodes.set(id, { id, label: external ? w.name : w.namespace === ns ? w.name : `${w.namespace}/${w.name}`, href: external ? undefined : href.workload(w.namespace, w.kind, w.name), external });
    return id;
  };
  for (const r of rows) add(r);
  // The edges first: adding their ends is what completes the node list.
  const topoEdges = edges.map((e) => ({ from: add(e.src), to: add(e.dst), successRate: e.successRate, rps: e.rps, requests: e.requests }));
  return { nodes: [...nodes.values()], edges: topoEdges };
}
