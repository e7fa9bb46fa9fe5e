// Time and timers behind one interface, so that a test can move time by hand
// (test/helpers/manual-clock.ts) instead of sleeping and hoping that a timer which must not
// fire would have fired by then.
export interface Clock {
  now(): number;
  /** Runs fn once, ms from now; a real one is unref'd (a pending timer never keeps the agent alive). */
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(h: unknown): void;
}

/** performance.now(): for durations, which a step of the wall clock must not stretch or cut. */
export const monotonicClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};
