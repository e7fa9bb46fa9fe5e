import test from 'ava';
import * as http2 from 'node:http2';
import {
  downstreamHeaders, encodeGrpcMessage, isGrpc, isSuccess, parseGrpcStatus, proxyErrorResponse, upstreamRequestHeaders,
} from '../src/proxy/http2/headers.ts';
import { ResetBudget } from '../src/proxy/http2/reset-budget.ts';
import { responseShape } from '../src/proxy/http2/upstream-response.ts';

test('request headers: pseudo-headers and te: trailers kept, connection-specific dropped', (t) => {
  const out = upstreamRequestHeaders({
    ':method': 'POST', ':path': '/p', ':scheme': 'http', ':authority': 'svc:80',
    te: 'trailers', connection: 'keep-alive', 'keep-alive': '5', 'transfer-encoding': 'chunked', upgrade: 'h2c',
    'content-type': 'application/grpc', 'x-a': 'b',
  });
  t.deepEqual(out, { ':method': 'POST', ':path': '/p', ':scheme': 'http', ':authority': 'svc:80', te: 'trailers', 'content-type': 'application/grpc', 'x-a': 'b' });
  t.false('te' in upstreamRequestHeaders({ ':path': '/', te: 'gzip' }));
});

test('request headers: Host becomes :authority when :authority is absent', (t) => {
  t.is(upstreamRequestHeaders({ ':path': '/', host: 'web.ns' })[':authority'], 'web.ns');
  t.is(upstreamRequestHeaders({ ':path': '/', host: 'web.ns', ':authority': 'a' })[':authority'], 'a');
});

test('never-indexed marking survives the hop', (t) => {
  const h = { ':path': '/', authorization: 'secret', connection: 'x', [http2.sensitiveHeaders]: ['authorization', 'connection'] };
  const out = downstreamHeaders(h as http2.IncomingHttpHeaders) as Record<symbol, unknown>;
  t.deepEqual(out[http2.sensitiveHeaders], ['authorization']);
});

test('gRPC content types and status parsing', (t) => {
  t.true(isGrpc('application/grpc'));
  t.true(isGrpc('application/grpc+proto'));
  t.true(isGrpc('application/grpc; charset=utf-8'));
  t.false(isGrpc('application/grpc-web'));
  t.false(isGrpc('application/json'));
  t.false(isGrpc(undefined));
  t.is(parseGrpcStatus('0'), 0);
  t.is(parseGrpcStatus(' 14 '), 14);
  t.is(parseGrpcStatus('x'), undefined);
  t.is(parseGrpcStatus(undefined), undefined);
});

test('success: HTTP below 500, gRPC only with grpc-status 0', (t) => {
  t.true(isSuccess(200, false, undefined));
  t.true(isSuccess(404, false, undefined));
  t.false(isSuccess(503, false, undefined));
  t.false(isSuccess(0, false, undefined));
  t.true(isSuccess(200, true, 0));
  t.false(isSuccess(200, true, 5));
  t.false(isSuccess(200, true, undefined));
});

test('proxy error responses: 502/504, gRPC trailers-only UNAVAILABLE with encoded message', (t) => {
  t.is(proxyErrorResponse('unreachable', false, 'ECONNREFUSED').status, 502);
  t.is(proxyErrorResponse('connect-timeout', false, 'x').headers[':status'], 504);
  const g = proxyErrorResponse('connect-timeout', true, 'no connection in 5 ms');
  t.like(g, { status: 200, grpcStatus: 14 });
  t.is(g.headers['grpc-status'], '14');
  t.is(g.headers['grpc-message'], 'upstream connect-timeout: no connection in 5 ms');
  t.is(encodeGrpcMessage('ü 100%'), '%C3%BC 100%25');
});

test('reset budget trips just past the limit and recovers after the window', (t) => {
  const b = new ResetBudget(10, 1000);
  for (let i = 0; i < 10; i++) t.false(b.record(5000));
  t.true(b.record(5001));
  // Half a window into the next one, the 11 earlier resets still weigh 5.5.
  for (let i = 0; i < 4; i++) t.false(b.record(6500));
  t.true(b.record(6500));
  t.false(new ResetBudget(10, 1000).record(0));
  // Two windows of quiet: a fresh budget.
  t.false(b.record(9000));
});

// A clock that steps back (the wall clock, set back by NTP or by hand) must not freeze the windows
// with the old counts: before, every reset until the clock caught up counted in the current window
// and the previous one weighed more than whole, so a client's ordinary cancels drew GOAWAY.
test('reset budget: a clock that steps back starts a fresh window', (t) => {
  const b = new ResetBudget(10, 1000);
  for (let i = 0; i < 9; i++) t.false(b.record(100_000));
  for (let i = 0; i < 10; i++) t.false(b.record(40_000 + i * 200), `reset ${i + 1} after the clock stepped back 60 s`);
});

test('response shape: a status node cannot send, trailers-only, headers-only and a body', (t) => {
  const END_STREAM = http2.constants.NGHTTP2_FLAG_END_STREAM;
  for (const status of [0, 101, 199, 600, 999]) t.is(responseShape(status, 0, 'GET').kind, 'bad-status', String(status));
  t.regex((responseShape(600, END_STREAM, 'GET') as { error: string }).error, /:status 600, outside 200-599/);
  t.is(responseShape(200, END_STREAM, 'POST').kind, 'trailers-only');
  t.is(responseShape(204, END_STREAM, 'GET').kind, 'trailers-only');
  for (const status of [204, 205, 304]) t.is(responseShape(status, 0, 'GET').kind, 'headers-only', String(status));
  t.is(responseShape(200, 0, 'HEAD').kind, 'headers-only');
  t.is(responseShape(200, 0, 'GET').kind, 'body');
  t.is(responseShape(599, 0, 'POST').kind, 'body');
});

test('request headers: te: trailers in any case or with blanks goes on as the exact `trailers` node:http2 accepts', (t) => {
  for (const te of ['Trailers', 'TRAILERS', ' trailers ']) t.is(upstreamRequestHeaders({ ':path': '/', te }).te, 'trailers', te);
});
