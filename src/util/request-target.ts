// The path of an HTTP request target, as the pod that serves it reads it: policy decides on it
// (src/policy/authorize.ts), routes match it and redirects keep it (src/routing, the forwarders).
// One reading for all, so that what a policy judges is what a route sends and the pod serves.

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
