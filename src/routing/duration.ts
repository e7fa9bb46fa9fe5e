// Durations as Kubernetes users write them in annotations: "500ms", "1s", "1m30s", "1h", "1d".
// Every value Linkerd's policy controller takes for its timeout.linkerd.io/*, retry.linkerd.io/timeout
// and failure-accrual annotations (an integer and one of ms, s, m, h, d; or "0") means the same
// here; sums ("1m30s") and fractions ("1.5s"), which Linkerd refuses, are taken too. Pure; returns
// milliseconds or throws with the text and what would be accepted.

const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string, what = 'duration'): number {
  const s = text.trim();
  if (s === '0') return 0;
  PART.lastIndex = 0;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = PART.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = PART.lastIndex;
  }
  if (s === '' || matched !== s.length || !Number.isFinite(total)) {
    throw new Error(`${what}: ${JSON.stringify(text.slice(0, 40))} is not a duration; write it like 500ms, 10s, 1m or 1m30s`);
  }
  // Rounded to 0 it would read as 0, which turns a timeout off (Linkerd refuses it too).
  if (total > 0 && total < 1) throw new Error(`${what}: ${JSON.stringify(text.slice(0, 40))} is below 1ms, the finest a duration can be here; write 1ms or more, or 0 for none`);
  return Math.round(total);
}
