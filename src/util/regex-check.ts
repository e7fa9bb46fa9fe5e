// A regular expression a user wrote (a route's or an access rule's match): bounded, and compiled
// once to prove it is one. The callers throw their own error kind with where it was.

export const MAX_REGEX = 1024;

/** Why `v` cannot be used as a regular expression, or null when it can. */
export function regexProblem(v: string): string | null {
  if (v.length > MAX_REGEX) return `regular expression longer than ${MAX_REGEX} characters`;
  try {
    new RegExp(v);
  } catch (e) {
    return `not a regular expression: ${(e as Error).message}`;
  }
  return null;
}
