// Statistics for tests that check a spread, e.g. of connections or requests over endpoints.

/** Pearson's chi-square statistic of observed counts against a uniform spread. */
export function chiSquareUniform(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const expected = total / counts.length;
  return counts.reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
}

/** Upper critical values of chi-square for 1..5 degrees of freedom. */
const CRITICAL: Record<string, number[]> = {
  '0.01': [6.635, 9.21, 11.345, 13.277, 15.086],
  '0.001': [10.828, 13.816, 16.266, 18.467, 20.515],
};

/** True if counts are consistent with a uniform spread at significance p: a fair source fails this with probability p. */
export function looksUniform(counts: number[], p: 0.01 | 0.001): boolean {
  const df = counts.length - 1;
  const crit = CRITICAL[String(p)]?.[df - 1];
  if (crit === undefined) throw new Error(`no chi-square critical value for ${df} degrees of freedom at p = ${p}; add it to test/helpers/stats.ts`);
  return chiSquareUniform(counts) < crit;
}
