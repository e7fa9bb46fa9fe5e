import test, { type ExecutionContext } from 'ava';
import { captureFirstFlight, clientHello } from './helpers/first-flight.ts';
import http from 'node:http';
import http2 from 'node:http2';
import {
  DEFAULT_MAX_DETECT_BYTES,
  MAX_METHOD_BYTES,
  MAX_REQUEST_LINE_BYTES,
  OPAQUE_REASONS,
  detect,
  type Detection,
} from '../src/protocol-detect/index.ts';
import { Reader } from '../src/protocol-detect/reader.ts';
import { cpuMsSince } from './helpers/fuzz.ts';

const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

// ---------------------------------------------------------------------------
// Real client bytes: a real client connects to a local server that records
// what arrives until the client falls quiet (it is then waiting for the
// server, so its first flight is complete).

function nodeHttp1Request(): Promise<Uint8Array> {
  return captureFirstFlight((port) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/api/v1/items?x=1', agent: false });
    req.on('error', () => {});
    req.end('{"a":1}');
    return req;
  });
}

function nodeHttp2Preface(): Promise<Uint8Array> {
  return captureFirstFlight((port) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    return session;
  });
}

const LONG_ALPN = Array.from({ length: 90 }, (_, i) => `p${String(i).padStart(3, '0')}${'x'.repeat(196)}`);

