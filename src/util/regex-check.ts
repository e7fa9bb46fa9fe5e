// A regular expression a user wrote (a route's or an access rule's match): bounded, compiled once
// to prove it is one, and one a request cannot make the proxy's thread backtrack on for ever.
//
// JavaScript's engine backtracks: `^(?:/api/(\w+/?)+)$` against a 30-character path that does not
// match takes seconds, a longer one years, and the thread serves every pod of the node. Envoy and
// Linkerd run RE2-style linear-time engines. V8 has one too (its "experimental" engine, the `l`
// flag): with the flags below, a match that backtracks 50,000 times is finished by it. It runs
// what RE2 runs except counted repetition above 16 (`{17}`, `{1,32}`), and neither runs
// backreferences or lookaheads (V8's runs lookbehinds); a regex it cannot run would have no such
// bound, so it is refused
// (as Envoy refuses a regex over its program-size limit). Otherwise the usual engine does the
// matching, at its usual speed (the linear one is some 30 times slower on ordinary paths).
import * as v8 from 'node:v8';

v8.setFlagsFromString('--enable-experimental-regexp-engine');
v8.setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');

export const MAX_REGEX = 1024;

/** Why `v` cannot be used as a regular expression, or null when it can. */
export function regexProblem(v: string): string | null {
  if (v.length > MAX_REGEX) return `regular expression longer than ${MAX_REGEX} characters`;
  try {
    new RegExp(v);
  } catch (e) {
    return `not a regular expression: ${(e as Error).message}`;
  }
  try {
    new RegExp(v, 'l');
  } catch {
    return 'a regular expression that cannot be matched in linear time: it uses a backreference, a lookahead, or counted repetition over 16 (such as {32}); '
      + 'write it without them (RE2 syntax; repeat a count in parts, as [0-9a-f]{16}[0-9a-f]{16}), so that no request can stall the proxy on it';
  }
  return null;
}

/** `source` compiled for matching requests (regexProblem() accepted it): by the backtracking engine, finished in linear time past 50,000 backtracks. */
export function userRegExp(source: string): RegExp {
  return new RegExp(source);
}
