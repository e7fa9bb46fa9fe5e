// The objects of the few kinds an index converts (routes, access policy), by "Kind/namespace/name"
// ("Kind/namespace/name/group" for a kind two API groups serve, groupKeyed: HTTPRoute).
// An object of an apiVersion the index does not read is refused and said once; a relist replaces
// one kind's objects, removing those it no longer lists. The index hears of each change.
import type { ChangeLog } from '../util/change-log.ts';
import { objectName } from './objects.ts';

type Obj = Record<string, any>;

export const objKey = (kind: string, ns: string, name: string, group?: string): string => (group === undefined ? `${kind}/${ns}/${name}` : `${kind}/${ns}/${name}/${group}`);

/** The API group of an object's apiVersion ('' for the core group). */
export const groupOf = (o: Obj | undefined): string => {
  const v = typeof o?.apiVersion === 'string' ? o.apiVersion : '';
  return v.includes('/') ? v.slice(0, v.indexOf('/')) : '';
};

export interface KindStoreOptions<K extends string> {
  /** The object's kind among those read, or null for another kind (ignored). */
  kindOf(o: Obj): K | null;
  /** The apiVersions read for each kind. */
  versions: Record<K, string[]>;
  logged: ChangeLog;
  /** An object of `kind` was added, changed or removed. */
  changed(kind: K, key: string): void;
  /**
   * Kinds two API groups serve (HTTPRoute: Gateway API's and Linkerd's): keyed with the group, so
   * two objects of one namespace and name, one in each group, are two objects.
   */
  groupKeyed?: (kind: K) => boolean;
}

export class KindStore<K extends string> {
  readonly #objects = new Map<string, Obj>();
  readonly #o: KindStoreOptions<K>;

  constructor(o: KindStoreOptions<K>) {
    this.#o = o;
  }

  get(key: string): Obj | undefined {
    return this.#objects.get(key);
  }

  keys(): IterableIterator<string> {
    return this.#objects.keys();
  }

  /** An object added or changed; false (and said once) for a kind or apiVersion not read. */
  upsert(o: Obj): boolean {
    const kind = this.#o.kindOf(o);
    if (kind === null) return false;
    const { namespace, name } = objectName(o);
    const key = this.#key(kind, namespace, name, groupOf(o))!; // with a group, never null
    const versions = this.#o.versions[kind];
    if (!versions.includes(o.apiVersion)) {
      this.#o.logged.once(key, `${kind} ${namespace}/${name}: apiVersion ${JSON.stringify(o.apiVersion)} is not read; use ${versions.join(' or ')}`);
      return false;
    }
    this.#objects.set(key, o);
    this.#o.changed(kind, key);
    return true;
  }

  /** `group`: the object's API group, needed for a groupKeyed kind (without it, none is removed). */
  remove(kind: K, namespace: string, name: string, group?: string): void {
    const key = this.#key(kind, namespace, name, group);
    if (key === null || !this.#objects.delete(key)) return;
    this.#o.changed(kind, key);
  }

  #key(kind: K, namespace: string, name: string, group: string | undefined): string | null {
    if (this.#o.groupKeyed?.(kind) !== true) return objKey(kind, namespace, name);
    return group === undefined ? null : objKey(kind, namespace, name, group);
  }

  /**
   * After a (re)list of one kind: upserts each, removes what is gone. `group`: the list was of
   * that API group only (HTTPRoute is listed from two), so objects of another group stay.
   */
  replaceAll(kind: K, objs: Iterable<Obj>, group?: string): void {
    const seen = new Set<string>();
    for (const o of objs) if (this.upsert(o)) seen.add(this.#key(kind, objectName(o).namespace, objectName(o).name, groupOf(o))!);
    for (const key of [...this.#objects.keys()]) {
      if (!key.startsWith(`${kind}/`) || seen.has(key)) continue;
      const had = groupOf(this.#objects.get(key));
      if (group !== undefined && had !== group) continue;
      const [, ns, name] = key.split('/');
      this.remove(kind, ns!, name!, had);
    }
  }
}
