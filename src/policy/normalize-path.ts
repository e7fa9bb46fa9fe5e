// The path a policy decides on: the request's path as the server will resolve it (RFC 3986:
// percent-encoded unreserved characters decoded, dot segments removed), so `/public/../admin` and
// `/public/%2e%2e/admin` are judged as `/admin`, which is what the pod serves. A rule written for
// `/public/.*` would otherwise allow them. This is Istio's default for its authorization policy
// (path normalization BASE). The request itself goes on as the client sent it. Pure.

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** `path` (from a request target, no query) normalized; itself when there is nothing to do. */
export function normalizePath(path: string): string {
  // Most paths have no '%' and no dot segment: no work, no allocation.
  if (path.indexOf('%') < 0 && !hasDotSegment(path)) return path;
  return removeDotSegments(decodeUnreserved(path));
}

function hasDotSegment(p: string): boolean {
  for (let i = p.indexOf('.'); i >= 0; i = p.indexOf('.', i + 1)) {
    const before = i === 0 ? '/' : p[i - 1];
    if (before !== '/') continue;
    const after = p[i + 1];
    if (after === undefined || after === '/') return true; // "/."
    if (after === '.' && (p[i + 2] === undefined || p[i + 2] === '/')) return true; // "/.."
  }
  return false;
}

/** %XX of an unreserved character decoded (RFC 3986 6.2.2.2); other escapes, %2F among them, kept as written. */
function decodeUnreserved(p: string): string {
  if (p.indexOf('%') < 0) return p;
  return p.replace(/%([0-9A-Fa-f]{2})/g, (esc, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : esc;
  });
}

/** RFC 3986 5.2.4 over an absolute path: "." segments go, ".." takes the segment before it (never above the root). */
function removeDotSegments(p: string): string {
  if (!hasDotSegment(p)) return p;
  const out: string[] = [];
  const segs = p.split('/');
  // segs[0] is '' for a path starting with '/'.
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    const last = i === segs.length - 1;
    if (s === '.') {
      if (last) out.push('');
    } else if (s === '..') {
      out.pop();
      if (last) out.push('');
    } else out.push(s);
  }
  return '/' + out.join('/');
}
