// The few fields of Pod and Namespace objects the agent reads (documents.ts pulls objects out of
// YAML or JSON text).

export interface PodInfo {
  uid: string;
  name: string;
  namespace: string;
  nodeName?: string;
  ip?: string;
  phase?: string;
  hostNetwork: boolean;
  qosClass?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  owner?: { kind: string; name: string };
  /** spec.serviceAccountName: the pod's workload identity (docs/identity.md); "default" when unset, as admission sets it. */
  serviceAccount?: string;
  /** The containers' named TCP ports (name -> containerPort), which opaque-ports may name as Linkerd's does. */
  namedPorts?: Record<string, number>;
}

export interface NamespaceInfo {
  name: string;
  annotations: Record<string, string>;
}

export interface Snapshot {
  pods: PodInfo[];
  namespaces: Map<string, NamespaceInfo>;
}

type Obj = Record<string, any>;

/** A namespaced object's namespace and name as the API server reads them: no namespace is "default", no name ''. */
export function objectName(o: Obj): { namespace: string; name: string } {
  const md = o?.metadata ?? {};
  return { namespace: typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : 'default', name: typeof md.name === 'string' ? md.name : '' };
}

/** The owner a pod's workload is named after: its controller reference, else the first owner. */
export function ownerOf(md: Obj | undefined): { kind: string; name: string } | undefined {
  const refs = md?.ownerReferences;
  const owner = Array.isArray(refs) ? refs.find((r: Obj) => r?.controller) ?? refs[0] : undefined;
  return owner ? { kind: String(owner.kind), name: String(owner.name) } : undefined;
}

export function podFromObject(o: Obj): PodInfo | null {
  const md = o?.metadata;
  if (o?.kind !== 'Pod' || !md?.uid || !md?.name) return null;
  return {
    uid: String(md.uid),
    name: String(md.name),
    namespace: String(md.namespace ?? 'default'),
    nodeName: o.spec?.nodeName,
    ip: o.status?.podIP,
    phase: o.status?.phase,
    hostNetwork: o.spec?.hostNetwork === true,
    qosClass: o.status?.qosClass,
    labels: { ...(md.labels ?? {}) },
    annotations: { ...(md.annotations ?? {}) },
    owner: ownerOf(md),
    serviceAccount: typeof o.spec?.serviceAccountName === 'string' && o.spec.serviceAccountName !== '' ? o.spec.serviceAccountName : 'default',
    namedPorts: namedPortsOf(o.spec?.containers),
  };
}

/** name -> containerPort of the containers' named TCP ports (the first of a name wins, as Linkerd's lookup). */
export function namedPortsOf(containers: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  if (!Array.isArray(containers)) return out;
  for (const c of containers) {
    for (const p of Array.isArray(c?.ports) ? c.ports : []) {
      if (typeof p?.name !== 'string' || p.name === '' || !Number.isInteger(p.containerPort)) continue;
      if ((p.protocol ?? 'TCP') !== 'TCP' || Object.hasOwn(out, p.name)) continue; // hasOwn: 'constructor' is a valid port name
      out[p.name] = p.containerPort;
    }
  }
  return out;
}

export function namespaceFromObject(o: Obj): NamespaceInfo | null {
  if (o?.kind !== 'Namespace' || !o.metadata?.name) return null;
  return { name: String(o.metadata.name), annotations: { ...(o.metadata.annotations ?? {}) } };
}
