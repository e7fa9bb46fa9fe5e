// The path and query of an HTTP request target, as the pod that serves it reads them: policy
// decides on them (src/policy/authorize.ts), routes match them and redirects keep the path
// (src/routing, the forwarders). One reading for all, so that what a policy judges is what a
// route sends and the pod serves.

/**
 * The origin-form of a request target: as is when it starts with "/" (or is "*"); absolute-form's
 * path and query otherwise. The authority ends at the first "/", "?" or "#" (RFC 3986 3.2):
 * "http://h?to=/x" is "/?to=/x", not "/x".
 */
export function originForm(target: string): string {
  if (target.charCodeAt(0) === 47 /* / */) return target;
  const scheme = target.indexOf('://');
  if (scheme < 0) return target;
  for (let i = scheme + 3; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 47 /* / */) return target.slice(i);
    if (c === 63 /* ? */ || c === 35 /* # */) return `/${target.slice(i)}`;
  }
  return '/';
}

/** The path of a request target, without its query: "/a?b" and "http://h/a?b" are "/a". */
export function pathOf(target: string): string {
  const t = originForm(target);
  const q = t.indexOf('?');
  return q < 0 ? t : t.slice(0, q);
}

/**
 * The first value of the query parameter `name` in a request target (origin- or absolute-form;
 * `?a=1&b&c=` has a = "1", b = "", c = ""). Names and values are compared and returned
 * percent-decoded, as the URI equivalence Gateway API's name rule cites (RFC 7230 2.7.3) has it:
 * `%61` is `a`. A "+" stays a "+" (a query is not form data); a malformed escape is compared as
 * written. A repeated parameter: its first value, as Gateway API recommends. Case-sensitive.
 * Scans the query once; allocates only for a parameter with an escape and the value returned.
 */
export function queryParam(target: string, name: string): string | undefined {
  let p = target.indexOf('?');
  if (p < 0) return undefined;
  p++;
  const n = target.length;
  let pct = target.indexOf('%', p);
  while (p <= n) {
    let amp = target.indexOf('&', p);
    if (amp < 0) amp = n;
    let eq = target.indexOf('=', p);
    if (eq < 0 || eq > amp) eq = amp;
    if (pct >= 0 && pct < p) pct = target.indexOf('%', p);
    const escaped = pct >= 0 && pct < eq;
    if (escaped ? decode(target.slice(p, eq)) === name : eq - p === name.length && target.startsWith(name, p)) {
      return eq === amp ? '' : decode(target.slice(eq + 1, amp));
    }
    p = amp + 1;
  }
  return undefined;
}

function decode(s: string): string {
  if (s.indexOf('%') < 0) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    // Not UTF-8, or a "%" without two hex digits: compared as written.
    return s;
  }
}
