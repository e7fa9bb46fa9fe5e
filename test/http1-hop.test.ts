// Per-hop persistence (src/proxy/http1/hop.ts): pure rewrites of the Connection field.
import test from 'ava';
import { parseRequestHead, parseResponseHead } from '../src/proxy/http1/parse-head.ts';
import { closingResponseHead, keepUpstreamFor, rewriteConnection, upstreamRequestHead } from '../src/proxy/http1/hop.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

/** The head sent upstream for a request head given as text (with a body after it, kept out). */
function upstream(text: string): { keep: boolean; head: string } {
  const buf = b(text + 'BODY');
  const end = text.length;
  const req = parseRequestHead(buf, 0, end);
  const keep = keepUpstreamFor(req);
  return { keep, head: keep ? upstreamRequestHead(buf, 0, end, req).toString('latin1') : text };
}

function toClient(text: string): string {
  const buf = b(text);
  const res = parseResponseHead(buf, 0, buf.length);
  return (closingResponseHead(buf, 0, buf.length, res) ?? buf).toString('latin1');
}

test('Connection: close as the only token: the line goes, everything else is byte for byte', (t) => {
  const r = upstream('GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Case: MiXeD  \r\n\r\n');
  t.true(r.keep);
  t.is(r.head, 'GET /x HTTP/1.1\r\nHost: a\r\nX-Case: MiXeD  \r\n\r\n');
});

test('close among other tokens: only close is removed, the others keep their spelling and order', (t) => {
  t.is(upstream('GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n').head,
    'GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo\r\nX-Foo: 1\r\n\r\n');
  t.is(upstream('GET / HTTP/1.1\r\nConnection: x-a ,\tClose , x-b\r\nHost: a\r\n\r\n').head,
    'GET / HTTP/1.1\r\nConnection: x-a, x-b\r\nHost: a\r\n\r\n');
  // Two Connection lines: each is handled; the one without close stays verbatim.
  t.is(upstream('GET / HTTP/1.1\r\nconnection: x-a\r\nHost: a\r\nCONNECTION: CLOSE\r\n\r\n').head,
    'GET / HTTP/1.1\r\nconnection: x-a\r\nHost: a\r\n\r\n');
});

test('names and tokens match case-insensitively; look-alikes are left alone', (t) => {
  t.is(upstream('GET / HTTP/1.1\r\nHost: a\r\ncOnNeCtIoN: cLoSe\r\n\r\n').head, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  // Not the Connection field, not the close token.
  const r = upstream('GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\nX-Connection: close\r\nConnection: closed, close\r\n\r\n');
  t.is(r.head, 'GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\nX-Connection: close\r\nConnection: closed\r\n\r\n');
});

test('HTTP/1.0: keep-alive is added (its default is close), unless the client asked for it', (t) => {
  const r = upstream('GET / HTTP/1.0\r\nHost: a\r\n\r\n');
  t.true(r.keep);
  t.is(r.head, 'GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
  t.is(upstream('GET / HTTP/1.0\r\nConnection: close\r\n\r\n').head, 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
  t.is(upstream('GET / HTTP/1.0\r\n\r\n').head, 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
  // A 1.0 client that asked for keep-alive keeps its connection: nothing to rewrite.
  t.false(upstream('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keep);
});

test('requests that keep their connection, upgrades and CONNECT are not rewritten', (t) => {
  t.false(upstream('GET / HTTP/1.1\r\nHost: a\r\n\r\n').keep);
  t.false(upstream('GET / HTTP/1.1\r\nConnection: keep-alive, x-a\r\n\r\n').keep);
  t.false(upstream('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n').keep);
  t.false(upstream('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: close\r\nUpgrade: websocket\r\n\r\n').keep);
  t.false(upstream('CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nConnection: close\r\n\r\n').keep);
});

test('the response to a client we close says Connection: close, and never keep-alive', (t) => {
  t.is(toClient('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n'), 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n');
  t.is(toClient('HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n'),
    'HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nConnection: close\r\n\r\n');
  t.is(toClient('HTTP/1.0 200 OK\r\nconnection: keep-alive, x-b\r\n\r\n'), 'HTTP/1.0 200 OK\r\nconnection: x-b\r\nConnection: close\r\n\r\n');
  // Already closing: the head is forwarded as it is (no copy).
  const closing = b('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n');
  t.is(closingResponseHead(closing, 0, closing.length, parseResponseHead(closing, 0, closing.length)), null);
  // Both tokens: keep-alive goes, close stays, nothing added.
  t.is(toClient('HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\n\r\n'), 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n');
});

test('rewriteConnection works on a head inside a larger buffer and reports no change as null', (t) => {
  const text = 'GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\n\r\n';
  const buf = b('PREVIOUS' + text + 'NEXT');
  t.is(rewriteConnection(buf, 8, 8 + text.length, 'close', null), null);
  t.is(rewriteConnection(buf, 8, 8 + text.length, 'x-a', null)!.toString('latin1'), 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  t.is(rewriteConnection(buf, 8, 8 + text.length, 'close', 'keep-alive')!.toString('latin1'),
    'GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\nConnection: keep-alive\r\n\r\n');
});
