// One upstream pool per scope (ctx.poolScope): a source identity's tunnels (docs/identity.md), a
// captured client's own address (docs/policy.md). Upstreams of one scope must not serve another's
// requests. Scopes come and go with clients, so the least recently used is forgotten past `max`:
// its idle upstreams close on their idle timers (HTTP/1: the pool's sweep, 4 s; HTTP/2: 60 s), and a request
// of that scope later gets a new pool.
export const MAX_SCOPED_POOLS = 1024;

export class ScopedPools<P> {
  readonly #make: () => P;
  readonly #max: number;
  readonly #pools = new Map<string, P>();

  constructor(make: () => P, max = MAX_SCOPED_POOLS) {
    this.#make = make;
    this.#max = max;
  }

  get(scope: string): P {
    let p = this.#pools.get(scope);
    if (p !== undefined) {
      // Most recently used last: Map keeps insertion order.
      this.#pools.delete(scope);
      this.#pools.set(scope, p);
      return p;
    }
    p = this.#make();
    this.#pools.set(scope, p);
    if (this.#pools.size > this.#max) this.#pools.delete(this.#pools.keys().next().value!);
    return p;
  }

  get size(): number {
    return this.#pools.size;
  }
}
