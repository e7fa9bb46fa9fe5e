// This node's zone, for topology aware routing (docs/routing.md, "Topology"): the
// topology.kubernetes.io/zone label of the agent's own Node, read from the API server as
// kube-proxy reads it. Pure: what a Node object or a failed read means; agent.ts does the I/O.

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** What the agent knows of its zone: the zone, or why there is none (status `topology`). */
export interface ZoneState {
  zone: string | null;
  /** Why zone is null (hints are ignored then); null when there is a zone. */
  why: string | null;
  /** A misconfiguration or a failure (logged as a warning), not just a cluster without zones. */
  warn?: true;
}

/** Node label values are at most 63 characters (the API validates them); anything else is not a zone. */
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;

/** The zone of a Node object as the API server answered it. */
export function zoneOfNode(node: Record<string, any>, nodeName: string): ZoneState {
  const v = node?.metadata?.labels?.[ZONE_LABEL];
  if (typeof v === 'string' && LABEL_VALUE.test(v)) return { zone: v, why: null };
  if (v === undefined || v === null || v === '') return { zone: null, why: `Node ${nodeName} has no ${ZONE_LABEL} label: topology hints are ignored, every endpoint is used (as kube-proxy)` };
  return { zone: null, warn: true, why: `Node ${nodeName}'s ${ZONE_LABEL} label ${JSON.stringify(String(v)).slice(0, 80)} is not a label value: topology hints are ignored` };
}

/**
 * A failed read of the Node. `lasting`: a refusal that waiting will not cure soon (403, 404),
 * read again at the slow pace; otherwise soon (the API server away). null: the read was ended by
 * the agent's own stop (KubeSource.getNode marks it), not a failure: nothing to say or retry.
 */
export function zoneReadFailed(e: unknown, nodeName: string): (ZoneState & { lasting: boolean }) | null {
  if ((e as { stopping?: unknown })?.stopping === true) return null;
  const code = (e as { statusCode?: number })?.statusCode;
  if (code === 403) {
    return { zone: null, lasting: true, warn: true, why: `reading Node ${nodeName} was refused (403): the agent's ClusterRole needs get on nodes (apply the manifests of \`mesh-agent install\` again); topology hints are ignored meanwhile` };
  }
  if (code === 404) return { zone: null, lasting: true, warn: true, why: `Node ${nodeName} does not exist (404): check --node (NODE_NAME, from spec.nodeName); topology hints are ignored` };
  return { zone: null, lasting: false, warn: true, why: `reading Node ${nodeName} failed: ${(e as Error)?.message ?? String(e)}; topology hints are ignored until it is read` };
}
