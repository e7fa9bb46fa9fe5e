import { ascii } from './ascii.ts';
import { needMore, opaque, type Detection } from './detection.ts';

/** The request line, CRLF included, must fit in this many bytes. */
export const MAX_REQUEST_LINE_BYTES = 8192;
/** Longest method token we accept; registered methods are at most 17 bytes. */
export const MAX_METHOD_BYTES = 32;

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const SLASH = 0x2f;
const STAR = 0x2a;
const COLON = 0x3a;
const VERSION_PREFIX = new TextEncoder().encode('HTTP/1.');
const MAJOR_DIGIT = 5; // index of "1" in "HTTP/1."

// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

export function isTchar(b: number): boolean {
  return TCHAR[b] === 1;
}

const isAlpha = (b: number) => (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7a;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
// Targets are URI references: visible ASCII only (RFC 9112 §3.2), no raw UTF-8.
const isTargetByte = (b: number) => b > SP && b < 0x7f;

/**
 * Reads an HTTP/1.0 or 1.1 request line. Checks run in byte order and every
 * verdict depends only on the bytes up to where it was reached, so a prefix
 * is need-more or already the final verdict: binary and other text protocols
 * become opaque at the first byte that cannot belong to a request line.
 */
export function detectHttp1(buf: Uint8Array): Detection {
  const limit = Math.min(buf.length, MAX_REQUEST_LINE_BYTES);
  // Out of bytes before the line ended: too long once the bound is reached.
  const more = () => (buf.length >= MAX_REQUEST_LINE_BYTES ? opaque('request-line-too-long') : needMore());

  // method = token
  let i = 0;
  while (i < limit && i <= MAX_METHOD_BYTES && isTchar(buf[i])) i++;
  if (i > MAX_METHOD_BYTES) return opaque('method-too-long');
  if (i === limit) return i === 0 ? needMore() : more();
  if (i === 0 || buf[i] !== SP) return opaque('not-http');
  const method = ascii(buf, 0, i);
  // Only the HTTP/2 preface may start with PRI; index.ts has already ruled it out.
  if (method === 'PRI') return opaque('h2-preface-mismatch');

  // request-target
  const targetStart = ++i;
  if (i === limit) return more();
  if (!targetMayStartWith(method, buf[i])) return opaque('bad-target');
  while (i < limit && isTargetByte(buf[i])) i++;
  if (i === limit) return more();
  const lineEnded = buf[i] === CR || buf[i] === LF;
  if (buf[i] !== SP && !lineEnded) return opaque('bad-target');
  if (!targetFitsMethod(method, buf, targetStart, i)) return opaque('bad-target');
  if (lineEnded) return opaque('http-version'); // HTTP/0.9 has no version
  const target = ascii(buf, targetStart, i);

  // HTTP-version: only "HTTP/1.0" and "HTTP/1.1"
  i++;
  for (let k = 0; k < VERSION_PREFIX.length; k++, i++) {
    if (i === limit) return more();
    if (buf[i] !== VERSION_PREFIX[k]) return opaque(k >= MAJOR_DIGIT ? 'http-version' : 'not-http');
  }
  if (i === limit) return more();
  const minor = buf[i++];
  if (minor !== 0x30 && minor !== 0x31) return opaque('http-version');
  const version = minor === 0x30 ? '1.0' : '1.1';

  // CRLF, or a bare LF (RFC 9112 §2.2 lets a recipient accept it)
  if (i === limit) return more();
  if (isDigit(buf[i])) return opaque('http-version'); // HTTP/1.10
  if (buf[i] === CR) {
    i++;
    if (i === limit) return more();
  }
  if (buf[i] !== LF) return opaque('not-http');
  return { kind: 'http1', method, target, version };
}

/** The first target byte already rules out most non-HTTP input. */
function targetMayStartWith(method: string, b: number): boolean {
  if (method === 'CONNECT') return isTargetByte(b) && b !== SLASH && b !== STAR;
  if (b === STAR) return method === 'OPTIONS';
  return b === SLASH || isAlpha(b);
}

/**
 * RFC 9112 §3.2 forms: origin ("/p?q"), absolute ("scheme:..."), authority
 * ("host:port", CONNECT only) and asterisk ("*", OPTIONS only).
 */
function targetFitsMethod(method: string, buf: Uint8Array, start: number, end: number): boolean {
  if (method === 'CONNECT') return isAuthority(buf, start, end);
  const first = buf[start];
  if (first === STAR) return end - start === 1;
  if (first === SLASH) return true;
  return isAbsolute(buf, start, end);
}

/** scheme ":" at least one more byte; scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
function isAbsolute(buf: Uint8Array, start: number, end: number): boolean {
  let i = start + 1; // first byte was checked to be ALPHA
  while (i < end && (isAlpha(buf[i]) || isDigit(buf[i]) || buf[i] === 0x2b || buf[i] === 0x2d || buf[i] === 0x2e)) i++;
  return i < end - 1 && buf[i] === COLON;
}

/** host ":" port, no userinfo, path, query or fragment; port is 1..5 digits. */
function isAuthority(buf: Uint8Array, start: number, end: number): boolean {
  let colon = -1;
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (b === SLASH || b === 0x3f || b === 0x23 || b === 0x40) return false; // / ? # @
    if (b === COLON) colon = i;
  }
  const portLen = end - colon - 1;
  if (colon <= start || portLen < 1 || portLen > 5) return false;
  for (let i = colon + 1; i < end; i++) if (!isDigit(buf[i])) return false;
  // An IPv6 literal must be bracketed, else its colons are ambiguous with the port.
  return buf[start] === 0x5b ? buf[colon - 1] === 0x5d : buf.subarray(start, colon).indexOf(COLON) < 0;
}
