// Objects out of YAML or JSON text (several documents, List kinds, sequences): the pods file,
// the controller's resource files. The YAML parser is loaded only for text that is not JSON.
import { KUBECTL_YAML } from './kubectl-yaml.ts';
import { lazyYaml } from './lazy-yaml.ts';
import { namespaceFromObject, podFromObject, type NamespaceInfo, type PodInfo, type Snapshot } from './objects.ts';

type Obj = Record<string, any>;

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
  // Read as kubectl reads it: the file stands in for what the API server would hold.
  for (const doc of lazyYaml().parseAllDocuments(text, { prettyErrors: true, ...KUBECTL_YAML })) {
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
