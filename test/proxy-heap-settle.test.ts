// The young generation a burst of held connections grew is given back once the burst is over
// (src/proxy/heap-settle.ts; docs/proxy.md, "Memory"): once per burst of long-lived connections,
// never for short-lived ones. The ticks are driven by hand; the proxy test waits for the shrink.
import test from 'ava';
import * as net from 'node:net';
import { once } from 'node:events';
import { HeapSettle } from '../src/proxy/heap-settle.ts';
import { Proxy } from '../src/proxy/listener.ts';

/** A HeapSettle whose timer never fires by itself: the test calls tick(). */
function settleOf(growth: number) {
  let open = 0;
  const shrinks: number[] = [];
  const startUps: boolean[] = [];
  const h = {
    idle: true,
    s: new HeapSettle(() => open, {
      growth, tickMs: 2 ** 30, shrink: () => null, idle: (): boolean => h.idle,
      onShrink: (n, _ms, _error, startUp) => {
        shrinks.push(n);
        startUps.push(startUp);
      },
    }),
    shrinks,
    startUps,
    open(n: number) {
      for (let i = 0; i < n; i++) {
        open++;
        h.s.opened();
      }
    },
    close(n: number) {
      for (let i = 0; i < n; i++) {
        open--;
        h.s.closed();
      }
    },
  };
  return h;
}

test('a burst of held connections: one shrink, after a tick with no new connection', (t) => {
  const h = settleOf(10);
  h.open(9);
  t.false(h.s.armed, 'under the growth: nothing watched');
  h.open(1);
  t.true(h.s.armed);
  h.s.tick();
  t.deepEqual(h.shrinks, [], 'connections came during the tick: the burst goes on');
  h.open(5);
  h.s.tick();
  t.deepEqual(h.shrinks, []);
  h.s.tick();
  t.deepEqual(h.shrinks, [15], 'a quiet tick: shrunk once, with 15 open');
  t.false(h.s.armed);
  h.s.tick();
  t.deepEqual(h.shrinks, [15], 'once per burst');
  h.s.stop();
});

test('the next shrink needs the growth again, counted from the fewest open since', (t) => {
  const h = settleOf(10);
  h.open(10);
  h.s.tick();
  h.s.tick();
  t.deepEqual(h.shrinks, [10]);
  h.open(9);
  t.false(h.s.armed, '9 more than at the shrink');
  h.close(15);
  h.open(10);
  t.true(h.s.armed, '10 more than the fewest open (4)');
  h.s.tick();
  h.s.tick();
  t.deepEqual(h.shrinks, [10, 14]);
  h.s.stop();
});

test('a busy thread is not stalled: the shrink waits for an idle tick', (t) => {
  const h = settleOf(10);
  h.open(10);
  h.s.tick();
  h.idle = false;
  h.s.tick();
  h.s.tick();
  t.deepEqual(h.shrinks, [], 'no new connection, but traffic kept the event loop busy');
  t.true(h.s.armed);
  h.idle = true;
  h.s.tick();
  t.deepEqual(h.shrinks, [10]);
});

test('short-lived connections never arm it, however many', (t) => {
  const h = settleOf(10);
  for (let i = 0; i < 1000; i++) {
    h.open(1);
    h.close(1);
  }
  t.false(h.s.armed);
  h.s.tick();
  t.deepEqual(h.shrinks, []);
});

test('a burst that closed before the quiet tick is not shrunk for', (t) => {
  const h = settleOf(10);
  h.open(10);
  h.s.tick();
  h.close(10);
  h.s.tick();
  t.deepEqual(h.shrinks, []);
  t.false(h.s.armed);
});

test('start-up\'s growth: one shrink at the first quiet, idle tick after listening, whatever the count open', (t) => {
  const h = settleOf(10);
  h.s.settleStartUp();
  t.true(h.s.armed);
  h.open(2);
  h.s.tick();
  t.deepEqual(h.shrinks, [], 'connections came during the tick: traffic is not stalled for it');
  h.idle = false;
  h.s.tick();
  t.deepEqual(h.shrinks, [], 'a busy thread waits');
  h.idle = true;
  h.s.tick();
  t.deepEqual(h.shrinks, [2], 'a quiet idle tick: shrunk with 2 open, far under the growth');
  t.deepEqual(h.startUps, [true]);
  t.false(h.s.armed);
  h.open(9);
  t.false(h.s.armed, 'once: the next needs a burst, counted from the 2 open at the shrink');
  h.open(1);
  h.s.tick();
  h.s.tick();
  t.deepEqual(h.shrinks, [2, 12]);
  t.deepEqual(h.startUps, [true, false]);
});

test('the proxy shrinks once its idle connections settle, and they still forward', async (t) => {
  const upstream = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upPort = (upstream.address() as net.AddressInfo).port;
  let shrunk!: (open: number) => void;
  const shrink = new Promise<number>((r) => (shrunk = r));
  const proxy = new Proxy({
    listen: { host: '127.0.0.1', port: 0 },
    lookup: () => ({ ip: '127.0.0.1', port: upPort, podKey: 1n }),
    heapSettle: { growth: 20, tickMs: 20, onShrink: (open, _ms, error) => (error ? t.fail(error.message) : shrunk(open)) },
  });
  const { port } = await proxy.listen();
  const clients = await Promise.all(Array.from({ length: 20 }, async () => {
    const c = net.connect(port, '127.0.0.1');
    await once(c, 'connect');
    return c;
  }));
  t.is(await shrink, 20);
  // Every connection still forwards: detection's deadline makes them opaque tunnels to the echo.
  await Promise.all(clients.map(async (c, i) => {
    const want = `ping ${i}`;
    c.write(want);
    let got = '';
    while (got.length < want.length) got += String((await once(c, 'data'))[0]);
    t.is(got, want);
  }));
  for (const c of clients) c.destroy();
  await proxy.close(1000);
  await new Promise<void>((r) => upstream.close(() => r()));
});
