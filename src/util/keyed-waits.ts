// Waits on keys, each bounded on its own: a wait settles true when its key is released, false
// when its bound runs out first. A connection that only lacks a fact the agent is about to learn
// (a pod's pending policy: policy/authorizer.ts; a pod this node's table does not hold yet:
// tunnel/server.ts) waits this way instead of being refused. Waits are rare (an agent starting, a
// pod just created), so a timer each is cheap; nothing here runs while nobody waits.
export class KeyedWaits<K> {
  readonly #waiting = new Map<K, Set<(released: boolean) => void>>();
  #count = 0;

  /** Waits now, over every key. */
  get size(): number {
    return this.#count;
  }

  wait(key: K, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      let ws = this.#waiting.get(key);
      if (ws === undefined) this.#waiting.set(key, (ws = new Set()));
      const set = ws;
      const settle = (released: boolean): void => {
        clearTimeout(timer);
        this.#count--;
        resolve(released);
      };
      const timer = setTimeout(() => {
        set.delete(settle);
        if (set.size === 0 && this.#waiting.get(key) === set) this.#waiting.delete(key);
        settle(false);
      }, timeoutMs);
      set.add(settle);
      this.#count++;
    });
  }

  /** Settles every wait on `key` (true). */
  release(key: K): void {
    const ws = this.#waiting.get(key);
    if (ws === undefined) return;
    this.#waiting.delete(key);
    for (const w of ws) w(true);
  }

  /** Settles the waits on every key `ready` holds for now (after a change that may have made some ready). */
  releaseWhere(ready: (key: K) => boolean): void {
    if (this.#waiting.size === 0) return;
    for (const key of [...this.#waiting.keys()]) if (ready(key)) this.release(key);
  }

  /** Settles every wait (true): what they waited for will not come (the waiter is closing). */
  releaseAll(): void {
    for (const key of [...this.#waiting.keys()]) this.release(key);
  }
}
