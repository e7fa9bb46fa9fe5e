// Functions to call after a change (this node's pod table: the tunnel server's waits for a new
// pod hear it, tunnel/server.ts; the CNI admissions waiting for a capture, agent.ts). add() returns the remover.
export class Listeners {
  readonly #fns = new Set<() => void>();

  add(fn: () => void): () => void {
    this.#fns.add(fn);
    return () => this.#fns.delete(fn);
  }

  emit(): void {
    for (const fn of this.#fns) fn();
  }

  /** Resolves true at the next emit(), false at the deadline (performance.now() ms). */
  next(deadline: number): Promise<boolean> {
    const left = deadline - performance.now();
    if (left <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        off();
        resolve(false);
      }, left);
      const off = this.add(() => {
        off();
        clearTimeout(t);
        resolve(true);
      });
    });
  }
}
