// Pure: per-hop persistence. `Connection` is hop-by-hop (RFC 9110 7.6.1): a client that wants
// its own connection closed after one exchange says nothing about our upstream connection.
// When a client asks to close, its request goes upstream without the `close` token (plus
// `keep-alive` for HTTP/1.0, whose default is close), so the upstream can be pooled; the
// response then tells the client `Connection: close`, and the proxy closes the client.
// Only the Connection field lines change; every other byte of the head is kept.

import type { RequestHead, ResponseHead } from './parse-head.ts';
import type { CompiledHeaderModifier } from '../../routing/header-modifier.ts';
import { wantsKeepAlive } from './framing.ts';

const CR = 13;
const COLON = 58;
const SP = 32;
const HT = 9;
const CONNECTION = 'connection';

/**
 * The request asks to close its connection, and the upstream leg may be kept instead.
 * Upgrade requests and CONNECT are left alone: their connection may become a tunnel.
 */
export function keepUpstreamFor(req: RequestHead): boolean {
  return !wantsKeepAlive(req) && req.method !== 'CONNECT' && req.upgrade === '' && !req.connUpgrade;
}

/** The request head to send upstream in place of buf[start, end) (see keepUpstreamFor). */
export function upstreamRequestHead(buf: Buffer, start: number, end: number, req: RequestHead): Buffer {
  const add = req.versionMinor === 0 && !req.connKeepAlive ? 'keep-alive' : null;
  return rewriteConnection(buf, start, end, 'close', add) ?? buf.subarray(start, end);
}

/**
 * The response head for a client we close after this response, in place of buf[start, end):
 * `keep-alive` (meant for us) removed, `Connection: close` added unless already there.
 * Null when the head needs no change.
 */
export function closingResponseHead(buf: Buffer, start: number, end: number, res: ResponseHead): Buffer | null {
  if (res.connClose && !res.connKeepAlive) return null;
  return rewriteConnection(buf, start, end, 'keep-alive', res.connClose ? null : 'close');
}

/**
 * Removes the token `drop` (ASCII case-insensitive) from every Connection field line of the
 * head buf[start, end) (end just past CRLFCRLF; the head was validated by parse-head), drops
 * a line left without tokens, and appends `Connection: <add>` as the last field when `add`
 * is given. The other tokens keep their spelling; a changed line is re-joined with ", ".
 * Returns null when nothing changed.
 */
export function rewriteConnection(buf: Buffer, start: number, end: number, drop: string, add: string | null): Buffer | null {
  const parts: Buffer[] = [];
  let copyFrom = start;
  let changed = false;
  // Skip the start line.
  let p = buf.indexOf('\r\n', start, 'latin1') + 2;
  const last = end - 2; // the empty line
  while (p < last) {
    const lineStart = p;
    const colon = buf.indexOf(COLON, p);
    const eol = buf.indexOf(CR, colon);
    const next = eol + 2;
    if (colon - lineStart === CONNECTION.length && asciiLower(buf, lineStart, colon) === CONNECTION) {
      const tokens = buf.toString('latin1', colon + 1, eol).split(',');
      const kept: string[] = [];
      for (const raw of tokens) {
        const tok = trimOws(raw);
        if (tok !== '' && tok.toLowerCase() !== drop) kept.push(tok);
      }
      if (kept.length !== countTokens(tokens)) {
        changed = true;
        parts.push(buf.subarray(copyFrom, lineStart));
        if (kept.length > 0) {
          parts.push(buf.subarray(lineStart, colon + 1), Buffer.from(' ' + kept.join(', ') + '\r\n', 'latin1'));
        }
        copyFrom = next;
      }
    }
    p = next;
  }
  if (add !== null) {
    changed = true;
    parts.push(buf.subarray(copyFrom, last), Buffer.from(`Connection: ${add}\r\n\r\n`, 'latin1'));
  } else {
    parts.push(buf.subarray(copyFrom, end));
  }
  return changed ? Buffer.concat(parts) : null;
}

/**
 * A route's RequestHeaderModifier applied to a request head, or its ResponseHeaderModifier to a
 * response head (head[0, length), validated by parse-head or built by the proxy): the field
 * lines of the names it drops are left out, its set and add lines go last. Every other byte is
 * kept. A new buffer, so a retry re-sends the same head.
 */
export function modifiedHead(head: Buffer, mod: CompiledHeaderModifier): Buffer {
  return withoutFields(head, mod.drop, mod.http1Lines);
}

/** head[0, length) without the field lines whose lower-case names `drop` has, and `add` (field lines) after the rest. A new buffer. */
function withoutFields(head: Buffer, drop: ReadonlySet<string>, add: Buffer | null): Buffer {
  const parts: Buffer[] = [];
  let copyFrom = 0;
  let p = head.indexOf('\r\n', 0, 'latin1') + 2;
  const last = head.length - 2; // the empty line
  while (p < last) {
    const lineStart = p;
    const colon = head.indexOf(COLON, p);
    const next = head.indexOf(CR, colon) + 2;
    if (drop.has(asciiLower(head, lineStart, colon))) {
      parts.push(head.subarray(copyFrom, lineStart));
      copyFrom = next;
    }
    p = next;
  }
  parts.push(head.subarray(copyFrom, last));
  if (add !== null) parts.push(add);
  parts.push(head.subarray(last));
  return Buffer.concat(parts);
}

/**
 * Whether an Upgrade value (a list of protocols, RFC 9110 7.8) offers HTTP itself: h2c (RFC 7540
 * 3.2), h2, HTTP/2.0. After such an upgrade the connection carries HTTP/2 requests as bytes.
 */
export function upgradesToHttp(upgrade: string): boolean {
  for (const raw of upgrade.split(',')) {
    const name = trimOws(raw).split('/')[0]!.toLowerCase();
    if (name === 'h2c' || name === 'h2' || name === 'http') return true;
  }
  return false;
}

const UPGRADE_FIELDS: ReadonlySet<string> = new Set(['upgrade', 'http2-settings']);

/**
 * A request head (head[0, length), validated by parse-head) without its upgrade: the Upgrade and
 * HTTP2-Settings field lines left out, and their tokens out of Connection. A new buffer.
 */
export function withoutUpgrade(head: Buffer): Buffer {
  let out = withoutFields(head, UPGRADE_FIELDS, null);
  for (const token of UPGRADE_FIELDS) out = rewriteConnection(out, 0, out.length, token, null) ?? out;
  return out;
}

function asciiLower(buf: Buffer, from: number, to: number): string {
  return buf.toString('latin1', from, to).toLowerCase();
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === SP || s.charCodeAt(a) === HT)) a++;
  while (b > a && (s.charCodeAt(b - 1) === SP || s.charCodeAt(b - 1) === HT)) b--;
  return s.slice(a, b);
}

function countTokens(raw: string[]): number {
  let n = 0;
  for (const r of raw) if (trimOws(r) !== '') n++;
  return n;
}