const real = {
  tls12: clientHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'], maxVersion: 'TLSv1.2' }),
  tls13: clientHello({ servername: 'Backend.Svc.Cluster.Local', ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.3' }),
  tlsNoSniNoAlpn: clientHello({}),
  // Over 16 KiB: OpenSSL itself splits this ClientHello across two records.
  tlsMultiRecord: clientHello({ servername: 'big.example.com', ALPNProtocols: LONG_ALPN, minVersion: 'TLSv1.3' }),
  // About 2.5 KB: framed in 1-byte records (6 bytes each) it still fits the default budget.
  tlsMid: clientHello({ servername: 'mid.example.com', ALPNProtocols: LONG_ALPN.slice(0, 5), minVersion: 'TLSv1.3' }),
  http1: nodeHttp1Request(),
  h2: nodeHttp2Preface(),
};

// Real captures are made once, up front, concurrently.
const captured = Promise.all(Object.entries(real).map(async ([k, p]) => [k, await p] as const)).then(
  (entries) => Object.fromEntries(entries) as Record<keyof typeof real, Uint8Array>,
);

// ---------------------------------------------------------------------------
// Helpers

/**
 * Feeds every prefix of `input`: need-more up to some point, then the very
 * same verdict for every longer prefix, equal to the verdict on the whole.
 * Returns the number of bytes the verdict needed.
 */
function assertIncremental(t: ExecutionContext, input: Uint8Array, maxBytes?: number): number {
  const whole = detect(input, maxBytes);
  t.not(whole.kind, 'need-more', 'the whole input must give a verdict');
  let decidedAt = -1;
  for (let k = 0; k <= input.length; k++) {
    const d = detect(input.subarray(0, k), maxBytes);
    if (decidedAt < 0) {
      if (d.kind === 'need-more') continue;
      decidedAt = k;
    }
    if (JSON.stringify(d) !== JSON.stringify(whole)) {
      t.fail(`prefix ${k} gave ${JSON.stringify(d)}, whole input gave ${JSON.stringify(whole)}`);
      return decidedAt;
    }
  }
  t.true(decidedAt > 0);
  return decidedAt;
}

/** Re-frames a single-record ClientHello into records of at most `size` bytes. */
function refragment(hello: Uint8Array, size: number): Uint8Array {
  const fragment = hello.subarray(5, 5 + ((hello[3] << 8) | hello[4]));
  const records: Uint8Array[] = [];
  for (let off = 0; off < fragment.length; off += size) {
    const piece = fragment.subarray(off, off + size);
    records.push(new Uint8Array([22, hello[1], hello[2], piece.length >> 8, piece.length & 0xff]), piece);
  }
  return cat(...records);
}

/** Offset of the extension of `type` in a single-record ClientHello, found by walking it. */
function extensionOffset(hello: Uint8Array, type: number): number {
  let off = 5 + 4 + 2 + 32;
  off += 1 + hello[off];
  off += 2 + ((hello[off] << 8) | hello[off + 1]);
  off += 1 + hello[off];
  const end = off + 2 + ((hello[off] << 8) | hello[off + 1]);
  off += 2;
  while (off < end) {
    if (((hello[off] << 8) | hello[off + 1]) === type) return off;
    off += 4 + ((hello[off + 2] << 8) | hello[off + 3]);
  }
  throw new Error(`extension ${type} not found`);
}

const http1 = (method: string, target: string, version: '1.0' | '1.1'): Detection => ({ kind: 'http1', method, target, version });
const opaque = (reason: string): Detection => ({ kind: 'opaque', reason });
const needMore: Detection = { kind: 'need-more' };

// ---------------------------------------------------------------------------
// HTTP/1

const httpCases: [string, Detection][] = [
  ['GET / HTTP/1.1\r\n', http1('GET', '/', '1.1')],
  ['GET /index.html?q=a%20b HTTP/1.0\r\n', http1('GET', '/index.html?q=a%20b', '1.0')],
  ['POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n', http1('POST', '/api', '1.1')],
  ['HEAD / HTTP/1.1\n', http1('HEAD', '/', '1.1')], // bare LF (RFC 9112 §2.2)
  ['CONNECT example.com:443 HTTP/1.1\r\n', http1('CONNECT', 'example.com:443', '1.1')],
  ['CONNECT [::1]:8443 HTTP/1.1\r\n', http1('CONNECT', '[::1]:8443', '1.1')],
  ['CONNECT 10.0.0.1:80 HTTP/1.0\r\n', http1('CONNECT', '10.0.0.1:80', '1.0')],
  ['OPTIONS * HTTP/1.1\r\n', http1('OPTIONS', '*', '1.1')],
  ['OPTIONS /x HTTP/1.1\r\n', http1('OPTIONS', '/x', '1.1')],
  ['GET http://example.com/a?b HTTP/1.1\r\n', http1('GET', 'http://example.com/a?b', '1.1')],
  ['PROPFIND /dav/ HTTP/1.1\r\n', http1('PROPFIND', '/dav/', '1.1')],
  ["M-SEARCH! #$%&'*+-.^_`|~ * HTTP/1.1\r\n", opaque('bad-target')], // SP ends the method
  ["X!#$%&'*+-.^_`|~09az /p HTTP/1.1\r\n", http1("X!#$%&'*+-.^_`|~09az", '/p', '1.1')], // every tchar class
  ['get / HTTP/1.1\r\n', http1('get', '/', '1.1')], // methods are case-sensitive tokens
  // opaque
  ['\x00\x01', opaque('not-http')],
  [' GET / HTTP/1.1\r\n', opaque('not-http')],
  ['\r\nGET / HTTP/1.1\r\n', opaque('not-http')],
  ['GET\t/ HTTP/1.1\r\n', opaque('not-http')],
  ['GET:/ HTTP/1.1\r\n', opaque('not-http')],
  ['GET  / HTTP/1.1\r\n', opaque('bad-target')],
  ['GET foo HTTP/1.1\r\n', opaque('bad-target')], // neither origin nor absolute form
  ['GET * HTTP/1.1\r\n', opaque('bad-target')], // asterisk-form is for OPTIONS only
  ['OPTIONS *x HTTP/1.1\r\n', opaque('bad-target')],
  ['GET example.com:443 HTTP/1.1\r\n', http1('GET', 'example.com:443', '1.1')], // parses as scheme "example.com"
  ['GET http: HTTP/1.1\r\n', opaque('bad-target')],
  ['CONNECT /path HTTP/1.1\r\n', opaque('bad-target')],
  ['CONNECT example.com HTTP/1.1\r\n', opaque('bad-target')],
  ['CONNECT user@example.com:443 HTTP/1.1\r\n', opaque('bad-target')],
  ['CONNECT ::1:443 HTTP/1.1\r\n', opaque('bad-target')],
  ['CONNECT example.com:123456 HTTP/1.1\r\n', opaque('bad-target')],
  ['GET /caf\xe9 HTTP/1.1\r\n', opaque('bad-target')],
  ['GET /\r\n', opaque('http-version')], // HTTP/0.9
  ['GET / HTTP/0.9\r\n', opaque('http-version')],
  ['GET / HTTP/2.0\r\n', opaque('http-version')],
  ['GET / HTTP/1.2\r\n', opaque('http-version')],
  ['GET / HTTP/1.10\r\n', opaque('http-version')],
  ['GET / HTTPS/1.1\r\n', opaque('not-http')],
  ['GET / http/1.1\r\n', opaque('not-http')],
  ['GET / HTTP/1.1\rX', opaque('not-http')],
  ['GET / HTTP/1.1\r1', opaque('not-http')],
  ['GET / HTTP/1.1 \r\n', opaque('not-http')],
  ['PRI * HTTP/1.1\r\n', opaque('h2-preface-mismatch')],
  ['PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n', opaque('h2-preface-mismatch')],
  ['PRIX / HTTP/1.1\r\n', http1('PRIX', '/', '1.1')],
  [`${'A'.repeat(MAX_METHOD_BYTES)} / HTTP/1.1\r\n`, http1('A'.repeat(MAX_METHOD_BYTES), '/', '1.1')],
  [`${'A'.repeat(MAX_METHOD_BYTES + 1)}`, opaque('method-too-long')],
  // need-more
  ['', needMore],
  ['G', needMore],
  ['GET / HTTP/1.1', needMore],
  ['GET / HTTP/1.1\r', needMore],
  ['PRI * HTTP/2.0\r\n', needMore],
];

for (const [i, [input, expected]] of httpCases.entries()) {
  test(`http1 #${i}: ${JSON.stringify(input).slice(0, 60)}`, (t) => {
    t.deepEqual(detect(bytes(input)), expected);
  });
}

test('http1: every split point of several request lines gives need-more, then the whole verdict', (t) => {
  const curl = 'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n';
  const cases: [string, Detection, number][] = [
    [curl, http1('GET', '/', '1.1'), 'GET / HTTP/1.1\r\n'.length],
    ['CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n', http1('CONNECT', 'db.internal:5432', '1.1'), 35],
    ['OPTIONS * HTTP/1.0\r\n\r\n', http1('OPTIONS', '*', '1.0'), 20],
    ['GET http://a.b/c HTTP/1.1\n\n', http1('GET', 'http://a.b/c', '1.1'), 26],
    ['GET / HTTP/2.0\r\n', opaque('http-version'), 'GET / HTTP/2'.length],
  ];
  for (const [input, expected, decidedAt] of cases) {
    t.deepEqual(detect(bytes(input)), expected);
    t.is(assertIncremental(t, bytes(input)), decidedAt, input);
  }
});

test('http1: a real node:http client request', async (t) => {
  const { http1: req } = await captured;
  t.deepEqual(detect(req), http1('POST', '/api/v1/items?x=1', '1.1'));
  assertIncremental(t, req);
});

test('http1: the request line is bounded at 8 KiB, CRLF included', (t) => {
  const fits = `GET /${'a'.repeat(MAX_REQUEST_LINE_BYTES - 'GET / HTTP/1.1\r\n'.length)} HTTP/1.1\r\n`;
  t.is(fits.length, MAX_REQUEST_LINE_BYTES);
  t.is(detect(bytes(fits)).kind, 'http1');
  const tooLong = `GET /${'a'.repeat(MAX_REQUEST_LINE_BYTES - 'GET / HTTP/1.1\r\n'.length + 1)} HTTP/1.1\r\n`;
  t.deepEqual(detect(bytes(tooLong)), opaque('request-line-too-long'));
  // Decided as soon as the bound is reached, not when the line ends.
  t.deepEqual(detect(bytes(tooLong).subarray(0, MAX_REQUEST_LINE_BYTES)), opaque('request-line-too-long'));
  t.deepEqual(detect(bytes(tooLong).subarray(0, MAX_REQUEST_LINE_BYTES - 1)), needMore);
});

// ---------------------------------------------------------------------------
// HTTP/2

test('http2: the prior-knowledge preface, and its prefixes', (t) => {
  const preface = bytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  t.deepEqual(detect(preface), { kind: 'http2' });
  t.is(assertIncremental(t, preface), preface.length);
  t.deepEqual(detect(cat(preface, new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]))), { kind: 'http2' });
});

