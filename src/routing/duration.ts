// Durations as Kubernetes users write them in annotations and Gateway API fields: "500ms",
// "1s", "1m30s", "1h" (Go's time.ParseDuration units, without µs/ns, which no timeout needs).
// Pure; returns milliseconds or throws with the text and what would be accepted.

const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

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
  return Math.round(total);
}
