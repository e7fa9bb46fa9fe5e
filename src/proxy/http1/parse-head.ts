// Pure HTTP/1 head parsing: find where a head ends, then read only the fields that framing,
// persistence and metrics need. Bytes are never rewritten; the forwarder sends the original
// buffer on, so header names, case and order reach the peer exactly as they were sent.
// Strict where laxness enables request smuggling (CRLF only, no obs-fold, no space before ':',
// one Content-Length value, Transfer-Encoding must end in chunked), in the spirit of llhttp's
// strict mode.

const CR = 13;
const LF = 10;
const SP = 32;
const HT = 9;
const COLON = 58;

/** RFC 9110 tchar, indexed by byte. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;

/** Lowercase header names we decode, as bytes: matched in place, no string per header. */
const H_HOST = Buffer.from('host');
const H_EXPECT = Buffer.from('expect');
const H_UPGRADE = Buffer.from('upgrade');
const H_CONNECTION = Buffer.from('connection');
const H_CONTENT_LENGTH = Buffer.from('content-length');
const H_TRANSFER_ENCODING = Buffer.from('transfer-encoding');
const T_CLOSE = Buffer.from('close');
const T_KEEP_ALIVE = Buffer.from('keep-alive');
const T_UPGRADE = H_UPGRADE;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * buf[p, p + lower.length) equals `lower` ignoring ASCII case. `| 0x20` folds only letters
 * here: the other bytes of our names ('-') and of tokens can only collide with controls,
 * which never reach this comparison (names are tchar, values have no controls but HT).
 */
function equalsLower(buf: Buffer, p: number, len: number, lower: Buffer): boolean {
  if (len !== lower.length) return false;
  for (let i = 0; i < len; i++) if ((buf[p + i]! | 0x20) !== lower[i]) return false;
  return true;
}

export const HEAD_NEED_MORE = -1;
export const HEAD_TOO_LARGE = -2;
/**
 * The bytes so far can never become a head: a bare LF or CR (no line of a head ends in one, so
 * its CRLFCRLF would never come), a request that does not start with a method token and SP, or
 * a response that does not start with "HTTP/1.".
 */
export const HEAD_MALFORMED = -3;

const RESPONSE_START = Buffer.from('HTTP/1.');

/**
 * Accumulates bytes until a complete head (through the empty line) is buffered.
 * Copies only when a head spans reads; the common one-read head is referenced in place.
 */
export class HeadReader {
  private buf: Buffer | null = null;
  /** Bytes of `buf` already searched for the terminator (minus the 3 that may start one). */
  private scanned = 0;
  /** Offset in `buf` where the head starts (after skipped empty lines). */
  start = 0;
  readonly limit: number;
  private readonly skipLeadingCrlf: boolean;
  private readonly response: boolean;

  /** `skipLeadingCrlf`: a request reader (empty lines before a request line are skipped); else a response reader. */
  constructor(limit: number, skipLeadingCrlf: boolean) {
    this.limit = limit;
    this.skipLeadingCrlf = skipLeadingCrlf;
    this.response = !skipLeadingCrlf;
  }

  /** True when some head bytes are buffered (a partial head is waiting). */
  get partial(): boolean {
    return this.buf !== null && this.buf.length > this.start;
  }

  get buffer(): Buffer {
    return this.buf!;
  }

  /**
   * Adds bytes; returns the offset just past the head's terminating CRLFCRLF in `buffer`,
   * HEAD_NEED_MORE, HEAD_TOO_LARGE or HEAD_MALFORMED. After a head is found, bytes past the
   * returned offset in `buffer` belong to whatever follows the head; call reset() before the
   * next head. A complete head is not checked here (the parsers validate every line); only an
   * incomplete one, whose end would otherwise be awaited until a timeout.
   */
  push(chunk: Buffer): number {
    let buf: Buffer;
    if (this.buf === null || this.buf.length === this.start) {
      buf = chunk;
      this.start = 0;
      this.scanned = 0;
    } else {
      buf = Buffer.concat([this.buf.subarray(this.start), chunk]);
      this.scanned -= this.start;
      this.start = 0;
    }
    if (this.skipLeadingCrlf) {
      // RFC 9112 2.2: ignore empty lines before a request-line (sent by some clients after a body).
      let s = this.start;
      while (s + 1 < buf.length && buf[s] === CR && buf[s + 1] === LF) s += 2;
      this.start = s;
      if (this.scanned < s) this.scanned = s;
    }
    this.buf = buf;
    const from = Math.max(this.start, this.scanned - 3);
    const idx = buf.indexOf(CRLFCRLF, from);
    if (idx >= 0) {
      const end = idx + 4;
      return end - this.start > this.limit ? HEAD_TOO_LARGE : end;
    }
    // From the byte before the new ones: a CR that ended the last read is checked with its next byte.
    if (hasBareLineBreak(buf, this.start, Math.max(this.start, this.scanned - 1)) ||
      (this.response ? !startsLike(buf, this.start, RESPONSE_START) : !mayStartRequest(buf, this.start))) {
      return HEAD_MALFORMED;
    }
    this.scanned = buf.length;
    return buf.length - this.start > this.limit ? HEAD_TOO_LARGE : HEAD_NEED_MORE;
  }

