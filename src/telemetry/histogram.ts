// Latency histograms with one fixed set of bucket bounds, so histograms from every agent and
// every interval merge by adding counts, and percentiles of the merged histogram are as exact
// as a single process's would be (averaging per-agent percentiles would not be).
// Pure: no I/O.

/**
 * Upper bounds in ms: 50µs growing by 25% a bucket up to about 60s (64 buckets), then +Inf.
 * A percentile read from these is off by at most half a bucket, about 12%. The bounds are
 * part of the report protocol: change them only together with LATENCY_SCHEME.
 */
export const LATENCY_SCHEME = 'log1.25-50us';
export const LATENCY_BOUNDS: readonly number[] = Object.freeze(
  Array.from({ length: 64 }, (_, i) => Number((0.05 * 1.25 ** i).toPrecision(3))),
);

/** Index of the bucket a latency falls in: the first bound >= ms; LATENCY_BOUNDS.length for +Inf. */
export function bucketOf(ms: number): number {
  if (!(ms > LATENCY_BOUNDS[0]!)) return 0; // also NaN and negatives: count them, in the lowest bucket
  let lo = 0;
  let hi = LATENCY_BOUNDS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (LATENCY_BOUNDS[mid]! >= ms) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Counts per bucket; index LATENCY_BOUNDS.length is +Inf. Trailing zeros may be left off. */
export type Histogram = number[];

export function observe(h: Histogram, ms: number): void {
  const i = bucketOf(ms);
  while (h.length <= i) h.push(0);
  h[i]!++;
}

/** Adds b into a. */
export function mergeInto(a: Histogram, b: readonly number[]): Histogram {
  while (a.length < b.length) a.push(0);
  for (let i = 0; i < b.length; i++) a[i]! += b[i]!;
  return a;
}

/** Drops trailing zero buckets (what goes on the wire). */
export function trim(h: Histogram): Histogram {
  let n = h.length;
  while (n > 0 && h[n - 1] === 0) n--;
  return h.slice(0, n);
}

export function total(h: readonly number[]): number {
  let n = 0;
  for (const c of h) n += c;
  return n;
}

/**
 * The q-quantile (0..1) in ms, interpolating linearly inside the bucket as Prometheus's
 * histogram_quantile does; null for an empty histogram. A rank in the +Inf bucket answers
 * the highest finite bound, again as Prometheus does.
 */
export function quantile(h: readonly number[], q: number): number | null {
  const n = total(h);
  if (n === 0) return null;
  const rank = q * n;
  let cum = 0;
  for (let i = 0; i < h.length; i++) {
    const c = h[i]!;
    if (c === 0) continue;
    if (cum + c >= rank) {
      if (i >= LATENCY_BOUNDS.length) return LATENCY_BOUNDS[LATENCY_BOUNDS.length - 1]!;
      const lower = i === 0 ? 0 : LATENCY_BOUNDS[i - 1]!;
      const upper = LATENCY_BOUNDS[i]!;
      return lower + (upper - lower) * Math.max(0, (rank - cum) / c);
    }
    cum += c;
  }
  return LATENCY_BOUNDS[LATENCY_BOUNDS.length - 1]!;
}
