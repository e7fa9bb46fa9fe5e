// Power of two choices over peak-EWMA latency, as linkerd2-proxy balances (tower's PeakEwma):
// pick two endpoints at random, send to the one with the lower cost, where
//   cost = rtt estimate x (requests in flight + 1).
// The estimate jumps to any slower observation at once (peak) and otherwise decays toward what
// is observed with a time constant (10 s), and toward zero while nothing is observed, so an
// endpoint that was slow is tried again after a while. New endpoints start at a default RTT
// (30 ms). Optional failure accrual (Linkerd's `consecutive`): after N failures in a row an
// endpoint gets no requests for a backoff, then one probe decides (failure-accrual.ts).
// Pure: time and randomness are injected, so tests drive it without a network.
import type { ServiceEndpoint } from '../discovery/store.ts';
import { FailureAccrual, type AccrualParams } from './failure-accrual.ts';

export interface EwmaParams {
  defaultRttMs: number;
  decayMs: number;
}

/** linkerd2-proxy's defaults. */
export const LINKERD_EWMA: EwmaParams = { defaultRttMs: 30, decayMs: 10_000 };

/** The latency a failure without a response counts as (a peak; it decays like any other). */
export const FAILURE_PENALTY_MS = 1000;

export type Outcome = 'success' | 'failure' | 'cancel';

export interface BalancerOptions {
  ewma?: EwmaParams;
  accrual?: AccrualParams | null;
  now?: () => number;
  random?: () => number;
}

/** One endpoint as the balancer keeps it. Handed out by pick(); give it back to done() once. */
export class BalancedEndpoint {
  /** Who is behind the address now (a pod replaced at the same address is renamed in place). */
  ep: ServiceEndpoint;
  /** ip:port: also the upstream pool's key. */
  readonly key: string;
  rttMs: number;
  updatedAt: number;
  inflight = 0;
  /** Picks and failures since the balancer first saw it (diagnostics). */
  requests = 0;
  failures = 0;
  /** No longer in the Service's endpoints: gets no new requests; in-flight ones finish. */
  removed = false;
  /** Replaced (fresh state) when the Service's accrual settings change. */
  accrual: FailureAccrual | null;

  constructor(ep: ServiceEndpoint, rttMs: number, now: number, accrual: AccrualParams | null) {
    this.ep = ep;
    this.key = ep.ip + ':' + ep.port;
    this.rttMs = rttMs;
    this.updatedAt = now;
    this.accrual = accrual ? new FailureAccrual(accrual) : null;
  }
}

export interface EndpointSnapshot {
  ip: string;
  port: number;
  pod?: string;
  node?: string;
  zone?: string;
  /** ready: takes requests; ejected: failure accrual holds it back; probation: one probe allowed. */
  state: 'ready' | 'ejected' | 'probation';
  ewmaMs: number;
  inflight: number;
  requests: number;
  failures: number;
  /** Times failure accrual ejected it (0 without accrual). */
  ejections: number;
}

export class Balancer {
  private readonly ewma: EwmaParams;
  private accrualParams: AccrualParams | null;
  private readonly now: () => number;
  private readonly random: () => number;
  private list: BalancedEndpoint[] = [];
  private byKey = new Map<string, BalancedEndpoint>();
  /** pickAmongAvailable's scratch: which endpoints it may choose (one byte each, grown with the list). */
  private mask = new Uint8Array(0);

  constructor(opts: BalancerOptions = {}) {
    this.ewma = opts.ewma ?? LINKERD_EWMA;
    this.accrualParams = opts.accrual ?? null;
    this.now = opts.now ?? performance.now.bind(performance);
    this.random = opts.random ?? Math.random;
  }

  /**
   * Replaces the endpoint set; endpoints that stay keep their object (the one their in-flight
   * requests hand back), estimate and in-flight count, and their accrual state unless the
   * settings changed.
   */
  setEndpoints(eps: readonly ServiceEndpoint[], accrual: AccrualParams | null = this.accrualParams): void {
    const accrualChanged = !sameAccrual(accrual, this.accrualParams);
    this.accrualParams = accrual;
    const now = this.now();
    const next = new Map<string, BalancedEndpoint>();
    const list: BalancedEndpoint[] = [];
    for (const ep of eps) {
      const k = ep.ip + ':' + ep.port;
      if (next.has(k)) continue;
      let b = this.byKey.get(k);
      if (b === undefined) b = new BalancedEndpoint(ep, this.ewma.defaultRttMs, now, accrual);
      else {
        b.ep = ep;
        if (accrualChanged) b.accrual = accrual ? new FailureAccrual(accrual) : null;
      }
      next.set(k, b);
      list.push(b);
    }
    for (const [k, b] of this.byKey) if (!next.has(k)) b.removed = true;
    this.byKey = next;
    this.list = list;
    if (this.mask.length < list.length) this.mask = new Uint8Array(list.length);
  }