  reset(): void {
    this.buf = null;
    this.start = 0;
    this.scanned = 0;
  }
}

/** buf[from..] holds an LF not preceded by CR within the head (which starts at `start`), or a CR followed by another byte than LF. */
function hasBareLineBreak(buf: Buffer, start: number, from: number): boolean {
  for (let i = buf.indexOf(LF, from); i >= 0; i = buf.indexOf(LF, i + 1)) {
    if (i === start || buf[i - 1] !== CR) return true;
  }
  for (let i = buf.indexOf(CR, from); i >= 0 && i + 1 < buf.length; i = buf.indexOf(CR, i + 1)) {
    if (buf[i + 1] !== LF) return true;
  }
  return false;
}

/** Bytes of a method looked at before a head is complete: a fixed bound, however slowly a head comes. */
const METHOD_CHECK_BYTES = 32;

/**
 * buf[start..] may still begin a request line: its first bytes (up to METHOD_CHECK_BYTES) are a
 * method token, or one followed by SP. Anything else (a TLS ClientHello, binary) never will.
 */
function mayStartRequest(buf: Buffer, start: number): boolean {
  // A CR last: an empty line before the request line, its LF still to come (RFC 9112 2.2).
  if (buf[start] === CR && start + 1 === buf.length) return true;
  const end = Math.min(buf.length, start + METHOD_CHECK_BYTES + 1);
  let p = start;
  while (p < end && TCHAR[buf[p]] === 1) p++;
  return p === end ? true : p > start && buf[p] === SP;
}

/** The bytes at buf[start..] (as many as there are, up to prefix.length) are prefix's. */
function startsLike(buf: Buffer, start: number, prefix: Buffer): boolean {
  const n = Math.min(prefix.length, buf.length - start);
  for (let i = 0; i < n; i++) if (buf[start + i] !== prefix[i]) return false;
  return true;
}

/** Fields common to request and response heads. */
interface HeadFields {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: number;
  /** Content-Length, or -1 when absent. */
  contentLength: number;
  /** A Transfer-Encoding header is present. */
  hasTransferEncoding: boolean;
  /** The final transfer coding is chunked. */
  chunked: boolean;
  connClose: boolean;
  connKeepAlive: boolean;
  connUpgrade: boolean;
  /** Bytes of the head including the terminating empty line. */
  headLength: number;
}

export interface RequestHead extends HeadFields {
  method: string;
  target: string;
  /** Host header value, '' when absent. */
  host: string;
  /** Upgrade header value, '' when absent. */
  upgrade: string;
  expectContinue: boolean;
}

export interface ResponseHead extends HeadFields {
  status: number;
}

export class HeadError extends Error {}

// Classes rather than object literals: one hidden class per kind of head, so the forwarder's
// reads of these fields stay monomorphic.
class Request implements RequestHead {
  versionMinor = 1;
  contentLength = -1;
  hasTransferEncoding = false;
  chunked = false;
  connClose = false;
  connKeepAlive = false;
  connUpgrade = false;
  headLength = 0;
  method: string;
  target: string;
  host = '';
  upgrade = '';
  expectContinue = false;
  constructor(method: string, target: string) {
    this.method = method;
    this.target = target;
  }
}

class Response implements ResponseHead {
  versionMinor = 1;
  contentLength = -1;
  hasTransferEncoding = false;
  chunked = false;
  connClose = false;
  connKeepAlive = false;
  connUpgrade = false;
  headLength = 0;
  status: number;
  constructor(status: number) {
    this.status = status;
  }
}

/**
 * The last string decoded at one place in a head: a client sends the same Host (and often the
 * same path) request after request, so equal bytes give the string made before, not a new one.
 */
