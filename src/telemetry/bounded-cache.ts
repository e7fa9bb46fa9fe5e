// A map that forgets everything when it is full or when the world it was computed from
// changed (its generation moved). For caches of derived values that are cheap to recompute
// once and expensive to recompute per event: clearing is O(1) amortized and needs no LRU
// bookkeeping on the hot path.
export class BoundedCache<V> {
  private map = new Map<string, V>();
  private readonly max: number;
  private readonly generation: () => number;
  private gen: number;
  private clears = 0;

  constructor(max: number, generation: () => number = () => 0) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`cache size ${max} is not a positive integer`);
    this.max = max;
    this.generation = generation;
    this.gen = generation();
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): V | undefined {
    const g = this.generation();
    if (g !== this.gen) {
      this.gen = g;
      this.clear();
      return undefined;
    }
    return this.map.get(key);
  }

  set(key: string, v: V): void {
    if (this.map.size >= this.max) this.clear();
    this.map.set(key, v);
  }

  /**
   * Starts over if the generation moved, then says how many times the map has started over: a
   * value got from it and kept aside (a hot path's last hit) is still current while this is the
   * same as when it was got.
   */
  epoch(): number {
    const g = this.generation();
    if (g !== this.gen) {
      this.gen = g;
      this.clear();
    }
    return this.clears;
  }

  private clear(): void {
    this.map.clear();
    this.clears++;
  }
}
