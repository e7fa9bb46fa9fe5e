// The in-process connection between the proxy's outbound and inbound sides (src/proxy/local-pair.ts):
// what the forwarders use of a socket, half-close both ways as TCP's, a reset reaching the other end.
import test from 'ava';
import { once } from 'node:events';
import { localPair } from '../src/proxy/local-pair.ts';

test('the upstream end connects on the next tick; bytes and half-closes pass both ways, counted', async (t) => {
  const { upstream, downstream } = localPair();
  t.true(upstream.connecting);
  t.false(downstream.connecting);
  await once(upstream, 'connect');
  t.false(upstream.connecting);
  let down = '';
  downstream.setEncoding('utf8');
  downstream.on('data', (d) => (down += d));
  upstream.end('GET / HTTP/1.1\r\n\r\n');
  await once(downstream, 'end');
  t.is(down, 'GET / HTTP/1.1\r\n\r\n');
  let up = '';
  upstream.setEncoding('utf8');
  upstream.on('data', (d) => (up += d));
  downstream.end('HTTP/1.1 403 Forbidden\r\n\r\n', () => {});
  await once(upstream, 'end');
  t.is(up, 'HTTP/1.1 403 Forbidden\r\n\r\n', 'the other direction still open after the first half-close');
  t.is(downstream.bytesRead, 18);
  t.is(downstream.bytesWritten, 26);
});

test('a reset of either end reaches the other as an error; setTimeout emits timeout', async (t) => {
  const a = localPair();
  const err = once(a.upstream, 'error');
  a.downstream.resetAndDestroy();
  t.is(((await err)[0] as NodeJS.ErrnoException).code, 'ECONNRESET');
  t.true(a.downstream.destroyed);
  const b = localPair();
  // The pair's idle timer is unref'd, as a socket's: something else keeps this process alive.
  const alive = setInterval(() => {}, 1000);
  b.upstream.setTimeout(20);
  await once(b.upstream, 'timeout');
  clearInterval(alive);
  b.upstream.setTimeout(0);
  const err2 = once(b.downstream, 'error');
  b.upstream.destroy();
  t.is(((await err2)[0] as NodeJS.ErrnoException).code, 'ECONNRESET', 'an end destroyed before both directions ended resets the other');
  t.true(b.downstream.destroyed);
});