class LastString {
  private s = '';
  of(buf: Buffer, p: number, end: number): string {
    const s = this.s;
    const n = end - p;
    if (n === s.length) {
      let i = 0;
      while (i < n && buf[p + i] === s.charCodeAt(i)) i++; // latin1: a byte is its char code
      if (i === n) return s;
    }
    return (this.s = buf.toString('latin1', p, end));
  }
}
const lastHost = new LastString();
const lastTarget = new LastString();

/** Reads "HTTP/1.0" or "HTTP/1.1" at `p`; returns the minor version. */
function readVersion(buf: Buffer, p: number): number {
  if (
    buf[p] !== 72 || buf[p + 1] !== 84 || buf[p + 2] !== 84 || buf[p + 3] !== 80 ||
    buf[p + 4] !== 47 || buf[p + 5] !== 49 || buf[p + 6] !== 46
  ) throw new HeadError('bad HTTP version');
  const minor = buf[p + 7];
  if (minor !== 48 && minor !== 49) throw new HeadError('unsupported HTTP version');
  return minor - 48;
}

/** Parses a request head in buf[start, end) where end is just past CRLFCRLF. */
export function parseRequestHead(buf: Buffer, start: number, end: number): RequestHead {
  let p = start;
  while (p < end && TCHAR[buf[p]] === 1) p++;
  if (p === start || buf[p] !== SP) throw new HeadError('bad method');
  // The common method and the root path are constants: no string made per request.
  const method = p - start === 3 && buf[start] === 71 && buf[start + 1] === 69 && buf[start + 2] === 84 ? 'GET' : buf.toString('latin1', start, p);
  const tStart = ++p;
  // Visible ASCII and obs-text; no controls, no spaces.
  while (p < end && buf[p] > SP && buf[p] !== 127) p++;
  if (p === tStart || buf[p] !== SP) throw new HeadError('bad request target');
  const target = p - tStart === 1 && buf[tStart] === 47 ? '/' : lastTarget.of(buf, tStart, p);
  p++;
  const versionMinor = readVersion(buf, p);
  p += 8;
  if (buf[p] !== CR || buf[p + 1] !== LF) throw new HeadError('bad request line');
  const head = new Request(method, target);
  head.versionMinor = versionMinor;
  parseFields(buf, p + 2, end, head, head);
  head.headLength = end - start;
  return head;
}

/** Parses a response head in buf[start, end) where end is just past CRLFCRLF. */
export function parseResponseHead(buf: Buffer, start: number, end: number): ResponseHead {
  const versionMinor = readVersion(buf, start);
  let p = start + 8;
  if (buf[p] !== SP) throw new HeadError('bad status line');
  const d0 = buf[p + 1] - 48;
  const d1 = buf[p + 2] - 48;
  const d2 = buf[p + 3] - 48;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw new HeadError('bad status code');
  p += 4;
  if (buf[p] === SP) {
    p++;
    while (buf[p] === HT || (buf[p] >= SP && buf[p] !== 127)) p++;
  }
  if (buf[p] !== CR || buf[p + 1] !== LF) throw new HeadError('bad status line');
  const head = new Response(d0 * 100 + d1 * 10 + d2);
  head.versionMinor = versionMinor;
  parseFields(buf, p + 2, end, head, null);
  head.headLength = end - start;
  return head;
}

/**
 * Walks the header lines in buf[p, end), validating every line and decoding only the fields
 * framing needs; `req` (the same head, for requests) also gets Host, Upgrade and Expect.
 * Names are matched as bytes; only values we keep become strings.
 */