test('http2: a real node:http2 client connection preface', async (t) => {
  const { h2 } = await captured;
  t.true(h2.length > 24, 'preface plus SETTINGS');
  t.deepEqual(detect(h2), { kind: 'http2' });
  t.is(assertIncremental(t, h2), 24);
});

test('http2: a diverging preface never becomes HTTP/1', (t) => {
  const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
  for (let i = 0; i < preface.length; i++) {
    const diverged = bytes(preface.slice(0, i) + '\x00' + preface.slice(i + 1));
    t.is(detect(diverged).kind, 'opaque', `diverging at ${i}`);
  }
});

// ---------------------------------------------------------------------------
// TLS, from real OpenSSL ClientHellos

test('tls: real TLS 1.2 ClientHello with SNI and ALPN', async (t) => {
  const { tls12 } = await captured;
  t.is(tls12[0], 22);
  t.deepEqual(detect(tls12), { kind: 'tls', sni: 'api.example.com', alpn: ['h2', 'http/1.1'] });
  t.is(assertIncremental(t, tls12), tls12.length);
});

test('tls: real TLS 1.3 ClientHello, SNI lowercased', async (t) => {
  const { tls13 } = await captured;
  t.deepEqual(detect(tls13), { kind: 'tls', sni: 'backend.svc.cluster.local', alpn: ['http/1.1'] });
  t.is(assertIncremental(t, tls13), tls13.length);
});

