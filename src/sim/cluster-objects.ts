// The API objects a simulated cluster writes for its nodes, pods and Services (pure).
import { createHash } from 'node:crypto';
import type { KubeObject, ObjectMeta } from './api-resources.ts';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

export interface NodeFacts {
  name: string;
  ip: string;
  podCidr: string;
  zone: string;
  controlPlane: boolean;
}

export function nodeObject(n: NodeFacts): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: {
        'kubernetes.io/hostname': n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'topology.kubernetes.io/region': 'sim',
        [ZONE_LABEL]: n.zone,
        ...(n.controlPlane ? { 'node-role.kubernetes.io/control-plane': '' } : {}),
      },
    },
    spec: {
      podCIDR: n.podCidr,
      podCIDRs: [n.podCidr],
      ...(n.controlPlane ? { taints: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] } : {}),
    },
    status: {
      addresses: [
        { type: 'InternalIP', address: n.ip },
        { type: 'Hostname', address: n.name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }],
    },
  };
}

/** A name-safe hash as kube-controller-manager derives pod-template-hash (10 characters of its alphabet). */
export function templateHash(seed: string, length = 10): string {
  const digest = createHash('sha256').update(seed).digest();
  return [...digest.subarray(0, length)].map((b) => NAME_ALPHABET[b % NAME_ALPHABET.length]).join('');
}

/** What a Deployment's ReplicaSet gives its pods: the owner reference and the pod-template-hash label. */
export function deploymentOwnership(namespace: string, deployment: string, replicaSetUid: string): { ownerReferences: NonNullable<ObjectMeta['ownerReferences']>; labels: Record<string, string> } {
  const hash = templateHash(`${namespace}/${deployment}`);
  return {
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${deployment}-${hash}`, uid: replicaSetUid, controller: true, blockOwnerDeletion: true }],
    labels: { 'pod-template-hash': hash },
  };
}

/** Sets the pod's Ready and ContainersReady conditions and its containers' ready flags. */
export function setReadiness(pod: KubeObject, ready: boolean, at = new Date()): void {
  const status = (pod.status ??= {});
  const s = ready ? 'True' : 'False';
  const when = at.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const others = (status.conditions ?? []).filter((c: any) => c.type !== 'Ready' && c.type !== 'ContainersReady');
  const was = (status.conditions ?? []).find((c: any) => c.type === 'Ready');
  const since = was?.status === s && was.lastTransitionTime ? was.lastTransitionTime : when;
  status.conditions = [
    ...(others.length ? others : [{ type: 'PodScheduled', status: 'True', lastTransitionTime: when }, { type: 'Initialized', status: 'True', lastTransitionTime: when }]),
    { type: 'ContainersReady', status: s, lastTransitionTime: since },
    { type: 'Ready', status: s, lastTransitionTime: since },
  ];
  for (const c of status.containerStatuses ?? []) c.ready = ready;
}

export interface ServicePort {
  /** Required when the Service has more than one port. */
  name?: string;
  port: number;
  /** A number, or the name of a container port; default: port. */
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
}

export interface ServiceOptions {
  name: string;
  namespace?: string;
  /** Pods with these labels are its endpoints; none: a Service whose EndpointSlices someone else writes. */
  selector?: Record<string, string>;
  ports: ServicePort[];
  /** A specific address from the service CIDR; default: the next free one. */
  clusterIP?: string;
  /** clusterIP None: DNS-only, no virtual IP, no kube-proxy rules. */
  headless?: boolean;
  internalTrafficPolicy?: 'Cluster' | 'Local';
  /** spec.trafficDistribution: the EndpointSlice controller writes topology hints (endpointslices.ts setHints). */
  trafficDistribution?: 'PreferClose' | 'PreferSameZone' | 'PreferSameNode';
  publishNotReadyAddresses?: boolean;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function serviceObject(o: ServiceOptions): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: o.name, namespace: o.namespace ?? 'default', labels: o.labels ?? {}, annotations: o.annotations ?? {} },
    spec: {
      ...(o.selector ? { selector: o.selector } : {}),
      ports: o.ports.map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        port: p.port,
        targetPort: p.targetPort ?? p.port,
        protocol: p.protocol ?? 'TCP',
        ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
      })),
      ...(o.headless ? { clusterIP: 'None' } : o.clusterIP ? { clusterIP: o.clusterIP } : {}),
      ...(o.internalTrafficPolicy ? { internalTrafficPolicy: o.internalTrafficPolicy } : {}),
      ...(o.trafficDistribution ? { trafficDistribution: o.trafficDistribution } : {}),
      ...(o.publishNotReadyAddresses ? { publishNotReadyAddresses: true } : {}),
    },
  };
}

export function namespaceObject(name: string, annotations: Record<string, string> = {}, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels }, annotations } };
}

/** default/kubernetes: the API server behind a ClusterIP, as every cluster has it (in-cluster clients use 10.96.0.1:443). */
export function kubernetesService(clusterIP: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'kubernetes', namespace: 'default', labels: { component: 'apiserver', provider: 'kubernetes' } },
    spec: { clusterIP, ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 6443 }] },
  };
}

export function kubernetesEndpointSlice(apiIp: string, apiPort: number): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'kubernetes', namespace: 'default', labels: { 'kubernetes.io/service-name': 'kubernetes' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [apiIp], conditions: { ready: true } }],
    ports: [{ name: 'https', port: apiPort, protocol: 'TCP' }],
  };
}
