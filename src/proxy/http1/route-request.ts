// An HTTP/1 request as route matching reads it (routing/route-table.ts): method, path and
// headers, read from the raw head only when a match asks. One object per client connection,
// pointed at each request's head in turn, so matching allocates nothing for methods and exact
// paths; a header match decodes only the values it asks for, a query match only the query.
import type { RouteRequest } from '../../routing/route-match.ts';
import { pathOf, queryParam } from '../../util/request-target.ts';

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
