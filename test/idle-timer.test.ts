import test from 'ava';
import { IdleTimer } from '../src/util/idle-timer.ts';

// Timers never fire early (beyond libuv's 1 ms rounding), so "not before idleMs" is exact;
// "fired" is awaited, never assumed after a sleep.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// The timer is unref'd (it must not keep the agent alive): hold the loop open while a test awaits it.
const keep = setInterval(() => {}, 60_000);
test.after.always(() => clearInterval(keep));

function idleAfter(ms: number) {
  let firedAt = 0;
  let fired!: () => void;
  const done = new Promise<void>((r) => (fired = r));
  let calls = 0;
  const t = new IdleTimer(ms, () => {
    calls++;
    firedAt = performance.now();
    fired();
  });
  return { t, done, firedAt: () => firedAt, calls: () => calls };
}

test('idle from the start: fires once, idleMs after it was made', async (t) => {
  const start = performance.now();
  const i = idleAfter(40);
  await i.done;
  t.true(i.firedAt() - start >= 39, `fired after ${i.firedAt() - start} ms`);
  await sleep(60);
  t.is(i.calls(), 1);
});

test('never while something is open, however long; then idleMs after the last one left', async (t) => {
  const i = idleAfter(30);
  i.t.enter();
  i.t.enter();
  // Several of its periods pass with streams open: the timer lapses and is not idle.
  await sleep(100);
  t.is(i.calls(), 0);
  i.t.leave();
  await sleep(50);
  t.is(i.calls(), 0, 'one is still open');
  t.is(i.t.open, 1);
  const lastLeft = performance.now();
  i.t.leave();
  await i.done;
  t.true(i.firedAt() - lastLeft >= 29, `fired ${i.firedAt() - lastLeft} ms after the last leave`);
  t.is(i.calls(), 1);
});

test('a stream that comes and goes postpones the deadline to idleMs after it left', async (t) => {
  const i = idleAfter(60);
  await sleep(40);
  i.t.enter();
  i.t.leave();
  const left = performance.now();
  await i.done;
  // The first timer (armed at construction) fired while the deadline had moved: it re-armed for the rest.
  t.true(i.firedAt() - left >= 59, `fired ${i.firedAt() - left} ms after the leave`);
});

test('stop() cancels; a leave() without an enter() is ignored', async (t) => {
  const i = idleAfter(20);
  i.t.leave();
  t.is(i.t.open, 0);
  i.t.stop();
  await sleep(60);
  t.is(i.calls(), 0);
});
