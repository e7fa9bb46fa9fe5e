// While a source still lists, conversions wait for release(): an object listed before what it
// reads (a route before its Service, a TrafficTarget before its HTTPRouteGroup) is then not
// "not found". Used by the route and access indexes.
export class HeldConversions {
  #held = false;
  readonly #waiting = new Set<string>();

  get held(): boolean {
    return this.#held;
  }

  hold(): void {
    this.#held = true;
  }

  /** While held, `key` waits for release() and this says true; otherwise false. */
  defer(key: string): boolean {
    if (!this.#held) return false;
    this.#waiting.add(key);
    return true;
  }

  /** While held, every key of `keys` that starts with `prefix` waits: not converted yet, so not tracked as a reader yet. */
  deferPrefixed(keys: Iterable<string>, prefix: string): void {
    for (const k of keys) if (k.startsWith(prefix)) this.#waiting.add(k);
  }

  /** Converts everything that waited; call once every kind has been listed. */
  release(convert: (key: string) => void): void {
    if (!this.#held) return;
    this.#held = false;
    const keys = [...this.#waiting];
    this.#waiting.clear();
    for (const k of keys) convert(k);
  }
}
