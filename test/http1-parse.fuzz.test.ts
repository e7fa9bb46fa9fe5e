// Fuzzes what the HTTP/1 forwarder reads from a peer: HeadReader, the head parsers, body framing
// (Content-Length, chunked with extensions and trailers) and the framing rules, driven as
// connection.ts drives them over a stream of pipelined messages. MESH_FUZZ_SEED=<n> replays a run.
import test from 'ava';
import { performance } from 'node:perf_hooks';
import { ChunkedFramer, FRAME_ERROR, LengthFramer, type BodyFramer } from '../src/proxy/http1/body-framer.ts';
import { requestBodyKind, responseBodyKind, type BodyKind } from '../src/proxy/http1/framing.ts';
import { HEAD_MALFORMED, HEAD_NEED_MORE, HEAD_TOO_LARGE, HeadError, HeadReader, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from '../src/proxy/http1/parse-head.ts';
import { cpuMsSince, fuzzer, hex, latin1, type Fuzz } from './helpers/fuzz.ts';

const INPUTS = 20_000;
/** CPU time of the whole run (~4 s measured): CPU time, which a busy machine does not stretch. */
const MAX_RUN_CPU_MS = 30_000;

const f: Fuzz = fuzzer('http1-parse');
const { below, chance, pick, randomText } = f;

type Side = 'request' | 'response';
const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PATH_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%";
const VALUE_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t-_.,;:/="()[]{}?!\x80\xe9\xff';
const TCHAR_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a head's decoded string fields may hold: no controls but HT (so no CR or LF to split a line). */
const FIELD_RE = /^[\t\x20-\x7e\x80-\xff]*$/;

// ---------------------------------------------------------------------------
// The stream model: what connection.ts does with a peer's bytes, minus the sockets.

/** The request a response answers (responses are framed by it: HEAD, CONNECT, an Upgrade). */
const ANSWERED: Record<string, RequestHead> = Object.fromEntries(
  ['GET / HTTP/1.1\r\n\r\n', 'HEAD / HTTP/1.1\r\n\r\n', 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n', 'GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n']
    .map((s) => [s.slice(0, s.indexOf(' ')) + (s.includes('Upgrade:') ? '+upgrade' : ''), parseRequestHead(Buffer.from(s, 'latin1'), 0, s.length)]),
);

/** JSON with the keys in order: the log compares fields, not the order a class declares them in. */
const sorted = (o: object): string => JSON.stringify(o, Object.keys(o).sort());

/** Null when a parsed head's fields are what the parser promises, else what is wrong. */
function headProblem(h: RequestHead | ResponseHead, start: number, end: number): string | null {
  if (h.headLength !== end - start) return `headLength ${h.headLength}, not ${end - start}`;
  if (h.versionMinor !== 0 && h.versionMinor !== 1) return `versionMinor ${h.versionMinor}`;
  if (!Number.isSafeInteger(h.contentLength) || h.contentLength < -1 || h.contentLength >= 1e15) return `contentLength ${h.contentLength}`;
  if (h.chunked && !h.hasTransferEncoding) return 'chunked without Transfer-Encoding';
  if ('status' in h) return h.status >= 100 && h.status <= 599 ? null : `status ${h.status}`;
  if (!TCHAR_RE.test(h.method)) return `method ${JSON.stringify(h.method)}`;
  if (!/^[\x21-\x7e\x80-\xff]+$/.test(h.target)) return `target ${JSON.stringify(h.target)}`;
  // Trimmed of OWS (SP and HT) only: obs-text such as 0xa0 is part of the value.
  for (const v of [h.host, h.upgrade]) if (!FIELD_RE.test(v) || /^[ \t]|[ \t]$/.test(v)) return `field value ${JSON.stringify(v)}`;
  return null;
}

/**
 * Feeds `chunks` through a HeadReader and the framers as connection.ts does and logs what it
 * concluded: every head (its fields and body kind), every body's length, the first error, and
 * what was pending at the end. Only HeadError may be thrown by the parsers; anything else escapes.
 */
function serve(chunks: readonly Uint8Array[], side: Side, limit: number, answers: RequestHead): string[] {
  const reader = new HeadReader(limit, side === 'request');
  const log: string[] = [];
  let framer: BodyFramer | null = null;
  let bodyBytes = 0;
  let rest: 'close' | 'tunnel' | null = null;
  let stopped = false;

  const onHead = (buf: Buffer, start: number, end: number): void => {
    let head: RequestHead | ResponseHead;
    let kind: BodyKind;
    try {
      head = side === 'request' ? parseRequestHead(buf, start, end) : parseResponseHead(buf, start, end);
      const problem = headProblem(head, start, end);
      if (problem !== null) throw new Error(`parsed head: ${problem}`);
      kind = side === 'request' ? requestBodyKind(head as RequestHead) : responseBodyKind(answers, head as ResponseHead);
    } catch (e) {
      if (!(e instanceof HeadError)) throw e;
      log.push(`error ${e.message}`);
      stopped = true;
      return;
    }
    const { headLength: _, ...fields } = head;
    log.push(`head ${kind} ${sorted(fields)}`);
    bodyBytes = 0;
    if (kind === 'length') framer = new LengthFramer(head.contentLength);
    else if (kind === 'chunked') framer = new ChunkedFramer(limit);
    else if (kind === 'close' || kind === 'tunnel') rest = kind;
  };

  const feed = (chunk: Uint8Array): void => {
    let next = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (next.length > 0 && !stopped) {
      if (rest !== null) {
        bodyBytes += next.length;
        return;
      }
      if (framer !== null) {
        const n = framer.push(next, 0);
        if (n === FRAME_ERROR) {
          log.push(`frame-error ${(framer as ChunkedFramer).error}`);
          stopped = true;
          return;
        }
        if (n < 0 || n > next.length) throw new Error(`framer took ${n} of ${next.length} bytes`);
        bodyBytes += n;
        next = next.subarray(n);
        if (framer.done) {
          log.push(`body ${bodyBytes}`);
          framer = null;
        } else if (next.length > 0) throw new Error(`framer left ${next.length} bytes unread and is not done`);
        continue;
      }
      const end = reader.push(next);
      if (end === HEAD_NEED_MORE) {
        const held = reader.partial ? reader.buffer.length - reader.start : 0;
        if (held > limit) throw new Error(`HeadReader holds ${held} bytes, over its limit ${limit}`);
        return;
      }
      if (end === HEAD_TOO_LARGE) {
        log.push('too-large');
        stopped = true;
        return;
      }
      if (end === HEAD_MALFORMED) {
        log.push('malformed');
        stopped = true;
        return;
      }
      const buf = reader.buffer;
      const start = reader.start;
      if (end - start > limit || end > buf.length || buf.toString('latin1', end - 4, end) !== '\r\n\r\n') throw new Error(`HeadReader said a head ends at ${end} (start ${start}, ${buf.length} buffered)`);
      reader.reset();
      onHead(buf, start, end);
      next = buf.subarray(end);
    }
  };

  for (const c of chunks) feed(c);
  if (!stopped) {
    if (rest !== null) log.push(`${rest} ${bodyBytes}`);
    else if (framer !== null) log.push(`partial-body ${bodyBytes}`);
    else if (reader.partial) log.push('partial-head');
  }
  return log;
}

// ---------------------------------------------------------------------------
// Generators of valid streams, with the log serve() must produce for them.

/** A header name in random case (decoded names are matched in any case). */
const anyCase = (s: string) => [...s].map((c) => (chance(0.3) ? c.toUpperCase() : c)).join('');
const ows = () => pick(['', '', ' ', '\t', '  ', ' \t']);

/** A valid chunked body; trailers only where the framer's bound (`limit`) leaves room for them. */
function chunkedBody(limit: number): { bytes: string; data: number } {
  let s = '';
  let data = 0;
  for (let n = below(4); n > 0; n--) {
    const size = 1 + below(chance(0.9) ? 40 : 3000);
    const hexSize = size.toString(16);
    s += (chance(0.2) ? '000' : '') + (chance(0.5) ? hexSize.toUpperCase() : hexSize);
    if (chance(0.3)) s += pick([' ', '\t', '']) + `;${randomText(1 + below(8), TCHARS)}=${randomText(below(8), TCHARS)}`;
    s += '\r\n' + randomText(size, VALUE_CHARS + '\r\n') + '\r\n';
    data += size;
  }
  s += '0' + (chance(0.2) ? ';last' : '') + '\r\n';
  for (let n = chance(0.7) || limit < 1024 ? 0 : 1 + below(3); n > 0; n--) s += `${randomText(1 + below(12), TCHARS)}:${ows()}${randomText(below(30), VALUE_CHARS).trim()}\r\n`;
  return { bytes: s + '\r\n', data };
}

function extraHeaders(): string {
  let s = '';
  for (let n = below(5); n > 0; n--) {
    const name = pick(['Accept', 'User-Agent', 'X-Request-Id', 'Cookie', 'Hostname', 'Content-Type', randomText(1 + below(20), TCHARS)]);
    // Only names the parser does not decode, so the expected fields stay what the generator set.
    if (['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'expect'].includes(name.toLowerCase())) continue;
    s += `${name}:${ows()}${randomText(below(60), VALUE_CHARS).trim()}${ows()}\r\n`;
  }
  return s;
}

interface Generated {
  bytes: Uint8Array;
  expected: string[];
}

/** 1-3 pipelined requests, some with bodies, some after empty lines. */
function requests(limit: number): Generated {
  let s = '';
  const expected: string[] = [];
  for (let m = 1 + below(3); m > 0; m--) {
    if (chance(0.1)) s += '\r\n'.repeat(1 + below(3));
    const method = pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', randomText(1 + below(12), TCHARS)]);
    const target = pick(['/', '*', 'http://a.example/x?y', `/${randomText(below(80), PATH_CHARS)}`]);
    const versionMinor = chance(0.8) ? 1 : 0;
    const host = chance(0.9) ? randomText(1 + below(30), 'abcdefghijklmnopqrstuvwxyz0123456789.-:') : '';
    const bodyKind = pick(['none', 'length', 'chunked'] as const);
    const chunked = bodyKind === 'chunked' && versionMinor === 1;
    const length = bodyKind === 'length' ? below(chance(0.9) ? 100 : 5000) : -1;
    const connection = pick(['', 'close', 'keep-alive', 'Keep-Alive, Upgrade']);
    let head = `${method} ${target} HTTP/1.${versionMinor}\r\n`;
    if (host !== '') head += `${anyCase('host')}:${ows()}${host}${ows()}\r\n`;
    head += extraHeaders();
    if (length >= 0) head += `${anyCase('content-length')}:${ows()}${length}${ows()}\r\n`;
    if (chunked) head += `${anyCase('transfer-encoding')}:${ows()}${pick(['chunked', 'gzip, chunked', 'Chunked'])}\r\n`;
    if (connection !== '') head += `Connection: ${connection}\r\n`;
    head += '\r\n';
    if (head.length > limit) continue;
    const body = chunked ? chunkedBody(limit) : { bytes: randomText(Math.max(0, length), VALUE_CHARS + '\r\n'), data: Math.max(0, length) };
    s += head + body.bytes;
    const fields = {
      versionMinor, contentLength: length, hasTransferEncoding: chunked, chunked,
      connClose: connection === 'close', connKeepAlive: /keep-alive/i.test(connection), connUpgrade: connection.endsWith('Upgrade'),
      method, target, host, upgrade: '', expectContinue: false,
    };
    expected.push(`head ${chunked ? 'chunked' : length > 0 ? 'length' : 'none'} ${sorted(fields)}`);
    if (chunked || length > 0) expected.push(`body ${body.bytes.length}`);
  }
  if (s === '') return requests(limit);
  return { bytes: latin1(s), expected };
}

/** Interim responses, then 1-2 final ones; the last may run to the close. */
function responses(limit: number): Generated {
  let s = '';
  const expected: string[] = [];
  const head = (status: number, extra: string) => {
    const versionMinor = chance(0.9) ? 1 : 0;
    const line = `HTTP/1.${versionMinor} ${status}${pick(['', ' ', ' OK', ' Whatever It Says \x80\xff'])}\r\n${extraHeaders()}${extra}\r\n`;
    return { line, versionMinor };
  };
  const summary = (versionMinor: number, contentLength: number, chunked: boolean, status: number) =>
    sorted({ versionMinor, contentLength, hasTransferEncoding: chunked, chunked, connClose: false, connKeepAlive: false, connUpgrade: false, status });
  for (let n = below(3); n > 0; n--) {
    const status = pick([100, 102, 103]);
    const h = head(status, '');
    if (h.line.length > limit) continue;
    s += h.line;
    expected.push(`head interim ${summary(h.versionMinor, -1, false, status)}`);
  }
  const finals = 1 + below(2);
  for (let m = 0; m < finals; m++) {
    const last = m === finals - 1;
    const status = pick([200, 201, 204, 301, 304, 404, 500, 503]);
    const framing = pick(last ? (['length', 'chunked', 'close'] as const) : (['length', 'chunked'] as const));
    const length = framing === 'length' ? below(chance(0.9) ? 100 : 5000) : -1;
    const chunked = framing === 'chunked';
    const h = head(status, length >= 0 ? `Content-Length: ${length}\r\n` : chunked ? 'Transfer-Encoding: chunked\r\n' : '');
    if (h.line.length > limit) break;
    const bodiless = status === 204 || status === 304;
    const body = bodiless ? { bytes: '', data: 0 } : chunked ? chunkedBody(limit) : { bytes: randomText(framing === 'close' ? below(300) : length, VALUE_CHARS + '\r\n'), data: 0 };
    s += h.line + body.bytes;
    const kind: BodyKind = bodiless ? 'none' : chunked ? 'chunked' : framing === 'close' ? 'close' : length > 0 ? 'length' : 'none';
    expected.push(`head ${kind} ${summary(h.versionMinor, length, chunked, status)}`);
    if (kind === 'chunked' || kind === 'length') expected.push(`body ${body.bytes.length}`);
    if (kind === 'close') expected.push(`close ${body.bytes.length}`);
  }
  return { bytes: latin1(s), expected };
}

// ---------------------------------------------------------------------------
// The run

const CORPUS_TEXT: Array<[Side, string]> = [
  ['request', 'POST /a?b=1 HTTP/1.1\r\nhOsT: example.com:8080\r\nContent-Length: 12\r\nConnection: Keep-Alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\n\r\nhello, world'],
  ['request', 'GET / HTTP/1.1\r\nHost:   a.b \t\r\nContent-Length:\t0 \r\n\r\n'],
  ['request', 'POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\nabcde'],
  ['request', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5\r\nhello\r\n1A;name=value\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n'],
  ['request', 'POST / HTTP/1.1\r\nHOST: h\r\ncOnTeNt-LeNgTh: 12\r\nCONNECTION:\tKeep-Alive ,UPGRADE,, foo\r\nupgrade: WebSocket\r\nEXPECT: 100-Continue\r\n\r\n'],
  ['request', '\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n'],
  ['request', 'CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n'],
  ['response', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'],
  ['response', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n'],
  ['response', 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 7, 7\r\n\r\n1234567'],
  ['response', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil the close'],
  ['response', 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n'],
];

/**
 * An incomplete head is refused as malformed once a bare LF or CR (or a response start that is
 * not "HTTP/1.") has been read; read whole, the same bytes may already hold the head's end and
 * be refused by the parser or the size limit instead. Either way the stream is refused there.
 */
function sameRefusal(a: string[], b: string[]): boolean {
  if (a.length !== b.length || JSON.stringify(a.slice(0, -1)) !== JSON.stringify(b.slice(0, -1))) return false;
  const x = a.at(-1)!;
  const y = b.at(-1)!;
  const refused = (v: string) => v === 'malformed' || v === 'too-large' || v.startsWith('error ');
  return (x === 'malformed' || y === 'malformed') && refused(x) && refused(y);
}

test('fuzz: HTTP/1 heads and bodies: only HeadError or a framing error, bounded, the same verdict in any chunking', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const corpus = { request: [] as Uint8Array[], response: [] as Uint8Array[] };
  for (const [side, s] of CORPUS_TEXT) corpus[side].push(latin1(s));
  const all = [...corpus.request, ...corpus.response];

  const failures: string[] = [];
  const fail = (what: string, input: Uint8Array, side: Side, limit: number, answers: string) => {
    if (failures.length < 10) failures.push(`${what} (${side}, limit ${limit}, answering ${answers}) input=${hex(input)}`);
  };
  const verdicts = new Map<string, number>();
  let oracleChecks = 0;
  let chunkedRuns = 0;
  const cpuStart = process.cpuUsage();
  const t0 = performance.now();

  let n = 0;
  for (; n < INPUTS && failures.length < 10; n++) {
    const side: Side = chance(0.5) ? 'request' : 'response';
    const limit = pick([64, 256, 1024, 8192]);
    const answersName = pick(Object.keys(ANSWERED));
    const answers = side === 'response' && below(4) > 0 ? ANSWERED.GET! : ANSWERED[answersName]!;
    const answering = side === 'response' ? (answers === ANSWERED.GET ? 'GET' : answersName) : '-';
    let input: Uint8Array;
    let expected: string[] | undefined;
    const g = below(10);
    if (g < 3) {
      // a generated valid stream: the log is known (when answering a plain GET)
      const gen = side === 'request' ? requests(limit) : responses(limit);
      input = gen.bytes;
      if (side === 'request' || answering === 'GET') expected = gen.expected;
    } else if (g < 9) {
      const base = chance(0.5) ? pick(corpus[side]) : (side === 'request' ? requests(limit) : responses(limit)).bytes;
      input = f.mutateN(base, all);
    } else input = f.randomBytes(below(300));

    let whole: string[];
    try {
      whole = serve([input], side, limit, answers);
    } catch (e) {
      fail(`threw ${(e as Error).stack?.split('\n').slice(0, 3).join(' | ')}`, input, side, limit, answering);
      continue;
    }
    const verdict = whole.at(-1)?.split(' ')[0] ?? 'empty';
    verdicts.set(verdict, (verdicts.get(verdict) ?? 0) + 1);
    if (expected !== undefined) {
      oracleChecks++;
      if (JSON.stringify(whole) !== JSON.stringify(expected)) fail(`oracle: got ${JSON.stringify(whole)}, want ${JSON.stringify(expected)}`, input, side, limit, answering);
    }
    // The same bytes in other reads: the same conclusions (where a head or a chunk line straddles reads).
    const chunks = f.chunkings(input);
    if (chunks.length > 1) chunkedRuns++;
    let split: string[];
    try {
      split = serve(chunks, side, limit, answers);
    } catch (e) {
      fail(`threw in ${chunks.length} reads: ${(e as Error).stack?.split('\n').slice(0, 3).join(' | ')}`, input, side, limit, answering);
      continue;
    }
    if (JSON.stringify(split) !== JSON.stringify(whole) && !sameRefusal(split, whole)) {
      fail(`in ${chunks.length} reads (${chunks.slice(0, 8).map((c) => c.length).join(',')}...): ${JSON.stringify(split).slice(0, 600)}; whole: ${JSON.stringify(whole).slice(0, 600)}`, input, side, limit, answering);
    }
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${n} inputs in ${(performance.now() - t0).toFixed(0)} ms (${runCpuMs.toFixed(0)} ms of CPU), ${oracleChecks} oracle checks, ${chunkedRuns} re-run in several reads`);
  t.log([...verdicts].sort().map(([k, v]) => `${k}=${v}`).join(' '));

  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(oracleChecks > INPUTS / 10);
  // The generators must reach every way a stream ends, or the run proves little.
  for (const v of ['head', 'body', 'close', 'tunnel', 'partial-head', 'partial-body', 'error', 'too-large', 'malformed', 'frame-error']) {
    t.true((verdicts.get(v) ?? 0) > 0, `no input ended in ${v}`);
  }
});
