// The retry budget, always on, per client workload and Service (GEP-3388's defaults): retries
// may add at most 20% to the requests of the last 10 s, plus 10 retries in each second (so a
// quiet client can still retry). Linkerd's counted retries (retry.linkerd.io/limit) have no
// budget; ours keeps a failing Service's load at about 1.2x its requests plus 10/s however many
// clients retry, instead of multiplying it by the retry limit.
// Pure: time is injected; one-second buckets in a ring, no timers.

export interface BudgetParams {
  /** Retries as a fraction of the window's original requests. */
  ratio: number;
  /** Retries always allowed per one-second bucket. */
  minPerSecond: number;
  /** The window the ratio is computed over, in whole seconds. */
  windowSeconds: number;
}

export const DEFAULT_BUDGET: BudgetParams = { ratio: 0.2, minPerSecond: 10, windowSeconds: 10 };

export class RetryBudget {
  private readonly p: BudgetParams;
  private readonly now: () => number;
  private readonly requests: Float64Array;
  private readonly retries: Float64Array;
  /** The second (floor(now / 1000)) the current bucket counts. */
  private second: number;
  private at = 0;
  private reqSum = 0;
  private retSum = 0;
  /** Retries taken from the current second's own allowance (minPerSecond). */
  private minUsed = 0;
  /** Retries refused (diagnostics, tests). */
  refused = 0;

  constructor(p: BudgetParams = DEFAULT_BUDGET, now: () => number = performance.now.bind(performance)) {
    this.p = p;
    this.now = now;
    this.requests = new Float64Array(p.windowSeconds);
    this.retries = new Float64Array(p.windowSeconds);
    this.second = Math.floor(now() / 1000);
  }

  /** An original request (not a retry) was sent. */
  deposit(): void {
    this.advance();
    this.requests[this.at]!++;
    this.reqSum++;
  }

  /**
   * May one retry be sent now? Counts it when it may: first against this second's allowance,
   * then against the ratio. The two add up (retries <= ratio x requests + minPerSecond a second),
   * rather than the larger of the two.
   */
  withdraw(): boolean {
    this.advance();
    if (this.minUsed + 1 <= this.p.minPerSecond) {
      this.minUsed++;
      return true;
    }
    if (this.retSum + 1 <= this.p.ratio * this.reqSum) {
      this.retries[this.at]!++;
      this.retSum++;
      return true;
    }
    this.refused++;
    return false;
  }

  /** What the window holds (diagnostics): retries counted against the ratio, and this second's others. */
  state(): { requests: number; retries: number; thisSecond: number; refused: number } {
    this.advance();
    return { requests: this.reqSum, retries: this.retSum, thisSecond: this.minUsed, refused: this.refused };
  }

  private advance(): void {
    const s = Math.floor(this.now() / 1000);
    if (s === this.second) return;
    this.minUsed = 0;
    const n = this.p.windowSeconds;
    const steps = Math.min(n, s - this.second);
    for (let i = 0; i < steps; i++) {
      this.at = (this.at + 1) % n;
      this.reqSum -= this.requests[this.at]!;
      this.retSum -= this.retries[this.at]!;
      this.requests[this.at] = 0;
      this.retries[this.at] = 0;
    }
    this.second = s;
  }
}
