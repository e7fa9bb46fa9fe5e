// Functions to call after a change (this node's pod table: the tunnel server's waits for a new
// pod hear it, tunnel/server.ts). add() returns the remover.
export class Listeners {
  readonly #fns = new Set<() => void>();

  add(fn: () => void): () => void {
    this.#fns.add(fn);
    return () => this.#fns.delete(fn);
  }

  emit(): void {
    for (const fn of this.#fns) fn();
  }
}
