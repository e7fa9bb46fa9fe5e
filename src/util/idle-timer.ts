// "Nothing open for idleMs": one lazily re-armed timer instead of a clearTimeout and a
// setTimeout each time the count of open things drops to zero. At a low request rate an HTTP/2
// connection goes idle after every stream, so a per-stream timer was a timer list removal and
// insertion per request on each side of the proxy (issue 16); here a stream costs a counter and,
// when it was the last one open, a clock read.
import { monotonicClock, type Clock } from './clock.ts';

export class IdleTimer {
  #open = 0;
  /** When the count last dropped to zero (clock.now()). */
  #since: number;
  #timer: unknown;
  #stopped = false;
  readonly #idleMs: number;
  readonly #onIdle: () => void;
  readonly #clock: Clock;

  /** Starts idle: onIdle runs once after idleMs unless something opens first. */
  constructor(idleMs: number, onIdle: () => void, clock: Clock = monotonicClock) {
    this.#idleMs = idleMs;
    this.#onIdle = onIdle;
    this.#clock = clock;
    this.#since = clock.now();
    this.#arm(idleMs);
  }

  get open(): number {
    return this.#open;
  }

  enter(): void {
    this.#open++;
  }

  leave(): void {
    if (this.#open === 0 || --this.#open > 0 || this.#stopped) return;
    this.#since = this.#clock.now();
    if (this.#timer === undefined) this.#arm(this.#idleMs);
  }

  /** No more onIdle (the thing it guards is gone). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(ms: number): void {
    this.#timer = this.#clock.setTimeout(this.#fire, ms);
  }

  // While something is open the timer lapses; the leave() that makes it idle re-arms it.
  readonly #fire = (): void => {
    this.#timer = undefined;
    if (this.#open > 0 || this.#stopped) return;
    const left = this.#since + this.#idleMs - this.#clock.now();
    if (left > 1) this.#arm(left);
    else {
      this.#stopped = true;
      this.#onIdle();
    }
  };
}
