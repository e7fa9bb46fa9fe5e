// The Kubernetes v1 Pod a simulated pod would have in the API server (pure).
import { createHash } from 'node:crypto';
import type { QosClass } from './layout.ts';

/** A container port as in a Pod spec; a Service's named targetPort resolves against `name`. */
export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface PodFacts {
  name: string;
  namespace: string;
  uid: string;
  ip: string;
  hostIp: string;
  qos: QosClass;
  hostNetwork: boolean;
  containerId: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  ownerReferences?: object[];
  serviceAccountName?: string;
  ports?: ContainerPort[];
  createdAt: Date;
}

const IMAGE_ID = `docker.io/mesh-sim/app@sha256:${createHash('sha256').update('mesh-sim/app:latest').digest('hex')}`;

/** Container resources that make kubelet derive the given QoS class. */
function resourcesFor(qos: QosClass): object {
  if (qos === 'Guaranteed') return { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '100m', memory: '64Mi' } };
  if (qos === 'Burstable') return { requests: { cpu: '50m', memory: '32Mi' } };
  return {};
}

export function podObject(p: PodFacts, nodeName: string): object {
  const created = p.createdAt.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: p.name,
      namespace: p.namespace,
      uid: p.uid,
      creationTimestamp: created,
      labels: { ...p.labels },
      annotations: { ...p.annotations },
      ...(p.ownerReferences ? { ownerReferences: p.ownerReferences } : {}),
    },
    spec: {
      nodeName,
      hostNetwork: p.hostNetwork,
      serviceAccountName: p.serviceAccountName ?? 'default',
      containers: [
        {
          name: 'app',
          image: 'mesh-sim/app:latest',
          resources: resourcesFor(p.qos),
          ...(p.ports?.length ? { ports: p.ports.map((c) => ({ ...c, protocol: c.protocol ?? 'TCP' })) } : {}),
        },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: p.hostIp,
      hostIPs: [{ ip: p.hostIp }],
      podIP: p.ip,
      podIPs: [{ ip: p.ip }],
      qosClass: p.qos,
      startTime: created,
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: [
        {
          name: 'app',
          ready: true,
          started: true,
          restartCount: 0,
          image: 'mesh-sim/app:latest',
          imageID: IMAGE_ID,
          containerID: `containerd://${p.containerId}`,
          state: { running: { startedAt: created } },
        },
      ],
    },
  };
}

/** The object before its sandbox is up (kubelet has not reported an address): Pending, not ready, no podIP. */
export function pendingPodStatus(obj: { [k: string]: any }): void {
  const s = obj.status ?? {};
  obj.status = {
    phase: 'Pending',
    hostIP: s.hostIP,
    hostIPs: s.hostIPs,
    qosClass: s.qosClass,
    conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: 'False' }],
    containerStatuses: (s.containerStatuses ?? []).map((c: any) => ({ name: c.name, ready: false, started: false, restartCount: 0, image: c.image, imageID: '', state: { waiting: { reason: 'ContainerCreating' } } })),
  };
}
