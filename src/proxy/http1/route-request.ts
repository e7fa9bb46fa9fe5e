// An HTTP/1 request as route matching reads it (routing/route-table.ts): method, path and
// headers, read from the raw head only when a match asks. One object per client connection,
// pointed at each request's head in turn, so matching allocates nothing for methods and exact
// paths; a header match decodes only the values it asks for, a query match only the query.
import type { RouteRequest } from '../../routing/route-table.ts';
import { pathOf } from '../../util/request-target.ts';

const COLON = 58;
const CR = 13;
const SP = 32;
const HT = 9;

export class Http1RouteRequest implements RouteRequest {
  method = '';
  private target = '';
  private pathCache: string | null = null;
  private buf: Buffer | null = null;
  private start = 0;
  private end = 0;

  /** Points at a request head in buf[start, end). */
  set(method: string, target: string, buf: Buffer, start: number, end: number): void {
    this.method = method;
    this.target = target;
    this.pathCache = null;
    this.buf = buf;
    this.start = start;
    this.end = end;
  }

  get path(): string {
    if (this.pathCache === null) this.pathCache = pathOf(this.target);
    return this.pathCache;
  }

  header(name: string): string | undefined {
    return this.buf === null ? undefined : headerValue(this.buf, this.start, this.end, name);
  }

  query(name: string): string | undefined {
    return queryParam(this.target, name);
  }
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


/**
 * The value of a header in a validated head (parse-head.ts checked every line), several lines
 * of it joined with ", " as RFC 9110 combines them. `name` is lower-case.
 */
export function headerValue(buf: Buffer, start: number, end: number, name: string): string | undefined {
  // Skip the request line.
  let p = buf.indexOf(10, start) + 1;
  const last = end - 2;
  let out: string | undefined;
  const n = name.length;
  while (p > 0 && p < last) {
    const eol = buf.indexOf(10, p);
    if (eol < 0 || eol > end) break;
    if (buf[p + n] === COLON && eqLower(buf, p, name)) {
      let v = p + n + 1;
      let e = eol - 1; // at CR
      while (v < e && (buf[v] === SP || buf[v] === HT)) v++;
      while (e > v && (buf[e - 1] === SP || buf[e - 1] === HT || buf[e - 1] === CR)) e--;
      const value = buf.toString('latin1', v, e);
      out = out === undefined ? value : `${out}, ${value}`;
    }
    p = eol + 1;
  }
  return out;
}

function eqLower(buf: Buffer, p: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    let c = buf[p + i]!;
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}
