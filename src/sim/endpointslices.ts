// What the EndpointSlice controller (kube-controller-manager) would write for one Service (pure).
// Selected pods with an IP become endpoints (ready from the pod's Ready condition, nodeName, zone
// from the node, targetRef to the pod); a named targetPort resolves against each pod's container
// ports (a pod without it gets no such port, as upstream); endpoints with the same resolved ports
// share slices of at most 100. Endpoints stay in the slice they are in, new ones fill slices with
// room, so one pod's change touches one slice, as the real controller tries to.
import type { KubeObject } from './api-resources.ts';
import { mapSelector } from './selectors.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'endpointslice-controller.k8s.io';
export const MAX_ENDPOINTS_PER_SLICE = 100;

export interface SlicePort {
  name: string;
  port: number;
  protocol: string;
  appProtocol?: string;
}

export interface SliceEndpoint {
  addresses: string[];
  conditions: { ready: boolean; serving: boolean; terminating: boolean };
  nodeName?: string;
  zone?: string;
  /** Topology hints (trafficDistribution, topology-mode Auto): hintsFor() below. */
  hints?: { forZones?: Array<{ name: string }>; forNodes?: Array<{ name: string }> };
  targetRef: { kind: 'Pod'; namespace: string; name: string; uid: string };
}

export interface SliceChanges {
  create: KubeObject[];
  update: KubeObject[];
  delete: KubeObject[];
}

function podReady(pod: KubeObject): boolean {
  return (pod.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
}

/** The port a Service port reaches on this pod, or undefined if a named targetPort is not among its container ports. */
export function resolveTargetPort(svcPort: any, pod: KubeObject): number | undefined {
  const tp = svcPort.targetPort ?? svcPort.port;
  if (typeof tp === 'number') return tp;
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === tp && (p.protocol ?? 'TCP') === (svcPort.protocol ?? 'TCP')) return p.containerPort;
  }
  return undefined;
}

/** True if this Service's endpoints are managed here (it has a selector; a selector-less one is someone else's). */
export function hasSelector(svc: KubeObject): boolean {
  return mapSelector(svc.spec?.selector) !== undefined;
}

/** The pods a Service selects, as the controller considers them. */
export function selectedPods(svc: KubeObject, pods: Iterable<KubeObject>): KubeObject[] {
  const sel = mapSelector(svc.spec?.selector);
  if (!sel) return [];
  const out: KubeObject[] = [];
  for (const p of pods) {
    if (p.metadata.namespace !== svc.metadata.namespace) continue;
    if (!p.status?.podIP || !p.spec?.nodeName) continue;
    if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
    if (sel((k) => p.metadata.labels?.[k])) out.push(p);
  }
  return out;
}

function endpointFor(svc: KubeObject, pod: KubeObject, zoneOf: (node: string) => string | undefined): SliceEndpoint {
  const terminating = pod.metadata.deletionTimestamp !== undefined;
  const serving = podReady(pod);
  const ready = svc.spec?.publishNotReadyAddresses === true ? true : serving && !terminating;
  const zone = zoneOf(pod.spec.nodeName);
  return {
    addresses: [pod.status.podIP],
    conditions: { ready, serving, terminating },
    nodeName: pod.spec.nodeName,
    ...(zone ? { zone } : {}),
    targetRef: { kind: 'Pod', namespace: pod.metadata.namespace!, name: pod.metadata.name, uid: pod.metadata.uid! },
  };
}

function portsFor(svc: KubeObject, pod: KubeObject): SlicePort[] {
  const out: SlicePort[] = [];
  for (const sp of svc.spec?.ports ?? []) {
    const port = resolveTargetPort(sp, pod);
    if (port === undefined) continue;
    out.push({ name: sp.name ?? '', port, protocol: sp.protocol ?? 'TCP', ...(sp.appProtocol ? { appProtocol: sp.appProtocol } : {}) });
  }
  return out;
}

const portsKey = (ports: SlicePort[]): string => JSON.stringify(ports);
const endpointKey = (e: SliceEndpoint): string => e.targetRef.uid;

function newSlice(svc: KubeObject, ports: SlicePort[], endpoints: SliceEndpoint[]): KubeObject {
  const name = svc.metadata.name;
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: '',
      generateName: `${name}-`,
      namespace: svc.metadata.namespace,
      labels: sliceLabels(svc),
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name, uid: svc.metadata.uid!, controller: true, blockOwnerDeletion: true }],
    },
    addressType: 'IPv4',
    endpoints,
    ports,
  };
}

function sliceLabels(svc: KubeObject): Record<string, string> {
  return {
    ...(svc.metadata.labels ?? {}),
    ...(svc.spec?.clusterIP === 'None' ? { 'service.kubernetes.io/headless': '' } : {}),
    [SERVICE_NAME_LABEL]: svc.metadata.name,
    [MANAGED_BY_LABEL]: MANAGED_BY,
  };
}

export const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
/** Its name before Kubernetes 1.27, still read. */
export const TOPOLOGY_HINTS_ANNOTATION = 'service.kubernetes.io/topology-aware-hints';