test('tls: real ClientHello without SNI or ALPN', async (t) => {
  const { tlsNoSniNoAlpn } = await captured;
  t.deepEqual(detect(tlsNoSniNoAlpn), { kind: 'tls', sni: null, alpn: [] });
  assertIncremental(t, tlsNoSniNoAlpn);
});

test('tls: a real ClientHello that OpenSSL split across records is reassembled', async (t) => {
  const { tlsMultiRecord: hello } = await captured;
  const firstRecord = (hello[3] << 8) | hello[4];
  const handshake = (hello[6] << 16) | (hello[7] << 8) | hello[8];
  t.true(handshake + 4 > firstRecord, 'the capture really spans records');
  const expected = { kind: 'tls', sni: 'big.example.com', alpn: LONG_ALPN };
  t.deepEqual(detect(hello, 65536), expected);
  t.is(assertIncremental(t, hello, 65536), hello.length);
  // Over the default budget the stream is still TLS, just unread.
  t.true(hello.length > DEFAULT_MAX_DETECT_BYTES);
  t.deepEqual(detect(hello), { kind: 'tls', sni: null, alpn: [] });
  // ...and that is known from the declared length, after 9 bytes.
  t.deepEqual(detect(hello.subarray(0, 9)), { kind: 'tls', sni: null, alpn: [] });
  t.deepEqual(detect(hello.subarray(0, 9), 65536), needMore);
});

test('tls: the same hello re-framed into records of any size gives the same verdict', async (t) => {
  const { tls12, tls13 } = await captured;
  for (const hello of [tls12, tls13]) {
    const whole = detect(hello);
    for (const size of [1, 2, 3, 4, 5, 7, 64, 333, 1000]) {
      const framed = refragment(hello, size);
      t.deepEqual(detect(framed, 65536), whole, `records of ${size}`);
    }
    assertIncremental(t, refragment(hello, 3), 65536);
  }
});

