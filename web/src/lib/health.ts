// Colours of success rates, as Linkerd's dashboard draws them. Pure.

/** good at 95% and above, warn from 90%, bad below; none without requests. */
export function successClass(rate: number | null): 'good' | 'warn' | 'bad' | 'none' {
  if (rate === null) return 'none';
  if (rate >= 0.95) return 'good';
  if (rate >= 0.9) return 'warn';
  return 'bad';
}