  get size(): number {
    return this.list.length;
  }

  /** Endpoints failure accrual holds back now (ejected, or in probation with its probe out). */
  heldBack(now = this.now()): number {
    let n = 0;
    for (const b of this.list) if (!this.available(b, now)) n++;
    return n;
  }

  /**
   * The endpoint for one request (or one connection), counted in flight until done(). null when
   * there is none to send to: no endpoints, or failure accrual holds every one back.
   *
   * `ready(b, drawn)`: whether an endpoint can take the request now (HTTP/2: a connected
   * upstream session). `drawn`: b is one of P2C's two random draws, which the caller may start
   * connecting; false while the balancer looks for any ready endpoint because neither draw was,
   * so that scan connects nothing (a Service of a thousand endpoints is not dialled at once: the
   * draws warm it two at a time, as they spread load). P2C chooses among ready endpoints, as
   * tower's balancer chooses among services polled ready, and among all only when none is: a
   * request waits for a connect only when every endpoint would make it wait.
   */
  pick(ready?: (b: BalancedEndpoint, drawn: boolean) => boolean, avoid?: BalancedEndpoint | null): BalancedEndpoint | null {
    const list = this.list;
    const n = list.length;
    if (n === 0) return null;
    const now = this.now();
    let chosen: BalancedEndpoint | null = null;
    // A retry: P2C over the other endpoints first (one that answered an error fast looks cheapest,
    // and would take the retry too); the avoided one only when none of the others is available.
    const skip = avoid != null && n > 1 ? list.indexOf(avoid) : -1;
    if (skip >= 0) chosen = this.pickOther(skip, now, ready);
    if (chosen === null && n === 1) chosen = this.available(list[0]!, now) ? list[0]! : null;
    else if (chosen === null) {
      const i = Math.floor(this.random() * n);
      let j = Math.floor(this.random() * (n - 1));
      if (j >= i) j++;
      const a = list[i]!;
      const b = list[j]!;
      const aAv = this.available(a, now);
      const bAv = this.available(b, now);
      const aOk = aAv && (ready === undefined || ready(a, true));
      const bOk = bAv && (ready === undefined || ready(b, true));
      if (aOk && bOk) chosen = this.cost(a, now) <= this.cost(b, now) ? a : b;
      else if (aOk || bOk) chosen = aOk ? a : b;
      else {
        chosen = ready !== undefined ? this.pickAmongAvailable(now, ready) : null;
        // None ready (a cold Service): one of the draws, whose connects `ready` started, rather
        // than a third endpoint the request would open one more connection to.
        if (chosen === null && (aAv || bAv)) chosen = aAv && bAv ? (this.cost(a, now) <= this.cost(b, now) ? a : b) : aAv ? a : b;
        chosen ??= this.pickAmongAvailable(now);
      }
    }
    if (chosen === null) return null;
    chosen.inflight++;
    chosen.requests++;
    chosen.accrual?.onSend(now);
    return chosen;
  }

  /**
   * P2C over every endpoint but list[skip]: the cheaper of two draws that are available and ready,
   * else one of them that is, else the cheaper available draw (its connect started by `ready`);
   * null when neither draw is available.
   */
  private pickOther(skip: number, now: number, ready?: (b: BalancedEndpoint, drawn: boolean) => boolean): BalancedEndpoint | null {
    const list = this.list;
    const m = list.length - 1;
    const at = (k: number) => list[k >= skip ? k + 1 : k]!;
    const i = Math.floor(this.random() * m);
    const a = at(i);
    let b = a;
    if (m > 1) {
      let j = Math.floor(this.random() * (m - 1));
      if (j >= i) j++;
      b = at(j);
    }
    const aAv = this.available(a, now);
    const bAv = b !== a && this.available(b, now);
    const aOk = aAv && (ready === undefined || ready(a, true));
    const bOk = bAv && (ready === undefined || ready(b, true));
    if (aOk && bOk) return this.cost(a, now) <= this.cost(b, now) ? a : b;
    if (aOk || bOk) return aOk ? a : b;
    if (aAv && bAv) return this.cost(a, now) <= this.cost(b, now) ? a : b;
    return aAv ? a : bAv ? b : null;
  }

