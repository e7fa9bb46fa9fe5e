// One reader of /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat lines, for the few fields the
// agent, its simulator, the benches and the tests read. The command name (field 2, in parentheses)
// is whatever the process set, spaces and ')' included, so the fields are counted from its last ')'.

/** The fields read here, by their number in proc(5). */
const FIELDS = { state: 3, utime: 14, stime: 15, nice: 19, num_threads: 20 } as const;

export type ProcStatField = keyof typeof FIELDS;

/** A field of a /proc stat line as written (state: one letter, 'Z' a zombie). Throws if the line has no such field. */
export function procStatField(stat: string, name: ProcStatField): string {
  const close = stat.lastIndexOf(')');
  const value = close < 0 ? undefined : stat.slice(close + 2).trimEnd().split(' ')[FIELDS[name] - 3];
  if (!value) throw new Error(`no ${name} (field ${FIELDS[name]}) in the /proc stat line ${JSON.stringify(stat.slice(0, 120))} (is the process gone?)`);
  return value;
}

/** A whole-number field: utime and stime (clock ticks), nice (-20..19), num_threads. Throws if it is missing or not a number. */
export function procStatInt(stat: string, name: Exclude<ProcStatField, 'state'>): number {
  const value = procStatField(stat, name);
  if (!/^-?\d+$/.test(value)) throw new Error(`${name} (field ${FIELDS[name]}) of the /proc stat line ${JSON.stringify(stat.slice(0, 120))} is ${JSON.stringify(value)}, not a whole number`);
  return Number(value);
}
