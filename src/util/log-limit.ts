// Warnings caused by what a peer sends, one line per key (a peer and a cause) per interval: a
// peer that keeps sending junk must not flood the log. The first line keeps its whole detail;
// the ones held back are counted and the count goes out with the key's next line. Counters in
// the callers' status keep every occurrence; this only spares the log.

/** Distinct keys remembered before the set starts over (a flood of new keys must not grow it). */
export const MAX_KEYS = 1000;

export class LogLimit {
  private readonly last = new Map<string, { at: number; n: number }>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /** null: held back (counted); else log now, with this many held back since the key's last line. */
  hit(key: string, intervalMs: number): number | null {
    const now = this.now();
    const e = this.last.get(key);
    if (e !== undefined && now - e.at < intervalMs) {
      e.n++;
      return null;
    }
    if (e === undefined && this.last.size >= MAX_KEYS) this.last.clear();
    this.last.set(key, { at: now, n: 0 });
    return e?.n ?? 0;
  }
}

/** The `suppressed` field of a line, present only when something was held back. */
export function suppressedField(n: number): { suppressed?: number } {
  return n > 0 ? { suppressed: n } : {};
}
