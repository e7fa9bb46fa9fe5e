// Warnings caused by what a peer sends, one line per key (a peer and a cause) per interval: a
// peer that keeps sending junk must not flood the log. The first line keeps its whole detail;
// the ones held back are counted and the count goes out with the key's next line. Counters in
// the callers' status keep every occurrence; this only spares the log.

/** Distinct keys remembered before the set starts over (a flood of new keys must not grow it). */
export const MAX_KEYS = 1000;

/** A line to log: how many of its key's lines were held back since its last, and of forgotten keys. */
export interface Held {
  /** The key's lines held back since its last line. */
  suppressed: number;
  /**
   * Lines other keys held back when this line's key started the set over (past MAX_KEYS): those
   * keys are forgotten, so their counts go out here, once, rather than never.
   */
  forgotten: number;
}

export class LogLimit {
  private readonly last = new Map<string, { at: number; n: number }>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /** null: held back (counted); else log now, with what was held back (suppressedField). */
  hit(key: string, intervalMs: number): Held | null {
    const now = this.now();
    const e = this.last.get(key);
    if (e !== undefined && now - e.at < intervalMs) {
      e.n++;
      return null;
    }
    let forgotten = 0;
    if (e === undefined && this.last.size >= MAX_KEYS) {
      for (const k of this.last.values()) forgotten += k.n;
      this.last.clear();
    }
    this.last.set(key, { at: now, n: 0 });
    return { suppressed: e?.n ?? 0, forgotten };
  }
}

/** The line's fields for what was held back, each present only when something was. */
export function suppressedField(h: Held): { suppressed?: number; suppressedForgotten?: number } {
  return { ...(h.suppressed > 0 ? { suppressed: h.suppressed } : {}), ...(h.forgotten > 0 ? { suppressedForgotten: h.forgotten } : {}) };
}
