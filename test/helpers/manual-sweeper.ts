// A Sweeper (src/proxy/sweep.ts) whose clock moves only when the test says: a timeout is then
// judged on the proxy's own clock, exactly, however slow the machine runs the test.
import type { Sweepable, Sweeper } from '../../src/proxy/sweep.ts';

export class ManualSweeper implements Sweeper {
  clock = 0;
  private readonly items = new Set<Sweepable>();

  every(_periodMs: number, item: Sweepable): void {
    this.items.add(item);
  }

  stop(_periodMs: number, item: Sweepable): void {
    this.items.delete(item);
  }

  now(): number {
    return this.clock;
  }

  /** Items registered (live tunnels and handled connections). */
  get size(): number {
    return this.items.size;
  }

  /** Moves the clock on by ms, then ticks every item once at the new time. */
  advance(ms: number): void {
    this.clock += ms;
    for (const item of [...this.items]) item.sweep(this.clock);
  }
}