/**
 * Which hints the controller writes for a Service: topology-mode Auto (the annotation wins, as
 * upstream), else spec.trafficDistribution PreferClose or PreferSameZone (zone hints), or
 * PreferSameNode (node and zone hints, Kubernetes 1.33+); null: none.
 */
export function hintMode(svc: KubeObject): 'auto' | 'zone' | 'node' | null {
  const a = svc.metadata.annotations ?? {};
  const mode = a[TOPOLOGY_MODE_ANNOTATION] ?? a[TOPOLOGY_HINTS_ANNOTATION];
  if (mode === 'Auto' || mode === 'auto') return 'auto';
  const td = svc.spec?.trafficDistribution;
  if (td === 'PreferClose' || td === 'PreferSameZone') return 'zone';
  if (td === 'PreferSameNode') return 'node';
  return null;
}

/**
 * Sets (or clears) the endpoints' hints as upstream's trafficdist heuristics do: each endpoint
 * hinted for its own zone (and, PreferSameNode, its own node); an endpoint without a zone gets
 * none. Auto is simplified: upstream allocates endpoints to zones in proportion to their CPUs
 * and writes no hints when it cannot give every zone some; here every endpoint keeps to its own
 * zone, and there are no hints unless every zone in `allZones` has a ready endpoint.
 */
export function setHints(svc: KubeObject, endpoints: SliceEndpoint[], allZones: ReadonlySet<string>): void {
  let mode = hintMode(svc);
  if (mode === 'auto') {
    const served = new Set(endpoints.filter((e) => e.conditions.ready && e.zone).map((e) => e.zone!));
    mode = allZones.size > 0 && [...allZones].every((z) => served.has(z)) ? 'zone' : null;
  }
  for (const e of endpoints) {
    delete e.hints;
    if (mode === null || !e.zone) continue;
    e.hints = { forZones: [{ name: e.zone }], ...(mode === 'node' && e.nodeName ? { forNodes: [{ name: e.nodeName }] } : {}) };
  }
}

/** The writes that bring `existing` (this Service's managed slices) in line with the pods. */
export function reconcileSlices(
  svc: KubeObject,
  pods: Iterable<KubeObject>,
  zoneOf: (node: string) => string | undefined,
  existing: KubeObject[],
  maxPerSlice = MAX_ENDPOINTS_PER_SLICE,
  allZones: ReadonlySet<string> = new Set(),
): SliceChanges {
  const changes: SliceChanges = { create: [], update: [], delete: [] };
  if (!hasSelector(svc)) return { ...changes, delete: [...existing] };

  // Desired endpoints, grouped by their resolved ports.
  const groups = new Map<string, { ports: SlicePort[]; endpoints: Map<string, SliceEndpoint> }>();
  for (const pod of selectedPods(svc, pods)) {
    const ports = portsFor(svc, pod);
    const key = portsKey(ports);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { ports, endpoints: new Map() }));
    const e = endpointFor(svc, pod, zoneOf);
    g.endpoints.set(endpointKey(e), e);
  }
  setHints(svc, [...groups.values()].flatMap((g) => [...g.endpoints.values()]), allZones);

  const labels = sliceLabels(svc);
  const kept: KubeObject[] = [];
  for (const slice of existing) {
    const g = groups.get(portsKey(slice.ports ?? []));
    // Endpoints still wanted stay where they are, with their current state.
    const endpoints = g ? (slice.endpoints ?? []).map((e: SliceEndpoint) => g.endpoints.get(endpointKey(e))).filter((e: SliceEndpoint | undefined) => e !== undefined) : [];
    for (const e of endpoints) g!.endpoints.delete(endpointKey(e));
    kept.push({ ...slice, metadata: { ...slice.metadata, labels }, endpoints });
  }
  // New endpoints fill slices of their port group that have room, then new slices.
  for (const g of groups.values()) {
    const rest = [...g.endpoints.values()];
    for (const s of kept) {
      if (rest.length === 0) break;
      if (portsKey(s.ports ?? []) !== portsKey(g.ports) || s.endpoints.length >= maxPerSlice) continue;
      s.endpoints = [...s.endpoints, ...rest.splice(0, maxPerSlice - s.endpoints.length)];
    }
    while (rest.length) changes.create.push(newSlice(svc, g.ports, rest.splice(0, maxPerSlice)));
  }
  const nonEmpty = kept.filter((s) => s.endpoints.length > 0);
  // A Service that selects nothing keeps one empty placeholder slice, as upstream does.
  if (groups.size === 0 && nonEmpty.length === 0 && changes.create.length === 0) {
    const placeholder = kept.find((s) => (s.ports ?? []).length === 0);
    if (placeholder) nonEmpty.push(placeholder);
    else changes.create.push(newSlice(svc, [], []));
  }
  const byName = new Map(existing.map((s) => [s.metadata.name, s]));
  for (const s of kept) {
    const before = byName.get(s.metadata.name)!;
    if (!nonEmpty.includes(s)) changes.delete.push(before);
    else if (JSON.stringify([s.endpoints, s.metadata.labels]) !== JSON.stringify([before.endpoints, before.metadata.labels])) changes.update.push(s);
  }
  return changes;
}