test('tls: a hello framed in 1-byte records and sent a segment at a time costs little CPU, not the square of its records', async (t) => {
  // The dispatcher asks again with all bytes so far on every segment a client sends; a peer
  // choosing 1-byte records and 1-byte segments (both legal) made each ask build a piece per
  // record so far, the square of the record count in allocations.
  const { tlsMid } = await captured;
  const framed = Buffer.from(refragment(tlsMid, 1)); // a Buffer, as the dispatcher's head is
  t.true(framed.length > 14_000 && framed.length <= DEFAULT_MAX_DETECT_BYTES, `${framed.length} bytes`);
  const expected = { kind: 'tls', sni: 'mid.example.com', alpn: LONG_ALPN.slice(0, 5) };
  const start = process.cpuUsage();
  let verdict: Detection = needMore;
  for (let k = 1; k <= framed.length && verdict.kind === 'need-more'; k++) verdict = detect(framed.subarray(0, k));
  const ms = cpuMsSince(start);
  t.deepEqual(verdict, expected);
  // CPU time (a busy machine does not stretch it). Measured on a loaded 2-core VM: 2,000 ms before, 335 ms after.
  t.true(ms < 1000, `${ms} ms of CPU for ${framed.length} asks`);
});

test('tls: a malformed hello behind a right header is TLS without SNI or ALPN', async (t) => {
  const { tls12 } = await captured;
  const unread = { kind: 'tls', sni: null, alpn: [] };
  const sni = extensionOffset(tls12, 0);
  const alpn = extensionOffset(tls12, 16);

  const badSniList = tls12.slice();
  badSniList[sni + 5] ^= 0x40; // server_name_list length disagrees with the extension
  t.deepEqual(detect(badSniList), unread);

  const badAlpnList = tls12.slice();
  badAlpnList[alpn + 6] = 0; // zero-length protocol name
  t.is(tls12[alpn + 7], 0x68, 'the first protocol is h2');
  t.deepEqual(detect(badAlpnList), unread);

  // A protocol name that is not printable ASCII is left out; the rest stands.
  const oddAlpnName = tls12.slice();
  oddAlpnName[alpn + 7] = 0;
  t.deepEqual(detect(oddAlpnName), { kind: 'tls', sni: 'api.example.com', alpn: ['http/1.1'] });

  const badSessionId = tls12.slice();
  badSessionId[5 + 4 + 2 + 32] = 33;
  t.deepEqual(detect(badSessionId), unread);

  const badVersion = tls12.slice();
  badVersion[9] = 2;
  t.deepEqual(detect(badVersion), unread);

  const duplicateSni = tls12.slice();
  duplicateSni[alpn] = 0; // the ALPN extension now claims to be a second server_name
  duplicateSni[alpn + 1] = 0;
  t.deepEqual(detect(duplicateSni), unread);

  // Next record is an alert in the middle of the handshake message.
  const framed = refragment(tls12, 100);
  framed[105] = 21;
  t.deepEqual(detect(framed), unread);

  // A host_name that is not a DNS name: SNI null, ALPN still read.
  const ipSni = tls12.slice();
  ipSni[sni + 9] = 0x2f; // '/' inside the name
  t.deepEqual(detect(ipSni), { kind: 'tls', sni: null, alpn: ['h2', 'http/1.1'] });
});

