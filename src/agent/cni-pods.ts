// What the agent learnt of a pod at its sandbox's CNI ADD, before the pod watch says it: its
// addresses (the Pod object has none until the runtime reports them) and, when the watch has not
// delivered the pod yet, the object fetched from the API server. Merged into every snapshot until
// the watch has caught up with that sandbox. Pure.
import type { NamespaceInfo, PodInfo, Snapshot } from '../k8s/objects.ts';
import { ANNOTATIONS } from '../k8s/annotations.ts';

interface Entry {
  uid: string;
  /** The sandbox it was admitted for (CNI_CONTAINERID): a DEL of another sandbox of the pod does not forget it. */
  containerId: string;
  ip: string | null;
  /** Set while the watch has not delivered the pod. */
  fetched: PodInfo | null;
  /** The watch has shown the pod: its absence later means the pod was deleted. */
  watched: boolean;
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;

export class CniPods {
  readonly #entries = new Map<string, Entry>();

  get size(): number {
    return this.#entries.size;
  }

  /** The pod's sandbox `containerId` as admitted: `pod` is what the agent knows of it (from the watch or the API server), `ip` from the runtime. */
  admit(pod: PodInfo, containerId: string, ip: string | null, fetched: boolean): void {
    this.#entries.set(key(pod.namespace, pod.name), { uid: pod.uid, containerId, ip, fetched: fetched ? pod : null, watched: false });
  }

  /**
   * The sandbox `containerId` went (CNI DEL): what was learnt of it goes. Only of that sandbox, as
   * the CNI spec keys an attachment by its container ID: the DEL of a pod's previous sandbox that
   * comes after its new one's ADD must not take the new address away while the watch lacks it.
   */
  release(namespace: string, name: string, containerId: string): void {
    const k = key(namespace, name);
    if (this.#entries.get(k)?.containerId === containerId) this.#entries.delete(k);
  }

  /**
   * The snapshot with what ADD taught: an admitted pod gets the runtime's address, one the watch
   * has not delivered is added. An entry goes once the watch shows its pod with that address
   * (any, when the runtime gave none), or the name with another uid (the pod was recreated), or
   * no longer shows a pod it showed (deleted). Not at any address: a recreated sandbox's pod
   * still carries its previous sandbox's in the watch until kubelet reports the new one, and the
   * capture must follow the new one meanwhile.
   */
  merge(snap: Snapshot): Snapshot {
    if (this.#entries.size === 0) return snap;
    const seen = new Set<string>();
    const pods = snap.pods.map((p) => {
      const k = key(p.namespace, p.name);
      const e = this.#entries.get(k);
      if (!e) return p;
      seen.add(k);
      if (e.uid !== p.uid || (p.ip && (e.ip === null || p.ip === e.ip))) {
        this.#entries.delete(k);
        return p;
      }
      e.fetched = null;
      e.watched = true;
      return e.ip ? { ...p, ip: e.ip } : p;
    });
    for (const [k, e] of this.#entries) {
      if (seen.has(k)) continue;
      if (e.watched) this.#entries.delete(k);
      else if (e.fetched) pods.push(e.ip ? { ...e.fetched, ip: e.ip } : e.fetched);
    }
    return { pods, namespaces: snap.namespaces };
  }
}

/** Namespaces whose pods are meshed by the namespace's annotation: what the plugin goes by when no agent answers. */
export function meshedNamespaces(namespaces: ReadonlyMap<string, NamespaceInfo>): string[] {
  return [...namespaces.values()].filter((n) => n.annotations[ANNOTATIONS.inject] === 'enabled').map((n) => n.name).sort();
}
