// Minimal API objects for tests that drive the stand-in API server directly (no simulated node).
import type { KubeObject } from '../../src/sim/index.ts';

export interface PodSpec {
  name: string;
  uid?: string;
  namespace?: string;
  nodeName?: string;
  ip?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

export function podObject(p: PodSpec): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace ?? 'default', ...(p.uid ? { uid: p.uid } : {}), labels: p.labels ?? {}, annotations: p.annotations ?? {} },
    spec: { ...(p.nodeName ? { nodeName: p.nodeName } : {}), containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', ...(p.ip ? { podIP: p.ip } : {}), qosClass: 'BestEffort' },
  };
}

export { namespaceObject } from '../../src/sim/cluster-objects.ts';