test('tls: header checks decide opaque early', async (t) => {
  const { tls13 } = await captured;
  const patch = (at: number, value: number) => {
    const b = tls13.slice();
    b[at] = value;
    return b;
  };
  t.deepEqual(detect(patch(1, 2).subarray(0, 2)), opaque('not-tls')); // major version
  t.deepEqual(detect(patch(2, 0).subarray(0, 3)), opaque('not-tls')); // SSL 3.0
  t.deepEqual(detect(patch(2, 5).subarray(0, 3)), opaque('not-tls'));
  t.deepEqual(detect(cat(bytes('\x16\x03\x01\x00\x00'))), opaque('not-tls')); // empty record
  t.deepEqual(detect(cat(bytes('\x16\x03\x01\x40\x01'))), opaque('not-tls')); // over 2^14
  t.deepEqual(detect(patch(5, 2).subarray(0, 6)), opaque('not-tls')); // ServerHello
  t.deepEqual(detect(tls13.subarray(0, 5)), needMore);
  t.deepEqual(detect(tls13.subarray(0, 6)), needMore);
  for (const v of [1, 2, 3, 4]) t.deepEqual(detect(patch(2, v).subarray(0, 6)), needMore);
});

test('tls: a declared length that cannot fit the budget is decided at once', (t) => {
  const huge = bytes('\x16\x03\x01\x40\x00\x01\xff\xff\xff');
  t.deepEqual(detect(huge), { kind: 'tls', sni: null, alpn: [] });
  t.deepEqual(detect(huge.subarray(0, 8)), needMore);
  const fitsOnlyInBigBudget = bytes('\x16\x03\x01\x40\x00\x01\x00\x50\x00');
  t.deepEqual(detect(fitsOnlyInBigBudget), { kind: 'tls', sni: null, alpn: [] });
  t.deepEqual(detect(fitsOnlyInBigBudget, 1 << 20), needMore);
});

// ---------------------------------------------------------------------------
// Other protocols, and eagerness

