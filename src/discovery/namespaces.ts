// What the controller keeps of Namespaces: the annotations a pod's record reads of its namespace
// (skip-inbound ports, ours and Linkerd's: docs/policy.md), for the namespaces that set one. Both
// sources (the API server's watch, --resources files) feed it and re-send a namespace's pods
// (hub.ts joinNamespace) when it says what they read changed.
import { ANNOTATIONS, LINKERD_PORT_ANNOTATIONS } from '../k8s/annotations.ts';
import { objectName } from '../k8s/objects.ts';
import { namespaceProblem } from './from-k8s.ts';

type Obj = Record<string, any>;

const READ = [ANNOTATIONS.skipInbound, LINKERD_PORT_ANNOTATIONS[ANNOTATIONS.skipInbound]!];

/**
 * The annotations of a Namespace object its pods' records read; undefined when it sets none. A
 * number is kept as its text: YAML reads an unquoted `7002` in a --resources file as one, and a
 * pod's own annotation (podFromK8s) and the agent's reading of the namespace take it as "7002".
 */
function kept(o: Obj): Record<string, string> | undefined {
  const ann = o?.metadata?.annotations;
  let out: Record<string, string> | undefined;
  for (const k of READ) {
    const v = ann?.[k];
    if (typeof v === 'string' || typeof v === 'number') (out ??= {})[k] = String(v);
  }
  return out;
}

const same = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => READ.every((k) => a?.[k] === b?.[k]);

/** A Namespace object cut to what is kept of it (a reflector's store holds this): its name, resourceVersion and those annotations. */
export function keepNamespace(o: Obj): Obj {
  const md = o?.metadata ?? {};
  return { metadata: { name: md.name, resourceVersion: md.resourceVersion, annotations: kept(o) ?? {} } };
}

export class NamespaceAnnotations {
  private byName = new Map<string, Record<string, string>>();
  /** Counts the changes: a source preparing pods meanwhile knows to join them again. */
  changes = 0;
  /** Per name, the count at its last change: which namespaces changed since a mark. */
  private changedAt = new Map<string, number>();
  /** What is wrong with each namespace's value now, for a status that outlives the log line. */
  private problems = new Map<string, string>();
  /** Says what is wrong with a namespace's value, once per value: not once per pod. */
  private readonly warn: (msg: string) => void;

  constructor(warn: (msg: string) => void) {
    this.warn = warn;
  }

  get(name: string): Record<string, string> | undefined {
    return this.byName.get(name);
  }

  /** A Namespace added or changed: true when what its pods read of it changed. */
  set(o: Obj): boolean {
    const { name } = objectName(o);
    const next = kept(o);
    if (same(this.byName.get(name), next)) return false;
    if (next === undefined) this.byName.delete(name);
    else this.byName.set(name, next);
    this.changedAt.set(name, ++this.changes);
    const problem = namespaceProblem(name, next);
    if (problem === null) this.problems.delete(name);
    else {
      this.problems.set(name, problem);
      this.warn(problem);
    }
    return true;
  }

  /** A Namespace deleted: true when it had annotations its pods read. */
  delete(name: string): boolean {
    if (!this.byName.delete(name)) return false;
    this.problems.delete(name);
    this.changedAt.set(name, ++this.changes);
    return true;
  }

  /** One problem of a namespace's value that is still there (null when none is). */
  problem(): string | null {
    for (const p of this.problems.values()) return p;
    return null;
  }

  /**
   * The namespaces changed after `mark` (a value of `changes`). Its one reader's marks only grow
   * (each pod list starts later), so what changed at or before `mark` is forgotten here.
   */
  changedSince(mark: number): Set<string> {
    const out = new Set<string>();
    for (const [name, at] of this.changedAt) {
      if (at > mark) out.add(name);
      else this.changedAt.delete(name);
    }
    return out;
  }

  /** Every Namespace (a list): the names whose annotations changed. */
  replaceAll(objects: Iterable<Obj>): string[] {
    const changed: string[] = [];
    const seen = new Set<string>();
    for (const o of objects) {
      const { name } = objectName(o);
      seen.add(name);
      if (this.set(o)) changed.push(name);
    }
    for (const name of [...this.byName.keys()]) if (!seen.has(name) && this.delete(name)) changed.push(name);
    return changed;
  }
}
