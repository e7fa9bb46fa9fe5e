// Linkerd's `consecutive` failure accrual (balancer.linkerd.io/failure-accrual on a Service):
// after maxFailures failures in a row an endpoint is ejected for a backoff (minPenalty,
// doubling up to maxPenalty, with jitter); then one probe request is let through: success
// takes it back, failure ejects it again for the next backoff. Responses that arrive while it
// is ejected are ignored (they were sent before). Pure state machine: time comes in.
import { parseDuration } from './duration.ts';

export interface AccrualParams {
  maxFailures: number;
  minPenaltyMs: number;
  maxPenaltyMs: number;
  /** Each backoff is scaled by a random factor in [1 - ratio/2, 1 + ratio/2]. */
  jitterRatio: number;
}

export const ACCRUAL_ANNOTATION = 'balancer.linkerd.io/failure-accrual';
const P = 'balancer.linkerd.io/failure-accrual-consecutive-';
export const DEFAULT_ACCRUAL: AccrualParams = { maxFailures: 7, minPenaltyMs: 1000, maxPenaltyMs: 60_000, jitterRatio: 0.5 };

/**
 * The Service's accrual settings from its annotations: null when off. Invalid values are
 * reported and replaced by Linkerd's defaults (a typo must not turn accrual off silently).
 */
export function accrualFromAnnotations(a: Record<string, string>): { params: AccrualParams | null; errors: string[] } {
  const mode = a[ACCRUAL_ANNOTATION];
  const errors: string[] = [];
  if (mode === undefined) return { params: null, errors };
  if (mode !== 'consecutive') {
    errors.push(`${ACCRUAL_ANNOTATION}: ${JSON.stringify(mode)} is not supported; the only mode is "consecutive"`);
    return { params: null, errors };
  }
  const params = { ...DEFAULT_ACCRUAL };
  const int = (k: string, set: (n: number) => void) => {
    const v = a[P + k];
    if (v === undefined) return;
    const n = Number(v);
    if (Number.isInteger(n) && n >= 1 && n <= 1_000_000) set(n);
    else errors.push(`${P}${k}: ${JSON.stringify(v)} is not a positive integer`);
  };
  const dur = (k: string, set: (n: number) => void) => {
    const v = a[P + k];
    if (v === undefined) return;
    try {
      const ms = parseDuration(v, P + k);
      if (ms <= 0) throw new Error(`${P}${k}: must be above 0`);
      set(ms);
    } catch (e) {
      errors.push((e as Error).message);
    }
  };
  int('max-failures', (n) => (params.maxFailures = n));
  dur('min-penalty', (n) => (params.minPenaltyMs = n));
  dur('max-penalty', (n) => (params.maxPenaltyMs = n));
  const j = a[P + 'jitter-ratio'];
  if (j !== undefined) {
    const n = Number(j);
    if (Number.isFinite(n) && n >= 0 && n <= 1 && j.trim() !== '') params.jitterRatio = n;
    else errors.push(`${P}jitter-ratio: ${JSON.stringify(j)} is not a number between 0 and 1`);
  }
  if (params.maxPenaltyMs < params.minPenaltyMs) {
    errors.push(`${P}max-penalty is below min-penalty; using min-penalty for both`);
    params.maxPenaltyMs = params.minPenaltyMs;
  }
  return { params, errors };
}

const OPEN = 0;
const EJECTED = 1;
const PROBATION = 2;

export class FailureAccrual {
  private readonly p: AccrualParams;
  private readonly random: () => number;
  private st = OPEN;
  private consecutive = 0;
  private backoffMs = 0;
  private until = 0;
  private probing = false;
  /** Times ejected (diagnostics, tests). */
  ejections = 0;

  constructor(p: AccrualParams, random: () => number = Math.random) {
    this.p = p;
    this.random = random;
  }

  state(now: number): 'ready' | 'ejected' | 'probation' {
    this.tick(now);
    return this.st === OPEN ? 'ready' : this.st === EJECTED ? 'ejected' : 'probation';
  }

  /** May a request go to this endpoint now? In probation only the one probe. */
  admits(now: number): boolean {
    this.tick(now);
    return this.st === OPEN || (this.st === PROBATION && !this.probing);
  }

  onSend(now: number): void {
    this.tick(now);
    if (this.st === PROBATION) this.probing = true;
  }

  /**
   * A request to it ended without telling anything (the client gave up, or an eager pick went
   * unused). In probation that may be the probe: its slot is freed, so another probe can go;
   * else the endpoint would stay held back for good, as nothing else ends probation.
   */
  onCancel(now: number): void {
    this.tick(now);
    if (this.st === PROBATION) this.probing = false;
  }

  onResult(success: boolean, now: number): void {
    this.tick(now);
    if (this.st === EJECTED) return; // sent before the ejection
    if (this.st === PROBATION) {
      if (!this.probing) return;
      this.probing = false;
      if (success) {
        this.st = OPEN;
        this.consecutive = 0;
        this.backoffMs = 0;
      } else this.eject(now, Math.min(this.p.maxPenaltyMs, this.backoffMs * 2));
      return;
    }
    if (success) this.consecutive = 0;
    else if (++this.consecutive >= this.p.maxFailures) this.eject(now, this.p.minPenaltyMs);
  }

  private eject(now: number, backoffMs: number): void {
    this.st = EJECTED;
    this.ejections++;
    this.backoffMs = backoffMs;
    const jitter = 1 + this.p.jitterRatio * (this.random() - 0.5);
    this.until = now + backoffMs * jitter;
    this.consecutive = 0;
  }

  private tick(now: number): void {
    if (this.st === EJECTED && now >= this.until) {
      this.st = PROBATION;
      this.probing = false;
    }
  }
}