  /** A picked endpoint's request is over: rttMs is the time to its response (null when none came). */
  done(b: BalancedEndpoint, rttMs: number | null, outcome: Outcome): void {
    if (b.inflight > 0) b.inflight--;
    const now = this.now();
    if (rttMs !== null) this.observe(b, rttMs, now);
    // A failure without any response (refused, reset, timed out) is the slowest answer there is:
    // as a peak it keeps P2C away from the endpoint while the estimate decays, instead of the
    // endpoint looking as fast as one never tried (tower drops a failing endpoint until it reconnects).
    else if (outcome === 'failure') this.observe(b, FAILURE_PENALTY_MS, now);
    if (outcome === 'failure') b.failures++;
    if (outcome !== 'cancel') b.accrual?.onResult(outcome === 'success', now);
    else b.accrual?.onCancel(now);
  }

  snapshot(): EndpointSnapshot[] {
    const now = this.now();
    return this.list.map((b) => {
      const s: EndpointSnapshot = {
        ip: b.ep.ip, port: b.ep.port, state: b.accrual?.state(now) ?? 'ready', ewmaMs: this.decayed(b, now),
        inflight: b.inflight, requests: b.requests, failures: b.failures, ejections: b.accrual?.ejections ?? 0,
      };
      if (b.ep.pod !== undefined) s.pod = b.ep.pod;
      if (b.ep.node !== undefined) s.node = b.ep.node;
      if (b.ep.zone !== undefined) s.zone = b.ep.zone;
      return s;
    });
  }

  private available(b: BalancedEndpoint, now: number): boolean {
    return b.accrual === null || b.accrual.admits(now);
  }

  /**
   * P2C over the endpoints accrual admits, when both first draws were held back. Counts and
   * indexes them in place rather than building their array per pick: the same draws choose the
   * same endpoints (admits() is stable at one `now`).
   */
  private pickAmongAvailable(now: number, ready?: (b: BalancedEndpoint, drawn: boolean) => boolean): BalancedEndpoint | null {
    // `ready` is asked once per endpoint, into a mask the indexing reads.
    const mask = this.mask;
    let n = 0;
    for (let k = 0; k < this.list.length; k++) {
      const b = this.list[k]!;
      const ok = this.available(b, now) && (ready === undefined || ready(b, false));
      mask[k] = ok ? 1 : 0;
      if (ok) n++;
    }
    if (n === 0) return null;
    if (n === 1) return this.nthAvailable(0);
    const i = Math.floor(this.random() * n);
    let j = Math.floor(this.random() * (n - 1));
    if (j >= i) j++;
    const a = this.nthAvailable(i);
    const b = this.nthAvailable(j);
    return this.cost(a, now) <= this.cost(b, now) ? a : b;
  }

  /** The k-th endpoint (from 0) pickAmongAvailable's mask admits; there are more than k. */
  private nthAvailable(k: number): BalancedEndpoint {
    for (let x = 0; x < this.list.length; x++) if (this.mask[x] === 1 && k-- === 0) return this.list[x]!;
    throw new Error('balancer: fewer endpoints available than counted');
  }

  /** tower's load(): decays the estimate to now (and keeps it, as tower does) times (in flight + 1). */
  private cost(b: BalancedEndpoint, now: number): number {
    b.rttMs = this.decayed(b, now);
    b.updatedAt = now;
    return b.rttMs * (b.inflight + 1);
  }

  private decayed(b: BalancedEndpoint, now: number): number {
    const elapsed = now - b.updatedAt;
    return elapsed > 0 ? b.rttMs * Math.exp(-elapsed / this.ewma.decayMs) : b.rttMs;
  }

  /** Peak: a slower observation replaces the estimate; a faster one moves it by how long it has been. */
  private observe(b: BalancedEndpoint, rttMs: number, now: number): void {
    if (rttMs > b.rttMs) b.rttMs = rttMs;
    else {
      const decay = Math.exp(-Math.max(0, now - b.updatedAt) / this.ewma.decayMs);
      b.rttMs = b.rttMs * decay + rttMs * (1 - decay);
    }
    b.updatedAt = now;
  }
}

function sameAccrual(a: AccrualParams | null, b: AccrualParams | null): boolean {
  if (a === null || b === null) return a === b;
  return a.maxFailures === b.maxFailures && a.minPenaltyMs === b.minPenaltyMs && a.maxPenaltyMs === b.maxPenaltyMs && a.jitterRatio === b.jitterRatio;
}