function mysqlGreeting(): Uint8Array {
  const payload = cat(
    new Uint8Array([0x0a]),
    bytes('8.0.36\0'),
    new Uint8Array([0x0d, 0, 0, 0]),
    bytes('abcdefgh\0'),
    new Uint8Array([0xff, 0xff, 0xff, 0x02, 0x00, 0xff, 0xdf, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    bytes('ijklmnopqrst\0caching_sha2_password\0'),
  );
  return cat(new Uint8Array([payload.length, 0, 0, 0]), payload);
}

function seededBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = Math.imul(s ^ (s >>> 15), s | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    out[i] = (z ^ (z >>> 14)) & 0xff;
  }
  return out;
}

const others: [string, Uint8Array, string, number][] = [
  // name, bytes, reason, bytes needed to decide
  ['mysql server greeting', mysqlGreeting(), 'not-http', 2],
  // Text protocols shaped like "WORD word ..." are only refused at the end of the second word.
  ['smtp banner', bytes('220 mail.example.com ESMTP Postfix\r\n'), 'bad-target', 21],
  ['smtp client EHLO', bytes('EHLO client.example.com\r\n'), 'bad-target', 24],
  ['redis RESP command', bytes('*1\r\n$4\r\nPING\r\n'), 'not-http', 3],
  ['redis inline command', bytes('PING\r\n'), 'not-http', 5],
  ['redis inline SET', bytes('SET key value\r\n'), 'bad-target', 8],
  ['postgres SSLRequest', new Uint8Array([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), 'not-http', 1],
  ['TLS application data', new Uint8Array([0x17, 0x03, 0x03, 0x00, 0x10]), 'not-http', 1],
  ['SSLv2-style hello', new Uint8Array([0x80, 0x2e, 0x01, 0x03, 0x01]), 'not-http', 1],
];

for (const [name, input, reason, decidedAt] of others) {
  test(`opaque: ${name}`, (t) => {
    t.deepEqual(detect(input), opaque(reason));
    t.is(assertIncremental(t, input), decidedAt);
  });
}

test('opaque: random binary is decided within a few bytes', (t) => {
  for (let seed = 1; seed <= 200; seed++) {
    const input = seededBytes(seed, 256);
    if (input[0] === 22) continue; // a TLS lead byte waits for its record header
    const d = detect(input);
    t.is(d.kind, 'opaque', `seed ${seed}`);
    t.true(assertIncremental(t, input) <= MAX_METHOD_BYTES + 1, `seed ${seed}`);
  }
});

// ---------------------------------------------------------------------------
// Budget and robustness

test('max-bytes: no verdict within the budget is opaque', (t) => {
  t.deepEqual(detect(bytes('GET / HTTP/1.1'), 10), opaque('max-bytes'));
  t.deepEqual(detect(bytes('GET / HTTP/1.1'), 14), opaque('max-bytes'));
  t.deepEqual(detect(bytes('GET / HTTP/1.1'), 15), needMore);
  t.deepEqual(detect(bytes('GET / HTTP/1.1\r\n'), 16), http1('GET', '/', '1.1'));
  // Bytes past the budget are never looked at.
  t.deepEqual(detect(bytes('GET / HTTP/1.1\r\n'), 15), opaque('max-bytes'));
  t.deepEqual(detect(bytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 23), opaque('max-bytes'));
  t.deepEqual(detect(bytes('\x16\x03\x01'), 3), opaque('max-bytes'));
  // A budget that is not a positive number falls back to the default.
  for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.deepEqual(detect(bytes('GET / HTTP/1.1\r\n'), bad), http1('GET', '/', '1.1'));
  }
});

test('robustness: never throws, even for untyped callers', (t) => {
  const untyped = detect as (buf: unknown, max?: unknown) => Detection;
  t.deepEqual(untyped(null), opaque('invalid-input'));
  t.deepEqual(untyped('GET / HTTP/1.1\r\n'), opaque('invalid-input'));
  t.deepEqual(untyped(bytes('GET / HTTP/1.1\r\n'), '5'), http1('GET', '/', '1.1'));
  // A Buffer over a larger pool, and a view at an offset.
  const big = Buffer.from('xxGET / HTTP/1.1\r\n');
  t.deepEqual(detect(big.subarray(2)), http1('GET', '/', '1.1'));
});

test('reasons: every opaque reason above is one of the documented ones', (t) => {
  const seen = new Set<string>();
  for (const [, d] of httpCases) if (d.kind === 'opaque') seen.add(d.reason);
  for (const [, , reason] of others) seen.add(reason);
  for (const r of seen) t.true((OPAQUE_REASONS as readonly string[]).includes(r), r);
});

// ---------------------------------------------------------------------------
// The bounds-checked reader every TLS length goes through

test('reader: reads within its range and fails for good past it', (t) => {
  const buf = new Uint8Array([0xaa, 1, 2, 3, 4, 5, 6, 0xbb]);
  const r = new Reader(buf, 1, 7);
  t.is(r.remaining, 6);
  t.is(r.u8(), 1);
  t.is(r.u16(), 0x0203);
  t.is(r.u24(), 0x040506);
  t.true(r.ok);
  t.is(r.remaining, 0);
  t.is(r.u8(), 0, 'the byte after the range is not read');
  t.false(r.ok);
  t.is(r.remaining, 0);

  const exact = new Reader(buf, 1, 7);
  t.deepEqual([...exact.bytes(6)], [1, 2, 3, 4, 5, 6]);
  t.true(exact.ok);

  const over = new Reader(buf, 1, 7);
  t.is(over.bytes(7).length, 0);
  t.false(over.ok);
  t.is(over.u8(), 0, 'a failed reader stays failed');

  const negative = new Reader(buf);
  negative.skip(-1);
  t.false(negative.ok);

  const outer = new Reader(buf, 0, 8);
  outer.u8();
  const inner = outer.sub(3);
  t.true(outer.ok);
  t.is(outer.u8(), 4, 'sub advances the outer reader');
  t.is(inner.u24(), 0x010203);
  t.is(inner.u8(), 0);
  t.false(inner.ok, 'a sub-reader ends where its vector ends');
  const tooLong = outer.sub(10);
  t.false(outer.ok);
  t.false(tooLong.ok);
  t.is(tooLong.remaining, 0);
});
