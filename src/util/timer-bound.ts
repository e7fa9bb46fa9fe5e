// Node's timers hold a delay of at most 2^31-1 ms (24.8 days); a longer one fires after 1 ms (with
// a TimeoutOverflowWarning), so a timer re-armed on firing would spin. Every timer fed by a
// configured or peer-given duration is capped at, or checked against, this.
export const MAX_TIMER_MS = 2 ** 31 - 1;
