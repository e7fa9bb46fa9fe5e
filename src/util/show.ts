// A peer's value quoted in an error message: its JSON, cut short. JSON.parse takes lists nested
// thousands deep that JSON.stringify overflows the stack on; such a value is named, not thrown,
// so the error still says which field was wrong.

export function show(v: unknown, max = 80): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    return `${Array.isArray(v) ? 'a list' : 'an object'} nested too deep to show`;
  }
  return (s ?? String(v)).slice(0, max);
}
