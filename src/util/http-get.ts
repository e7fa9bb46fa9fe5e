// One GET for the CLI (status, dashboard, inject): node:http(s), not fetch(), which refuses the
// Fetch standard's "bad ports" (6000, 6665-6669, 10080...) where an agent or a file server may
// listen. Redirects are followed only when asked, never from https to http (as curl and
// browsers), and the body is bounded. A failure rejects with why: the socket's error (its `code`,
// ECONNREFUSED, and Node's message), or one of ours ("no answer within 3 s", "it redirects to
// http://..., which is not https").
import * as http from 'node:http';
import * as https from 'node:https';

export interface HttpAnswer {
  status: number;
  body: string;
}

export interface HttpGetOptions {
  timeoutMs: number;
  /** How many redirects to follow (default none: a 3xx is the answer; followed that many, "too many redirects"). */
  redirects?: number;
  /** The body's bound in characters (default 64 Mi). */
  maxChars?: number;
}

const DEFAULT_MAX_CHARS = 64 * 1024 * 1024;

export function httpGet(url: string | URL, o: HttpGetOptions): Promise<HttpAnswer> {
  const u = new URL(url);
  const maxChars = o.maxChars ?? DEFAULT_MAX_CHARS;
  return new Promise((resolve, reject) => {
    const fail = (why: string | Error) => reject(typeof why === 'string' ? new Error(why) : why);
    const get = u.protocol === 'https:' ? https.get : http.get;
    const req = get(u, { timeout: o.timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status >= 300 && status < 400 && location !== undefined && (o.redirects ?? 0) > 0) {
        res.resume();
        const next = new URL(location, u);
        if (u.protocol === 'https:' && next.protocol !== 'https:') return fail(`it redirects to ${next.toString()}, which is not https`);
        return resolve(httpGet(next, { ...o, redirects: o.redirects! - 1 }));
      }
      if (status >= 300 && status < 400 && location !== undefined && o.redirects === 0) return fail('too many redirects');
      res.setEncoding('utf8');
      let body = '';
      res.on('data', (c: string) => {
        body += c;
        if (body.length > maxChars) {
          res.destroy();
          fail(`it is larger than ${Math.round(maxChars / 1024 / 1024)} MB`);
        }
      });
      res.on('end', () => resolve({ status, body }));
      res.on('error', fail);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${o.timeoutMs % 1000 === 0 ? `${o.timeoutMs / 1000} s` : `${o.timeoutMs} ms`}`)));
    req.on('error', fail);
  });
}
