import test from 'ava';
import { HEAD_MALFORMED, HEAD_NEED_MORE, HEAD_TOO_LARGE, HeadReader, parseRequestHead, parseResponseHead, type RequestHead } from '../src/proxy/http1/parse-head.ts';
import { ChunkedFramer, FRAME_ERROR, LengthFramer } from '../src/proxy/http1/body-framer.ts';
import { isRetryable, requestBodyKind, responseBodyKind, wantsKeepAlive } from '../src/proxy/http1/framing.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

function req(s: string): RequestHead {
  const buf = b(s);
  return parseRequestHead(buf, 0, buf.length);
}
function res(s: string) {
  const buf = b(s);
  return parseResponseHead(buf, 0, buf.length);
}

test('HeadReader finds the head end in one read without copying', (t) => {
  const r = new HeadReader(1024, true);
  const chunk = b('GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY');
  const end = r.push(chunk);
  t.is(end, chunk.length - 4);
  t.is(r.buffer, chunk);
});

test('HeadReader finds a terminator split across every possible boundary', (t) => {
  const full = b('GET /x HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n');
  for (let i = 1; i < full.length; i++) {
    const r = new HeadReader(1024, true);
    t.is(r.push(full.subarray(0, i)), HEAD_NEED_MORE, `split ${i}`);
    t.true(r.partial);
    const end = r.push(full.subarray(i));
    t.is(end, full.length, `split ${i}`);
    t.deepEqual(r.buffer.subarray(r.start, end), full);
  }
});

