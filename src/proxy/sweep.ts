/**
 * Shared periodic sweeps: one unref'd interval timer per period ticks every registered
 * item, instead of a Node timer per socket. An idle proxied connection then costs no
 * Timeout objects (socket.setTimeout keeps one per socket, with a bound callback and an
 * argument array, ~250 bytes each), which is most of what it costs besides its sockets.
 */

export interface Sweepable {
  /** Called on every tick of the item's period with the tick's Date.now(). */
  sweep(now: number): void;
}

interface Sweep {
  items: Set<Sweepable>;
  timer: NodeJS.Timeout;
}

const sweeps = new Map<number, Sweep>();

function tick(period: number): void {
  const s = sweeps.get(period);
  if (!s) return;
  if (s.items.size === 0) {
    // Empty for a whole period: the timer stops now (see stopSweep).
    clearInterval(s.timer);
    sweeps.delete(period);
    return;
  }
  const now = Date.now();
  for (const item of s.items) {
    try {
      item.sweep(now);
    } catch (err) {
      // One broken item must not stop the others' timeouts, nor reach the process.
      s.items.delete(item);
      process.emitWarning(`proxy sweep: dropped an item that threw: ${String(err)}`);
    }
  }
}

/** Interval timers the sweeps started so far (for tests: a steady connection rate reuses one). */
export const sweepTimers = { started: 0 };

/** Starts ticking `item` every `periodMs` (milliseconds, an integer >= 1). */
export function sweepEvery(periodMs: number, item: Sweepable): void {
  let s = sweeps.get(periodMs);
  if (!s) {
    sweepTimers.started++;
    s = { items: new Set(), timer: setInterval(tick, periodMs, periodMs).unref() };
    sweeps.set(periodMs, s);
  }
  s.items.add(item);
}

/**
 * Stops ticking `item`. The period's timer outlives its last item until its next tick: at a
 * steady rate of short connections (one or none open at a time) stopping it with each and
 * starting it with the next cost an interval timer per connection (docs/benchmarks.md, "A new
 * connection"). Unref'd, it never holds the process.
 */
export function stopSweep(periodMs: number, item: Sweepable): void {
  sweeps.get(periodMs)?.items.delete(item);
}

/** Periods whose timer runs now (for tests). */
export function sweepPeriods(): number[] {
  return [...sweeps.keys()];
}

/**
 * Where a connection's periodic checks run and which clock judges them: the shared timers
 * above in the proxy, a manually advanced clock in tests that assert a timeout to the
 * millisecond (a loaded machine delays real ticks, so only the proxy's own clock can say
 * whether a connection was silent for the timeout).
 */
export interface Sweeper {
  every(periodMs: number, item: Sweepable): void;
  stop(periodMs: number, item: Sweepable): void;
  /** The clock ticks are judged by (ms); what an item's `sweep(now)` is compared with. */
  now(): number;
}

/** The shared timers and Date.now(): what the proxy uses unless told otherwise. */
export const sharedSweeper: Sweeper = { every: sweepEvery, stop: stopSweep, now: Date.now };

/** Items currently swept (all periods): for tests. */
export function sweptCount(): number {
  let n = 0;
  for (const s of sweeps.values()) n += s.items.size;
  return n;
}
