// Topology aware routing, as kube-proxy decides it (pkg/proxy/topology.go, topologyModeFromHints):
// the EndpointSlice controller hints each endpoint for the zones (hints.forZones; Service
// trafficDistribution PreferClose, or topology-mode Auto) or nodes (hints.forNodes, PreferSameNode)
// whose clients should use it. A client's node then uses only the ready endpoints hinted for it,
// but only when every ready endpoint carries such a hint and at least one is for this node (or
// zone); otherwise every endpoint, so a half-written set of hints, a zone the controller gave
// nothing, or a node without a zone label never leaves a client with fewer endpoints than it
// would have without hints. Node hints are tried first, then zone hints. Pure.
import type { DiscoEndpoint } from './model.ts';

export type TopologyMode = 'PreferSameNode' | 'PreferSameZone';

/** Where the asking agent is: its node name and its node's topology.kubernetes.io/zone, when known. */
export interface Locality {
  node?: string;
  zone?: string;
}

export interface TopologyDecision {
  /** null: no filtering, every ready endpoint is used. */
  mode: TopologyMode | null;
  /** Why hints that exist are not used (kube-proxy logs the same); absent when used or when there are none. */
  ignored?: string;
}

/** The mode for a Service port's ready endpoints, seen from `me`. */
export function topologyMode(ready: readonly DiscoEndpoint[], me: Locality): TopologyDecision {
  if (ready.length === 0) return { mode: null };
  let allNode = true;
  let forNode = false;
  let anyNode = false;
  let allZone = true;
  let forZone = false;
  let anyZone = false;
  for (const e of ready) {
    if (e.forNodes === undefined || e.forNodes.length === 0) allNode = false;
    else {
      anyNode = true;
      if (me.node !== undefined && e.forNodes.includes(me.node)) forNode = true;
    }
    if (e.forZones === undefined || e.forZones.length === 0) allZone = false;
    else {
      anyZone = true;
      if (me.zone !== undefined && e.forZones.includes(me.zone)) forZone = true;
    }
  }
  if (allNode && forNode) return { mode: 'PreferSameNode' };
  if (allZone && forZone) return { mode: 'PreferSameZone' };
  if (!anyZone && !anyNode) return { mode: null };
  let ignored: string;
  if (anyZone && !allZone) ignored = 'one or more ready endpoints has no zone hint';
  else if (!anyZone) ignored = allNode ? `no endpoint is hinted for this node (${me.node ?? 'unknown'})` : 'one or more ready endpoints has no node hint';
  else if (me.zone === undefined) ignored = 'this node\'s zone is unknown (no topology.kubernetes.io/zone label read)';
  else ignored = `no endpoint is hinted for zone ${me.zone}`;
  return { mode: null, ignored: `topology hints ignored: ${ignored}; every endpoint is used` };
}

/** Whether an endpoint serves this locality under the mode (no fallback here: that is in the mode). */
export function availableForTopology(e: DiscoEndpoint, mode: TopologyMode | null, me: Locality): boolean {
  if (mode === null) return true;
  if (mode === 'PreferSameNode') return me.node !== undefined && e.forNodes?.includes(me.node) === true;
  return me.zone !== undefined && e.forZones?.includes(me.zone) === true;
}