function parseFields(buf: Buffer, p: number, end: number, head: HeadFields, req: RequestHead | null): void {
  const last = end - 2; // the final CRLF (the empty line)
  let clSeen = false;
  let hostSeen = false;
  let teValue = '';
  while (p < last) {
    const nStart = p;
    while (TCHAR[buf[p]] === 1) p++;
    // No name, obs-fold (line starts with SP/HT) and "Name :" all land here.
    if (p === nStart || buf[p] !== COLON) throw new HeadError('bad header line');
    const nEnd = p++;
    while (buf[p] === SP || buf[p] === HT) p++;
    const vStart = p;
    for (;;) {
      const c = buf[p];
      // Controls (including a bare LF) are never valid in a field value; HT is.
      if (c >= SP ? c === 127 : c !== HT) {
        if (c === CR) break;
        throw new HeadError('bad header value');
      }
      p++;
    }
    let vEnd = p;
    while (vEnd > vStart && (buf[vEnd - 1] === SP || buf[vEnd - 1] === HT)) vEnd--;
    if (buf[p + 1] !== LF) throw new HeadError('bare CR in header');
    p += 2;
    const nLen = nEnd - nStart;
    switch (nLen) {
      case 14:
        if (equalsLower(buf, nStart, nLen, H_CONTENT_LENGTH)) {
          const n = contentLengthAt(buf, vStart, vEnd);
          if (clSeen && n !== head.contentLength) throw new HeadError('conflicting Content-Length');
          clSeen = true;
          head.contentLength = n;
        }
        break;
      case 17:
        if (equalsLower(buf, nStart, nLen, H_TRANSFER_ENCODING)) {
          const value = buf.toString('latin1', vStart, vEnd);
          teValue = teValue === '' ? value : teValue + ',' + value;
          head.hasTransferEncoding = true;
        }
        break;
      case 10:
        if (equalsLower(buf, nStart, nLen, H_CONNECTION)) connectionTokens(buf, vStart, vEnd, head);
        break;
      case 4:
        if (req !== null && equalsLower(buf, nStart, nLen, H_HOST)) {
          // RFC 9112 3.2: more than one Host is a 400.
          if (hostSeen) throw new HeadError('duplicate Host');
          hostSeen = true;
          req.host = lastHost.of(buf, vStart, vEnd);
        }
        break;
      case 7:
        if (req !== null && equalsLower(buf, nStart, nLen, H_UPGRADE)) req.upgrade = buf.toString('latin1', vStart, vEnd);
        break;
      case 6:
        if (req !== null && equalsLower(buf, nStart, nLen, H_EXPECT) &&
          buf.toString('latin1', vStart, vEnd).toLowerCase() === '100-continue') req.expectContinue = true;
        break;
    }
  }
  if (head.hasTransferEncoding) head.chunked = isChunkedLast(teValue);
}

/** Sets the persistence flags from one Connection value's comma-separated tokens. */
function connectionTokens(buf: Buffer, p: number, end: number, head: HeadFields): void {
  while (p < end) {
    while (p < end && (buf[p] === SP || buf[p] === HT || buf[p] === 44)) p++;
    const tStart = p;
    while (p < end && buf[p] !== 44) p++;
    let tEnd = p;
    while (tEnd > tStart && (buf[tEnd - 1] === SP || buf[tEnd - 1] === HT)) tEnd--;
    const len = tEnd - tStart;
    if (equalsLower(buf, tStart, len, T_CLOSE)) head.connClose = true;
    else if (equalsLower(buf, tStart, len, T_KEEP_ALIVE)) head.connKeepAlive = true;
    else if (equalsLower(buf, tStart, len, T_UPGRADE)) head.connUpgrade = true;
  }
}

/** Content-Length from its value bytes; the common single number never becomes a string. */
function contentLengthAt(buf: Buffer, p: number, end: number): number {
  let n = 0;
  let digits = 0;
  for (let i = p; i < end; i++) {
    const c = buf[i]! - 48;
    if (c < 0 || c > 9) return parseContentLength(buf.toString('latin1', p, end)); // a list, or bad
    n = n * 10 + c;
    digits++;
  }
  if (digits === 0 || digits > 15) throw new HeadError('bad Content-Length');
  return n;
}

/** Digits only (a list of identical values is allowed, RFC 9110 8.6); anything else is fatal. */
export function parseContentLength(value: string): number {
  let result = -1;
  for (const part of value.split(',')) {
    const s = part.trim();
    if (s.length === 0 || s.length > 15) throw new HeadError('bad Content-Length');
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i) - 48;
      if (c < 0 || c > 9) throw new HeadError('bad Content-Length');
      n = n * 10 + c;
    }
    if (result !== -1 && n !== result) throw new HeadError('conflicting Content-Length');
    result = n;
  }
  return result;
}

/**
 * True when chunked is the final coding. Chunked anywhere but last is an error
 * (RFC 9112 6.1: it must not be applied twice and, when present, must be last).
 */
export function isChunkedLast(te: string): boolean {
  const codings = te.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  if (codings.length === 0) throw new HeadError('empty Transfer-Encoding');
  for (let i = 0; i < codings.length - 1; i++) {
    if (codings[i] === 'chunked') throw new HeadError('chunked is not the final coding');
  }
  return codings[codings.length - 1] === 'chunked';
}
