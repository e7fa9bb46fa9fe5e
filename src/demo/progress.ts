// The demo's start as numbered steps, each line printed as its step completes with the time it
// took: on a loaded machine the start is slower, not silent, and the user sees where the time goes.

/** A step's line as done() ends it, for scripts and tests: [1] the step, [2] the total, [3] its seconds, [4] the whole start's (last step only). */
export const STEP_LINE = / \[(\d+)\/(\d+), \+(\d+\.\d) s(?:; started in (\d+\.\d) s)?\]$/m;

export class StartProgress {
  readonly total: number;
  #done = 0;
  #last: number;
  readonly #started: number;
  readonly #print: (line: string) => void;

  constructor(total: number, print: (line: string) => void, now = performance.now()) {
    this.total = total;
    this.#print = print;
    this.#started = this.#last = now;
  }

  /** Step done: `what [i/total, +t s]`, t the time since the previous step (the last one also says the whole start's). */
  done(what: string, now = performance.now()): void {
    this.#done++;
    const s = (ms: number) => (ms / 1000).toFixed(1);
    const all = this.#done === this.total ? `; started in ${s(now - this.#started)} s` : '';
    this.#print(`${what} [${this.#done}/${this.total}, +${s(now - this.#last)} s${all}]`);
    this.#last = now;
  }
}
