// Runs a job after changes, one run at a time, a burst of changes coalesced into one run; idle()
// tells when everything poked so far has been worked through (what "settled" waits for).
export class Coalescer {
  readonly #work: () => Promise<void> | void;
  readonly #onError: (e: Error) => void;
  #dirty = false;
  #scheduled = false;
  #running = false;
  #stopped = false;
  #error: Error | undefined;
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(work: () => Promise<void> | void, onError: (e: Error) => void) {
    this.#work = work;
    this.#onError = onError;
  }

  poke(): void {
    if (this.#stopped) return;
    this.#dirty = true;
    if (this.#running || this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => void this.#run());
  }

  async #run(): Promise<void> {
    this.#scheduled = false;
    this.#running = true;
    while (this.#dirty && !this.#stopped) {
      this.#dirty = false;
      try {
        await this.#work();
        this.#error = undefined;
      } catch (e) {
        this.#error = e as Error;
        this.#onError(this.#error);
      }
    }
    this.#running = false;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (this.#error) w.reject(this.#error);
      else w.resolve();
    }
  }

  /** Resolves once no run is pending; rejects if the last run failed. */
  idle(): Promise<void> {
    if (!this.#running && !this.#scheduled) return this.#error ? Promise.reject(this.#error) : Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** No more runs; resolves when the current one (if any) has finished. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.idle().catch(() => {});
  }
}
