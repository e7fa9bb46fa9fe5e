// A clock that moves only when the test says so: a timer that must not fire is seen not to
// fire however slow the machine, and one that must fire does so at its due time exactly.
import type { Clock } from '../../src/util/clock.ts';

export class ManualClock implements Clock {
  t = Date.now();
  private timers = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;
  now() { return this.t; }
  setTimeout(fn: () => void, ms: number) { const id = ++this.seq; this.timers.set(id, { at: this.t + ms, fn }); return id; }
  clearTimeout(h: unknown) { this.timers.delete(h as number); }
  /** Moves time on, firing what falls due, in order. */
  advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      const next = [...this.timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  /** How far ahead each pending timer is due, soonest first. */
  pending() { return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b); }
}
