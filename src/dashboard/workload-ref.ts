// How the dashboard names a workload: shared by the controller's views and the page, which
// must not pull the views' store code into the browser bundle.

export interface WorkloadRef {
  namespace: string;
  /** workloadOf's kind (deployment, statefulset, daemonset, job, replicaset, pod); 'external' for addresses no agent knows. */
  kind: string;
  name: string;
}

/** Traffic to or from addresses in no live agent's inventory: one node in the graph, not one per IP. */
export const EXTERNAL: WorkloadRef = { namespace: '', kind: 'external', name: 'outside the mesh' };

export const refKey = (w: WorkloadRef) => `${w.namespace}/${w.kind}/${w.name}`;