test('HeadReader byte-at-a-time feeding', (t) => {
  const full = b('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
  const r = new HeadReader(1024, true);
  let end = HEAD_NEED_MORE;
  for (let i = 0; i < full.length; i++) end = r.push(full.subarray(i, i + 1));
  t.is(end, full.length);
});

test('HeadReader skips empty lines before a request line', (t) => {
  const r = new HeadReader(1024, true);
  const chunk = b('\r\n\r\nGET / HTTP/1.1\r\n\r\n');
  const end = r.push(chunk);
  t.is(r.start, 4);
  t.is(end, chunk.length);
  t.is(parseRequestHead(r.buffer, r.start, end).method, 'GET');
});

test('HeadReader refuses an incomplete head that can never end: a bare LF or CR, a request not starting with a method and SP, a response not starting HTTP/1.', (t) => {
  for (const [text, response] of [
    ['GET / HTTP/1.1\nHost: a', false],
    ['GET / HTTP/1.1\r\nHost: a\rX', false],
    ['\r\n\nGET /', false],
    ['HTTP/1.1 200 OK\nContent-Length: 0\n\n', true],
    ["-ERR unknown command 'GET'\r\n", true],
    ['HTTP/2', true],
    ['\x16\x03\x01\x00\x6e\x01', false],
    [' GET / HTTP/1.1', false],
    ['GET\x00 /', false],
  ] as Array<[string, boolean]>) {
    t.is(new HeadReader(1024, !response).push(b(text)), HEAD_MALFORMED, JSON.stringify(text));
    // The same bytes one at a time: refused at the byte that shows it.
    const r = new HeadReader(1024, !response);
    let end = HEAD_NEED_MORE;
    for (let i = 0; i < text.length && end === HEAD_NEED_MORE; i++) end = r.push(b(text[i]!));
    t.is(end, HEAD_MALFORMED, `${JSON.stringify(text)} byte by byte`);
  }
  // What may still become a head is not refused: a CR whose LF is in the next read, a prefix of "HTTP/1.".
  for (const [text, response] of [['GET / HTTP/1.1\r', false], ['\r\n\r', false], ['\r', false], ['M-SEARCH', false], ['X'.repeat(100), false], ['HTTP/', true], ['HTTP/1.1 200 OK\r\nA: b\r', true]] as Array<[string, boolean]>) {
    t.is(new HeadReader(1024, !response).push(b(text)), HEAD_NEED_MORE, JSON.stringify(text));
  }
});

test('HeadReader enforces the limit with and without a terminator', (t) => {
  const r = new HeadReader(32, true);
  t.is(r.push(b('GET / HTTP/1.1\r\nX-Long: ' + 'a'.repeat(40))), HEAD_TOO_LARGE);
  const r2 = new HeadReader(32, true);
  t.is(r2.push(b('GET / HTTP/1.1\r\nX-Long: ' + 'a'.repeat(20) + '\r\n\r\n')), HEAD_TOO_LARGE);
  const r3 = new HeadReader(32, true);
  t.true(r3.push(b('GET / HTTP/1.1\r\nX: 1\r\n\r\n')) > 0);
});

test('request line, host, framing and connection fields', (t) => {
  const h = req('POST /a?b=1 HTTP/1.1\r\nhOsT: example.com:8080\r\nContent-Length: 12\r\nConnection: Keep-Alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\n\r\n');
  t.is(h.method, 'POST');
  t.is(h.target, '/a?b=1');
  t.is(h.versionMinor, 1);
  t.is(h.host, 'example.com:8080');
  t.is(h.contentLength, 12);
  t.true(h.connKeepAlive);
  t.true(h.connUpgrade);
  t.false(h.connClose);
  t.is(h.upgrade, 'websocket');
  t.true(h.expectContinue);
  t.is(requestBodyKind(h), 'length');
});

test('header values are trimmed of optional whitespace', (t) => {
  const h = req('GET / HTTP/1.1\r\nHost:   a.b \t\r\nContent-Length:\t0 \r\n\r\n');
  t.is(h.host, 'a.b');
  t.is(h.contentLength, 0);
  t.is(requestBodyKind(h), 'none');
});

test('a repeated method, target and Host give the same strings; other bytes of the same length give their own', (t) => {
  // The parser reuses the last Host and target it decoded when the bytes are equal (latin1, byte by byte).
  const seq = [['GET', '/a', 'svc:80'], ['GET', '/a', 'svc:80'], ['PUT', '/b', 'svd:80'], ['GET', '/', 'svc:8\xe9'], ['get', '/\xe9', 'svc:80'], ['GET', '/', 'Svc:80']];
  for (const [method, target, host] of seq) {
    const h = req(`${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.deepEqual([h.method, h.target, h.host], [method, target, host]);
  }
  t.is(req('GET /a HTTP/1.1\r\nHost: x\r\n\r\n').host, 'x');
  t.is(req('GET /a HTTP/1.1\r\n\r\n').host, '', 'no Host: empty, not the last one');
});

test('a value ends at its CR, trailing spaces and tabs off; controls but HT refused', (t) => {
  t.is(req('GET / HTTP/1.1\r\nHost: a \t b\t \r\n\r\n').host, 'a \t b');
  t.is(req('GET / HTTP/1.1\r\nHost: \t \r\n\r\n').host, '');
  t.is(req('GET / HTTP/1.1\r\nHost: \xa0a\xa0\r\n\r\n').host, '\xa0a\xa0', 'obs-text is part of the value');
  for (const c of ['\x00', '\x01', '\n', '\x1f', '\x7f']) {
    t.throws(() => req(`GET / HTTP/1.1\r\nHost: a${c}b\r\n\r\n`), { message: 'bad header value' }, JSON.stringify(c));
  }
});

test('HTTP/1.0 keep-alive rules', (t) => {
  t.false(wantsKeepAlive(req('GET / HTTP/1.0\r\n\r\n')));
  t.true(wantsKeepAlive(req('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')));
  t.true(wantsKeepAlive(req('GET / HTTP/1.1\r\n\r\n')));
  t.false(wantsKeepAlive(req('GET / HTTP/1.1\r\nConnection: close\r\n\r\n')));
  t.false(wantsKeepAlive(res('HTTP/1.0 200 OK\r\n\r\n')));
  t.true(wantsKeepAlive(res('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n')));
});

const badRequests: Array<[string, string]> = [
  ['no version', 'GET /\r\n\r\n'],
  ['lowercase version', 'GET / http/1.1\r\n\r\n'],
  ['HTTP/2.0', 'GET / HTTP/2.0\r\n\r\n'],
  ['double space', 'GET  / HTTP/1.1\r\n\r\n'],
  ['space in method', 'G T / HTTP/1.1\r\n\r\n'],
  ['control in target', 'GET /\x01 HTTP/1.1\r\n\r\n'],
  ['space before colon', 'GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n'],
  ['obs-fold', 'GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n'],
  ['no colon', 'GET / HTTP/1.1\r\nHost\r\n\r\n'],
  ['empty name', 'GET / HTTP/1.1\r\n: x\r\n\r\n'],
  ['bare LF in value', 'GET / HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n'],
  ['bare CR in value', 'GET / HTTP/1.1\r\nX: a\rb\r\n\r\n'],
  ['NUL in value', 'GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n'],
  ['duplicate Host', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['non-numeric CL', 'POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\n'],
  ['signed CL', 'POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n'],
  ['empty CL', 'POST / HTTP/1.1\r\nContent-Length: \r\n\r\n'],
  ['huge CL', 'POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n'],
  ['conflicting CL list', 'POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n'],
  ['conflicting CL headers', 'POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'],
  ['chunked not last', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n'],
  ['chunked twice', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n'],
];

for (const [name, raw] of badRequests) {
  test(`rejects request: ${name}`, (t) => {
    t.throws(() => requestBodyKind(req(raw)));
  });
}

test('identical repeated Content-Length is accepted', (t) => {
  t.is(req('POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\n').contentLength, 5);
});

test('request smuggling: CL and TE together are refused', (t) => {
  t.throws(() => requestBodyKind(req('POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n')), { message: /both/ });
  t.throws(() => requestBodyKind(req('POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n')));
  t.throws(() => requestBodyKind(req('POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n')));
  t.is(requestBodyKind(req('POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n')), 'chunked');
});

test('status line forms', (t) => {
  t.is(res('HTTP/1.1 200 OK\r\n\r\n').status, 200);
  t.is(res('HTTP/1.1 404\r\n\r\n').status, 404);
  t.is(res('HTTP/1.1 500 \r\n\r\n').status, 500);
  t.is(res('HTTP/1.0 101 Switching Protocols\r\n\r\n').versionMinor, 0);
  t.throws(() => res('HTTP/1.1 20 OK\r\n\r\n'));
  t.throws(() => res('HTTP/1.1 2000 OK\r\n\r\n'));
  t.throws(() => res('HTTP/1.1 abc OK\r\n\r\n'));
  t.throws(() => res('ICY 200 OK\r\n\r\n'));
});

test('response framing rules', (t) => {
  const get = req('GET / HTTP/1.1\r\n\r\n');
  const head = req('HEAD / HTTP/1.1\r\n\r\n');
  const connect = req('CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n');
  const ws = req('GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  t.is(responseBodyKind(get, res('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n')), 'length');
  t.is(responseBodyKind(get, res('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')), 'none');
  t.is(responseBodyKind(get, res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')), 'chunked');
  t.is(responseBodyKind(get, res('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n')), 'close');
  t.is(responseBodyKind(get, res('HTTP/1.1 200 OK\r\n\r\n')), 'close');
  t.is(responseBodyKind(head, res('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n')), 'none');
  t.is(responseBodyKind(get, res('HTTP/1.1 204 No Content\r\n\r\n')), 'none');
  t.is(responseBodyKind(get, res('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n')), 'none');
  t.is(responseBodyKind(get, res('HTTP/1.1 100 Continue\r\n\r\n')), 'interim');
  t.is(responseBodyKind(get, res('HTTP/1.1 103 Early Hints\r\n\r\n')), 'interim');
  t.is(responseBodyKind(ws, res('HTTP/1.1 101 Switching Protocols\r\n\r\n')), 'tunnel');
  t.throws(() => responseBodyKind(get, res('HTTP/1.1 101 Switching Protocols\r\n\r\n')));
  t.is(responseBodyKind(connect, res('HTTP/1.1 200 Connection Established\r\n\r\n')), 'tunnel');
  t.is(responseBodyKind(connect, res('HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n')), 'none');
  t.throws(() => responseBodyKind(get, res('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n')));
});

test('retry only bodiless idempotent requests', (t) => {
  t.true(isRetryable(req('GET / HTTP/1.1\r\n\r\n'), 'none'));
  t.false(isRetryable(req('POST / HTTP/1.1\r\n\r\n'), 'none'));
  t.false(isRetryable(req('PUT / HTTP/1.1\r\n\r\n'), 'length'));
});

test('LengthFramer counts across pushes', (t) => {
  const f = new LengthFramer(10);
  t.is(f.push(b('abcd'), 0), 4);
  t.false(f.done);
  t.is(f.push(b('xxefghijNEXT'), 2), 6);
  t.true(f.done);
  t.is(f.push(b('more'), 0), 0);
});

const chunked = '5\r\nhello\r\n1A;name=value\r\n' + 'x'.repeat(26) + '\r\n0\r\nX-Trailer: 1\r\n\r\n';

test('ChunkedFramer finds the end of a chunked body with extensions and trailers', (t) => {
  const f = new ChunkedFramer();
  const buf = b(chunked + 'GET / HTTP/1.1\r\n\r\n');
  t.is(f.push(buf, 0), chunked.length);
  t.true(f.done);
});

test('ChunkedFramer gives the same answer at every split point', (t) => {
  const whole = b(chunked + 'NEXT');
  for (let i = 0; i <= whole.length; i++) {
    const f = new ChunkedFramer();
    const n1 = f.push(whole.subarray(0, i), 0);
    const n2 = f.done ? 0 : f.push(whole, i);
    t.is(n1 + n2, chunked.length, `split ${i}`);
    t.true(f.done);
  }
});

test('ChunkedFramer byte at a time, uppercase hex, no trailers', (t) => {
  const body = b('A\r\n0123456789\r\n0\r\n\r\n');
  const f = new ChunkedFramer();
  let total = 0;
  for (let i = 0; i < body.length; i++) total += f.push(body.subarray(i, i + 1), 0);
  t.is(total, body.length);
  t.true(f.done);
});

const badChunked: Array<[string, string]> = [
  ['no size', '\r\nabc\r\n0\r\n\r\n'],
  ['non-hex size', 'g\r\nabc\r\n0\r\n\r\n'],
  ['negative size', '-1\r\n'],
  ['bare LF after size', '3\nabc\r\n0\r\n\r\n'],
  ['missing CRLF after data', '3\r\nabcd\r\n0\r\n\r\n'],
  ['LF only after data', '3\r\nabc\n0\r\n\r\n'],
  ['size overflow', 'fffffffffffffffffff\r\n'],
  ['control in extension', '3;a\x01\r\nabc\r\n0\r\n\r\n'],
  ['folded trailer', '0\r\nX: a\r\n b\r\n\r\n'],
];

for (const [name, raw] of badChunked) {
  test(`ChunkedFramer rejects: ${name}`, (t) => {
    const f = new ChunkedFramer();
    t.is(f.push(b(raw), 0), FRAME_ERROR);
    t.not(f.error, '');
  });
}

test('ChunkedFramer bounds extension and trailer sizes', (t) => {
  const f = new ChunkedFramer(16);
  t.is(f.push(b('3;' + 'a'.repeat(32) + '\r\n'), 0), FRAME_ERROR);
  const g = new ChunkedFramer(16);
  t.is(g.push(b('0\r\nX-Long: ' + 'a'.repeat(32) + '\r\n\r\n'), 0), FRAME_ERROR);
});

test('names are matched in any case; Connection tokens in any case, order and spacing', (t) => {
  const r = req('POST / HTTP/1.1\r\nHOST: h\r\ncOnTeNt-LeNgTh: 12\r\nCONNECTION:\tKeep-Alive ,UPGRADE,, foo\r\nupgrade: WebSocket\r\nEXPECT: 100-Continue\r\n\r\n');
  t.is(r.host, 'h');
  t.is(r.contentLength, 12);
  t.true(r.connKeepAlive);
  t.true(r.connUpgrade);
  t.false(r.connClose);
  t.is(r.upgrade, 'WebSocket');
  t.true(r.expectContinue);
  // Near misses are other headers, not ours.
  const n = req('GET / HTTP/1.1\r\nHosts: x\r\nContent-Lengthy: 3\r\nConnection: closed, keep-alive2\r\nX-Connection: close\r\n\r\n');
  t.is(n.host, '');
  t.is(n.contentLength, -1);
  t.false(n.connClose);
  t.false(n.connKeepAlive);
  t.true(res('HTTP/1.1 200 OK\r\nconnection: CLOSE\r\nContent-Length: 0\r\n\r\n').connClose);
  t.is(res('HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n').contentLength, 7);
  t.throws(() => res('HTTP/1.1 200 OK\r\nContent-Length: 7x\r\n\r\n'), { message: 'bad Content-Length' });
  t.throws(() => res('HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n'), { message: 'bad Content-Length' });
  t.throws(() => res('HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n'), { message: 'bad Content-Length' });
});
