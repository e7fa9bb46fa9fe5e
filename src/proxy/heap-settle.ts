/**
 * Gives back the young generation a burst of held connections grew, once the burst is over
 * (docs/proxy.md, "Memory"). Objects that survive scavenges make V8 grow its new space, and a
 * connection's objects live as long as it does: opening 9,000 idle connections grew it to its
 * 64 MB maximum, 6 KB of each connection's RSS, and V8 kept it for as long as they stayed idle
 * (40 s measured; its shrink on a low allocation rate keeps the pages in its pool). A
 * last-resort collection releases it: after a tick with no new connection, when the proxy holds
 * at least `growth` more open connections than at the last one, and its event loop idle. One such
 * pause (0.2-0.5 s at 5,000 connections on a loaded 2-core machine) per burst of
 * long-lived connections; short-lived ones (a steady connection rate) never trigger it.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { shrinkHeap } from '../util/shrink-heap.ts';

/** Open connections gained since the last shrink (or since the fewest open) that make a burst worth one. */
export const DEFAULT_SETTLE_GROWTH = 500;
/** A burst is over after a tick of this length without a new connection, its thread idle. */
export const SETTLE_TICK_MS = 1000;
/** Idle: its event loop busy at most this share of the tick (the collection stalls the thread for 0.1-0.5 s). */
export const IDLE_UTILIZATION = 0.05;

export interface HeapSettleOptions {
  /** Default DEFAULT_SETTLE_GROWTH. */
  growth?: number;
  tickMs?: number;
  /** Default shrinkHeap (a last-resort collection); tests count calls. */
  shrink?: () => Error | null;
  /** Whether the thread was idle since the last call; default its event loop's utilization (IDLE_UTILIZATION). */
  idle?: () => boolean;
  /** After each shrink: the connections open, how long it took (ms) or why it could not run, and whether it was start-up's (settleStartUp). */
  onShrink?: (open: number, ms: number, error: Error | null, startUp: boolean) => void;
}

export class HeapSettle {
  readonly #open: () => number;
  readonly #growth: number;
  readonly #tickMs: number;
  readonly #shrink: () => Error | null;
  readonly #onShrink: HeapSettleOptions['onShrink'];
  readonly #idle: () => boolean;
  /** Open connections at the last shrink, or the fewest since. */
  #base = 0;
  #acceptedInTick = 0;
  #timer: NodeJS.Timeout | null = null;
  /** Start-up's growth is still to be given back (settleStartUp). */
  #startUp = false;

  /** Whether a burst is being watched (the tick's timer runs). */
  get armed(): boolean {
    return this.#timer !== null;
  }

  /** `open`: this proxy's own open connections (its thread's heap holds them). */
  constructor(open: () => number, opts: HeapSettleOptions = {}) {
    const growth = opts.growth ?? DEFAULT_SETTLE_GROWTH;
    if (!(growth >= 1)) throw new Error(`heap settle growth must be >= 1 connection, got ${growth}`);
    this.#open = open;
    this.#growth = growth;
    this.#tickMs = opts.tickMs ?? SETTLE_TICK_MS;
    this.#shrink = opts.shrink ?? shrinkHeap;
    this.#onShrink = opts.onShrink;
    this.#idle = opts.idle ?? loopIdle();
  }

  /** A connection now counts as open: one comparison, and the timer armed once a burst is big enough. */
  opened(): void {
    this.#acceptedInTick++;
    if (this.#timer === null && this.#open() - this.#base >= this.#growth) {
      this.#timer = setInterval(this.#onTimer, this.#tickMs).unref();
    }
  }

  /** A connection closed (the count `open()` gives is already one less). */
  closed(): void {
    const open = this.#open();
    if (open < this.#base) this.#base = open;
  }

  /**
   * A thread's start-up grew its young generation (loading the proxy's modules,
   * util/shrink-heap.ts): given back at the first tick with no new connection and the thread idle,
   * as a burst's is, whatever the count open. Not before listening: a replacement proxy would wait
   * for the collection (31-60 ms, more on a busy machine) before taking connections; and a proxy
   * that has traffic from the start regrows the young generation anyway.
   */
  settleStartUp(): void {
    this.#startUp = true;
    this.#timer ??= setInterval(this.#onTimer, this.#tickMs).unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * The timer's tick (public for tests, which drive it by hand): shrinks once a tick passed
   * without a new connection, the thread idle (no traffic to stall).
   */
  tick(): void {
    const idle = this.#idle();
    if (this.#acceptedInTick > 0 || !idle) {
      this.#acceptedInTick = 0;
      return;
    }
    this.stop();
    const open = this.#open();
    const startUp = this.#startUp;
    if (!startUp && open - this.#base < this.#growth) return;
    this.#startUp = false;
    this.#base = open;
    const t0 = performance.now();
    const error = this.#shrink();
    this.#onShrink?.(open, performance.now() - t0, error, startUp);
  }

  #onTimer = (): void => this.tick();
}

/** Whether this thread's event loop was busy at most IDLE_UTILIZATION of the time since the last call. */
function loopIdle(): () => boolean {
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const d = performance.eventLoopUtilization(now, last);
    last = now;
    return d.utilization <= IDLE_UTILIZATION;
  };
}
