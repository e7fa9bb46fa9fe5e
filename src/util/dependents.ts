// Which objects read which: a converted object (a route, a TrafficTarget) names the objects its
// conversion read (a Service, an HTTPRouteGroup), so a change to one of those converts again
// exactly the objects that read it. Used by the route and access indexes.
export class Dependents {
  /** A read object's key -> the keys of the objects that read it. */
  readonly #readers = new Map<string, Set<string>>();
  /** An object's key -> what its last conversion read. */
  readonly #reads = new Map<string, string[]>();

  /** What `key`'s latest conversion read, replacing what it read before; [] forgets it. */
  track(key: string, reads: readonly string[]): void {
    for (const r of this.#reads.get(key) ?? []) {
      const s = this.#readers.get(r);
      s?.delete(key);
      if (s?.size === 0) this.#readers.delete(r);
    }
    if (reads.length === 0) {
      this.#reads.delete(key);
      return;
    }
    const uniq = [...new Set(reads)];
    this.#reads.set(key, uniq);
    for (const r of uniq) {
      let s = this.#readers.get(r);
      if (!s) this.#readers.set(r, (s = new Set()));
      s.add(key);
    }
  }

  /** The objects that read `read`, as a copy: converting them may change the index. */
  readersOf(read: string): string[] {
    const s = this.#readers.get(read);
    return s === undefined ? [] : [...s];
  }
}
