// The few fields of Pod and Namespace objects the agent reads, and how to pull them out of
// YAML or JSON documents (several documents, or List kinds).
import { parseAllDocuments } from 'yaml';

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
  };
}

export function namespaceFromObject(o: Obj): NamespaceInfo | null {
  if (o?.kind !== 'Namespace' || !o.metadata?.name) return null;
  return { name: String(o.metadata.name), annotations: { ...(o.metadata.annotations ?? {}) } };
}

/**
 * Every object in YAML or JSON text (several documents, Lists and sequences flattened); throws with the
 * line of a syntax error. A text that is one JSON value skips the YAML parser: it is ~10x faster
 * on large files.
 */
export function parseDocuments(text: string, source = 'input'): Obj[] {
  const out: Obj[] = [];
  const visit = (o: Obj) => {
    if (!o || typeof o !== 'object') return;
    if (Array.isArray(o)) return o.forEach(visit);
    if (Array.isArray(o.items) && /List$/.test(String(o.kind ?? 'List'))) return o.items.forEach(visit);
    out.push(o);
  };
  const head = text.trimStart()[0];
  if (head === '{' || head === '[') {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      v = undefined; // not one JSON value (e.g. YAML flow style, or several): the YAML parser says where
    }
    if (v !== undefined) {
      visit(v as Obj);
      return out;
    }
  }
  for (const doc of parseAllDocuments(text, { prettyErrors: true })) {
    if (doc.errors.length) {
      const e = doc.errors[0]!;
      const line = e.linePos?.[0]?.line;
      throw new Error(`${source}${line ? `:${line}` : ''}: invalid YAML: ${e.message.split('\n')[0]}`);
    }
    visit(doc.toJS());
  }
  return out;
}

/** Parses YAML or JSON text into Pods and Namespaces; throws with the line of a syntax error. */
export function parseObjects(text: string, source = 'input'): Snapshot {
  const pods: PodInfo[] = [];
  const namespaces = new Map<string, NamespaceInfo>();
  for (const o of parseDocuments(text, source)) {
    const p = podFromObject(o);
    if (p) pods.push(p);
    const n = namespaceFromObject(o);
    if (n) namespaces.set(n.name, n);
  }
  return { pods, namespaces };
}
