// Bounds how many streams a client may reset per time window (CVE-2023-44487, rapid
// reset). A sliding-window estimate: the previous window's count weighted by how much of it
// still overlaps, plus the current one; O(1) memory whatever the flood.

export class ResetBudget {
  readonly #max: number;
  readonly #windowMs: number;
  #windowStart = 0;
  #current = 0;
  #previous = 0;

  constructor(max: number, windowMs: number) {
    this.#max = max;
    this.#windowMs = windowMs;
  }

  /** Counts one reset at `now`; true once the budget is exceeded. */
  record(now: number): boolean {
    const elapsed = now - this.#windowStart;
    // A clock that stepped back (elapsed < 0) starts afresh too, rather than freeze the windows.
    if (elapsed >= 2 * this.#windowMs || elapsed < 0) {
      this.#previous = 0;
      this.#current = 0;
      this.#windowStart = now;
    } else if (elapsed >= this.#windowMs) {
      this.#previous = this.#current;
      this.#current = 0;
      this.#windowStart += this.#windowMs;
    }
    this.#current++;
    const overlap = 1 - (now - this.#windowStart) / this.#windowMs;
    return this.#previous * overlap + this.#current > this.#max;
  }
}
